//! Window aggregation: `GROUP BY window_start, window_end[, keys]` over a window TVF.
//!
//! ```text
//! batch ─eval group exprs─▶ rows split by (window_end, window_start) ─▶ per open window:
//!        GroupValues::intern(keys) → group ids ─▶ GroupsAccumulator::update_batch (vectorised)
//! watermark W ─▶ every window with window_end - 1 <= W fires: keys + accumulators emitted, state dropped
//! ```
//!
//! State is one hash table of keys and one accumulator per aggregate for each open window (the
//! live state, vectorised), and it is released when the window fires, as in Flink. A checkpoint,
//! or live windows past half the state budget, freeze the live state into a state table as
//! accumulator states, one entry per (window, key group, freeze): the table spills to disk past
//! its half of the budget, checkpoints only the new entries, and hands key groups to other
//! subtasks on a rescale. A window with frozen state fires a chunk of key groups at a time:
//! live and frozen states of the chunk merged, emitted, dropped. A row whose window has already fired is late:
//! it is dropped and counted (or handed to the late-row output when the job asks for one).
//! Window assignment happened upstream (the TVF rewrite's functions, HOP/CUMULATE unnested), so
//! TUMBLE, HOP, CUMULATE and SESSION share this operator.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use flowline_state::table::TableStats;

use crate::window_parts::{self, take_chunk, WindowParts};
use crate::{millis, LateRows, Operator, OperatorContext, OperatorFactory, StateEnv, TableRuns};

/// One aggregate call: `agg(args) [FILTER (WHERE filter)]`.
#[derive(Clone, Debug)]
pub struct AggregateCall {
    pub expr: Arc<AggregateFunctionExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// The plan of a window aggregation; the planner builds it, each subtask creates its operator.
#[derive(Clone)]
pub struct WindowAggregateSpec {
    /// Group expressions over input rows, in output order.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions of `window_start` and `window_end` among `group_exprs`.
    pub start: usize,
    pub end: usize,
    pub aggregates: Vec<AggregateCall>,
    /// Output: the group columns, `__grouping_id` with grouping sets, then one column per aggregate.
    pub schema: SchemaRef,
    pub grouping_sets: Option<GroupingSets>,
}

/// GROUPING SETS / ROLLUP / CUBE: each row is aggregated once per set, with the expressions a
/// set leaves out set to NULL and the set's `__grouping_id` as an extra key.
#[derive(Clone, Debug)]
pub struct GroupingSets {
    /// Per set, per group expression: true when the set leaves it out.
    pub masks: Vec<Vec<bool>>,
    pub ids: Vec<u64>,
    pub id_type: DataType,
}

impl fmt::Debug for WindowAggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |n: usize| self.schema.field(n).name().clone();
        let groups: Vec<String> = (0..self.group_exprs.len()).map(names).collect();
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| a.expr.name().to_string())
            .collect();
        write!(
            f,
            "WindowAggregate(group=[{}], aggs=[{}])",
            groups.join(", "),
            aggs.join(", ")
        )
    }
}

impl OperatorFactory for WindowAggregateSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WindowAggregate::new(Arc::new(self.clone()), ctx)?))
    }
}

/// The live state of one open window: keys and accumulators that rows update. At a checkpoint,
/// or when the live windows outgrow their share of the budget, it is frozen into the table as
/// accumulator states and starts empty again.
struct Window {
    /// Interned non-window keys; `None` when the only keys are the window columns.
    groups: Option<Box<dyn GroupValues>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    num_groups: usize,
}

impl Window {
    fn size(&self) -> usize {
        self.groups.as_ref().map_or(0, |g| g.size())
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }
}

/// The state table: frozen window state (window_parts.rs).
const TABLE: &str = "windows";

/// A due window being fired (see [`WindowAggregate::step`]): its live groups, and once frozen
/// for a chunked firing, their state rows with their key groups.
type Firing = window_parts::Firing<Window, (RecordBatch, Vec<u16>)>;

