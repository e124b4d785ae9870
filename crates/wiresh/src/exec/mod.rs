//! Running commands on this machine: what both servers (the wiresh
//! protocol's and the legacy one's) share, and nothing of either protocol.
//!
//! - [`spawn`]: a command as the leader of its own session (in a cgroup of
//!   its own where the server has them), with its pipes, and a
//!   [`GroupGuard`] that terminates it all when dropped.
//! - `spec`: what a command is, and why it could not start; `guard`: what
//!   terminates it all when dropped.
//! - [`cgroup`]: the server's cgroup v2 tree, a cgroup per command, killed
//!   with `cgroup.kill`, with per-command limits.
//! - `sweep`: killing a command's session or cgroup, again until it is
//!   empty, on a thread of its own; `procfs`: the processes `/proc` shows,
//!   which it and the reaper read.
//! - [`reaper`]: the server as a child subreaper, reaping what commands
//!   leave behind, never the children its tasks wait for.
//! - [`Child`]: a command's main process, to wait for.
//! - [`helper`]: the spawn helper, a small process of its own that starts
//!   commands for the server, so that a start costs the same however big
//!   the server has grown (`wiresh serve` starts it; without it, commands
//!   start from the server's threads).
//! - `launcher`: threads with small descriptor tables of their own that
//!   start commands once the server holds many descriptors, so that a
//!   start costs the same however many it holds.
//! - [`login`]: where and with which environment a command runs: the
//!   account's home and a login's variables, as `ssh host command`.
//! - [`pty`]: a command on a pseudo-terminal, leading a session of its
//!   own, and the [`Terminal`] the server drives it through.
//! - [`slots`]: how many commands may run at once, over every listener.
//! - [`supervisor`]: one state machine for a running command's deadlines
//!   (timeout, shutdown grace, kill, giving up on pipes an escaped process
//!   holds), which a server selects on beside its own I/O.

pub mod cgroup;
mod child;
mod ctty;
mod guard;
pub mod helper;
mod launcher;
pub mod login;
mod procfs;
pub mod pty;
pub mod reaper;
pub mod slots;
pub mod spawn;
mod spec;
pub mod supervisor;
mod sweep;

pub use crate::tty::Terminal;
pub use child::Child;
pub use pty::{spawn_on_pty, SpawnedPty};
pub use slots::CommandSlots;
pub use spawn::{
    kill_all_groups, resolve_program, spawn_group, GroupGuard, Program, SpawnError, Spawned, Spec,
};
pub use supervisor::{Deadlines, Event, KillReason, Status, Supervisor};
