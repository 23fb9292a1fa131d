//! Window TopN and window deduplication: `ROW_NUMBER() OVER (PARTITION BY window_start,
//! window_end, ... ORDER BY ...) ... WHERE rn <= N` over a window TVF (or a window aggregation),
//! as Flink's `WindowRank` and `WindowDeduplicate`. Each window's top N rows per partition are
//! emitted once, when the watermark passes the window's end; the output is append-only.
//!
//! ```text
//! rows ─▶ by window end ─▶ per partition: the N first rows by (sort key, arrival)
//!      ──watermark ≥ end - 1──▶ each partition's rows with their row number; the window dropped
//! ```
//!
//! Equal sort keys rank in arrival order; deduplication keeping the last row (N = 1, ordered by a
//! time attribute descending) ranks the later arrival first, as in Flink. A row whose window has
//! fired is late: dropped and counted.
//!
//! State: per open window and partition at most N rows, in Arrow's row format. A checkpoint, or
//! rows past half the state budget, freeze them into a state table (window_parts.rs) as state
//! rows `[window end, partition key, sort key, tie, row]`, one entry per (window, freeze, key
//! group); the top N of a partition is the top N of its frozen and live tops, so a window with
//! frozen rows fires a chunk of key groups at a time by offering them again. The table spills,
//! checkpoints only new entries and hands key groups out on a rescale.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int64Array, RecordBatch, UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, DataFusionError, Result};

use flowline_state::table::TableStats;

use crate::rank::RankSpec;
use crate::window_parts::{self, take_chunk, WindowParts};
use crate::{LateRows, Operator, OperatorContext, OperatorFactory, StateEnv, TableRuns};

/// The state table: frozen tops of open windows (window_parts.rs).
const TABLE: &str = "windows";

/// The plan of a window TopN: a TopN over an append-only input whose PARTITION BY holds the
/// window's bounds.
#[derive(Clone)]
pub struct WindowRankSpec {
    /// PARTITION BY (window bounds included), ORDER BY, N, tie order, the input and output
    /// columns (the output has no change kind).
    pub rank: RankSpec,
    /// The input's `window_end` column.
    pub end: usize,
    /// PARTITION BY without the window bounds: what the exchange routes rows by.
    pub route: Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
}

impl fmt::Debug for WindowRankSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.rank.limit == 1 {
            "WindowDeduplicate"
        } else {
            "WindowTopN"
        };
        write!(
            f,
            "{what}(partition=[{}], order=[{}], rn<={}) -> append-only",
            self.rank.partition_list(),
            self.rank.order_list(),
            self.rank.limit
        )
    }
}

impl OperatorFactory for WindowRankSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let spec = &self.rank;
        let converter =
            |fields: Result<Vec<SortField>>| Ok::<_, DataFusionError>(RowConverter::new(fields?)?);
        Ok(Box::new(WindowRank {
            partitions: converter(
                spec.partition
                    .iter()
                    .map(|e| e.data_type(&spec.input).map(SortField::new))
                    .collect(),
            )?,
            order: converter(
                spec.order
                    .iter()
                    .map(|(e, o)| {
                        e.data_type(&spec.input)
                            .map(|t| SortField::new_with_options(t, *o))
                    })
                    .collect(),
            )?,
            rows: converter(Ok(spec
                .input
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()))?,
            spec: Arc::new(self.clone()),
            windows: BTreeMap::new(),
            parts: WindowParts::new(ctx, TABLE, "window-rank", ctx.state.budget / 2)?,
            env: ctx.state.clone(),
            firing: VecDeque::new(),
            watermark: NO_WATERMARK,
            seq: 0,
            bytes: 0,
            late: LateRows::new(ctx.keep_late),
        }))
    }
}

/// A row's place in its partition: (sort key, arrival tie-break), and the row.
type Ranked = ((Box<[u8]>, u64), Box<[u8]>);

/// One window's partitions, in order of first arrival.
#[derive(Default)]
struct Window {
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    /// Per partition: at most N rows, sorted.
    tops: Vec<Vec<Ranked>>,
}

