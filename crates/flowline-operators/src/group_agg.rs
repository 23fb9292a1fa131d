//! Non-windowed aggregation: `GROUP BY keys` with an updating result, as Flink's group
//! aggregation.
//!
//! ```text
//! batch ─eval keys─▶ row-format key bytes ─intern─▶ group ids
//!       ─▶ old values of the touched groups ─▶ accumulators += / -= the rows ─▶ new values
//!       ─▶ per touched group:  new group: +I new;  changed: -U old, +U new;  emptied: -D old
//! ```
//!
//! Each input batch is one mini-batch: a group touched by many rows of a batch emits one
//! update for the whole batch (Flink's `table.exec.mini-batch` does the same per bundle). A
//! group that did not change emits nothing. The input may itself be updating: `-U`/`-D` rows
//! retract their values, and a group whose rows are all retracted is deleted (`-D`).
//!
//! The accumulators (accumulators.rs) are ours rather than DataFusion's: they must retract, and
//! they must give the current value of a group without consuming it. COUNT, SUM, AVG, MIN and MAX are supported,
//! each with DISTINCT and FILTER (WHERE ...). MIN/MAX over an updating input keep a count per
//! value, since a retracted maximum must fall back to the next one.
//!
//! State lives in memory (one entry per live group, values in Arrow's row format) and is written
//! whole at each checkpoint.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

pub(crate) use crate::accumulators::{counted_rows, new_acc, Acc};
use crate::groups::{Groups, Ttl};
use crate::{Operator, OperatorContext, OperatorFactory};

/// The aggregate functions an updating aggregation computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunction {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFunction {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "avg" | "mean" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            _ => return None,
        })
    }
}

/// One aggregate call: `function([DISTINCT] arg) [FILTER (WHERE filter)]`.
#[derive(Clone, Debug)]
pub struct GroupAggregateCall {
    pub function: AggFunction,
    pub distinct: bool,
    pub arg: Arc<dyn PhysicalExpr>,
    /// The type of `arg`'s values.
    pub arg_type: DataType,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The result type the plan expects.
    pub output: DataType,
    pub name: String,
}

/// The plan of a group aggregation; the planner builds it, each subtask creates its operator.
#[derive(Clone)]
pub struct GroupAggregateSpec {
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub aggregates: Vec<GroupAggregateCall>,
    /// Output: the group columns, one column per aggregate, then the change kind.
    pub schema: SchemaRef,
    /// Whether input rows carry a change kind (the input is itself updating).
    pub updating_input: bool,
    /// `table.exec.state.ttl`: groups not updated for this long are dropped.
    pub state_ttl: Option<std::time::Duration>,
}

impl fmt::Debug for GroupAggregateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = (0..self.group_exprs.len())
            .map(|i| self.schema.field(i).name().clone())
            .collect();
        let aggs: Vec<String> = self.aggregates.iter().map(|a| a.name.clone()).collect();
        let input = if self.updating_input {
            ", input=updating"
        } else {
            ""
        };
        write!(
            f,
            "GroupAggregate(group=[{}], aggs=[{}]{input}) -> updating",
            groups.join(", "),
            aggs.join(", ")
        )
    }
}

impl OperatorFactory for GroupAggregateSpec {
    fn create(&self, _ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(GroupAggregate::new(Arc::new(self.clone()))?))
    }

    fn updating(&self) -> bool {
        true
    }
}

pub struct GroupAggregate {
    spec: Arc<GroupAggregateSpec>,
    /// Key columns ↔ row format; `None` without GROUP BY keys (one global group).
    keys: Option<RowConverter>,
    groups: Groups,
    accs: Vec<Box<dyn Acc>>,
    /// Per group: touched by the current batch.
    touched: Vec<bool>,
    ttl: Option<Ttl>,
}

