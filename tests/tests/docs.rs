//! The reliability statement names a test for every promise: each named
//! test must exist, as a test, in the file the statement names beside it,
//! so the statement cannot drift from the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The directories whose files hold the tests the statement may cite.
const TEST_DIRS: [&str; 3] = ["tests/tests", "examples/tests", "jobqueue-cli/tests"];

/// A test name the statement cites, and the file it names for it, if any.
#[derive(Debug)]
struct Citation<'a> {
    test: &'a str,
    file: Option<&'a str>,
}

/// Every `name` in backticks that looks like a test (snake case, at least
/// three underscores), each with the file cited right after it: `` `name`
/// in `file.rs` `` or `` `name` (`file.rs`) ``. A file applies only to the
/// name just before it.
fn citations(doc: &str) -> Vec<Citation<'_>> {
    // The text between backticks (odd pieces) and around them (even ones).
    let pieces: Vec<&str> = doc.split('`').collect();
    let is_test = |s: &str| {
        s.matches('_').count() >= 3
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let mut found = Vec::new();
    for i in (1..pieces.len()).step_by(2) {
        if !is_test(pieces[i]) {
            continue;
        }
        let between = pieces.get(i + 1).map_or("", |s| s.trim());
        let file = pieces
            .get(i + 2)
            .filter(|next| next.ends_with(".rs") && (between == "in" || between == "("))
            .copied();
        found.push(Citation {
            test: pieces[i],
            file,
        });
    }
    found
}

/// Whether `source` defines `name` as a test: a fn under a `#[...test...]`
/// attribute, or a body listed in `on_each_topology!`.
fn defines_test(source: &str, name: &str) -> bool {
    let Some(at) = source.find(&format!("fn {name}(")) else {
        return false;
    };
    // The lines above the fn's own: its attributes and doc comment.
    let line_start = source[..at].rfind('\n').unwrap_or(0);
    let attributed = source[..line_start]
        .lines()
        .rev()
        .take_while(|l| l.trim_start().starts_with("#[") || l.trim_start().starts_with("///"))
        .any(|l| l.trim_start().starts_with("#[") && l.contains("test"));
    let listed = source
        .split_once("on_each_topology!")
        .is_some_and(|(_, list)| {
            list.lines().any(|l| {
                l.trim_start().starts_with("#[")
                    && l.trim_end()
                        .trim_end_matches(',')
                        .ends_with(&format!("] {name}"))
            })
        });
    attributed || listed
}

#[test]
fn every_test_the_reliability_statement_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("jobqueue/src/docs/reliability.md")).unwrap();
    // Every test file, by file name (no two share one).
    let mut files: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    for dir in TEST_DIRS {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let source = std::fs::read_to_string(&path).unwrap();
                let clash = files.insert(name.clone(), (path, source));
                assert!(clash.is_none(), "two test files are named {name}");
            }
        }
    }
    let cited = citations(&doc);
    assert!(cited.len() >= 25, "the statement cites tests: {cited:?}");
    assert!(
        cited.iter().filter(|c| c.file.is_some()).count() >= 15,
        "the statement names the files of its tests: {cited:?}"
    );
    for Citation { test, file } in cited {
        match file {
            Some(file) => {
                let (path, source) = files.get(file).unwrap_or_else(|| {
                    panic!("`{test}` is cited in `{file}`, which is no test file")
                });
                assert!(
                    defines_test(source, test),
                    "the statement cites `{test}` in `{file}`, which has no such test ({})",
                    path.display()
                );
            }
            None => assert!(
                files.values().any(|(_, source)| defines_test(source, test)),
                "the statement cites `{test}`, which is not a test"
            ),
        }
    }
}

/// The checks above fail where they should: a test cited in the wrong file,
/// a helper cited as a test, a name that does not exist.
#[test]
fn the_citation_check_tells_a_wrong_file_from_the_right_one() {
    let doc = "runs (`a_b_c_d` in `one.rs`), also `e_f_g_h` (`two.rs`), `i_j_k_l`\n   \
               and `m_n_o_p` in\n   `three.rs`; `not a test` in `x.rs`.";
    let found: Vec<(&str, Option<&str>)> = citations(doc)
        .into_iter()
        .map(|c| (c.test, c.file))
        .collect();
    assert_eq!(
        found,
        [
            ("a_b_c_d", Some("one.rs")),
            ("e_f_g_h", Some("two.rs")),
            ("i_j_k_l", None),
            ("m_n_o_p", Some("three.rs")),
        ]
    );
    let source = "#[tokio::test]\nasync fn a_b_c_d() {}\n\n/// Helper.\nfn helper_of_the_suite(x: u8) {}\n\
                  async fn e_f_g_h(redis: TestRedis) {}\non_each_topology! {\n    #[tokio::test] e_f_g_h,\n}\n";
    assert!(defines_test(source, "a_b_c_d"));
    assert!(defines_test(source, "e_f_g_h"));
    assert!(!defines_test(source, "helper_of_the_suite"));
    assert!(!defines_test(source, "i_j_k_l"));
}
