//! A keyed value table: one value per key, hot keys in memory as typed values, cold keys in
//! sorted runs on local disk, and checkpoints that write only what changed.
//!
//! ```text
//! get/update ─▶ hot map (typed V, dirty and recently-used bits) ─miss─▶ runs, newest first
//! over budget ─▶ clock sweep: unused entries leave memory; dirty ones go to a new spill run
//! checkpoint ─▶ dirty entries (and deletes) ─▶ a new run; the table's runs are the checkpoint
//! more than MAX_RUNS runs ─▶ merged into one (deletes dropped, other key groups dropped)
//! ```
//!
//! Invariant: a clean hot entry equals what the runs hold for its key, so evicting it loses
//! nothing and a checkpoint needs only the dirty ones. A checkpoint's runs are immutable
//! files: the next checkpoint references them again and adds one run of what changed.

use std::hash::BuildHasher;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::run::{key_group_of, Run, RunWriter};

/// Runs a table keeps before it merges them into one.
const MAX_RUNS: usize = 8;
/// A merge leaves the oldest run out while it is this many times the others' size.
const MERGE_RATIO: u64 = 4;
/// Bytes an entry costs in memory beyond its key and value (map slot, flags).
const ENTRY_OVERHEAD: usize = 64;

/// A value a table can hold: encoded when it leaves memory, decoded when it comes back.
pub trait StateValue: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> io::Result<Self>;
    /// Bytes it holds in memory, approximately, in constant time (it is asked at every change).
    fn size(&self) -> usize;
}

impl StateValue for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> io::Result<Self> {
        Ok(bytes.to_vec())
    }
    fn size(&self) -> usize {
        self.capacity()
    }
}

struct Slot<V> {
    /// `None`: deleted (a delete the runs must learn of while dirty).
    value: Option<V>,
    key_group: u16,
    /// When it was last written (the table's clock, ms): for the state TTL.
    written: i64,
    dirty: bool,
    /// Set on every access, cleared by the eviction sweep (the clock algorithm).
    used: bool,
    size: usize,
}

/// A run as part of a table: the key groups it speaks for there. A table's own runs speak for
/// its key groups. After a rescale, a table's runs come from several old subtasks, each of which
/// listed runs it inherited that may also hold other key groups' older entries; only the old
/// owner's list is right about a key group, so each run speaks only for the key groups its
/// lister owned (and the new table serves).
#[derive(Clone, Debug)]
pub struct TableRun {
    pub run: Arc<Run>,
    pub key_groups: Range<u16>,
}

impl<V> Slot<V> {
    /// Makes it a delete (the runs learn it at the next checkpoint) if it was last written
    /// before `cutoff` (the clock minus the TTL; `None`: no TTL).
    fn expire(&mut self, cutoff: Option<i64>) {
        if self.value.is_some() && cutoff.is_some_and(|c| self.written < c) {
            self.value = None;
            self.dirty = true;
        }
    }
}

/// What a table holds and has done, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Sweeps that moved cold entries out of memory (to a new run, or already in one).
    pub spills: u64,
    pub compactions: u64,
    /// Bytes the last checkpoint wrote (its new run).
    pub checkpoint_bytes: u64,
}

pub struct KeyedTable<V> {
    dir: PathBuf,
    name: String,
    hot: HotMap<V>,
    hot_bytes: usize,
    budget: usize,
    /// Newest first.
    runs: Vec<TableRun>,
    /// The key groups this table serves: entries of others (runs restored after a rescale)
    /// are never read and are dropped at the next merge.
    key_groups: Range<u16>,
    next_run: u64,
    /// A run key (key group, then key), reused between lookups.
    scratch: Vec<u8>,
    stats: TableStats,
    /// `table.exec.state.ttl` in ms: an entry not written for this long is gone.
    ttl_ms: Option<i64>,
    /// The time writes are stamped with (ms; processing time, set by the operator).
    clock: i64,
}

/// Applies a change to a hot slot (already expired if due, by the lookup that found it): lets
/// `f` change it; keeps its dirtiness, write time and size (and the table's byte count) right.
fn apply<V: StateValue, R>(
    slot: &mut Slot<V>,
    key_len: usize,
    clock: i64,
    hot_bytes: &mut usize,
    f: impl FnOnce(&mut Option<V>) -> (R, bool),
) -> R {
    slot.used = true;
    let (r, changed) = f(&mut slot.value);
    if changed {
        slot.dirty = true;
        slot.written = clock;
        let size = key_len + slot.value.as_ref().map_or(0, V::size) + ENTRY_OVERHEAD;
        *hot_bytes = *hot_bytes + size - slot.size;
        slot.size = size;
    }
    r
}

/// A value in a run, into `out`: when it was written, then the value's encoding.
fn stamp(out: &mut Vec<u8>, written: i64, value: &impl StateValue) {
    out.clear();
    out.extend_from_slice(&written.to_le_bytes());
    value.encode(out);
}

fn unstamp(bytes: &[u8]) -> io::Result<(i64, &[u8])> {
    let (t, v) = bytes.split_first_chunk::<8>().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "state entry without its write time",
        )
    })?;
    Ok((i64::from_le_bytes(*t), v))
}

/// Runs (newest first) merged in key order, a block at a time into one buffer per run:
/// nothing is allocated per entry. Per key the newest run's entry wins (a value, or a delete
/// that hides older runs'), each run read for the key groups it speaks for. A table's merges
/// write its output; a snapshot's scan ([`SnapshotScan`]) reads it.
pub struct RunMerge {
    heads: Vec<BlockHead>,
    /// The current key, copied (it decides which heads move on).
    key: Vec<u8>,
    primed: bool,
}

