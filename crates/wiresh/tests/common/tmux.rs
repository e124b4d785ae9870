//! [`Tmux`]: a real terminal for the tests of terminal sessions. Each
//! instance is its own tmux server on a private socket (`tmux -L`), with one
//! window of a given size and no status line, running a script; keys are
//! typed with `send-keys` and the screen is read with `capture-pane`,
//! polled until the expected text appears (with a deadline, [`BOUND`]).
//! The tmux server is killed on drop. Where tmux is not installed,
//! [`Tmux::new`] has the test skipped, saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::BOUND;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A tmux server with one window.
pub struct Tmux {
    socket: String,
    /// Where tmux put the socket, to remove it with the server.
    socket_path: std::sync::Mutex<Option<PathBuf>>,
    dir: TempDir,
}

impl Tmux {
    /// A tmux on a socket of its own, not started yet, with a scratch
    /// directory for the pane's script and whatever it records; `None`,
    /// with the test [`skipped`](super::skip::skipped), where tmux is not
    /// installed.
    pub fn new() -> Option<Tmux> {
        if !super::skip::needs_program("tmux", "tmux") {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory for tmux");
        let socket = format!(
            "wiresh-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        std::fs::write(
            dir.path().join("tmux.conf"),
            "set -g status off\nset -g remain-on-exit on\nset -g history-limit 5000\n",
        )
        .unwrap();
        Some(Tmux {
            socket,
            socket_path: Default::default(),
            dir,
        })
    }

    /// Starts tmux with a `cols` × `rows` window running `script` with
    /// `sh`. The pane stays after the script ends, so its last screen can
    /// still be read.
    pub fn start(&self, script: &str, cols: u16, rows: u16) {
        let script_path = self.dir.path().join("pane.sh");
        std::fs::write(&script_path, script).unwrap();
        let out = self
            .command()
            .args([
                "new-session",
                "-d",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .arg(format!("sh '{}'", script_path.display()))
            .output()
            .expect("running tmux new-session");
        assert!(out.status.success(), "tmux new-session: {}", stderr(&out));
        let out = self
            .command()
            .args(["display-message", "-p", "#{socket_path}"])
            .output()
            .expect("running tmux display-message");
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        *self.socket_path.lock().unwrap() = Some(PathBuf::from(path));
    }

    /// A scratch directory that lives as long as this tmux.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(self.dir.path().join("tmux.conf"));
        cmd
    }

    fn run(&self, args: &[&str]) {
        let out = self.command().args(args).output().expect("running tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
    }

    /// Types `text` as it is (no key names).
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-l", "--", text]);
    }

    /// Presses keys by tmux name (`Enter`, `Escape`, `C-c`).
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "--"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `line` and Enter.
    pub fn type_line(&self, line: &str) {
        self.type_text(line);
        self.press(&["Enter"]);
    }

    /// What the window shows now (and the lines scrolled off it).
    pub fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-"])
            .output()
            .expect("running tmux capture-pane");
        assert!(out.status.success(), "capture-pane: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `pred` holds (failing after [`BOUND`], with
    /// the screen in the message); returns that screen.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {what} within {BOUND:?}; it shows:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some line of the screen, trimmed, is exactly `line`.
    pub async fn wait_for_line(&self, line: &str) -> String {
        self.wait_for(&format!("the line {line:?}"), |s| {
            s.lines().any(|l| l.trim() == line)
        })
        .await
    }

    /// Resizes the window (the programs in it get SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
        // tmux leaves its socket file behind.
        if let Some(path) = self.socket_path.lock().unwrap().take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A pane script that records the terminal's settings (`stty -a`) before
/// and after running `command` (a shell command line), and its exit status,
/// in files of `dir`: see [`Recorded`].
///
/// A Ctrl-C typed in the terminal's ordinary mode signals its whole
/// foreground group, this script's shell too: it traps SIGINT (a trap, not
/// an ignore, which `command` would inherit) so as to outlive it.
pub fn recording(dir: &Path, command: &str) -> String {
    let d = dir.display();
    format!(
        "trap : INT\n\
         stty -a > '{d}/stty-before'\n\
         {command}\n\
         echo $? > '{d}/status.tmp' && mv '{d}/status.tmp' '{d}/status'\n\
         stty -a > '{d}/stty-after'\n\
         echo CLIENT-EXITED\n"
    )
}

/// What a [`recording`] script recorded, once the command has ended.
pub struct Recorded {
    pub status: i32,
    pub stty_before: String,
    pub stty_after: String,
}

impl Recorded {
    /// Waits for the command of a [`recording`] script in `tmux` to end.
    pub async fn wait(tmux: &Tmux) -> Recorded {
        tmux.wait_for_line("CLIENT-EXITED").await;
        let read = |name: &str| -> String {
            let path: PathBuf = tmux.dir().join(name);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        Recorded {
            status: read("status").trim().parse().expect("a status"),
            stty_before: read("stty-before"),
            stty_after: read("stty-after"),
        }
    }
}
