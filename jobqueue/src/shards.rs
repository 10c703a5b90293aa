//! Sharded queues: one logical queue spread over several physical queues,
//! each with its own hash tag, so that on a Redis Cluster one busy queue can
//! use every primary instead of the one that owns its slot.
//!
//! Shard 0 is the queue itself (`email`), so turning sharding on keeps the
//! jobs already waiting there reachable; shard `i` is `email~i` or
//! `email~i.k` (see [`shard_names`]). A job's shard follows from its id, so
//! a handle can be rebuilt from the id alone.

use crate::error::{Error, Result};
use crate::keys::validate_name;

/// Most shards one queue may have: each costs a claim loop and, when idle, a
/// blocked connection per runner.
pub(crate) const MAX_SHARDS: usize = 256;

/// The physical queue names of `name` split into `shards`, after checking
/// both.
///
/// The cluster's 16,384 slots are cut into `shards` equal arcs and each
/// shard takes one. Shard 0 is `name`, in whichever arc its slot falls; the
/// others take the remaining arcs in order, shard `i` being `name~i`, or
/// `name~i.k` with the smallest `k` whose slot falls in its arc. Hashing plain `name~i` would leave some primaries with several
/// shards and others with none; evenly spaced slots give every primary its
/// share when the slots are split into equal ranges, as
/// `redis-cli --cluster create` does. The names depend only on `name` and
/// `shards`, so every process computes the same ones.
pub(crate) fn shard_names(name: &str, shards: usize) -> Result<Vec<String>> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(Error::InvalidOption {
            option: "shards",
            reason: format!("{shards} is outside 1..={MAX_SHARDS}"),
        });
    }
    validate_name(name)?;
    let arc_of = |name: &str| slot(name) * shards / SLOTS;
    let first = arc_of(name);
    let mut names = vec![name.to_owned()];
    let free_arcs = (0..shards).filter(|&arc| arc != first);
    for (i, arc) in (1..shards).zip(free_arcs) {
        let shard = (0..)
            .map(|k| match k {
                0 => format!("{name}~{i}"),
                k => format!("{name}~{i}.{k}"),
            })
            .find(|candidate| arc_of(candidate) == arc)
            .expect("some suffix lands in every arc");
        validate_name(&shard)?;
        names.push(shard);
    }
    Ok(names)
}

/// The logical queue of a physical queue name: `email` for the shards
/// `email~3` and `email~3.1` (see [`shard_names`]), the name itself
/// otherwise.
pub(crate) fn logical_name(name: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name.rsplit_once('~') {
        Some((base, suffix))
            if !base.is_empty()
                && match suffix.split_once('.') {
                    Some((i, k)) => digits(i) && digits(k),
                    None => digits(suffix),
                } =>
        {
            base
        }
        _ => name,
    }
}

/// Slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The cluster slot of the hash tag `{name}`: CRC-16/XMODEM of the name,
/// modulo 16,384 (the Redis Cluster specification).
fn slot(name: &str) -> usize {
    let crc = name.bytes().fold(0u16, |mut crc, byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    });
    usize::from(crc) % SLOTS
}

/// The shard a job id belongs to (FNV-1a of the id's bytes): ids are random,
/// so jobs spread evenly, and any id, even a foreign one, maps somewhere.
pub(crate) fn shard_of(id: &str, shards: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

/// A fresh random id whose shard (by [`shard_of`]) is `shard` of `shards`:
/// a job placed by its key (a unique key, a rate key) keeps the rule that a
/// job's shard follows from its id. About `shards` draws on average.
pub(crate) fn id_in_shard(shard: usize, shards: usize) -> String {
    loop {
        let id = crate::id::random_hex();
        if shard_of(&id, shards) == shard {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_collapse_into_their_queue() {
        assert_eq!(logical_name("email"), "email");
        assert_eq!(logical_name("email~3"), "email");
        assert_eq!(logical_name("email~3.12"), "email");
        assert_eq!(logical_name("a~b"), "a~b");
        assert_eq!(logical_name("~3"), "~3");
        assert_eq!(logical_name("email~"), "email~");
        assert_eq!(logical_name("email~3."), "email~3.");
    }

    #[test]
    fn an_id_can_be_drawn_for_any_shard() {
        for shards in [1, 2, 6, 256] {
            for shard in [0, shards / 2, shards - 1] {
                assert_eq!(shard_of(&id_in_shard(shard, shards), shards), shard);
            }
        }
    }

    #[test]
    fn slots_follow_the_cluster_specification() {
        // CLUSTER KEYSLOT answers for these names (Redis 7.0).
        assert_eq!(slot("email"), 10780);
        assert_eq!(slot("bench"), 2933);
        assert_eq!(slot("123456789"), 0x31c3 % SLOTS);
    }

    #[test]
    fn shards_start_with_the_queue_and_spread_evenly_over_the_slots() {
        let names = shard_names("email", 3).unwrap();
        assert_eq!(names[0], "email");
        assert!(names[1].starts_with("email~1") && names[2].starts_with("email~2"));
        // Three equal slot ranges, as a three-primary cluster splits them:
        // one shard in each.
        for shards in [3, 6, 12] {
            let names = shard_names("bench", shards).unwrap();
            let mut per_node = [0; 3];
            for n in &names {
                per_node[slot(n) * 3 / SLOTS] += 1;
            }
            assert!(
                per_node
                    .iter()
                    .all(|&c| c == shards / 3 || c == shards / 3 + 1),
                "{shards} shards: {per_node:?}"
            );
        }
        assert_eq!(shard_names("email", 1).unwrap(), ["email"]);
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
