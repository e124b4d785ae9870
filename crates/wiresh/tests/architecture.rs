//! The shape of the code, checked so that it stays true:
//! - no two modules of a crate import each other, directly or in a loop:
//!   neither two files, nor two top-level modules with all their files
//!   taken together (a child of `a` importing `b` while `b` imports `a` is
//!   a loop between `a` and `b`); the binary (`src/bin/wiresh`) is a crate
//!   of its own here;
//! - the crate map in `lib.rs` (and the binary's, in `main.rs`) names every
//!   top-level module;
//! - `anyhow` only in the binary, and no `unsafe` code in the library but
//!   the one `pre_exec` hook of `exec::ctty`, the spawn helper's start
//!   (`exec::helper::vfork`: the clone, and the child's last system calls;
//!   `exec::helper::clone3`: the same clone into a cgroup, in assembly)
//!   and `close_range` (`syscall`); in the binary, only the allocator's
//!   settings (`alloc.rs`).
//!
//! Module dependencies are read from the source: `crate::a::b`, `super::x`
//! and `self::x` paths (use-trees with braces expanded), and a parent
//! naming a child module it declares (`child::item`). A path is charged to
//! the longest module prefix that is a file of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Library source roots checked.
const CRATES: &[&str] = &["crates/wiresh/src", "crates/wiresh-proto/src"];

/// Every crate root whose module graph is checked: the libraries and the
/// binary, whose modules import each other through its own `crate::`.
const GRAPHS: &[&str] = &[
    "crates/wiresh/src",
    "crates/wiresh-proto/src",
    "crates/wiresh/src/bin/wiresh",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Module path (`a::b`, empty for the root) of every `.rs` file under
/// `src`, outside `src/bin`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(src).unwrap();
            if rel.starts_with("bin") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension() != Some("rs".as_ref()) {
                continue;
            }
            let mut parts: Vec<String> = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The source without comments (line comments, doc comments and block
/// comments), string literals and its unit-test module (by convention the
/// file's last item; its `super` is the file itself), so that only the
/// module's own code is read.
fn code_only(text: &str) -> String {
    let text = match text.find("\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use_tree(&format!("{prefix}{p}")))
        .collect()
}

/// Every path in `code` that starts with `crate`, `super` or `self`.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Use statements, with their braces.
    for statement in code.split(';') {
        if let Some(at) = statement.find("use ") {
            let tree = &statement[at + 4..];
            if statement[..at]
                .trim_end()
                .ends_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                // `must_use = "…"`, `reuse ` and the like: not a use statement.
                continue;
            }
            found.extend(expand_use_tree(tree));
        }
    }
    // Paths written inline in code.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0
                && (bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == b'_'
                    || bytes[i - 1] == b':')
            {
                continue;
            }
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| i + n);
            // `super::{a, b}` is a use-tree, read above with its braces.
            if !code[i..end].ends_with("::") {
                found.push(code[i..end].to_string());
            }
        }
    }
    found
}

/// The module a path leads to, from module `here`, as the longest prefix
/// that is a module of its own; `None` for paths leaving the crate.
fn target(
    path: &str,
    here: &str,
    known: &BTreeMap<String, PathBuf>,
    is_mod_file: bool,
) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    // The module whose children `super`/`self` start from.
    let mut base: Vec<&str> = if here.is_empty() {
        vec![]
    } else {
        here.split("::").collect()
    };
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("self") => {
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
        }
        _ => return None,
    }
    let _ = is_mod_file;
    let full: Vec<&str> = base.iter().copied().chain(segments).collect();
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// Edges of the module graph of the crate under `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &known {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let is_mod_file = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let out = edges.entry(module.clone()).or_default();
        for path in paths(&code) {
            if let Some(to) = target(&path, module, &known, is_mod_file) {
                if &to != module && !to.is_empty() {
                    out.insert(to);
                }
            }
        }
        // A parent naming a child it declares, as in `config::Item`.
        for line in code.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(pos) = words.iter().position(|w| *w == "mod") else {
                continue;
            };
            let Some(name) = words.get(pos + 1).map(|n| n.trim_end_matches(';')) else {
                continue;
            };
            let child = if module.is_empty() {
                name.to_string()
            } else {
                format!("{module}::{name}")
            };
            let mentioned = code.match_indices(&format!("{name}::")).any(|(i, _)| {
                i == 0
                    || !code.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && code.as_bytes()[i - 1] != b':'
                        && code.as_bytes()[i - 1] != b'_'
            });
            if mentioned && known.contains_key(&child) && !module.is_empty() {
                out.insert(child);
            }
        }
    }
    edges
}