struct BlockHead {
    run: Arc<Run>,
    groups: Range<u16>,
    /// The next block to read.
    block: usize,
    data: Vec<u8>,
    /// Where the entry after the current one starts.
    at: usize,
    /// The current entry: key and value ranges in `data` (`None`: a delete); `None`: done.
    entry: Option<(Range<usize>, Option<Range<usize>>)>,
}

impl BlockHead {
    fn advance(&mut self) -> io::Result<()> {
        loop {
            match self.run.entry_at(&self.data, self.at)? {
                Some((key, value, next)) => {
                    self.at = next;
                    if self.groups.contains(&key_group_of(&self.data[key.clone()])) {
                        self.entry = Some((key, value));
                        return Ok(());
                    }
                }
                None => {
                    if !self.run.read_block_into(self.block, &mut self.data)? {
                        self.entry = None;
                        return Ok(());
                    }
                    self.block += 1;
                    self.at = 0;
                }
            }
        }
    }

    fn key(&self) -> Option<&[u8]> {
        self.entry.as_ref().map(|(k, _)| &self.data[k.clone()])
    }
}

impl RunMerge {
    pub fn new(runs: &[TableRun]) -> Self {
        Self {
            heads: runs
                .iter()
                .map(|r| BlockHead {
                    run: r.run.clone(),
                    groups: r.key_groups.clone(),
                    block: 0,
                    data: Vec::new(),
                    at: 0,
                    entry: None,
                })
                .collect(),
            key: Vec::new(),
            primed: false,
        }
    }

    /// Calls `f(stored key, value or None for a delete)` for the next key (the smallest; on a
    /// tie the newest run's entry); false once there are none.
    pub fn next(
        &mut self,
        f: impl FnOnce(&[u8], Option<&[u8]>) -> io::Result<()>,
    ) -> io::Result<bool> {
        if !self.primed {
            self.primed = true;
            for h in &mut self.heads {
                h.advance()?;
            }
        }
        let mut winner: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some(k) = h.key() {
                if winner.is_none_or(|w| k < self.heads[w].key().expect("a key")) {
                    winner = Some(i);
                }
            }
        }
        let Some(w) = winner else {
            return Ok(false);
        };
        let head = &self.heads[w];
        let (key, value) = head.entry.clone().expect("the winner's entry");
        self.key.clear();
        self.key.extend_from_slice(&head.data[key]);
        f(&self.key, value.map(|v| &head.data[v]))?;
        for h in &mut self.heads {
            if h.key() == Some(&self.key[..]) {
                h.advance()?;
            }
        }
        Ok(true)
    }
}

/// A snapshot's live entries in key order ([`RunMerge`] without the deletes).
pub struct SnapshotScan(RunMerge);

impl SnapshotScan {
    /// Calls `f(key group, key, value)` for the next live entry (the key without its group,
    /// the value without its write time); false once there are none.
    pub fn next_live(&mut self, mut f: impl FnMut(u16, &[u8], &[u8])) -> io::Result<bool> {
        loop {
            let mut live = false;
            let more = self.0.next(|key, value| {
                if let Some(v) = value {
                    f(key_group_of(key), &key[2..], unstamp(v)?.1);
                    live = true;
                }
                Ok(())
            })?;
            if live || !more {
                return Ok(more);
            }
        }
    }
}

/// A table as a checkpoint left it, read without the table (by a query while the operator
/// goes on writing): its runs, newest first. Entries are immutable files, so a snapshot never
/// changes and needs no lock.
#[derive(Clone, Debug, Default)]
pub struct TableSnapshot {
    pub runs: Vec<TableRun>,
}

impl TableSnapshot {
    /// The value of `key`: a point read through the runs' bloom filters, newest first.
    pub fn get(&self, key_group: u16, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut stored = Vec::new();
        run_key(&mut stored, key_group, key);
        for r in &self.runs {
            if !r.key_groups.contains(&key_group) {
                continue;
            }
            if let Some(entry) = r.run.get(&stored)? {
                return match entry {
                    Some(v) => Ok(Some(unstamp(&v)?.1.to_vec())),
                    None => Ok(None),
                };
            }
        }
        Ok(None)
    }

    /// Every live entry in (key group, key) order, without an allocation per entry.
    pub fn scan(&self) -> SnapshotScan {
        SnapshotScan(RunMerge::new(&self.runs))
    }
}

/// An entry [`KeyedTable::take_prefix`] took: key group, key, value.
pub type Taken<V> = (u16, Box<[u8]>, V);

/// The hot entries: slots in a vector, found through a table of their indices (4 bytes a
/// bucket, as the operators' own group tables were), so growing rehashes indices, not entries.
/// A hot entry's place: its key and slot, or `None` when free.
type HotSlot<V> = Option<(Box<[u8]>, Slot<V>)>;

struct HotMap<V> {
    index: hashbrown::HashTable<u32>,
    slots: Vec<HotSlot<V>>,
    free: Vec<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<V> Default for HotMap<V> {
    fn default() -> Self {
        Self {
            index: hashbrown::HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hasher: Default::default(),
        }
    }
}

impl<V> HotMap<V> {
    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(hash, |i| {
                slots[*i as usize]
                    .as_ref()
                    .is_some_and(|(k, _)| **k == *key)
            })
            .copied()
    }

    fn get(&self, key: &[u8]) -> Option<&Slot<V>> {
        let i = self.find(key)?;
        self.slots[i as usize].as_ref().map(|(_, s)| s)
    }

