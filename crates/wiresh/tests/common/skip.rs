//! Tests that need what a machine may lack (a tool such as tmux, root, a
//! mount) skip themselves with a line on the terminal: which test, why,
//! and what to install or how to run it so that it runs for real.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Says that the running test is skipped and why. Written to stderr
/// itself, not with `eprintln!`, which the test harness captures and shows
/// only for a failing test: a skip must be seen in a passing run.
pub fn skipped(why: &str) {
    // The harness names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Whether `program` is an executable file in a directory of `PATH`; if
/// not, the running test is [`skipped`], saying to install `package`.
pub fn needs_program(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))));
    if !found {
        skipped(&format!(
            "`{program}` is not installed (not on PATH); install it \
             (Debian, Ubuntu: apt-get install {package}) to run this test"
        ));
    }
    found
}

fn executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
