//! Host lists in the style of pdsh and ClusterShell: `web[01-20]`,
//! `web[1-3,7]`, `10.0.0.[1-9]`, `host[1-4]:7878`, several joined by
//! commas, expanded into names ([`expand`]) and folded back into the
//! shortest such list ([`fold`]).
//!
//! A `[...]` holds numbers and ranges (`1-3`, `7`); a range whose start is
//! written with a leading zero (`01-20`) pads every number to that width.
//! Brackets holding anything else (`[::1]:7878`) are kept as they are, so
//! IPv6 targets pass through.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Most names one list may expand to: a typo such as `h[1-10000000]`
/// gets an error instead of eating the memory.
pub const MAX_HOSTS: usize = 100_000;

/// Why a host list could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostListError {
    /// An empty name (`a,,b`, a trailing comma, nothing at all).
    #[error("empty host name in {0:?}")]
    Empty(String),
    /// A `[` without its `]`.
    #[error("unclosed `[` in {0:?}: write ranges as web[01-20] or web[1-3,7]")]
    Unclosed(String),
    /// A range that is not `LOW-HIGH` with LOW <= HIGH.
    #[error("bad range {range:?} in {input:?}: {why}")]
    BadRange {
        /// The bracket's content.
        range: String,
        /// The whole list.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The list names more hosts than [`MAX_HOSTS`].
    #[error("{0:?} expands to more than {MAX_HOSTS} hosts; narrow the ranges")]
    TooMany(String),
}

/// One number, or a run of numbers, inside brackets, padded to `width`
/// (0: not padded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    low: u64,
    high: u64,
    width: usize,
}

impl Run {
    fn len(&self) -> usize {
        usize::try_from(self.high - self.low).map_or(usize::MAX, |n| n.saturating_add(1))
    }

    fn render(&self, out: &mut String) {
        out.push_str(&pad(self.low, self.width));
        if self.high != self.low {
            out.push('-');
            out.push_str(&pad(self.high, self.width));
        }
    }
}

fn pad(n: u64, width: usize) -> String {
    format!("{n:0width$}")
}

/// A piece of one host pattern: text, or a bracket of runs.
#[derive(Debug)]
enum Segment<'a> {
    Text(&'a str),
    Runs(Vec<Run>),
}

/// Expands a comma-separated host list into names, in the order written,
/// without duplicates.
pub fn expand(list: &str) -> Result<Vec<String>, HostListError> {
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pattern in split_top_level(list) {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(HostListError::Empty(list.to_string()));
        }
        let segments = parse_pattern(pattern, list)?;
        let count = segments.iter().try_fold(1usize, |acc, s| match s {
            Segment::Text(_) => Some(acc),
            Segment::Runs(runs) => acc.checked_mul(runs.iter().map(Run::len).sum()),
        });
        match count {
            Some(n) if n.saturating_add(names.len()) <= MAX_HOSTS => {}
            _ => return Err(HostListError::TooMany(list.to_string())),
        }
        let mut partial = vec![String::new()];
        for segment in &segments {
            partial = match segment {
                Segment::Text(text) => partial
                    .into_iter()
                    .map(|mut p| {
                        p.push_str(text);
                        p
                    })
                    .collect(),
                Segment::Runs(runs) => partial
                    .iter()
                    .flat_map(|p| {
                        runs.iter().flat_map(move |r| {
                            (r.low..=r.high).map(move |n| format!("{p}{}", pad(n, r.width)))
                        })
                    })
                    .collect(),
            };
        }
        for name in partial {
            if seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// Splits at commas outside brackets.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&list[start..]);
    pieces
}

fn parse_pattern<'a>(pattern: &'a str, list: &str) -> Result<Vec<Segment<'a>>, HostListError> {
    let mut segments = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or_else(|| HostListError::Unclosed(list.to_string()))?;
        let inside = &rest[open + 1..close];
        if is_range_spec(inside) {
            segments.push(Segment::Text(&rest[..open]));
            segments.push(Segment::Runs(parse_runs(inside, list)?));
        } else {
            // Not a range: an IPv6 address in brackets, kept as written.
            segments.push(Segment::Text(&rest[..=close]));
        }
        rest = &rest[close + 1..];
    }
    segments.push(Segment::Text(rest));
    Ok(segments)
}