impl Window {
    /// Offers a row to its partition; it is kept if it ranks within the first `limit`. The
    /// change in bytes held.
    fn offer(&mut self, limit: usize, key: &[u8], sort: &[u8], tie: u64, row: &[u8]) -> isize {
        let mut bytes = 0;
        let p = match self.index.get(key) {
            Some(p) => *p,
            None => {
                self.index.insert(key.into(), self.tops.len());
                self.keys.push(key.into());
                self.tops.push(Vec::with_capacity(limit.min(16) + 1));
                bytes += (2 * key.len() + 64) as isize;
                self.tops.len() - 1
            }
        };
        let top = &mut self.tops[p];
        if top.len() >= limit {
            let ((last, last_tie), _) = top.last().expect("not empty");
            if (sort, tie) > (&**last, *last_tie) {
                return bytes;
            }
        }
        let at = top.partition_point(|((s, t), _)| (&**s, *t) < (sort, tie));
        top.insert(at, ((sort.into(), tie), row.into()));
        bytes += (sort.len() + row.len() + 32) as isize;
        if top.len() > limit {
            let ((s, _), r) = top.pop().expect("longer than the limit");
            bytes -= (s.len() + r.len() + 32) as isize;
        }
        bytes
    }

    /// Offers every row of a state batch (`[end, key, sort, tie, row]`).
    fn offer_state(&mut self, limit: usize, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != 5 {
            return exec_err!(
                "window TopN: the checkpoint's state has {} columns, expected 5",
                batch.num_columns()
            );
        }
        let keys = batch.column(1).as_binary::<i32>();
        let sorts = batch.column(2).as_binary::<i32>();
        let ties = batch.column(3).as_primitive::<UInt64Type>();
        let rows = batch.column(4).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            self.offer(
                limit,
                keys.value(i),
                sorts.value(i),
                ties.value(i),
                rows.value(i),
            );
        }
        Ok(())
    }

    /// Its rows as one state batch `[end, key, sort, tie, row]`.
    fn state(&self, end: i64) -> Result<RecordBatch> {
        let mut rows = StateRows::default();
        for (key, top) in self.keys.iter().zip(&self.tops) {
            for ((sort, tie), row) in top {
                rows.push(end, key, sort, *tie, row);
            }
        }
        rows.finish()
    }

    fn bytes(&self) -> usize {
        self.tops
            .iter()
            .flatten()
            .map(|((s, _), r)| s.len() + r.len() + 32)
            .sum::<usize>()
            + self.keys.iter().map(|k| 2 * k.len() + 64).sum::<usize>()
    }
}

/// A due window being fired (see [`WindowRank::step`]): its tops in memory, and once frozen
/// for a chunked firing, their state rows with their key groups.
type Firing = window_parts::Firing<Window, (RecordBatch, Vec<u16>)>;

pub struct WindowRank {
    spec: Arc<WindowRankSpec>,
    partitions: RowConverter,
    order: RowConverter,
    rows: RowConverter,
    /// Per window end: the tops since the last freeze.
    windows: BTreeMap<i64, Window>,
    /// Frozen tops, by window (end, 0).
    parts: WindowParts,
    env: StateEnv,
    /// Due windows not fired whole yet (the runtime drains them before the next message).
    firing: VecDeque<Firing>,
    watermark: i64,
    /// Arrival counter: the tie-break between equal sort keys.
    seq: u64,
    /// Bytes of the tops in `windows`.
    bytes: usize,
    late: LateRows,
}

impl WindowRank {
    fn tie(&mut self) -> u64 {
        self.seq += 1;
        if self.spec.rank.later_first {
            u64::MAX - self.seq
        } else {
            self.seq
        }
    }