/// The graph between top-level modules: each module stands for itself and
/// all its children, and edges inside one of them are dropped.
fn collapsed(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |module: &str| module.split("::").next().unwrap_or_default().to_string();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in edges {
        let from = top(from);
        let reached: BTreeSet<String> = targets.iter().map(|t| top(t)).collect();
        let entry = out.entry(from.clone()).or_default();
        entry.extend(reached.into_iter().filter(|t| *t != from));
    }
    out
}

/// A loop in the crate under `src`, per file or between top-level
/// modules, described for a failure message.
fn find_loop(src: &Path) -> Option<String> {
    let edges = graph(src);
    if let Some(cycle) = find_cycle(&edges) {
        return Some(format!("files import each other: {}", cycle.join(" -> ")));
    }
    let cycle = find_cycle(&collapsed(&edges))?;
    // Which files make each step, so that the message says what to move.
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|step| {
            let files: Vec<&str> = edges
                .iter()
                .filter(|(from, _)| from.split("::").next() == Some(step[0].as_str()))
                .filter(|(_, to)| {
                    to.iter()
                        .any(|t| t.split("::").next() == Some(step[1].as_str()))
                })
                .map(|(from, _)| from.as_str())
                .collect();
            format!("{} -> {} (in {})", step[0], step[1], files.join(", "))
        })
        .collect();
    Some(format!(
        "top-level modules import each other: {}",
        steps.join("; ")
    ))
}

/// A cycle in the graph, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    for krate in GRAPHS {
        let src = workspace().join(krate);
        assert!(graph(&src).len() > 3, "{krate}: no modules found");
        if let Some(found) = find_loop(&src) {
            panic!("{krate}: {found}");
        }
    }
}

#[test]
fn the_checker_finds_a_loop() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    edges.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&edges), None);
    // An attribute's `must_use = "…"` is no use statement.
    assert!(paths("#[must_use = \"\"]\npub fn f() {}").is_empty());
    assert_eq!(
        expand_use_tree("crate::a::{b, c::{d, e}}"),
        ["crate::a::b", "crate::a::c::d", "crate::a::c::e"]
    );
    // A child reaching back into its parent's own items is a loop.
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("server")).unwrap();
    std::fs::write(src.path().join("lib.rs"), "pub mod server;").unwrap();
    std::fs::write(
        src.path().join("server/mod.rs"),
        "mod session;\npub struct Config;\nfn run() { session::serve(); }",
    )
    .unwrap();
    std::fs::write(
        src.path().join("server/session.rs"),
        "use super::Config;\npub fn serve() {}",
    )
    .unwrap();
    let cycle = find_cycle(&graph(src.path())).expect("the loop is found");
    assert!(cycle.contains(&"server::session".to_string()), "{cycle:?}");
}

/// A child file of one module importing another module that imports the
/// first is no loop between files, but one between the two modules.
#[test]
fn the_checker_finds_a_loop_through_a_child_file() {
    let src = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = src.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod client;\npub mod exit;");
    write("client/mod.rs", "pub mod shell;\npub struct Error;");
    write(
        "client/shell.rs",
        "use crate::exit;\npub fn run() -> i32 { exit::OK }",
    );
    write(
        "exit.rs",
        "use crate::client::Error;\npub const OK: i32 = 0;",
    );
    let edges = graph(src.path());
    assert_eq!(find_cycle(&edges), None, "no two files import each other");
    let found = find_loop(src.path()).expect("the loop is found");
    assert!(
        found.contains("client -> exit (in client::shell)"),
        "{found}"
    );
    assert!(found.contains("exit -> client (in exit)"), "{found}");
    // Without the child's import there is none.
    write("client/shell.rs", "pub fn run() -> i32 { 0 }");
    assert_eq!(find_loop(src.path()), None);
}

