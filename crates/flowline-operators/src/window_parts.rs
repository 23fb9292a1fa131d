//! Window state in a state table, for operators whose state waits for the watermark by window
//! (window aggregation, window join, window TopN): a time-ordered table on the keyed table's
//! runs.
//!
//! ```text
//! put(window, tag, rows) ─▶ rows by key group ─▶ one entry per (window, tag, freeze, key group)
//!                                               key: end, start (big-endian, ordered as times),
//!                                               tag, freeze number, key group; value: Arrow IPC
//! take(window, key groups) ─▶ KeyedTable::take_prefix(end, start): the window's entries of
//!                             those key groups, decoded, and deleted from the table
//! ```
//!
//! The operator keeps its live state in memory and freezes it here at a checkpoint or past its
//! budget; the table spills, checkpoints only new entries and hands key groups out on a rescale.
//! The operator's own checkpoint bytes are the windows with entries here and the freeze count.

use std::collections::BTreeMap;
use std::ops::Range;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::common::{exec_err, Result};
use flowline_state::table::TableStats;

use crate::keygroups::row_key_groups;
use crate::state::{io_err, OperatorTable};
use crate::{OperatorContext, TableRuns};

/// A window: (end, start) in ms.
pub(crate) type WindowKey = (i64, i64);

/// Freezes of a window whose parts are merged into one: the parts a window fires from (and the
/// table's entries) stay bounded however long it is open and however often it is frozen.
pub(crate) const COMPACT_AFTER: u32 = 16;

/// The operator's checkpoint bytes start with this.
const MAGIC: &[u8; 4] = b"FWP1";

/// A window's table-key prefix: end, then start, ordered as the numbers are.
fn window_prefix((end, start): WindowKey) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// Key groups fired together when a window with frozen parts fires: each chunk is read, merged
/// and emitted before the next, so firing a window larger than memory stays bounded.
pub(crate) const FIRE_CHUNK: u16 = 4;

/// `groups` in chunks of `FIRE_CHUNK` key groups.
pub(crate) fn chunks(groups: Range<u16>) -> impl Iterator<Item = Range<u16>> {
    groups
        .clone()
        .step_by(usize::from(FIRE_CHUNK))
        .map(move |lo| lo..lo.saturating_add(FIRE_CHUNK).min(groups.end))
}

/// A due window being fired: whole if the table holds no parts of it, else a chunk of key
/// groups a step (its live state of those key groups and the table's parts merged).
pub(crate) struct Firing<L, S> {
    pub window: WindowKey,
    /// Its live state, until the first step takes it.
    pub live: Option<L>,
    /// Whether the table holds parts of it.
    pub stored: bool,
    /// The live state not fired yet, in key-group order (the first step of a stored window
    /// sets it).
    pub sorted: Option<S>,
    /// The first key group not fired yet.
    pub next: u16,
}

impl<L, S> Firing<L, S> {
    /// The key groups of this step (of `groups`, the subtask's), and whether it is the last.
    pub(crate) fn chunk(&self, groups: &Range<u16>) -> (Range<u16>, bool) {
        let hi = self.next.saturating_add(FIRE_CHUNK).min(groups.end);
        (self.next..hi, hi == groups.end)
    }
}

/// Takes the rows of a due window's in-memory rows (ordered by key group, with their key
/// groups) that belong to a chunk ending at key group `hi`; `last`: the final chunk, which takes
/// all that is left (rows of key groups this subtask does not own cannot be, but would go to
/// the first chunk rather than be lost).
pub(crate) fn take_chunk(sorted: &mut (RecordBatch, Vec<u16>), hi: u16, last: bool) -> RecordBatch {
    let (batch, kgs) = sorted;
    let upto = if last {
        kgs.len()
    } else {
        kgs.partition_point(|g| *g < hi)
    };
    let chunk = batch.slice(0, upto);
    *batch = batch.slice(upto, batch.num_rows() - upto);
    kgs.drain(..upto);
    chunk
}

