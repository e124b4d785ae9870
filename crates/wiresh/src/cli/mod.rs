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
//! - [`interrupt`]: what Ctrl-C does to commands that run (for the
//!   fan-out too);
//! - [`legacy`]: `exec` and `shell` with `--legacy`;
//! - `print`: the printer thread (stdout and stderr, large output moved
//!   from the socket without a copy) and the stdin reader.

pub mod copy;
pub mod exec;
pub mod interrupt;
pub mod legacy;
pub(crate) mod lines;
pub(crate) mod print;
pub mod shell;
pub mod terminal;

use std::io::IsTerminal;

use wiresh_proto::ExecRequest;

use crate::client::{ClientError, Connection, Endpoint, Security};
use crate::master::Attempt;

/// Connects to the endpoint's server (with `running` sent ahead, as
/// [`Connection::connect_running`] does): through its master when one
/// answers ([`crate::master`]), else directly; and tells the user, on a
/// terminal, when its fingerprint was pinned just now: in scripts, stderr
/// carries the remote command's stderr and nothing else.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    running: Option<&ExecRequest>,
) -> Result<Connection, ClientError> {
    match crate::master::connect(endpoint, running).await {
        Attempt::Connected(conn) => return Ok(*conn),
        Attempt::Absent => {}
        Attempt::Refused(why) => eprintln!("wiresh: {why}; connecting directly"),
    }
    let conn = match running {
        Some(req) => Connection::connect_running(endpoint, req).await?,
        None => Connection::connect(endpoint).await?,
    };
    if let (Some(seen), Security::Tls(pinning)) = (conn.pinned_on_first_use(), &endpoint.security) {
        if std::io::stderr().is_terminal() {
            eprintln!(
                "wiresh: first connection to {}: pinned its fingerprint {seen} in {}",
                endpoint.target,
                pinning.known_hosts.display()
            );
        }
    }
    Ok(conn)
}
