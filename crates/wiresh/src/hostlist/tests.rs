//! The host-list module's tests: the forms users write, the errors and
//! where they point, the limits, `nodeset`'s own answers, and properties.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn ex(list: &str) -> Vec<String> {
    expand(list).unwrap_or_else(|e| panic!("{list}: {e}"))
}

fn err(list: &str) -> HostListError {
    match expand(list) {
        Ok(names) => panic!("{list:?} expanded to {} names", names.len()),
        Err(e) => e,
    }
}

/// Expansions and folds as ClusterShell 1.9.1 gives them: the second
/// column is `nodeset -e PATTERN`, the third `nodeset -f` of those names
/// (copied from its output; `nodeset` sorts where wiresh keeps the order
/// written, so expansions are compared as sets).
const NODESET: &[(&str, &str, &str)] = &[
    ("web[01-03]", "web01 web02 web03", "web[01-03]"),
    ("web[1-3,7]", "web1 web2 web3 web7", "web[1-3,7]"),
    ("10.0.0.[1-3]", "10.0.0.1 10.0.0.2 10.0.0.3", "10.0.0.[1-3]"),
    ("host[1-2]:7878", "host1:7878 host2:7878", "host[1-2]:7878"),
    ("a,b , c:7900", "a b c:7900", "a,b,c:7900"),
    ("r[1-2]n[1-2]", "r1n1 r1n2 r2n1 r2n2", "r[1-2]n[1-2]"),
    ("n[08-10]", "n08 n09 n10", "n[08-10]"),
    ("n[9-10]", "n9 n10", "n[9-10]"),
    ("n[01-02,5]", "n5 n01 n02", "n[5,01-02]"),
    ("a,a,a[1],a1", "a a1", "a,a1"),
    ("web[02-32/4]", "web02 web06 web10 web14 web18 web22 web26 web30", "web[02,06,10,14,18,22,26,30]"),
    ("r[1-3]n[01-04]", "r1n01 r1n02 r1n03 r1n04 r2n01 r2n02 r2n03 r2n04 r3n01 r3n02 r3n03 r3n04", "r[1-3]n[01-04]"),
    ("h[1-10/3,2-10/3]", "h1 h2 h4 h5 h7 h8 h10", "h[1-2,4-5,7-8,10]"),
    ("h[01-10/3]", "h01 h04 h07 h10", "h[01,04,07,10]"),
    ("h[5,1-3]", "h1 h2 h3 h5", "h[1-3,5]"),
    ("h[1,1,1]", "h1", "h1"),
    ("h[1,01]", "h1 h01", "h[1,01]"),
    ("h[08-10],h9,h09", "h9 h08 h09 h10", "h[9,08-10]"),
    ("h[1-3]x[2-4]", "h1x2 h1x3 h1x4 h2x2 h2x3 h2x4 h3x2 h3x3 h3x4", "h[1-3]x[2-4]"),
    ("web[1-3]-[4-5]", "web1-4 web1-5 web2-4 web2-5 web3-4 web3-5", "web[1-3]-[4-5]"),
    ("a[1-2]0", "a10 a20", "a[10,20]"),
    ("a0[1-2]", "a01 a02", "a[01-02]"),
    ("a1[1-3/2]", "a11 a13", "a[11,13]"),
    ("a[8-10]1", "a81 a91 a101", "a[81,91,101]"),
    ("h[0-0]", "h0", "h0"),
    ("h[00]", "h00", "h00"),
    ("h[007]", "h007", "h007"),
    ("h[00-03]", "h00 h01 h02 h03", "h[00-03]"),
    ("h[98-101]", "h98 h99 h100 h101", "h[98-101]"),
    ("h[098-101]", "h098 h099 h100 h101", "h[098-101]"),
    ("h[1-5/1]", "h1 h2 h3 h4 h5", "h[1-5]"),
    ("h[1-1/3]", "h1", "h1"),
    ("h[1-3]b,h4b", "h1b h2b h3b h4b", "h[1-4]b"),
    ("a,b!b,c", "a c", "a,c"),
    ("a!a,b", "b", "b"),
    ("h[1-5]!h2&h[1-3]", "h1 h3", "h[1,3]"),
    ("h[1-5]&h[3-7]", "h3 h4 h5", "h[3-5]"),
    ("h[1-5]^h[3-7]", "h1 h2 h6 h7", "h[1-2,6-7]"),
    ("a^b^a", "b", "b"),
    ("node[1-4]!node[2-3]", "node1 node4", "node[1,4]"),
    ("rack[1-2]-node[01-03]", "rack1-node01 rack1-node02 rack1-node03 rack2-node01 rack2-node02 rack2-node03", "rack[1-2]-node[01-03]"),
    ("rack[1-2]-node[01-03]!rack2-node02", "rack1-node01 rack1-node02 rack1-node03 rack2-node01 rack2-node03", "rack1-node[01-03],rack2-node[01,03]"),
    ("x[1-3]y[1-3]z[1-2]", "x1y1z1 x1y1z2 x1y2z1 x1y2z2 x1y3z1 x1y3z2 x2y1z1 x2y1z2 x2y2z1 x2y2z2 x2y3z1 x2y3z2 x3y1z1 x3y1z2 x3y2z1 x3y2z2 x3y3z1 x3y3z2", "x[1-3]y[1-3]z[1-2]"),
    ("db1,web[1-2],db2", "db1 db2 web1 web2", "db[1-2],web[1-2]"),
    ("h[9-11]", "h9 h10 h11", "h[9-11]"),
    ("h[099-101]", "h099 h100 h101", "h[099-101]"),
    ("f[1-3].dc[1-2]", "f1.dc1 f1.dc2 f2.dc1 f2.dc2 f3.dc1 f3.dc2", "f[1-3].dc[1-2]"),
    ("h ", "h", "h"),
    (" h[1-3] , h[3-5] ", "h1 h2 h3 h4 h5", "h[1-5]"),
];

