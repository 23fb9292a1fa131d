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

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, filter as filter_array, interleave, take};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{exec_err, HashMap, Result, ScalarValue};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::limits::BATCH_ROWS_MAX;

use crate::keygroups::KeyGroupFilter;
use crate::session_table::{Payload, Session, SessionTable};
use crate::{millis, LateRows, Operator, OperatorContext, OperatorFactory};

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
        write!(
            f,
            "SessionWindow(partition=[{}], time={}, gap={}ms)",
            keys.join(", "),
            self.time,
            self.gap_ms
        )
    }
}

impl OperatorFactory for SessionWindowSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SessionWindow::new(Arc::new(self.clone()), ctx)?))
    }
}

/// The rows of a session: (arena batch id, row).
type HeldRows = Vec<(u64, u32)>;

impl Payload for HeldRows {
    fn absorb(&mut self, mut other: Self) -> Result<()> {
        self.append(&mut other);
        Ok(())
    }
}

pub struct SessionWindow {
    spec: Arc<SessionWindowSpec>,
    converter: Option<RowConverter>,
    table: SessionTable<HeldRows>,
    /// Input batches still referenced by open sessions: id → (batch, referenced rows).
    arena: BTreeMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    watermark: i64,
    late: LateRows,
    /// Its key groups (a rescaled restore keeps only their sessions).
    env: crate::StateEnv,
}

/// A row converter for the PARTITION BY keys (None without keys).
pub(crate) fn key_converter(
    keys: &[Arc<dyn PhysicalExpr>],
    input: &Schema,
) -> Result<Option<RowConverter>> {
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(RowConverter::new(key_fields(keys, input)?)?))
}

fn key_fields(keys: &[Arc<dyn PhysicalExpr>], input: &Schema) -> Result<Vec<SortField>> {
    keys.iter()
        .map(|k| Ok(SortField::new(k.data_type(input)?)))
        .collect()
}