/// Whether a bracket's content is made of numbers, `-` and `,` only.
fn is_range_spec(inside: &str) -> bool {
    !inside.is_empty()
        && inside.bytes().any(|b| b.is_ascii_digit())
        && inside
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
}

fn parse_runs(inside: &str, list: &str) -> Result<Vec<Run>, HostListError> {
    let bad = |why| HostListError::BadRange {
        range: inside.to_string(),
        input: list.to_string(),
        why,
    };
    let number = |text: &str| -> Result<u64, HostListError> {
        if text.is_empty() {
            return Err(bad("expected a number on each side of `-`, e.g. 1-20"));
        }
        text.parse().map_err(|_| bad("the number is too large"))
    };
    inside
        .split(',')
        .map(|item| {
            let (low_text, high_text) = item.split_once('-').unwrap_or((item, item));
            let (low, high) = (number(low_text)?, number(high_text)?);
            if high < low {
                return Err(bad("the end of a range is before its start"));
            }
            Ok(Run {
                low,
                high,
                width: padding(low_text),
            })
        })
        .collect()
}

/// The width a number is padded to: its length when written with a
/// leading zero, else none.
fn padding(text: &str) -> usize {
    if text.len() > 1 && text.starts_with('0') {
        text.len()
    } else {
        0
    }
}

/// A name cut at its numbers: `web01.dc2` is `web`, 01, `.dc`, 2. Numbers
/// inside literal brackets (IPv6) are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cut<'a> {
    texts: Vec<&'a str>,
    numbers: Vec<&'a str>,
}