pub(crate) struct WindowParts {
    table: OperatorTable<Vec<u8>>,
    /// Windows with entries in the table, each with the freezes that added parts since its
    /// parts were last merged (not checkpointed: a restored window starts counting again).
    stored: BTreeMap<WindowKey, u32>,
    /// Freezes so far: part of every key, so no freeze overwrites another's entry.
    freezes: u64,
    max_parallelism: usize,
    hashes: Vec<u64>,
    key_groups: Vec<u16>,
}

impl WindowParts {
    /// Table `name` of an operator whose runs are named `prefix-…`, with `budget` bytes of
    /// memory.
    pub(crate) fn new(
        ctx: &OperatorContext,
        name: &'static str,
        prefix: &str,
        budget: usize,
    ) -> Result<Self> {
        Ok(Self {
            table: OperatorTable::new(ctx, name, prefix, budget, None)?,
            stored: BTreeMap::new(),
            freezes: 0,
            max_parallelism: ctx.state.max_parallelism,
            hashes: Vec::new(),
            key_groups: Vec::new(),
        })
    }

    /// Starts a freeze: the parts put until the next call share its number.
    pub(crate) fn next_freeze(&mut self) {
        self.freezes += 1;
    }

    /// `batch`'s rows ordered by key group, and their key groups (ascending). `keys` are the
    /// columns the exchange routed the rows by: a row's key group is theirs (all rows are in
    /// group 0 without keys, as the exchange sends them all to the first subtask).
    pub(crate) fn by_key_group(
        &mut self,
        batch: &RecordBatch,
        keys: &[ArrayRef],
    ) -> Result<(RecordBatch, Vec<u16>)> {
        let n = batch.num_rows();
        if keys.is_empty() {
            return Ok((batch.clone(), vec![0; n]));
        }
        row_key_groups(
            keys,
            n,
            self.max_parallelism,
            &mut self.hashes,
            &mut self.key_groups,
        )?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|i| self.key_groups[*i as usize]);
        let kgs = order.iter().map(|i| self.key_groups[*i as usize]).collect();
        let batch =
            datafusion::arrow::compute::take_record_batch(batch, &UInt32Array::from(order))?;
        Ok((batch, kgs))
    }

    /// Files `batch`'s rows under `window` and `tag` (which of the operator's kinds of rows),
    /// one entry per key group, in the current freeze (`keys` as [`WindowParts::by_key_group`]).
    pub(crate) fn put(
        &mut self,
        window: WindowKey,
        tag: u8,
        batch: &RecordBatch,
        keys: &[ArrayRef],
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (batch, kgs) = self.by_key_group(batch, keys)?;
        let mut key = window_prefix(window).to_vec();
        key.push(tag);
        key.extend_from_slice(&self.freezes.to_be_bytes());
        let base = key.len();
        let mut at = 0;
        while at < kgs.len() {
            let kg = kgs[at];
            let len = kgs[at..].partition_point(|g| *g == kg);
            let mut bytes = crate::encode_batches(&[batch.slice(at, len)])?;
            // Sized for the whole batch (a slice reports its parent's buffers): the table
            // counts capacity against the budget.
            bytes.shrink_to_fit();
            // The table tells keys apart by their bytes alone: the key group is one of them.
            key.truncate(base);
            key.extend_from_slice(&kg.to_be_bytes());
            self.table.put(kg, &key, bytes);
            at += len;
        }
        *self.stored.entry(window).or_default() += 1;
        Ok(())
    }

    /// Windows with `COMPACT_AFTER` or more parts per key group: the operator merges them
    /// ([`WindowParts::take`] and [`WindowParts::put`] again) and calls
    /// [`WindowParts::compacted`].
    pub(crate) fn due_for_compaction(&self) -> Vec<WindowKey> {
        let mut due: Vec<WindowKey> = self
            .stored
            .iter()
            .filter(|(_, n)| **n >= COMPACT_AFTER)
            .map(|(w, _)| *w)
            .collect();
        due.sort_unstable();
        due
    }

    /// `window`'s parts are one per key group again.
    pub(crate) fn compacted(&mut self, window: WindowKey) {
        self.stored.insert(window, 1);
    }

    /// The windows before `bound`, in window order, to fire from key group `first` on: those
    /// `live` holds (with their live state) and those the table holds parts of (no longer
    /// listed: their parts are taken as they fire).
    pub(crate) fn due<L, S>(
        &mut self,
        live: impl IntoIterator<Item = (WindowKey, L)>,
        bound: WindowKey,
        first: u16,
    ) -> Vec<Firing<L, S>> {
        let mut live: BTreeMap<WindowKey, L> = live.into_iter().collect();
        let stored = self.split_due(bound);
        let mut due: Vec<WindowKey> = live.keys().chain(stored.keys()).copied().collect();
        due.sort_unstable();
        due.dedup();
        due.into_iter()
            .map(|window| Firing {
                window,
                live: live.remove(&window),
                stored: stored.contains_key(&window),
                sorted: None,
                next: first,
            })
            .collect()
    }

    /// Whether the table holds parts of `window`.
    pub(crate) fn stored(&self, window: &WindowKey) -> bool {
        self.stored.contains_key(window)
    }

    /// The windows with parts that come before `bound`, no longer listed.
    fn split_due(&mut self, bound: WindowKey) -> BTreeMap<WindowKey, u32> {
        let keep = self.stored.split_off(&bound);
        std::mem::replace(&mut self.stored, keep)
    }

    /// Takes `window`'s parts of `key_groups` out of the table: (tag, rows).
    pub(crate) fn take(
        &mut self,
        window: WindowKey,
        key_groups: Range<u16>,
    ) -> Result<Vec<(u8, RecordBatch)>> {
        let mut out = Vec::new();
        let prefix = window_prefix(window);
        for (_, key, bytes) in self
            .table
            .take_prefix(key_groups, &prefix)
            .map_err(io_err)?
        {
            let tag = key[prefix.len()];
            for b in crate::decode_batches(&bytes)? {
                out.push((tag, b));
            }
        }
        Ok(out)
    }

    /// Moves cold parts to disk while the table's memory is over its budget.
    pub(crate) fn spill_if_over_budget(&mut self) -> Result<()> {
        self.table.spill_if_over_budget().map_err(io_err)
    }

    /// Checkpoints the table ([`WindowParts::runs`] hands its runs on) and gives the bytes
    /// for the operator's own state.
    pub(crate) fn checkpoint(&mut self) -> Result<Vec<u8>> {
        self.table.checkpoint()?;
        self.table.spill_if_over_budget().map_err(io_err)?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.freezes.to_le_bytes());
        for (end, start) in self.stored.keys() {
            out.extend_from_slice(&end.to_le_bytes());
            out.extend_from_slice(&start.to_le_bytes());
        }
        Ok(out)
    }

    pub(crate) fn runs(&self) -> Vec<TableRuns> {
        self.table.runs()
    }

    pub(crate) fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.table.restore(tables)
    }

    /// Restores the bytes [`WindowParts::checkpoint`] gave; several subtasks' bytes after a
    /// rescale (their windows together). `what` names the operator in errors.
    pub(crate) fn restore(&mut self, state: &[u8], what: &str) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        let Some(rest) = state.strip_prefix(MAGIC) else {
            return exec_err!("{what}: this checkpoint holds state in an older format (before state tables); run with --fresh to start over");
        };
        if rest.len() < 8 || (rest.len() - 8) % 16 != 0 {
            return exec_err!("{what}: the checkpoint's state is truncated");
        }
        let word = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
        self.freezes = self.freezes.max(word(&rest[..8]) as u64);
        for w in rest[8..].chunks_exact(16) {
            self.stored
                .entry((word(&w[..8]), word(&w[8..])))
                .or_default();
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> TableStats {
        self.table.stats()
    }

    /// Entries held in memory (for tests).
    #[cfg(test)]
    pub(crate) fn hot_entries(&self) -> usize {
        self.table.hot_len()
    }

    /// Windows with parts in the table.
    pub(crate) fn windows(&self) -> impl Iterator<Item = &WindowKey> {
        self.stored.keys()
    }
}
