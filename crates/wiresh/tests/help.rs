//! Help that is generated from the one command-line definition: completion
//! scripts, manual pages, and `--version` naming the protocol.

mod common;

use std::process::Command;

use common::BIN;

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().expect("run wiresh");
    assert!(
        out.status.success(),
        "wiresh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const SUBCOMMANDS: [&str; 7] = ["serve", "exec", "shell", "put", "get", "keygen", "reload"];

#[test]
fn version_names_the_protocol() {
    let out = String::from_utf8(run(&["--version"]).stdout).unwrap();
    assert_eq!(
        out.trim(),
        format!(
            "wiresh {} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            wiresh_proto::PROTOCOL_VERSION
        )
    );
}

#[test]
fn completions_cover_every_subcommand_and_are_valid_bash() {
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(run(&["completions", shell]).stdout).unwrap();
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            script.contains("max-connections"),
            "{shell}: no serve flags"
        );
    }
    // bash must at least parse it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wiresh.bash");
    std::fs::write(&path, run(&["completions", "bash"]).stdout).unwrap();
    let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(status.success(), "bash -n rejects the completion script");
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let page = String::from_utf8(run(&["man"]).stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH wiresh 1"),
        "{page}"
    );
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "wiresh(1) does not list {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    for sub in SUBCOMMANDS {
        let text = std::fs::read_to_string(dir.path().join(format!("wiresh-{sub}.1")))
            .unwrap_or_else(|e| panic!("no wiresh-{sub}.1: {e}"));
        assert!(text.contains(&format!(".TH wiresh-{sub} 1")), "{text}");
    }
    let serve = std::fs::read_to_string(dir.path().join("wiresh-serve.1")).unwrap();
    assert!(
        serve.contains("max\\-connections"),
        "flags missing from wiresh-serve(1)"
    );
}
