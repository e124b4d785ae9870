//! What a running command sends back, as the client hands it on.

use bytes::Bytes;

/// A chunk of a command's output, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the command wrote to its standard output.
    Stdout(Bytes),
    /// Bytes the command wrote to its standard error.
    Stderr(Bytes),
}
