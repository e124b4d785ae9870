//! The legacy protocol of `shared/legacy` (see `docs/PROTOCOL.md`): the
//! format only, no I/O.
//!
//! wiresh grew from a small Python server and client; people still have
//! scripts built on their protocol, so wiresh speaks it at both ends. Its
//! format, exactly as `server.py` writes it:
//!
//! ```text
//! request : the command text, UTF-8, unframed; one recv(8096) is one command
//! response: header_len  i32, 4 bytes, NATIVE byte order (struct.pack('i'))
//!           header      JSON, UTF-8: {"total_size": N, "md5": ..., "filename": ...}
//!           payload     N bytes: stdout, then stderr
//! ```
//!
//! This module encodes and decodes the reply header with every size checked
//! before anything is allocated; the server and client that move the bytes
//! live in the `wiresh` crate.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// TCP port the legacy scripts use by default (`--port 8090`).
pub const DEFAULT_LEGACY_PORT: u16 = 8090;

/// The legacy server reads a command with one `recv(8096)`: a request of
/// more bytes is split into several commands, so this is also the longest
/// command a client can send as one.
pub const MAX_COMMAND_LEN: usize = 8096;

/// Size of the header-length prefix of a reply.
pub const LEN_PREFIX: usize = 4;

/// Largest reply header accepted: real headers are under 200 bytes, so
/// anything above this is a peer that does not speak the protocol (or a
/// byte-order mismatch), not a header worth buffering.
pub const MAX_HEADER_LEN: usize = 64 * 1024;

/// The JSON header of a legacy reply.
///
/// Keys are declared in the order `server.py` writes them, so encoding
/// reproduces its key order. Decoding ignores keys it does not know (the
/// original also sends `"xxxxx": "123123"`), and only `total_size` is
/// required: it is the one key a client cannot do without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyHeader {
    /// Number of payload bytes after the header (stdout plus stderr).
    pub total_size: u64,
    /// Lowercase hex md5 of the payload — or, from the original server, the
    /// placeholder `"xxxxxxxxxxxxxxxxxxx"`; see [`is_real_md5`].
    #[serde(default)]
    pub md5: String,
    /// A name for the payload; the original sends the placeholder `"xxxxx"`.
    #[serde(default)]
    pub filename: String,
}

/// Why a reply header was rejected. The messages say what the bytes looked
/// like, because the usual cause is talking to something that is not a
/// legacy server.
#[derive(Debug, Error)]
pub enum LegacyHeaderError {
    /// The length prefix is negative.
    #[error("reply header length is negative ({len}){hint}", hint = swapped_hint(*raw))]
    NegativeLength {
        /// The decoded length.
        len: i32,
        /// The four prefix bytes as received.
        raw: [u8; 4],
    },
    /// The length prefix is zero: an empty string is not a JSON header.
    #[error("reply header length is 0; a legacy server always sends a JSON header")]
    EmptyHeader,
    /// The length prefix exceeds [`MAX_HEADER_LEN`].
    #[error("reply header length {len} exceeds the limit of {max} bytes{hint}", hint = swapped_hint(*raw))]
    TooLong {
        /// The decoded length.
        len: usize,
        /// The limit.
        max: usize,
        /// The four prefix bytes as received.
        raw: [u8; 4],
    },
    /// The header is not UTF-8 JSON.
    #[error("reply header is not JSON ({source}); starts with {preview:?}")]
    NotJson {
        /// The parse error.
        source: serde_json::Error,
        /// The first bytes of the header, lossily decoded.
        preview: String,
    },
    /// The header is JSON but not an object.
    #[error("reply header is JSON but not an object: {preview}")]
    NotObject {
        /// The first bytes of the header, lossily decoded.
        preview: String,
    },
    /// The header has no `total_size`.
    #[error("reply header has no \"total_size\" key, so the payload length is unknown: {preview}")]
    MissingTotalSize {
        /// The first bytes of the header, lossily decoded.
        preview: String,
    },
    /// A known key has the wrong type (such as a negative `total_size`).
    #[error("reply header has an invalid field ({source}): {preview}")]
    BadField {
        /// The type error.
        source: serde_json::Error,
        /// The first bytes of the header, lossily decoded.
        preview: String,
    },
}

/// When a bad prefix would be a sensible length in the other byte order,
/// says so: the protocol uses the sender's native order, so a server on a
/// machine of the other endianness produces exactly this.
fn swapped_hint(raw: [u8; 4]) -> String {
    let swapped = i32::from_ne_bytes(raw).swap_bytes();
    if swapped > 0 && swapped as usize <= MAX_HEADER_LEN {
        format!(
            " (read in the other byte order it would be {swapped}: the server may run on a \
             machine of the other endianness, which this protocol cannot express)"
        )
    } else {
        " (is the peer a legacy wiresh/server.py server?)".to_string()
    }
}