#[test]
fn agrees_with_nodeset() {
    for &(pattern, expanded, folded) in NODESET {
        let names = ex(pattern);
        let ours: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let theirs: BTreeSet<&str> = expanded.split(' ').collect();
        assert_eq!(ours, theirs, "{pattern}");
        assert_eq!(names.len(), ours.len(), "{pattern}: each name once");
        assert_eq!(fold(&names), folded, "fold of {pattern}");
    }
}

#[test]
fn expands_in_the_order_written() {
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
    assert_eq!(ex("[::1]"), ["[::1]"]);
    assert_eq!(ex("[fe80::1:2]:7878,::1"), ["[fe80::1:2]:7878", "::1"]);
    assert_eq!(ex("a,a,a[1],a1"), ["a", "a1"], "duplicates count once");
    assert_eq!(ex("b,a"), ["b", "a"]);
    assert_eq!(ex("h[5,1-6]"), ["h5", "h1", "h2", "h3", "h4", "h6"]);
    assert_eq!(
        ex("web[02-32/4]"),
        ["web02", "web06", "web10", "web14", "web18", "web22", "web26", "web30"]
    );
    assert_eq!(
        ex("a1[8-10]"),
        ["a18", "a19", "a110"],
        "digits beside a bracket are text"
    );
    assert_eq!(ex("a0[8-10]"), ["a08", "a09", "a010"]);
    assert_eq!(ex("a[1-3/2]0"), ["a10", "a30"]);
    assert_eq!(ex("h[1-4]!h2,h9!h3"), ["h1", "h4", "h9"]);
    assert_eq!(ex("h[1-5]^h[4-7]"), ["h1", "h2", "h3", "h6", "h7"]);
    assert_eq!(ex("h[5-9]&h[1-6]"), ["h5", "h6"]);
    assert_eq!(ex("\th1 ,\n h2 "), ["h1", "h2"]);
}

/// The error's kind and the column it points at.
fn refused(list: &str) -> (ErrorKind, usize) {
    let e = err(list);
    (e.kind().clone(), e.column())
}

fn unexpected(list: &str) -> (char, usize) {
    match refused(list) {
        (ErrorKind::Unexpected { found, .. }, column) => (found, column),
        other => panic!("{list:?}: {other:?}"),
    }
}

