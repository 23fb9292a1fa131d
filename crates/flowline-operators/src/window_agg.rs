//! Window aggregation: `GROUP BY window_start, window_end[, keys]` over a window TVF.
//!
//! ```text
//! batch ─eval group exprs─▶ rows split by (window_end, window_start) ─▶ per open window:
//!        GroupValues::intern(keys) → group ids ─▶ GroupsAccumulator::update_batch (vectorised)
//! watermark W ─▶ every window with window_end - 1 <= W fires: keys + accumulators emitted, state dropped
//! ```
//!
//! State is one hash table of keys and one accumulator per aggregate for each open window, and it
//! is released when the window fires, as in Flink. A row whose window has already fired is late:
//! it is dropped and counted (or handed to the late-row output when the job asks for one).
//! Window assignment happened upstream (the TVF rewrite's functions, HOP/CUMULATE unnested), so
//! TUMBLE, HOP, CUMULATE and SESSION share this operator.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::BTreeMap;
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

use crate::{millis, LateRows, Operator, OperatorContext, OperatorFactory};

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
        Ok(Box::new(WindowAggregate::new(
            Arc::new(self.clone()),
            ctx.keep_late,
        )?))
    }
}

/// The state of one open window: a live table that rows update, and the state batches taken
/// at earlier checkpoints (or restored) that have not been merged into it yet. A group may be in
/// both; merging (at fire time, or when the frozen batches pile up) combines them.
struct Window {
    /// Interned non-window keys; `None` when the only keys are the window columns.
    groups: Option<Box<dyn GroupValues>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    num_groups: usize,
    frozen: Vec<RecordBatch>,
}

/// Frozen state batches a window may hold before a checkpoint compacts them into one.
const FROZEN_BATCHES_MAX: usize = 8;

pub struct WindowAggregate {
    spec: Arc<WindowAggregateSpec>,
    /// Positions in `group_exprs` of the non-window keys.
    key_positions: Vec<usize>,
    key_schema: SchemaRef,
    /// Open windows by (window_end, window_start): the first ones fire first.
    windows: BTreeMap<(i64, i64), Window>,
    watermark: i64,
    late: LateRows,
    group_ids: Vec<usize>,
}

impl WindowAggregate {
    pub fn new(spec: Arc<WindowAggregateSpec>, keep_late: bool) -> Result<Self> {
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
        let key_schema = Arc::new(Schema::new(key_fields));
        Ok(Self {
            spec,
            key_positions,
            key_schema,
            windows: BTreeMap::new(),
            watermark: NO_WATERMARK,
            late: LateRows::new(keep_late),
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
            frozen: Vec::new(),
        })
    }

    /// Fires every window that ends at or before `watermark + 1`.
    fn fire(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let keep = match watermark.checked_add(2) {
            Some(bound) => self.windows.split_off(&(bound, i64::MIN)),
            None => BTreeMap::new(),
        };
        let fired = std::mem::replace(&mut self.windows, keep);
        let mut out = Vec::new();
        for ((end, start), window) in fired {
            if window.num_groups == 0 && window.frozen.is_empty() {
                continue;
            }
            crate::push_sliced(&mut out, self.emit(start, end, window)?);
        }
        Ok(out)
    }

    fn emit(&self, start: i64, end: i64, mut window: Window) -> Result<RecordBatch> {
        for batch in std::mem::take(&mut window.frozen) {
            self.merge_state(&mut window, &batch)?;
        }
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
    /// A window's state as batches `[window_end, window_start, keys..., accumulator states...]`,
    /// a row per group. Emitting state consumes the live table, so it is frozen as one more batch
    /// and the live table starts empty: the pause is proportional to what changed since the last
    /// checkpoint, not to the whole state. Too many frozen batches are compacted into one.
    fn snapshot_window(&self, key: (i64, i64), window: &mut Window) -> Result<Vec<RecordBatch>> {
        let n = window.num_groups;
        if n > 0 {
            let keys = match window.groups.as_mut() {
                Some(g) => g.emit(EmitTo::All)?,
                None => Vec::new(),
            };
            let mut states = Vec::new();
            for acc in window.accumulators.iter_mut() {
                states.push(acc.state(EmitTo::All)?);
            }
            let mut columns = vec![crate::repeat_i64(key.0, n), crate::repeat_i64(key.1, n)];
            columns.extend(keys);
            columns.extend(states.into_iter().flatten());
            let frozen = std::mem::take(&mut window.frozen);
            *window = self.new_window()?;
            window.frozen = frozen;
            window.frozen.push(crate::state_batch(columns, n)?);
        }
        if window.frozen.len() > FROZEN_BATCHES_MAX {
            let mut merged = self.new_window()?;
            for batch in std::mem::take(&mut window.frozen) {
                self.merge_state(&mut merged, &batch)?;
            }
            window.frozen = self.snapshot_window(key, &mut merged)?;
        }
        Ok(window.frozen.clone())
    }

    /// Merges a state batch into the window's live table.
    fn merge_state(&self, window: &mut Window, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let nkeys = self.key_schema.fields().len();
        let keys: Vec<ArrayRef> = batch.columns()[2..2 + nkeys].to_vec();
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
        let states = crate::state_columns(&self.spec.aggregates, batch, 2 + nkeys)?;
        for (acc, state) in window.accumulators.iter_mut().zip(states) {
            acc.merge_batch(state, &ids, window.num_groups)?;
        }
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut windows = std::mem::take(&mut self.windows);
        let mut batches = Vec::with_capacity(windows.len());
        for (key, window) in windows.iter_mut() {
            batches.extend(self.snapshot_window(*key, window)?);
        }
        self.windows = windows;
        crate::encode_batches(&batches)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_rows() == 0 || batch.num_columns() < 2 {
                continue;
            }
            let (end, start) = (
                batch
                    .column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(0),
                batch
                    .column(1)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .value(0),
            );
            // Kept frozen: merged into the live table when the window fires.
            if !self.windows.contains_key(&(end, start)) {
                let w = self.new_window()?;
                self.windows.insert((end, start), w);
            }
            self.windows
                .get_mut(&(end, start))
                .expect("window just inserted")
                .frozen
                .push(batch);
        }
        Ok(())
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

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        self.windows
            .values()
            .map(|w| {
                w.groups.as_ref().map_or(0, |g| g.size())
                    + w.accumulators.iter().map(|a| a.size()).sum::<usize>()
                    + w.frozen
                        .iter()
                        .map(|b| b.get_array_memory_size())
                        .sum::<usize>()
            })
            .sum()
    }

    fn open_windows(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::{count::count_udaf, sum::sum_udaf};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, Harness};

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
}
