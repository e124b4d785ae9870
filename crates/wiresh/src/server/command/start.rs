//! A command started on pipes, or on a pty when the request asks for one.

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use wiresh_proto::PtyRequest;

use crate::exec::{self, Spec, Terminal};

/// A started command, before its supervisor takes the child: the command's
/// side of its I/O and what is needed to supervise it.
pub(super) struct Started {
    pub child: exec::Child,
    pub guard: exec::GroupGuard,
    pub pid: u32,
    pub io: CommandIo,
}

/// How the server talks to a command.
pub(super) enum CommandIo {
    /// Pipes: stdout and stderr apart, and stdin when the request has one.
    Pipes {
        stdout: ChildStdout,
        stderr: ChildStderr,
        stdin: Option<ChildStdin>,
    },
    /// A pty: one terminal for input and output.
    Terminal(Terminal),
}

/// Starts `spec`, on pipes or on a pty.
pub(super) async fn start(
    spec: &Spec,
    pty: Option<&PtyRequest>,
    what: &str,
) -> Result<Started, exec::SpawnError> {
    Ok(match pty {
        None => {
            let s = exec::spawn_group(spec, what).await?;
            Started {
                child: s.child,
                guard: s.guard,
                pid: s.pid,
                io: CommandIo::Pipes {
                    stdout: s.stdout,
                    stderr: s.stderr,
                    stdin: s.stdin,
                },
            }
        }
        Some(pty) => {
            let s = exec::spawn_on_pty(spec, pty, what).await?;
            Started {
                child: s.child,
                guard: s.guard,
                pid: s.pid,
                io: CommandIo::Terminal(s.terminal),
            }
        }
    })
}
