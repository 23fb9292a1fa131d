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

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{exec_err, DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

pub(crate) use crate::accumulators::{counted_rows, new_acc, Acc};
use flowline_state::table::TableStats;

use crate::groups::{Groups, Ttl};
use crate::keygroups::row_key_groups;
use crate::state::{io_err, OperatorTable};
use crate::{Operator, OperatorContext, OperatorFactory, StateEnv, TableRuns};

/// The state table: groups by key.
const TABLE: &str = "groups";

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
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(GroupAggregate::new(Arc::new(self.clone()), ctx)?))
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
    /// Groups beyond memory, and the checkpoints' image of all groups: key → the group's row
    /// count, then each accumulator's state. The dense groups above are its hot part: a group
    /// is taken out of the table when a batch touches it and put back when it is evicted or
    /// checkpointed with changes.
    table: OperatorTable<Vec<u8>>,
    env: StateEnv,
    /// Per group: its key group, changed since the last checkpoint, used since the last sweep.
    kgs: Vec<u16>,
    dirty: Vec<bool>,
    used: Vec<bool>,
    /// The eviction sweep's position among the groups.
    hand: usize,
    /// Bytes per group in memory, as last measured; batches seen; groups when measured.
    per_group: usize,
    batches: u64,
    sized_at: usize,
    hashes: Vec<u64>,
    row_kgs: Vec<u16>,
}

/// Share of an aggregation's budget its dense groups get; the table's hot map has the rest.
const DENSE_SHARE: f64 = 0.75;
/// Batches between two measurements of the dense groups' bytes.
const SIZE_EVERY: u64 = 64;

impl GroupAggregate {
    pub fn new(spec: Arc<GroupAggregateSpec>, ctx: &OperatorContext) -> Result<Self> {
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
        let ttl_of_table = spec.state_ttl;
        Ok(Self {
            spec,
            keys,
            groups: Groups::new(),
            touched: Vec::new(),
            accs,
            ttl,
            // Cold groups expire there with the TTL as hot ones do in `Groups`.
            table: OperatorTable::new(
                ctx,
                TABLE,
                "group-agg",
                (ctx.state.budget as f64 * (1.0 - DENSE_SHARE)) as usize,
                ttl_of_table,
            )?,
            env: ctx.state.clone(),
            kgs: Vec::new(),
            dirty: Vec::new(),
            used: Vec::new(),
            hand: 0,
            per_group: 0,
            batches: 0,
            sized_at: 0,
            hashes: Vec::new(),
            row_kgs: Vec::new(),
        })
    }

    fn grow(&mut self) {
        let n = self.groups.len();
        self.touched.resize(n, false);
        self.kgs.resize(n, 0);
        self.dirty.resize(n, false);
        self.used.resize(n, false);
        self.accs.iter_mut().for_each(|a| a.resize(n));
    }

    /// Drops group `g` from memory (its state stays wherever the table has it).
    fn evict_group(&mut self, g: u32) {
        self.groups.remove(g);
        self.accs.iter_mut().for_each(|a| a.reset(g));
        self.dirty[g as usize] = false;
    }

    /// Group `g` is gone (no rows left, or expired): from memory and from the table.
    fn remove_group(&mut self, g: u32) {
        let key = &self.groups.keys[g as usize];
        self.table.delete_blind(self.kgs[g as usize], key);
        self.evict_group(g);
    }

    /// Group `g`'s state as the table keeps it: its row count, then each accumulator's state.
    fn encode_group(&self, g: u32) -> Vec<u8> {
        let mut out = self.groups.live[g as usize].to_le_bytes().to_vec();
        let mut scratch = Vec::new();
        for acc in &self.accs {
            scratch.clear();
            acc.save(g, &mut scratch);
            out.extend_from_slice(&(scratch.len() as u32).to_le_bytes());
            out.extend_from_slice(&scratch);
        }
        out
    }

    fn decode_group(&mut self, g: u32, mut bytes: &[u8]) -> Result<()> {
        let bad =
            || DataFusionError::Execution("group aggregate: a group's state is truncated".into());
        let (live, rest) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
        self.groups.live[g as usize] = i64::from_le_bytes(*live);
        bytes = rest;
        for acc in self.accs.iter_mut() {
            let (n, rest) = bytes.split_first_chunk::<4>().ok_or_else(bad)?;
            let n = u32::from_le_bytes(*n) as usize;
            let mut state = rest.get(..n).ok_or_else(bad)?;
            acc.load(g, &mut state)?;
            bytes = &rest[n..];
        }
        Ok(())
    }

