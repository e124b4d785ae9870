//! Running commands on this machine: what both servers (the wiresh
//! protocol's and the legacy one's) share, and nothing of either protocol.
//!
//! - [`spawn`]: a command as the leader of its own process group, with its
//!   pipes, and a [`GroupGuard`] that terminates the group when dropped.
//! - [`Child`]: a command's main process, to wait for.
//! - `launcher`: threads with small descriptor tables of their own that
//!   start commands once the server holds many descriptors, so that a
//!   start costs the same however many it holds.
//! - [`pty`]: a command on a pseudo-terminal, leading a session of its
//!   own, and the [`Terminal`] the server drives it through.
//! - [`slots`]: how many commands may run at once, over every listener.
//! - [`supervisor`]: one state machine for a running command's deadlines
//!   (timeout, shutdown grace, kill, giving up on pipes an escaped process
//!   holds), which a server selects on beside its own I/O.

mod child;
mod launcher;
pub mod pty;
pub mod slots;
pub mod spawn;
pub mod supervisor;

pub use crate::tty::Terminal;
pub use child::Child;
pub use pty::{spawn_on_pty, SpawnedPty};
pub use slots::CommandSlots;
pub use spawn::{
    kill_all_groups, resolve_program, spawn_group, GroupGuard, Program, SpawnError, Spawned, Spec,
};
pub use supervisor::{Deadlines, Event, KillReason, Status, Supervisor};