impl SessionWindow {
    pub fn new(spec: Arc<SessionWindowSpec>, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            converter: key_converter(&spec.keys, &Self::input(&spec))?,
            table: SessionTable::new(spec.gap_ms),
            spec,
            arena: BTreeMap::new(),
            next_batch: 0,
            watermark: NO_WATERMARK,
            late: LateRows::new(ctx.keep_late),
            env: ctx.state.clone(),
        })
    }

    /// The input's columns: the output's but the window columns.
    fn input(spec: &SessionWindowSpec) -> Schema {
        let n = spec.schema.fields().len() - 3;
        Schema::new(spec.schema.fields()[..n].to_vec())
    }

    /// Restores a snapshot's sessions and their rows; with `filter`, only the sessions whose
    /// key's key group is this subtask's.
    fn restore_owned(&mut self, state: &[u8], filter: Option<&mut KeyGroupFilter>) -> Result<()> {
        let batches = crate::decode_batches(state)?;
        let Some(meta) = batches.first() else {
            return Ok(());
        };
        let sessions = read_session_meta(meta)?;
        let owned = match filter {
            Some(f) => f.owns(sessions.iter().map(|(k, _, _)| k.as_slice()))?,
            None => vec![true; sessions.len()],
        };
        let mut payloads: Vec<HeldRows> = vec![Vec::new(); sessions.len()];
        if let Some(rows) = batches.get(1) {
            let owner = rows
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
            let keep: datafusion::arrow::array::BooleanArray = owner
                .values()
                .iter()
                .map(|o| Some(owned[*o as usize]))
                .collect();
            let rows = datafusion::arrow::compute::filter_record_batch(rows, &keep)?;
            let owner = rows
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
            for (i, o) in owner.values().iter().enumerate() {
                payloads[*o as usize].push((self.next_batch, i as u32));
            }
            if rows.num_rows() > 0 {
                let input = Arc::new(Self::input(&self.spec));
                let batch = RecordBatch::try_new(input, rows.columns()[1..].to_vec())?;
                self.arena.insert(self.next_batch, (batch, rows.num_rows()));
            }
            self.next_batch += 1;
        }
        for (((key, start, max_ts), payload), own) in sessions.into_iter().zip(payloads).zip(owned)
        {
            if own {
                self.table.load(&key, start, max_ts, payload);
            }
        }
        Ok(())
    }

    /// Closes every session with `end - 1 <= watermark` and emits its rows.
    fn fire(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let closed: Vec<Session<HeldRows>> = self
            .table
            .close(watermark)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        if closed.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in chunks(&closed, BATCH_ROWS_MAX) {
            out.push(self.emit(chunk)?);
        }
        for s in &closed {
            for (b, _) in &s.payload {
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

    fn emit(&self, sessions: &[Session<HeldRows>]) -> Result<RecordBatch> {
        let gap = self.spec.gap_ms;
        let mut batch_pos: HashMap<u64, usize> = HashMap::default();
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut picks = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for s in sessions {
            for (b, r) in &s.payload {
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
        columns.extend(window_columns(
            &starts,
            &ends,
            self.spec.schema.field(n_in + 2).data_type(),
        )?);
        crate::batch_of(&self.spec.schema, columns, picks.len())
    }
}

/// window_start, window_end and window_time (typed `time_type`) columns.
pub(crate) fn window_columns(
    starts: &[i64],
    ends: &[i64],
    time_type: &DataType,
) -> Result<Vec<ArrayRef>> {
    let times: TimestampMillisecondArray = ends.iter().map(|e| e - 1).collect::<Vec<i64>>().into();
    Ok(vec![
        Arc::new(TimestampMillisecondArray::from(starts.to_vec())) as ArrayRef,
        Arc::new(TimestampMillisecondArray::from(ends.to_vec())) as ArrayRef,
        cast(&(Arc::new(times) as ArrayRef), time_type)?,
    ])
}

/// Groups sessions into runs of about `rows` rows (a session is never split).
fn chunks(sessions: &[Session<HeldRows>], rows: usize) -> Vec<&[Session<HeldRows>]> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, s) in sessions.iter().enumerate() {
        if count > 0 && count + s.payload.len() > rows {
            out.push(&sessions[start..i]);
            start = i;
            count = 0;
        }
        count += s.payload.len();
    }
    if start < sessions.len() {
        out.push(&sessions[start..]);
    }
    out
}

/// Each row's time and, with PARTITION BY, its key in row format.
fn times_and_keys(
    batch: &RecordBatch,
    time: &Arc<dyn PhysicalExpr>,
    keys: &[Arc<dyn PhysicalExpr>],
    converter: Option<&RowConverter>,
) -> Result<(TimestampMillisecondArray, Option<Rows>)> {
    let rows = batch.num_rows();
    let times = millis(
        &time.evaluate(batch)?.into_array(rows)?,
        "the SESSION time attribute",
    )?;
    let key_rows = match converter {
        Some(conv) => {
            let cols = keys
                .iter()
                .map(|k| k.evaluate(batch).and_then(|v| v.into_array(rows)))
                .collect::<Result<Vec<_>>>()?;
            Some(conv.convert_columns(&cols)?)
        }
        None => None,
    };
    Ok((times, key_rows))
}

/// The session-table slot of row `i`'s key.
fn slot_of<P: Payload>(table: &mut SessionTable<P>, key_rows: &Option<Rows>, i: usize) -> usize {
    match key_rows {
        Some(k) => table.slot_for(k.row(i).as_ref()),
        None => table.slot_for(&[]),
    }
}

/// A session as a snapshot records it: (key, start, max_ts).
type SessionMeta = (Option<Box<[u8]>>, i64, i64);

/// Session metadata of a snapshot: `[key, start, max_ts]`, a row per session (a NULL key
/// without PARTITION BY).
fn session_meta(sessions: &[SessionMeta]) -> Result<RecordBatch> {
    let keys: BinaryArray = sessions.iter().map(|(k, _, _)| k.as_deref()).collect();
    let starts: Int64Array = sessions.iter().map(|(_, s, _)| Some(*s)).collect();
    let ends: Int64Array = sessions.iter().map(|(_, _, e)| Some(*e)).collect();
    crate::state_batch(
        vec![Arc::new(keys), Arc::new(starts), Arc::new(ends)],
        sessions.len(),
    )
}

/// Reads [`session_meta`] back: (key, start, max_ts) per session.
fn read_session_meta(b: &RecordBatch) -> Result<Vec<(Vec<u8>, i64, i64)>> {
    if b.num_columns() < 3 {
        return exec_err!("session state has too few columns");
    }
    let keys = b.column(0).as_binary::<i32>();
    let starts = b.column(1).as_primitive::<Int64Type>();
    let ends = b.column(2).as_primitive::<Int64Type>();
    Ok((0..b.num_rows())
        .map(|i| {
            (
                if keys.is_null(i) {
                    Vec::new()
                } else {
                    keys.value(i).to_vec()
                },
                starts.value(i),
                ends.value(i),
            )
        })
        .collect())
}

impl Operator for SessionWindow {
    /// Two batches: the sessions (key, start, max_ts), then every held row with its session's
    /// index in front.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut meta = Vec::new();
        let mut refs: Vec<(usize, usize)> = Vec::new();
        let mut owner: Vec<u32> = Vec::new();
        let arena: Vec<(u64, &RecordBatch)> =
            self.arena.iter().map(|(id, (b, _))| (*id, b)).collect();
        let position = |id: u64| arena.binary_search_by_key(&id, |(i, _)| *i).ok();
        let has_keys = self.converter.is_some();
        for (key, s) in self.table.iter_mut() {
            let idx = meta.len() as u32;
            meta.push((has_keys.then(|| key.into()), s.start, s.max_ts));
            for (b, row) in &s.payload {
                let Some(p) = position(*b) else {
                    return exec_err!("session window: a held row's batch is gone");
                };
                refs.push((p, *row as usize));
                owner.push(idx);
            }
        }
        let n = self.spec.schema.fields().len() - 3;
        let rows = if refs.is_empty() {
            None
        } else {
            let columns = (0..n)
                .map(|c| {
                    let arrays: Vec<&dyn Array> =
                        arena.iter().map(|(_, b)| b.column(c).as_ref()).collect();
                    interleave(&arrays, &refs)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let mut all: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(owner))];
            all.extend(columns);
            Some(crate::state_batch(all, refs.len())?)
        };
        let mut batches = vec![session_meta(&meta)?];
        batches.extend(rows);
        crate::encode_batches(&batches)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.restore_owned(state, None)
    }

    /// Every old subtask's sessions of this subtask's key groups.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        let fields = key_fields(&self.spec.keys, &Self::input(&self.spec))?;
        let mut filter = KeyGroupFilter::new(fields, &self.env)?;
        for s in states {
            self.restore_owned(s, Some(&mut filter))?;
        }
        Ok(())
    }

    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let (times, key_rows) = times_and_keys(
            &batch,
            &self.spec.time,
            &self.spec.keys,
            self.converter.as_ref(),
        )?;
        let id = self.next_batch;
        self.next_batch += 1;
        let mut referenced = 0;
        let mut late = Vec::new();
        for i in 0..rows {
            if times.is_null(i) {
                continue;
            }
            let slot = slot_of(&mut self.table, &key_rows, i);
            match self
                .table
                .insert(slot, times.value(i), self.watermark, || Ok(Vec::new()))?
            {
                Some(session) => {
                    session.payload.push((id, i as u32));
                    referenced += 1;
                }
                None => {
                    late.push(i as u32);
                    self.table.release_if_empty(slot);
                }
            }
        }
        self.table.take_merges();
        self.late.add(&batch, &late)?;
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
        self.fire(END_OF_TIME - self.spec.gap_ms)
    }

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        self.arena
            .values()
            .map(|(b, _)| b.get_array_memory_size())
            .sum::<usize>()
            + self.table.keys() * 64
    }

    fn open_windows(&self) -> usize {
        self.table.open()
    }
}