    /// Inserts or replaces: its index, and the slot replaced.
    fn insert(&mut self, key: Box<[u8]>, slot: Slot<V>) -> (u32, Option<Slot<V>>) {
        if let Some(i) = self.find(&key) {
            let (_, old) = self.slots[i as usize].replace((key, slot)).expect("found");
            return (i, Some(old));
        }
        let hash = self.hasher.hash_one(&*key);
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some((key, slot));
                i
            }
            None => {
                self.slots.push(Some((key, slot)));
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |j| {
            hasher.hash_one(&*slots[*j as usize].as_ref().expect("indexed").0)
        });
        (i, None)
    }

    /// The slot at an index [`HotMap::find`] or [`HotMap::insert`] gave.
    fn at_mut(&mut self, i: u32) -> (&[u8], &mut Slot<V>) {
        let (k, s) = self.slots[i as usize].as_mut().expect("an occupied slot");
        (k, s)
    }

    fn remove(&mut self, key: &[u8]) -> Option<Slot<V>> {
        let i = self.find(key)?;
        Some(self.remove_at(i))
    }

    /// Removes the slot at an occupied index.
    fn remove_at(&mut self, i: u32) -> Slot<V> {
        let (key, slot) = self.slots[i as usize].take().expect("an occupied slot");
        let hash = self.hasher.hash_one(&*key);
        if let Ok(entry) = self.index.find_entry(hash, |j| *j == i) {
            entry.remove();
        }
        self.free.push(i);
        slot
    }

    /// The indices of the occupied slots, with them.
    fn indexed_mut(&mut self) -> impl Iterator<Item = (u32, &mut Slot<V>)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|(_, s)| (i as u32, s)))
    }

    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&Box<[u8]>, &Slot<V>)> {
        self.slots.iter().flatten().map(|(k, s)| (k, s))
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Slot<V>> {
        self.slots.iter_mut().flatten().map(|(_, s)| s)
    }

    /// Keeps the slots `keep` says yes to.
    fn retain(&mut self, mut keep: impl FnMut(&mut Slot<V>) -> bool) {
        let gone: Vec<u32> = self
            .indexed_mut()
            .filter_map(|(i, s)| (!keep(s)).then_some(i))
            .collect();
        for i in gone {
            self.remove_at(i);
        }
    }
}

fn run_key(out: &mut Vec<u8>, key_group: u16, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(key);
}