pub struct WindowAggregate {
    spec: Arc<WindowAggregateSpec>,
    /// Positions in `group_exprs` of the non-window keys.
    key_positions: Vec<usize>,
    key_schema: SchemaRef,
    /// Positions among the key columns of those the exchange routes by: a frozen group's key
    /// group is theirs.
    route: Vec<usize>,
    /// Open windows' live state by (window_end, window_start): the first ones fire first.
    windows: BTreeMap<(i64, i64), Window>,
    /// Due windows not fired whole yet (the runtime drains them before the next message).
    firing: VecDeque<Firing>,
    /// Frozen window state.
    parts: WindowParts,
    env: StateEnv,
    watermark: i64,
    late: LateRows,
    group_ids: Vec<usize>,
}

impl WindowAggregate {
    pub fn new(spec: Arc<WindowAggregateSpec>, ctx: &OperatorContext) -> Result<Self> {
        let key_positions: Vec<usize> = (0..spec.group_exprs.len())
            .filter(|i| *i != spec.start && *i != spec.end)
            .collect();
        let mut key_fields: Vec<Field> = key_positions
            .iter()
            .map(|i| spec.schema.field(*i).clone().with_nullable(true))
            .collect();
        if spec.grouping_sets.is_some() {
            key_fields.push(spec.schema.field(spec.group_exprs.len()).clone());
        }
        // As the planner keys the exchange: keys no grouping set leaves out.
        let route = key_positions
            .iter()
            .enumerate()
            .filter(|(_, pos)| {
                spec.grouping_sets
                    .as_ref()
                    .is_none_or(|g| g.masks.iter().all(|m| !m[**pos]))
            })
            .map(|(i, _)| i)
            .collect();
        let key_schema = Arc::new(Schema::new(key_fields));
        // Half the budget for the live windows, half for the table's memory.
        let budget = ctx.state.budget / 2;
        Ok(Self {
            spec,
            key_positions,
            key_schema,
            route,
            windows: BTreeMap::new(),
            firing: VecDeque::new(),
            parts: WindowParts::new(ctx, TABLE, "window", budget)?,
            env: ctx.state.clone(),
            watermark: NO_WATERMARK,
            late: LateRows::new(ctx.keep_late),
            group_ids: Vec::new(),
        })
    }

    fn new_window(&self) -> Result<Window> {
        let groups = if self.key_schema.fields().is_empty() {
            None
        } else {
            Some(new_group_values(
                self.key_schema.clone(),
                &GroupOrdering::None,
            )?)
        };
        let accumulators = self
            .spec
            .aggregates
            .iter()
            .map(|a| create_accumulator(&a.expr))
            .collect::<Result<Vec<_>>>()?;
        Ok(Window {
            groups,
            accumulators,
            num_groups: 0,
        })
    }

    /// Fires every window that ends at or before `watermark + 1`: queues them, and returns
    /// the first part ([`Operator::pending`] gives the rest).
    fn fire(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let Some(bound) = watermark.checked_add(2) else {
            return Ok(Vec::new());
        };
        let keep = self.windows.split_off(&(bound, i64::MIN));
        let live = std::mem::replace(&mut self.windows, keep);
        let first = self.env.key_groups.start;
        let due = self.parts.due(live, (bound, i64::MIN), first);
        self.firing.extend(due);
        Ok(self.step()?.unwrap_or_default())
    }

    /// The next part of the windows being fired: a window without frozen state whole, or one
    /// chunk of key groups of a window with frozen state (its live state and the table's parts
    /// of those key groups merged, emitted, dropped). `None` when all have fired.
    fn step(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let mut out = Vec::new();
        while out.is_empty() {
            let Some(mut f) = self.firing.pop_front() else {
                return Ok(None);
            };
            let (end, start) = f.window;
            if !f.stored {
                if let Some(w) = f.live.take().filter(|w| w.num_groups > 0) {
                    crate::push_sliced(&mut out, self.emit(start, end, w)?);
                }
                continue;
            }
            if let Some(mut w) = f.live.take() {
                // The live groups as a state batch in key-group order, with their key groups.
                f.sorted = match self.freeze(&mut w)? {
                    Some(b) => {
                        let route = self.route_columns(&b);
                        Some(self.parts.by_key_group(&b, &route)?)
                    }
                    None => None,
                };
            }
            let (chunk, last) = f.chunk(&self.env.key_groups);
            let mut window = self.new_window()?;
            if let Some(sorted) = f.sorted.as_mut() {
                self.merge_state(&mut window, &take_chunk(sorted, chunk.end, last))?;
            }
            for (_, batch) in self.parts.take(f.window, chunk.clone())? {
                self.merge_state(&mut window, &batch)?;
            }
            if window.num_groups > 0 {
                crate::push_sliced(&mut out, self.emit(start, end, window)?);
            }
            if !last {
                f.next = chunk.end;
                self.firing.push_front(f);
            }
        }
        Ok(Some(out))
    }

