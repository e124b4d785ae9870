//! cargo-fuzz entry point; the checks live in `wiresh_fuzz::message_parser`
//! (src/lib.rs) so `cargo test` can replay the seeds through the same logic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wiresh_fuzz::message_parser::run(data);
});
