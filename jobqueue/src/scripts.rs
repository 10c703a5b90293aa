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
    pub(crate) settle: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) reclaim: Script,
    pub(crate) promote: Script,
    pub(crate) retry: Script,
    pub(crate) delete: Script,
    pub(crate) purge: Script,
    pub(crate) stats: Script,
    pub(crate) read: Script,
    pub(crate) cancel: Script,
    pub(crate) schedule: Script,
    pub(crate) tick: Script,
    pub(crate) limits: Script,
    pub(crate) batch_open: Script,
    pub(crate) batch_record: Script,
    pub(crate) relayed: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 19] {
        [
            &self.enqueue,
            &self.claim,
            &self.settle,
            &self.release,
            &self.extend,
            &self.reclaim,
            &self.promote,
            &self.retry,
            &self.delete,
            &self.purge,
            &self.stats,
            &self.read,
            &self.cancel,
            &self.schedule,
            &self.tick,
            &self.limits,
            &self.batch_open,
            &self.batch_record,
            &self.relayed,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: lua!("enqueue"),
    claim: lua!("claim"),
    settle: lua!("settle"),
    release: lua!("release"),
    extend: lua!("extend"),
    reclaim: lua!("reclaim"),
    promote: lua!("promote"),
    retry: lua!("retry"),
    delete: lua!("delete"),
    purge: lua!("purge"),
    stats: lua!("stats"),
    read: lua!("read"),
    cancel: lua!("cancel"),
    schedule: lua!("schedule"),
    tick: lua!("tick"),
    limits: lua!("limits"),
    batch_open: lua!("batch_open"),
    batch_record: lua!("batch_record"),
    relayed: lua!("relayed"),
});

#[cfg(test)]
mod tests {
    /// Each operation's source, without the shared prelude.
    const OPERATIONS: [(&str, &str); 19] = [
        ("enqueue", include_str!("lua/enqueue.lua")),
        ("claim", include_str!("lua/claim.lua")),
        ("settle", include_str!("lua/settle.lua")),
        ("release", include_str!("lua/release.lua")),
        ("extend", include_str!("lua/extend.lua")),
        ("reclaim", include_str!("lua/reclaim.lua")),
        ("promote", include_str!("lua/promote.lua")),
        ("retry", include_str!("lua/retry.lua")),
        ("delete", include_str!("lua/delete.lua")),
        ("cancel", include_str!("lua/cancel.lua")),
        ("schedule", include_str!("lua/schedule.lua")),
        ("tick", include_str!("lua/tick.lua")),
        ("purge", include_str!("lua/purge.lua")),
        ("stats", include_str!("lua/stats.lua")),
        ("read", include_str!("lua/read.lua")),
        ("limits", include_str!("lua/limits.lua")),
        ("batch_open", include_str!("lua/batch_open.lua")),
        ("batch_record", include_str!("lua/batch_record.lua")),
        ("relayed", include_str!("lua/relayed.lua")),
    ];

    /// The comment lines of a script, as one line of words.
    fn header(src: &str) -> String {
        src.lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The code of a script, without comment lines.
    fn code(src: &str) -> String {
        src.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_script_documents_its_contract() {
        for (name, src) in OPERATIONS {
            assert!(src.starts_with(&format!("-- {name}.lua: ")), "{name}");
            for part in ["-- KEYS[1", "-- ARGV[1", "-- Returns:"] {
                assert!(src.contains(part), "{name}.lua lacks {part}");
            }
        }
    }

    /// Reference bug 8.12 (`docs/reference-bugs.md#812-not-cluster-safe`):
    /// keys built inside a script are invisible to Redis
    /// Cluster routing. Scripts never extend a key they were given, and the
    /// only keys they build are job hashes from the job-hash prefix, for ids
    /// they read themselves; a script that does must say so in its header.
    #[test]
    fn scripts_build_no_key_except_the_documented_job_hashes() {
        let prelude = include_str!("lua/common.lua");
        for (name, src) in OPERATIONS.into_iter().chain([("common", prelude)]) {
            let code = code(src);
            for (at, _) in code.match_indices("KEYS[") {
                let rest = &code[at..];
                let after = &rest[rest.find(']').expect("closing bracket") + 1..];
                assert!(
                    !after.trim_start().starts_with(".."),
                    "{name}.lua concatenates onto a key from KEYS"
                );
            }
            if code.contains("Q.prefix ..") || code.contains("ARGV[1] ..") {
                assert!(
                    header(src).contains("documented exception"),
                    "{name}.lua builds job keys without documenting the exception"
                );
            }
        }
        // The operations that derive job keys, through their own code or a
        // helper, are exactly these.
        for name in [
            "claim",
            "settle",
            "reclaim",
            "promote",
            "retry",
            "release",
            "cancel",
            "enqueue",
            "delete",
            "batch_record",
        ] {
            let src = OPERATIONS.iter().find(|(n, _)| *n == name).unwrap().1;
            assert!(header(src).contains("documented exception"), "{name}");
        }
    }
}
