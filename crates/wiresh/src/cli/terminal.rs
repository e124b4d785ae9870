//! A remote terminal session from this process's terminal: `wiresh shell`
//! on a terminal, `wiresh exec -t`.
//!
//! The local terminal is put in raw mode, so every key (Ctrl-C, Ctrl-Z,
//! Ctrl-D included) goes to the remote terminal, whose line discipline acts
//! on it; [`RawMode`] puts it back on every way out: the remote end, a lost
//! server, `~.`, SIGTERM or SIGHUP, a panic. The window size goes with the
//! request and again on every SIGWINCH, and `~` at the start of a line
//! begins an escape, as in ssh ([`Escapes`]).
//!
//! Without a local terminal (`exec -t` with piped input) the session is the
//! same, minus raw mode, escapes and resizing.

use std::io::{self, IsTerminal};

use bytes::Bytes;
use rustix::termios::{self, OptionalActions, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use wiresh_proto::{ExecRequest, PtyRequest, WindowSize};

use super::exec::exit_code;
use super::interrupt::Interrupts;
use super::print::{spawn_stdin_reader, PrintJob, Printer, StderrStyle};
use crate::client::{ClientError, Connection, Endpoint, Output};
use crate::exit;
use crate::tty::{window_size, Terminal};

/// How long output may take to reach the terminal once the session is
/// over, before the terminal is given back anyway.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The size assumed when no terminal says: the classic VT100's.
const DEFAULT_SIZE: WindowSize = WindowSize { cols: 80, rows: 24 };

/// What the escapes do, for `~?`. Lines end in `\r\n`: the terminal is raw.
const ESCAPE_HELP: &str = "Supported escape sequences (at the start of a line):\r\n \
    ~.  - disconnect (the remote session is closed)\r\n \
    ~?  - this message\r\n \
    ~~  - send the escape character by typing it twice\r\n";

/// Runs `req` on a remote pty and returns the exit status this process
/// should end with (see [`crate::exit`]): the remote command's, or 255.
pub fn run(rt: &Runtime, endpoint: &Endpoint, mut req: ExecRequest, forward_stdin: bool) -> i32 {
    // Keys and resizes only come from a terminal we read from.
    let local = forward_stdin && io::stdin().is_terminal();
    let size = [
        window_size(rustix::stdio::stdin()),
        window_size(rustix::stdio::stdout()),
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or(DEFAULT_SIZE);
    req.pty = Some(PtyRequest {
        term: std::env::var("TERM").unwrap_or_default(),
        cols: size.cols,
        rows: size.rows,
    });
    let mut conn = match rt.block_on(super::connect(endpoint, None)) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("wiresh: {e}");
            return exit::for_error(&e);
        }
    };
    let local_terminal = || -> io::Result<(Terminal, RawMode)> {
        // Opened inside the runtime, which the terminal registers with.
        let tty = rt.block_on(async { Terminal::reopen_stdin() })?;
        Ok((tty, RawMode::enter()?))
    };
    let (tty, raw) = if local {
        match local_terminal() {
            Ok((tty, raw)) => (Some(tty), Some(raw)),
            Err(e) => {
                eprintln!("wiresh: cannot put the terminal in raw mode: {e}");
                return exit::CLIENT_FAILURE;
            }
        }
    } else {
        (None, None)
    };
    let printer = Printer::start(StderrStyle::Plain);
    let ended = rt.block_on(async {
        let ended = session(&mut conn, req, forward_stdin, tty.as_ref(), &printer).await;
        printer.sync().await;
        ended
    });
    // The terminal is the user's again before anything is said on it.
    drop(raw);
    let stdout_closed = printer.stdout_closed();
    drop(printer);
    match ended {
        Ended::Finished(result) => {
            rt.block_on(conn.close());
            exit_code(result, stdout_closed)
        }
        Ended::Disconnected => {
            eprintln!("wiresh: disconnected from {} (~.)", endpoint.target);
            exit::CLIENT_FAILURE
        }
        Ended::Signal(signal) => {
            eprintln!("wiresh: killed by signal {signal}; the remote session was closed");
            exit::CLIENT_FAILURE
        }
    }
}

