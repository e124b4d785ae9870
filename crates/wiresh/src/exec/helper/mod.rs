//! The spawn helper: a small process of its own that starts commands for
//! `wiresh serve`, so that a start costs the same however big the server
//! has grown.
//!
//! Every command has a `pre_exec` hook (its cgroup, its session, a pty's
//! controlling terminal: `super::ctty`), so the standard library
//! starts it with `fork`, which copies the starting process's page tables
//! and descriptor table: in a server holding 10,000 connections a start
//! cost 5–8 ms, against 2–2.5 ms in an idle one. The helper is the same
//! binary run again (`/proc/self/exe spawn-helper`, dispatched by `main`
//! before anything else: no runtime, a few descriptors, a small address
//! space), so a start there is cheap whatever the server holds; and it
//! starts commands without `fork` at all (the child shares its memory
//! until `execve`, as in `posix_spawn`), which saves a copy of even its
//! small page tables: a command's round trip 15% shorter.
//!
//! - `wire`: the messages, bounded; `datagram`: how one travels, with
//!   descriptors beside it;
//! - `process`: the helper's loop ([`run`]); `vfork`: how it starts a
//!   command, without copying its own memory as `fork` would; `clone3`:
//!   the same start with the child created in its cgroup, which spares
//!   a move that can wait for an RCU grace period (16 ms after a quiet
//!   spell);
//! - `link`: the server's side ([`start`], [`stop`]), which restarts a
//!   helper that died and starts commands itself while there is none.
//!
//! The server resolves everything before it asks (the program in its own
//! `PATH`, the login's environment, the working directory checked), makes
//! the pipes or the pty, and sends the command's ends with the request
//! (`SCM_RIGHTS`); the helper starts it with the same set-up and answers with
//! its pid and a pidfd, or the OS error. The helper runs as the account
//! commands run as: it is started after `--run-as` has dropped root, so the
//! request carries no credentials. Its commands are its children: it
//! reports each exit status, and the server's [`Child`](super::Child)
//! waits for that report. If the helper dies, its commands run on: the
//! server, a child subreaper, adopts them and waits for them itself.

mod clone3;
mod datagram;
mod link;
mod process;
mod vfork;
pub(crate) mod wire;

pub(crate) use link::{available, spawn, NotStarted};
pub use link::{pid, start, stop, HELPER_ARG};
pub use process::run;
