//! Sessions per key, shared by session assignment (payload: buffered rows) and session
//! aggregation (payload: accumulators).
//!
//! ```text
//! row (key, ts) ─▶ the key's sessions: merge every session that [ts, ts + gap] touches (Flink's
//!                  inclusive TimeWindow.intersects); none touched and ts + gap - 1 <= W → late
//! watermark W ─▶ sessions with end - 1 <= W close (a min-heap of (earliest end, key) finds them)
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use datafusion::common::{HashMap, Result};

/// What a session carries; merging sessions merges their payloads.
pub(crate) trait Payload: Sized {
    fn absorb(&mut self, other: Self) -> Result<()>;
}

pub(crate) struct Session<P> {
    /// Unique for the operator's lifetime.
    pub id: u64,
    pub start: i64,
    pub max_ts: i64,
    pub payload: P,
}

struct KeyState<P> {
    key: Box<[u8]>,
    /// Sorted by start, pairwise disjoint.
    sessions: Vec<Session<P>>,
    /// The end under which this key sits in the heap (<= its earliest session end).
    scheduled: i64,
}

pub(crate) struct SessionTable<P> {
    gap: i64,
    ids: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<KeyState<P>>>,
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    next_id: u64,
    open: usize,
    /// Sessions absorbed by another since the last `take_merges`: (absorbed id, into id).
    merges: Vec<(u64, u64)>,
}

impl<P: Payload> SessionTable<P> {
    pub fn new(gap: i64) -> Self {
        Self {
            gap,
            ids: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            next_id: 0,
            open: 0,
            merges: Vec::new(),
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }

    pub fn keys(&self) -> usize {
        self.ids.len()
    }

    pub fn slot_for(&mut self, key: &[u8]) -> usize {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let state = KeyState {
            key: key.into(),
            sessions: Vec::new(),
            scheduled: i64::MAX,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(state);
                id
            }
            None => {
                self.slots.push(Some(state));
                self.slots.len() - 1
            }
        };
        self.ids.insert(key.into(), id);
        id
    }

    /// Forgets a key that holds no session (e.g. created for a late row).
    pub fn release_if_empty(&mut self, slot: usize) {
        if self.slots[slot]
            .as_ref()
            .is_some_and(|s| s.sessions.is_empty())
        {
            let state = self.slots[slot].take().expect("live key");
            self.ids.remove(&state.key);
            self.free.push(slot);
        }
    }

    /// Adds a row at `ts` to the key in `slot`: the session it joins (after merging every session
    /// it touches), or `None` when it opens a session that is already late.
    pub fn insert(
        &mut self,
        slot: usize,
        ts: i64,
        watermark: i64,
        new: impl FnOnce() -> Result<P>,
    ) -> Result<Option<&mut Session<P>>> {
        let gap = self.gap;
        let state = self.slots[slot].as_mut().expect("live key");
        let first = state
            .sessions
            .iter()
            .position(|s| ts <= s.max_ts + gap && ts + gap >= s.start);
        let pos = match first {
            None => {
                if ts + gap - 1 <= watermark {
                    return Ok(None);
                }
                let pos = state.sessions.partition_point(|s| s.start < ts);
                state.sessions.insert(
                    pos,
                    Session {
                        id: self.next_id,
                        start: ts,
                        max_ts: ts,
                        payload: new()?,
                    },
                );
                self.next_id += 1;
                self.open += 1;
                pos
            }
            Some(first) => {
                // Touching sessions are consecutive (sorted and disjoint): fold the rest into the first.
                let mut last = first;
                while last + 1 < state.sessions.len()
                    && ts + gap >= state.sessions[last + 1].start
                    && ts <= state.sessions[last + 1].max_ts + gap
                {
                    last += 1;
                }
                let absorbed: Vec<Session<P>> = state.sessions.drain(first + 1..=last).collect();
                self.open -= absorbed.len();
                let s = &mut state.sessions[first];
                for m in absorbed {
                    s.start = s.start.min(m.start);
                    s.max_ts = s.max_ts.max(m.max_ts);
                    self.merges.push((m.id, s.id));
                    s.payload.absorb(m.payload)?;
                }
                s.start = s.start.min(ts);
                s.max_ts = s.max_ts.max(ts);
                first
            }
        };
        let end = state.sessions[pos].max_ts + gap;
        if end < state.scheduled {
            state.scheduled = end;
            self.heap.push(Reverse((end, slot)));
        }
        Ok(Some(&mut state.sessions[pos]))
    }

    /// Every open session with its key (for snapshots).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&[u8], &mut Session<P>)> {
        self.slots.iter_mut().flatten().flat_map(|k| {
            let key: &[u8] = &k.key;
            k.sessions.iter_mut().map(move |s| (key, s))
        })
    }

    /// Adds a session read back from a snapshot.
    pub fn load(&mut self, key: &[u8], start: i64, max_ts: i64, payload: P) {
        let slot = self.slot_for(key);
        let state = self.slots[slot].as_mut().expect("live key");
        let pos = state.sessions.partition_point(|s| s.start < start);
        state.sessions.insert(
            pos,
            Session {
                id: self.next_id,
                start,
                max_ts,
                payload,
            },
        );
        self.next_id += 1;
        self.open += 1;
        let end = max_ts + self.gap;
        if end < state.scheduled {
            state.scheduled = end;
            self.heap.push(Reverse((end, slot)));
        }
    }

    /// The merges since the last call.
    pub fn take_merges(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.merges)
    }

    /// The session with `id` of the key in `slot`.
    pub fn get_mut(&mut self, slot: usize, id: u64) -> Option<&mut Session<P>> {
        self.slots[slot]
            .as_mut()?
            .sessions
            .iter_mut()
            .find(|s| s.id == id)
    }

    /// Removes and returns every session with `end - 1 <= watermark`, with its key.
    pub fn close(&mut self, watermark: i64) -> Vec<(Box<[u8]>, Session<P>)> {
        let gap = self.gap;
        let mut closed = Vec::new();
        while let Some(Reverse((end, slot))) = self.heap.peek().copied() {
            if end - 1 > watermark {
                break;
            }
            self.heap.pop();
            let Some(state) = self.slots[slot].as_mut() else {
                continue;
            };
            if state.scheduled != end {
                continue; // stale entry: the key was rescheduled
            }
            let (done, open): (Vec<Session<P>>, Vec<Session<P>>) = state
                .sessions
                .drain(..)
                .partition(|s| s.max_ts + gap - 1 <= watermark);
            self.open -= done.len();
            closed.extend(done.into_iter().map(|s| (state.key.clone(), s)));
            state.sessions = open;
            match state.sessions.iter().map(|s| s.max_ts + gap).min() {
                Some(next) => {
                    state.scheduled = next;
                    self.heap.push(Reverse((next, slot)));
                }
                None => {
                    let state = self.slots[slot].take().expect("live key");
                    self.ids.remove(&state.key);
                    self.free.push(slot);
                }
            }
        }
        closed
    }
}
