//! OVER aggregations: `agg(x) OVER (PARTITION BY k ORDER BY t ROWS|RANGE BETWEEN ... PRECEDING
//! AND CURRENT ROW)` over an append-only stream, as Flink's over aggregate: every input row comes
//! out once, with the aggregates over its frame appended. The output is append-only.
//!
//! ```text
//! rows ─▶ pending (time > watermark)      rows at or before the watermark on arrival: late
//!   ──watermark W──▶ the pending rows with time ≤ W, sorted by time (arrival order among equals)
//!   ─▶ rounds: round k takes the k-th step of every partition (a row; for RANGE, all its rows
//!      of one time), adds it to the accumulators, retracts the rows leaving the frame, and
//!      evaluates the touched partitions at once ─▶ output rows
//! ```
//!
//! Ordered by a `PROCTIME()` column, rows are computed as they arrive, in arrival order (rows of
//! one batch share their processing time: RANGE peers).
//!
//! Frames: `ROWS BETWEEN n PRECEDING` holds the current row and the n rows before it in its
//! partition; `RANGE BETWEEN INTERVAL d PRECEDING` the rows whose time is within d before the
//! current row's, its peers (rows of the same time) included; `UNBOUNDED PRECEDING` every row so
//! far (nothing is retracted, so no rows are kept). Bounded frames keep their rows' aggregate
//! arguments in the batches they arrived in (a batch is freed when its last row leaves every
//! frame). A RANGE frame's rows older than the watermark minus d can be in no later frame: they
//! are retracted at the watermark, and a partition left empty is dropped.
//!
//! The accumulators are the group aggregation's retracting ones (COUNT, SUM, AVG, MIN, MAX, with
//! DISTINCT and FILTER).

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{
    concat, concat_batches, filter_record_batch, interleave, nullif, take,
};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;

use crate::group_agg::{counted_rows, new_acc, Acc, GroupAggregateCall};
use crate::groups::{Groups, Ttl};
use crate::keygroups::KeyGroupFilter;
use crate::{LateRows, Operator, OperatorContext, OperatorFactory};

/// The frame of an OVER window, from its start to the current row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (`None`: UNBOUNDED PRECEDING).
    Rows(Option<u64>),
    /// `RANGE BETWEEN INTERVAL d PRECEDING AND CURRENT ROW`, d in ms (`None`: UNBOUNDED).
    Range(Option<i64>),
}

impl OverFrame {
    fn bounded(self) -> bool {
        matches!(self, Self::Rows(Some(_)) | Self::Range(Some(_)))
    }
}

impl fmt::Display for OverFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rows(None) => write!(f, "ROWS UNBOUNDED PRECEDING"),
            Self::Rows(Some(n)) => write!(f, "ROWS {n} PRECEDING"),
            Self::Range(None) => write!(f, "RANGE UNBOUNDED PRECEDING"),
            Self::Range(Some(d)) => write!(f, "RANGE {d}ms PRECEDING"),
        }
    }
}

/// The plan of an OVER aggregation; the planner builds it, each subtask creates its operator.
#[derive(Clone)]
pub struct OverAggregateSpec {
    /// PARTITION BY (none: one partition).
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY time attribute: a column of the input.
    pub time: usize,
    /// The time attribute is a `PROCTIME()` column: rows are computed as they arrive (in
    /// arrival order), and the watermark does not hold them.
    pub proctime: bool,
    pub frame: OverFrame,
    pub aggregates: Vec<GroupAggregateCall>,
    /// Output: the input's columns, then one column per aggregate.
    pub schema: SchemaRef,
    /// `table.exec.state.ttl`: partitions not written for this long are dropped.
    pub state_ttl: Option<std::time::Duration>,
}

impl fmt::Debug for OverAggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        // The plan's names repeat the whole window after each function: show the call only.
        let aggs: Vec<&str> = self
            .aggregates
            .iter()
            .map(|a| {
                let name = a.name.as_str();
                let cut = [" PARTITION BY ", " ORDER BY ", " ROWS ", " RANGE "]
                    .iter()
                    .filter_map(|k| name.find(k))
                    .min();
                &name[..cut.unwrap_or(name.len())]
            })
            .collect();
        let time = if self.proctime { " (proctime)" } else { "" };
        write!(
            f,
            "OverAggregate(partition=[{}], order={}{time}, {}, aggs=[{}])",
            partition.join(", "),
            self.schema.field(self.time).name(),
            self.frame,
            aggs.join(", ")
        )
    }
}

