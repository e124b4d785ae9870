//! The checks behind the wiresh fuzz targets: the wire protocol's readers,
//! and the host-list parser.
//!
//! Each module has a `run(data: &[u8])` that panics on any violated property
//! and returns normally otherwise. The cargo-fuzz targets in `fuzz_targets/`
//! are one-line wrappers around these, and on machines where cargo-fuzz
//! cannot run, `cargo test` in this directory replays every committed seed
//! in `corpus/` through the very same functions (the `tests` module below),
//! so both ways test one thing. `examples/gen_corpus.rs` writes those seeds.

pub mod frame_decoder;
pub mod hostlist;
pub mod legacy_header;
pub mod message_parser;

/// A tiny deterministic PRNG (xorshift64*), used to derive chunk sizes from
/// the control bytes of an input.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a seed (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    //! Every committed seed goes through every target: a cheap regression
    //! check that runs with a plain `cargo test` in this directory.

    use std::fs;
    use std::path::Path;

    fn each_seed(target: &str, run: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            run(&data);
            n += 1;
        }
        n
    }

    #[test]
    fn seeds_pass_their_own_target() {
        assert!(each_seed("frame_decoder", crate::frame_decoder::run) > 0);
        assert!(each_seed("message_parser", crate::message_parser::run) > 0);
        assert!(each_seed("legacy_header", crate::legacy_header::run) > 0);
        assert!(each_seed("hostlist", crate::hostlist::run) > 0);
    }

    #[test]
    fn seeds_pass_every_target() {
        for target in [
            "frame_decoder",
            "message_parser",
            "legacy_header",
            "hostlist",
        ] {
            each_seed(target, crate::frame_decoder::run);
            each_seed(target, crate::message_parser::run);
            each_seed(target, crate::legacy_header::run);
            each_seed(target, crate::hostlist::run);
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for data in [&b""[..], b"\0", b"\xff", b"\0\0", b"{}", b"\0\0\0\0"] {
            crate::frame_decoder::run(data);
            crate::message_parser::run(data);
            crate::legacy_header::run(data);
            crate::hostlist::run(data);
        }
    }
}
