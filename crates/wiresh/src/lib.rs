//! wiresh: run commands on another machine over a framed TCP protocol.
//!
//! The wire format lives in the `wiresh-proto` crate; this crate holds the
//! policy built on it. The `wiresh` binary (`src/bin/wiresh/`) parses the
//! command line and calls into these modules.
//!
//! # Crate map
//!
//! Shared parts, used by the server and the client alike:
//! - [`addr`]: `HOST[:PORT]`, for every protocol.
//! - [`conn`]: a frame connection: whole frames in and out, a writer task
//!   with a data queue and a control queue; over plain TCP it can splice a
//!   frame's body from a pipe, and leave one on the socket (zero-copy).
//! - [`exec`]: commands in sessions, and cgroups where the server can make
//!   them, of their own, killed whole; the server as a child subreaper;
//!   the spawn helper process that starts them; the supervisor of their
//!   deadlines that both servers share.
//! - [`tty`]: a terminal device on the runtime: a command's pty on the
//!   server, this process's own terminal on the client.
//! - [`home`]: `$WIRESH_HOME` and its owner-only files.
//! - [`hostlist`]: host lists such as `web[01-20]`, expanded and folded.
//! - [`inventory`]: the client settings, `client.toml`: how to reach each
//!   host, groups, defaults; the one reader.
//! - [`reach`]: how to reach a host: what is given, the rest from the
//!   client settings and `$WIRESH_HOME`; the one endpoint builder, for
//!   one host and many, the command line and library users alike.
//! - [`auth`]: the token: created, read, compared in constant time.
//! - [`tls`]: the server's TLS identity and the client's pinning of it.
//! - `cert`: what TLS and client keys share: fingerprints, signature checks.
//! - [`keys`]: client keys (`wiresh keygen`), presented with TLS client
//!   authentication and known to the server by fingerprint.
//! - [`audit`]: the audit log both servers write: a record per command and
//!   transfer, begun before it runs, ended (or `aborted`) once.
//! - [`error`]: the error of setting up (files, flags, sockets).
//! - [`tcp_table`]: the kernel's list of TCP sockets (owner, queues).
//! - [`config_file`]: TOML config files (`server.toml`, `client.toml`), read
//!   into entries that know their line.
//! - [`defaults`]: every default, limit and timing of the two servers, in
//!   one place.
//! - [`exit`]: the exit statuses of the `wiresh` command.
//! - [`untrusted`]: text from a server made safe for a terminal: control
//!   characters in messages written out, output filtered down to text and
//!   colours.
//! - `fileio`: partial files, hashing and publishing for transfers.
//! - `listener`: the accept loop and the per-connection log line.
//! - `task`: small task helpers.
//! - `syscall`: system calls restarted after a signal; writing all of a
//!   buffer to a descriptor; inherited descriptors kept from the programs
//!   started.
//!
//! The ends:
//! - [`server`]: `wiresh serve`, the wiresh protocol's server.
//! - [`client`]: the protocol's client ([`client::Connection`]): commands
//!   with their output to a sink the caller picks, file transfers; it
//!   prints nothing and decides no exit status.
//! - [`cli`]: the `wiresh` command's `exec`, `shell`, `put` and `get` on
//!   one server: printing, local stdin and terminal, the line prompt,
//!   progress bars, `--legacy`, exit statuses.
//! - [`fanout`]: `exec`, `shell`, `put` and `get` on many hosts at once.
//! - [`master`]: connection masters (ssh's ControlPersist): a background
//!   process per server that holds authenticated connections and relays
//!   the frames of this user's `wiresh` commands over them.
//! - [`legacy`]: the original Python protocol, server and client.
//! - [`daemon`]: a whole server process: both listeners, signals, one
//!   shutdown, reload on SIGHUP (a new settings snapshot for new
//!   connections).
//! - [`notify`]: readiness and reloads told to systemd (`sd_notify`).
//! - [`privilege`]: dropping root (`--run-as`).
#![warn(missing_docs)]

pub mod addr;
pub mod audit;
pub mod auth;
mod cert;
pub mod cli;
pub mod client;
pub mod config_file;
pub mod conn;
pub mod daemon;
pub mod defaults;
pub mod error;
pub mod exec;
pub mod exit;
pub mod fanout;
pub mod home;
pub mod hostlist;
pub mod inventory;
pub mod keys;
pub mod legacy;
pub mod master;
pub mod notify;
pub mod privilege;
pub mod reach;
pub mod server;
pub mod tcp_table;
pub mod tls;
pub mod tty;
pub mod untrusted;

mod fileio;
mod listener;
mod syscall;
mod task;
