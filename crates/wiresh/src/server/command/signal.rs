//! A client's `signal` (PROTOCOL.md 7.5.1): one signal to the running
//! command's process group, by its POSIX name; no kill sequence follows.

use nix::sys::signal::Signal;
use tracing::debug;
use wiresh_proto::SignalName;

use crate::exec::Supervisor;

/// Sends the signal `name` names to the command's group; a name this
/// server does not know is ignored, as the protocol says.
pub(super) fn deliver(supervisor: &Supervisor, name: SignalName) {
    match number(name) {
        Some(signal) => supervisor.signal(signal),
        None => debug!(%name, "ignoring a signal this server does not know"),
    }
}

/// The local signal a wire name stands for.
fn number(name: SignalName) -> Option<Signal> {
    Some(match name {
        SignalName::Hup => Signal::SIGHUP,
        SignalName::Int => Signal::SIGINT,
        SignalName::Quit => Signal::SIGQUIT,
        SignalName::Kill => Signal::SIGKILL,
        SignalName::Term => Signal::SIGTERM,
        SignalName::Usr1 => Signal::SIGUSR1,
        SignalName::Usr2 => Signal::SIGUSR2,
        SignalName::Other => return None,
    })
}
