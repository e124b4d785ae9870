//! What installing wiresh relies on: the systemd unit in `dist/` passes
//! `systemd-analyze verify` (pointed at the binary under test) and has the
//! properties the operating guide (`docs/OPERATING.md`) promises. The
//! `systemd-analyze` check is skipped, saying what to install, on a machine
//! without it.

mod common;

use std::process::Command;

use common::BIN;

const UNIT: &str = include_str!("../../../dist/wiresh.service");

#[test]
fn the_systemd_unit_verifies() {
    if !common::skip::needs_program("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("wiresh.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/wiresh", BIN)).unwrap();
    // --man=no: the Documentation= page is installed by `wiresh man --dir`
    // (tests/help.rs checks that it is generated), not on the test machine.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // It warns (and still exits 0) about lines it ignores: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns: {stderr}"
    );
}

#[test]
fn the_unit_runs_unprivileged_reports_readiness_and_reloads() {
    let setting = |key: &str| -> Vec<&str> {
        UNIT.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(setting("Type"), ["notify"]);
    assert_eq!(setting("User"), ["wiresh"]);
    assert_eq!(setting("ExecStart"), ["/usr/local/bin/wiresh serve"]);
    assert_eq!(setting("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "CapabilityBoundingSet",
    ] {
        assert_eq!(setting(hardening).len(), 1, "{hardening} is not set");
    }
}
