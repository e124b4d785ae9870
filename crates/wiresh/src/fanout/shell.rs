//! `wiresh shell` on many hosts: each line runs on every host, and the
//! output comes back gathered, hosts with the same output and status under
//! one header (ClusterShell's interactive mode). Connections are kept from
//! line to line, and made again for a host that lost its own.

use std::io::{self, BufRead, IsTerminal};

use futures_util::future::join_all;
use tokio::runtime::Runtime;
use wiresh_proto::ExecRequest;

use super::exec::Command;
use super::{Display, Host, Interrupts, Options};
use crate::client::Connection;
use crate::exit;
use crate::hostlist::fold;

/// Where the lines come from: an editor on a terminal, stdin otherwise.
enum Source {
    Editor(Box<rustyline::DefaultEditor>),
    Piped(io::StdinLock<'static>),
}

impl Source {
    fn open() -> Source {
        if io::stdin().is_terminal() {
            if let Ok(editor) = rustyline::DefaultEditor::new() {
                return Source::Editor(Box::new(editor));
            }
        }
        Source::Piped(io::stdin().lock())
    }

    /// The next command: trimmed, not empty; `None` at the end of input
    /// or at `exit`/`quit`.
    fn command(&mut self, prompt: &str) -> Option<String> {
        loop {
            let line = match self {
                Source::Editor(editor) => match editor.readline(prompt) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        line
                    }
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(_) => return None,
                },
                Source::Piped(stdin) => {
                    let mut line = String::new();
                    match stdin.read_line(&mut line) {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => line,
                    }
                }
            };
            match line.trim() {
                "" => continue,
                "exit" | "quit" => return None,
                command => return Some(command.to_string()),
            }
        }
    }
}

/// Runs lines on every host until end of input or `exit`; returns the
/// status of the last line, as [`exit::for_fanout`] gives it.
pub fn run(rt: &Runtime, hosts: &[Host], options: &Options) -> i32 {
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut source = Source::open();
    if matches!(source, Source::Editor(_)) {
        eprintln!(
            "{} hosts: {}; each line runs on all of them; type `exit` or press Ctrl-D to leave",
            hosts.len(),
            fold(&names)
        );
    }
    super::raise_open_files_limit(hosts.len());
    let prompt = format!("[{} hosts]>>: ", hosts.len());
    let mut slots: Vec<Option<Connection>> = hosts.iter().map(|_| None).collect();
    let mut last = exit::SUCCESS;
    while let Some(line) = source.command(&prompt) {
        last = rt.block_on(run_line(hosts, &mut slots, options, &line));
    }
    rt.block_on(join_all(slots.into_iter().flatten().map(Connection::close)));
    last
}

async fn run_line(
    hosts: &[Host],
    slots: &mut [Option<Connection>],
    options: &Options,
    line: &str,
) -> i32 {
    // A connection the server closed while we waited for the line is made
    // again, rather than failing the line.
    join_all(slots.iter_mut().map(|slot| async move {
        if let Some(conn) = slot {
            if conn.ping().await.is_err() {
                *slot = None;
            }
        }
    }))
    .await;
    let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
    let command = Command {
        hosts,
        request: &ExecRequest::shell(line),
        stdin: None,
        options,
        display: &Display::Gather,
        interrupts: &interrupts,
        keep_connections: true,
    };
    let mut ran = match command.run(slots).await {
        Ok(ran) => ran,
        Err(e) => {
            eprintln!("wiresh: {e}");
            return exit::CLIENT_FAILURE;
        }
    };
    if let Err(e) = ran.print_groups(false) {
        eprintln!("wiresh: cannot print the output: {e}");
    }
    // All well goes without saying; anything else gets the summary.
    if !ran.all_ok() {
        eprint!("{}", ran.summary());
    }
    ran.status(false, interrupts.count() > 0)
}
