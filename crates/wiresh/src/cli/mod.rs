//! The `wiresh` command's client on one server, as a person or a script
//! meets it: remote output printed on this process's stdout and stderr,
//! local stdin forwarded, this terminal put in raw mode for a remote one,
//! lines read at a prompt, progress bars drawn, and every ending turned
//! into an exit status ([`crate::exit`]). The protocol itself is
//! [`crate::client`]'s, which prints nothing; many hosts at once are
//! [`crate::fanout`]'s, which uses the printer and the line loop here.
//!
//! - [`exec`]: `wiresh exec`, this process's stdio as the command's;
//! - [`terminal`]: `wiresh shell` and `exec -t` on a remote terminal;
//! - [`shell`]: `wiresh shell --each-line`;
//! - `lines`: the line-by-line shells' one loop and line reader;
//! - [`copy`]: `wiresh put` and `wiresh get`, with progress bars;
//! - [`legacy`]: `exec` and `shell` with `--legacy`;
//! - `print`: the printer thread (stdout and stderr, large output moved
//!   from the socket without a copy) and the stdin reader.

pub mod copy;
pub mod exec;
pub mod legacy;
pub(crate) mod lines;
pub(crate) mod print;
pub mod shell;
pub mod terminal;
