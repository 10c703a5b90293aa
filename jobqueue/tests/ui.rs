//! Compile-time behaviour of `#[job]`, on the facade path `jobqueue::job`.
//! Each file under `ui/fail` is one misuse; its `.stderr` is the reviewed
//! error. Bless changes with `scripts/bless-ui.sh` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