/// How a session ended.
enum Ended {
    /// The command ended, or the connection failed.
    Finished(Result<wiresh_proto::ExitStatus, ClientError>),
    /// The user typed `~.`.
    Disconnected,
    /// This process got this signal.
    Signal(i32),
}

/// Drives one session until it ends; dropping the connection afterwards is
/// what makes the server end the remote side.
async fn session(
    conn: &mut Connection,
    req: ExecRequest,
    forward_stdin: bool,
    tty: Option<&Terminal>,
    printer: &Printer,
) -> Ended {
    let local = tty.is_some();
    let (disconnect_tx, mut disconnect) = oneshot::channel();
    let stdin = match (forward_stdin, tty) {
        (false, _) => None,
        (true, Some(tty)) => Some(spawn_key_reader(tty, disconnect_tx)),
        (true, None) => Some(spawn_stdin_reader()),
    };
    let resizer = conn.resizer();
    let (mut winch, mut term, mut hup, mut int, mut quit) = match (
        signal(SignalKind::window_change()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
        _ => return Ended::Finished(Err(ClientError::Protocol("cannot watch signals".into()))),
    };
    let (output, output_rx) = mpsc::channel::<Output>(8);
    let writer = spawn_output_writer(output_rx, tty, printer);
    let ended = async {
        // Without a local terminal, Ctrl-C in the user's shell interrupts,
        // as for `exec`; with one, Ctrl-C is a key and SIGINT only comes
        // from `kill`.
        let (interrupts, _ctrl_c) = Interrupts::from_ctrl_c();
        let mut cancel = interrupts.canceller(conn.signaller());
        let running = conn.run(req, stdin, &output, move || {
            let interrupt = cancel();
            async move {
                if local {
                    std::future::pending::<()>().await;
                }
                interrupt.await;
            }
        });
        tokio::pin!(running);
        loop {
            tokio::select! {
                biased;
                result = &mut running => return Ended::Finished(result),
                Ok(()) = &mut disconnect => return Ended::Disconnected,
                Some(()) = term.recv() => return Ended::Signal(libc_signal::TERM),
                Some(()) = hup.recv() => return Ended::Signal(libc_signal::HUP),
                Some(()) = quit.recv() => return Ended::Signal(libc_signal::QUIT),
                Some(()) = int.recv(), if local => return Ended::Signal(libc_signal::INT),
                Some(()) = winch.recv(), if local => {
                    if let Some(size) = window_size(rustix::stdio::stdin()) {
                        // A lost connection shows in `running`.
                        let _ = resizer.resize(size).await;
                    }
                }
            }
        }
    }
    .await;
    // What arrived is shown before the terminal is given back, unless the
    // terminal does not take it.
    drop(output);
    let _ = tokio::time::timeout(OUTPUT_DRAIN, writer).await;
    ended
}

/// Signal numbers, for messages and exit statuses.
mod libc_signal {
    use nix::sys::signal::Signal;
    pub const TERM: i32 = Signal::SIGTERM as i32;
    pub const HUP: i32 = Signal::SIGHUP as i32;
    pub const INT: i32 = Signal::SIGINT as i32;
    pub const QUIT: i32 = Signal::SIGQUIT as i32;
}

/// Reads keys from the local terminal on the runtime's thread and hands
/// them over, acting on `~` escapes on the way: `~?` prints the list, `~.`
/// fires `disconnect`.
fn spawn_key_reader(tty: &Terminal, disconnect: oneshot::Sender<()>) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    let (mut keys, mut screen) = (tty.reader(), tty.writer());
    tokio::spawn(async move {
        let mut escapes = Escapes::default();
        let mut buf = [0u8; 4096];
        // End of file or an error: the terminal is gone, and so is the input.
        while let Ok(n @ 1..) = keys.read(&mut buf).await {
            let keyed = escapes.feed(&buf[..n]);
            if keyed.help {
                let _ = screen.write_all(ESCAPE_HELP.as_bytes()).await;
            }
            if !keyed.send.is_empty() && tx.send(Bytes::from(keyed.send)).await.is_err() {
                return;
            }
            if keyed.disconnect {
                let _ = disconnect.send(());
                // Keep `tx` until the session is gone: its end would be a
                // `stdin_end`, which is not what `~.` means.
                let () = std::future::pending().await;
                unreachable!("a pending future never resolves");
            }
        }
    });
    rx
}