impl OperatorFactory for OverAggregateSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(OverAggregate::new(Arc::new(self.clone()), ctx)?))
    }
}

/// A row in a bounded frame: its time and where its aggregate arguments are.
#[derive(Clone, Copy)]
struct FrameRow {
    time: i64,
    chunk: u64,
    row: u32,
}

/// The aggregate arguments of rows released together (FILTER applied: rows it drops are NULL),
/// and how many of them are still in a frame.
struct Chunk {
    args: Vec<ArrayRef>,
    live: usize,
}

pub struct OverAggregate {
    spec: Arc<OverAggregateSpec>,
    /// Partition keys ↔ row format; `None` without PARTITION BY.
    keys: Option<RowConverter>,
    /// Partitions; `live` is 1 for a partition that exists.
    groups: Groups,
    accs: Vec<Box<dyn Acc>>,
    /// Per partition, the rows of its frame (bounded frames only), oldest first.
    frames: Vec<VecDeque<FrameRow>>,
    chunks: HashMap<u64, Chunk>,
    next_chunk: u64,
    /// Rows waiting for the watermark to pass their time.
    pending: Vec<RecordBatch>,
    watermark: i64,
    late: LateRows,
    ttl: Option<Ttl>,
    /// Its key groups (a rescaled restore keeps only their partitions).
    env: crate::StateEnv,
}

impl OverAggregate {
    pub fn new(spec: Arc<OverAggregateSpec>, ctx: &OperatorContext) -> Result<Self> {
        let input = spec.schema.clone();
        let keys = if spec.partition.is_empty() {
            None
        } else {
            let fields = spec
                .partition
                .iter()
                .map(|e| Ok(SortField::new(e.data_type(&input)?)))
                .collect::<Result<Vec<_>>>()?;
            Some(RowConverter::new(fields)?)
        };
        let accs = spec
            .aggregates
            .iter()
            .map(|a| new_acc(a, spec.frame.bounded()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            ttl: Ttl::new(spec.state_ttl),
            spec,
            keys,
            groups: Groups::new(),
            accs,
            frames: Vec::new(),
            chunks: HashMap::new(),
            next_chunk: 0,
            pending: Vec::new(),
            watermark: NO_WATERMARK,
            late: LateRows::new(ctx.keep_late),
            env: ctx.state.clone(),
        })
    }