    /// Groups in memory (not counting freed ids).
    fn hot_groups(&self) -> usize {
        self.groups.len() - self.groups.free.len()
    }

    /// Moves cold groups to the table while the dense groups hold more than their share of the
    /// budget (a clock sweep: groups used since the last sweep stay, and those of the batch at
    /// hand are never moved).
    fn evict_if_over_budget(&mut self) -> Result<()> {
        let ids = self.groups.len();
        let hot = self.hot_groups();
        if ids == 0 || hot == 0 {
            return Ok(());
        }
        // Measuring the accumulators walks their state (DISTINCT sets): at most once per
        // SIZE_EVERY batches, or when the groups doubled since.
        self.batches += 1;
        if self.per_group == 0 || self.batches.is_multiple_of(SIZE_EVERY) || ids > 2 * self.sized_at
        {
            let dense = self.groups.size() + self.accs.iter().map(|a| a.size()).sum::<usize>();
            self.per_group = (dense / ids).max(1);
            self.sized_at = ids;
        }
        let max_hot = ((self.env.budget as f64 * DENSE_SHARE) as usize / self.per_group).max(1);
        if hot <= max_hot {
            return Ok(());
        }
        let mut to_evict = hot - max_hot / 4 * 3;
        for _ in 0..2 * ids {
            if to_evict == 0 {
                break;
            }
            let g = self.hand % ids;
            self.hand = g + 1;
            if self.groups.live[g] <= 0 {
                continue; // a free id
            }
            if self.touched[g] || std::mem::take(&mut self.used[g]) {
                continue;
            }
            if self.dirty[g] {
                let bytes = self.encode_group(g as u32);
                let key = self.groups.keys[g].clone();
                self.put_cold(g, &key, bytes);
            }
            self.evict_group(g as u32);
            to_evict -= 1;
        }
        self.table.spill_if_over_budget().map_err(io_err)
    }

    /// Hands group `g`'s state to the table, stamped with its last change (with a TTL) so it
    /// expires as if it had stayed in memory.
    fn put_cold(&mut self, g: usize, key: &[u8], bytes: Vec<u8>) {
        match self.ttl.is_some() {
            true => {
                let written = self.groups.written(g as u32);
                self.table.put_written(self.kgs[g], key, bytes, written);
            }
            false => self.table.put(self.kgs[g], key, bytes),
        }
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
        if self.spec.state_ttl.is_some() {
            self.table.set_clock(flowline_common::clock::now_millis());
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
        let key_cols = self
            .spec
            .group_exprs
            .iter()
            .map(eval)
            .collect::<Result<Vec<_>>>()?;
        let key_rows: Option<Rows> = match &self.keys {
            Some(conv) => Some(conv.convert_columns(&key_cols)?),
            None => None,
        };
        row_key_groups(
            &key_cols,
            n,
            self.env.max_parallelism,
            &mut self.hashes,
            &mut self.row_kgs,
        )?;
        for i in 0..n {
            let key = key_rows.as_ref().map_or(&[][..], |r| r.row(i).data());
            let (g, created) = self.groups.intern(key);
            if created {
                // New in memory: the table may hold it (evicted, or restored).
                self.grow();
                let kg = self.row_kgs[i];
                self.kgs[g as usize] = kg;
                if let Some(bytes) = self.table.take(kg, key).map_err(io_err)? {
                    self.decode_group(g, &bytes)?;
                }
            }
            self.used[g as usize] = true;
            self.dirty[g as usize] = true;
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

        for g in &touched {
            if self.groups.live[*g as usize] <= 0 {
                self.remove_group(*g);
            }
        }
        // The groups this batch touched stay: a working set larger than the budget overruns
        // it rather than moving the same groups out and back in at every batch.
        self.evict_if_over_budget()?;
        for g in touched {
            self.touched[g as usize] = false;
        }
        Ok(out)
    }

    /// Changed groups go to the table, and the table is checkpointed as runs
    /// ([`Operator::snapshot_tables`]); no bytes of its own.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        for g in 0..self.groups.len() {
            if self.dirty[g] && self.groups.live[g] > 0 {
                let bytes = self.encode_group(g as u32);
                let key = self.groups.keys[g].clone();
                self.put_cold(g, &key, bytes);
                self.dirty[g] = false;
            }
        }
        self.table.checkpoint()?;
        // The table's copies of groups held in memory above are written: let them go.
        self.table.spill_if_over_budget().map_err(io_err)?;
        Ok(Vec::new())
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.table.runs()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.table.restore(tables)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        exec_err!("group aggregate: this checkpoint holds state in an older format (before state tables); run with --fresh to start over")
    }