impl<'a> Cut<'a> {
    fn of(name: &'a str) -> Cut<'a> {
        let bytes = name.as_bytes();
        let (mut texts, mut numbers) = (Vec::new(), Vec::new());
        let (mut i, mut text_start, mut depth) = (0, 0, 0usize);
        while i < bytes.len() {
            match bytes[i] {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b if b.is_ascii_digit() && depth == 0 => {
                    let end = bytes[i..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(bytes.len(), |n| i + n);
                    // Numbers too long for u64 stay text.
                    if name[i..end].parse::<u64>().is_ok() {
                        texts.push(&name[text_start..i]);
                        numbers.push(&name[i..end]);
                        text_start = end;
                    }
                    i = end;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        texts.push(&name[text_start..]);
        Cut { texts, numbers }
    }
}

/// Compares names as people read them: `web9` before `web10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ca, cb) = (Cut::of(a), Cut::of(b));
    let mut i = 0;
    loop {
        match ca.texts.get(i).cmp(&cb.texts.get(i)) {
            Ordering::Equal => {}
            other => return other,
        }
        match (ca.numbers.get(i), cb.numbers.get(i)) {
            (Some(x), Some(y)) => {
                let key = |t: &str| (t.parse::<u64>().unwrap_or(u64::MAX), t.len());
                match key(x).cmp(&key(y)).then_with(|| x.cmp(y)) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
            (x, y) => return x.cmp(&y).then_with(|| a.cmp(b)),
        }
        i += 1;
    }
}

/// Folds names into the shortest host list that [`expand`]s back to them:
/// `web01,web02,web03,web07` becomes `web[01-03,07]`. Duplicates count
/// once; the pieces come in natural order.
pub fn fold<S: AsRef<str>>(names: &[S]) -> String {
    let mut unique: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    unique.sort_unstable();
    unique.dedup();
    // Names of one shape (same text between the numbers) fold together.
    let mut shapes: BTreeMap<Vec<&str>, Vec<Cut>> = BTreeMap::new();
    for name in unique {
        let cut = Cut::of(name);
        shapes.entry(cut.texts.clone()).or_default().push(cut);
    }
    let mut pieces: Vec<(String, String)> = Vec::new();
    for cuts in shapes.values() {
        pieces.extend(fold_shape(cuts));
    }
    pieces.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    pieces
        .into_iter()
        .map(|(_, piece)| piece)
        .collect::<Vec<_>>()
        .join(",")
}

/// Folds names of one shape along the number that leaves the fewest
/// pieces (the last one on a tie). Returns (first name, piece) pairs.
fn fold_shape(cuts: &[Cut]) -> Vec<(String, String)> {
    let fields = cuts[0].numbers.len();
    if fields == 0 {
        return cuts
            .iter()
            .map(|c| (c.texts.concat(), c.texts.concat()))
            .collect();
    }
    // `min_by_key` keeps the first of equals: with `rev`, the last field.
    let (field, groups) = (0..fields)
        .rev()
        .map(|field| (field, group_by_others(cuts, field)))
        .min_by_key(|(_, groups)| groups.len())
        .expect("at least one field");
    groups
        .into_values()
        .map(|members| {
            let cut = &cuts[members[0]];
            let numbers: Vec<&str> = members.iter().map(|&m| cuts[m].numbers[field]).collect();
            let mut first = String::new();
            let mut piece = String::new();
            for (i, text) in cut.texts.iter().enumerate() {
                piece.push_str(text);
                first.push_str(text);
                if i < fields {
                    if i == field {
                        let runs = runs_of(&numbers);
                        first.push_str(&pad(runs[0].low, runs[0].width));
                        if let [only] = runs.as_slice() {
                            if only.low == only.high {
                                only.render(&mut piece);
                                continue;
                            }
                        }
                        piece.push('[');
                        for (k, run) in runs.iter().enumerate() {
                            if k > 0 {
                                piece.push(',');
                            }
                            run.render(&mut piece);
                        }
                        piece.push(']');
                    } else {
                        piece.push_str(cut.numbers[i]);
                        first.push_str(cut.numbers[i]);
                    }
                }
            }
            (first, piece)
        })
        .collect()
}

/// The names' indices grouped by every number but `field`.
fn group_by_others<'a>(cuts: &'a [Cut], field: usize) -> BTreeMap<Vec<&'a str>, Vec<usize>> {
    let mut groups: BTreeMap<Vec<&str>, Vec<usize>> = BTreeMap::new();
    for (i, cut) in cuts.iter().enumerate() {
        let mut key = cut.numbers.clone();
        key.remove(field);
        groups.entry(key).or_default().push(i);
    }
    groups
}

/// The fewest runs that write exactly these numbers (as texts, each
/// written once), in order of their first number.
fn runs_of(numbers: &[&str]) -> Vec<Run> {
    // Each number joins the widest padding it can be written in: `10`
    // goes with `08` and `09` when they are there.
    let padded_widths: std::collections::BTreeSet<usize> = numbers
        .iter()
        .map(|t| padding(t))
        .filter(|&w| w > 0)
        .collect();
    let mut by_width: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for text in numbers {
        let n: u64 = text.parse().expect("cut numbers fit in u64");
        let width = match padding(text) {
            0 if padded_widths.contains(&text.len()) => text.len(),
            w => w,
        };
        by_width.entry(width).or_default().push(n);
    }
    let mut runs = Vec::new();
    for (width, mut values) in by_width {
        values.sort_unstable();
        values.dedup();
        for n in values {
            match runs.last_mut() {
                Some(Run { high, width: w, .. })
                    if *w == width && high.checked_add(1) == Some(n) =>
                {
                    *high = n
                }
                _ => runs.push(Run {
                    low: n,
                    high: n,
                    width,
                }),
            }
        }
    }
    runs.sort_by_key(|r| (r.low, r.width));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(list: &str) -> Vec<String> {
        expand(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    #[test]
    fn expands_the_usual_forms() {
        assert_eq!(ex("web[01-03]"), ["web01", "web02", "web03"]);
        assert_eq!(ex("web[1-3,7]"), ["web1", "web2", "web3", "web7"]);
        assert_eq!(ex("10.0.0.[1-3]"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(ex("host[1-2]:7878"), ["host1:7878", "host2:7878"]);
        assert_eq!(ex("a,b , c:7900"), ["a", "b", "c:7900"]);
        assert_eq!(ex("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(ex("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(ex("n[9-10]"), ["n9", "n10"]);
        assert_eq!(ex("n[01-02,5]"), ["n01", "n02", "n5"]);
        assert_eq!(ex("[::1]:[7001-7002]"), ["[::1]:7001", "[::1]:7002"]);
        assert_eq!(ex("a,a,a[1],a1"), ["a", "a1"], "duplicates count once");
    }

    #[test]
    fn refuses_bad_lists_with_a_reason() {
        assert!(matches!(expand("a,,b"), Err(HostListError::Empty(_))));
        assert!(matches!(expand(""), Err(HostListError::Empty(_))));
        assert!(matches!(expand("web[1-3"), Err(HostListError::Unclosed(_))));
        let err = expand("web[5-3]").unwrap_err().to_string();
        assert!(err.contains("before its start"), "{err}");
        assert!(matches!(
            expand("w[-3]"),
            Err(HostListError::BadRange { .. })
        ));
        assert!(matches!(
            expand("w[1-99999999999999999999]"),
            Err(HostListError::BadRange { .. })
        ));
        assert!(matches!(
            expand("w[1-1000]x[1-1000]"),
            Err(HostListError::TooMany(_))
        ));
    }

    #[test]
    fn folds_like_clush() {
        assert_eq!(fold(&["web01", "web02", "web03", "web07"]), "web[01-03,07]");
        assert_eq!(fold(&["web10", "web9", "web11"]), "web[9-11]");
        assert_eq!(fold(&["n08", "n09", "n10"]), "n[08-10]");
        assert_eq!(fold(&["a", "b", "a"]), "a,b");
        assert_eq!(fold(&["web1"]), "web1");
        assert_eq!(
            fold(&["host1:7878", "host2:7878", "host3:7878"]),
            "host[1-3]:7878"
        );
        assert_eq!(
            fold(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7004"]),
            "127.0.0.1:[7001-7002,7004]"
        );
        assert_eq!(fold(&["[::1]:7001", "[::1]:7002"]), "[::1]:[7001-7002]");
        assert_eq!(fold(&["db2", "web1", "db1", "web2"]), "db[1-2],web[1-2]");
        assert_eq!(fold::<&str>(&[]), "");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["web10", "web9", "db1", "web09"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["db1", "web9", "web09", "web10"]);
    }

    /// Host names as they come out of an expansion: letters, digits, dots,
    /// dashes and a port.
    fn name() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-c]{0,2}[0-9]{0,3}(\\.[a-b0-9]{1,2})?(:[0-9]{1,3})?")
            .unwrap()
            .prop_filter("names are not empty", |n| !n.is_empty())
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    /// Maximal runs of consecutive integers in a set.
    fn count_runs(numbers: &std::collections::BTreeSet<u64>) -> usize {
        numbers
            .iter()
            .filter(|&&n| n == 0 || !numbers.contains(&(n - 1)))
            .count()
    }

    proptest! {
        #[test]
        fn expand_undoes_fold(names in proptest::collection::vec(name(), 0..40)) {
            let folded = fold(&names);
            let back = if names.is_empty() { vec![] } else { expand(&folded).unwrap() };
            prop_assert_eq!(sorted(back.clone()), sorted(names), "folded: {}", folded);
            prop_assert_eq!(back.len(), sorted(back).len(), "no duplicates");
        }

        #[test]
        fn fold_is_minimal_for_one_number(
            numbers in proptest::collection::btree_set(0u64..60, 1..30),
            width in 0usize..3,
            prefix in "[a-z]{1,3}",
            port in proptest::option::of(1u16..100),
        ) {
            let suffix = port.map(|p| format!(":{p}")).unwrap_or_default();
            let names: Vec<String> = numbers
                .iter()
                .map(|&n| format!("{prefix}{}{suffix}", pad(n, width)))
                .collect();
            let folded = fold(&names);
            // One piece, with one bracket item per maximal run of consecutive numbers.
            prop_assert!(!folded.contains("],"), "one piece: {}", folded);
            let items = match (folded.find('['), folded.find(']')) {
                (Some(a), Some(b)) => folded[a + 1..b].split(',').count(),
                _ => 1,
            };
            prop_assert_eq!(items, count_runs(&numbers), "folded: {}", folded);
            prop_assert_eq!(sorted(expand(&folded).unwrap()), sorted(names));
        }

        #[test]
        fn expand_never_panics(list in "[a-z0-9\\[\\],:.\\- ]{0,30}") {
            let _ = expand(&list);
        }
    }
}
