//! The reliability statement names a test for every promise: each named
//! test must exist, so the statement cannot drift from the suite.

use std::path::Path;

#[test]
fn every_test_the_reliability_statement_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("jobqueue/src/docs/reliability.md")).unwrap();
    let mut sources = String::new();
    for dir in ["tests/tests", "examples/tests", "jobqueue-cli/tests"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            sources.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    let cited: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.matches('_').count() >= 3
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect();
    assert!(cited.len() >= 25, "the statement cites tests: {cited:?}");
    for name in cited {
        assert!(
            sources.contains(&format!("fn {name}(")),
            "the statement cites `{name}`, which is not a test"
        );
    }
}
