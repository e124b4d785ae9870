//! A parsed list into names: each operand counted exactly and checked
//! against the limits before a single name of it is made, then combined
//! with the names so far by its operator.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::ops::Range;

use super::error::{ErrorKind, HostListError};
use super::limits::{MAX_HOSTS, MAX_NAME_LEN, MAX_WORK};
use super::numbers::{self, Numbers, Overflow};
use super::parse::{self, Bracket, Op, What};

/// Where `@group`s are looked up.
pub trait Groups {
    /// The hosts of group `name`, or why there are none (unknown group,
    /// no inventory); the message is shown as it is.
    fn group(&self, name: &str) -> Result<Vec<String>, String>;
}

impl<F: Fn(&str) -> Result<Vec<String>, String>> Groups for F {
    fn group(&self, name: &str) -> Result<Vec<String>, String> {
        self(name)
    }
}

/// No groups at all: where host lists are read without an inventory.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGroups;

impl Groups for NoGroups {
    fn group(&self, _: &str) -> Result<Vec<String>, String> {
        Err("groups come from the client settings (client.toml), which are not read here".into())
    }
}

/// Expands `list`, resolving `@group`s with `groups`.
pub(super) fn expand(list: &str, groups: &dyn Groups) -> Result<Vec<String>, HostListError> {
    let mut work_left = MAX_WORK;
    let mut hosts = Hosts::default();
    for operand in parse::parse(list)? {
        let error = |kind| HostListError::new(kind, list, operand.span.clone());
        let out_of_work = || error(ErrorKind::TooMany(too_much_work()));
        let applied = match &operand.what {
            What::Group(name) => {
                let names = groups
                    .group(name)
                    .map_err(|why| error(ErrorKind::Group(why)))?;
                work_left = work_left
                    .checked_sub(names.len() as u64)
                    .ok_or_else(out_of_work)?;
                let mut seen = HashSet::new();
                let names = names.into_iter().filter(|n| seen.insert(n.clone()));
                hosts.apply(operand.op, names)
            }
            What::Pattern { texts, brackets } => {
                let pattern =
                    Pattern::new(texts, brackets, &mut work_left).map_err(|(kind, bracket)| {
                        let span = bracket.unwrap_or_else(|| operand.span.clone());
                        HostListError::new(kind, list, span)
                    })?;
                work_left = work_left
                    .checked_sub(pattern.count)
                    .ok_or_else(out_of_work)?;
                hosts.apply(operand.op, pattern.names())
            }
        };
        applied.map_err(|TooManyHosts| {
            error(ErrorKind::TooMany(format!(
                "the list names more than {MAX_HOSTS} distinct hosts"
            )))
        })?;
    }
    match hosts.into_names() {
        names if names.is_empty() => {
            Err(HostListError::new(ErrorKind::NoHosts, list, 0..list.len()))
        }
        names => Ok(names),
    }
}

fn too_much_work() -> String {
    format!(
        "the list spells out more than {MAX_WORK} names counting repeats \
         (its parts overlap that much); write it with fewer overlapping parts"
    )
}

/// One pattern, checked and ready to expand.
struct Pattern<'a> {
    texts: &'a [&'a str],
    numbers: Vec<Numbers>,
    /// How many names, all distinct (no two numbers of a bracket render
    /// alike, and two brackets never share a run of digits).
    count: u64,
}

