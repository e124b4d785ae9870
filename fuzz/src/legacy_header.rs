//! `legacy_header`: arbitrary bytes as what a legacy server sent back.
//!
//! The input goes to [`parse_reply_header`] (as a client's buffer), its
//! first four bytes to [`decode_header_len`], and the whole input, and the
//! input after its first four bytes, to [`decode_header`] (as the JSON of a
//! header). Checks:
//!
//! * nothing panics, including formatting every error;
//! * a length is accepted only in `1..=MAX_HEADER_LEN`;
//! * `parse_reply_header` asks for more bytes only when the header is
//!   really incomplete, never reads past the length it announces, and is
//!   incremental: every shorter prefix of a parsed header is `Ok(None)` or
//!   the same length error;
//! * a decoded header re-encodes with [`encode_reply_header`] and parses back
//!   equal (whenever the re-encoding fits the header limit: the encoder
//!   escapes non-ASCII like Python, so it may grow up to 6x).

use wiresh_proto::legacy::{
    decode_header, decode_header_len, encode_reply_header, is_real_md5, parse_reply_header,
    LegacyHeader, LegacyHeaderError, LEN_PREFIX, MAX_HEADER_LEN,
};

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    check_parse(data);
    check_json(data);
    if let Some(json) = data.get(LEN_PREFIX..) {
        check_json(json);
    }
}

fn check_parse(data: &[u8]) {
    let announced = data
        .first_chunk::<LEN_PREFIX>()
        .map(|prefix| decode_header_len(*prefix));
    if let Some(Ok(len)) = &announced {
        assert!((1..=MAX_HEADER_LEN).contains(len), "length {len} accepted");
    }
    if let Some(Err(e)) = &announced {
        let text = e.to_string();
        assert!(!text.is_empty());
    }

    match parse_reply_header(data) {
        Ok(None) => match &announced {
            None => {}
            Some(Ok(len)) => assert!(
                data.len() < LEN_PREFIX + len,
                "parse_reply_header wants more although {len} header bytes are there"
            ),
            Some(Err(e)) => panic!("the prefix is refused ({e}) but the parser waits"),
        },
        Ok(Some((header, used))) => {
            let Some(Ok(len)) = announced else {
                panic!("a header parsed from a refused or missing prefix");
            };
            assert_eq!(
                used,
                LEN_PREFIX + len,
                "used differs from the announced length"
            );
            assert!(used <= data.len());
            let again = decode_header(&data[LEN_PREFIX..used]).expect("same JSON decodes again");
            assert_eq!(again, header);
            // Incremental: any shorter prefix needs more bytes.
            for cut in [0, 1, LEN_PREFIX - 1, LEN_PREFIX, used / 2, used - 1] {
                if cut < used {
                    assert!(
                        matches!(parse_reply_header(&data[..cut]), Ok(None)),
                        "a cut at {cut} of a {used}-byte header does not wait for more"
                    );
                }
            }
            check_header(&header);
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            match (&e, &announced) {
                (
                    LegacyHeaderError::NegativeLength { .. }
                    | LegacyHeaderError::EmptyHeader
                    | LegacyHeaderError::TooLong { .. },
                    Some(Err(_)),
                ) => {}
                (
                    LegacyHeaderError::NotJson { .. }
                    | LegacyHeaderError::NotObject { .. }
                    | LegacyHeaderError::MissingTotalSize { .. }
                    | LegacyHeaderError::BadField { .. },
                    Some(Ok(len)),
                ) => assert!(data.len() >= LEN_PREFIX + len),
                (e, announced) => panic!("error {e:?} for prefix result {announced:?}"),
            }
            check_preview(&e);
        }
    }
}

fn check_json(json: &[u8]) {
    match decode_header(json) {
        Ok(header) => check_header(&header),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(matches!(
                e,
                LegacyHeaderError::NotJson { .. }
                    | LegacyHeaderError::NotObject { .. }
                    | LegacyHeaderError::MissingTotalSize { .. }
                    | LegacyHeaderError::BadField { .. }
            ));
            check_preview(&e);
        }
    }
}

/// Previews are cut at 120 bytes (plus an ellipsis, plus the replacement
/// characters of invalid UTF-8), so a huge header never makes a huge error.
fn check_preview(e: &LegacyHeaderError) {
    let preview = match e {
        LegacyHeaderError::NotJson { preview, .. }
        | LegacyHeaderError::NotObject { preview }
        | LegacyHeaderError::MissingTotalSize { preview }
        | LegacyHeaderError::BadField { preview, .. } => preview,
        _ => return,
    };
    assert!(
        preview.chars().count() <= 121,
        "preview of {} chars",
        preview.chars().count()
    );
}

/// A decoded header re-encodes and parses back equal.
fn check_header(header: &LegacyHeader) {
    let _ = is_real_md5(&header.md5);
    let wire = encode_reply_header(header);
    let len = wire.len() - LEN_PREFIX;
    let prefix: [u8; LEN_PREFIX] = wire[..LEN_PREFIX].try_into().unwrap();
    assert_eq!(i32::from_ne_bytes(prefix) as usize, len);
    assert!(
        wire[LEN_PREFIX..].is_ascii(),
        "the encoder writes ASCII only"
    );
    if len > MAX_HEADER_LEN {
        // Grew past the limit by escaping; the decoder refuses it, as it
        // must any header that long. See the module docs.
        assert!(matches!(
            parse_reply_header(&wire),
            Err(LegacyHeaderError::TooLong { .. })
        ));
        return;
    }
    let mut with_payload = wire.clone();
    with_payload.extend_from_slice(b"payload");
    let (back, used) = parse_reply_header(&with_payload)
        .unwrap_or_else(|e| panic!("re-encoded header does not parse ({e})"))
        .expect("a whole re-encoded header");
    assert_eq!(&back, header, "header changed in a round trip");
    assert_eq!(used, wire.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python-style encoder escapes non-ASCII, so a header within the
    /// limit can re-encode past it (é: 2 bytes in, 6 out).
    #[test]
    fn reencoding_may_outgrow_the_limit() {
        let json = format!(
            r#"{{"total_size": 1, "filename": "{}"}}"#,
            "é".repeat(MAX_HEADER_LEN / 2 - 30)
        );
        assert!(json.len() <= MAX_HEADER_LEN);
        let mut data = (json.len() as i32).to_ne_bytes().to_vec();
        data.extend_from_slice(json.as_bytes());
        let (header, _) = parse_reply_header(&data).unwrap().unwrap();
        assert!(encode_reply_header(&header).len() > LEN_PREFIX + MAX_HEADER_LEN);
        run(&data);
    }
}
