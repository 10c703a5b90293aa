//! Sharded queues: one logical queue spread over several physical queues,
//! each with its own hash tag, so that on a Redis Cluster one busy queue can
//! use every primary instead of the one that owns its slot.
//!
//! Shard 0 is the queue itself (`email`), so turning sharding on keeps the
//! jobs already waiting there reachable; shard `i` is `email~i`. A job's
//! shard follows from its id, so a handle can be rebuilt from the id alone.

use crate::error::{Error, Result};
use crate::keys::validate_name;

/// Most shards one queue may have: each costs a claim loop and, when idle, a
/// blocked connection per runner.
pub(crate) const MAX_SHARDS: usize = 256;

/// The physical queue name of shard `index` of queue `name`.
pub(crate) fn shard_name(name: &str, index: usize) -> String {
    if index == 0 {
        name.to_owned()
    } else {
        format!("{name}~{index}")
    }
}

/// The physical queue names of `name` split into `shards`, after checking
/// both.
pub(crate) fn shard_names(name: &str, shards: usize) -> Result<Vec<String>> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(Error::InvalidOption {
            option: "shards",
            reason: format!("{shards} is outside 1..={MAX_SHARDS}"),
        });
    }
    let names: Vec<String> = (0..shards).map(|i| shard_name(name, i)).collect();
    for n in &names {
        validate_name(n)?;
    }
    Ok(names)
}

/// The shard a job id belongs to (FNV-1a of the id's bytes): ids are random,
/// so jobs spread evenly, and any id, even a foreign one, maps somewhere.
pub(crate) fn shard_of(id: &str, shards: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_zero_is_the_queue_itself() {
        assert_eq!(
            shard_names("email", 3).unwrap(),
            ["email", "email~1", "email~2"]
        );
        assert!(shard_names("email", 0).is_err());
        assert!(shard_names(&"x".repeat(126), 20).is_err(), "too long");
    }

    #[test]
    fn ids_spread_evenly_and_always_map_to_the_same_shard() {
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            let id = crate::id::random_hex();
            let shard = shard_of(&id, 4);
            assert_eq!(shard, shard_of(&id, 4));
            counts[shard] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_of("anything", 1), 0);
    }
}