    fn table_stats(&self) -> TableStats {
        self.table.stats()
    }

    fn state_bytes(&self) -> usize {
        self.groups.size()
            + self.accs.iter().map(|a| a.size()).sum::<usize>()
            + self.table.stats().memory_bytes as usize
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// With a budget of a few groups (most live in the table, on disk) the aggregation gives
        /// the changelog of an unbounded budget, over an append-only or an updating input,
        /// through batches of any size and restarts anywhere.
        #[test]
        fn a_spilling_aggregation_gives_the_same_changelog(
            updating in proptest::bool::ANY,
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..40, 0i64..50, proptest::bool::weighted(0.8)), 0..30),
                 proptest::bool::weighted(0.2)),
                1..20,
            )
        ) {
            let mut unbounded = Harness::new(spec(updating));
            let mut spilling = Harness::with_budget(spec(updating), 2000);
            let mut keys = std::collections::HashSet::new();
            // What was added and not yet retracted, per key: retractions must retract a row.
            let mut held: std::collections::HashMap<u8, Vec<i64>> = Default::default();
            for (rows, restart) in steps {
                let mut text = String::from(if updating { "k:str v:i64 _row_kind:kind\n" } else { "k:str v:i64\n" });
                for (k, v, add) in rows {
                    keys.insert(k);
                    if !updating {
                        text += &format!("k{k} {v}\n");
                    } else if add || held.get(&k).is_none_or(|h| h.is_empty()) {
                        held.entry(k).or_default().push(v);
                        text += &format!("k{k} {v} +I\n");
                    } else {
                        let v = held.get_mut(&k).unwrap().pop().unwrap();
                        text += &format!("k{k} {v} -D\n");
                    }
                }
                unbounded.rows(0, &text);
                spilling.rows(0, &text);
                if restart {
                    unbounded.restart();
                    spilling.restart();
                }
                proptest::prop_assert_eq!(spilling.take_table(), unbounded.take_table());
            }
            // About 15 groups fit: with more, some went to the table and on to disk.
            let stats = spilling.table_stats();
            proptest::prop_assert!(keys.len() < 30 || stats.spills + stats.disk_bytes > 0, "{stats:?}");
        }
    }

    #[test]
    fn expired_groups_start_afresh_whether_in_memory_or_on_disk() {
        let ttl = |budget| {
            let mut spec = spec(false);
            spec.state_ttl = Some(std::time::Duration::from_millis(100));
            Harness::with_budget(spec, budget)
        };
        let many: String = (0..60).map(|i| format!("k{i} 1\n")).collect();
        for mut h in [ttl(usize::MAX), ttl(2000)] {
            flowline_common::clock::set_for_tests(Some(1_000));
            h.rows(0, &format!("k:str v:i64\na 7\n{many}"));
            h.take_table();
            flowline_common::clock::set_for_tests(Some(1_060));
            h.rows(0, "k:str v:i64\nz 1");
            h.take_table();
            flowline_common::clock::set_for_tests(Some(1_300));
            h.rows(0, "k:str v:i64\nz 2");
            h.take_table();
            flowline_common::clock::set_for_tests(Some(1_400));
            // Not written for 400 ms > 100 ms: a new group, not an update of the old one.
            h.rows(0, "k:str v:i64\na 5").expect(
                "k n s m _row_kind
                 a 1 5 5 +I",
            );
        }
        flowline_common::clock::set_for_tests(None);
    }

    /// A group evicted after its last change expires a TTL after that change, not after its
    /// eviction (the table gets the change's time).
    #[test]
    fn a_cold_group_expires_from_its_last_change() {
        let mut spec = spec(false);
        spec.state_ttl = Some(std::time::Duration::from_millis(100));
        let mut h = Harness::with_budget(spec, 2000);
        let many =
            |from: usize| -> String { (from..from + 60).map(|i| format!("k{i} 1\n")).collect() };
        flowline_common::clock::set_for_tests(Some(1_000));
        h.rows(0, "k:str v:i64\na 7");
        h.take_table();
        // Other groups push `a` out of memory 90 ms after its change.
        flowline_common::clock::set_for_tests(Some(1_090));
        h.rows(0, &format!("k:str v:i64\n{}", many(0)));
        h.rows(0, &format!("k:str v:i64\n{}", many(100)));
        h.take_table();
        // 150 ms after its change, 60 after its eviction: expired.
        flowline_common::clock::set_for_tests(Some(1_150));
        h.rows(0, "k:str v:i64\na 5").expect(
            "k n s m _row_kind
             a 1 5 5 +I",
        );
        flowline_common::clock::set_for_tests(None);
    }
}