    /// The exchange's key columns of state rows (their input rows decoded).
    fn route(&self, state: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.spec.route.is_empty() {
            return Ok(Vec::new());
        }
        let rows = state.column(4).as_binary::<i32>();
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(rows.iter().flatten().map(|r| parser.parse(r)))?;
        let options = datafusion::arrow::array::RecordBatchOptions::new()
            .with_row_count(Some(state.num_rows()));
        let input =
            RecordBatch::try_new_with_options(self.spec.rank.input.clone(), columns, &options)?;
        self.spec
            .route
            .iter()
            .map(|e| {
                e.evaluate(&input)
                    .and_then(|v| v.into_array(input.num_rows()))
            })
            .collect()
    }

    /// Moves every window's tops into the table under a new freeze number.
    fn freeze_all(&mut self) -> Result<()> {
        self.parts.next_freeze();
        for (end, window) in std::mem::take(&mut self.windows) {
            let state = window.state(end)?;
            let keys = self.route(&state)?;
            self.parts.put((end, 0), 0, &state, &keys)?;
        }
        self.bytes = 0;
        for key in self.parts.due_for_compaction() {
            self.compact(key)?;
        }
        Ok(())
    }

    /// Merges a window's frozen tops into one part per key group (each partition's top N of
    /// them), a chunk of key groups at a time.
    fn compact(&mut self, key: (i64, i64)) -> Result<()> {
        for chunk in window_parts::chunks(self.env.key_groups.clone()) {
            let mut window = Window::default();
            for (_, batch) in self.parts.take(key, chunk)? {
                window.offer_state(self.spec.rank.limit, &batch)?;
            }
            if !window.keys.is_empty() {
                let state = window.state(key.0)?;
                let keys = self.route(&state)?;
                self.parts.put(key, 0, &state, &keys)?;
            }
        }
        self.parts.compacted(key);
        Ok(())
    }

    /// A window's rows with their row numbers.
    fn emit(&self, window: &Window) -> Result<Option<RecordBatch>> {
        let mut rns = Vec::new();
        let mut rows: Vec<&[u8]> = Vec::new();
        for top in &window.tops {
            for (i, (_, row)) in top.iter().enumerate() {
                rns.push(i as u64 + 1);
                rows.push(row);
            }
        }
        let n = rows.len();
        if n == 0 {
            return Ok(None);
        }
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        columns.push(Arc::new(UInt64Array::from(rns)));
        Ok(Some(crate::batch_of(&self.spec.rank.schema, columns, n)?))
    }

    /// Fires every window ending at or before `until + 1`: queues them, and returns the first
    /// part ([`Operator::pending`] gives the rest).
    fn fire(&mut self, until: i64) -> Result<Vec<RecordBatch>> {
        let Some(bound) = until.checked_add(2) else {
            return Ok(Vec::new());
        };
        let keep = self.windows.split_off(&bound);
        let live = std::mem::replace(&mut self.windows, keep);
        self.bytes = self
            .bytes
            .saturating_sub(live.values().map(Window::bytes).sum::<usize>());
        let live = live.into_iter().map(|(end, w)| ((end, 0), w));
        let first = self.env.key_groups.start;
        let due = self.parts.due(live, (bound, i64::MIN), first);
        self.firing.extend(due);
        Ok(self.step()?.unwrap_or_default())
    }

    /// The next part of the windows being fired: a window without frozen rows whole, or one
    /// chunk of key groups of a window with frozen rows (its tops of those key groups, in
    /// memory and frozen, offered again and emitted). `None` when all have fired.
    fn step(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let mut out = Vec::new();
        let limit = self.spec.rank.limit;
        while out.is_empty() {
            let Some(mut f) = self.firing.pop_front() else {
                return Ok(None);
            };
            if !f.stored {
                if let Some(b) = f.live.take().map(|w| self.emit(&w)).transpose()?.flatten() {
                    crate::push_sliced(&mut out, b);
                }
                continue;
            }
            if let Some(w) = f.live.take() {
                let state = w.state(f.window.0)?;
                let keys = self.route(&state)?;
                f.sorted = Some(self.parts.by_key_group(&state, &keys)?);
            }
            let (chunk, last) = f.chunk(&self.env.key_groups);
            let mut window = Window::default();
            if let Some(sorted) = f.sorted.as_mut() {
                window.offer_state(limit, &take_chunk(sorted, chunk.end, last))?;
            }
            for (_, batch) in self.parts.take(f.window, chunk.clone())? {
                window.offer_state(limit, &batch)?;
            }
            if let Some(b) = self.emit(&window)? {
                crate::push_sliced(&mut out, b);
            }
            if !last {
                f.next = chunk.end;
                self.firing.push_front(f);
            }
        }
        Ok(Some(out))
    }
}