impl GroupAggregate {
    pub fn new(spec: Arc<GroupAggregateSpec>) -> Result<Self> {
        let keys = if spec.group_exprs.is_empty() {
            None
        } else {
            let fields = (0..spec.group_exprs.len())
                .map(|i| SortField::new(spec.schema.field(i).data_type().clone()))
                .collect();
            Some(RowConverter::new(fields)?)
        };
        let accs = spec
            .aggregates
            .iter()
            .map(|a| new_acc(a, spec.updating_input))
            .collect::<Result<Vec<_>>>()?;
        let ttl = Ttl::new(spec.state_ttl);
        Ok(Self {
            spec,
            keys,
            groups: Groups::new(),
            touched: Vec::new(),
            accs,
            ttl,
        })
    }

    fn grow(&mut self) {
        let n = self.groups.len();
        self.touched.resize(n, false);
        self.accs.iter_mut().for_each(|a| a.resize(n));
    }

    fn remove_group(&mut self, g: u32) {
        self.groups.remove(g);
        self.accs.iter_mut().for_each(|a| a.reset(g));
    }

    /// The key columns of `groups`.
    fn key_columns(&self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        match &self.keys {
            None => Ok(Vec::new()),
            Some(conv) => {
                let parser = conv.parser();
                Ok(conv.convert_rows(
                    groups
                        .iter()
                        .map(|g| parser.parse(&self.groups.keys[*g as usize])),
                )?)
            }
        }
    }

    /// The current value of every aggregate for `groups` (typed as the accumulators make them;
    /// the output batch casts them to the schema).
    fn evaluate(&mut self, groups: &[u32]) -> Result<Vec<ArrayRef>> {
        self.accs
            .iter_mut()
            .map(|acc| acc.evaluate(groups))
            .collect()
    }
}

