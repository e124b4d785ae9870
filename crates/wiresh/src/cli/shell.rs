//! `wiresh shell --each-line` (and `--legacy`): run line after line, each
//! a command of its own, on one persistent connection.
//!
//! On a terminal it is an interactive prompt with line editing and history
//! (rustyline); otherwise it prints no prompt and runs the lines it reads,
//! so it can be scripted: `printf 'uname -a\nid\n' | wiresh shell --each-line`.
//! (Plain `wiresh shell` is a remote login shell: see [`super::terminal`].)

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use tokio::runtime::Runtime;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus};

use super::exec::legacy_to_stdout;
use super::local::{Printer, StderrStyle};
use super::{ClientError, Connection, Endpoint, CONNECT_TIMEOUT};
use crate::exit;
use crate::legacy::LegacyClient;

/// Where lines come from.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    Piped(io::StdinLock<'static>),
}

impl Lines {
    /// The next line, or `None` at end of input.
    fn next(&mut self, prompt: &str) -> Option<String> {
        match self {
            Lines::Editor(editor, _) => loop {
                match editor.readline(prompt) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        return Some(line);
                    }
                    // Ctrl-C at the prompt clears the line, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(_) => return None,
                }
            },
            Lines::Piped(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(line),
                }
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Lines::Editor(editor, Some(path)) = self {
            let _ = editor.save_history(path);
        }
    }
}

/// Opens the line source: an editor with history on a terminal, plain
/// lines otherwise.
fn open_lines(interactive: bool) -> Lines {
    if interactive {
        if let Ok(mut editor) = rustyline::DefaultEditor::new() {
            let history = crate::home::wiresh_home().ok().map(|h| h.join("history"));
            if let Some(h) = &history {
                let _ = editor.load_history(h);
            }
            return Lines::Editor(Box::new(editor), history);
        }
    }
    Lines::Piped(io::stdin().lock())
}

/// The lines to run: trimmed, non-empty, up to `exit`/`quit` or the end of
/// input.
fn next_command(lines: &mut Lines, prompt: &str) -> Option<String> {
    while let Some(line) = lines.next(prompt) {
        let line = line.trim();
        if line == "exit" || line == "quit" {
            return None;
        }
        if !line.is_empty() {
            return Some(line.to_string());
        }
    }
    None
}

/// What running one line leads to.
enum Step {
    /// Go on with the next line; this is the line's exit status.
    Ran(i32),
    /// Stop the shell with this status.
    Stop(i32),
}

/// A server that runs lines one at a time.
trait LineRunner {
    /// Runs one line, its output on this process's stdout and stderr.
    async fn run_line(&mut self, line: &str) -> Step;
    /// Ends the session cleanly.
    async fn close(self);
}

/// Reads lines until end of input or `exit`, running each; returns the
/// status of the last one, as a shell would. `banner` is said first on a
/// terminal.
fn run_lines(rt: &Runtime, mut runner: impl LineRunner, prompt: &str, banner: &str) -> i32 {
    let interactive = io::stdin().is_terminal();
    let mut lines = open_lines(interactive);
    if interactive {
        eprintln!("{banner}; type `exit` or press Ctrl-D to leave");
    }
    let mut last = exit::SUCCESS;
    while let Some(line) = next_command(&mut lines, prompt) {
        match rt.block_on(runner.run_line(&line)) {
            Step::Ran(status) => last = status,
            Step::Stop(status) => return status,
        }
    }
    rt.block_on(runner.close());
    last
}

/// Runs the shell until end of input or `exit`; returns the exit status of
/// the last command (as a shell would), or 255 if the server could not be
/// reached at all.
pub fn run(rt: &Runtime, endpoint: &Endpoint) -> i32 {
    let style = if io::stdin().is_terminal() && io::stderr().is_terminal() {
        StderrStyle::Red
    } else {
        StderrStyle::Plain
    };
    let conn = match rt.block_on(Connection::connect(endpoint)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiresh: {e}");
            return exit::CLIENT_FAILURE;
        }
    };
    let runner = Modern {
        conn: Some(conn),
        endpoint,
        printer: Printer::start(style),
    };
    let banner = format!("connected to {}", endpoint.target);
    run_lines(rt, runner, &format!("{}>>: ", endpoint.target), &banner)
}

