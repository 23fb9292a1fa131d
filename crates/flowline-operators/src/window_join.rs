//! Window joins: two window TVF results (or window aggregations over them) joined on
//! `window_start` and `window_end` and other equalities, as Flink's window join. Each window's
//! rows wait until the watermark passes the window's end; then the window is joined once
//! (INNER, LEFT, RIGHT or FULL: unmatched rows padded with NULLs; SEMI or ANTI: the rows of one
//! input that have, or have not, a match in the window, once each) and forgotten. The output is
//! append-only.
//!
//! ```text
//! rows ─▶ by window end, per input ──watermark ≥ end - 1──▶ hash join of the window's rows
//!      ─▶ pairs passing the rest of ON, then outer rows ─▶ emitted; the window's state dropped
//! ```
//!
//! A row whose window has already fired is late: dropped and counted.
//!
//! Rows wait in memory; a checkpoint, or waiting rows past half the state budget, freeze them
//! into a state table (window_parts.rs), one entry per (window, input, freeze, key group): the
//! table spills, checkpoints only new entries and hands key groups out on a rescale. A window
//! with frozen rows fires a chunk of key groups at a time (rows that join share their key, so
//! their key group): its rows of those key groups, in memory and frozen, joined and emitted.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;

use flowline_state::table::TableStats;

use crate::join::JoinKind;
use crate::pairs::{eval_keys, filter_mask, pairs_schema};
use crate::window_parts::{self, take_chunk, WindowParts};
use crate::{LateRows, Operator, OperatorContext, OperatorFactory, StateEnv, TableRuns};

/// The state table: frozen rows of open windows (window_parts.rs).
const TABLE: &str = "windows";

/// The plan of a window join; the planner builds it, each subtask creates its operator.
#[derive(Clone)]
pub struct WindowJoinSpec {
    /// Any kind: inner, outer, semi or anti.
    pub kind: JoinKind,
    /// Per input: the equi-join key, window columns included.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per input: its columns.
    pub inputs: [SchemaRef; 2],
    /// Per input: its `window_end` column.
    pub ends: [usize; 2],
    /// The ON condition but the equalities, over left then right columns.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The left columns then the right ones (only the kept input's for semi and anti).
    pub schema: SchemaRef,
}

impl fmt::Debug for WindowJoinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys =
            |i: usize| -> Vec<String> { self.keys[i].iter().map(|k| k.to_string()).collect() };
        write!(
            f,
            "WindowJoin({:?}, left=[{}], right=[{}]{})",
            self.kind,
            keys(0).join(", "),
            keys(1).join(", "),
            if self.filter.is_some() {
                ", filter"
            } else {
                ""
            }
        )
    }
}

impl OperatorFactory for WindowJoinSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let fields = self.keys[0]
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&self.inputs[0])?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(WindowJoin {
            spec: Arc::new(self.clone()),
            conv: RowConverter::new(fields)?,
            pairs: pairs_schema(&self.inputs[0], &self.inputs[1]),
            windows: BTreeMap::new(),
            live_bytes: 0,
            parts: WindowParts::new(ctx, TABLE, "window-join", ctx.state.budget / 2)?,
            env: ctx.state.clone(),
            firing: VecDeque::new(),
            watermark: NO_WATERMARK,
            late: LateRows::new(ctx.keep_late),
        }))
    }
}

/// A due window being joined (see [`WindowJoin::step`]): each input's rows in memory, and once
/// frozen for a chunked join, per input the rows in key-group order with their key groups.
type Firing = window_parts::Firing<[Vec<RecordBatch>; 2], [(RecordBatch, Vec<u16>); 2]>;

pub struct WindowJoin {
    spec: Arc<WindowJoinSpec>,
    conv: RowConverter,
    pairs: SchemaRef,
    /// Per window end: each input's rows in memory.
    windows: BTreeMap<i64, [Vec<RecordBatch>; 2]>,
    /// Bytes of the rows in `windows`.
    live_bytes: usize,
    /// Frozen rows, by window (end, 0) and input (the tag).
    parts: WindowParts,
    env: StateEnv,
    /// Due windows not joined whole yet (the runtime drains them before the next message).
    firing: VecDeque<Firing>,
    watermark: i64,
    late: LateRows,
}

