//! SESSION window assignment: rows are held per key until their session closes, then emitted with
//! `window_start`, `window_end` and `window_time` appended (the window aggregation after it, if
//! any, treats them like any other window).
//!
//! ```text
//! row (key, ts) ─▶ key's sessions: merge every session that [ts, ts + gap] touches (Flink's
//!                  inclusive TimeWindow.intersects); no session touched and ts + gap - 1 <= W → late
//! watermark W ─▶ sessions with end - 1 <= W close: their rows are gathered (arrow `interleave`)
//! ```
//!
//! Rows stay in the input batches they came in (an arena with reference counts); a session holds
//! (batch, row) pairs, so memory is the rows of open sessions plus the batches they pin.
//! A min-heap of (earliest session end, key) finds what to close without scanning every key.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, HashMap, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::limits::BATCH_ROWS_MAX;

use crate::{Operator, OperatorContext, OperatorFactory};

#[derive(Clone)]
pub struct SessionWindowSpec {
    /// `PARTITION BY` expressions over input rows (empty: one sequence of sessions).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The time attribute.
    pub time: Arc<dyn PhysicalExpr>,
    pub gap_ms: i64,
    /// Input columns followed by window_start, window_end, window_time.
    pub schema: SchemaRef,
}

impl fmt::Debug for SessionWindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(f, "SessionWindow(partition=[{}], time={}, gap={}ms)", keys.join(", "), self.time, self.gap_ms)
    }
}

impl OperatorFactory for SessionWindowSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SessionWindow::new(Arc::new(self.clone()), ctx.keep_late)?))
    }
}

struct Session {
    start: i64,
    max_ts: i64,
    /// (arena batch id, row)
    rows: Vec<(u64, u32)>,
}

struct KeyState {
    key: Box<[u8]>,
    /// Sorted by start, pairwise disjoint.
    sessions: Vec<Session>,
    /// The end under which this key sits in the heap (<= its earliest session end).
    scheduled: i64,
}

pub struct SessionWindow {
    spec: Arc<SessionWindowSpec>,
    converter: Option<RowConverter>,
    ids: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<KeyState>>,
    free: Vec<usize>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// Input batches still referenced by open sessions: id → (batch, referenced rows).
    arena: BTreeMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    watermark: i64,
    late_rows: u64,
    keep_late: bool,
    late: Vec<RecordBatch>,
    open: usize,
}

impl SessionWindow {
    pub fn new(spec: Arc<SessionWindowSpec>, keep_late: bool) -> Result<Self> {
        let converter = if spec.keys.is_empty() {
            None
        } else {
            let n = spec.schema.fields().len() - 3;
            let input = Arc::new(datafusion::arrow::datatypes::Schema::new(spec.schema.fields()[..n].to_vec()));
            let fields = spec.keys.iter().map(|k| Ok(SortField::new(k.data_type(&input)?))).collect::<Result<Vec<_>>>()?;
            Some(RowConverter::new(fields)?)
        };
        Ok(Self {
            spec,
            converter,
            ids: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            arena: BTreeMap::new(),
            next_batch: 0,
            watermark: i64::MIN,
            late_rows: 0,
            keep_late,
            late: Vec::new(),
            open: 0,
        })
    }

    fn slot_for(&mut self, key: &[u8]) -> usize {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let state = KeyState { key: key.into(), sessions: Vec::new(), scheduled: i64::MAX };
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

    /// Adds one row; false when it is late.
    fn insert(&mut self, slot: usize, ts: i64, at: (u64, u32)) -> bool {
        let gap = self.spec.gap_ms;
        let state = self.slots[slot].as_mut().expect("live key");
        let touching: Vec<usize> =
            (0..state.sessions.len()).filter(|i| ts <= state.sessions[*i].max_ts + gap && ts + gap >= state.sessions[*i].start).collect();
        let end = match touching.first() {
            None => {
                if ts + gap - 1 <= self.watermark {
                    return false;
                }
                let pos = state.sessions.partition_point(|s| s.start < ts);
                state.sessions.insert(pos, Session { start: ts, max_ts: ts, rows: vec![at] });
                self.open += 1;
                ts + gap
            }
            Some(&first) => {
                // Touching sessions are consecutive (sorted and disjoint): fold the rest into the first.
                let last = *touching.last().expect("non-empty");
                let mut merged: Vec<Session> = state.sessions.drain(first + 1..=last).collect();
                self.open -= merged.len();
                let s = &mut state.sessions[first];
                for m in merged.iter_mut() {
                    s.start = s.start.min(m.start);
                    s.max_ts = s.max_ts.max(m.max_ts);
                    s.rows.append(&mut m.rows);
                }
                s.start = s.start.min(ts);
                s.max_ts = s.max_ts.max(ts);
                s.rows.push(at);
                s.max_ts + gap
            }
        };
        if end < state.scheduled {
            state.scheduled = end;
            self.heap.push(Reverse((end, slot)));
        }
        true
    }

    /// Closes every session with `end - 1 <= watermark` and emits its rows.
    fn fire(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let gap = self.spec.gap_ms;
        let mut closed: Vec<Session> = Vec::new();
        while let Some(Reverse((end, slot))) = self.heap.peek().copied() {
            if end - 1 > watermark {
                break;
            }
            self.heap.pop();
            let Some(state) = self.slots[slot].as_mut() else { continue };
            if state.scheduled != end {
                continue; // stale entry: the key was rescheduled
            }
            let (done, open): (Vec<Session>, Vec<Session>) = state.sessions.drain(..).partition(|s| s.max_ts + gap - 1 <= watermark);
            self.open -= done.len();
            closed.extend(done);
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
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in chunks(&closed, BATCH_ROWS_MAX) {
            out.push(self.emit(chunk)?);
        }
        for s in &closed {
            for (b, _) in &s.rows {
                if let Some(entry) = self.arena.get_mut(b) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        self.arena.remove(b);
                    }
                }
            }
        }
        Ok(out)
    }

