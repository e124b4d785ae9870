//! Host lists through the real `wiresh` binary: hostile sizes refused
//! under a 300 MB address-space limit, the cap on distinct hosts, errors
//! that point at the character, `@group` from the inventory. Every list
//! here fails (or is excluded whole with `-x`) before anything connects.
//!
//! The module's own tests (grammar, `nodeset`'s answers, properties) are
//! in `src/hostlist/tests.rs`; `agrees_with_nodeset_on_random_lists` below
//! is a check against ClusterShell's `nodeset`, run by hand where it is
//! installed (`cargo test -p wiresh --test hostlist -- --ignored`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use common::*;
use wiresh::exit::USAGE;
use wiresh::hostlist::{expand, expand_with, fold, ErrorKind};
use wiresh::inventory::Inventory;

/// `wiresh exec ARGS -- true` with its address space limited to 300 MB
/// (`ulimit -v`, which the binary inherits through `exec`).
async fn exec_limited(home: &Path, args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -v 300000 && exec "$0" exec "$@" -- true"#)
        .arg(BIN)
        .args(args);
    isolated(&mut cmd, home);
    bounded("wiresh exec", cli_output(cmd, None)).await
}

#[tokio::test]
async fn hostile_lists_fail_with_a_message_under_a_memory_limit() {
    let home = tempfile::tempdir().unwrap();
    for list in [
        "h[0-18446744073709551615,0-0]",
        "h[0-16777215,0-18446744073692774404]",
        "a[1-1000]b[1-1000]c[1-1000]",
        "h[1-60000],g[1-60000]",
    ] {
        let out = exec_limited(home.path(), &["-H", list]).await;
        let stderr = out.stderr_str();
        assert_eq!(out.code, Some(USAGE), "{list}: {stderr}");
        assert!(
            stderr.starts_with(&format!("wiresh: -H {list}: ")) && stderr.contains("100000"),
            "{list}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{list}: {stderr}");
    }
}

#[tokio::test]
async fn the_cap_counts_each_host_once() {
    let home = tempfile::tempdir().unwrap();
    let out = exec_limited(
        home.path(),
        &["-H", "h[1-60000],h[1-60000]", "-x", "h[1-60000]"],
    )
    .await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(USAGE), "{stderr}");
    assert!(stderr.contains("excludes every host"), "{stderr}");
}