impl<'a> Pattern<'a> {
    /// Errors come with the bracket they are about, if one.
    fn new(
        texts: &'a [&'a str],
        brackets: &[Bracket],
        work_left: &mut u64,
    ) -> Result<Pattern<'a>, (ErrorKind, Option<Range<usize>>)> {
        let mut numbers = Vec::with_capacity(brackets.len());
        let mut count = 1u64;
        for bracket in brackets {
            let n = numbers::numbers(&bracket.items, work_left).map_err(|overflow| {
                let why = match overflow {
                    Overflow::Numbers => format!(
                        "this range list holds more than {MAX_HOSTS} numbers, and a host list \
                         names at most {MAX_HOSTS} hosts"
                    ),
                    Overflow::Work => too_much_work(),
                };
                (ErrorKind::TooMany(why), Some(bracket.span.clone()))
            })?;
            count = match count.checked_mul(n.count) {
                Some(c) if c <= MAX_HOSTS as u64 => c,
                _ => {
                    let why = format!(
                        "this part names more than {MAX_HOSTS} hosts, the most a host list may name"
                    );
                    return Err((ErrorKind::TooMany(why), None));
                }
            };
            numbers.push(n);
        }
        let longest = texts.iter().map(|t| t.len()).sum::<usize>()
            + numbers.iter().map(|n| n.longest).sum::<usize>();
        if longest > MAX_NAME_LEN {
            return Err((ErrorKind::TooLong(longest), None));
        }
        Ok(Pattern {
            texts,
            numbers,
            count,
        })
    }

    /// The names, first bracket slowest, each bracket's numbers in the
    /// order written.
    fn names(&self) -> impl Iterator<Item = String> + '_ {
        // Where each bracket is: (run, number).
        let mut at: Vec<(usize, u64)> = self.numbers.iter().map(|n| (0, n.runs[0].low)).collect();
        let mut done = self.count == 0;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let name = self.render(&at);
            done = !self.advance(&mut at);
            Some(name)
        })
    }

    fn render(&self, at: &[(usize, u64)]) -> String {
        let mut name = String::new();
        for (i, text) in self.texts.iter().enumerate() {
            name.push_str(text);
            if let Some(&(run, n)) = at.get(i) {
                let width = self.numbers[i].runs[run].width;
                let _ = write!(name, "{n:0width$}");
            }
        }
        name
    }

    /// Moves to the next combination; false after the last.
    fn advance(&self, at: &mut [(usize, u64)]) -> bool {
        for (i, (run, n)) in at.iter_mut().enumerate().rev() {
            let runs = &self.numbers[i].runs;
            if let Some(next) = runs[*run].next(*n) {
                *n = next;
                return true;
            }
            if let Some(following) = runs.get(*run + 1) {
                (*run, *n) = (*run + 1, following.low);
                return true;
            }
            (*run, *n) = (0, runs[0].low);
        }
        false
    }
}

/// More than [`MAX_HOSTS`] distinct hosts.
struct TooManyHosts;

/// The names so far, with the order each was first added in.
#[derive(Default)]
struct Hosts {
    names: HashMap<String, u64>,
    added: u64,
}

impl Hosts {
    /// Combines `names` (distinct) with these, by `op`.
    fn apply(&mut self, op: Op, names: impl Iterator<Item = String>) -> Result<(), TooManyHosts> {
        match op {
            Op::Union => {
                for name in names {
                    if !self.names.contains_key(&name) {
                        self.add(name)?;
                    }
                }
            }
            Op::Difference => {
                for name in names {
                    self.names.remove(&name);
                }
            }
            Op::Intersection => {
                let mut kept = HashMap::new();
                for name in names {
                    if let Some(order) = self.names.remove(&name) {
                        kept.insert(name, order);
                    }
                }
                self.names = kept;
            }
            Op::SymmetricDifference => {
                for name in names {
                    if self.names.remove(&name).is_none() {
                        self.add(name)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, name: String) -> Result<(), TooManyHosts> {
        if self.names.len() >= MAX_HOSTS {
            return Err(TooManyHosts);
        }
        self.names.insert(name, self.added);
        self.added += 1;
        Ok(())
    }

    fn into_names(self) -> Vec<String> {
        let mut names: Vec<(u64, String)> = self.names.into_iter().map(|(n, o)| (o, n)).collect();
        names.sort_unstable_by_key(|&(order, _)| order);
        names.into_iter().map(|(_, name)| name).collect()
    }
}