impl WindowJoin {
    fn outer(&self, side: usize) -> bool {
        matches!(
            (self.spec.kind, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        )
    }

    /// Files the rows of `batch` under their windows; rows of fired windows are late.
    fn add(&mut self, side: usize, batch: RecordBatch, check_late: bool) -> Result<()> {
        let ends = crate::millis(batch.column(self.spec.ends[side]), "window_end")?;
        let mut by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late = Vec::new();
        for (i, end) in ends.iter().enumerate() {
            match end {
                Some(e) if !check_late || e - 1 > self.watermark => {
                    by_end.entry(e).or_default().push(i as u32)
                }
                _ => late.push(i as u32),
            }
        }
        self.late.add(&batch, &late)?;
        if by_end.len() == 1 && late.is_empty() {
            let (end, _) = by_end.pop_first().expect("one window");
            self.live_bytes += batch.get_array_memory_size();
            self.windows.entry(end).or_default()[side].push(batch);
            return Ok(());
        }
        for (end, rows) in by_end {
            let part =
                datafusion::arrow::compute::take_record_batch(&batch, &UInt32Array::from(rows))?;
            self.live_bytes += part.get_array_memory_size();
            self.windows.entry(end).or_default()[side].push(part);
        }
        Ok(())
    }

    /// The join key columns of input `side`'s rows: the exchange routed them by these.
    fn keys(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let rows = batch.num_rows();
        self.spec.keys[side]
            .iter()
            .map(|k| k.evaluate(batch).and_then(|v| v.into_array(rows)))
            .collect()
    }

    /// Moves every waiting row into the table, one entry per (window, input, key group), under
    /// a new freeze number.
    fn freeze_all(&mut self) -> Result<()> {
        self.parts.next_freeze();
        for (end, sides) in std::mem::take(&mut self.windows) {
            for (side, batches) in sides.iter().enumerate() {
                if batches.is_empty() {
                    continue;
                }
                let batch = concat_batches(&self.spec.inputs[side], batches)?;
                let keys = self.keys(side, &batch)?;
                self.parts.put((end, 0), side as u8, &batch, &keys)?;
            }
        }
        self.live_bytes = 0;
        Ok(())
    }

    /// Joins and drops every window ending at or before `until + 1`: queues them, and returns
    /// the first part ([`Operator::pending`] gives the rest).
    fn fire(&mut self, until: i64) -> Result<Vec<RecordBatch>> {
        let Some(bound) = until.checked_add(2) else {
            return Ok(Vec::new());
        };
        let keep = self.windows.split_off(&bound);
        let live = std::mem::replace(&mut self.windows, keep);
        self.live_bytes = self
            .windows
            .values()
            .flat_map(|w| w.iter().flatten())
            .map(|b| b.get_array_memory_size())
            .sum();
        let live = live.into_iter().map(|(end, rows)| ((end, 0), rows));
        let first = self.env.key_groups.start;
        let due = self.parts.due(live, (bound, i64::MIN), first);
        self.firing.extend(due);
        Ok(self.step()?.unwrap_or_default())
    }

    /// The next part of the windows being joined: a window without frozen rows whole, or one
    /// chunk of key groups of a window with frozen rows. `None` when all are done.
    fn step(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let mut out = Vec::new();
        while out.is_empty() {
            let Some(mut f) = self.firing.pop_front() else {
                return Ok(None);
            };
            if f.sorted.is_none() {
                // The first step: the rows in memory, whole or in key-group order.
                let [l, r] = f.live.take().unwrap_or_default();
                let l = concat_batches(&self.spec.inputs[0], &l)?;
                let r = concat_batches(&self.spec.inputs[1], &r)?;
                if !f.stored {
                    if let Some(b) = self.join(&l, &r)? {
                        crate::push_sliced(&mut out, b);
                    }
                    continue;
                }
                let (lk, rk) = (self.keys(0, &l)?, self.keys(1, &r)?);
                f.sorted = Some([
                    self.parts.by_key_group(&l, &lk)?,
                    self.parts.by_key_group(&r, &rk)?,
                ]);
            }
            let (chunk, last) = f.chunk(&self.env.key_groups);
            let mut rows: [Vec<RecordBatch>; 2] = Default::default();
            for (side, sorted) in f.sorted.iter_mut().flatten().enumerate() {
                rows[side].push(take_chunk(sorted, chunk.end, last));
            }
            for (tag, batch) in self.parts.take(f.window, chunk.clone())? {
                rows[usize::from(tag).min(1)].push(batch);
            }
            let l = concat_batches(&self.spec.inputs[0], &rows[0])?;
            let r = concat_batches(&self.spec.inputs[1], &rows[1])?;
            if let Some(b) = self.join(&l, &r)? {
                crate::push_sliced(&mut out, b);
            }
            if !last {
                f.next = chunk.end;
                self.firing.push_front(f);
            }
        }
        Ok(Some(out))
    }

    fn join(&self, l: &RecordBatch, r: &RecordBatch) -> Result<Option<RecordBatch>> {
        let (lk, lnull) = eval_keys(&self.spec.keys[0], &self.conv, l)?;
        let (rk, rnull) = eval_keys(&self.spec.keys[1], &self.conv, r)?;
        let mut table: HashMap<datafusion::arrow::row::Row<'_>, Vec<u32>> = HashMap::new();
        for i in 0..r.num_rows() {
            if rnull.as_ref().is_none_or(|n| n.is_valid(i)) {
                table.entry(rk.row(i)).or_default().push(i as u32);
            }
        }
        let (mut li, mut ri) = (Vec::new(), Vec::new());
        for i in 0..l.num_rows() {
            if lnull.as_ref().is_some_and(|n| n.is_null(i)) {
                continue;
            }
            if let Some(matches) = table.get(&lk.row(i)) {
                li.extend(std::iter::repeat_n(i as u32, matches.len()));
                ri.extend_from_slice(matches);
            }
        }
        let (li, ri) = (UInt32Array::from(li), UInt32Array::from(ri));
        let take_all = |b: &RecordBatch, idx: &UInt32Array| -> Result<Vec<ArrayRef>> {
            Ok(b.columns()
                .iter()
                .map(|c| take(c, idx, None))
                .collect::<std::result::Result<_, _>>()?)
        };
        let mut columns = take_all(l, &li)?;
        columns.extend(take_all(r, &ri)?);
        let mut n = li.len();
        let mut matched = [vec![false; l.num_rows()], vec![false; r.num_rows()]];
        let keep = filter_mask(self.spec.filter.as_ref(), &self.pairs, columns.clone(), n)?;
        let (li, ri) = match keep {
            Some(mask) => {
                columns = columns
                    .iter()
                    .map(|c| datafusion::arrow::compute::filter(c, &mask))
                    .collect::<std::result::Result<_, _>>()?;
                let li = datafusion::arrow::compute::filter(&li, &mask)?;
                let ri = datafusion::arrow::compute::filter(&ri, &mask)?;
                n = li.len();
                (li, ri)
            }
            None => (Arc::new(li) as ArrayRef, Arc::new(ri) as ArrayRef),
        };
        use datafusion::arrow::array::AsArray;
        for i in li
            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
            .values()
        {
            matched[0][*i as usize] = true;
        }
        for i in ri
            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
            .values()
        {
            matched[1][*i as usize] = true;
        }
        // Semi / anti: the kept input's rows that have (or have not) a match, once each.
        if let Some(side) = self.spec.kind.kept() {
            let want = !matches!(self.spec.kind, JoinKind::LeftAnti | JoinKind::RightAnti);
            let rows: Vec<u32> = (0..matched[side].len() as u32)
                .filter(|i| matched[side][*i as usize] == want)
                .collect();
            if rows.is_empty() {
                return Ok(None);
            }
            let count = rows.len();
            let cols = take_all(if side == 0 { l } else { r }, &UInt32Array::from(rows))?;
            return Ok(Some(crate::batch_of(&self.spec.schema, cols, count)?));
        }
        let mut parts: Vec<(Vec<ArrayRef>, usize)> = vec![(columns, n)];
        for (side, matched) in matched.iter().enumerate() {
            if !self.outer(side) {
                continue;
            }
            let alone: Vec<u32> = (0..matched.len() as u32)
                .filter(|i| !matched[*i as usize])
                .collect();
            if alone.is_empty() {
                continue;
            }
            let count = alone.len();
            let own = take_all(if side == 0 { l } else { r }, &UInt32Array::from(alone))?;
            let other = &self.spec.inputs[1 - side];
            let pad: Vec<ArrayRef> = other
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), count))
                .collect();
            let cols = if side == 0 {
                own.into_iter().chain(pad).collect()
            } else {
                pad.into_iter().chain(own).collect()
            };
            parts.push((cols, count));
        }
        let total: usize = parts.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return Ok(None);
        }
        let width = self.spec.schema.fields().len();
        let columns = (0..width)
            .map(|c| {
                let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                    parts.iter().map(|(cols, _)| cols[c].as_ref()).collect();
                datafusion::arrow::compute::concat(&arrays)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(crate::batch_of(&self.spec.schema, columns, total)?))
    }
}

