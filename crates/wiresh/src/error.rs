//! The error of setting up: everything read from disk or decided from
//! flags before a server serves or a client connects.
//!
//! Each message says what to do next, so the binary can print it as it is.
//! Errors once connected have their own types: [`crate::client::ClientError`]
//! on the client, refusals with a wire code on the server.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What to do about a file that cannot be used, by the kind of failure.
fn file_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::NotFound => "; check the path (or the setting that names it)",
        std::io::ErrorKind::PermissionDenied => {
            "; check its permissions and its directory's, or run wiresh as the user who owns it"
        }
        _ => "",
    }
}

/// Why wiresh cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Neither `$WIRESH_HOME` nor `$HOME` is set.
    #[error("cannot find a home directory: set {env} or HOME")]
    NoHome {
        /// The variable naming the wiresh home.
        env: &'static str,
    },
    /// A file could not be read, created or written.
    #[error("cannot {action} {what} {}: {source}{}", path.display(), file_hint(source))]
    File {
        /// `read`, `create`, `write`, `open`.
        action: &'static str,
        /// What the file is (`token file`, `TLS key`, ...).
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file that others can read.
    #[error(
        "{what} {} is accessible by other users (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// What the file is.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file whose contents are not usable.
    #[error("{what} {} is not valid: {reason}", path.display())]
    Invalid {
        /// What the file is.
        what: &'static str,
        /// Where it is.
        path: PathBuf,
        /// What is wrong, and where in it.
        reason: String,
    },
    /// No token could be found for a client.
    #[error(
        "no token found at {}: start `wiresh serve` once on this account to create it, \
         or pass --token-file PATH or set {env}",
        path.display()
    )]
    NoToken {
        /// The default token path that was tried.
        path: PathBuf,
        /// The variable that can hold the token instead.
        env: &'static str,
    },
    /// A listening socket could not be made.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
    /// TLS could not be set up.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// Switching to another account failed.
    #[error("{0}")]
    Privilege(String),
    /// Settings that contradict each other or the safety rules.
    #[error("{0}")]
    Config(String),
    /// What was asked cannot be read: a malformed host list, an unknown
    /// group, options that contradict each other. The command line's
    /// usage error ([`crate::exit::USAGE`]).
    #[error("{0}")]
    Usage(String),
}
