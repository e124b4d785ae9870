//! The connection preamble: the first bytes a client sends.
//!
//! A fixed magic and a version let the server tell a wiresh client from a
//! wrong peer (an HTTP client, the legacy Python client, a port scanner)
//! before it interprets a single length field, so the wrong peer gets a clear
//! error instead of garbage.

use thiserror::Error;

/// The magic bytes that open every wiresh connection.
pub const MAGIC: &[u8; 6] = b"WIRESH";

/// Length of the preamble on the wire: the magic plus a big-endian `u16`.
pub const PREAMBLE_LEN: usize = MAGIC.len() + 2;

/// A parsed preamble: which protocol version the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Protocol version requested by the client.
    pub version: u16,
}

/// Why a preamble was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreambleError {
    /// The first bytes are not `WIRESH`: this peer does not speak wiresh.
    ///
    /// `got` is already escaped, so it is shown between quotes as it is:
    /// `{got:?}` would escape its backslashes a second time.
    #[error(
        "not a wiresh client: the connection must start with the bytes \"WIRESH\" (got \"{got}\")"
    )]
    BadMagic {
        /// The bytes that arrived instead, escaped as Rust escapes bytes
        /// (`\x00`, `\"`, `\\`), so they read as printable ASCII.
        got: String,
    },
}

impl Preamble {
    /// The preamble for a version.
    pub fn new(version: u16) -> Self {
        Preamble { version }
    }

    /// The bytes to send.
    pub fn encode(&self) -> [u8; PREAMBLE_LEN] {
        let mut out = [0u8; PREAMBLE_LEN];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        out[MAGIC.len()..].copy_from_slice(&self.version.to_be_bytes());
        out
    }

    /// Parses exactly [`PREAMBLE_LEN`] bytes.
    pub fn decode(bytes: &[u8; PREAMBLE_LEN]) -> Result<Self, PreambleError> {
        Self::check_start(bytes)?;
        let version = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
        Ok(Preamble { version })
    }

    /// Checks the first bytes of a preamble as they arrive (any number of
    /// them): [`PreambleError::BadMagic`] as soon as they cannot begin
    /// the magic, so that a peer speaking something else (a legacy client
    /// sending `true`, four bytes) can be answered without waiting for
    /// bytes it will never send.
    pub fn check_start(bytes: &[u8]) -> Result<(), PreambleError> {
        let checked = bytes.len().min(MAGIC.len());
        if bytes[..checked] == MAGIC[..checked] {
            return Ok(());
        }
        Err(PreambleError::BadMagic {
            got: bytes.escape_ascii().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Preamble::new(1);
        assert_eq!(&p.encode(), b"WIRESH\x00\x01");
        assert_eq!(Preamble::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn http_request_is_not_a_preamble() {
        let err = Preamble::decode(b"GET / HT").unwrap_err();
        assert!(err.to_string().contains("not a wiresh client"), "{err}");
        assert!(err.to_string().contains("(got \"GET / HT\")"), "{err}");
    }

    #[test]
    fn a_start_is_refused_at_its_first_wrong_byte() {
        for start in [
            &b""[..],
            b"W",
            b"WIRES",
            b"WIRESH",
            b"WIRESH\x00",
            b"WIRESH\x00\x07",
        ] {
            assert_eq!(Preamble::check_start(start), Ok(()), "{start:?}");
        }
        let err = Preamble::check_start(b"true").unwrap_err();
        assert!(err.to_string().contains("(got \"true\")"), "{err}");
        assert!(Preamble::check_start(b"WIRx").is_err());
    }

    #[test]
    fn unprintable_bytes_are_escaped_once() {
        let err = Preamble::decode(b"wiresh\x00\x01").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"not a wiresh client: the connection must start with the bytes "WIRESH" (got "wiresh\x00\x01")"#
        );
        let err = Preamble::decode(b"\"\\\xff\n\x16abc").unwrap_err();
        assert!(
            err.to_string().ends_with(r#"(got "\"\\\xff\n\x16abc")"#),
            "{err}"
        );
    }
}
