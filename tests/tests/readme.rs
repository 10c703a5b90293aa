//! README.md against the code it describes. Its Rust blocks are compiled
//! as doctests of the jobqueue crate (`lib.rs` includes the README); these
//! tests hold the rest: the complete program is the quickstart example
//! that runs in examples/tests/quickstart.rs, the install section names the
//! features and versions the workspace has, and the `#[job]` table names
//! every key the macro takes.

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's fenced blocks: (info string, body).
fn blocks(readme: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in readme.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), Vec::new())),
            (Some(_), Some(_)) => {
                let (info, body) = open.take().unwrap();
                found.push((info, body.join("\n")));
            }
            (Some((_, body)), None) => body.push(line),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a block is not closed");
    found
}

/// The section of `readme` under `heading`, up to the next heading of the
/// same or a higher level.
fn section<'a>(readme: &'a str, heading: &str) -> &'a str {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading}"));
    let level = heading.split(' ').next().unwrap();
    let rest = &readme[start + heading.len() + 2..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| {
            let hashes = rest[i..].split(' ').next().unwrap_or("");
            !hashes.is_empty() && hashes.chars().all(|c| c == '#') && hashes.len() <= level.len()
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The first column of a markdown table, where it is in backticks:
/// `` | `name` | ... `` gives `name` (and both of `` `a`, `b` ``).
fn table_keys(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" |").next())
        .flat_map(|cell| {
            cell.split(',')
                .filter_map(|part| part.trim().strip_prefix('`')?.split('`').next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_complete_program_in_the_readme_is_the_quickstart_example() {
    let example = read("examples/quickstart.rs");
    // The example's file starts with its `//!` header, which a doctest
    // cannot hold; the README shows the code after it.
    let code = example
        .lines()
        .skip_while(|l| l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let readme = read("README.md");
    let program = section(&readme, "### One complete program");
    let shown = blocks(program);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].0, "rust,no_run");
    assert_eq!(
        shown[0].1.trim_end(),
        code.trim_end(),
        "README's complete program differs from examples/quickstart.rs"
    );
}

#[test]
fn every_rust_block_in_the_readme_is_compiled() {
    let readme = read("README.md");
    let rust: Vec<_> = blocks(&readme)
        .into_iter()
        .filter(|(info, _)| info.split(',').next() == Some("rust"))
        .collect();
    assert!(rust.len() >= 15, "{} Rust blocks", rust.len());
    for (info, body) in &rust {
        assert!(
            !info.contains("ignore") && !info.contains("compile_fail"),
            "a README block is not compiled ({info}):\n{body}"
        );
    }
    // Nothing that looks like Rust hides under another info string.
    for (info, body) in blocks(&readme) {
        if !info.starts_with("rust") {
            assert!(
                !body.contains("async fn ") && !body.contains(".await"),
                "a Rust-looking block is marked `{info}`:\n{body}"
            );
        }
    }
}

#[test]
fn the_install_section_names_every_feature_and_the_workspace_versions() {
    let readme = read("README.md");
    let install = section(&readme, "## Install");
    let manifest = read("jobqueue/Cargo.toml");
    let features: BTreeSet<String> = manifest
        .split_once("\n[features]\n")
        .expect("jobqueue has features")
        .1
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = ").map(|(name, _)| name.trim().to_owned()))
        .filter(|name| !name.starts_with('#'))
        // `default` is a list, and `test-hooks` is for this workspace only.
        .filter(|name| name != "default" && name != "test-hooks")
        .collect();
    assert_eq!(table_keys(install), features, "the features table");

    // The dependency lines use the versions the workspace builds with.
    let workspace = read("Cargo.toml");
    let toml = blocks(install)
        .into_iter()
        .find(|(info, _)| info == "toml")
        .expect("a Cargo.toml block")
        .1;
    for (dep, needs) in [
        ("tokio", &["macros", "rt-multi-thread"][..]),
        ("serde", &["derive"][..]),
        ("tracing-subscriber", &[][..]),
        ("axum", &[][..]),
    ] {
        let line = toml
            .lines()
            .find(|l| l.starts_with(&format!("{dep} = ")))
            .unwrap_or_else(|| panic!("no {dep} in the install block"));
        let shown = version_in(line);
        let used = workspace
            .lines()
            .find(|l| l.starts_with(&format!("{dep} = ")))
            .map(version_in)
            .unwrap_or_else(|| panic!("the workspace has no {dep}"));
        assert!(
            used == shown || used.starts_with(&format!("{shown}.")),
            "{dep}: README says {shown}, the workspace uses {used}"
        );
        for feature in needs {
            assert!(line.contains(&format!("\"{feature}\"")), "{line}");
        }
    }
    let rust_version = workspace
        .lines()
        .find(|l| l.starts_with("rust-version = "))
        .map(|l| l.split('"').nth(1).unwrap().to_owned())
        .unwrap();
    assert!(
        install.contains(&format!("Rust {rust_version} or later")),
        "README should say Rust {rust_version}"
    );
}

/// The version in a dependency line: `x = "1"` or `x = { version = "1", .. }`.
fn version_in(line: &str) -> String {
    let value = line.split_once(" = ").unwrap().1;
    let value = value
        .split_once("version = ")
        .map_or(value, |(_, rest)| rest);
    value.split('"').nth(1).unwrap_or("").to_owned()
}

#[test]
fn the_job_table_names_every_key_the_macro_takes() {
    let readme = read("README.md");
    let table = table_keys(section(&readme, "### `#[job]` at a glance"));
    // The macro's keys: its list of accepted keys, `KEYS` in args.rs.
    let args = read("jobqueue-macros/src/args.rs");
    let list = args
        .split_once("const KEYS: &[&str] = &[")
        .and_then(|(_, rest)| rest.split_once("];"))
        .expect("args.rs lists its keys in KEYS")
        .0;
    let keys: BTreeSet<String> = list
        .split(',')
        .map(|k| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(keys.len() >= 15, "{keys:?}");
    let table: BTreeSet<String> = table.into_iter().filter(|k| k != "key").collect();
    assert_eq!(table, keys, "README's #[job] table against args.rs");
}