    fn emit(&self, start: i64, end: i64, mut window: Window) -> Result<RecordBatch> {
        let n = window.num_groups;
        let mut keys = match window.groups.as_mut() {
            Some(g) => g.emit(EmitTo::All)?,
            None => Vec::new(),
        }
        .into_iter();
        let schema = &self.spec.schema;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for i in 0..self.spec.group_exprs.len() {
            let col = if i == self.spec.start || i == self.spec.end {
                let v = if i == self.spec.start { start } else { end };
                let arr: ArrayRef = Arc::new(TimestampMillisecondArray::from_value(v, n));
                cast(&arr, schema.field(i).data_type())?
            } else {
                match keys.next() {
                    Some(k) => k,
                    None => return exec_err!("window aggregate: group keys out of step"),
                }
            };
            columns.push(col);
        }
        if self.spec.grouping_sets.is_some() {
            match keys.next() {
                Some(id) => columns.push(id),
                None => return exec_err!("window aggregate: grouping id missing"),
            }
        }
        for acc in window.accumulators.iter_mut() {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        crate::batch_of(schema, columns, n)
    }

    /// Adds `rows` rows to the window `window_key`.
    fn update(
        &mut self,
        window_key: (i64, i64),
        rows: usize,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if !self.windows.contains_key(&window_key) {
            let w = self.new_window()?;
            self.windows.insert(window_key, w);
        }
        let window = self
            .windows
            .get_mut(&window_key)
            .expect("window just inserted");
        self.group_ids.clear();
        match window.groups.as_mut() {
            Some(g) => {
                g.intern(keys, &mut self.group_ids)?;
                window.num_groups = g.len();
            }
            None => {
                self.group_ids.resize(rows, 0);
                window.num_groups = 1;
            }
        }
        for ((acc, values), filter) in window.accumulators.iter_mut().zip(args).zip(filters) {
            acc.update_batch(values, &self.group_ids, filter.as_ref(), window.num_groups)?;
        }
        Ok(())
    }
}

/// A vectorised accumulator where the aggregate has one, else DataFusion's row adapter.
fn create_accumulator(expr: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if expr.groups_accumulator_supported() {
        expr.create_groups_accumulator()
    } else {
        let e = expr.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            e.create_accumulator()
        })))
    }
}

impl WindowAggregate {
    /// A window's live state as one state batch `[keys..., accumulator states...]`, a row per
    /// group (`None` when it has none); the window is left empty.
    fn freeze(&self, window: &mut Window) -> Result<Option<RecordBatch>> {
        let n = window.num_groups;
        if n == 0 {
            return Ok(None);
        }
        let mut columns = match window.groups.as_mut() {
            Some(g) => g.emit(EmitTo::All)?,
            None => Vec::new(),
        };
        for acc in window.accumulators.iter_mut() {
            columns.extend(acc.state(EmitTo::All)?);
        }
        *window = self.new_window()?;
        Ok(Some(crate::state_batch(columns, n)?))
    }

