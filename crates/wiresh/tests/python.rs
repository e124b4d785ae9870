//! The Python package (`python/`) and the Ansible collection (`ansible/`),
//! from `cargo test`: runs their pytest suite (`python/run-tests.sh`, which
//! builds the extension and drives real servers of this binary) when its
//! tools are installed, and otherwise skips, saying how to install them.
//!
//! The tools live in a virtualenv: `python/.venv` (which `python/run-tests.sh`
//! makes on first use, and CI makes before the tests), or `$WIRESH_VENV`.

#[path = "common/skip.rs"]
#[allow(dead_code)]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The virtualenv with maturin, pytest and ansible-core, if there is one.
fn virtualenv(repo: &Path) -> Option<PathBuf> {
    let venv = std::env::var_os("WIRESH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("python/.venv"));
    let has = |tool: &str| venv.join("bin").join(tool).is_file();
    (has("pytest") && has("maturin") && has("ansible-playbook")).then_some(venv)
}

#[test]
fn the_python_package_and_the_ansible_collection() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(venv) = virtualenv(&repo) else {
        skip::skipped(
            "no virtualenv with maturin, pytest and ansible-core (python/.venv or $WIRESH_VENV); \
             run python/run-tests.sh once to make it (it installs them from PyPI), then cargo \
             test runs the Python and Ansible tests too",
        );
        return;
    };
    let out = Command::new(repo.join("python/run-tests.sh"))
        .env("WIRESH_VENV", &venv)
        .env("WIRESH_BIN", env!("CARGO_BIN_EXE_wiresh"))
        .output()
        .expect("cannot run python/run-tests.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python/run-tests.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // pytest's closing line, seen in a passing run too.
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("");
    assert!(!summary.is_empty(), "pytest ran no test:\n{stdout}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "python/run-tests.sh: {summary}");
}