impl<V: StateValue> KeyedTable<V> {
    /// An empty table whose runs go to `dir` (named `name-N.run`), holding at most about
    /// `budget` bytes in memory, serving `key_groups`.
    pub fn new(dir: &Path, name: &str, budget: usize, key_groups: Range<u16>) -> io::Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            hot: HotMap::default(),
            hot_bytes: 0,
            budget,
            runs: Vec::new(),
            key_groups,
            next_run: 0,
            scratch: Vec::new(),
            stats: TableStats::default(),
            ttl_ms: None,
            clock: 0,
        })
    }

    /// `table.exec.state.ttl`: entries not written for `ttl` are dropped (Flink's semantics:
    /// what was emitted from them is not retracted, and a key seen again starts afresh).
    pub fn with_ttl(mut self, ttl: Option<std::time::Duration>) -> Self {
        self.ttl_ms = ttl.map(|t| t.as_millis() as i64).filter(|t| *t > 0);
        self
    }

    /// Sets the time writes are stamped with and expiry is measured against.
    pub fn set_clock(&mut self, now_ms: i64) {
        self.clock = now_ms;
    }

    /// Entries last written before this are expired (`None`: no TTL).
    fn cutoff(&self) -> Option<i64> {
        self.ttl_ms.map(|ttl| self.clock - ttl)
    }

    fn expired(&self, written: i64) -> bool {
        self.cutoff().is_some_and(|c| written < c)
    }

    /// A table over the runs of a checkpoint (newest first for each key group), possibly taken
    /// at another parallelism: each run speaks for the key groups it did then that this table
    /// serves; runs left with none are dropped.
    pub fn restore(
        dir: &Path,
        name: &str,
        budget: usize,
        key_groups: Range<u16>,
        runs: Vec<TableRun>,
    ) -> io::Result<Self> {
        let mut t = Self::new(dir, name, budget, key_groups)?;
        t.runs = runs
            .into_iter()
            .filter_map(|r| {
                let (stored_lo, stored_hi) = r.run.key_groups;
                let lo = r.key_groups.start.max(t.key_groups.start).max(stored_lo);
                let hi = r
                    .key_groups
                    .end
                    .min(t.key_groups.end)
                    .min(stored_hi.saturating_add(1));
                (lo < hi).then_some(TableRun {
                    run: r.run,
                    key_groups: lo..hi,
                })
            })
            .collect();
        t.next_run = t.runs.len() as u64;
        t.update_stats();
        Ok(t)
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    fn update_stats(&mut self) {
        self.stats.memory_bytes = self.hot_bytes as u64;
        self.stats.disk_bytes = self.runs.iter().map(|r| r.run.bytes).sum();
    }

    /// The hot slot of `key` (expired first if due), read into memory from the runs if they
    /// hold it; `None` when neither does. A hot slot may hold a delete (`value: None`).
    fn load(&mut self, key_group: u16, key: &[u8]) -> io::Result<Option<u32>> {
        let cutoff = self.cutoff();
        if let Some(i) = self.hot.find(key) {
            let (_, s) = self.hot.at_mut(i);
            s.used = true;
            s.expire(cutoff);
            return Ok(Some(i));
        }
        run_key(&mut self.scratch, key_group, key);
        for TableRun { run, key_groups } in &self.runs {
            if !key_groups.contains(&key_group) {
                continue;
            }
            if let Some(entry) = run.get(&self.scratch)? {
                let Some(bytes) = entry else {
                    return Ok(None); // deleted
                };
                let (written, bytes) = unstamp(&bytes)?;
                if self.expired(written) {
                    return Ok(None);
                }
                let value = V::decode(bytes)?;
                let size = key.len() + value.size() + ENTRY_OVERHEAD;
                self.hot_bytes += size;
                let (i, _) = self.hot.insert(
                    key.into(),
                    Slot {
                        value: Some(value),
                        key_group,
                        written,
                        dirty: false,
                        used: true,
                        size,
                    },
                );
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The value of `key`.
    pub fn get(&mut self, key_group: u16, key: &[u8]) -> io::Result<Option<&V>> {
        Ok(match self.load(key_group, key)? {
            Some(i) => self.hot.at_mut(i).1.value.as_ref(),
            None => None,
        })
    }

    /// Takes `key`'s value out for an operator that keeps its hot state in structures of its own
    /// (an aggregation's dense accumulators): the operator holds it from now on and gives it
    /// back with [`KeyedTable::put`] when it evicts it or checkpoints, or deletes it with
    /// [`KeyedTable::delete_blind`]. What the runs hold is left as is.
    pub fn take(&mut self, key_group: u16, key: &[u8]) -> io::Result<Option<V>> {
        if self.load(key_group, key)?.is_none() {
            return Ok(None);
        }
        match self.hot.remove(key) {
            Some(s) => {
                self.hot_bytes -= s.size;
                if s.dirty && s.value.is_none() {
                    // A delete the runs have not learnt: keep it.
                    self.hot_bytes += s.size;
                    self.hot.insert(key.into(), s);
                    return Ok(None);
                }
                Ok(s.value)
            }
            None => Ok(None),
        }
    }

    /// Deletes `key` without reading it first (the next checkpoint writes the delete).
    pub fn delete_blind(&mut self, key_group: u16, key: &[u8]) {
        self.set(key_group, key, None, self.clock);
    }

    /// Sets `key` to `value` (`None`: a delete) last written at `written`, without reading it.
    fn set(&mut self, key_group: u16, key: &[u8], value: Option<V>, written: i64) {
        let size = key.len() + value.as_ref().map_or(0, V::size) + ENTRY_OVERHEAD;
        let slot = Slot {
            value,
            key_group,
            written,
            dirty: true,
            used: true,
            size,
        };
        self.hot_bytes += size;
        if let (_, Some(old)) = self.hot.insert(key.into(), slot) {
            self.hot_bytes -= old.size;
        }
    }

    /// The value of `key` if it is in memory (no disk read, no change to its recency).
    pub fn peek(&self, key: &[u8]) -> Option<&V> {
        self.hot.get(key).and_then(|s| s.value.as_ref())
    }

    /// Reads and changes the value of `key` (`None`: absent, or set to `None` to delete it).
    pub fn update<R>(
        &mut self,
        key_group: u16,
        key: &[u8],
        f: impl FnOnce(&mut Option<V>) -> R,
    ) -> io::Result<R> {
        self.update_when(key_group, key, |v| {
            let had = v.is_some();
            let r = f(v);
            // An absent key that stays absent changes nothing.
            let changed = had || v.is_some();
            (r, changed)
        })
    }

    /// [`KeyedTable::update`] for a change that may turn out to be none: `f` says whether it
    /// changed the value (an unchanged entry stays clean: the next checkpoint skips it).
    pub fn update_when<R>(
        &mut self,
        key_group: u16,
        key: &[u8],
        f: impl FnOnce(&mut Option<V>) -> (R, bool),
    ) -> io::Result<R> {
        let clock = self.clock;
        let i = match self.load(key_group, key)? {
            Some(i) => i,
            // Absent: a clean placeholder, which `f` may fill.
            None => {
                let size = key.len() + ENTRY_OVERHEAD;
                self.hot_bytes += size;
                let slot = Slot {
                    value: None,
                    key_group,
                    written: clock,
                    dirty: false,
                    used: true,
                    size,
                };
                self.hot.insert(key.into(), slot).0
            }
        };
        let (key, slot) = self.hot.at_mut(i);
        Ok(apply(slot, key.len(), clock, &mut self.hot_bytes, f))
    }

    /// The hot slot holding `key`'s value, read from the runs if need be; `None` when absent.
    /// A slot stays `key`'s until the next spill, checkpoint, `take` or `delete_blind`, so an
    /// operator may look a batch's keys up once and then read and change them by slot.
    pub fn locate(&mut self, key_group: u16, key: &[u8]) -> io::Result<Option<u32>> {
        Ok(self
            .load(key_group, key)?
            .filter(|i| self.hot.at_mut(*i).1.value.is_some()))
    }

    /// The value in a slot [`KeyedTable::locate`] returned.
    pub fn at(&self, slot: u32) -> &V {
        let (_, s) = self.hot.slots[slot as usize]
            .as_ref()
            .expect("a located slot");
        s.value.as_ref().expect("a located value")
    }

    /// Changes the value in a slot [`KeyedTable::locate`] returned; it counts as written now.
    pub fn change_at<R>(&mut self, slot: u32, f: impl FnOnce(&mut V) -> R) -> R {
        let (key, s) = self.hot.at_mut(slot);
        apply(s, key.len(), self.clock, &mut self.hot_bytes, |v| {
            (f(v.as_mut().expect("a located value")), true)
        })
    }

    /// Sets the value of `key` without reading it first.
    pub fn put(&mut self, key_group: u16, key: &[u8], value: V) {
        self.put_written(key_group, key, value, self.clock);
    }

    /// [`KeyedTable::put`] of a value last written at `written` (the table's clock, ms), not
    /// now: for an operator that held the value itself and hands it back (its TTL counts from
    /// its last change, not from its eviction).
    pub fn put_written(&mut self, key_group: u16, key: &[u8], value: V, written: i64) {
        self.set(key_group, key, Some(value), written);
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key_group: u16, key: &[u8]) -> io::Result<()> {
        self.update(key_group, key, |v| *v = None)
    }

    /// A writer of a new run of at most `capacity` entries.
    fn new_run(&mut self, capacity: u64) -> io::Result<(PathBuf, RunWriter)> {
        self.next_run += 1;
        // Unique across tasks, restarts and jobs: checkpoints share runs by name.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{}-{}-{}.run", self.name, self.next_run, &id[..16]);
        // Made on the first run: a table that never spills or checkpoints leaves no directory.
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(name);
        let w = RunWriter::create(&path, capacity)?;
        Ok((path, w))
    }

    /// Writes the entries of hot slots (dirty ones) as a new run, newest. Sorts their indices,
    /// not copies: a checkpoint of a table whose every entry changed costs no second copy of it.
    fn write_run(&mut self, mut slots: Vec<u32>) -> io::Result<u64> {
        if slots.is_empty() {
            return Ok(0);
        }
        let hot = &self.hot.slots;
        let at = |i: &u32| hot[*i as usize].as_ref().expect("a hot slot");
        slots.sort_unstable_by(|a, b| {
            let ((ka, sa), (kb, sb)) = (at(a), at(b));
            (sa.key_group, &**ka).cmp(&(sb.key_group, &**kb))
        });
        let (path, mut w) = self.new_run(slots.len() as u64)?;
        let hot = &self.hot.slots;
        let at = |i: &u32| hot[*i as usize].as_ref().expect("a hot slot");
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for i in &slots {
            let (k, s) = at(i);
            run_key(&mut key, s.key_group, k);
            match &s.value {
                Some(v) => {
                    stamp(&mut value, s.written, v);
                    w.add(&key, Some(&value))?;
                }
                None => w.add(&key, None)?,
            }
        }
        let run = w.finish()?;
        // The table keeps the file open; it is gone from the directory once no run uses it.
        std::fs::remove_file(&path)?;
        let bytes = run.bytes;
        let key_groups = self.key_groups.clone();
        self.runs.insert(
            0,
            TableRun {
                run: Arc::new(run),
                key_groups,
            },
        );
        Ok(bytes)
    }

    /// Moves cold entries out of memory while the table holds more than its budget.
    pub fn spill_if_over_budget(&mut self) -> io::Result<()> {
        if self.hot_bytes <= self.budget {
            return Ok(());
        }
        let target = self.budget / 4 * 3;
        let mut victims: Vec<u32> = Vec::new();
        let mut left = self.hot_bytes;
        // Two turns of the clock: the first spares what was used since the last sweep.
        for _ in 0..2 {
            for (i, s) in self.hot.indexed_mut() {
                if left <= target {
                    break;
                }
                if std::mem::take(&mut s.used) {
                    continue;
                }
                left -= s.size;
                s.used = true; // taken: not again in the second turn
                victims.push(i);
            }
        }
        let hot = &self.hot.slots;
        let dirty: Vec<u32> = victims
            .iter()
            .copied()
            .filter(|i| hot[*i as usize].as_ref().is_some_and(|(_, s)| s.dirty))
            .collect();
        self.write_run(dirty)?;
        // A spill moves cold entries out of memory, written now or already on disk (clean
        // since the last checkpoint or spill).
        if !victims.is_empty() {
            self.stats.spills += 1;
        }
        for i in victims {
            self.hot_bytes -= self.hot.remove_at(i).size;
        }
        self.merge_if_needed()?;
        self.update_stats();
        Ok(())
    }

    /// Writes what changed since the last checkpoint as one new run and returns the runs that
    /// now make up the table (newest first): the checkpoint of this table.
    pub fn checkpoint(&mut self) -> io::Result<Vec<TableRun>> {
        self.expire_hot();
        let dirty: Vec<u32> = self
            .hot
            .indexed_mut()
            .filter_map(|(i, s)| s.dirty.then_some(i))
            .collect();
        self.stats.checkpoint_bytes = self.write_run(dirty)?;
        let mut freed = 0;
        self.hot.retain(|s| {
            s.dirty = false;
            let keep = s.value.is_some();
            if !keep {
                freed += s.size;
            }
            keep
        });
        self.hot_bytes -= freed;
        self.merge_if_needed()?;
        self.update_stats();
        Ok(self.runs.clone())
    }

    /// Turns expired entries in memory into deletes (runs drop theirs when merged, and never
    /// serve them: reads check the write time).
    fn expire_hot(&mut self) {
        let cutoff = self.cutoff();
        if cutoff.is_none() {
            return;
        }
        for s in self.hot.values_mut() {
            s.expire(cutoff);
        }
    }

    /// Merges runs into one when there are too many: the newest entry of each key wins;
    /// expired entries and other key groups' are dropped. Size-tiered: while the newer runs
    /// together stay small beside the oldest (the table's bulk, MERGE_RATIO times their size),
    /// only they merge, keeping their deletes (the bulk may hold the keys), so a checkpoint
    /// re-uploads the small runs, not the whole state; once they are not small, everything
    /// merges and deletes go.
    fn merge_if_needed(&mut self) -> io::Result<()> {
        if self.runs.len() <= MAX_RUNS {
            return Ok(());
        }
        let n = self.runs.len();
        let bulk = self.runs[n - 1].run.bytes;
        let rest: u64 = self.runs[..n - 1].iter().map(|r| r.run.bytes).sum();
        let full = rest.saturating_mul(MERGE_RATIO) >= bulk;
        let mut runs = std::mem::take(&mut self.runs);
        let kept = match full {
            true => Vec::new(),
            false => runs.split_off(n - 1),
        };
        let capacity = runs.iter().map(|r| r.run.entries).sum();
        let (path, mut w) = self.new_run(capacity)?;
        let mut merge = RunMerge::new(&runs);
        while merge.next(|key, value| {
            if !self.key_groups.contains(&key_group_of(key)) {
                return Ok(());
            }
            match value {
                Some(v) if !self.expired(unstamp(v)?.0) => w.add(key, Some(v)),
                // An older entry in the bulk would show through: keep the delete.
                None if !full => w.add(key, None),
                _ => Ok(()),
            }
        })? {}
        let run = w.finish()?;
        std::fs::remove_file(&path)?;
        self.runs = vec![TableRun {
            run: Arc::new(run),
            key_groups: self.key_groups.clone(),
        }];
        self.runs.extend(kept);
        self.stats.compactions += 1;
        Ok(())
    }

    /// Takes out every entry of `key_groups` whose key starts with `prefix`, in (key group,
    /// key) order, and deletes them (range reads for a table whose keys start with a time, such
    /// as a window's state: all of a window at once when it fires). Reads the hot entries once
    /// and each run from the first block that may hold the prefix, newest entry winning.
    pub fn take_prefix(
        &mut self,
        key_groups: Range<u16>,
        prefix: &[u8],
    ) -> io::Result<Vec<Taken<V>>> {
        let cutoff = self.cutoff();
        // Key → newest entry (None: deleted), hot entries first: they are newer than any run.
        let mut found: std::collections::BTreeMap<(u16, Box<[u8]>), Option<V>> = Default::default();
        let hot: Vec<Box<[u8]>> = self
            .hot
            .iter()
            .filter(|(k, s)| key_groups.contains(&s.key_group) && k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in hot {
            let mut s = self.hot.remove(&k).expect("a hot key");
            self.hot_bytes -= s.size;
            s.expire(cutoff);
            found.insert((s.key_group, k), s.value);
        }
        let mut start = Vec::with_capacity(prefix.len() + 2);
        for TableRun {
            run,
            key_groups: speaks,
        } in &self.runs
        {
            let lo = key_groups.start.max(speaks.start);
            let hi = key_groups.end.min(speaks.end);
            for kg in lo..hi {
                if !(run.key_groups.0..=run.key_groups.1).contains(&kg) {
                    continue;
                }
                run_key(&mut start, kg, prefix);
                for e in run.iter_from(&start) {
                    let (key, entry) = e?;
                    if key < start {
                        continue;
                    }
                    if !key.starts_with(&start) {
                        break;
                    }
                    let slot = (kg, key[2..].into());
                    if found.contains_key(&slot) {
                        continue; // a newer run or the hot entry has it
                    }
                    let value = match entry {
                        Some(bytes) => {
                            let (written, bytes) = unstamp(&bytes)?;
                            (!self.expired(written))
                                .then(|| V::decode(bytes))
                                .transpose()?
                        }
                        None => None,
                    };
                    found.insert(slot, value);
                }
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for ((kg, key), value) in found {
            // The runs may hold it: a delete hides it from restores and later reads.
            self.set(kg, &key, None, self.clock);
            if let Some(v) = value {
                out.push((kg, key, v));
            }
        }
        self.update_stats();
        Ok(out)
    }

    /// Entries in memory (for tests and metrics).
    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn value(n: u32) -> Vec<u8> {
        format!("value-{n:08}-padding-to-make-it-longer").into_bytes()
    }

    #[test]
    fn a_table_many_times_its_budget_keeps_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 64 << 10, 0..128).unwrap();
        for n in 0..20_000u32 {
            t.put((n % 128) as u16, &n.to_be_bytes(), value(n));
            t.spill_if_over_budget().unwrap();
        }
        assert!(t.stats().spills > 10, "{:?}", t.stats());
        assert!(t.stats().memory_bytes <= 64 << 10);
        for n in (0..20_000u32).step_by(7) {
            assert_eq!(
                t.get((n % 128) as u16, &n.to_be_bytes()).unwrap(),
                Some(&value(n))
            );
            t.spill_if_over_budget().unwrap();
        }
        assert!(t.stats().compactions > 0, "{:?}", t.stats());
    }

    #[test]
    fn a_snapshot_scan_reads_what_the_runs_hold_now() {
        let dir = tempfile::tempdir().unwrap();
        // Several runs (one per checkpoint, and spills), with overwrites and deletes.
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 64 << 10, 3..4).unwrap();
        let mut model = std::collections::BTreeMap::new();
        let mut several = false;
        for round in 0..5u32 {
            for n in (round * 700)..(round * 700 + 3000) {
                let key = n.to_be_bytes();
                if n % 11 == round {
                    t.delete(3, &key).unwrap();
                    model.remove(&n);
                } else {
                    t.put(3, &key, value(n + round));
                    model.insert(n, value(n + round));
                }
                t.spill_if_over_budget().unwrap();
            }
            let snapshot = TableSnapshot {
                runs: t.checkpoint().unwrap(),
            };
            let mut scanned = Vec::new();
            let mut scan = snapshot.scan();
            while scan
                .next_live(|g, k, v| scanned.push((g, k.to_vec(), v.to_vec())))
                .unwrap()
            {}
            let want: Vec<_> = model
                .iter()
                .map(|(n, v)| (3u16, n.to_be_bytes().to_vec(), v.clone()))
                .collect();
            several |= snapshot.runs.len() > 1;
            assert_eq!(scanned, want, "round {round}");
        }
        assert!(several, "some snapshot had several runs");
    }

    #[test]
    fn a_checkpoint_writes_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 1 << 30, 0..128).unwrap();
        for n in 0..10_000u32 {
            t.put(0, &n.to_be_bytes(), value(n));
        }
        t.checkpoint().unwrap();
        let first = t.stats().checkpoint_bytes;
        for n in 0..100u32 {
            t.update(0, &n.to_be_bytes(), |v| *v = Some(value(n + 1)))
                .unwrap();
        }
        let runs = t.checkpoint().unwrap();
        let second = t.stats().checkpoint_bytes;
        assert!(
            second * 50 < first,
            "{second} bytes after 1% changed, {first} at first"
        );
        assert_eq!(runs.len(), 2, "the first run is shared");
        // Nothing changed: nothing written.
        t.checkpoint().unwrap();
        assert_eq!(t.stats().checkpoint_bytes, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u16, u8),
        Delete(u16),
        Add(u16, u8),
        Spill,
        Checkpoint,
        Restore,
        /// Takes the keys whose first byte is `.0` in key groups `.1..4`.
        TakePrefix(u8, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..300, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0u16..300).prop_map(Op::Delete),
            3 => (0u16..300, any::<u8>()).prop_map(|(k, v)| Op::Add(k, v)),
            1 => Just(Op::Spill),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Restore),
            1 => (0u8..2, 0u16..4).prop_map(|(p, lo)| Op::TakePrefix(p, lo)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a map: any sequence of writes, spills, checkpoints and restores from the last
        /// checkpoint reads back as the map does (a restore rolls the map back too).
        #[test]
        fn the_table_behaves_as_a_map(ops in proptest::collection::vec(op(), 1..400)) {
            let dir = tempfile::tempdir().unwrap();
            let budget = 2_000; // a few dozen entries: everything spills
            let kg = |k: u16| k % 4;
            let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", budget, 0..4).unwrap();
            let mut model: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
            let mut saved = (Vec::new(), BTreeMap::new());
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.put(kg(k), &k.to_be_bytes(), vec![v; 20]);
                        model.insert(k, vec![v; 20]);
                    }
                    Op::Delete(k) => {
                        t.delete(kg(k), &k.to_be_bytes()).unwrap();
                        model.remove(&k);
                    }
                    Op::Add(k, v) => {
                        t.update(kg(k), &k.to_be_bytes(), |old| old.get_or_insert_with(Vec::new).push(v)).unwrap();
                        model.entry(k).or_default().push(v);
                    }
                    Op::Spill => t.spill_if_over_budget().unwrap(),
                    Op::Checkpoint => saved = (t.checkpoint().unwrap(), model.clone()),
                    Op::Restore => {
                        t = KeyedTable::restore(dir.path(), "r", budget, 0..4, saved.0.clone()).unwrap();
                        model = saved.1.clone();
                    }
                    Op::TakePrefix(p, lo) => {
                        let taken: Vec<(u16, Vec<u8>)> = t
                            .take_prefix(lo..4, &[p])
                            .unwrap()
                            .into_iter()
                            .map(|(g, k, v)| {
                                assert_eq!(g, kg(u16::from_be_bytes([k[0], k[1]])));
                                (u16::from_be_bytes([k[0], k[1]]), v)
                            })
                            .collect();
                        let mut want: Vec<(u16, Vec<u8>)> = model
                            .iter()
                            .filter(|(k, _)| (*k >> 8) as u8 == p && kg(**k) >= lo)
                            .map(|(k, v)| (*k, v.clone()))
                            .collect();
                        // In (key group, key) order.
                        want.sort_by_key(|(k, _)| (kg(*k), *k));
                        prop_assert_eq!(&taken, &want);
                        for (k, _) in want {
                            model.remove(&k);
                        }
                    }
                }
                t.spill_if_over_budget().unwrap();
            }
            for k in 0u16..300 {
                prop_assert_eq!(t.get(kg(k), &k.to_be_bytes()).unwrap().cloned(), model.get(&k).cloned());
            }
        }
    }

    #[test]
    fn taken_values_are_the_callers_until_put_back_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 1 << 20, 0..128).unwrap();
        t.put(1, b"a", vec![1]);
        t.put(1, b"b", vec![2]);
        t.checkpoint().unwrap();
        assert_eq!(t.take(1, b"a").unwrap(), Some(vec![1]));
        assert_eq!(t.hot_len(), 1, "b stays");
        t.put(1, b"a", vec![1, 1]);
        t.take(1, b"b").unwrap();
        t.delete_blind(1, b"b");
        let runs = t.checkpoint().unwrap();
        let mut r = KeyedTable::<Vec<u8>>::restore(dir.path(), "r", 1 << 20, 0..128, runs).unwrap();
        assert_eq!(r.take(1, b"a").unwrap(), Some(vec![1, 1]));
        assert_eq!(r.take(1, b"b").unwrap(), None);
        r.delete_blind(1, b"c");
        assert_eq!(
            r.take(1, b"c").unwrap(),
            None,
            "a delete not yet written stays"
        );
        assert_eq!(r.hot_len(), 1);
    }

    #[test]
    fn entries_not_written_for_the_ttl_are_gone_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 1 << 20, 0..128)
            .unwrap()
            .with_ttl(Some(std::time::Duration::from_millis(100)));
        t.set_clock(1_000);
        t.put(0, b"spilled", vec![1]);
        t.put(0, b"hot", vec![2]);
        t.put(0, b"kept", vec![3]);
        t.checkpoint().unwrap();
        t.hot.remove(&b"spilled"[..]); // as an eviction would
        t.set_clock(1_050);
        t.update(0, b"kept", |v| v.as_mut().unwrap().push(4))
            .unwrap();
        t.set_clock(1_120);
        assert_eq!(t.get(0, b"spilled").unwrap(), None, "expired on disk");
        assert_eq!(t.get(0, b"hot").unwrap(), None, "expired in memory");
        assert_eq!(
            t.get(0, b"kept").unwrap(),
            Some(&vec![3, 4]),
            "written at 1050"
        );
    }

    #[test]
    fn a_restore_at_another_parallelism_takes_its_key_groups_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "t", 1 << 20, 0..128).unwrap();
        for n in 0..1000u32 {
            t.put((n % 128) as u16, &n.to_be_bytes(), value(n));
        }
        let runs = t.checkpoint().unwrap();
        // Key groups 64..128 go to the second of two subtasks.
        let mut half =
            KeyedTable::<Vec<u8>>::restore(dir.path(), "h", 1 << 20, 64..128, runs).unwrap();
        assert_eq!(
            half.get(70, &70u32.to_be_bytes()).unwrap(),
            Some(&value(70))
        );
        for _ in 0..MAX_RUNS {
            // Runs as large as the restored one together: the merge takes every run.
            half.put(64, b"x", vec![1; 20_000]);
            half.checkpoint().unwrap();
        }
        assert_eq!(half.stats().compactions, 1);
        let merged = half.checkpoint().unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(
            merged[0].run.key_groups.0, 64,
            "the merge dropped the other half's key groups"
        );
        // n % 128 in 64..128 for n < 1000: 7 * 64 + 40 keys, and "x".
        assert_eq!(merged[0].run.entries, 7 * 64 + 40 + 1);
    }

    /// Small runs over a large one merge among themselves (so a checkpoint does not re-upload
    /// the bulk), and a delete among them still hides the bulk's entry.
    #[test]
    fn a_partial_merge_leaves_the_bulk_and_keeps_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = KeyedTable::<Vec<u8>>::new(dir.path(), "p", 1 << 20, 0..128).unwrap();
        for n in 0..2000u32 {
            t.put((n % 128) as u16, &n.to_be_bytes(), value(n));
        }
        let bulk = t.checkpoint().unwrap()[0].run.name();
        t.delete(5, &5u32.to_be_bytes()).unwrap();
        t.checkpoint().unwrap();
        for i in 0..MAX_RUNS as u8 {
            t.put(1, b"x", vec![i]);
            t.checkpoint().unwrap();
        }
        assert_eq!(t.stats().compactions, 1);
        let runs = t.checkpoint().unwrap();
        assert_eq!(
            runs.last().unwrap().run.name(),
            bulk,
            "the bulk is left out"
        );
        assert!(runs.len() <= 3, "{} runs", runs.len());
        let mut r = KeyedTable::<Vec<u8>>::restore(dir.path(), "r", 1 << 20, 0..128, runs).unwrap();
        assert_eq!(r.get(5, &5u32.to_be_bytes()).unwrap(), None, "deleted");
        assert_eq!(r.get(6, &6u32.to_be_bytes()).unwrap(), Some(&value(6)));
        assert_eq!(r.get(1, b"x").unwrap(), Some(&vec![MAX_RUNS as u8 - 1]));
    }

    /// Rescaled twice: 1 subtask, then 2, then 1 again. Both halves list the first run, which
    /// holds every key group as it was; only the half that owns a key group may speak for it,
    /// so a key updated by the second half reads its new value, before and after a merge.
    #[test]
    fn after_two_rescales_a_key_reads_its_owners_value() {
        let dir = tempfile::tempdir().unwrap();
        let key = 70u32.to_be_bytes();
        let mut one = KeyedTable::<Vec<u8>>::new(dir.path(), "one", 1 << 20, 0..128).unwrap();
        one.put(70, &key, b"old".to_vec());
        one.put(3, b"k3", b"three".to_vec());
        let first = one.checkpoint().unwrap();
        let restore = |kgs: Range<u16>, runs: Vec<TableRun>| {
            KeyedTable::<Vec<u8>>::restore(dir.path(), "t", 1 << 20, kgs, runs).unwrap()
        };
        let mut low = restore(0..64, first.clone());
        let mut high = restore(64..128, first);
        high.put(70, &key, b"new".to_vec());
        let mut runs = low.checkpoint().unwrap();
        runs.extend(high.checkpoint().unwrap());
        let mut again = restore(0..128, runs);
        assert_eq!(again.get(70, &key).unwrap(), Some(&b"new".to_vec()));
        assert_eq!(again.get(3, b"k3").unwrap(), Some(&b"three".to_vec()));
        for i in 0..MAX_RUNS as u8 {
            again.put(5, &[i], vec![i]);
            again.checkpoint().unwrap();
        }
        assert_eq!(again.stats().compactions, 1);
        let merged = restore(0..128, again.checkpoint().unwrap());
        let mut merged = merged;
        assert_eq!(merged.get(70, &key).unwrap(), Some(&b"new".to_vec()));
        assert_eq!(merged.get(3, b"k3").unwrap(), Some(&b"three".to_vec()));
    }
}
