//! The numbers of one `[...]`: each written once, in the order written,
//! counted exactly without listing ranges one by one.
//!
//! A number is the text it renders to: `7` and `07` are two numbers,
//! `10` written in `[08-10]` and `10` in `[9-10]` are one. So each item
//! splits into a padded part (numbers shorter than the width, which get
//! leading zeros) and a natural part (as long as the width or longer,
//! written as without padding), and parts of the same padding are merged
//! as intervals.

use std::collections::{BTreeMap, HashMap};

use super::limits::MAX_HOSTS;
use super::parse::Item;

/// `low`, `low + step`, ... up to `high` (which is in the run), padded to
/// `width` (0: not padded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub low: u64,
    pub high: u64,
    pub step: u64,
    pub width: usize,
}

impl Run {
    /// How many numbers; `u64::MAX` stands for 2^64.
    fn count(&self) -> u64 {
        ((self.high - self.low) / self.step).saturating_add(1)
    }

    /// The number after `n` in this run.
    pub fn next(&self, n: u64) -> Option<u64> {
        (self.high - n >= self.step).then(|| n + self.step)
    }

    fn values(self) -> impl Iterator<Item = u64> {
        std::iter::successors(Some(self.low), move |&n| self.next(n))
    }
}

/// A bracket's numbers, ready to expand.
#[derive(Debug)]
pub(super) struct Numbers {
    /// Disjoint, in the order first written; each ascending.
    pub runs: Vec<Run>,
    /// How many numbers (all distinct).
    pub count: u64,
    /// The longest one, in characters.
    pub longest: usize,
}

/// Why a bracket was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Overflow {
    /// It holds more than [`MAX_HOSTS`] numbers.
    Numbers,
    /// Listing its stepped ranges would use up the work allowed.
    Work,
}

/// The numbers of `items`, each kept at its first appearance. Stepped
/// ranges are checked number by number, paid for from `work_left`.
pub(super) fn numbers(items: &[Item], work_left: &mut u64) -> Result<Numbers, Overflow> {
    let mut covered: HashMap<usize, Coverage> = HashMap::new();
    let mut runs = Vec::new();
    let mut count = 0u64;
    for item in items {
        for part in parts(*item) {
            if part.count() > MAX_HOSTS as u64 {
                return Err(Overflow::Numbers);
            }
            let seen = covered.entry(part.width).or_default();
            let before = runs.len();
            if part.step == 1 {
                runs.extend(
                    seen.uncovered(part.low, part.high)
                        .into_iter()
                        .map(|(low, high)| Run { low, high, ..part }),
                );
                seen.insert(part.low, part.high);
            } else {
                *work_left = work_left.checked_sub(part.count()).ok_or(Overflow::Work)?;
                new_numbers(part, seen, &mut runs);
            }
            count += runs[before..].iter().map(Run::count).sum::<u64>();
            if count > MAX_HOSTS as u64 {
                return Err(Overflow::Numbers);
            }
        }
    }
    let longest = runs
        .iter()
        .map(|r| r.width.max(digits(r.high)))
        .max()
        .unwrap_or(0);
    Ok(Numbers {
        runs,
        count,
        longest,
    })
}

/// The numbers of a stepped run not seen yet, as runs of the same step,
/// marked as seen.
fn new_numbers(part: Run, seen: &mut Coverage, runs: &mut Vec<Run>) {
    let fresh: Vec<u64> = part.values().filter(|&n| !seen.contains(n)).collect();
    for &n in &fresh {
        match runs.last_mut() {
            Some(last)
                if (last.step, last.width) == (part.step, part.width)
                    && last.high.checked_add(part.step) == Some(n) =>
            {
                last.high = n
            }
            _ => runs.push(Run {
                low: n,
                high: n,
                ..part
            }),
        }
        seen.insert(n, n);
    }
}

/// An item as at most two runs: its padded numbers (those shorter than
/// the width) and its natural ones (width 0). The last number of each is
/// one the step reaches.
fn parts(item: Item) -> Vec<Run> {
    let Item {
        low,
        high,
        step,
        width,
    } = item;
    let last_to = |low: u64, upto: u64| low + (upto - low) / step * step;
    let run = |low: u64, upto: u64, width: usize| Run {
        low,
        high: last_to(low, upto),
        step,
        width,
    };
    // The first number as long as the width: 10^(width-1).
    let natural_from = match width {
        0 | 1 => return vec![run(low, high, 0)],
        w => match u32::try_from(w - 1).ok().and_then(|e| 10u64.checked_pow(e)) {
            Some(n) => n,
            None => return vec![run(low, high, width)],
        },
    };
    let mut parts = Vec::new();
    if low < natural_from {
        parts.push(run(low, high.min(natural_from - 1), width));
    }
    // The first number the step reaches at or past `natural_from`.
    let first = if low >= natural_from {
        Some(low)
    } else {
        (natural_from - low)
            .div_ceil(step)
            .checked_mul(step)
            .and_then(|d| low.checked_add(d))
    };
    if let Some(first) = first.filter(|&f| f <= high) {
        parts.push(run(first, high, 0));
    }
    parts
}