fn preview(bytes: &[u8]) -> String {
    const PREVIEW: usize = 120;
    let cut = &bytes[..bytes.len().min(PREVIEW)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > PREVIEW {
        s.push('…');
    }
    s
}

/// Encodes a reply header as it goes on the wire: the 4-byte signed
/// native-endian length, then the JSON. One buffer, so a server can send it
/// with a single write (two small writes are what cost the original 44 ms
/// per command to Nagle and delayed ACKs).
///
/// The JSON is formatted the way Python's `json.dumps` formats it (`", "`
/// and `": "` separators, non-ASCII escaped), so the bytes look like the
/// original's to anything that inspects them.
pub fn encode_reply_header(header: &LegacyHeader) -> Vec<u8> {
    let mut out = vec![0u8; LEN_PREFIX];
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    header
        .serialize(&mut ser)
        .expect("a header of integers and strings always serializes");
    let len = out.len() - LEN_PREFIX;
    // Headers are a few hundred bytes at most; the filename is the server's.
    let len = i32::try_from(len).expect("a reply header is far below 2 GiB");
    out[..LEN_PREFIX].copy_from_slice(&len.to_ne_bytes());
    out
}

/// Decodes and bounds the 4-byte length prefix of a reply header. Call it
/// before reading (or allocating for) the header.
pub fn decode_header_len(raw: [u8; LEN_PREFIX]) -> Result<usize, LegacyHeaderError> {
    let len = i32::from_ne_bytes(raw);
    if len < 0 {
        return Err(LegacyHeaderError::NegativeLength { len, raw });
    }
    let len = len as usize;
    if len == 0 {
        return Err(LegacyHeaderError::EmptyHeader);
    }
    if len > MAX_HEADER_LEN {
        return Err(LegacyHeaderError::TooLong {
            len,
            max: MAX_HEADER_LEN,
            raw,
        });
    }
    Ok(len)
}

/// Decodes the JSON of a reply header (the bytes after the length prefix).
pub fn decode_header(json: &[u8]) -> Result<LegacyHeader, LegacyHeaderError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|source| LegacyHeaderError::NotJson {
            source,
            preview: preview(json),
        })?;
    let Value::Object(map) = &value else {
        return Err(LegacyHeaderError::NotObject {
            preview: preview(json),
        });
    };
    if !map.contains_key("total_size") {
        return Err(LegacyHeaderError::MissingTotalSize {
            preview: preview(json),
        });
    }
    serde_json::from_value(value).map_err(|source| LegacyHeaderError::BadField {
        source,
        preview: preview(json),
    })
}

/// Parses a reply header from the start of `buf`, which may hold only part
/// of it. Returns `Ok(None)` when more bytes are needed, or the header and
/// how many bytes of `buf` it took (prefix included); the payload follows.
/// The length prefix is checked as soon as its 4 bytes are there, so a
/// bogus length is rejected without waiting for (or buffering) the rest.
pub fn parse_reply_header(buf: &[u8]) -> Result<Option<(LegacyHeader, usize)>, LegacyHeaderError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = decode_header_len(prefix.try_into().expect("4 bytes"))?;
    let Some(json) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((decode_header(json)?, LEN_PREFIX + len)))
}

