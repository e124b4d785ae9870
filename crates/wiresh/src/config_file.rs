//! TOML configuration files (`server.toml`, `client.toml`), read into
//! entries that remember their line, so that every mistake in them is
//! reported as `FILE line N: ...` with what to write instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::error::SetupError;
use crate::home::read_text;

/// A value as written in a config file.
pub type Value = toml::Value;

/// One `key = value` of a table, with the line it is on.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key, as written.
    pub key: String,
    /// The value.
    pub value: Value,
    /// 1-based line of the key.
    pub line: usize,
}

/// A config file, parsed: its top-level entries, in file order.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it is (`server config file`), for messages.
    pub what: &'static str,
    /// Its top-level `key = value` entries; a table is one entry whose
    /// value is a table.
    pub entries: Vec<Entry>,
    text: String,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path, what: &'static str) -> Result<ConfigFile, SetupError> {
        ConfigFile::parse(path, what, read_text(path, what)?)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: &Path, what: &'static str, text: String) -> Result<ConfigFile, SetupError> {
        let table: std::collections::BTreeMap<Spanned<String>, Spanned<Value>> =
            toml::from_str(&text).map_err(|e| SetupError::Invalid {
                what,
                path: path.to_path_buf(),
                reason: match e.span() {
                    Some(span) => format!(
                        "line {}: {}",
                        line_of(&text, span.start),
                        e.message().trim_end()
                    ),
                    None => e.message().trim_end().to_string(),
                },
            })?;
        let mut entries: Vec<Entry> = table
            .into_iter()
            .map(|(key, value)| Entry {
                line: line_of(&text, key.span().start),
                key: key.into_inner(),
                value: value.into_inner(),
            })
            .collect();
        entries.sort_by_key(|e| e.line);
        Ok(ConfigFile {
            path: path.to_path_buf(),
            what,
            entries,
            text,
        })
    }

    /// The error for a mistake at `line`.
    pub fn error(&self, line: usize, reason: impl std::fmt::Display) -> SetupError {
        SetupError::Invalid {
            what: self.what,
            path: self.path.clone(),
            reason: format!("line {line}: {reason}"),
        }
    }

    /// The first line at or after `from` for which `pred` holds.
    pub fn line_where(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, l)| pred(l.trim()))
            .map(|(i, _)| i + 1)
    }

    /// The line a key of a nested table is on (`[hosts."web"]` then
    /// `port = 1`): the first line at or after `from` that starts with it.
    pub fn line_in_table(&self, from: usize, key: &str) -> usize {
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, l)| {
                let l = l.trim_start();
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map_or(from, |(i, _)| i + 1)
    }
}

/// The 1-based line of a byte offset in `text`.
/// A duration as people write one, on the command line or in a config
/// file alike: seconds as a number (`90`, `0.5`), or with units (`500ms`,
/// `5m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); use e.g. 30s, 500ms, 5m or 1h"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The entry key closest to `key` among `known`, for "did you mean".
pub fn suggest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normal = |s: &str| s.replace('_', "-").to_ascii_lowercase();
    let key = normal(key);
    known
        .into_iter()
        .map(|k| (distance(&key, &normal(k)), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, for short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_lines() {
        let text =
            "# top\nlisten = \"0.0.0.0:1\"\n\nmax-connections = 3\n[hosts.\"a\"]\nport = 1\n";
        let f = ConfigFile::parse(Path::new("x.toml"), "test file", text.into()).unwrap();
        let lines: Vec<(&str, usize)> =
            f.entries.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(lines, [("listen", 2), ("max-connections", 4), ("hosts", 5)]);
        assert_eq!(f.line_in_table(5, "port"), 6);
        let err = ConfigFile::parse(Path::new("x.toml"), "test file", "a = 1\nb = \n".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn suggestions() {
        let known = ["max-connections", "listen", "idle-timeout"];
        assert_eq!(suggest("max_connections", known), Some("max-connections"));
        assert_eq!(suggest("lisen", known), Some("listen"));
        assert_eq!(suggest("colour", known), None);
    }
}
