//! Why a host list was refused, pointing at the place in it.

use std::fmt;
use std::ops::Range;

use super::limits::MAX_NAME_LEN;

/// What is wrong with a host list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing where a host or `@group` belongs (`a,,b`, `a,`, ``).
    Missing(&'static str),
    /// A character that has no place where it is (`web[1-3, 7]`, `h[a-c]`).
    Unexpected {
        /// The character.
        found: char,
        /// What may be written there instead.
        expected: &'static str,
    },
    /// A `[` without its `]`.
    Unclosed,
    /// A `]` without its `[`.
    StrayClose,
    /// A range that is not `LOW-HIGH[/STEP]` with LOW <= HIGH.
    BadRange(&'static str),
    /// More hosts than `MAX_HOSTS`, or more work than a list may ask for.
    TooMany(String),
    /// A name longer than `MAX_NAME_LEN`.
    TooLong(usize),
    /// An `@group` the resolver does not know, or no resolver at all.
    Group(String),
    /// Nothing left: the operators took every host away (`a!a`), or the
    /// groups are empty.
    NoHosts,
}

/// A host list that could not be expanded: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostListError {
    kind: ErrorKind,
    list: String,
    /// Byte range of the offending part of `list`.
    span: Range<usize>,
}

impl std::error::Error for HostListError {}

impl HostListError {
    pub(super) fn new(kind: ErrorKind, list: &str, span: Range<usize>) -> HostListError {
        HostListError {
            kind,
            list: list.to_string(),
            span,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Where, as a 1-based column (in characters) of the whole list.
    pub fn column(&self) -> usize {
        self.list
            .get(..self.span.start)
            .map_or(0, |before| before.chars().count())
            + 1
    }
}

/// The longest excerpt of the list shown under a message.
const EXCERPT: usize = 72;

/// The longest part of the list quoted in a message.
const SNIPPET: usize = 40;

impl fmt::Display for HostListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.column();
        // The offending part, cut short: a 10,000-digit number is not
        // worth repeating whole (the excerpt below shows where it is).
        let snippet = || {
            let part = self.list.get(self.span.clone()).unwrap_or("");
            match part.char_indices().nth(SNIPPET) {
                Some((cut, _)) => format!("{}...", &part[..cut]),
                None => part.to_string(),
            }
        };
        match &self.kind {
            ErrorKind::Missing(what) => write!(f, "{what} at column {column}")?,
            ErrorKind::Unexpected { found, expected } => {
                write!(f, "unexpected {found:?} at column {column}: {expected}")?
            }
            ErrorKind::Unclosed => write!(
                f,
                "the `[` at column {column} is never closed: write ranges as web[01-20] or web[1-3,7]"
            )?,
            ErrorKind::StrayClose => write!(f, "the `]` at column {column} closes no `[`")?,
            ErrorKind::BadRange(why) => write!(f, "bad range {:?} at column {column}: {why}", snippet())?,
            ErrorKind::TooMany(what) => write!(f, "{what}")?,
            ErrorKind::TooLong(len) => write!(
                f,
                "{:?} makes names of up to {len} characters; a host name (with its :PORT) has at most {}",
                snippet(),
                MAX_NAME_LEN
            )?,
            ErrorKind::Group(why) => write!(f, "{why}")?,
            ErrorKind::NoHosts => write!(f, "the list names no host: its parts take every host away")?,
        }
        self.caret(f)
    }
}

impl HostListError {
    /// The list (or the part of it around the span) with `^` under the
    /// span, on lines of their own. Characters that would shift the caret
    /// (control characters, anything not ASCII) show as `?`: the message
    /// names the character itself.
    fn caret(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: Vec<char> = self.list.chars().collect();
        let start = self.column() - 1;
        let len = self
            .list
            .get(self.span.clone())
            .map_or(1, |s| s.chars().count().max(1));
        let from = start.saturating_sub(EXCERPT / 2);
        let to = chars.len().min(from + EXCERPT);
        let shown: String = chars[from..to]
            .iter()
            .map(|&c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let lead = if from > 0 { "..." } else { "" };
        let tail = if to < chars.len() { "..." } else { "" };
        let pad = lead.len() + start - from;
        let marks = len.min(to.saturating_sub(start)).max(1);
        write!(
            f,
            "\n    {lead}{shown}{tail}\n    {:pad$}{}",
            "",
            "^".repeat(marks)
        )
    }
}