impl Operator for WindowRank {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let eval =
            |exprs: &mut dyn Iterator<Item = &Arc<dyn datafusion::physical_expr::PhysicalExpr>>| {
                exprs
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<ArrayRef>>>()
            };
        let keys = self
            .partitions
            .convert_columns(&eval(&mut spec.rank.partition.iter())?)?;
        let sorts = self
            .order
            .convert_columns(&eval(&mut spec.rank.order.iter().map(|(e, _)| e))?)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let ends = crate::millis(batch.column(spec.end), "window_end")?;
        let mut late = Vec::new();
        for i in 0..n {
            match ends.is_valid(i).then(|| ends.value(i)) {
                Some(end) if end - 1 > self.watermark => {
                    let tie = self.tie();
                    let added = self.windows.entry(end).or_default().offer(
                        spec.rank.limit,
                        keys.row(i).as_ref(),
                        sorts.row(i).as_ref(),
                        tie,
                        rows.row(i).as_ref(),
                    );
                    self.bytes = self.bytes.saturating_add_signed(added);
                }
                _ => late.push(i as u32),
            }
        }
        self.late.add(&batch, &late)?;
        if self.bytes > self.env.budget / 2 {
            self.freeze_all()?;
            self.parts.spill_if_over_budget()?;
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
        self.fire(END_OF_TIME - 2)
    }

    fn pending(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        self.step()
    }

    /// The tops are frozen into the table, and the table is checkpointed as runs (what changed
    /// since the last checkpoint); its own bytes list the windows the table holds, then the
    /// arrival counter.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        if !self.firing.is_empty() {
            return exec_err!("window TopN: a checkpoint while windows are still firing");
        }
        self.freeze_all()?;
        let mut state = self.parts.checkpoint()?;
        state.extend_from_slice(&self.seq.to_le_bytes());
        Ok(state)
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.parts.runs()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.parts.restore_tables(tables)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        let Some(at) = state.len().checked_sub(8) else {
            return exec_err!("window TopN: the checkpoint's state is truncated");
        };
        // The largest arrival number: after a rescale, later rows rank after every old one.
        let seq = u64::from_le_bytes(state[at..].try_into().expect("8 bytes"));
        self.seq = self.seq.max(seq);
        self.parts.restore(&state[..at], "window TopN")
    }

    /// Every old subtask's windows (the table serves this subtask's key groups of them).
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        for s in states {
            self.restore(s)?;
        }
        Ok(())
    }

    fn table_stats(&self) -> TableStats {
        self.parts.stats()
    }

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        self.bytes + self.parts.stats().memory_bytes as usize
    }

    fn open_windows(&self) -> usize {
        self.windows
            .keys()
            .filter(|end| !self.parts.stored(&(**end, 0)))
            .count()
            + self.parts.windows().count()
    }
}

/// State rows being gathered into a batch of `[window end, partition key, sort key, tie, row]`.
#[derive(Default)]
struct StateRows {
    ends: Vec<i64>,
    keys: BinaryBuilder,
    sorts: BinaryBuilder,
    ties: UInt64Builder,
    rows: BinaryBuilder,
}

impl StateRows {
    fn push(&mut self, end: i64, key: &[u8], sort: &[u8], tie: u64, row: &[u8]) {
        self.ends.push(end);
        self.keys.append_value(key);
        self.sorts.append_value(sort);
        self.ties.append_value(tie);
        self.rows.append_value(row);
    }

