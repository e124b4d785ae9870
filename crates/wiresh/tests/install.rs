//! What installing wiresh relies on: the systemd unit in `dist/` passes
//! `systemd-analyze verify` (pointed at the binary under test) and has the
//! properties the operating guide (`docs/OPERATING.md`) promises. The
//! `systemd-analyze` check is skipped, saying what to install, on a machine
//! without it.

mod common;

use std::process::Command;

use common::BIN;

const UNIT: &str = include_str!("../../../dist/wiresh.service");
const LOOSEN: &str = include_str!("../../../dist/wiresh-loosen.conf");
const OPERATING: &str = include_str!("../../../docs/OPERATING.md");

/// `systemd-analyze verify` of the unit (the binary under test in it) with
/// `drop_in`, if any, in its `.d` directory; its stderr, after checking it
/// succeeded.
fn verify(drop_in: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("wiresh.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/wiresh", BIN)).unwrap();
    if let Some(drop_in) = drop_in {
        let d = dir.path().join("wiresh.service.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("loosen.conf"), drop_in).unwrap();
    }
    // --man=no: the Documentation= page is installed by `wiresh man --dir`
    // (tests/help.rs checks that it is generated), not on the test machine.
    // The unit path makes systemd read the drop-in directory beside it.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    stderr
}

#[test]
fn the_systemd_unit_verifies() {
    if !common::skip::needs_program("systemd-analyze", "systemd") {
        return;
    }
    // It warns (and still exits 0) about lines it ignores: none allowed.
    let stderr = verify(None);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns: {stderr}"
    );
}

/// The drop-in the operating guide offers to loosen the sandbox verifies
/// with the unit; a key systemd does not know in it would be reported, so
/// the drop-in is really read.
#[test]
fn the_drop_in_that_loosens_the_sandbox_verifies() {
    if !common::skip::needs_program("systemd-analyze", "systemd") {
        return;
    }
    let stderr = verify(Some(LOOSEN));
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns: {stderr}"
    );
    let stderr = verify(Some(&format!("{LOOSEN}NoSuchSetting=yes\n")));
    assert!(
        stderr.contains("NoSuchSetting"),
        "the drop-in was not read: {stderr}"
    );
    // The guide shows the same settings.
    for line in LOOSEN
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with('#'))
    {
        assert!(OPERATING.contains(line), "OPERATING.md lacks {line:?}");
    }
}

/// The account the recipes create can give the shell `wiresh shell`
/// promises: not `nologin`, neither in the unit's recipe nor in the guide.
#[test]
fn the_recipes_account_has_a_login_shell() {
    for (name, text) in [("the unit", UNIT), ("OPERATING.md", OPERATING)] {
        let useradd: Vec<&str> = text.lines().filter(|l| l.contains("useradd ")).collect();
        assert!(!useradd.is_empty(), "{name} creates no account");
        for line in useradd {
            assert!(!line.contains("nologin"), "{name}: {line}");
            assert!(line.contains("--shell /bin/"), "{name}: {line}");
        }
    }
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
