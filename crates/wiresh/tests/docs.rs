//! The documents hold together: every relative link in the repository's
//! Markdown files leads to a file that exists and, with a `#fragment`, to a
//! heading of that file (as GitHub names its anchors); every Markdown
//! document named with an anchor in the sources (comments, help texts, the
//! unit file) is found the same way; and the README stays a front page of
//! at most 300 lines, the rest living in the documents it links to.

use std::path::{Path, PathBuf};

/// The repository's root, two levels above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Every file under `dir` whose name passes `wanted`, outside build output,
/// version control and fuzzing corpora.
fn files(dir: &Path, wanted: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !matches!(&*name, "target" | ".git" | "corpus" | "artifacts") {
                files(&path, wanted, out);
            }
        } else if wanted(&path) {
            out.push(path);
        }
    }
}

fn markdown_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(
        &root(),
        &|p| p.extension().is_some_and(|e| e == "md"),
        &mut out,
    );
    out
}

/// The text of a Markdown file outside fenced code blocks, with inline code
/// blanked: what can hold links.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            }
            out.push(if in_code { ' ' } else { c });
        }
        out.push('\n');
    }
    out
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped
/// (letters, digits, `-` and `_` kept), spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings, repeats numbered as GitHub
/// numbers them (`name`, `name-1`, ...).
fn anchors(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if fenced || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim_end_matches('#'));
        let repeats = seen
            .iter()
            .filter(|a| {
                **a == base
                    || a.strip_prefix(&format!("{base}-"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        seen.push(match repeats {
            0 => base,
            n => format!("{base}-{n}"),
        });
    }
    seen
}

/// Checks one reference, `target` (a path, `#fragment`, or both) seen in
/// `from`, whose relative paths start at `base`; the problem, if any.
fn check(from: &Path, base: &Path, target: &str) -> Option<String> {
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        base.join(path)
    };
    let shown = |p: &Path| p.strip_prefix(root()).unwrap_or(p).display().to_string();
    if !file.exists() {
        return Some(format!("{}: `{target}`: no such file", shown(from)));
    }
    let fragment = fragment.filter(|_| file.extension().is_some_and(|e| e == "md"))?;
    if anchors(&file).iter().any(|a| a == fragment) {
        return None;
    }
    Some(format!(
        "{}: `{target}`: {} has no heading with the anchor #{fragment}",
        shown(from),
        shown(&file)
    ))
}

#[test]
fn every_relative_link_in_the_documents_resolves() {
    let mut problems = Vec::new();
    let mut links = 0;
    for md in markdown_files() {
        let text = prose(&std::fs::read_to_string(&md).unwrap());
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find([')', ' ']).unwrap_or(rest.len())];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            links += 1;
            problems.extend(check(&md, md.parent().unwrap(), target));
        }
    }
    assert!(links > 50, "found only {links} links: is the scan broken?");
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn documents_named_with_an_anchor_in_the_sources_resolve() {
    let mut sources = Vec::new();
    files(
        &root(),
        &|p| {
            p.extension()
                .is_some_and(|e| matches!(e.to_str(), Some("rs" | "toml" | "service" | "sh")))
                || p.ends_with(".ci/run")
        },
        &mut sources,
    );
    assert!(sources.len() > 50, "found only {} sources", sources.len());
    let path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let mut problems = Vec::new();
    for source in sources {
        let text = std::fs::read_to_string(&source).unwrap();
        for (at, _) in text.match_indices(".md#") {
            let start = text[..at].rfind(|c| !path_char(c)).map_or(0, |i| i + 1);
            let end = at
                + 4
                + text[at + 4..]
                    .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_')))
                    .unwrap_or(text.len() - at - 4);
            if start == at {
                continue; // no file name before `.md`, as in this test's own code
            }
            let reference = &text[start..end];
            // Sources name documents from the repository's root.
            problems.extend(check(&source, &root(), reference));
        }
    }
    assert!(
        problems.is_empty(),
        "broken references:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_is_a_front_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move details to docs/USAGE.md, docs/OPERATING.md, \
         bench/README.md or CHANGELOG.md and link to them"
    );
    for document in [
        "docs/USAGE.md",
        "docs/OPERATING.md",
        "docs/PROTOCOL.md",
        "SECURITY.md",
        "CHANGELOG.md",
        "bench/README.md",
    ] {
        assert!(
            readme.contains(&format!("]({document})")),
            "the README does not link to {document}"
        );
    }
    // The test command CI runs (with --locked) is the README's.
    assert!(readme.contains("cargo test --workspace --no-fail-fast\n"));
}
