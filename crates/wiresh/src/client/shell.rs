//! `wiresh shell`: run line after line on one persistent connection.
//!
//! On a terminal it is an interactive prompt with line editing and history
//! (rustyline); otherwise it prints no prompt and runs the lines it reads,
//! so it can be scripted: `printf 'uname -a\nid\n' | wiresh shell`.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use tokio::runtime::Runtime;
use wiresh_proto::{ErrorCode, ExecRequest, ExitStatus};

use super::exec::legacy_to_stdout;
use super::local::{Printer, StderrStyle};
use super::{ClientError, Connection, Endpoint, CONNECT_TIMEOUT};
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
            let history = crate::auth::wiresh_home().ok().map(|h| h.join("history"));
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

/// Runs the shell until end of input or `exit`; returns the exit status of
/// the last command (as a shell would), or 255 if the server could not be
/// reached at all.
pub fn run(rt: &Runtime, endpoint: &Endpoint) -> i32 {
    let interactive = io::stdin().is_terminal();
    let mut lines = open_lines(interactive);
    let style = if interactive && io::stderr().is_terminal() {
        StderrStyle::Red
    } else {
        StderrStyle::Plain
    };
    let printer = Printer::start(style);
    let mut conn = match rt.block_on(Connection::connect(endpoint)) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("wiresh: {e}");
            return 255;
        }
    };
    if interactive {
        eprintln!(
            "connected to {}; type `exit` or press Ctrl-D to leave",
            endpoint.target
        );
    }
    let prompt = format!("{}>>: ", endpoint.target);
    let mut last = 0;
    while let Some(line) = next_command(&mut lines, &prompt) {
        let result = rt.block_on(async {
            let res = run_line(&mut conn, endpoint, &line, &printer).await;
            printer.sync().await;
            res
        });
        last = match result {
            Ok(status) => {
                report_status(&status);
                status.shell_code()
            }
            Err(ClientError::OutputClosed) if printer.stdout_closed() => {
                return super::exec::STDOUT_CLOSED;
            }
            Err(e) => {
                eprintln!("wiresh: {e}");
                if !e.connection_usable() {
                    conn = None; // reconnect for the next line
                }
                255
            }
        };
    }
    if let Some(conn) = conn {
        rt.block_on(conn.close());
    }
    last
}

/// Runs one line, connecting first if the previous connection was lost. A
/// server that closed an idle connection says so before it ran anything,
/// so the line is safely retried once on a fresh connection.
async fn run_line(
    conn: &mut Option<Connection>,
    endpoint: &Endpoint,
    line: &str,
    printer: &Printer,
) -> Result<ExitStatus, ClientError> {
    for attempt in 0..2 {
        if conn.is_none() {
            *conn = Some(Connection::connect(endpoint).await?);
        }
        let c = conn.as_mut().expect("connected above");
        let res = c
            .run(ExecRequest::shell(line), None, printer.sender(), || async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        match res {
            // Only a command that never started is safe to run again.
            Err(ClientError::Remote {
                code: ErrorCode::Timeout,
                started: false,
                ..
            }) if attempt == 0 => *conn = None,
            other => return other,
        }
    }
    unreachable!("the second attempt always returns")
}

/// Shows a non-zero status distinctly from the command's own output.
fn report_status(status: &ExitStatus) {
    let mut err = io::stderr().lock();
    let _ = if status.timed_out {
        writeln!(err, "[timed out after {} ms]", status.duration_ms)
    } else if let Some(sig) = status.signal {
        writeln!(err, "[killed by signal {sig}]")
    } else if let Some(code) = status.code.filter(|c| *c != 0) {
        writeln!(err, "[exit {code}]")
    } else {
        Ok(())
    };
}

/// `wiresh shell --legacy`: the same loop against a server of the original
/// protocol, which has no exit status and joins stderr to stdout. Returns 0,
/// or 255 once the connection is broken.
pub fn run_legacy(rt: &Runtime, target: &str) -> i32 {
    let interactive = io::stdin().is_terminal();
    let mut lines = open_lines(interactive);
    let mut client = match rt.block_on(LegacyClient::connect(target, CONNECT_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wiresh: {e:#}");
            return 255;
        }
    };
    if interactive {
        eprintln!(
            "connected to legacy server {}; type `exit` or press Ctrl-D to leave",
            client.target()
        );
    }
    let prompt = format!("{} (legacy)>>: ", client.target());
    while let Some(line) = next_command(&mut lines, &prompt) {
        if let Err(e) = rt.block_on(legacy_to_stdout(&mut client, &line)) {
            eprintln!("wiresh: {e:#}");
            return 255;
        }
    }
    0
}
