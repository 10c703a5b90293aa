//! The Lua scripts, one file per operation under `src/lua/`.
//!
//! Every script is `lua/common.lua` (shared helpers) followed by the
//! operation's own file, whose header lists its `KEYS`, `ARGV` and return
//! values. Scripts are sent with `EVALSHA`; redis-rs loads them again on
//! `NOSCRIPT`, which is what happens after a Redis restart.

use std::sync::LazyLock;

use redis::Script;

macro_rules! lua {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $name, ".lua"))
        ))
    };
}

/// The operation scripts, built once.
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) complete: Script,
    pub(crate) fail: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) reclaim: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 7] {
        [
            &self.enqueue,
            &self.claim,
            &self.complete,
            &self.fail,
            &self.release,
            &self.extend,
            &self.reclaim,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: lua!("enqueue"),
    claim: lua!("claim"),
    complete: lua!("complete"),
    fail: lua!("fail"),
    release: lua!("release"),
    extend: lua!("extend"),
    reclaim: lua!("reclaim"),
});

#[cfg(test)]
mod tests {
    /// Each operation's source, without the shared prelude.
    const OPERATIONS: [(&str, &str); 7] = [
        ("enqueue", include_str!("lua/enqueue.lua")),
        ("claim", include_str!("lua/claim.lua")),
        ("complete", include_str!("lua/complete.lua")),
        ("fail", include_str!("lua/fail.lua")),
        ("release", include_str!("lua/release.lua")),
        ("extend", include_str!("lua/extend.lua")),
        ("reclaim", include_str!("lua/reclaim.lua")),
    ];

    #[test]
    fn every_script_documents_its_contract() {
        for (name, src) in OPERATIONS {
            assert!(src.starts_with(&format!("-- {name}.lua: ")), "{name}");
            for part in ["-- KEYS[1]", "-- ARGV[1]", "-- Returns:"] {
                assert!(src.contains(part), "{name}.lua lacks {part}");
            }
        }
    }

    /// Reference bug 8.12: keys built inside a script are invisible to
    /// Redis Cluster routing. The only keys a script may build are job
    /// hashes from the documented prefix, and the header must say so.
    #[test]
    fn scripts_build_no_key_except_the_documented_job_hashes() {
        let prelude = include_str!("lua/common.lua");
        for (name, src) in OPERATIONS.iter().chain([("common", prelude)].iter()) {
            let code: String = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in code.match_indices("..") {
                let before = &code[..i];
                let line = before.rsplit('\n').next().unwrap_or_default();
                // Concatenation is fine for strings that are not key names:
                // events, reasons, the unstamped marker.
                let builds_key = line.contains("Q.prefix") && !line.contains("publish");
                if builds_key {
                    assert!(
                        src.contains("documented exception"),
                        "{name}.lua builds a key without documenting why"
                    );
                }
                assert!(
                    !line.contains("KEYS[") || line.contains("'"),
                    "{name}.lua appends to a key name: {line}"
                );
            }
        }
    }
}