    /// The columns of a state batch the exchange routed its groups by.
    fn route_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.route
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect()
    }

    /// Moves every live window's state into the table, one entry per (window, key group),
    /// under a new freeze number.
    fn freeze_all(&mut self) -> Result<()> {
        let mut windows = std::mem::take(&mut self.windows);
        self.parts.next_freeze();
        for (key, window) in windows.iter_mut() {
            if let Some(batch) = self.freeze(window)? {
                let route = self.route_columns(&batch);
                self.parts.put(*key, 0, &batch, &route)?;
            }
        }
        // Emptied windows stay open: rows may come for them again.
        self.windows = windows;
        for key in self.parts.due_for_compaction() {
            self.compact(key)?;
        }
        Ok(())
    }

    /// Merges a window's frozen parts into one per key group, a chunk of key groups at a time
    /// (as firing does, without emitting).
    fn compact(&mut self, key: (i64, i64)) -> Result<()> {
        for chunk in window_parts::chunks(self.env.key_groups.clone()) {
            let mut window = self.new_window()?;
            for (_, batch) in self.parts.take(key, chunk)? {
                self.merge_state(&mut window, &batch)?;
            }
            if let Some(batch) = self.freeze(&mut window)? {
                let route = self.route_columns(&batch);
                self.parts.put(key, 0, &batch, &route)?;
            }
        }
        self.parts.compacted(key);
        Ok(())
    }

    /// Bytes the live windows hold.
    fn live_bytes(&self) -> usize {
        self.windows.values().map(Window::size).sum()
    }

    /// Merges a state batch (`[keys..., accumulator states...]`) into the window's live table.
    fn merge_state(&self, window: &mut Window, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let nkeys = self.key_schema.fields().len();
        let keys: Vec<ArrayRef> = batch.columns()[..nkeys].to_vec();
        let mut ids = Vec::with_capacity(n);
        match window.groups.as_mut() {
            Some(g) => {
                g.intern(&keys, &mut ids)?;
                window.num_groups = g.len();
            }
            None => {
                ids.resize(n, 0);
                window.num_groups = 1;
            }
        }
        let states = crate::state_columns(&self.spec.aggregates, batch, nkeys)?;
        for (acc, state) in window.accumulators.iter_mut().zip(states) {
            acc.merge_batch(state, &ids, window.num_groups)?;
        }
        Ok(())
    }
}

