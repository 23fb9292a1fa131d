//! Keys in Arrow's row format interned to dense ids (groups of an aggregation, join keys, TopN
//! partitions, upsert keys), and state TTL over them.

use std::hash::BuildHasher;
use std::time::Duration;

/// Keys interned to dense ids; ids of removed keys are reused.
pub(crate) struct Groups {
    table: hashbrown::HashTable<u32>,
    pub keys: Vec<Box<[u8]>>,
    /// Rows currently in each group (inserts minus retractions); a group with none is not live.
    pub live: Vec<i64>,
    pub free: Vec<u32>,
    /// Per id: whether it holds a key (not removed).
    alive: Vec<bool>,
    /// Per id: the clock when it was last written (only kept up with state TTL).
    written: Vec<i64>,
    /// The time writes are stamped with: set per batch by [`Ttl::due`].
    clock: i64,
    key_bytes: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Groups {
    pub fn new() -> Self {
        Self {
            table: hashbrown::HashTable::new(),
            keys: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            alive: Vec::new(),
            written: Vec::new(),
            clock: 0,
            key_bytes: 0,
            hasher: Default::default(),
        }
    }

    /// The group of `key`, created when new; `true` when it was created. Either way it counts
    /// as written now.
    pub fn intern(&mut self, key: &[u8]) -> (u32, bool) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(g) = self.table.find(hash, |g| &*keys[*g as usize] == key) {
            let g = *g;
            self.written[g as usize] = self.clock;
            return (g, false);
        }
        self.key_bytes += key.len();
        let g = match self.free.pop() {
            Some(g) => {
                self.keys[g as usize] = key.into();
                self.alive[g as usize] = true;
                self.written[g as usize] = self.clock;
                g
            }
            None => {
                self.keys.push(key.into());
                self.live.push(0);
                self.alive.push(true);
                self.written.push(self.clock);
                (self.keys.len() - 1) as u32
            }
        };
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.table
            .insert_unique(hash, g, |g| hasher.hash_one(&*keys[*g as usize]));
        (g, true)
    }

    /// The group of `key`, if it exists.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |g| &*self.keys[*g as usize] == key)
            .copied()
    }

    /// When group `g` was last written (the clock of [`Ttl::due`]; kept only with a TTL).
    pub fn written(&self, g: u32) -> i64 {
        self.written[g as usize]
    }

    pub fn remove(&mut self, g: u32) {
        if !self.alive[g as usize] {
            return;
        }
        let key = std::mem::take(&mut self.keys[g as usize]);
        self.key_bytes -= key.len();
        let hash = self.hasher.hash_one(&*key);
        if let Ok(entry) = self.table.find_entry(hash, |x| *x == g) {
            entry.remove();
        }
        self.live[g as usize] = 0;
        self.alive[g as usize] = false;
        self.free.push(g);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Approximate bytes, in constant time.
    pub fn size(&self) -> usize {
        self.key_bytes + self.keys.len() * 40 + self.table.capacity() * 4
    }
}

/// `table.exec.state.ttl`: a key not written for the TTL (processing time) is dropped with its
/// state, without retracting what it emitted, as in Flink. Sweeps run at most once per half
/// TTL, at the start of a batch, so a key lives between one TTL and one and a half.
pub(crate) struct Ttl {
    ttl_ms: i64,
    swept: i64,
}

impl Ttl {
    pub fn new(ttl: Option<Duration>) -> Option<Self> {
        let ttl_ms = ttl?.as_millis() as i64;
        (ttl_ms > 0).then_some(Self { ttl_ms, swept: 0 })
    }

    /// Stamps `groups`' writes from now on, and returns the groups to drop now (if a sweep is
    /// due).
    pub fn due(&mut self, groups: &mut Groups) -> Vec<u32> {
        let now = flowline_common::clock::now_millis();
        groups.clock = now;
        if self.swept == 0 {
            // Keys restored from a checkpoint count as written at the first batch.
            self.swept = now;
            groups.written.iter_mut().for_each(|w| *w = now);
            return Vec::new();
        }
        if now - self.swept < (self.ttl_ms / 2).max(1) {
            return Vec::new();
        }
        self.swept = now;
        let before = now - self.ttl_ms;
        (0..groups.len() as u32)
            .filter(|g| groups.alive[*g as usize] && groups.written[*g as usize] < before)
            .collect()
    }
}