/// Where a column of a session aggregation's output comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SessionOutput {
    /// The i-th PARTITION BY key.
    Key(usize),
    Start,
    End,
    Time,
    /// The i-th aggregate.
    Aggregate(usize),
}

/// `GROUP BY keys, window_start, window_end` directly over a SESSION TVF: sessions keep one
/// accumulator per aggregate instead of their rows, so memory is per open session, not per row.
/// Merging sessions merges accumulator states, as Flink's merging windows do.
#[derive(Clone)]
pub struct SessionAggregateSpec {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub time: Arc<dyn PhysicalExpr>,
    pub gap_ms: i64,
    /// Over input rows (the window columns are not among their arguments).
    pub aggregates: Vec<crate::AggregateCall>,
    pub outputs: Vec<SessionOutput>,
    pub schema: SchemaRef,
    /// Schema of the input rows (for the key converter).
    pub input_schema: SchemaRef,
}

impl fmt::Debug for SessionAggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| a.expr.name().to_string())
            .collect();
        write!(
            f,
            "SessionAggregate(partition=[{}], time={}, gap={}ms, aggs=[{}])",
            keys.join(", "),
            self.time,
            self.gap_ms,
            aggs.join(", ")
        )
    }
}

impl OperatorFactory for SessionAggregateSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(SessionAggregate::new(
            Arc::new(self.clone()),
            ctx,
        )?))
    }
}

type Accumulators = Vec<Box<dyn Accumulator>>;

impl Payload for Accumulators {
    fn absorb(&mut self, other: Self) -> Result<()> {
        for (into, mut from) in self.iter_mut().zip(other) {
            let state = from
                .state()?
                .iter()
                .map(|v| v.to_array())
                .collect::<Result<Vec<_>>>()?;
            into.merge_batch(&state)?;
        }
        Ok(())
    }
}