    /// A filter of partition keys by this subtask's key groups.
    fn key_group_filter(&self) -> Result<KeyGroupFilter> {
        let fields = self
            .spec
            .partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&self.spec.schema)?)))
            .collect::<Result<Vec<_>>>()?;
        KeyGroupFilter::new(fields, &self.env)
    }

    /// The partition of each row of `batch`, created where new.
    fn partitions(&mut self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let n = batch.num_rows();
        let rows = match &self.keys {
            Some(conv) => {
                let cols = self
                    .spec
                    .partition
                    .iter()
                    .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<_>>>()?;
                Some(conv.convert_columns(&cols)?)
            }
            None => None,
        };
        let mut gids = Vec::with_capacity(n);
        for i in 0..n {
            let (g, created) = match &rows {
                Some(rows) => self.groups.intern(rows.row(i).as_ref()),
                None => self.groups.intern(&[]),
            };
            if created {
                self.grow();
                self.groups.live[g as usize] = 1;
            }
            gids.push(g);
        }
        Ok(gids)
    }

    fn grow(&mut self) {
        let n = self.groups.len();
        self.accs.iter_mut().for_each(|a| a.resize(n));
        self.frames.resize_with(n, VecDeque::new);
    }

    fn remove_partition(&mut self, g: u32) {
        for r in std::mem::take(&mut self.frames[g as usize]) {
            self.release_chunk_row(r.chunk);
        }
        self.groups.remove(g);
        self.accs.iter_mut().for_each(|a| a.reset(g));
    }

    fn release_chunk_row(&mut self, chunk: u64) {
        if let Some(c) = self.chunks.get_mut(&chunk) {
            c.live -= 1;
            if c.live == 0 {
                self.chunks.remove(&chunk);
            }
        }
    }

    /// Each aggregate's argument over `batch`, with the rows its FILTER drops set to NULL (every
    /// supported aggregate skips NULLs, so a frame row needs no separate mask).
    fn arguments(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        self.spec
            .aggregates
            .iter()
            .map(|a| {
                let values = a.arg.evaluate(batch)?.into_array(n)?;
                match &a.filter {
                    None => Ok(values),
                    Some(f) => {
                        let keep = f.evaluate(batch)?.into_array(n)?;
                        let keep = keep.as_boolean();
                        // NULL or false: dropped.
                        let drop =
                            BooleanArray::from_iter(keep.iter().map(|k| Some(k != Some(true))));
                        Ok(nullif(&values, &drop)?)
                    }
                }
            })
            .collect()
    }

    /// Each aggregate's arguments of `rows`, gathered from the chunks they arrived in.
    fn frame_arguments<'a>(
        &self,
        rows: impl Iterator<Item = &'a FrameRow>,
    ) -> Result<Vec<ArrayRef>> {
        let mut at: HashMap<u64, usize> = HashMap::new();
        let mut chunk_ids: Vec<u64> = Vec::new();
        let indices: Vec<(usize, usize)> = rows
            .map(|r| {
                let c = *at.entry(r.chunk).or_insert_with(|| {
                    chunk_ids.push(r.chunk);
                    chunk_ids.len() - 1
                });
                (c, r.row as usize)
            })
            .collect();
        (0..self.accs.len())
            .map(|a| {
                let arrays: Vec<&dyn Array> = chunk_ids
                    .iter()
                    .map(|c| self.chunks[c].args[a].as_ref())
                    .collect();
                Ok(interleave(&arrays, &indices)?)
            })
            .collect()
    }

    /// Retracts frame rows `(partition, row)` from the accumulators and frees their chunks.
    fn retract(&mut self, rows: &[(u32, FrameRow)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let values = self.frame_arguments(rows.iter().map(|(_, r)| r))?;
        let gids: Vec<u32> = rows.iter().map(|(g, _)| *g).collect();
        let adds = vec![false; rows.len()];
        for (acc, values) in self.accs.iter_mut().zip(&values) {
            let counted = counted_rows(values, None);
            acc.update(values, &gids, &adds, counted.as_ref())?;
        }
        for (_, r) in rows {
            self.release_chunk_row(r.chunk);
        }
        Ok(())
    }

    /// Computes and emits the pending rows whose time is at most `until`.
    fn release(&mut self, until: i64) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let all = concat_batches(&self.spec_input(), &self.pending)?;
            self.pending.clear();
            let times = crate::millis(all.column(self.spec.time), "the OVER window's time")?;
            let ready_mask =
                BooleanArray::from_iter(times.iter().map(|t| Some(t.is_some_and(|t| t <= until))));
            let rest = filter_record_batch(&all, &datafusion::arrow::compute::not(&ready_mask)?)?;
            if rest.num_rows() > 0 {
                self.pending.push(rest);
            }
            let ready = filter_record_batch(&all, &ready_mask)?;
            if ready.num_rows() > 0 {
                out.push(self.compute(&ready)?);
            }
        }
        if let (OverFrame::Range(Some(d)), false) = (self.spec.frame, self.spec.proctime) {
            // Rows at or before `until - d` are in no later row's frame.
            self.evict_before(until.saturating_sub(d))?;
        }
        let mut sliced = Vec::new();
        for b in out {
            crate::push_sliced(&mut sliced, b);
        }
        Ok(sliced)
    }

    fn spec_input(&self) -> SchemaRef {
        self.pending[0].schema()
    }

    /// The output rows for `ready` (every row's time at or before the watermark).
    fn compute(&mut self, ready: &RecordBatch) -> Result<RecordBatch> {
        let expired = match &mut self.ttl {
            Some(ttl) => ttl.due(&mut self.groups),
            None => Vec::new(),
        };
        for g in expired {
            self.remove_partition(g);
        }
        let n = ready.num_rows();
        let times = crate::millis(ready.column(self.spec.time), "the OVER window's time")?;
        let times = times.values();
        let gids = self.partitions(ready)?;
        let args = self.arguments(ready)?;

        // Time order (stable: arrival order among equal times), then each row's step in its
        // partition: a row, or for RANGE all rows of one time.
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|i| times[*i as usize]);
        let range = matches!(self.spec.frame, OverFrame::Range(_));
        let mut last: HashMap<u32, (i64, u32)> = HashMap::new();
        let mut step = vec![0u32; n];
        let mut rounds = 0usize;
        for &i in &order {
            let (g, t) = (gids[i as usize], times[i as usize]);
            let s = match last.get(&g) {
                None => 0,
                Some((lt, ls)) if range && *lt == t => *ls,
                Some((_, ls)) => ls + 1,
            };
            last.insert(g, (t, s));
            step[i as usize] = s;
            rounds = rounds.max(s as usize + 1);
        }
        // Rows grouped by step, time order kept within a step (a counting sort).
        let mut starts = vec![0usize; rounds + 1];
        for s in &step {
            starts[*s as usize + 1] += 1;
        }
        for k in 1..=rounds {
            starts[k] += starts[k - 1];
        }
        let mut by_step = vec![0u32; n];
        let mut fill = starts.clone();
        for &i in &order {
            let s = step[i as usize] as usize;
            by_step[fill[s]] = i;
            fill[s] += 1;
        }

        let chunk = self.next_chunk;
        if self.spec.frame.bounded() {
            self.next_chunk += 1;
            self.chunks.insert(
                chunk,
                Chunk {
                    args: args.clone(),
                    live: 0,
                },
            );
        }
        let mut values: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(rounds); self.accs.len()];
        let mut slot: HashMap<u32, u32> = HashMap::new();
        for k in 0..rounds {
            let rows = &by_step[starts[k]..starts[k + 1]];
            let idx = UInt32Array::from(rows.to_vec());
            let round_gids: Vec<u32> = rows.iter().map(|i| gids[*i as usize]).collect();
            let adds = vec![true; rows.len()];
            for (acc, arg) in self.accs.iter_mut().zip(&args) {
                let v = take(arg, &idx, None)?;
                let counted = counted_rows(&v, None);
                acc.update(&v, &round_gids, &adds, counted.as_ref())?;
            }
            if self.spec.frame.bounded() {
                let mut leaving = Vec::new();
                for (&i, &g) in rows.iter().zip(&round_gids) {
                    let t = times[i as usize];
                    let frame = &mut self.frames[g as usize];
                    frame.push_back(FrameRow {
                        time: t,
                        chunk,
                        row: i,
                    });
                    match self.spec.frame {
                        OverFrame::Rows(Some(p)) => {
                            while frame.len() as u64 > p + 1 {
                                leaving.push((g, frame.pop_front().expect("frame row")));
                            }
                        }
                        OverFrame::Range(Some(d)) => {
                            while frame.front().is_some_and(|r| r.time < t.saturating_sub(d)) {
                                leaving.push((g, frame.pop_front().expect("frame row")));
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(c) = self.chunks.get_mut(&chunk) {
                    c.live += rows.len();
                }
                self.retract(&leaving)?;
            }
            // Each touched partition evaluated once; its rows (RANGE peers) share the value.
            slot.clear();
            let mut uniq = Vec::new();
            let positions: Vec<u32> = round_gids
                .iter()
                .map(|g| {
                    *slot.entry(*g).or_insert_with(|| {
                        uniq.push(*g);
                        (uniq.len() - 1) as u32
                    })
                })
                .collect();
            let positions = (uniq.len() < rows.len()).then(|| UInt32Array::from(positions));
            for (a, acc) in self.accs.iter_mut().enumerate() {
                let v = acc.evaluate(&uniq)?;
                let v = match &positions {
                    Some(p) => take(&v, p, None)?,
                    None => v,
                };
                values[a].push(v);
            }
        }
        if let Some(c) = self.chunks.get(&chunk) {
            if c.live == 0 {
                self.chunks.remove(&chunk);
            }
        }

        let by_step = UInt32Array::from(by_step);
        let mut columns = ready
            .columns()
            .iter()
            .map(|c| take(c, &by_step, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for v in values {
            let parts: Vec<&dyn Array> = v.iter().map(|a| a.as_ref()).collect();
            columns.push(concat(&parts)?);
        }
        crate::batch_of(&self.spec.schema, columns, n)
    }

    /// Retracts every frame row with time at most `before`; drops partitions left empty.
    fn evict_before(&mut self, before: i64) -> Result<()> {
        let mut leaving = Vec::new();
        let mut emptied = Vec::new();
        for (g, frame) in self.frames.iter_mut().enumerate() {
            if frame.front().is_none_or(|r| r.time > before) {
                continue;
            }
            while frame.front().is_some_and(|r| r.time <= before) {
                leaving.push((g as u32, frame.pop_front().expect("frame row")));
            }
            if frame.is_empty() {
                emptied.push(g as u32);
            }
        }
        self.retract(&leaving)?;
        for g in emptied {
            self.remove_partition(g);
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    flowline_common::clock::now_millis()
}

impl OverAggregate {
    /// Restores a snapshot; with `filter`, only the partitions (and waiting rows) whose key's
    /// key group is this subtask's.
    fn restore_owned(
        &mut self,
        state: &[u8],
        mut filter: Option<&mut KeyGroupFilter>,
    ) -> Result<()> {
        let mut sections = crate::read_sections(state, 3, "OVER aggregate")?;
        let frames = sections.pop().expect("three sections");
        let partitions = sections.pop().expect("three sections");
        for batch in sections.pop().expect("three sections") {
            let batch = match filter.as_deref_mut() {
                Some(f) => {
                    let n = batch.num_rows();
                    let columns = self
                        .spec
                        .partition
                        .iter()
                        .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
                        .collect::<Result<Vec<_>>>()?;
                    let keep = BooleanArray::from(f.owns_columns(&columns, n)?);
                    datafusion::arrow::compute::filter_record_batch(&batch, &keep)?
                }
                None => batch,
            };
            self.pending.push(batch);
        }
        let width = self.accs.len();
        for batch in partitions {
            if batch.num_columns() != 1 + width {
                return exec_err!(
                    "OVER aggregate: the checkpoint's state has {} columns, this query needs {}",
                    batch.num_columns(),
                    1 + width
                );
            }
            let keys = batch.column(0).as_binary::<i32>();
            let owned = match filter.as_deref_mut() {
                Some(f) => f.owns(keys.iter().map(|k| k.unwrap_or_default()))?,
                None => vec![true; batch.num_rows()],
            };
            for i in (0..batch.num_rows()).filter(|i| owned[*i]) {
                let (g, _) = self.groups.intern(keys.value(i));
                self.grow();
                self.groups.live[g as usize] = 1;
                for (a, acc) in self.accs.iter_mut().enumerate() {
                    let mut bytes = batch.column(1 + a).as_binary::<i32>().value(i);
                    acc.load(g, &mut bytes)?;
                }
            }
        }
        for batch in frames {
            if batch.num_columns() != 2 + width {
                return exec_err!(
                    "OVER aggregate: the checkpoint's frame rows do not fit this query"
                );
            }
            let batch = match filter.as_deref_mut() {
                Some(f) => {
                    let keys = batch.column(0).as_binary::<i32>();
                    let owned = f.owns(keys.iter().map(|k| k.unwrap_or_default()))?;
                    datafusion::arrow::compute::filter_record_batch(
                        &batch,
                        &BooleanArray::from(owned),
                    )?
                }
                None => batch,
            };
            let chunk = self.next_chunk;
            self.next_chunk += 1;
            let keys = batch.column(0).as_binary::<i32>();
            let times = batch.column(1).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let Some(g) = self.groups.find(keys.value(i)) else {
                    return exec_err!(
                        "OVER aggregate: a frame row of the checkpoint has no partition"
                    );
                };
                self.frames[g as usize].push_back(FrameRow {
                    time: times.value(i),
                    chunk,
                    row: i as u32,
                });
            }
            self.chunks.insert(
                chunk,
                Chunk {
                    args: batch.columns()[2..].to_vec(),
                    live: batch.num_rows(),
                },
            );
        }
        Ok(())
    }
}

impl Operator for OverAggregate {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        if self.spec.proctime {
            self.pending.push(batch);
            return self.release(END_OF_TIME);
        }
        let times = crate::millis(batch.column(self.spec.time), "the OVER window's time")?;
        let mut late = Vec::new();
        let keep = BooleanArray::from_iter(times.iter().enumerate().map(|(i, t)| {
            let on_time = t.is_some_and(|t| t > self.watermark);
            if !on_time {
                late.push(i as u32);
            }
            Some(on_time)
        }));
        if late.is_empty() {
            self.pending.push(batch);
        } else {
            self.late.add(&batch, &late)?;
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() > 0 {
                self.pending.push(kept);
            }
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, ts: i64) -> Result<Vec<RecordBatch>> {
        if self.spec.proctime {
            // Rows come later than now: older RANGE frame rows are in no later frame.
            if let OverFrame::Range(Some(d)) = self.spec.frame {
                self.evict_before(now_ms().saturating_sub(d).saturating_sub(1))?;
            }
            return Ok(Vec::new());
        }
        if ts <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = ts;
        self.release(ts)
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        self.release(END_OF_TIME)
    }

    /// Three length-prefixed sections: the pending rows; a batch `[key, one state column per
    /// aggregate]` with a row per partition; and the bounded frames' rows as
    /// `[key, time, one argument column per aggregate]`, oldest first per partition.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        crate::push_section(&mut out, &self.pending)?;

        let live: Vec<u32> = (0..self.groups.len() as u32)
            .filter(|g| self.groups.live[*g as usize] > 0)
            .collect();
        let mut keys = BinaryBuilder::new();
        let mut states: Vec<BinaryBuilder> =
            self.accs.iter().map(|_| BinaryBuilder::new()).collect();
        let mut scratch = Vec::new();
        for g in &live {
            keys.append_value(&self.groups.keys[*g as usize]);
            for (acc, b) in self.accs.iter().zip(states.iter_mut()) {
                scratch.clear();
                acc.save(*g, &mut scratch);
                b.append_value(&scratch);
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(keys.finish())];
        columns.extend(states.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        crate::push_section(&mut out, &[crate::state_batch(columns, live.len())?])?;

        let mut frame_batches = Vec::new();
        let rows: Vec<(u32, FrameRow)> = live
            .iter()
            .flat_map(|g| self.frames[*g as usize].iter().map(move |r| (*g, *r)))
            .collect();
        if !rows.is_empty() {
            let mut keys = BinaryBuilder::new();
            for (g, _) in &rows {
                keys.append_value(&self.groups.keys[*g as usize]);
            }
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(keys.finish()),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|(_, r)| r.time),
                )),
            ];
            columns.extend(self.frame_arguments(rows.iter().map(|(_, r)| r))?);
            frame_batches.push(crate::state_batch(columns, rows.len())?);
        }
        crate::push_section(&mut out, &frame_batches)?;
        Ok(out)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.restore_owned(state, None)
    }

    /// Every old subtask's partitions (and waiting rows) of this subtask's key groups.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        let mut filter = self.key_group_filter()?;
        for s in states {
            self.restore_owned(s, Some(&mut filter))?;
        }
        Ok(())
    }

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        let pending: usize = self.pending.iter().map(|b| b.get_array_memory_size()).sum();
        let chunks: usize = self
            .chunks
            .values()
            .flat_map(|c| c.args.iter().map(|a| a.get_array_memory_size()))
            .sum();
        let frames: usize = self.frames.iter().map(|f| f.len() * 24).sum();
        self.groups.size()
            + self.accs.iter().map(|a| a.size()).sum::<usize>()
            + pending
            + chunks
            + frames
    }

    fn open_windows(&self) -> usize {
        self.groups.len() - self.groups.free.len()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::Harness;
    use crate::AggFunction;

    /// `SUM(v) OVER (PARTITION BY k ORDER BY t ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)`.
    fn spec() -> OverAggregateSpec {
        OverAggregateSpec {
            partition: vec![Arc::new(Column::new("k", 0))],
            time: 2,
            proctime: false,
            frame: OverFrame::Rows(Some(1)),
            aggregates: vec![GroupAggregateCall {
                function: AggFunction::Sum,
                distinct: false,
                arg: Arc::new(Column::new("v", 1)),
                arg_type: DataType::Int64,
                filter: None,
                output: DataType::Int64,
                name: "s".into(),
            }],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("v", DataType::Int64, true),
                Field::new(
                    "t",
                    DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
                    true,
                ),
                Field::new("s", DataType::Int64, true),
            ])),
            state_ttl: None,
        }
    }

    #[test]
    fn rows_wait_for_the_watermark_and_are_computed_in_time_order() {
        Harness::new(spec())
            // Out of order: the row at 20 arrives before the one at 10.
            .rows(
                0,
                "k:str v:i64 t:ts
                 a     2     20
                 a     1     10
                 b     5     15",
            )
            .expect("")
            .watermark(15)
            .expect_unordered(
                "k v t s
                 a 1 10 1
                 b 5 15 5",
            )
            .restart()
            .rows(
                0,
                "k:str v:i64 t:ts
                 a     4     30",
            )
            .end()
            // The frame is the row before and this one: 1 + 2, then 2 + 4.
            .expect(
                "k v t s
                 a 2 20 3
                 a 4 30 6",
            );
    }
}
