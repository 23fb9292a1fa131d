//! Key groups, as Flink's: keyed state is split into `pipeline.max-parallelism` key groups; a
//! key's group is fixed by its hash, and each subtask owns a contiguous range of groups. A job
//! restored at another parallelism hands whole key groups to the new subtasks, so state moves
//! without rehashing a single key.

use std::ops::Range;

/// `pipeline.max-parallelism` when the job does not set it (Flink's default for small jobs).
pub const DEFAULT_MAX_PARALLELISM: usize = 128;

/// The key group of a key hash.
pub fn key_group(hash: u64, max_parallelism: usize) -> u16 {
    (hash % max_parallelism as u64) as u16
}

/// The subtask that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
pub fn subtask_of(key_group: u16, max_parallelism: usize, parallelism: usize) -> usize {
    key_group as usize * parallelism / max_parallelism
}

/// The key groups subtask `subtask` owns (Flink's `computeKeyGroupRangeForOperatorIndex`).
pub fn key_groups_of(subtask: usize, max_parallelism: usize, parallelism: usize) -> Range<u16> {
    let start = (subtask * max_parallelism).div_ceil(parallelism);
    let end = ((subtask + 1) * max_parallelism).div_ceil(parallelism);
    start as u16..end as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_group_has_exactly_one_owner_at_any_parallelism() {
        for p in [1, 2, 3, 4, 7, 128] {
            let mut next = 0;
            for s in 0..p {
                let range = key_groups_of(s, 128, p);
                assert_eq!(range.start, next, "p={p} subtask {s}");
                for kg in range.clone() {
                    assert_eq!(subtask_of(kg, 128, p), s, "p={p} key group {kg}");
                }
                next = range.end;
            }
            assert_eq!(next, 128);
        }
    }
}
