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

/// The text of section `name` of a roff page: from its `.SH` to the next.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!(".SH {name}\n"))
        .unwrap_or_else(|| panic!("no {name} section in\n{page}"));
    let rest = &page[start + 4..];
    &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
}

/// A man page reads as the command is typed (`wiresh exec`), has the
/// sections a reader looks for, and usage lines a person can read.
#[test]
fn man_pages_name_the_command_as_typed_and_have_the_usual_sections() {
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--dir", dir.path().to_str().unwrap()]);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for sub in SUBCOMMANDS {
        let page = read(&format!("wiresh-{sub}.1"));
        let synopsis = section(&page, "SYNOPSIS");
        assert!(
            synopsis.contains(&format!("wiresh {sub}")) && !synopsis.contains("wiresh-"),
            "wiresh-{sub}(1) synopsis: {synopsis}"
        );
        for name in ["\"EXIT STATUS\"", "ENVIRONMENT", "FILES", "EXAMPLES"] {
            assert!(!section(&page, name).trim().is_empty(), "{sub}: {name}");
        }
    }
    let put = read("wiresh-put.1");
    assert!(
        section(&put, "SYNOPSIS").contains("LOCAL... [HOST:]REMOTE"),
        "{put}"
    );
    assert!(!put.contains("<LOCAL... REMOTE> <LOCAL"), "{put}");
    let help = String::from_utf8(run(&["put", "--help"]).stdout).unwrap();
    assert!(
        help.contains("Usage: wiresh put [OPTIONS] LOCAL... [HOST:]REMOTE"),
        "{help}"
    );
    // The environment and the files are docs/USAGE.md's list, every one.
    let usage = include_str!("../../../docs/USAGE.md");
    let table = &usage[usage.find("## Environment variables and files").unwrap()..];
    let page = read("wiresh.1");
    let (environment, files) = (section(&page, "ENVIRONMENT"), section(&page, "FILES"));
    let mut names = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        for name in cell.split('`').skip(1).step_by(2) {
            if name == "WIRESH_SHARED_DIR" {
                continue; // for the test suite, not for users
            }
            let escaped = name.replace('-', "\\-");
            let listed = match name.chars().next().unwrap().is_ascii_uppercase() {
                true => environment.contains(&format!("\\fB{escaped}\\fR")),
                false => files.contains(&format!("$WIRESH_HOME/{escaped}")),
            };
            assert!(listed, "{name} is in USAGE.md but not in wiresh(1)");
            names += 1;
        }
    }
    assert!(names > 15, "only {names} names read from USAGE.md");
}
