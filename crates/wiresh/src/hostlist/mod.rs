//! Host lists to ClusterShell's standard (`nodeset`, `clush -w`):
//! `web[01-20]`, `web[1-3,7]`, `10.0.0.[1-9]`, `host[1-4]:7878`,
//! `web[02-32/4]`, `r[1-3]n[01-04]`, `@group`, joined by `,` and the set
//! operators `!`, `&`, `^`; expanded into names ([`expand`],
//! [`expand_with`]) and folded back ([`fold`]).
//!
//! # Grammar
//!
//! ```text
//! list     = operand { op operand }          spaces allowed around operands
//! op       = "," | "!" | "&" | "^"           union, difference, intersection,
//!                                            symmetric difference; left to right
//! operand  = "@" group | pattern
//! group    = 1*( ALPHA | DIGIT | "-" | "_" | "." )
//! pattern  = [ "[" ipv6 "]" ] *( text | "[" ranges "]" )
//! text     = ALPHA | DIGIT | "-" | "." | "_" | ":"
//! ranges   = range { "," range }
//! range    = number [ "-" number [ "/" step ] ]   LOW <= HIGH, step >= 1
//! number   = 1*DIGIT                          at most 2^64-1
//! ```
//!
//! - A number written with a leading zero (`01`, `007`) pads every number
//!   of its range to its width; then both ends have the same width
//!   (`01-10`, not `01-100`). `02-32/4` is 02, 06, ..., 30.
//! - Brackets are only range lists, except `[IPV6]` at the start of a host
//!   (`[::1]:7878`, `[::1]:[7001-7002]`), which is an address. Anything
//!   else (`web[1-3, 7]`, `h[a-c]`, `h[]`, `h[1-2-3]`, a stray `]`, a
//!   `[` never closed) is an error naming the character and its column.
//! - Digits next to a bracket are part of the number's text: `a1[8-10]`
//!   is a18, a19, a110. Two brackets in one run of digits (`h[1-2][3-4]`,
//!   `h[1-2]0[1-2]`) are refused: the names could not be cut back.
//! - `@name` is a group, looked up by the [`Groups`] given to
//!   [`expand_with`] (the inventory's groups); [`expand`] knows none.
//! - A list that names no host (`a!a`) is an error.
//!
//! # Limits
//!
//! Every operand is counted exactly, with checked arithmetic, before any
//! of its names is made: an operand of more than [`MAX_HOSTS`] hosts, a
//! list of more than [`MAX_HOSTS`] distinct hosts, a name longer than
//! [`MAX_NAME_LEN`] and a list spelling out more than three times
//! [`MAX_HOSTS`] names counting repeats (`h[1-60000]` written six times)
//! are errors. `h[1-60000],h[1-60000]` is 60,000 hosts.
//!
//! # Where wiresh differs from `nodeset` (ClusterShell 1.9)
//!
//! - Order: [`expand`] gives names in the order written (`n[01-02,5]` is
//!   n01, n02, n5; `b,a` is b, a), each once, where `nodeset -e` sorts.
//!   Fan-out runs and prints hosts in that order.
//! - Refused here, accepted by `nodeset`: spaces inside brackets
//!   (`web[1-3, 7]`), negative numbers (`h[-1]`, and `h[1-2-3]`, which
//!   `nodeset` reads as -2..3), numbers past 2^64-1, characters other
//!   than letters, digits, `-`, `.`, `_`, `:` in names (spaces, `%`, `/`,
//!   `*` and `?` wildcards, `user@host`), an empty list, group sources and
//!   group ranges (`@src:grp`, `@rack[1-2]`, `@*`), any single operand
//!   beyond [`MAX_HOSTS`] (even `h[1-10]&h[1-200000]`), and a list that
//!   names no host (`a!a`).
//! - Accepted here, refused by `nodeset`: `[IPV6]` addresses, and digits
//!   around a padded or stepped range (`a0[8-10]` is a08, a09, a010;
//!   `a[1-3/2]0` is a10, a30).
//! - Digits before a bracket are text here (`a1[8-10]` is a18, a19,
//!   a110); `nodeset` turns them into the range 18-110.
//! - [`fold`] writes what `nodeset -f` writes for names with one numeric
//!   field, and for products of several (`r[1-3]n[01-04]`); for other
//!   sets of names with several numeric fields it may cut the pieces
//!   differently (`a[1-2]b1,a2b2` against `a1b1,a2b[1-2]`). A run of more
//!   than 19 digits is folded as text.

mod error;
mod expand;
mod fold;
mod limits;
mod numbers;
mod parse;

pub use error::{ErrorKind, HostListError};
pub use expand::{Groups, NoGroups};
pub use fold::{fold, natural_cmp};
pub use limits::{MAX_HOSTS, MAX_NAME_LEN};

/// Expands a host list into names, in the order written, without
/// duplicates. `@group`s are errors here: see [`expand_with`].
pub fn expand(list: &str) -> Result<Vec<String>, HostListError> {
    expand::expand(list, &NoGroups)
}

/// Expands a host list as [`expand`] does, looking `@group`s up in
/// `groups`.
pub fn expand_with(list: &str, groups: &dyn Groups) -> Result<Vec<String>, HostListError> {
    expand::expand(list, groups)
}

#[cfg(test)]
mod tests;