    /// The rows gathered so far, as one state batch; starts over empty.
    fn finish(&mut self) -> Result<RecordBatch> {
        let n = self.ends.len();
        crate::state_batch(
            vec![
                Arc::new(Int64Array::from(std::mem::take(&mut self.ends))),
                Arc::new(self.keys.finish()),
                Arc::new(self.sorts.finish()),
                Arc::new(self.ties.finish()),
                Arc::new(self.rows.finish()),
            ],
            n,
        )
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, sorted_rows, step_both, Harness};

    /// `ROW_NUMBER() OVER (PARTITION BY k, ws, we ORDER BY v DESC) AS rn ... WHERE rn <= 2` over
    /// a window TVF's rows.
    fn top2() -> WindowRankSpec {
        let input = schema("k:str v:i64 ws:ts we:ts");
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        let column = |name: &str, i: usize| -> Arc<dyn datafusion::physical_expr::PhysicalExpr> {
            Arc::new(Column::new(name, i))
        };
        WindowRankSpec {
            rank: RankSpec {
                partition: vec![column("k", 0), column("ws", 2), column("we", 3)],
                order: vec![(
                    column("v", 1),
                    SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                )],
                limit: 2,
                later_first: false,
                input,
                updating_input: false,
                schema: Arc::new(Schema::new(fields)),
                state_ttl: None,
            },
            end: 3,
            route: vec![column("k", 0)],
        }
    }

    #[test]
    fn each_window_emits_its_top_rows_once_when_it_closes() {
        Harness::new(top2())
            .rows(
                0,
                "k:str v:i64 ws:ts we:ts
                 a     1     0     10
                 a     5     0     10
                 a     5     0     10
                 a     3     0     10
                 NULL  2     0     10
                 a     9     10    20",
            )
            .watermark(8)
            .expect("")
            // Ties rank by arrival; a NULL key is a partition of its own; [10, 20) stays open.
            .watermark(9)
            .expect_unordered(
                "k v ws we rn
                 a 5 0 10 1
                 a 5 0 10 2
                 NULL 2 0 10 1",
            )
            .end()
            .expect(
                "k v ws we rn
                 a 9 10 20 1",
            );
    }

    #[test]
    fn rows_of_a_closed_window_are_late_and_a_restart_keeps_open_windows() {
        let mut h = Harness::new(top2());
        h.rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     4     10    20",
        )
        .watermark(9)
        .expect("")
        .rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     6     10    20",
        )
        .restart()
        .rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     7     0     10
             b     5     10    20",
        )
        .watermark(19)
        .expect(
            "k v ws we rn
             b 6 10 20 1
             b 5 10 20 2",
        );
        assert_eq!(h.late_rows(), 1, "the row of [0, 10) after watermark 9");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// With a budget of a few rows (tops frozen into the table at almost every batch, the
        /// table on disk) the window TopN emits what an unbounded one does, through batches of
        /// any size, watermarks and restarts anywhere. Values repeat, so ties rank by arrival.
        #[test]
        fn a_spilling_window_top_n_gives_the_same_rows(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..15, 0i64..6, 0i64..30), 0..30),
                 proptest::bool::weighted(0.2),
                 0i64..12),
                1..20,
            )
        ) {
            let mut unbounded = Harness::new(top2());
            let mut spilling = Harness::with_budget(top2(), 3000);
            let mut watermark = -1;
            for (rows, restart, advance) in steps {
                let mut text = String::from("k:str v:i64 ws:ts we:ts\n");
                for (k, v, at) in rows {
                    let ws = (watermark.max(0) + at) / 10 * 10;
                    text += &format!("k{k} {v} {ws} {}\n", ws + 10);
                }
                watermark += advance;
                let (got, spilled) = step_both(&mut unbounded, &mut spilling, 0, &text, restart, watermark);
                proptest::prop_assert_eq!(&spilled, &got);
            }
            spilling.end();
            unbounded.end();
            proptest::prop_assert_eq!(sorted_rows(&spilling.take_table()), sorted_rows(&unbounded.take_table()));
            proptest::prop_assert_eq!(spilling.late_rows(), unbounded.late_rows());
        }
    }
}