pub struct SessionAggregate {
    spec: Arc<SessionAggregateSpec>,
    converter: Option<RowConverter>,
    table: SessionTable<Accumulators>,
    watermark: i64,
    late: LateRows,
    state_bytes: usize,
    /// Its key groups (a rescaled restore keeps only their sessions).
    env: crate::StateEnv,
}

impl SessionAggregate {
    pub fn new(spec: Arc<SessionAggregateSpec>, ctx: &OperatorContext) -> Result<Self> {
        Ok(Self {
            converter: key_converter(&spec.keys, &spec.input_schema)?,
            table: SessionTable::new(spec.gap_ms),
            spec,
            watermark: NO_WATERMARK,
            late: LateRows::new(ctx.keep_late),
            state_bytes: 0,
            env: ctx.state.clone(),
        })
    }

    /// Restores a snapshot's sessions; with `filter`, only those whose key's key group is this
    /// subtask's.
    fn restore_owned(
        &mut self,
        state: &[u8],
        mut filter: Option<&mut KeyGroupFilter>,
    ) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            let sessions = read_session_meta(&batch)?;
            let owned = match filter.as_deref_mut() {
                Some(f) => f.owns(sessions.iter().map(|(k, _, _)| k.as_slice()))?,
                None => vec![true; sessions.len()],
            };
            let states = crate::state_columns(&self.spec.aggregates, &batch, 3)?;
            for (i, (key, start, max_ts)) in sessions.into_iter().enumerate() {
                if !owned[i] {
                    continue;
                }
                let mut accs = Self::new_accumulators(&self.spec)?;
                for (acc, cols) in accs.iter_mut().zip(&states) {
                    let row: Vec<ArrayRef> = cols.iter().map(|c| c.slice(i, 1)).collect();
                    acc.merge_batch(&row)?;
                }
                self.table.load(&key, start, max_ts, accs);
            }
        }
        Ok(())
    }

    fn new_accumulators(spec: &SessionAggregateSpec) -> Result<Accumulators> {
        spec.aggregates
            .iter()
            .map(|a| a.expr.create_accumulator())
            .collect()
    }

    fn fire(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let mut closed = self.table.close(watermark);
        let mut out = Vec::new();
        for chunk in closed.chunks_mut(BATCH_ROWS_MAX) {
            out.push(self.emit(chunk)?);
        }
        Ok(out)
    }

    fn emit(&self, sessions: &mut [(Box<[u8]>, Session<Accumulators>)]) -> Result<RecordBatch> {
        let gap = self.spec.gap_ms;
        let keys = match &self.converter {
            Some(conv) => {
                let parser = conv.parser();
                conv.convert_rows(sessions.iter().map(|(k, _)| parser.parse(k)))?
            }
            None => Vec::new(),
        };
        let starts: Vec<i64> = sessions.iter().map(|(_, s)| s.start).collect();
        let ends: Vec<i64> = sessions.iter().map(|(_, s)| s.max_ts + gap).collect();
        let time_type = self
            .spec
            .outputs
            .iter()
            .position(|o| *o == SessionOutput::Time)
            .map_or(DataType::Timestamp(TimeUnit::Millisecond, None), |i| {
                self.spec.schema.field(i).data_type().clone()
            });
        let window = window_columns(&starts, &ends, &time_type)?;
        let mut aggs = Vec::with_capacity(self.spec.aggregates.len());
        for j in 0..self.spec.aggregates.len() {
            let values = sessions
                .iter_mut()
                .map(|(_, s)| s.payload[j].evaluate())
                .collect::<Result<Vec<ScalarValue>>>()?;
            aggs.push(ScalarValue::iter_to_array(values)?);
        }
        let columns = self
            .spec
            .outputs
            .iter()
            .map(|o| match o {
                SessionOutput::Key(i) => keys[*i].clone(),
                SessionOutput::Start => window[0].clone(),
                SessionOutput::End => window[1].clone(),
                SessionOutput::Time => window[2].clone(),
                SessionOutput::Aggregate(i) => aggs[*i].clone(),
            })
            .collect();
        crate::batch_of(&self.spec.schema, columns, sessions.len())
    }
}

