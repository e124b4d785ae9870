//! The host-list grammar (see the module docs of [`super`]): text into
//! operands, each a pattern or an `@group`, joined by operators. Nothing
//! is expanded or counted here; every error points at its character.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::error::{ErrorKind, HostListError};

/// How an operand combines with what the list named before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `,`: add.
    Union,
    /// `!`: take away.
    Difference,
    /// `&`: keep only those also here.
    Intersection,
    /// `^`: keep those in exactly one of the two.
    SymmetricDifference,
}

impl Op {
    fn of(byte: u8) -> Option<Op> {
        Some(match byte {
            b',' => Op::Union,
            b'!' => Op::Difference,
            b'&' => Op::Intersection,
            b'^' => Op::SymmetricDifference,
            _ => return None,
        })
    }
}

/// One host pattern or group, with the operator before it (`,` for the
/// first).
#[derive(Debug)]
pub(super) struct Operand<'a> {
    pub op: Op,
    /// Byte range in the list, for messages.
    pub span: Range<usize>,
    pub what: What<'a>,
}

#[derive(Debug)]
pub(super) enum What<'a> {
    /// `@name`.
    Group(&'a str),
    /// Texts and brackets: `texts.len() == brackets.len() + 1`, a bracket
    /// between each two texts.
    Pattern {
        texts: Vec<&'a str>,
        brackets: Vec<Bracket>,
    },
}

/// A `[...]` range list, as written.
#[derive(Debug)]
pub(super) struct Bracket {
    pub span: Range<usize>,
    pub items: Vec<Item>,
}

/// `LOW`, `LOW-HIGH` or `LOW-HIGH/STEP`, numbers padded to `width` (0:
/// not padded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Item {
    pub low: u64,
    pub high: u64,
    pub step: u64,
    pub width: usize,
}

const IN_NAME: &str = "a host name holds letters, digits, `-`, `.`, `_` and `:PORT`; \
     hosts are joined by `,` (or `!`, `&`, `^`)";
const IN_RANGE: &str =
    "a range list holds numbers and ranges, such as [1-3,7], [01-10] or [02-32/4]";
const IN_GROUP: &str = "a group name holds letters, digits, `-`, `_` and `.`";
const AFTER_ITEM: &str = "a range is LOW-HIGH or LOW-HIGH/STEP, ranges are joined by `,`";
const AT_SIGN: &str = "`@` starts a group (@web) at the start of a host, nowhere else";

/// Parses a whole list.
pub(super) fn parse(list: &str) -> Result<Vec<Operand<'_>>, HostListError> {
    let mut p = Parser { list, pos: 0 };
    let mut operands = Vec::new();
    let mut op = Op::Union;
    loop {
        p.skip_space();
        if p.at_operand_end() {
            let what = match (operands.is_empty(), p.peek()) {
                (true, None) => "empty host list",
                (true, Some(_)) => "a host or @group is missing before this operator",
                (false, _) => "a host or @group is missing after the operator",
            };
            return Err(p.error(ErrorKind::Missing(what), p.pos..p.pos + 1));
        }
        operands.push(p.operand(op)?);
        let space = p.pos;
        p.skip_space();
        match p.peek() {
            None => return Ok(operands),
            Some(b) => match Op::of(b) {
                Some(next) => {
                    op = next;
                    p.pos += 1;
                }
                None => return Err(p.unexpected(space, IN_NAME)),
            },
        }
    }
}

