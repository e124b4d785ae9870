//! Text that came from a server, made safe to show on a terminal.
//!
//! A server (or a command it runs) can send any bytes. Written to a
//! terminal as they are, control sequences in them can set the clipboard
//! (OSC 52), the window title (OSC 0), clear the screen, move the cursor
//! over earlier lines, or forge a line wiresh seems to have written. So:
//!
//! - [`escape`]: every message wiresh prints itself with a server's words in
//!   it (an `error` frame's message, names from a listing, the server's
//!   name) has every control character written out as `\xNN`: C0 (tab and
//!   newline included: a message is one line), DEL and C1.
//! - [`TerminalFilter`]: the many-host display's output on a terminal keeps
//!   text, tabs, newlines (a carriage return only before a newline) and
//!   plain colours (SGR, `ESC [ digits ; ... m`); any other control byte or
//!   sequence is written out as `\xNN`, so what it said is still readable.
//!
//! A single host's `exec` output is not filtered: like ssh, it is the
//! command's own, byte for byte.

use std::borrow::Cow;

/// Whether `c` is a control character: C0, DEL or C1.
fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}')
}

/// `text` with every control character (C0, DEL, C1) written out as
/// `\xNN`; borrowed when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Longest colour sequence held back waiting for its end; a longer one
/// is not a plain colour and is written out.
const MAX_SGR: usize = 64;

/// Output bound for a terminal, in pieces as it comes: text, `\t`, `\n`,
/// `\r\n` and SGR colour sequences pass; every other control byte (C0,
/// DEL, C1, ESC starting anything but a colour) is written out as `\xNN`.
/// A sequence or character cut between two pieces is held until the next.
#[derive(Debug, Default)]
pub struct TerminalFilter {
    /// The start of a colour sequence, a character or a `\r` whose end is
    /// in the next piece.
    held: Vec<u8>,
}

/// What the bytes at the start of some input are.
enum Token {
    /// Pass these many bytes as they are.
    Pass(usize),
    /// Write out this byte as `\xNN` (it is one byte long).
    Escape(u8),
    /// Write out this C1 character (two bytes in UTF-8) as `\xNN`.
    EscapeC1(u8),
    /// Cannot tell yet: the rest may complete it.
    Incomplete,
}

impl TerminalFilter {
    /// A filter with nothing held.
    pub fn new() -> TerminalFilter {
        TerminalFilter::default()
    }

    /// The filtered form of `data`, less whatever is held for the next
    /// piece.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.held);
        input.extend_from_slice(data);
        let mut out = Vec::with_capacity(input.len());
        let done = filter(&input, &mut out, false);
        self.held = input[done..].to_vec();
        out
    }

    /// Whatever is still held, filtered as if nothing followed it.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        filter(&held, &mut out, true);
        out
    }
}

/// Filters `input` into `out`; returns how much of it was taken: all of
/// it at the `end`, else up to what the next piece may complete.
fn filter(input: &[u8], out: &mut Vec<u8>, end: bool) -> usize {
    let write_out =
        |out: &mut Vec<u8>, b: u8| out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
    let mut at = 0;
    while at < input.len() {
        match token(&input[at..]) {
            Token::Pass(n) => {
                out.extend_from_slice(&input[at..at + n]);
                at += n;
            }
            Token::Escape(b) => {
                write_out(out, b);
                at += 1;
            }
            Token::EscapeC1(b) => {
                write_out(out, b);
                at += 2;
            }
            Token::Incomplete if !end => break,
            // Nothing will complete it now: an ESC or a CR is written
            // out, the start of a character cut short passes as it is.
            Token::Incomplete => {
                match input[at] {
                    b @ (0x1b | b'\r') => write_out(out, b),
                    b => out.push(b),
                }
                at += 1;
            }
        }
    }
    at
}

/// Classifies the start of `rest` (never empty).
fn token(rest: &[u8]) -> Token {
    let b = rest[0];
    match b {
        b'\t' | b'\n' => Token::Pass(1),
        b'\r' => match rest.get(1) {
            Some(b'\n') => Token::Pass(2),
            Some(_) => Token::Escape(b),
            None => Token::Incomplete,
        },
        0x1b => colour(rest),
        0x00..=0x1f | 0x7f => Token::Escape(b),
        0x20..=0x7e => {
            let n = rest
                .iter()
                .position(|&c| !(0x20..=0x7e).contains(&c))
                .unwrap_or(rest.len());
            Token::Pass(n)
        }
        _ => character(rest),
    }
}