impl Operator for WindowJoin {
    fn on_batch(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() > 0 {
            self.add(input, batch, true)?;
        }
        if self.live_bytes > self.env.budget / 2 {
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

    /// Waiting rows are frozen into the table, and the table is checkpointed as runs (what
    /// changed since the last checkpoint); its own bytes list the windows the table holds.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        if !self.firing.is_empty() {
            return datafusion::common::exec_err!(
                "window join: a checkpoint while windows are still firing"
            );
        }
        self.freeze_all()?;
        self.parts.checkpoint()
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.parts.runs()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.parts.restore_tables(tables)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.parts.restore(state, "window join")
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
        self.live_bytes + self.parts.stats().memory_bytes as usize
    }

    fn open_windows(&self) -> usize {
        self.windows
            .keys()
            .filter(|end| !self.parts.stored(&(**end, 0)))
            .count()
            + self.parts.windows().count()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, sorted_rows, step_both, Harness};

    /// `L [kind] JOIN R ON L.k = R.k AND the windows are equal`.
    fn spec(kind: JoinKind) -> WindowJoinSpec {
        let left = schema("k:str v:i64 ws:ts we:ts");
        let right = schema("rk:str w:i64 rws:ts rwe:ts");
        let keys = |k: &str, s: &str, e: &str| -> Vec<Arc<dyn PhysicalExpr>> {
            vec![
                Arc::new(Column::new(k, 0)),
                Arc::new(Column::new(s, 2)),
                Arc::new(Column::new(e, 3)),
            ]
        };
        let fields: Vec<_> = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => left.fields().iter().cloned().collect(),
            _ => left
                .fields()
                .iter()
                .chain(right.fields())
                .cloned()
                .collect(),
        };
        WindowJoinSpec {
            kind,
            keys: [keys("k", "ws", "we"), keys("rk", "rws", "rwe")],
            inputs: [left, right],
            ends: [3, 3],
            filter: None,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    const LEFT: &str = "k:str v:i64 ws:ts we:ts
                        a     1     0     10
                        b     2     0     10
                        a     3     10    20";
    const RIGHT: &str = "rk:str w:i64 rws:ts rwe:ts
                         a      7     0      10
                         NULL   8     0      10";

    #[test]
    fn windows_join_once_when_the_watermark_closes_them() {
        Harness::new(spec(JoinKind::Inner))
            .rows(0, LEFT)
            .rows(1, RIGHT)
            .watermark(8)
            .expect("")
            .watermark(9)
            // A NULL key joins nothing.
            .expect(
                "k v ws we rk w rws rwe
                 a 1 0 10 a 7 0 10",
            )
            // The window [10, 20) has no right rows: nothing.
            .watermark(19)
            .expect("");
    }

    #[test]
    fn rows_of_a_closed_window_are_late() {
        let mut h = Harness::new(spec(JoinKind::Inner));
        h.watermark(9).rows(0, LEFT).rows(1, RIGHT).end().expect("");
        // Both inputs' rows of [0, 10) were late; [10, 20) had no right rows.
        assert_eq!(h.late_rows(), 4);
    }

    #[test]
    fn anti_and_outer_joins_survive_a_restart_mid_window() {
        Harness::new(spec(JoinKind::LeftAnti))
            .rows(0, LEFT)
            .restart()
            .rows(1, RIGHT)
            .watermark(19)
            .expect_unordered(
                "k v ws we
                 b 2 0 10
                 a 3 10 20",
            );
        Harness::new(spec(JoinKind::Full))
            .rows(1, RIGHT)
            .restart()
            .rows(0, LEFT)
            .end()
            .expect_unordered(
                "k v ws we rk w rws rwe
                 a 1 0 10 a 7 0 10
                 b 2 0 10 NULL NULL NULL NULL
                 NULL NULL NULL NULL NULL 8 0 10
                 a 3 10 20 NULL NULL NULL NULL",
            );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// With a budget of a few rows (waiting rows frozen into the table at almost every
        /// batch, the table on disk) every join kind gives the rows of an unbounded one, through
        /// batches of any size on either input, watermarks and restarts anywhere.
        #[test]
        fn a_spilling_window_join_gives_the_same_rows(
            kind in proptest::sample::select(vec![
                JoinKind::Inner, JoinKind::Left, JoinKind::Right, JoinKind::Full,
                JoinKind::LeftSemi, JoinKind::LeftAnti,
            ]),
            steps in proptest::collection::vec(
                (0usize..2,
                 proptest::collection::vec((0u8..12, 0i64..50, 0i64..30), 0..30),
                 proptest::bool::weighted(0.2),
                 0i64..12),
                1..24,
            )
        ) {
            let mut unbounded = Harness::new(spec(kind));
            let mut spilling = Harness::with_budget(spec(kind), 3000);
            let mut watermark = -1;
            for (side, rows, restart, advance) in steps {
                let mut text = String::from(if side == 0 { "k:str v:i64 ws:ts we:ts\n" } else { "rk:str w:i64 rws:ts rwe:ts\n" });
                for (k, v, at) in rows {
                    let ws = (watermark.max(0) + at) / 10 * 10;
                    text += &format!("k{k} {v} {ws} {}\n", ws + 10);
                }
                watermark += advance;
                let (got, spilled) = step_both(&mut unbounded, &mut spilling, side, &text, restart, watermark);
                proptest::prop_assert_eq!(&spilled, &got);
            }
            spilling.end();
            unbounded.end();
            proptest::prop_assert_eq!(sorted_rows(&spilling.take_table()), sorted_rows(&unbounded.take_table()));
            proptest::prop_assert_eq!(spilling.late_rows(), unbounded.late_rows());
        }
    }
}