#[test]
fn brackets_hold_range_lists_only() {
    assert_eq!(unexpected("web[1-3, 7]"), (' ', 9));
    assert_eq!(unexpected("h[a-c]"), ('a', 3));
    assert_eq!(unexpected("h[1-2-3]"), ('-', 6));
    assert_eq!(unexpected("h[-1]"), ('-', 3));
    assert_eq!(unexpected("h[1-]"), (']', 5));
    assert_eq!(unexpected("h[1,,2]"), (',', 5));
    assert_eq!(unexpected("h[1-3/]"), (']', 7));
    assert_eq!(unexpected("h[[1-2]]"), ('[', 3));
    assert_eq!(unexpected("x,[1:2]"), ('1', 4), "neither IPv6 nor ranges");
    assert_eq!(unexpected("x,h[::1]"), (':', 5), "IPv6 only at the start");
    assert_eq!(unexpected("[::1]x"), ('x', 6));
    assert_eq!(unexpected("[::zz]"), ('z', 4));
    assert!(matches!(refused("h[]"), (ErrorKind::Missing(_), 2)));
    let (kind, column) = refused("web[5-3]");
    assert_eq!(
        kind,
        ErrorKind::BadRange("the end of a range is before its start")
    );
    assert_eq!(column, 5);
    assert!(matches!(refused("h[5/2]"), (ErrorKind::BadRange(_), 3)));
    assert!(matches!(refused("h[1-3/0]"), (ErrorKind::BadRange(_), 3)));
    assert!(matches!(refused("h[01-100]"), (ErrorKind::BadRange(_), 3)));
    assert!(matches!(refused("h[1-010]"), (ErrorKind::BadRange(_), 3)));
    assert!(matches!(
        refused("w[1-99999999999999999999]"),
        (ErrorKind::BadRange(_), 5)
    ));
}

#[test]
fn brackets_are_balanced() {
    assert_eq!(refused("h[1-3]]"), (ErrorKind::StrayClose, 7));
    assert_eq!(refused("h1]"), (ErrorKind::StrayClose, 3));
    assert_eq!(refused("a,]"), (ErrorKind::StrayClose, 3));
    assert_eq!(refused("web[01-"), (ErrorKind::Unclosed, 4));
    assert_eq!(refused("web[1-3"), (ErrorKind::Unclosed, 4));
    assert_eq!(refused("web[1"), (ErrorKind::Unclosed, 4));
    assert_eq!(refused("[::1"), (ErrorKind::Unclosed, 1));
    assert_eq!(unexpected("h[1-3][4-5]"), ('[', 7));
    assert_eq!(unexpected("h[1-3]0[4-5]"), ('[', 8));
}

#[test]
fn names_and_operators_are_checked() {
    assert!(matches!(refused(""), (ErrorKind::Missing(_), 1)));
    assert!(matches!(refused("   "), (ErrorKind::Missing(_), 4)));
    assert!(matches!(refused("a,,b"), (ErrorKind::Missing(_), 3)));
    assert!(matches!(refused("a,"), (ErrorKind::Missing(_), 3)));
    assert!(matches!(refused("!a"), (ErrorKind::Missing(_), 1)));
    assert!(matches!(refused("a!"), (ErrorKind::Missing(_), 3)));
    assert!(matches!(refused("@"), (ErrorKind::Missing(_), 1)));
    assert_eq!(unexpected("h1 h2"), (' ', 3));
    assert_eq!(unexpected("root@web1"), ('@', 5));
    assert_eq!(unexpected("web1;reboot"), (';', 5));
    assert_eq!(unexpected("wéb1"), ('é', 2));
    assert_eq!(unexpected("h*"), ('*', 2));
    assert_eq!(unexpected("@web[1-2]"), ('[', 5));
    assert!(matches!(
        refused(&"a".repeat(MAX_NAME_LEN + 1)),
        (ErrorKind::TooLong(_), 1)
    ));
    assert!(matches!(
        refused(&format!("a{}[1-9]", "b".repeat(MAX_NAME_LEN - 1))),
        (ErrorKind::TooLong(_), 1)
    ));
    assert!(matches!(
        refused(&format!("a[{}1]", "0".repeat(1000))),
        (ErrorKind::TooLong(1002), 1)
    ));
    assert_eq!(ex(&"a".repeat(MAX_NAME_LEN)).len(), 1);
}

#[test]
fn messages_name_the_character_and_point_at_it() {
    let text = err("web[1-3, 7]").to_string();
    assert_eq!(
        text,
        "unexpected ' ' at column 9: a range list holds numbers and ranges, such as [1-3,7], [01-10] or [02-32/4]\n    web[1-3, 7]\n            ^"
    );
    let text = err("h[1-3]]").to_string();
    assert!(
        text.starts_with("the `]` at column 7 closes no `[`\n"),
        "{text}"
    );
    assert!(text.ends_with("\n    h[1-3]]\n          ^"), "{text}");
    let text = err("web[5-3]").to_string();
    assert!(
        text.contains("the end of a range is before its start"),
        "{text}"
    );
    assert!(text.ends_with("    web[5-3]\n        ^^^"), "{text}");
    // Long lists are cut around the place; odd characters show as `?`.
    let long = format!("{}w\u{7}b", "a,".repeat(100));
    let text = err(&long).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("unexpected '\\u{7}' at column 202"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("    ...") && lines[1].ends_with(",a,w?b"),
        "{text}"
    );
    assert_eq!(lines[2].find('^'), lines[1].find('?'), "{text}");
}