/// An ESC: a whole SGR sequence passes; anything else has its ESC written
/// out (what follows is then plain text).
fn colour(rest: &[u8]) -> Token {
    match rest.get(1) {
        None => return Token::Incomplete,
        Some(b'[') => {}
        Some(_) => return Token::Escape(0x1b),
    }
    for (i, &c) in rest.iter().enumerate().skip(2) {
        match c {
            b'0'..=b'9' | b';' if i < MAX_SGR => {}
            b'm' => return Token::Pass(i + 1),
            _ => return Token::Escape(0x1b),
        }
    }
    if rest.len() < MAX_SGR {
        Token::Incomplete
    } else {
        Token::Escape(0x1b)
    }
}

/// A byte of 0x80 or more: a UTF-8 character passes unless it is C1; a
/// byte that starts no character passes unless it is in 0x80..=0x9f (an
/// 8-bit C1 control to a terminal that is not in UTF-8).
fn character(rest: &[u8]) -> Token {
    let b = rest[0];
    let len = match b {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return invalid(b),
    };
    let have = rest.len().min(len);
    match std::str::from_utf8(&rest[..have]) {
        Ok(s) => match s.chars().next() {
            Some(c @ '\u{80}'..='\u{9f}') => Token::EscapeC1(c as u8),
            _ => Token::Pass(have),
        },
        Err(e) if e.error_len().is_none() => Token::Incomplete,
        Err(_) => invalid(b),
    }
}

fn invalid(b: u8) -> Token {
    if (0x80..=0x9f).contains(&b) {
        Token::Escape(b)
    } else {
        Token::Pass(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACK: &str = "\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J";

    #[test]
    fn messages_lose_every_control() {
        assert!(matches!(escape("plain text é"), Cow::Borrowed(_)));
        let message = format!("no: {ATTACK}\nline\ttab\u{9b}31m\x7f");
        let escaped = escape(&message);
        assert_eq!(
            escaped,
            "no: \\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x0aline\\x09tab\\x9b31m\\x7f"
        );
        assert!(!escaped.chars().any(is_control));
    }

    fn filtered(pieces: &[&[u8]]) -> Vec<u8> {
        let mut filter = TerminalFilter::new();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(filter.push(piece));
        }
        out.extend(filter.finish());
        out
    }

    #[test]
    fn colours_tabs_and_newlines_pass_the_rest_is_written_out() {
        let text = "\x1b[1;31mred\x1b[0m\tok\r\nnext é €\n";
        assert_eq!(filtered(&[text.as_bytes()]), text.as_bytes());
        let out = filtered(&[ATTACK.as_bytes()]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2J"
        );
        // Over-writing a line, a cursor move, a C1 CSI in UTF-8 and as a byte.
        let out = filtered(&[b"ok\rforged\x08\x1b[1A\xc2\x9b2J\x9b2J"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok\\x0dforged\\x08\\x1b[1A\\x9b2J\\x9b2J"
        );
        // Latin-1 bytes that are not C1 pass as they are.
        assert_eq!(filtered(&[b"caf\xe9"]), b"caf\xe9");
    }

    #[test]
    fn a_sequence_cut_between_pieces_is_judged_whole() {
        let text = "a\x1b[31mb\x1b]0;t\x07c\r\né\u{9b}";
        let whole = filtered(&[text.as_bytes()]);
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(filtered(&[a, b]), whole, "cut at {cut}");
        }
        // Held at the end with nothing after: written out, never passed.
        assert_eq!(filtered(&[b"x\x1b[31"]), b"x\\x1b[31");
        assert_eq!(filtered(&[b"x\r"]), b"x\\x0d");
        assert_eq!(filtered(&[b"x\xc2"]), b"x\xc2");
        // A "colour" that never ends is not held for ever.
        let long = [b"\x1b[".as_slice(), &[b'1'; 100]].concat();
        assert!(filtered(&[&long]).starts_with(b"\\x1b["));
    }
}
