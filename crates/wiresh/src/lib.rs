//! wiresh: run commands on another machine over a framed TCP protocol.
//!
//! The wire format lives in the `wiresh-proto` crate; this crate holds the
//! policy built on it: the server ([`server`]), the client ([`client`]),
//! the shared pieces they need (tokens in [`auth`], process groups in
//! [`process`]) and the legacy protocol ([`legacy`]). The `wiresh` binary is
//! a thin command-line layer over these modules.

pub mod auth;
pub mod client;
pub mod legacy;
pub mod privilege;
pub mod process;
pub mod server;
pub mod shutdown;
pub mod tls;

mod fileio;
mod listener;
mod outbox;
mod task;
