//! What the binary loads when it starts: a one-shot `wiresh exec` is mostly
//! process start, so a library it does not need is time every run pays.

use std::path::Path;
use std::process::Command;

/// Whether the linker that linked the binary has a static unwinder
/// (`libgcc_eh.a`): then the build script links it in (see `build.rs`).
/// Asks `cc` (rustc's linker unless one is configured; then set
/// `RUSTC_LINKER` for this test too).
fn static_unwinder_available() -> bool {
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    Command::new(linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .is_ok_and(|out| {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            out.status.success() && Path::new(&path).is_absolute() && Path::new(&path).is_file()
        })
}

#[test]
fn the_binary_does_not_load_libgcc_s_when_a_static_unwinder_exists() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || !static_unwinder_available() {
        eprintln!("skipped: no static unwinder (libgcc_eh.a) to link instead of libgcc_s");
        return;
    }
    let Ok(out) = Command::new("readelf")
        .args(["--dynamic", env!("CARGO_BIN_EXE_wiresh")])
        .output()
    else {
        eprintln!("skipped: no readelf (binutils) to read the binary's needed libraries");
        return;
    };
    let needed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && needed.contains("(NEEDED)"),
        "readelf lists the needed libraries: {needed}"
    );
    assert!(
        !needed.contains("libgcc_s"),
        "the binary loads libgcc_s (its constructor probes the CPU on every start): {needed}"
    );
}
