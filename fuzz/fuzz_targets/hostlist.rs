//! cargo-fuzz entry point; the checks live in `wiresh_fuzz::hostlist`
//! (src/lib.rs) so `cargo test` can replay the seeds through the same logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wiresh_fuzz::hostlist::run(data);
});
