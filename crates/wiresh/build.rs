//! Links the `wiresh` binary's unwinder statically where the C compiler
//! has one (`libgcc_eh.a`), so that the process does not load `libgcc_s`.
//!
//! Why: a one-shot `wiresh exec` is mostly process start, and loading
//! `libgcc_s` costs a start about 0.1 ms on a virtual machine (its
//! constructor probes the CPU with a dozen `CPUID`s, each a trap to the
//! hypervisor, for nothing Rust uses). Rust's standard library asks for
//! `-lgcc_s` on `*-linux-gnu`; a linker script of that name, found first
//! on the binary's search path, gives the linker the static unwinder
//! instead (what `gcc -static-libgcc` does). Panics unwind as before.
//! Where `libgcc_eh.a` is missing (another C compiler, another target),
//! nothing changes.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let gnu_linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !gnu_linux || static_unwinder().is_none() {
        return;
    }
    let dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("unwind");
    fs::create_dir_all(&dir).expect("cannot create the unwinder's directory in OUT_DIR");
    fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("cannot write the unwinder's linker script in OUT_DIR");
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
}

/// Where the C compiler keeps `libgcc_eh.a`, if it has one (it answers
/// the bare name when it has not).
fn static_unwinder() -> Option<PathBuf> {
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}