#[test]
fn hostile_sizes_are_refused_before_anything_is_made() {
    for list in [
        "h[0-18446744073709551615,0-0]",
        "h[0-16777215,0-18446744073692774404]",
        "a[1-1000]b[1-1000]c[1-1000]",
        "h[1-100001]",
        "h[1-60000,60001-120000]",
        "h[0-18446744073709551615/2]",
        "h[1-10]&h[1-200000]",
    ] {
        let e = err(list);
        assert!(matches!(e.kind(), ErrorKind::TooMany(_)), "{list}: {e}");
        assert!(e.to_string().contains("100000"), "{list}: {e}");
    }
    assert_eq!(
        err("x,h[0-18446744073709551615,0-0]").column(),
        4,
        "points at the bracket"
    );
    let e = err("h[1-60000],g[1-60000]");
    assert_eq!(e.column(), 12, "the part that goes past the cap: {e}");
    assert_eq!(ex(&["h[1-99999]"; 3].join(",")).len(), 99_999);
    let e = err(&["h[1-99999]"; 4].join(","));
    assert!(e.to_string().contains("counting repeats"), "{e}");
    let e = err(&format!("h[{}]", ["1-99999/2"; 7].join(",")));
    assert!(e.to_string().contains("counting repeats"), "{e}");
}

#[test]
fn the_cap_counts_distinct_hosts() {
    assert_eq!(ex("h[1-60000],h[1-60000]").len(), 60_000);
    assert_eq!(ex("h[1-60000,1-60000]").len(), 60_000);
    assert_eq!(ex("h[1-100000]").len(), MAX_HOSTS);
    assert_eq!(
        refused("h[1-100000],h1!h[1-100000]"),
        (ErrorKind::NoHosts, 1)
    );
    assert_eq!(ex("h[1-100000]!h5,g1").len(), MAX_HOSTS);
    assert_eq!(
        ex("h[0-18446744073709551615/18446744073709551615]"),
        ["h0", "h18446744073709551615"]
    );
}

#[test]
fn groups_come_from_the_resolver() {
    let groups = |name: &str| match name {
        "web" => Ok(vec!["web1".to_string(), "web2".into(), "web1".into()]),
        "db" => Ok(vec!["db1".to_string()]),
        other => Err(format!("no group {other}")),
    };
    let with = |list: &str| expand_with(list, &groups);
    assert_eq!(
        with("@web,db[1-2]").unwrap(),
        ["web1", "web2", "db1", "db2"]
    );
    assert_eq!(with("@web!web1, @db").unwrap(), ["web2", "db1"]);
    assert_eq!(with("web[1-3]!@web").unwrap(), ["web3"]);
    assert_eq!(with("@web^web[2-3]").unwrap(), ["web1", "web3"]);
    assert_eq!(with("@web&db1").unwrap_err().kind(), &ErrorKind::NoHosts);
    let e = with("a,@nope").unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Group("no group nope".into()));
    assert_eq!(e.column(), 3);
    let e = expand("@web").unwrap_err();
    assert!(
        e.to_string()
            .contains("groups come from the client settings"),
        "{e}"
    );
    let huge = |_: &str| Ok((0..MAX_HOSTS + 1).map(|i| format!("h{i}")).collect());
    let e = expand_with("@all", &huge).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooMany(_)), "{e}");
}

#[test]
fn folds_like_nodeset() {
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
    assert_eq!(fold(&ex("r[1-3]n[01-04]")), "r[1-3]n[01-04]");
    assert_eq!(
        fold(&ex("r[1-3]n[01-04]!r2n03")),
        "r[1,3]n[01-04],r2n[01-02,04]"
    );
    assert_eq!(fold(&["h9", "h09", "h10", "h08"]), "h[9,08-10]");
    assert_eq!(fold(&ex("10.0.[0-1].[1-9]:7878")), "10.0.[0-1].[1-9]:7878");
    let many = "a1-b2-c3-d4-e5-f6-g7-h[1-400]i[1-3]j8";
    assert_eq!(fold(&ex(many)), many);
    assert_eq!(
        fold(&["h99999999999999999999", "h1"]),
        "h1,h99999999999999999999"
    );
}