impl Operator for GroupAggregate {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let expired = match &mut self.ttl {
            Some(ttl) => ttl.due(&mut self.groups),
            None => Vec::new(),
        };
        for g in expired {
            self.remove_group(g);
        }
        let adds: Vec<bool> = match (self.spec.updating_input, row_kinds(&batch)) {
            (true, Some(kinds)) => kinds
                .values()
                .iter()
                .map(|k| RowKind::from_i8(*k).is_some_and(RowKind::is_addition))
                .collect(),
            (true, None) => {
                return exec_err!(
                    "group aggregate: an updating input batch has no change-kind column"
                )
            }
            (false, _) => vec![true; n],
        };
        let eval = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).and_then(|v| v.into_array(n));

        // Group ids, and the groups this batch touches with their row counts before it.
        let mut gids = Vec::with_capacity(n);
        let mut touched: Vec<u32> = Vec::new();
        let mut before: Vec<i64> = Vec::new();
        let key_rows: Option<Rows> = match &self.keys {
            Some(conv) => {
                let cols = self
                    .spec
                    .group_exprs
                    .iter()
                    .map(eval)
                    .collect::<Result<Vec<_>>>()?;
                Some(conv.convert_columns(&cols)?)
            }
            None => None,
        };
        for i in 0..n {
            let (g, created) = match &key_rows {
                Some(rows) => self.groups.intern(rows.row(i).as_ref()),
                None => self.groups.intern(&[]),
            };
            if created {
                self.grow();
            }
            if !self.touched[g as usize] {
                self.touched[g as usize] = true;
                touched.push(g);
                before.push(self.groups.live[g as usize]);
            }
            gids.push(g);
        }
        let old_groups: Vec<u32> = touched
            .iter()
            .zip(&before)
            .filter(|(_, b)| **b > 0)
            .map(|(g, _)| *g)
            .collect();
        let olds = self.evaluate(&old_groups)?;

        for (g, add) in gids.iter().zip(&adds) {
            self.groups.live[*g as usize] += if *add { 1 } else { -1 };
        }
        for (acc, call) in self.accs.iter_mut().zip(&self.spec.aggregates) {
            let values = eval(&call.arg)?;
            let filter = match &call.filter {
                Some(f) => Some(eval(f)?.as_boolean().clone()),
                None => None,
            };
            acc.update(
                &values,
                &gids,
                &adds,
                counted_rows(&values, filter.as_ref()).as_ref(),
            )?;
        }

        let new_groups: Vec<u32> = touched
            .iter()
            .filter(|g| self.groups.live[**g as usize] > 0)
            .copied()
            .collect();
        let news = self.evaluate(&new_groups)?;

        // Retractions first (-U, -D), then additions (+U, +I): per key, the old row goes first.
        let mut retract_rows: Vec<(u32, u32, RowKind)> = Vec::new(); // (touched index, index in olds, kind)
        let mut add_rows: Vec<(u32, u32, RowKind)> = Vec::new();
        let comparators = olds
            .iter()
            .zip(&news)
            .map(|(o, nw)| {
                datafusion::arrow::array::make_comparator(
                    o.as_ref(),
                    nw.as_ref(),
                    SortOptions::default(),
                )
                .ok()
            })
            .collect::<Vec<_>>();
        let (mut oi, mut ni) = (0u32, 0u32);
        for (t, (g, b)) in touched.iter().zip(&before).enumerate() {
            let now = self.groups.live[*g as usize];
            match (*b > 0, now > 0) {
                (true, true) => {
                    let same = comparators.iter().all(|c| {
                        c.as_ref()
                            .is_some_and(|c| c(oi as usize, ni as usize).is_eq())
                    });
                    if !same {
                        retract_rows.push((t as u32, oi, RowKind::UpdateBefore));
                        add_rows.push((t as u32, ni, RowKind::UpdateAfter));
                    }
                    oi += 1;
                    ni += 1;
                }
                (true, false) => {
                    retract_rows.push((t as u32, oi, RowKind::Delete));
                    oi += 1;
                }
                (false, true) => {
                    add_rows.push((t as u32, ni, RowKind::Insert));
                    ni += 1;
                }
                (false, false) => {}
            }
        }

        let rows = retract_rows.len() + add_rows.len();
        let mut out = Vec::new();
        if rows > 0 {
            let keys = self.key_columns(&touched)?;
            let key_idx =
                UInt32Array::from_iter_values(retract_rows.iter().chain(&add_rows).map(|r| r.0));
            let old_idx = UInt32Array::from_iter_values(retract_rows.iter().map(|r| r.1));
            let new_idx = UInt32Array::from_iter_values(add_rows.iter().map(|r| r.1));
            let mut columns = Vec::with_capacity(self.spec.schema.fields().len());
            for k in &keys {
                columns.push(take(k, &key_idx, None)?);
            }
            for (o, nw) in olds.iter().zip(&news) {
                columns.push(concat(&[
                    take(o, &old_idx, None)?.as_ref(),
                    take(nw, &new_idx, None)?.as_ref(),
                ])?);
            }
            columns.push(Arc::new(
                datafusion::arrow::array::Int8Array::from_iter_values(
                    retract_rows.iter().chain(&add_rows).map(|r| r.2 as i8),
                ),
            ));
            crate::push_sliced(&mut out, crate::batch_of(&self.spec.schema, columns, rows)?);
        }

        for g in touched {
            self.touched[g as usize] = false;
            if self.groups.live[g as usize] <= 0 {
                self.remove_group(g);
            }
        }
        Ok(out)
    }

    /// State batches of `[key bytes, live rows, one state column per aggregate]`, a row per group.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let live: Vec<u32> = (0..self.groups.len() as u32)
            .filter(|g| self.groups.live[*g as usize] > 0)
            .collect();
        let mut batches = Vec::new();
        let mut scratch = Vec::new();
        for chunk in live.chunks(65536) {
            let mut keys = BinaryBuilder::new();
            let mut counts = Vec::with_capacity(chunk.len());
            let mut states: Vec<BinaryBuilder> =
                self.accs.iter().map(|_| BinaryBuilder::new()).collect();
            for g in chunk {
                keys.append_value(&self.groups.keys[*g as usize]);
                counts.push(self.groups.live[*g as usize]);
                for (acc, b) in self.accs.iter().zip(states.iter_mut()) {
                    scratch.clear();
                    acc.save(*g, &mut scratch);
                    b.append_value(&scratch);
                }
            }
            let mut columns: Vec<ArrayRef> =
                vec![Arc::new(keys.finish()), Arc::new(Int64Array::from(counts))];
            columns.extend(states.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
            batches.push(crate::state_batch(columns, chunk.len())?);
        }
        crate::encode_batches(&batches)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_columns() != 2 + self.accs.len() {
                return exec_err!(
                    "group aggregate: the checkpoint's state has {} columns, this query needs {}",
                    batch.num_columns(),
                    2 + self.accs.len()
                );
            }
            let keys = batch.column(0).as_binary::<i32>();
            let counts = batch.column(1).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let (g, _) = self.groups.intern(keys.value(i));
                self.grow();
                self.groups.live[g as usize] = counts.value(i);
                for (a, acc) in self.accs.iter_mut().enumerate() {
                    let mut bytes = batch.column(2 + a).as_binary::<i32>().value(i);
                    acc.load(g, &mut bytes)?;
                }
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.groups.size() + self.accs.iter().map(|a| a.size()).sum::<usize>()
    }

    fn open_windows(&self) -> usize {
        self.groups.len() - self.groups.free.len()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::Harness;

    /// `SELECT k, COUNT(v), SUM(v), MAX(v) FROM input GROUP BY k`.
    fn spec(updating_input: bool) -> GroupAggregateSpec {
        let call = |function, name: &str, output: DataType| GroupAggregateCall {
            function,
            distinct: false,
            arg: Arc::new(Column::new("v", 1)),
            arg_type: DataType::Int64,
            filter: None,
            output,
            name: name.into(),
        };
        GroupAggregateSpec {
            group_exprs: vec![Arc::new(Column::new("k", 0))],
            aggregates: vec![
                call(AggFunction::Count, "n", DataType::Int64),
                call(AggFunction::Sum, "s", DataType::Int64),
                call(AggFunction::Max, "m", DataType::Int64),
            ],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("n", DataType::Int64, false),
                Field::new("s", DataType::Int64, true),
                Field::new("m", DataType::Int64, true),
                flowline_common::changelog::row_kind_field(),
            ])),
            updating_input,
            state_ttl: None,
        }
    }

    #[test]
    fn groups_update_with_retractions_and_null_keys_group_together() {
        Harness::new(spec(false))
            .rows(
                0,
                "k:str v:i64
                 a     1
                 NULL  5
                 a     2
                 NULL  NULL",
            )
            .expect_unordered(
                "k n s m _row_kind
                 a 2 3 2 +I
                 NULL 1 5 5 +I",
            )
            .restart()
            .rows(
                0,
                "k:str v:i64
                 a     4",
            )
            .expect(
                "k n s m _row_kind
                 a 2 3 2 -U
                 a 3 7 4 +U",
            );
    }

    #[test]
    fn an_updating_input_retracts_and_a_group_emptied_is_deleted() {
        Harness::new(spec(true))
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     3     +I
                 a     9     +I",
            )
            .expect(
                "k n s m _row_kind
                 a 2 12 9 +I",
            )
            // The max leaves: MAX falls back to the next value.
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     9     -U",
            )
            .expect(
                "k n s m _row_kind
                 a 2 12 9 -U
                 a 1 3 3 +U",
            )
            .rows(
                0,
                "k:str v:i64 _row_kind:kind
                 a     3     -D",
            )
            .expect(
                "k n s m _row_kind
                 a 1 3 3 -D",
            );
    }
}