#[tokio::test]
async fn a_bad_list_is_an_error_that_points_at_the_character() {
    let home = tempfile::tempdir().unwrap();
    for (list, message, caret) in [
        ("web[1-3, 7]", "unexpected ' ' at column 9", "            ^"),
        ("h[a-c]", "unexpected 'a' at column 3", "      ^"),
        (
            "h[1-3]]",
            "the `]` at column 7 closes no `[`",
            "          ^",
        ),
        ("web[01-", "the `[` at column 4 is never closed", "       ^"),
    ] {
        let out = exec_limited(home.path(), &["-H", list]).await;
        let stderr = out.stderr_str();
        assert_eq!(out.code, Some(USAGE), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines[0].starts_with(&format!("wiresh: -H {list}: {message}")),
            "{stderr}"
        );
        assert_eq!(
            lines[1..3],
            [format!("    {list}"), caret.to_string()],
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn groups_in_host_lists_come_from_the_inventory() {
    let home = tempfile::tempdir().unwrap();
    let inventory = home.path().join("client.toml");
    std::fs::write(&inventory, "[groups]\nweb = \"web[1-3]\"\ndb = [\"db1\"]\n").unwrap();
    let inv = inventory.to_str().unwrap();

    // `@web` is web1..web3: taking exactly those away leaves nothing.
    let out = exec_limited(
        home.path(),
        &["--config", inv, "-H", "@web,@db", "-x", "web[1-3],db1"],
    )
    .await;
    assert!(
        out.stderr_str().contains("excludes every host"),
        "{}",
        out.stderr_str()
    );
    let out = exec_limited(
        home.path(),
        &["--config", inv, "-H", "web[1-3]", "-x", "@web"],
    )
    .await;
    assert!(
        out.stderr_str().contains("excludes every host"),
        "{}",
        out.stderr_str()
    );
    let out = exec_limited(home.path(), &["--config", inv, "-H", "@web!web[1-3]"]).await;
    let stderr = out.stderr_str();
    assert!(
        stderr.starts_with("wiresh: -H @web!web[1-3]: the list names no host"),
        "{stderr}"
    );

    let out = exec_limited(home.path(), &["--config", inv, "-H", "a,@nope"]).await;
    let stderr = out.stderr_str();
    assert_eq!(out.code, Some(USAGE), "{stderr}");
    assert!(
        stderr.contains("no such group nope") && stderr.contains("(groups: db, web)"),
        "{stderr}"
    );

    // The default settings file is read for `@group` too; without one, say so.
    let out = exec_limited(home.path(), &["-H", "@web", "-x", "web[1-3]"]).await;
    assert!(
        out.stderr_str().contains("excludes every host"),
        "{}",
        out.stderr_str()
    );
    std::fs::remove_file(&inventory).unwrap();
    let out = exec_limited(home.path(), &["-H", "@web"]).await;
    assert!(
        out.stderr_str().contains("there are no client settings"),
        "{}",
        out.stderr_str()
    );

    // The same through the library.
    let inv = Inventory::parse("[groups]\nweb = \"web[1-3]\"\n", &inventory).unwrap();
    assert_eq!(
        expand_with("@web!web2,db1", &inv).unwrap(),
        ["web1", "web3", "db1"]
    );
    let e = expand_with("@db", &inv).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Group(_)), "{e}");
}

/// A random host list, mostly of the forms people write, some of them
/// wrong on purpose.
fn random_list(rng: &mut u64) -> String {
    let mut next = |n: u64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng % n
    };
    let pick = |options: &[&'static str], i: u64| options[i as usize % options.len()];
    let number = |next: &mut dyn FnMut(u64) -> u64| -> String {
        let n = next(130);
        match next(4) {
            0 => format!("{n:02}"),
            1 => format!("{n:03}"),
            _ => n.to_string(),
        }
    };
    let mut list = String::new();
    for operand in 0..1 + next(3) {
        if operand > 0 {
            list.push_str(pick(&[",", ",", ",", "!", "&", "^", ", "], next(7)));
        }
        match next(5) {
            // A name with two numbers, and a product they often fall in.
            0 => {
                list.push_str(&format!("r{}n{:02}", next(4), next(6)));
                continue;
            }
            1 => {
                let (r, n) = (next(3), next(4));
                list.push_str(&format!(
                    "r[{r}-{}]n[{n:02}-{:02}]",
                    r + next(3),
                    n + next(4)
                ));
                continue;
            }
            _ => {}
        }
        for _ in 0..1 + next(3) {
            list.push_str(pick(
                &["web", "r", "n", "db-", "h.", "x", "a1", "c0"],
                next(8),
            ));
            if next(5) > 0 {
                list.push('[');
                for item in 0..1 + next(3) {
                    if item > 0 {
                        list.push(',');
                    }
                    let low = number(&mut next);
                    list.push_str(&low);
                    if next(2) == 0 {
                        let high = low.parse::<u64>().unwrap() + next(40);
                        let high = match low.len() {
                            n if low.starts_with('0') && low.len() > 1 => format!("{high:0n$}"),
                            _ => high.to_string(),
                        };
                        list.push('-');
                        list.push_str(&high);
                        if next(4) == 0 {
                            list.push_str(&format!("/{}", 1 + next(5)));
                        }
                    }
                }
                let close = ["]", "]]", "", " ]", "-]", "a]", "/]"];
                list.push_str(if next(12) > 0 {
                    "]"
                } else {
                    pick(&close, next(7))
                });
            }
        }
        list.push_str(pick(&["", "", "", ":7878", ".dc1", "-ib", "b"], next(7)));
    }
    list
}

/// What `nodeset` made of a list: its names, and its fold of wiresh's
/// names; `None` where it refuses the list.
type Answer = Option<(Vec<String>, String)>;

/// Runs ClusterShell over `lists` (each with wiresh's expansion), or
/// `None` where it is not installed.
fn nodeset_answers(lists: &[(String, Vec<String>)]) -> Option<Vec<Answer>> {
    let nodeset = std::process::Command::new("sh")
        .args(["-c", "command -v nodeset"])
        .output()
        .ok()?;
    let path = String::from_utf8(nodeset.stdout).ok()?;
    let script = std::fs::read_to_string(path.trim()).ok()?;
    let python = script.lines().next()?.strip_prefix("#!")?.to_string();
    const SCRIPT: &str = r#"
import sys, json
from ClusterShell.NodeSet import NodeSet
for line in sys.stdin:
    pattern, ours = json.loads(line)
    try:
        names = list(NodeSet(pattern))
        folded = str(NodeSet.fromlist(ours)) if ours else ""
        print(json.dumps([names, folded]))
    except Exception as e:
        print(json.dumps(None))
"#;
    let mut child = std::process::Command::new(python.trim())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let input: String = lists
        .iter()
        .map(|(list, ours)| format!("{}\n", serde_json::json!([list, ours])))
        .collect();
    let mut stdin = child.stdin.take()?;
    let writer =
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

/// Where wiresh refuses what `nodeset` accepts, on purpose (see the
/// module docs of `wiresh::hostlist`).
fn deliberately_refused(_list: &str, kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Unexpected { found: ' ', .. } => true, // spaces in brackets or names
        ErrorKind::Unexpected { found: '-', .. } => true, // negative numbers, 1-2-3
        ErrorKind::Missing("empty host list") => true,
        ErrorKind::TooMany(_) => true, // the cap; nodeset has none
        _ => false,
    }
}

/// Where wiresh accepts what `nodeset` refuses, or reads it otherwise,
/// on purpose: digits next to a padded or stepped range, or before a
/// range whose ends differ in length.
fn deliberately_different(list: &str) -> bool {
    let bytes = list.as_bytes();
    (0..bytes.len()).any(|i| {
        (bytes[i] == b'[' && i > 0 && bytes[i - 1].is_ascii_digit())
            || (bytes[i] == b']' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
    })
}

/// How many pieces a folded list has (commas outside brackets, plus one).
fn pieces_of(folded: &str) -> usize {
    let mut depth = 0i32;
    1 + folded
        .chars()
        .filter(|&c| {
            depth += match c {
                '[' => 1,
                ']' => -1,
                _ => 0,
            };
            c == ',' && depth == 0
        })
        .count()
}

#[test]
#[ignore = "needs ClusterShell's nodeset; a check to run by hand"]
fn agrees_with_nodeset_on_random_lists() {
    let mut rng = 0x9E37_79B9_7F4A_7C15;
    let lists: Vec<(String, Vec<String>)> = (0..5000)
        .map(|_| {
            let list = random_list(&mut rng);
            let ours = expand(&list).unwrap_or_default();
            (list, ours)
        })
        .collect();
    let answers = nodeset_answers(&lists).expect("nodeset (ClusterShell) is not installed");
    let (mut same, mut both_refuse, mut on_purpose, mut folds, mut folds_same) = (0, 0, 0, 0, 0);
    // Lists that name no host: nodeset prints nothing, wiresh says so.
    let mut both_empty = 0;
    // Where folds differ: wiresh's pieces against nodeset's, fewer/as many/more.
    let mut pieces = [0; 3];
    let mut unexplained = Vec::new();
    let mut fold_differences = Vec::new();
    for ((list, ours), theirs) in lists.iter().zip(&answers) {
        let result = expand(list);
        match (&result, theirs) {
            (Ok(_), Some((names, folded))) => {
                let a: BTreeSet<&String> = ours.iter().collect();
                let b: BTreeSet<&String> = names.iter().collect();
                if a == b {
                    same += 1;
                    if !ours.is_empty() {
                        folds += 1;
                        if fold(ours) == *folded {
                            folds_same += 1;
                        } else {
                            let (a, b) = (pieces_of(&fold(ours)), pieces_of(folded));
                            pieces[(a.cmp(&b) as i8 + 1) as usize] += 1;
                            fold_differences
                                .push(format!("{list}: {} / nodeset {folded}", fold(ours)));
                        }
                    }
                } else if deliberately_different(list) {
                    on_purpose += 1;
                } else {
                    unexplained.push(format!("{list}: {} names / nodeset {}", a.len(), b.len()));
                }
            }
            (Err(_), None) => both_refuse += 1,
            (Err(e), Some((names, _))) if names.is_empty() && *e.kind() == ErrorKind::NoHosts => {
                both_empty += 1
            }
            (Err(e), Some(_)) if deliberately_refused(list, e.kind()) => on_purpose += 1,
            (Ok(_), None) if deliberately_different(list) => on_purpose += 1,
            (Err(e), Some(_)) => {
                unexplained.push(format!("{list}: refused ({e}), nodeset accepts"))
            }
            (Ok(n), None) => {
                unexplained.push(format!("{list}: {} names, nodeset refuses", n.len()))
            }
        }
    }
    println!(
        "{} lists: {same} expanded alike, {both_empty} name no host, {both_refuse} refused by both, \
         {on_purpose} differ on purpose, \
         {} unexplained; folds: {folds_same} of {folds} written alike; where they differ, \
         wiresh writes fewer pieces {} times, as many {}, more {}",
        lists.len(),
        unexplained.len(),
        pieces[0],
        pieces[1],
        pieces[2]
    );
    for d in fold_differences.iter().take(20) {
        println!("fold: {d}");
    }
    for u in &unexplained {
        println!("unexplained: {u}");
    }
    assert!(unexplained.is_empty(), "{unexplained:#?}");
}
