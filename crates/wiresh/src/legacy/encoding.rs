//! Text encodings for the legacy protocol, which has none of its own: the
//! original lesson ran its server on Windows, whose console answered in
//! the machine's code page (gbk on a Chinese system), and its client
//! decoded whatever came. `exec --legacy --encoding LABEL` turns such a
//! server's answer into UTF-8 (and writes the command in its encoding);
//! `serve --legacy-encoding LABEL` makes wiresh's legacy listener answer
//! (and read commands) that way. Labels are the WHATWG ones (`gbk`,
//! `gb18030`, `shift_jis`, `big5`, `windows-1252`, ...), via `encoding_rs`.

use encoding_rs::{CoderResult, Decoder, Encoder, EncoderResult, Encoding, UTF_8};

/// A label that names no encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an encoding label; use a WHATWG label such as gbk, gb18030, big5, shift_jis, \
     euc-kr or windows-1252"
)]
pub struct UnknownEncoding(pub String);

/// A command with characters its encoding cannot write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the command has characters that {0} cannot write")]
pub struct Unwritable(pub &'static str);

/// The encoding a WHATWG label names, or an error that says what to use.
pub fn lookup(label: &str) -> Result<&'static Encoding, UnknownEncoding> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| UnknownEncoding(label.to_string()))
}

/// A command line in the server's encoding. A character the encoding
/// cannot write is an error: a command is not something to guess at.
pub fn encode_command(encoding: &'static Encoding, command: &str) -> Result<Vec<u8>, Unwritable> {
    let (bytes, _, unmappable) = encoding.encode(command);
    if unmappable {
        return Err(Unwritable(encoding.name()));
    }
    Ok(bytes.into_owned())
}

/// Bytes in `encoding` to UTF-8, chunk by chunk: a character split across
/// two chunks comes out whole. Bytes that are not valid in the encoding
/// become U+FFFD.
pub struct ToUtf8 {
    decoder: Decoder,
}

impl ToUtf8 {
    /// A decoder from `encoding` (no byte-order mark handling: console
    /// output has none).
    pub fn new(encoding: &'static Encoding) -> ToUtf8 {
        ToUtf8 {
            decoder: encoding.new_decoder_without_bom_handling(),
        }
    }

    /// The UTF-8 for the next chunk; `last` flushes what is held back.
    pub fn push(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        decode(&mut self.decoder, data, last).into_bytes()
    }
}

/// UTF-8 output (of commands) to bytes in `encoding`, chunk by chunk.
/// Invalid UTF-8 becomes U+FFFD first; a character the encoding cannot
/// write becomes `?`, as a console would show it.
pub struct FromUtf8 {
    decoder: Decoder,
    encoder: Encoder,
}

impl FromUtf8 {
    /// An encoder to `encoding`.
    pub fn new(encoding: &'static Encoding) -> FromUtf8 {
        FromUtf8 {
            decoder: UTF_8.new_decoder_without_bom_handling(),
            encoder: encoding.new_encoder(),
        }
    }

    /// The encoded bytes for the next chunk; `last` flushes.
    pub fn push(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let text = decode(&mut self.decoder, data, last);
        let mut out = Vec::with_capacity(text.len() + 8);
        let mut rest = text.as_str();
        loop {
            let room = self
                .encoder
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len() * 4 + 16);
            let start = out.len();
            out.resize(start + room, 0);
            let (result, read, written) =
                self.encoder
                    .encode_from_utf8_without_replacement(rest, &mut out[start..], last);
            out.truncate(start + written);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => return out,
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(_) => out.push(b'?'),
            }
        }
    }
}

/// Runs a decoder over one chunk.
fn decode(decoder: &mut Decoder, data: &[u8], last: bool) -> String {
    let mut text = String::with_capacity(
        decoder
            .max_utf8_buffer_length(data.len())
            .unwrap_or(data.len() * 3 + 16),
    );
    let mut rest = data;
    loop {
        let (result, read, _) = decoder.decode_to_string(rest, &mut text, last);
        rest = &rest[read..];
        match result {
            CoderResult::InputEmpty => return text,
            CoderResult::OutputFull => text.reserve(rest.len() * 3 + 16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_both_ways_across_chunk_boundaries() {
        let gbk = lookup("GBK").unwrap();
        let utf8 = "你好, wiresh\n".as_bytes();
        let mut to = FromUtf8::new(gbk);
        // Split inside the first character's UTF-8 bytes.
        let mut wire = to.push(&utf8[..2], false);
        wire.extend(to.push(&utf8[2..], false));
        wire.extend(to.push(&[], true));
        assert_eq!(&wire[..4], [0xc4, 0xe3, 0xba, 0xc3]);
        let mut back = ToUtf8::new(gbk);
        // Split inside the first character's two gbk bytes.
        let mut text = back.push(&wire[..1], false);
        text.extend(back.push(&wire[1..], false));
        text.extend(back.push(&[], true));
        assert_eq!(text, utf8);
    }

    #[test]
    fn what_cannot_be_written() {
        let gbk = lookup("gbk").unwrap();
        let mut to = FromUtf8::new(gbk);
        assert_eq!(to.push("a😀b".as_bytes(), true), b"a?b");
        assert!(encode_command(gbk, "echo 😀").is_err());
        assert_eq!(encode_command(gbk, "echo 你").unwrap(), b"echo \xc4\xe3");
        assert!(lookup("klingon").unwrap_err().to_string().contains("gbk"));
    }
}