impl Operator for SessionAggregate {
    /// The sessions (key, start, max_ts) with each aggregate's state columns after them. The
    /// accumulators are rebuilt from their state, since taking it may consume it.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let has_keys = self.converter.is_some();
        let mut meta = Vec::new();
        let mut states: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); self.spec.aggregates.len()];
        let spec = self.spec.clone();
        for (key, s) in self.table.iter_mut() {
            meta.push((has_keys.then(|| key.into()), s.start, s.max_ts));
            let mut fresh = Self::new_accumulators(&spec)?;
            for ((acc, new), out) in s
                .payload
                .iter_mut()
                .zip(fresh.iter_mut())
                .zip(states.iter_mut())
            {
                let state = acc.state()?;
                let arrays = state
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<_>>>()?;
                new.merge_batch(&arrays)?;
                out.push(state);
            }
            s.payload = fresh;
        }
        if meta.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = session_meta(&meta)?.columns().to_vec();
        for per_session in states {
            let width = per_session.first().map_or(0, Vec::len);
            for f in 0..width {
                columns.push(ScalarValue::iter_to_array(
                    per_session.iter().map(|s| s[f].clone()),
                )?);
            }
        }
        crate::encode_batches(&[crate::state_batch(columns, meta.len())?])
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.restore_owned(state, None)
    }

    /// Every old subtask's sessions of this subtask's key groups.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        let fields = key_fields(&self.spec.keys, &self.spec.input_schema)?;
        let mut filter = KeyGroupFilter::new(fields, &self.env)?;
        for s in states {
            self.restore_owned(s, Some(&mut filter))?;
        }
        Ok(())
    }

    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).and_then(|v| v.into_array(rows));
        let (times, key_rows) = times_and_keys(
            &batch,
            &self.spec.time,
            &self.spec.keys,
            self.converter.as_ref(),
        )?;
        // Assign rows to sessions first (merging as needed), then update each session's
        // accumulators once with all of its rows of this batch.
        let mut assigned: Vec<(u32, usize, u64)> = Vec::with_capacity(rows);
        let mut late = Vec::new();
        for i in 0..rows {
            if times.is_null(i) {
                continue;
            }
            let slot = slot_of(&mut self.table, &key_rows, i);
            let spec = &self.spec;
            match self
                .table
                .insert(slot, times.value(i), self.watermark, || {
                    Self::new_accumulators(spec)
                })? {
                Some(session) => assigned.push((i as u32, slot, session.id)),
                None => {
                    late.push(i as u32);
                    self.table.release_if_empty(slot);
                }
            }
        }
        let merged: HashMap<u64, u64> = self.table.take_merges().into_iter().collect();
        let resolve = |mut id: u64| {
            while let Some(next) = merged.get(&id) {
                id = *next;
            }
            id
        };
        let mut by_session: HashMap<(usize, u64), Vec<u32>> = HashMap::default();
        for (row, slot, id) in assigned {
            by_session.entry((slot, resolve(id))).or_default().push(row);
        }
        let args = self
            .spec
            .aggregates
            .iter()
            .map(|a| {
                a.expr
                    .expressions()
                    .iter()
                    .map(eval)
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .spec
            .aggregates
            .iter()
            .map(|a| {
                a.filter
                    .as_ref()
                    .map(|f| eval(f).map(|m| m.as_boolean().clone()))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        for ((slot, id), idx) in by_session {
            let Some(session) = self.table.get_mut(slot, id) else {
                return exec_err!("session aggregate: session {id} vanished within a batch");
            };
            let all = idx.len() == rows;
            let idx = UInt32Array::from(idx);
            for ((acc, values), filter) in session.payload.iter_mut().zip(&args).zip(&filters) {
                let mut values = if all {
                    values.clone()
                } else {
                    values
                        .iter()
                        .map(|v| take(v, &idx, None))
                        .collect::<std::result::Result<Vec<_>, _>>()?
                };
                if let Some(f) = filter {
                    let f = if all {
                        f.clone()
                    } else {
                        take(f, &idx, None)?.as_boolean().clone()
                    };
                    values = values
                        .iter()
                        .map(|v| filter_array(v, &f))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                }
                acc.update_batch(&values)?;
            }
        }
        self.late.add(&batch, &late)?;
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, ts: i64) -> Result<Vec<RecordBatch>> {
        if ts <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = ts;
        let out = self.fire(ts);
        self.state_bytes =
            self.table.open() * (64 + 64 * self.spec.aggregates.len()) + self.table.keys() * 64;
        out
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        let out = self.fire(END_OF_TIME - self.spec.gap_ms);
        self.state_bytes = 0;
        out
    }

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    /// An estimate: per open session its bounds and accumulators, per key its entry.
    fn state_bytes(&self) -> usize {
        self.state_bytes
    }

    fn open_windows(&self) -> usize {
        self.table.open()
    }
}

#[cfg(test)]
mod tests;