/// How many digits `n` has.
pub(super) fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Numbers seen so far, as disjoint, non-adjacent intervals (low → high).
#[derive(Debug, Default)]
struct Coverage(BTreeMap<u64, u64>);

impl Coverage {
    fn contains(&self, n: u64) -> bool {
        self.0
            .range(..=n)
            .next_back()
            .is_some_and(|(_, &high)| high >= n)
    }

    /// The parts of `low..=high` not seen yet, ascending.
    fn uncovered(&self, low: u64, high: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let from = self.0.range(..=low).next_back().map_or(low, |(&s, _)| s);
        let mut cursor = low;
        for (&start, &end) in self.0.range(from..=high) {
            if end < cursor {
                continue;
            }
            if start > cursor {
                out.push((cursor, start - 1));
            }
            match end.checked_add(1) {
                Some(next) if next <= high => cursor = next,
                _ => return out,
            }
        }
        out.push((cursor, high));
        out
    }

    fn insert(&mut self, low: u64, high: u64) {
        let (mut low, mut high) = (low, high);
        if let Some((&start, &end)) = self.0.range(..=low).next_back() {
            if end.saturating_add(1) >= low {
                low = start;
                high = high.max(end);
            }
        }
        let touching: Vec<u64> = self
            .0
            .range(low..=high.saturating_add(1))
            .map(|(&start, _)| start)
            .collect();
        for start in touching {
            if let Some(end) = self.0.remove(&start) {
                high = high.max(end);
            }
        }
        self.0.insert(low, high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(low: u64, high: u64, step: u64, width: usize) -> Item {
        Item {
            low,
            high,
            step,
            width,
        }
    }

    fn values(items: &[Item]) -> Vec<String> {
        let n = numbers(items, &mut { u64::MAX }).unwrap();
        let out: Vec<String> = n
            .runs
            .iter()
            .flat_map(|r| r.values().map(move |v| format!("{v:0w$}", w = r.width)))
            .collect();
        assert_eq!(out.len() as u64, n.count);
        out
    }

    #[test]
    fn each_number_once_in_the_order_written() {
        assert_eq!(
            values(&[item(5, 5, 1, 0), item(1, 6, 1, 0)]),
            ["5", "1", "2", "3", "4", "6"]
        );
        assert_eq!(
            values(&[item(1, 10, 3, 0), item(1, 5, 1, 0)]),
            ["1", "4", "7", "10", "2", "3", "5"]
        );
        assert_eq!(
            values(&[item(8, 10, 1, 2), item(9, 11, 1, 0)]),
            ["08", "09", "10", "9", "11"]
        );
        assert_eq!(
            values(&[item(2, 32, 4, 2)]),
            ["02", "06", "10", "14", "18", "22", "26", "30"]
        );
        assert_eq!(values(&[item(1, 1, 1, 0), item(1, 1, 1, 2)]), ["1", "01"]);
    }

    #[test]
    fn huge_ranges_are_refused_before_listing() {
        let mut work = 10;
        assert_eq!(
            numbers(&[item(0, u64::MAX, 1, 0)], &mut work).unwrap_err(),
            Overflow::Numbers
        );
        let halves = [item(0, 60_000, 1, 0), item(60_001, 120_000, 1, 0)];
        assert_eq!(numbers(&halves, &mut work).unwrap_err(), Overflow::Numbers);
        assert_eq!(
            numbers(&[item(0, 100, 2, 0)], &mut work).unwrap_err(),
            Overflow::Work
        );
        let same = [
            item(0, u64::MAX - 1, u64::MAX, 0),
            item(0, 60_000, 1, 0),
            item(0, 60_000, 1, 0),
        ];
        assert_eq!(numbers(&same, &mut { u64::MAX }).unwrap().count, 60_001);
    }

    #[test]
    fn padding_wider_than_u64_stays_padded() {
        let n = numbers(&[item(1, 2, 1, 25)], &mut 0).unwrap();
        assert_eq!(
            n.runs,
            [Run {
                low: 1,
                high: 2,
                step: 1,
                width: 25
            }]
        );
        assert_eq!(n.longest, 25);
    }

    #[test]
    fn coverage_subtracts_and_merges() {
        let mut c = Coverage::default();
        c.insert(10, 20);
        c.insert(30, 40);
        assert_eq!(c.uncovered(0, 50), [(0, 9), (21, 29), (41, 50)]);
        assert_eq!(c.uncovered(15, 35), [(21, 29)]);
        assert_eq!(c.uncovered(12, 18), []);
        c.insert(21, 29);
        assert_eq!(c.0.len(), 1);
        c.insert(u64::MAX - 1, u64::MAX);
        assert_eq!(
            c.uncovered(u64::MAX - 3, u64::MAX),
            [(u64::MAX - 3, u64::MAX - 2)]
        );
        assert!(c.contains(u64::MAX) && c.contains(25) && !c.contains(41));
    }
}