impl Operator for WindowAggregate {
    /// Live windows are frozen into the table, and the table is checkpointed as runs (what
    /// changed since the last checkpoint); its own bytes list the windows the table holds.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        if !self.firing.is_empty() {
            return exec_err!("window aggregate: a checkpoint while windows are still firing");
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
        self.parts.restore(state, "window aggregate")
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

    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).and_then(|v| v.into_array(rows));
        let groups = self
            .spec
            .group_exprs
            .iter()
            .map(eval)
            .collect::<Result<Vec<_>>>()?;
        let (starts, ends) = (
            millis(&groups[self.spec.start], "window_start")?,
            millis(&groups[self.spec.end], "window_end")?,
        );
        let keys: Vec<ArrayRef> = self
            .key_positions
            .iter()
            .map(|i| groups[*i].clone())
            .collect();
        let mut args = Vec::with_capacity(self.spec.aggregates.len());
        let mut filters = Vec::with_capacity(self.spec.aggregates.len());
        for a in &self.spec.aggregates {
            args.push(
                a.expr
                    .expressions()
                    .iter()
                    .map(eval)
                    .collect::<Result<Vec<_>>>()?,
            );
            filters.push(match &a.filter {
                Some(f) => Some(eval(f)?.as_boolean().clone()),
                None => None,
            });
        }

        // Rows by window. A batch usually spans a handful of windows, so a short list beats a map.
        let mut by_window: Vec<((i64, i64), Vec<u32>)> = Vec::new();
        for i in 0..rows {
            if ends.is_null(i) || starts.is_null(i) {
                continue;
            }
            let key = (ends.value(i), starts.value(i));
            match by_window.iter_mut().find(|(k, _)| *k == key) {
                Some((_, idx)) => idx.push(i as u32),
                None => by_window.push((key, vec![i as u32])),
            }
        }
        let spec = self.spec.clone();
        let mut late = Vec::new();
        for (key, idx) in by_window {
            if key.0 - 1 <= self.watermark {
                late.extend(idx);
                continue;
            }
            // The rows of this window: the whole batch as it is, or picked out.
            let n = idx.len();
            let picked;
            let (keys, args, filters) = if n == rows {
                (&keys, &args, &filters)
            } else {
                let idx = UInt32Array::from(idx);
                let pick = |a: &ArrayRef| take(a, &idx, None);
                let keys = keys
                    .iter()
                    .map(pick)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let args = args
                    .iter()
                    .map(|v| {
                        v.iter()
                            .map(pick)
                            .collect::<std::result::Result<Vec<_>, _>>()
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let filters = filters
                    .iter()
                    .map(|f| {
                        f.as_ref()
                            .map(|f| take(f, &idx, None).map(|a| a.as_boolean().clone()))
                            .transpose()
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                picked = (keys, args, filters);
                (&picked.0, &picked.1, &picked.2)
            };
            match &spec.grouping_sets {
                None => self.update(key, n, keys, args, filters)?,
                Some(sets) => {
                    for (mask, id) in sets.masks.iter().zip(&sets.ids) {
                        let mut set_keys: Vec<ArrayRef> = self
                            .key_positions
                            .iter()
                            .zip(keys)
                            .map(|(pos, k)| {
                                if mask[*pos] {
                                    new_null_array(k.data_type(), n)
                                } else {
                                    k.clone()
                                }
                            })
                            .collect();
                        let id: ArrayRef = Arc::new(UInt64Array::from_value(*id, n));
                        set_keys.push(cast(&id, &sets.id_type)?);
                        self.update(key, n, &set_keys, args, filters)?;
                    }
                }
            }
        }
        late.sort_unstable();
        self.late.add(&batch, &late)?;
        if self.live_bytes() > self.env.budget / 2 {
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

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        self.live_bytes() + self.parts.stats().memory_bytes as usize
    }

    fn open_windows(&self) -> usize {
        self.windows
            .keys()
            .filter(|k| !self.parts.stored(k))
            .count()
            + self.parts.windows().count()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, sorted_rows, step_both, Harness};

    /// `SELECT k, window_start, window_end, COUNT(v), SUM(v) ... GROUP BY k, window_start,
    /// window_end` over rows whose windows are assigned (10 ms tumbling windows).
    fn spec() -> WindowAggregateSpec {
        let input = schema("k:str v:i64 ws:ts we:ts");
        let call = |udaf, name: &str| AggregateCall {
            expr: Arc::new(
                AggregateExprBuilder::new(udaf, vec![Arc::new(Column::new("v", 1))])
                    .schema(input.clone())
                    .alias(name)
                    .build()
                    .unwrap(),
            ),
            filter: None,
        };
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        WindowAggregateSpec {
            group_exprs: vec![
                Arc::new(Column::new("k", 0)),
                Arc::new(Column::new("ws", 2)),
                Arc::new(Column::new("we", 3)),
            ],
            start: 1,
            end: 2,
            aggregates: vec![call(count_udaf(), "n"), call(sum_udaf(), "s")],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("ws", ts.clone(), true),
                Field::new("we", ts, true),
                Field::new("n", DataType::Int64, false),
                Field::new("s", DataType::Int64, true),
            ])),
            grouping_sets: None,
        }
    }

    #[test]
    fn windows_fire_at_the_watermark_once_and_late_rows_are_dropped() {
        let mut h = Harness::new(spec());
        h.rows(
            0,
            "k:str v:i64 ws:ts we:ts
             a     1     0     10
             NULL  2     0     10
             a     3     10    20",
        )
        .watermark(8)
        .expect("")
        .watermark(9)
        .expect_unordered(
            "k ws we n s
             a 0 10 1 1
             NULL 0 10 1 2",
        )
        // A row of the fired window is late; the open window keeps counting.
        .rows(
            0,
            "k:str v:i64 ws:ts we:ts
             a     5     0     10
             a     4     10    20",
        )
        .end()
        .expect(
            "k ws we n s
             a 10 20 2 7",
        );
        assert_eq!(h.late_rows(), 1);
    }

    #[test]
    fn an_open_window_survives_a_restart() {
        Harness::new(spec())
            .rows(
                0,
                "k:str v:i64 ws:ts we:ts
                 a     1     0     10",
            )
            .restart()
            .rows(
                0,
                "k:str v:i64 ws:ts we:ts
                 a     2     0     10",
            )
            .watermark(9)
            .expect(
                "k ws we n s
                 a 0 10 2 3",
            );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// With a budget of a few groups (live windows frozen into the table at almost every
        /// batch, the table on disk) the aggregation fires the windows an unbounded one does
        /// and a map computes, through batches of any size, watermarks and restarts anywhere.
        #[test]
        fn a_spilling_window_aggregation_gives_the_same_rows(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..60, 0i64..50, 0i64..40), 0..40),
                 proptest::bool::weighted(0.2),
                 0i64..15),
                1..20,
            )
        ) {
            let mut unbounded = Harness::new(spec());
            let mut spilling = Harness::with_budget(spec(), 2000);
            // (window start, key) → (count, sum) of the rows not late.
            let mut model: std::collections::BTreeMap<(i64, u8), (i64, i64)> = Default::default();
            let mut watermark = -1;
            let mut want = Vec::new();
            for (rows, restart, advance) in steps {
                let mut text = String::from("k:str v:i64 ws:ts we:ts\n");
                for (k, v, at) in rows {
                    let t = watermark.max(0) + at;
                    let ws = t / 10 * 10;
                    text += &format!("k{k} {v} {ws} {}\n", ws + 10);
                    if ws + 10 - 1 > watermark {
                        let e = model.entry((ws, k)).or_default();
                        e.0 += 1;
                        e.1 += v;
                    }
                }
                watermark += advance;
                let (got, spilled) = step_both(&mut unbounded, &mut spilling, 0, &text, restart, watermark);
                let fired: Vec<(i64, u8)> = model.keys().filter(|(ws, _)| ws + 10 - 1 <= watermark).copied().collect();
                for key in fired {
                    let (n, s) = model.remove(&key).unwrap();
                    want.push(format!("k{} {} {} {n} {s}", key.1, key.0, key.0 + 10));
                }
                proptest::prop_assert_eq!(&spilled, &got);
                let expected = match std::mem::take(&mut want) {
                    rows if rows.is_empty() => String::new(),
                    rows => format!("k ws we n s\n{}", rows.join("\n")),
                };
                proptest::prop_assert_eq!(&got, &sorted_rows(&expected));
            }
            spilling.end();
            unbounded.end();
            proptest::prop_assert_eq!(sorted_rows(&spilling.take_table()), sorted_rows(&unbounded.take_table()));
        }
    }

    #[test]
    fn a_window_many_times_the_budget_spills_and_fires_whole() {
        let mut h = Harness::with_budget(spec(), 4000);
        let mut text = String::from("k:str v:i64 ws:ts we:ts\n");
        for k in 0..3000 {
            text += &format!("k{k} {k} 0 10\n");
        }
        h.rows(0, &text).rows(0, &text);
        let stats = h.table_stats();
        assert!(stats.spills > 0 && stats.disk_bytes > 0, "{stats:?}");
        h.restart();
        h.watermark(9);
        let out = h.take_table();
        let lines: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(lines.len(), 3000);
        assert!(lines.contains(&"k2999 0 10 2 5998"), "{}", &out[..200]);
    }

    /// A window frozen at every checkpoint for a long time keeps a bounded number of parts:
    /// every `COMPACT_AFTER` freezes they are merged into one per key group.
    #[test]
    fn a_long_window_keeps_a_bounded_number_of_parts() {
        let mut ctx = OperatorContext::default();
        ctx.state.dir = ctx.state.dir.join("a-long-window");
        let mut op = WindowAggregate::new(Arc::new(spec()), &ctx).unwrap();
        let mut text = String::from("k:str v:i64 ws:ts we:ts\n");
        for k in 0..300 {
            text += &format!("k{k} 1 0 10\n");
        }
        let rows = crate::testing::batch(&text);
        let rounds = 5 * crate::window_parts::COMPACT_AFTER as usize;
        for _ in 0..rounds {
            op.on_batch(0, rows.clone()).unwrap();
            op.snapshot().unwrap();
        }
        let entries = op.parts.hot_entries();
        let bound = crate::window_parts::COMPACT_AFTER as usize * 128;
        assert!(entries <= bound, "{entries} entries after {rounds} freezes");
        let mut out = op.on_watermark(9).unwrap();
        while let Some(more) = op.pending().unwrap() {
            out.extend(more);
        }
        let table = crate::testing::table(&out);
        let lines: Vec<&str> = table.lines().skip(1).collect();
        assert_eq!(lines.len(), 300);
        assert!(
            lines.contains(&format!("k7 0 10 {rounds} {rounds}").as_str()),
            "{table}"
        );
        drop(op);
        let _ = std::fs::remove_dir_all(&ctx.state.dir);
    }
}
