//! What the example tests share.

use std::process::{Command, Stdio};

/// The example's executable, built by Cargo on demand: a test target gets
/// the path of its package's binaries (`CARGO_BIN_EXE_*`) but not of its
/// examples. Run from the same Cargo as the test, with the same features
/// and without the variables Cargo sets for a test process (build scripts
/// such as ring's track `CARGO_MANIFEST_DIR`, and would rebuild), this build
/// finds everything fresh but the example itself.
pub(crate) fn example_executable(name: &str) -> String {
    let mut cargo = Command::new(env!("CARGO"));
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_"]
            .iter()
            .any(|prefix| var.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&var.as_ref());
        if set_for_tests {
            cargo.env_remove(var.as_ref());
        }
    }
    let output = cargo
        .args([
            "build",
            "--package",
            "jobqueue-examples",
            "--example",
            name,
            "--all-features",
            "--message-format",
            "json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    let messages: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    // With `--message-format json` the compiler's errors go to stdout as
    // JSON, not to the inherited stderr: a failed build shows them here,
    // or the test would say only that something did not compile.
    assert!(
        output.status.success(),
        "the example {name} builds; the compiler said:\n{}",
        messages
            .iter()
            .filter(|m| m["reason"] == "compiler-message")
            .filter_map(|m| m["message"]["rendered"].as_str())
            .collect::<String>()
    );
    messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(str::to_owned))
        .expect("cargo names the example's executable")
}
