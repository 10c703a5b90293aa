//! scripts/test on a machine that lacks what it needs: it stops before
//! building anything, with an exit status of 1, and names each missing tool
//! with the command that installs it on that system and the advice to run
//! scripts/test again.
//!
//! Each test runs the script with a PATH of its own: bash, dirname and env, plus
//! stand-ins for `id`, `apt-get`, `dnf`, `sudo` and `uname` that make the
//! script see a Debian user, a Debian root, Fedora or macOS. Nothing else is
//! on it, cargo included, so the script finds every tool missing and can
//! neither install anything nor start a build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A program of the real PATH, to link into the fake one.
fn real(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// A directory to serve as the whole PATH: bash, dirname and env, and each of
/// `fakes`, a `(name, shell script body)` stand-in.
fn fake_path(fakes: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for program in ["bash", "dirname", "env"] {
        std::os::unix::fs::symlink(real(program), dir.path().join(program)).expect("symlink");
    }
    for (name, body) in fakes {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write a stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// What one run printed, and how it ended.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs scripts/test with `args`, `path` as the whole PATH and nothing else
/// in its environment but a target directory of its own (so a Valkey
/// fetched by an earlier real run is not found) and browser paths that
/// exist nowhere (this machine may have Chromium in /usr/bin).
fn run_script(path: &Path, args: &[&str]) -> Run {
    let target = tempfile::tempdir().expect("a temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test");
    let out = Command::new(script)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target.path())
        .env("CHROMIUM", "/nonexistent/chromium")
        .env("CHROMEDRIVER", "/nonexistent/chromedriver")
        .output()
        .expect("run scripts/test");
    let run = Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.status, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains("==> cargo") && !run.stdout.contains("==> tests"),
        "it went on to build: {}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("Install what is missing, then run scripts/test again."),
        "{}",
        run.stderr
    );
    run
}

/// Asserts that `stderr` says `tool` is missing and gives `install`.
fn says(stderr: &str, tool: &str, install: &str) {
    assert!(
        stderr.contains(&format!("{tool} is missing")),
        "no word of {tool}: {stderr}"
    );
    assert!(
        stderr.contains(&format!("Install it: {install}")),
        "no `{install}` for {tool}: {stderr}"
    );
}

/// The browser programs as the message names them.
const BROWSER: &str = "Chromium or ChromeDriver (/nonexistent/chromium, /nonexistent/chromedriver)";

/// `id` of a user who is not root.
const USER: (&str, &str) = ("id", "echo 1000");
/// A command that fails, writing its command line to `calls` beside it.
fn failing(name: &'static str) -> (&'static str, &'static str) {
    (name, "echo \"${0##*/} $*\" >> \"${0%/*}/calls\"; exit 1")
}

#[test]
fn a_debian_user_without_sudo_gets_the_apt_get_commands_and_nothing_is_installed() {
    let path = fake_path(&[USER, failing("apt-get")]);
    let run = run_script(path.path(), &[]);
    let e = &run.stderr;
    says(e, "redis-server", "sudo apt-get install redis-server");
    says(e, "redis-cli", "sudo apt-get install redis-tools");
    says(e, BROWSER, "sudo apt-get install chromium chromium-driver");
    says(
        e,
        "pip (python3 -m pip)",
        "sudo apt-get install python3-pip",
    );
    says(
        e,
        "cargo",
        "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
    );
    assert!(
        !path.path().join("calls").exists(),
        "apt-get ran without root or sudo"
    );
}

#[test]
fn as_root_on_debian_it_installs_with_apt_get_and_says_what_failed() {
    // Root: apt-get runs (an update, then the install); this one fails.
    let path = fake_path(&[("id", "echo 0"), failing("apt-get")]);
    let run = run_script(path.path(), &[]);
    let calls = std::fs::read_to_string(path.path().join("calls")).expect("apt-get ran");
    assert!(calls.contains("apt-get update -qq"), "{calls}");
    assert!(run.stdout.contains("==> installing redis-server (apt-get)"));
    // Root needs no sudo in the commands it prints.
    says(&run.stderr, "redis-server", "apt-get install redis-server");
    assert!(!run.stderr.contains("sudo"), "{}", run.stderr);
}

#[test]
fn with_passwordless_sudo_a_debian_user_installs_through_sudo() {
    // `sudo -n true` succeeds; any other sudo is recorded and fails.
    let path = fake_path(&[
        USER,
        failing("apt-get"),
        (
            "sudo",
            "[ \"$*\" = '-n true' ] && exit 0; echo \"sudo $*\" >> \"${0%/*}/calls\"; exit 1",
        ),
    ]);
    let run = run_script(path.path(), &[]);
    let calls = std::fs::read_to_string(path.path().join("calls")).expect("sudo ran");
    assert!(
        calls.contains("sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq"),
        "{calls}"
    );
    assert!(
        !calls.lines().any(|l| l.starts_with("apt-get")),
        "apt-get ran without sudo: {calls}"
    );
    says(
        &run.stderr,
        "redis-server",
        "sudo apt-get install redis-server",
    );
}

#[test]
fn on_fedora_it_gives_the_dnf_commands() {
    let path = fake_path(&[USER, failing("dnf")]);
    let run = run_script(path.path(), &[]);
    let e = &run.stderr;
    says(e, "redis-server", "sudo dnf install redis");
    says(e, "redis-cli", "sudo dnf install redis");
    says(
        e,
        BROWSER,
        "sudo dnf install chromium chromedriver, then run CHROMIUM=/usr/bin/chromium-browser scripts/test",
    );
    says(e, "pip (python3 -m pip)", "sudo dnf install python3-pip");
    assert!(!path.path().join("calls").exists(), "dnf ran");
}

#[test]
fn on_macos_it_gives_the_brew_commands() {
    let path = fake_path(&[USER, ("uname", "echo Darwin")]);
    let run = run_script(path.path(), &[]);
    let e = &run.stderr;
    says(e, "redis-server", "brew install redis");
    says(e, "redis-cli", "brew install redis");
    says(
        e,
        BROWSER,
        "brew install --cask google-chrome chromedriver, then run CHROMIUM=",
    );
    says(e, "pip (python3 -m pip)", "brew install python");
}

#[test]
fn a_filtered_run_needs_no_pip_since_it_skips_the_valkey_run() {
    let path = fake_path(&[USER, failing("apt-get")]);
    let run = run_script(path.path(), &["--", "queue_core"]);
    says(
        &run.stderr,
        "redis-server",
        "sudo apt-get install redis-server",
    );
    assert!(!run.stderr.contains("pip"), "{}", run.stderr);
}