struct Parser<'a> {
    list: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.list.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// At the end of the list, at whitespace or at an operator.
    fn at_operand_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(b) => b.is_ascii_whitespace() || Op::of(b).is_some(),
        }
    }

    fn error(&self, kind: ErrorKind, span: Range<usize>) -> HostListError {
        let end = span.end.min(self.list.len());
        HostListError::new(kind, self.list, span.start..end)
    }

    /// The character at byte `at` is not allowed there.
    fn unexpected(&self, at: usize, expected: &'static str) -> HostListError {
        let found = self.list[at..].chars().next().unwrap_or(' ');
        self.error(
            ErrorKind::Unexpected { found, expected },
            at..at + found.len_utf8(),
        )
    }

    fn operand(&mut self, op: Op) -> Result<Operand<'a>, HostListError> {
        let start = self.pos;
        let what = if self.peek() == Some(b'@') {
            self.group()?
        } else {
            self.pattern()?
        };
        Ok(Operand {
            op,
            span: start..self.pos,
            what,
        })
    }

    fn group(&mut self) -> Result<What<'a>, HostListError> {
        self.pos += 1;
        let start = self.pos;
        while !self.at_operand_end() {
            let b = self.peek().unwrap_or(b' ');
            if !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(self.unexpected(self.pos, IN_GROUP));
            }
            self.pos += 1;
        }
        if start == self.pos {
            let kind = ErrorKind::Missing("a group name is missing after `@`");
            return Err(self.error(kind, start - 1..start));
        }
        Ok(What::Group(&self.list[start..self.pos]))
    }

    fn pattern(&mut self) -> Result<What<'a>, HostListError> {
        let mut texts = Vec::new();
        let mut brackets = Vec::new();
        let mut text_start = self.pos;
        if self.peek() == Some(b'[') {
            self.ipv6_literal()?;
        }
        // Only digits since the last `]`: a `[` now would put two ranges
        // in one number (`h[1-2]0[1-2]`), which no name can be cut back into.
        let mut in_number = false;
        while !self.at_operand_end() {
            let at = self.pos;
            match self.peek().unwrap_or(b' ') {
                b'[' if in_number => {
                    return Err(self.unexpected(
                        at,
                        "two ranges in one number (h[1-2][1-2], h[1-2]0[1-2]) could be cut \
                         back into names more than one way; put a letter between them",
                    ))
                }
                b'[' => {
                    texts.push(&self.list[text_start..at]);
                    brackets.push(self.bracket()?);
                    text_start = self.pos;
                    in_number = true;
                }
                b']' => return Err(self.error(ErrorKind::StrayClose, at..at + 1)),
                b'@' => return Err(self.unexpected(at, AT_SIGN)),
                b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':') => {
                    in_number &= b.is_ascii_digit();
                    self.pos += 1;
                }
                _ => return Err(self.unexpected(at, IN_NAME)),
            }
        }
        texts.push(&self.list[text_start..self.pos]);
        Ok(What::Pattern { texts, brackets })
    }

    /// `[IPV6]` at the start of a host is an address, kept as text; it may
    /// be followed by `:PORT` only. Anything else in brackets is a range
    /// list, left for [`Parser::pattern`].
    fn ipv6_literal(&mut self) -> Result<(), HostListError> {
        let open = self.pos;
        let rest = &self.list[open + 1..];
        let Some(len) = rest.find(']') else {
            // `[::1` is an address never closed; `[1-3` a range list, left
            // for the bracket's own message.
            let operand = rest.split(|c: char| c.is_ascii_whitespace() || ",!&^".contains(c));
            return match operand.into_iter().next().unwrap_or("").contains(':') {
                true => Err(self.error(ErrorKind::Unclosed, open..open + 1)),
                false => Ok(()),
            };
        };
        let inside = &rest[..len];
        if !inside.contains(':') {
            return Ok(());
        }
        if inside.parse::<Ipv6Addr>().is_err() {
            let bad = inside
                .find(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
                .map_or(open + 1, |i| open + 1 + i);
            return Err(self.unexpected(
                bad,
                "brackets at the start of a host hold an IPv6 address ([::1]:7878) or a range list",
            ));
        }
        self.pos = open + 1 + len + 1;
        if !self.at_operand_end() && self.peek() != Some(b':') {
            return Err(self.unexpected(
                self.pos,
                "an IPv6 address in brackets is followed by :PORT or nothing",
            ));
        }
        Ok(())
    }

    fn bracket(&mut self) -> Result<Bracket, HostListError> {
        let open = self.pos;
        self.pos += 1;
        if self.peek() == Some(b']') {
            let kind = ErrorKind::Missing("an empty range list `[]`");
            return Err(self.error(kind, open..open + 2));
        }
        let mut items = Vec::new();
        loop {
            items.push(self.item(open)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Bracket {
                        span: open..self.pos,
                        items,
                    });
                }
                None => return Err(self.error(ErrorKind::Unclosed, open..open + 1)),
                Some(_) => return Err(self.unexpected(self.pos, AFTER_ITEM)),
            }
        }
    }

    fn item(&mut self, open: usize) -> Result<Item, HostListError> {
        let start = self.pos;
        let (low, low_text) = self.number(open)?;
        let (high, high_text, step) = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                let (high, high_text) = self.number(open)?;
                let step = if self.peek() == Some(b'/') {
                    self.pos += 1;
                    self.number(open)?.0
                } else {
                    1
                };
                (high, high_text, step)
            }
            Some(b'/') => {
                let kind = ErrorKind::BadRange("a step (/N) comes after a range LOW-HIGH");
                return Err(self.error(kind, start..self.pos + 1));
            }
            _ => (low, low_text, 1),
        };
        let span = start..self.pos;
        let padded = |t: &str| t.len() > 1 && t.starts_with('0');
        if (padded(low_text) || padded(high_text)) && low_text.len() != high_text.len() {
            let kind =
                ErrorKind::BadRange("a padded range has both ends the same width (01-99, 001-100)");
            return Err(self.error(kind, span));
        }
        if high < low {
            let kind = ErrorKind::BadRange("the end of a range is before its start");
            return Err(self.error(kind, span));
        }
        if step == 0 {
            return Err(self.error(ErrorKind::BadRange("a step is 1 or more"), span));
        }
        let width = if padded(low_text) || padded(high_text) {
            low_text.len()
        } else {
            0
        };
        Ok(Item {
            low,
            high,
            step,
            width,
        })
    }

    /// Digits, as a number and as written.
    fn number(&mut self, open: usize) -> Result<(u64, &'a str), HostListError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(match self.peek() {
                None => self.error(ErrorKind::Unclosed, open..open + 1),
                Some(_) => self.unexpected(self.pos, IN_RANGE),
            });
        }
        let text = &self.list[start..self.pos];
        let n = text.parse().map_err(|_| {
            let kind = ErrorKind::BadRange(
                "the number is too large (the largest is 18446744073709551615)",
            );
            self.error(kind, start..self.pos)
        })?;
        Ok((n, text))
    }
}
