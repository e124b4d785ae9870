//! Names back into a host list, as `nodeset -f` writes it: names cut at
//! their runs of digits, names of one shape folded along every numeric
//! field, the pieces in `nodeset`'s order.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::fmt;

use super::numbers::digits;

/// A run of digits as written: its value and its length, so `7` and `07`
/// differ. Ordered as `nodeset` orders them: shorter first, then by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Num {
    len: usize,
    value: u64,
}

impl Num {
    /// `None` for runs too long for a u64 (they stay text).
    fn parse(text: &str) -> Option<Num> {
        Some(Num {
            len: text.len(),
            value: text.parse().ok()?,
        })
    }

    fn padded(self) -> bool {
        self.len > digits(self.value)
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0len$}", self.value, len = self.len)
    }
}

/// A name cut at its numbers: `web01.dc2` is `web`, 01, `.dc`, 2, ``.
/// Numbers inside brackets (an IPv6 address) stay text.
#[derive(Debug)]
struct Cut<'a> {
    texts: Vec<&'a str>,
    numbers: Vec<Num>,
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
                    if let Some(num) = Num::parse(&name[i..end]) {
                        texts.push(&name[text_start..i]);
                        numbers.push(num);
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

    /// What `nodeset` sorts names of one shape by: the texts with `%s`
    /// for each number (and `%%` for `%`).
    fn shape(&self) -> String {
        let escaped: Vec<String> = self.texts.iter().map(|t| t.replace('%', "%%")).collect();
        escaped.join("%s")
    }
}

/// Compares names as people read them: `web9` before `web10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ca, cb) = (Cut::of(a), Cut::of(b));
    for i in 0.. {
        match ca.texts.get(i).cmp(&cb.texts.get(i)) {
            Ordering::Equal => {}
            other => return other,
        }
        match (ca.numbers.get(i), cb.numbers.get(i)) {
            (Some(x), Some(y)) => match (x.value, x.len).cmp(&(y.value, y.len)) {
                Ordering::Equal => {}
                other => return other,
            },
            (x, y) => return x.cmp(&y).then_with(|| a.cmp(b)),
        }
    }
    unreachable!("the loop returns once either name runs out")
}

/// Folds names into a host list that [`expand`](fn@super::expand)s back to
/// exactly them, as `nodeset -f` does: `web01,web02,web03,web07` is
/// `web[01-03,07]`, `r1n1,r1n2,r2n1,r2n2` is `r[1-2]n[1-2]`. Duplicates
/// count once.
pub fn fold<S: AsRef<str>>(names: &[S]) -> String {
    // Shape → (its texts, the numbers of each name of that shape).
    let mut shapes: BTreeMap<String, (Vec<&str>, Vec<Vec<Num>>)> = BTreeMap::new();
    for name in names {
        let cut = Cut::of(name.as_ref());
        let entry = shapes
            .entry(cut.shape())
            .or_insert_with(|| (cut.texts, Vec::new()));
        entry.1.push(cut.numbers);
    }
    let mut pieces = Vec::new();
    for (texts, points) in shapes.into_values() {
        for vector in boxes(points) {
            pieces.push(render(&texts, &vector));
        }
    }
    pieces.join(",")
}

/// A product of sets of numbers, one set per field (each sorted, unique).
type Vector = Vec<Vec<Num>>;

/// Points of one shape as few products as this finds: points that differ
/// in one field only merge, field after field, until nothing merges; that
/// is tried starting with each field (the last first) and the fewest
/// pieces win. Not always the fewest there are (that is a hard problem),
/// but one piece for any full product, as `nodeset` finds.
fn boxes(mut points: Vec<Vec<Num>>) -> Vec<Vector> {
    points.sort_unstable();
    points.dedup();
    let Some(first) = points.first().cloned() else {
        return Vec::new();
    };
    // Fields with one number in every name take no part: `10.0.0.[1-9]:7878`
    // folds as one field, not five.
    let varying: Vec<usize> = (0..first.len())
        .filter(|&f| points.iter().any(|p| p[f] != first[f]))
        .collect();
    let singles: Vec<Vector> = points
        .iter()
        .map(|p| varying.iter().map(|&f| vec![p[f]]).collect())
        .collect();
    let merged = match varying.len() {
        0 => singles,
        n => (0..n)
            .rev()
            .take(MAX_ORDERS)
            .map(|start| merge_all(singles.clone(), start))
            .min_by_key(Vec::len)
            .unwrap_or_default(),
    };
    let mut best: Vec<Vector> = merged
        .into_iter()
        .map(|sets| {
            let mut vector: Vector = first.iter().map(|&n| vec![n]).collect();
            for (&field, set) in varying.iter().zip(sets) {
                vector[field] = set;
            }
            vector
        })
        .collect();
    best.sort_by_cached_key(nodeset_order);
    best
}

