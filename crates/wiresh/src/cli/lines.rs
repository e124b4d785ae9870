//! The line-by-line shells' one loop: a line read, a command run, its
//! status kept; for `wiresh shell --each-line` on one server (plain or
//! legacy) and `wiresh shell` on many hosts alike.
//!
//! On a terminal the lines come from a line editor (rustyline) with a
//! prompt and a history kept in `$WIRESH_HOME/history`; otherwise from
//! stdin with no prompt, so that the shells can be scripted:
//! `printf 'uname -a\nid\n' | wiresh shell --each-line`.
//!
//! What is typed reaches the loop as an [`Input`]: a line, or the end of
//! input (Ctrl-D, the end of a pipe, `exit`).
//!
//! # Typed ahead
//!
//! Between two prompts nothing reads the terminal: it is in its ordinary
//! (canonical) mode while a command runs, with its echo and line editing,
//! and the kernel keeps what is typed, in order. Back at the prompt the
//! editor puts the terminal in raw mode and reads it all, keeping in its
//! buffer what it has not returned yet. So a key typed while a command
//! runs, or after its end but before the prompt is back, does what it
//! would have done at the prompt, after the lines typed before it:
//!
//! - A line runs, in turn.
//! - Ctrl-D on an empty line ends the shell, with the status of the last
//!   line (after some characters it does nothing, as at the prompt). The
//!   kernel keeps it as an end-of-line mark that a read in canonical mode
//!   would see as an empty read; once the terminal is in raw mode, Linux
//!   hands that mark over as a NUL byte, in its place among the lines. The
//!   editor is told that a NUL on an empty line ends input as Ctrl-D does
//!   ([`bind_end_of_input`]), which also makes Ctrl-@ (Ctrl-Space on many
//!   terminals) at the prompt leave.
//! - Ctrl-C throws away what was typed before it: the terminal does it,
//!   as it raises SIGINT, just as the editor throws away the line at the
//!   prompt (where it also drops what it had read past the key: keys typed
//!   in the same instant). While a command runs, that SIGINT interrupts the command (its
//!   runner listens for it). One that comes after the command's end is
//!   still pending in the runtime, which hands a signal to whoever listens
//!   when its driver next turns: the next command's Ctrl-C listener. So
//!   the runtime is turned between reading a line and running it
//!   ([`let_go_of_signals`]), and a Ctrl-C never interrupts a command
//!   typed after it. (The legacy shell's runner listens for no SIGINT: on a
//!   terminal the editor's own handler takes it, so that there Ctrl-C
//!   interrupts nothing, and throws away what was typed before it.)

use std::io::{self, BufRead, IsTerminal};
use std::path::PathBuf;

use tokio::runtime::Runtime;

use crate::exit;

/// What the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A command: trimmed, not empty.
    Line(String),
    /// The end of input: Ctrl-D, the end of piped input, `exit` or `quit`.
    End,
}

impl Input {
    /// What a line amounts to: a command, the end (`exit`, `quit`), or
    /// nothing (a blank line).
    fn from_line(line: &str) -> Option<Input> {
        match line.trim() {
            "" => None,
            "exit" | "quit" => Some(Input::End),
            command => Some(Input::Line(command.to_string())),
        }
    }
}

/// What running one line leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Go on with the next line; this is the line's exit status.
    Ran(i32),
    /// Stop the shell with this status.
    Stop(i32),
}

/// What runs the lines: one server, or many hosts.
pub(crate) trait LineRunner {
    /// Runs one line, its output on this process's stdout and stderr.
    async fn run_line(&mut self, line: &str) -> Step;
    /// Ends the session cleanly.
    async fn close(self);
}

/// Reads lines until the end of input, running each with `runner`;
/// returns the status of the last one, as a shell would. On a terminal,
/// `banner` is said first and `prompt` before each line.
pub(crate) fn run_lines(
    rt: &Runtime,
    mut runner: impl LineRunner,
    prompt: &str,
    banner: &str,
) -> i32 {
    let mut reader = LineReader::open();
    if reader.is_interactive() {
        eprintln!("{banner}; type `exit` or press Ctrl-D to leave");
    }
    let mut last = exit::SUCCESS;
    while let Input::Line(line) = reader.next_command(prompt) {
        let_go_of_signals(rt);
        match rt.block_on(runner.run_line(&line)) {
            Step::Ran(status) => last = status,
            Step::Stop(status) => return status,
        }
    }
    rt.block_on(runner.close());
    last
}

/// Lets the runtime hand out the signals that came in since the last
/// command (a Ctrl-C typed after it had ended, a `kill -INT` at the
/// prompt) now, when no command listens for them: tokio hands a signal
/// out at its next turn of the driver to whoever listens then, and a
/// yield, on this single-threaded runtime, is such a turn.
fn let_go_of_signals(rt: &Runtime) {
    rt.block_on(tokio::task::yield_now());
}

/// Where lines come from.
enum LineReader {
    /// A terminal: the line editor, and the file its history is saved to.
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    /// Anything else: plain lines.
    Piped(io::StdinLock<'static>),
}

impl LineReader {
    /// The line editor with its history on a terminal, plain lines
    /// otherwise.
    fn open() -> LineReader {
        if io::stdin().is_terminal() {
            if let Ok(mut editor) = rustyline::DefaultEditor::new() {
                bind_end_of_input(&mut editor);
                let history = crate::home::wiresh_home().ok().map(|h| h.join("history"));
                if let Some(h) = &history {
                    let _ = editor.load_history(h);
                }
                return LineReader::Editor(Box::new(editor), history);
            }
        }
        LineReader::Piped(io::stdin().lock())
    }

    /// Whether lines are typed at a prompt.
    fn is_interactive(&self) -> bool {
        matches!(self, LineReader::Editor(..))
    }

    /// The next command, or the end of input.
    fn next_command(&mut self, prompt: &str) -> Input {
        loop {
            let Some(line) = self.next_line(prompt) else {
                return Input::End;
            };
            if let Some(input) = Input::from_line(&line) {
                return input;
            }
        }
    }

    /// The next line as typed, or `None` at the end of input.
    fn next_line(&mut self, prompt: &str) -> Option<String> {
        match self {
            LineReader::Editor(editor, _) => loop {
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
            LineReader::Piped(stdin) => {
                let mut line = String::new();
                match stdin.read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(line),
                }
            }
        }
    }
}

/// Has the editor take a NUL on an empty line as the end of input, as it
/// takes Ctrl-D: a Ctrl-D typed while the terminal was in canonical mode
/// reaches the editor as a NUL (see the module's docs).
fn bind_end_of_input(editor: &mut rustyline::DefaultEditor) {
    use rustyline::{Cmd, KeyEvent, Modifiers};
    // `EndOfFile` ends input on an empty line and does nothing on another.
    editor.bind_sequence(KeyEvent::new('\0', Modifiers::NONE), Cmd::EndOfFile);
}

impl Drop for LineReader {
    fn drop(&mut self) {
        if let LineReader::Editor(editor, Some(path)) = self {
            let _ = editor.save_history(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_blank_ones_skipped_exit_and_quit_end() {
        let line = |s: &str| Some(Input::Line(s.to_string()));
        assert_eq!(Input::from_line("  uname -a \n"), line("uname -a"));
        assert_eq!(Input::from_line(" \t\n"), None);
        assert_eq!(Input::from_line("exit\n"), Some(Input::End));
        assert_eq!(Input::from_line(" quit "), Some(Input::End));
        assert_eq!(Input::from_line("exit 3"), line("exit 3"));
    }
}
