//! `hostlist`: arbitrary bytes as a host list (`-H`, `-x`, the inventory's
//! groups and host keys), to [`expand_with`] with a few small groups, and
//! what it expands to back through [`fold`].
//!
//! The input is read as UTF-8, invalid sequences replaced (the command line
//! hands wiresh text). Checks:
//!
//! * nothing panics, including formatting every error;
//! * an expansion has at most [`MAX_HOSTS`] names, each once, none empty
//!   or longer than [`MAX_NAME_LEN`]; nothing over the limits is made
//!   first (the fuzzer's runs enforce that with `-malloc_limit_mb=300`,
//!   see README.md);
//! * an error points inside the list (or just past its end) and its
//!   message stays short whatever the input's size;
//! * folding the names and expanding the fold gives the same names, and
//!   folding is a fixed point (a fold expands and folds back to itself);
//! * each name is a host list of its own that expands to itself.

use std::collections::HashSet;

use wiresh::hostlist::{expand, expand_with, fold, MAX_HOSTS, MAX_NAME_LEN};

/// Names past which the fold round trip is skipped: it is checked on
/// smaller expansions, and a fold of 100,000 names per input would slow
/// the fuzzer down a hundredfold.
const FOLD_CHECKED_UP_TO: usize = 2_000;

/// The groups the target knows: `@web` (with a repeat), `@db` (with an
/// IPv6 host), `@empty` and `@big` (a thousand hosts).
fn groups(name: &str) -> Result<Vec<String>, String> {
    match name {
        "web" => Ok(vec!["web01".into(), "web02".into(), "web01".into()]),
        "db" => Ok(vec!["db1".into(), "[::1]:7001".into()]),
        "empty" => Ok(Vec::new()),
        "big" => Ok((0..1_000).map(|i| format!("b{i:03}")).collect()),
        _ => Err(format!("no group {name}")),
    }
}

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    let list = String::from_utf8_lossy(data);
    match expand_with(&list, &groups) {
        Ok(names) => check_names(&list, &names),
        Err(e) => {
            assert!(
                e.column() <= list.chars().count() + 1,
                "{list:?}: column {}",
                e.column()
            );
            let text = e.to_string();
            assert!(
                text.len() < 1_000,
                "a message of {} bytes for {list:?}",
                text.len()
            );
        }
    }
}

fn check_names(list: &str, names: &[String]) {
    assert!(names.len() <= MAX_HOSTS, "{list:?}: {} names", names.len());
    let mut seen = HashSet::new();
    for name in names {
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME_LEN,
            "{list:?}: {name:?}"
        );
        assert!(seen.insert(name.as_str()), "{list:?}: {name:?} twice");
    }
    if names.is_empty() || names.len() > FOLD_CHECKED_UP_TO {
        return;
    }
    for name in names.iter().take(50) {
        let one = expand(name).unwrap_or_else(|e| panic!("{list:?} gives {name:?}: {e}"));
        assert_eq!(one, std::slice::from_ref(name), "{list:?}");
    }
    let folded = fold(names);
    let back = expand(&folded).unwrap_or_else(|e| panic!("{list:?} folds to {folded:?}: {e}"));
    let theirs: HashSet<&str> = back.iter().map(String::as_str).collect();
    assert_eq!(theirs, seen, "{list:?} folds to {folded:?}");
    assert_eq!(fold(&back), folded, "{list:?}: a fold folds back to itself");
}