/// `wiresh shell --legacy`: the same loop against a server of the original
/// protocol, which has no exit status and joins stderr to stdout; its text
/// is in `encoding` (`None`: UTF-8, passed through). Returns 0, or 255 once
/// the connection is broken.
pub fn run_legacy(
    rt: &Runtime,
    target: &str,
    encoding: Option<&'static encoding_rs::Encoding>,
) -> i32 {
    let mut client = match rt.block_on(LegacyClient::connect(target, CONNECT_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiresh: {e}");
            return exit::CLIENT_FAILURE;
        }
    };
    client.set_encoding(encoding);
    let banner = format!("connected to legacy server {}", client.target());
    let prompt = format!("{} (legacy)>>: ", client.target());
    run_lines(rt, Legacy(client), &prompt, &banner)
}

/// Lines on a wiresh server, over one connection (re-made when lost).
struct Modern<'a> {
    conn: Option<Connection>,
    endpoint: &'a Endpoint,
    printer: Printer,
}

impl LineRunner for Modern<'_> {
    async fn run_line(&mut self, line: &str) -> Step {
        let result = self.try_line(line).await;
        self.printer.sync().await;
        match result {
            Ok(status) => {
                report_status(&status);
                Step::Ran(exit::for_status(&status))
            }
            Err(ClientError::OutputClosed) if self.printer.stdout_closed() => {
                Step::Stop(exit::STDOUT_CLOSED)
            }
            Err(e) => {
                eprintln!("wiresh: {e}");
                if !e.connection_usable() {
                    self.conn = None; // reconnect for the next line
                }
                Step::Ran(exit::CLIENT_FAILURE)
            }
        }
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            conn.close().await;
        }
    }
}

impl Modern<'_> {
    /// Runs one line, connecting first if the previous connection was
    /// lost. A server that closed an idle connection says so before it ran
    /// anything, so the line is safely retried once on a fresh connection.
    async fn try_line(&mut self, line: &str) -> Result<ExitStatus, ClientError> {
        for attempt in 0..2 {
            let conn = match &mut self.conn {
                Some(conn) => conn,
                None => self.conn.insert(Connection::connect(self.endpoint).await?),
            };
            let res = conn
                .run(
                    ExecRequest::shell(line),
                    None,
                    self.printer.sender(),
                    || async {
                        let _ = tokio::signal::ctrl_c().await;
                    },
                )
                .await;
            match res {
                // Only a command that never started is safe to run again.
                Err(ClientError::Remote {
                    code: ErrorCode::Timeout,
                    started: false,
                    ..
                }) if attempt == 0 => self.conn = None,
                other => return other,
            }
        }
        unreachable!("the second attempt always returns")
    }
}

/// Lines on a server of the original protocol.
struct Legacy(LegacyClient);

impl LineRunner for Legacy {
    async fn run_line(&mut self, line: &str) -> Step {
        match legacy_to_stdout(&mut self.0, line).await {
            Ok(()) => Step::Ran(exit::SUCCESS),
            Err(e) => {
                eprintln!("wiresh: {e}");
                Step::Stop(exit::CLIENT_FAILURE)
            }
        }
    }

    async fn close(self) {}
}

/// Shows a non-zero status distinctly from the command's own output.
fn report_status(status: &ExitStatus) {
    let mut err = io::stderr().lock();
    let _ = if status.timed_out {
        writeln!(err, "[timed out after {} ms]", status.duration_ms)
    } else if status.shutdown {
        writeln!(err, "[killed: the server shut down]")
    } else if let Some(sig) = status.signal {
        writeln!(err, "[killed by signal {sig}]")
    } else if let Some(code) = status.code.filter(|c| *c != 0) {
        writeln!(err, "[exit {code}]")
    } else {
        Ok(())
    };
}