#[test]
fn the_crate_map_names_every_module() {
    let roots = CRATES
        .iter()
        .map(|krate| workspace().join(krate).join("lib.rs"))
        .chain([workspace().join("crates/wiresh/src/bin/wiresh/main.rs")]);
    for root in roots {
        let krate = root.display();
        let lib = std::fs::read_to_string(&root).unwrap();
        let docs: String = lib
            .lines()
            .filter(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for line in lib.lines() {
            let Some(name) = line
                .trim()
                .strip_prefix("pub mod ")
                .or_else(|| line.trim().strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(';'))
            else {
                continue;
            };
            assert!(
                docs.contains(&format!("`{name}`")),
                "{krate}: the crate map (its //! docs) does not name the module `{name}`"
            );
        }
    }
}

#[test]
fn anyhow_and_unsafe_stay_out_of_the_library() {
    for krate in CRATES {
        let src = workspace().join(krate);
        for (module, file) in modules(&src) {
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            assert!(
                !code.contains("anyhow"),
                "{}: `anyhow` belongs to the binary; the library returns typed errors",
                file.display()
            );
            let unsafe_blocks = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|word| *word == "unsafe")
                .count();
            // The one exception: entering a cgroup, a new session and a
            // pty's controlling terminal before the program runs needs a
            // `pre_exec` hook, which only `unsafe` can register; it lives in
            // one small module that says why, with one such block. The
            // spawn helper starts commands without `fork` (its child shares
            // its memory until `execve`), which no crate wraps safely: the
            // clone, and the child's signal reset and `execve`; where it
            // can, the clone is a `clone3` into the command's cgroup, a
            // few instructions of assembly (`exec::helper::clone3`: the
            // call, the child's entry, and the `unsafe fn` on each
            // architecture that says what its caller must uphold).
            // And `close_range(2)` (inherited descriptors marked
            // close-on-exec), which no crate wraps either.
            let allowed = match module.as_str() {
                "exec::ctty" => 1,
                "syscall" => 1,
                "exec::helper::vfork" => 3,
                "exec::helper::clone3" => 4,
                _ => 0,
            };
            assert!(
                unsafe_blocks <= allowed,
                "{krate} module `{module}` has unsafe code; use nix/rustix/socket2"
            );
        }
    }
}

/// The binary's `unsafe` blocks are two calls to the allocator, which no
/// crate wraps: `mallopt` (its thresholds) and `malloc_trim` (memory given
/// back after a burst of connections); anything else uses nix/rustix.
#[test]
fn the_binarys_only_unsafe_is_the_allocator_settings() {
    let bin = workspace().join("crates/wiresh/src/bin/wiresh");
    for entry in std::fs::read_dir(&bin).unwrap() {
        let file = entry.unwrap().path();
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let unsafe_blocks = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|word| *word == "unsafe")
            .count();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let allowed = match name.as_str() {
            "alloc.rs" => ["mallopt", "malloc_trim"]
                .iter()
                .filter(|call| code.contains(*call))
                .count(),
            _ => 0,
        };
        assert!(
            unsafe_blocks <= allowed,
            "{name} has unsafe code; use nix/rustix/socket2"
        );
    }
}

/// What the protocol's client must not import: the front ends built on it
/// (which print and decide exit statuses), the servers, and the command
/// runner. A Python package or a connection-reusing master takes `client`
/// alone.
#[test]
fn the_protocol_client_imports_no_front_end() {
    let edges = collapsed(&graph(&workspace().join("crates/wiresh/src")));
    let imports = &edges["client"];
    for front in [
        "cli", "fanout", "exit", "legacy", "exec", "server", "daemon",
    ] {
        assert!(
            !imports.contains(front),
            "client imports `{front}`; the protocol's client must not know its front ends"
        );
    }
}

/// Only the binary ends the process: a library function returns, and its
/// caller decides (a Python process must not vanish under a library call).
#[test]
fn only_the_binary_calls_process_exit() {
    for krate in CRATES {
        for file in modules(&workspace().join(krate)).into_values() {
            let code = code_only(&std::fs::read_to_string(&file).unwrap());
            let exits = code.contains("process::exit(") || code.contains("process::abort(");
            assert!(
                !exits,
                "{}: the library ends the process; return, and let the binary exit",
                file.display()
            );
        }
    }
}