#[test]
fn natural_order() {
    let mut v = vec!["web10", "web9", "db1", "web09"];
    v.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(v, ["db1", "web9", "web09", "web10"]);
}

/// Host names as expansions make them: letters, digits, dots, dashes, a
/// port.
fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "[a-c]{0,2}[0-9]{0,3}(\\.[a-b0-9]{1,2})?(-[0-9]{1,2})?(:[0-9]{1,3})?",
    )
    .unwrap()
    .prop_filter("names are not empty", |n| !n.is_empty())
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// How many hosts or patterns a folded list has (commas outside brackets).
fn pieces(folded: &str) -> usize {
    let mut depth = 0;
    1 + folded
        .chars()
        .filter(|&c| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .count()
}

/// Maximal runs of consecutive integers in a set.
fn count_runs(numbers: &BTreeSet<u64>) -> usize {
    numbers
        .iter()
        .filter(|&&n| n == 0 || !numbers.contains(&(n - 1)))
        .count()
}

/// Host lists as users write them, valid or nearly so.
fn list() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "(@g|[a-c]{0,2}[0-9]{0,2}(\\[[0-9]{1,2}(-[0-9]{1,3}(/[0-9])?)?(,[0-9]{1,2}(-[0-9]{1,3})?){0,2}\\])?[a-c.:-]{0,2}){1,3}([,!&^ ]{1,2}[a-c]{0,2}[0-9]{0,2}(\\[[0-9]{1,2}(-[0-9]{1,3})?\\])?){0,3}",
    )
    .unwrap()
}

proptest! {
    #[test]
    fn expand_undoes_fold(names in proptest::collection::vec(name(), 0..40)) {
        let folded = fold(&names);
        let back = if names.is_empty() { vec![] } else { expand(&folded).unwrap() };
        prop_assert_eq!(set(&back), set(&names), "folded: {}", folded);
        prop_assert_eq!(back.len(), set(&back).len(), "no duplicates");
    }

    #[test]
    fn fold_undoes_expand(list in list()) {
        let groups = |_: &str| Ok(vec!["g1".to_string(), "g03".into()]);
        if let Ok(names) = expand_with(&list, &groups) {
            let folded = fold(&names);
            prop_assert_eq!(set(&expand(&folded).unwrap()), set(&names), "folded: {}", folded);
            prop_assert_eq!(fold(&expand(&folded).unwrap()), folded.clone(), "a fold is a fixed point");
        }
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
            .map(|&n| format!("{prefix}{n:0width$}{suffix}"))
            .collect();
        let folded = fold(&names);
        // One piece, with one bracket item per maximal run of consecutive numbers.
        prop_assert_eq!(pieces(&folded), 1, "one piece: {}", folded);
        let items = match (folded.find('['), folded.find(']')) {
            (Some(a), Some(b)) => folded[a + 1..b].split(',').count(),
            _ => 1,
        };
        prop_assert_eq!(items, count_runs(&numbers), "folded: {}", folded);
        prop_assert_eq!(set(&expand(&folded).unwrap()), set(&names));
    }

    #[test]
    fn a_product_folds_to_one_piece(
        a in proptest::collection::btree_set(0u64..20, 1..6),
        b in proptest::collection::btree_set(0u64..20, 1..6),
        c in proptest::collection::btree_set(0u64..3, 1..3),
    ) {
        let mut names = Vec::new();
        for x in &a { for y in &b { for z in &c { names.push(format!("r{x}n{y:02}-{z}")); } } }
        let folded = fold(&names);
        prop_assert_eq!(pieces(&folded), 1, "one piece: {}", folded);
        prop_assert_eq!(set(&expand(&folded).unwrap()), set(&names));
    }

    #[test]
    fn results_are_bounded_and_distinct(list in list()) {
        if let Ok(names) = expand(&list) {
            prop_assert!(names.len() <= MAX_HOSTS);
            prop_assert_eq!(names.len(), set(&names).len());
            prop_assert!(names.iter().all(|n| !n.is_empty() && n.len() <= MAX_NAME_LEN));
        }
    }

    #[test]
    fn any_text_gives_names_or_an_error_that_points_inside(list in "\\PC{0,40}|[\\[\\]0-9a-c,!&^@:/ -]{0,40}") {
        match expand(&list) {
            Ok(names) => prop_assert!(!names.is_empty()),
            Err(e) => {
                prop_assert!(e.column() <= list.chars().count() + 1, "{}", e);
                let _ = e.to_string();
            }
        }
    }
}
