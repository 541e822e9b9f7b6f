//! Where an event of a partitioned stream goes.
//!
//! A stream has `P ≥ 1` partitions, each an independent log (its own
//! writer lane and segments, or its own Redis key). An event's partition
//! follows from its `key`, which every record carries, so producers never
//! name partitions and every backend places events the same way:
//! [`partition_for`] is a jump consistent hash (Lamping and Veach, 2014) of
//! the key's FNV-1a hash. Growing a stream from `P` to `P + 1` partitions
//! moves only about `1/(P+1)` of the keys, and always to the new partition;
//! keeping every key's order across that move is the layout epochs' job
//! (see `ARCHITECTURE.md`). Keyless events are spread round-robin.
//!
//! The embedded and memory backends keep one partition per stream for now:
//! they place everything in partition 0 and refuse any other
//! ([`crate::StoreError::NoSuchPartition`]).
//!
//! ```
//! use busbar_store::partition::{partition_for, PartitionId};
//!
//! // Stable: the same key always lands in the same partition.
//! let p = partition_for(Some("customer-42"), 8, 0);
//! assert_eq!(p, partition_for(Some("customer-42"), 8, 99));
//! assert!(p.0 < 8);
//! // One partition: everything is partition 0.
//! assert_eq!(partition_for(Some("customer-42"), 1, 0), PartitionId(0));
//! // No key: round-robin by the caller's counter.
//! assert_eq!(partition_for(None, 4, 6), PartitionId(2));
//! ```

use serde::Serialize;

/// A partition of a stream, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct PartitionId(pub u32);

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The partition of an event with `key` in a stream of `count` partitions
/// (at least one). Keyless events take `round_robin % count`.
pub fn partition_for(key: Option<&str>, count: u32, round_robin: u64) -> PartitionId {
    let count = count.max(1);
    match key {
        Some(key) => PartitionId(jump_consistent_hash(fnv1a(key.as_bytes()), count)),
        None => PartitionId((round_robin % u64::from(count)) as u32),
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms (the placement
/// of a key must never change under a running stream).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_are_stable_spread_and_move_little_when_growing() {
        // Known values pin the hash: a change would move every key.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
        let mut counts = [0u32; 8];
        for k in &keys {
            counts[partition_for(Some(k), 8, 0).0 as usize] += 1;
        }
        for c in counts {
            assert!((1_000..1_500).contains(&c), "{counts:?}");
        }
        // 8 → 9 partitions: about 1/9 of the keys move, all to the new one.
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (partition_for(Some(k), 8, 0), partition_for(Some(k), 9, 0));
            if before != after {
                assert_eq!(after, PartitionId(8));
                moved += 1;
            }
        }
        assert!((900..1_400).contains(&moved), "{moved}");
    }
}