/// Whether `md5` is a real md5 digest (32 lowercase hex digits) rather than
/// a placeholder such as the original server's `"xxxxxxxxxxxxxxxxxxx"`. A
/// client verifies the payload only against a real one.
pub fn is_real_md5(md5: &str) -> bool {
    md5.len() == 32 && md5.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// serde_json formatting that matches Python's `json.dumps` defaults.
struct PythonFormatter;

/// Python's item separator, `", "`, before every item but the first.
fn python_separator<W: ?Sized + std::io::Write>(
    writer: &mut W,
    first: bool,
) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        python_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    /// `ensure_ascii=True`: every non-ASCII character as `\uXXXX`, with
    /// surrogate pairs above the BMP.
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(total_size: u64, md5: &str, filename: &str) -> LegacyHeader {
        LegacyHeader {
            total_size,
            md5: md5.into(),
            filename: filename.into(),
        }
    }

    #[test]
    fn encodes_like_server_py() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let wire = encode_reply_header(&header(0, md5, "-"));
        let json = format!(r#"{{"total_size": 0, "md5": "{md5}", "filename": "-"}}"#);
        assert_eq!(&wire[..4], &(json.len() as i32).to_ne_bytes());
        assert_eq!(&wire[4..], json.as_bytes());
    }

    #[test]
    fn escapes_non_ascii_like_python() {
        let wire = encode_reply_header(&header(1, "", "é🦀\"x"));
        let json = std::str::from_utf8(&wire[4..]).unwrap();
        assert_eq!(
            json,
            r#"{"total_size": 1, "md5": "", "filename": "\u00e9\ud83e\udd80\"x"}"#
        );
        assert_eq!(decode_header(json.as_bytes()).unwrap().filename, "é🦀\"x");
    }

    #[test]
    fn round_trips() {
        let h = header(u64::MAX, "0123456789abcdef0123456789abcdef", "out.txt");
        let wire = encode_reply_header(&h);
        let (back, used) = parse_reply_header(&wire).unwrap().unwrap();
        assert_eq!(back, h);
        assert_eq!(used, wire.len());
    }

    #[test]
    fn decodes_the_original_header_ignoring_extra_keys() {
        let json = br#"{"total_size": 12, "md5": "xxxxxxxxxxxxxxxxxxx", "filename": "xxxxx", "xxxxx": "123123"}"#;
        let h = decode_header(json).unwrap();
        assert_eq!(h, header(12, "xxxxxxxxxxxxxxxxxxx", "xxxxx"));
        assert!(!is_real_md5(&h.md5));
    }

    #[test]
    fn only_total_size_is_required() {
        assert_eq!(
            decode_header(br#"{"total_size": 3}"#).unwrap(),
            header(3, "", "")
        );
        let err = decode_header(br#"{"md5": "x"}"#).unwrap_err();
        assert!(
            matches!(err, LegacyHeaderError::MissingTotalSize { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("total_size"));
    }

    #[test]
    fn rejects_bad_json() {
        for bad in [&b"not json"[..], b"{\"total_size\": 1", b"\xff\xfe"] {
            let err = decode_header(bad).unwrap_err();
            assert!(matches!(err, LegacyHeaderError::NotJson { .. }), "{err}");
        }
        let err = decode_header(b"[1, 2]").unwrap_err();
        assert!(matches!(err, LegacyHeaderError::NotObject { .. }), "{err}");
        for bad in [
            &br#"{"total_size": -1}"#[..],
            br#"{"total_size": "5"}"#,
            br#"{"total_size": 1.5}"#,
            br#"{"total_size": 1, "md5": 7}"#,
        ] {
            let err = decode_header(bad).unwrap_err();
            assert!(matches!(err, LegacyHeaderError::BadField { .. }), "{err}");
        }
    }

    #[test]
    fn bounds_the_length_before_reading_the_header() {
        assert_eq!(decode_header_len(7i32.to_ne_bytes()).unwrap(), 7);
        assert_eq!(
            decode_header_len((MAX_HEADER_LEN as i32).to_ne_bytes()).unwrap(),
            MAX_HEADER_LEN
        );
        let err = decode_header_len((-5i32).to_ne_bytes()).unwrap_err();
        assert!(
            matches!(err, LegacyHeaderError::NegativeLength { len: -5, .. }),
            "{err}"
        );
        let err = decode_header_len((MAX_HEADER_LEN as i32 + 1).to_ne_bytes()).unwrap_err();
        assert!(matches!(err, LegacyHeaderError::TooLong { .. }), "{err}");
        let err = decode_header_len(0i32.to_ne_bytes()).unwrap_err();
        assert!(matches!(err, LegacyHeaderError::EmptyHeader), "{err}");
        // A huge length is refused from the prefix alone, with no header bytes.
        let err = parse_reply_header(&i32::MAX.to_ne_bytes()).unwrap_err();
        assert!(matches!(err, LegacyHeaderError::TooLong { .. }), "{err}");
    }

    #[test]
    fn hints_at_a_byte_order_mismatch() {
        let err = decode_header_len(80i32.swap_bytes().to_ne_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("other byte order it would be 80"),
            "{err}"
        );
        let err = decode_header_len(*b"HTTP").unwrap_err();
        assert!(err.to_string().contains("legacy"), "{err}");
    }

    #[test]
    fn parses_incrementally() {
        let wire = encode_reply_header(&header(5, "", "-"));
        for cut in 0..wire.len() {
            assert!(
                parse_reply_header(&wire[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let mut with_payload = wire.clone();
        with_payload.extend_from_slice(b"hello");
        let (h, used) = parse_reply_header(&with_payload).unwrap().unwrap();
        assert_eq!(h.total_size, 5);
        assert_eq!(&with_payload[used..], b"hello");
    }

    #[test]
    fn recognises_real_md5s() {
        assert!(is_real_md5("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_real_md5("xxxxxxxxxxxxxxxxxxx"));
        assert!(!is_real_md5("D41D8CD98F00B204E9800998ECF8427E"));
        assert!(!is_real_md5("d41d8cd98f00b204e9800998ecf8427"));
        assert!(!is_real_md5("d41d8cd98f00b204e9800998ecf8427e0"));
        assert!(!is_real_md5("g41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_real_md5(""));
    }
}