/// How many fields [`boxes`] tries to merge first: names rarely have more
/// numbers that vary than an IPv4 address with a port; past that, trying
/// every order would make folding slow.
const MAX_ORDERS: usize = 5;

/// Merges along `first`, then the fields before it (cyclically), round
/// after round until nothing merges.
fn merge_all(mut vectors: Vec<Vector>, first: usize) -> Vec<Vector> {
    let fields = vectors.first().map_or(0, Vec::len);
    let mut changed = true;
    while changed {
        changed = false;
        for k in 0..fields {
            let field = (first + fields - k) % fields;
            let before = vectors.len();
            vectors = merge_along(vectors, field);
            changed |= vectors.len() < before;
        }
    }
    vectors
}

/// Merges the vectors equal in every field but `field` (their sets in
/// `field` are disjoint, as the vectors are).
fn merge_along(vectors: Vec<Vector>, field: usize) -> Vec<Vector> {
    let mut by_rest: BTreeMap<Vector, Vec<Num>> = BTreeMap::new();
    for mut vector in vectors {
        let own = vector.remove(field);
        by_rest.entry(vector).or_default().extend(own);
    }
    by_rest
        .into_iter()
        .map(|(mut rest, mut set)| {
            set.sort_unstable();
            rest.insert(field, set);
            rest
        })
        .collect()
}

/// Where a piece goes among those of its shape: see [`nodeset_order`].
type Rank = (Reverse<usize>, Vec<(Reverse<usize>, String, String)>);

/// `nodeset`'s order of the pieces of one shape: the largest first, then
/// field by field the larger set, then its first and last numbers (as
/// text).
fn nodeset_order(v: &Vector) -> Rank {
    let size = v.iter().map(Vec::len).product();
    let fields = v
        .iter()
        .map(|set| {
            let text = |n: Option<&Num>| n.map(Num::to_string).unwrap_or_default();
            (Reverse(set.len()), text(set.first()), text(set.last()))
        })
        .collect();
    (Reverse(size), fields)
}

fn render(texts: &[&str], vector: &Vector) -> String {
    let mut out = String::new();
    for (i, text) in texts.iter().enumerate() {
        out.push_str(text);
        match vector.get(i).map(Vec::as_slice) {
            Some([one]) => out.push_str(&one.to_string()),
            Some(set) if !set.is_empty() => {
                out.push('[');
                out.push_str(&ranges(set));
                out.push(']');
            }
            _ => {}
        }
    }
    out
}

/// A sorted set of numbers as `nodeset` writes it (ClusterShell's
/// `RangeSet._slices_padding`, without autostep): runs of consecutive
/// numbers of one padding. Ported step by step, quirks included: a run
/// that starts after a padded single keeps that padding, so `06,95-112`
/// is written `06,95-99,100-112`.
fn ranges(set: &[Num]) -> String {
    let mut out = Vec::new();
    let mut emit = |start: u64, end: u64, pad: usize| {
        out.push(if start == end {
            format!("{start:0pad$}")
        } else {
            format!("{start:0pad$}-{end:0pad$}")
        })
    };
    let Some((first, rest)) = set.split_first() else {
        return String::new();
    };
    // The run being built: where it started, its padding, its step so
    // far (None: one number), its last number.
    let (mut start, mut padded, mut pad) = (first.value, first.padded(), first.len);
    let (mut step, mut last): (Option<u64>, u64) = (None, first.value);
    for n in rest {
        let pad_mismatch = if padded { n.len != pad } else { n.padded() };
        let step_mismatch =
            !pad_mismatch && step.is_some_and(|s| Some(s) != n.value.checked_sub(last));
        if !(pad_mismatch || step_mismatch) {
            step = n.value.checked_sub(last);
            last = n.value;
            continue;
        }
        let run_pad = if padded { pad } else { 0 };
        match step {
            None | Some(1) => {
                emit(start, last, run_pad);
                (start, padded, pad) = (n.value, n.padded(), n.len);
            }
            Some(s) => {
                // Not a run of consecutive numbers: each one on its own,
                // the last one starting the next run unless padding differs.
                let stop = if pad_mismatch { last } else { last - s };
                let mut j = start;
                while j <= stop {
                    emit(j, j, run_pad);
                    j = match j.checked_add(s) {
                        Some(next) => next,
                        None => break,
                    };
                }
                if pad_mismatch {
                    (start, padded, pad) = (n.value, n.padded(), n.len);
                } else {
                    start = last;
                }
            }
        }
        step = if step_mismatch {
            n.value.checked_sub(last)
        } else {
            None
        };
        last = n.value;
    }
    let run_pad = if padded { pad } else { 0 };
    match step {
        None | Some(1) => emit(start, last, run_pad),
        Some(s) => {
            let mut j = start;
            while j <= last {
                emit(j, j, run_pad);
                j = match j.checked_add(s) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
    }
    out.join(",")
}
