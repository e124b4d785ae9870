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
//! Where the linker has no `libgcc_eh.a` (or cannot be asked: a cross
//! build, a linker command with arguments), nothing changes.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let gnu_linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !gnu_linux || static_unwinder().is_none() {
        return;
    }
    let dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("unwind");
    fs::create_dir_all(&dir).expect("cannot create the unwinder's directory in OUT_DIR");
    // `-lgcc` too, as `gcc -static-libgcc` links: the real `libgcc_s.so`
    // is `GROUP(libgcc_s.so.1 -lgcc)`, and rustc links with
    // `-nodefaultlibs`. Archive members come in only when referenced.
    fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh -lgcc)\n")
        .expect("cannot write the unwinder's linker script in OUT_DIR");
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
}

/// Where the linker rustc links the binary with keeps `libgcc_eh.a`, if it
/// has one (it answers the bare name when it has not): the linker cargo
/// was told of (`RUSTC_LINKER`), else `cc` when building for this machine;
/// a cross build with its default linker is left alone.
fn static_unwinder() -> Option<PathBuf> {
    let linker = match env::var("RUSTC_LINKER") {
        Ok(linker) => linker,
        Err(_) if env::var("TARGET").ok() == env::var("HOST").ok() => "cc".into(),
        Err(_) => return None,
    };
    let out = Command::new(linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}