    fn emit(&self, sessions: &[Session]) -> Result<RecordBatch> {
        let gap = self.spec.gap_ms;
        let mut batch_pos: HashMap<u64, usize> = HashMap::default();
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut picks = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for s in sessions {
            for (b, r) in &s.rows {
                let pos = *batch_pos.entry(*b).or_insert_with(|| {
                    batches.push(&self.arena[b].0);
                    batches.len() - 1
                });
                picks.push((pos, *r as usize));
                starts.push(s.start);
                ends.push(s.max_ts + gap);
            }
        }
        let n_in = self.spec.schema.fields().len() - 3;
        let mut columns = Vec::with_capacity(n_in + 3);
        for c in 0..n_in {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(interleave(&arrays, &picks)?);
        }
        let time_type = self.spec.schema.field(n_in + 2).data_type().clone();
        let times: TimestampMillisecondArray = ends.iter().map(|e| e - 1).collect::<Vec<i64>>().into();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)) as ArrayRef);
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)) as ArrayRef);
        columns.push(cast(&(Arc::new(times) as ArrayRef), &time_type)?);
        let columns = columns
            .into_iter()
            .zip(self.spec.schema.fields())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.spec.schema.clone(), columns)?)
    }
}

/// Groups sessions into runs of about `rows` rows (a session is never split).
fn chunks(sessions: &[Session], rows: usize) -> Vec<&[Session]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, s) in sessions.iter().enumerate() {
        if count > 0 && count + s.rows.len() > rows {
            out.push(&sessions[start..i]);
            start = i;
            count = 0;
        }
        count += s.rows.len();
    }
    if start < sessions.len() {
        out.push(&sessions[start..]);
    }
    out
}

fn millis(a: &ArrayRef) -> Result<TimestampMillisecondArray> {
    match a.data_type() {
        DataType::Timestamp(_, _) => Ok(cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?.as_primitive::<TimestampMillisecondType>().clone()),
        other => exec_err!("SESSION time attribute must be a timestamp, got {other}"),
    }
}

impl Operator for SessionWindow {
    fn on_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let times = millis(&self.spec.time.evaluate(&batch)?.into_array(rows)?)?;
        let key_rows = match &self.converter {
            Some(conv) => {
                let cols = self.spec.keys.iter().map(|k| k.evaluate(&batch).and_then(|v| v.into_array(rows))).collect::<Result<Vec<_>>>()?;
                Some(conv.convert_columns(&cols)?)
            }
            None => None,
        };
        let id = self.next_batch;
        self.next_batch += 1;
        let mut referenced = 0;
        let mut late = Vec::new();
        for i in 0..rows {
            if times.is_null(i) {
                continue;
            }
            let slot = match &key_rows {
                Some(k) => self.slot_for(k.row(i).as_ref()),
                None => self.slot_for(&[]),
            };
            if self.insert(slot, times.value(i), (id, i as u32)) {
                referenced += 1;
            } else {
                self.late_rows += 1;
                if self.keep_late {
                    late.push(i);
                }
                // A key created for a late row has no session: forget it.
                if self.slots[slot].as_ref().is_some_and(|s| s.sessions.is_empty()) {
                    let state = self.slots[slot].take().expect("live key");
                    self.ids.remove(&state.key);
                    self.free.push(slot);
                }
            }
        }
        if !late.is_empty() {
            let mut mask = vec![false; rows];
            late.into_iter().for_each(|i| mask[i] = true);
            self.late.push(filter_record_batch(&batch, &BooleanArray::from(mask))?);
        }
        if referenced > 0 {
            self.arena.insert(id, (batch, referenced));
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, ts: i64) -> Result<Vec<RecordBatch>> {
        if ts <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = ts;
        self.fire(ts)
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        self.fire(i64::MAX - self.spec.gap_ms)
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn state_bytes(&self) -> usize {
        self.arena.values().map(|(b, _)| b.get_array_memory_size()).sum::<usize>() + self.ids.len() * 64
    }

    fn open_windows(&self) -> usize {
        self.open
    }
}