/// Writes the remote output: to the local terminal on the runtime's thread
/// when stdout is that terminal, else through the printer thread. Ends when
/// `output` does, or when the terminal is gone.
fn spawn_output_writer(
    mut output: mpsc::Receiver<Output>,
    tty: Option<&Terminal>,
    printer: &Printer,
) -> tokio::task::JoinHandle<()> {
    let mut screen = tty
        .filter(|tty| tty.is(rustix::stdio::stdout()))
        .map(Terminal::writer);
    let printer = printer.sender().clone();
    tokio::spawn(async move {
        while let Some(chunk) = output.recv().await {
            let written = match &mut screen {
                Some(screen) => match &chunk {
                    Output::Stdout(b) | Output::Stderr(b) => screen.write_all(b).await.is_ok(),
                },
                None => printer.send(PrintJob::Output(chunk)).await.is_ok(),
            };
            if !written {
                return;
            }
        }
    })
}

/// The escape character, as in ssh.
const ESCAPE: u8 = b'~';

/// ssh's escapes: `~` right after a line end (or first of all) starts one.
#[derive(Debug)]
pub struct Escapes {
    at_line_start: bool,
    after_escape: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Escapes {
            at_line_start: true,
            after_escape: false,
        }
    }
}

/// What some keys amount to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Keyed {
    /// The keys to send on.
    pub send: Vec<u8>,
    /// `~?`: list the escapes.
    pub help: bool,
    /// `~.`: disconnect (keys after it are dropped).
    pub disconnect: bool,
}

impl Escapes {
    /// Takes some keys as typed.
    pub fn feed(&mut self, keys: &[u8]) -> Keyed {
        let mut out = Keyed::default();
        for &key in keys {
            if self.after_escape {
                self.after_escape = false;
                match key {
                    b'.' => {
                        out.disconnect = true;
                        return out;
                    }
                    b'?' => {
                        out.help = true;
                        continue; // still at the start of a line
                    }
                    ESCAPE => out.send.push(ESCAPE),
                    // Not an escape after all: both keys go on.
                    other => out.send.extend_from_slice(&[ESCAPE, other]),
                }
                self.at_line_start = key == b'\r' || key == b'\n';
                continue;
            }
            if self.at_line_start && key == ESCAPE {
                self.after_escape = true;
                continue;
            }
            out.send.push(key);
            self.at_line_start = key == b'\r' || key == b'\n';
        }
        out
    }
}

/// The local terminal in raw mode, put back as it was when dropped.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode: no echo, no line editing, no
    /// signals from keys, no output processing (the remote terminal already
    /// did it).
    pub fn enter() -> io::Result<RawMode> {
        let fd = rustix::stdio::stdin();
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing more can be done if the terminal is gone (hung up).
        let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(escapes: &mut Escapes, keys: &str) -> (String, bool, bool) {
        let k = escapes.feed(keys.as_bytes());
        (String::from_utf8(k.send).unwrap(), k.help, k.disconnect)
    }

    #[test]
    fn escapes_only_at_the_start_of_a_line() {
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, "~."), (String::new(), false, true));
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, "a~."), ("a~.".into(), false, false));
        assert_eq!(feed(&mut e, "\r~"), ("\r".into(), false, false));
        assert_eq!(feed(&mut e, "."), (String::new(), false, true));
    }

    #[test]
    fn help_doubled_tilde_and_other_keys() {
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, "~?"), (String::new(), true, false));
        // Still at the start of a line after the help.
        assert_eq!(feed(&mut e, "~~"), ("~".into(), false, false));
        // `~~` sent one `~`, in the middle of the line now.
        assert_eq!(feed(&mut e, "~."), ("~.".into(), false, false));
        let mut e = Escapes::default();
        assert_eq!(feed(&mut e, "~x\n~"), ("~x\n".into(), false, false));
        assert_eq!(feed(&mut e, "\r"), ("~\r".into(), false, false));
        assert_eq!(feed(&mut e, "~.rest"), (String::new(), false, true));
    }
}
