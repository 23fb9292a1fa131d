//! TopN and deduplication: `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn ... WHERE rn <= N`,
//! as Flink's Rank and Deduplicate operators, with an updating result.
//!
//! ```text
//! batch ─eval partition keys─▶ partitions ─▶ per row: add to / retract from its partition's
//!       sorted rows ─▶ per touched partition: top N before vs after, by position:
//!       changed: -U old(rn), +U new(rn);  new position: +I;  lost position: -D
//! ```
//!
//! Rows with equal sort keys rank in arrival order (the earlier first), as in Flink's TopN;
//! deduplication that keeps the last row (N = 1, ordered by a time attribute descending) ranks
//! the later arrival first instead, as Flink's `Deduplicate` (a row with the same time replaces
//! the kept one). Each input batch is one mini-batch: a partition emits one diff per batch.
//!
//! State: per partition its rows sorted by (sort key, arrival), in Arrow's row format, in a keyed
//! state table (spills past the memory budget, checkpoints what changed, expires partitions
//! with `table.exec.state.ttl`). Over an append-only input a row that falls below position N
//! can never come back, so only the top N are kept; an updating input may retract a top row,
//! so all rows are kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

use flowline_state::table::{StateValue, TableStats};

use crate::keygroups::row_key_groups;
use crate::state::{io_err, OperatorTable};
use crate::{Operator, OperatorContext, OperatorFactory, TableRuns};

#[derive(Clone)]
pub struct RankSpec {
    /// PARTITION BY, over the input columns.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// ORDER BY, over the input columns, with each key's direction.
    pub order: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// Rows kept per partition (`rn <= limit`).
    pub limit: usize,
    /// Equal sort keys rank the later arrival first (deduplication keeping the last row).
    pub later_first: bool,
    /// The input columns (without a change kind).
    pub input: SchemaRef,
    /// Whether the input carries a change kind.
    pub updating_input: bool,
    /// The input columns, the row number, then the change kind.
    pub schema: SchemaRef,
    /// `table.exec.state.ttl`: partitions not updated for this long are dropped.
    pub state_ttl: Option<std::time::Duration>,
}

impl RankSpec {
    /// PARTITION BY, for `flowline explain`.
    pub(crate) fn partition_list(&self) -> String {
        let partition: Vec<String> = self.partition.iter().map(|p| p.to_string()).collect();
        partition.join(", ")
    }

    /// ORDER BY with directions, for `flowline explain`.
    pub(crate) fn order_list(&self) -> String {
        let order: Vec<String> = self
            .order
            .iter()
            .map(|(e, o)| format!("{e}{}", if o.descending { " DESC" } else { "" }))
            .collect();
        order.join(", ")
    }
}

impl fmt::Debug for RankSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.limit == 1 {
            "Deduplicate"
        } else {
            "TopN"
        };
        write!(
            f,
            "{what}(partition=[{}], order=[{}], rn<={}) -> updating",
            self.partition_list(),
            self.order_list(),
            self.limit
        )
    }
}

impl OperatorFactory for RankSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let partition_types = self
            .partition
            .iter()
            .map(|e| e.data_type(&self.input).map(SortField::new))
            .collect::<Result<Vec<_>>>()?;
        let order_types = self
            .order
            .iter()
            .map(|(e, o)| {
                e.data_type(&self.input)
                    .map(|t| SortField::new_with_options(t, *o))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = self
            .input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Box::new(Rank {
            spec: Arc::new(self.clone()),
            partitions: if partition_types.is_empty() {
                None
            } else {
                Some(RowConverter::new(partition_types)?)
            },
            order: RowConverter::new(order_types)?,
            rows: RowConverter::new(rows)?,
            table: OperatorTable::new(ctx, TABLE, "rank", ctx.state.budget, self.state_ttl)?,
            max_parallelism: ctx.state.max_parallelism,
            hashes: Vec::new(),
            key_groups: Vec::new(),
            seq: 0,
        }))
    }

    fn updating(&self) -> bool {
        true
    }
}

/// A row's place in its partition: (sort key bytes, arrival tie-break).
type Pos = (Box<[u8]>, u64);

/// The state table: per partition key, its rows in order.
const TABLE: &str = "partitions";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn take_bytes<'a>(b: &mut &'a [u8]) -> std::io::Result<&'a [u8]> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a TopN partition is truncated",
        )
    };
    let (n, rest) = b.split_first_chunk::<4>().ok_or_else(bad)?;
    let n = u32::from_le_bytes(*n) as usize;
    let v = rest.get(..n).ok_or_else(bad)?;
    *b = &rest[n..];
    Ok(v)
}

/// A partition as a state table value: small or large, then (sort key, tie, row) in order.
impl StateValue for Sorted {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(matches!(self, Sorted::Small(_)) as u8);
        for ((sort, tie), row) in self.iter() {
            put_bytes(out, sort);
            out.extend_from_slice(&tie.to_le_bytes());
            put_bytes(out, row);
        }
    }

    fn decode(mut b: &[u8]) -> std::io::Result<Self> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a TopN partition is truncated",
            )
        };
        let (small, rest) = b.split_first().ok_or_else(bad)?;
        b = rest;
        let mut part = Sorted::new(*small == 1);
        while !b.is_empty() {
            let sort = take_bytes(&mut b)?;
            let (tie, rest) = b.split_first_chunk::<8>().ok_or_else(bad)?;
            b = rest;
            let row = take_bytes(&mut b)?;
            part.insert((sort.into(), u64::from_le_bytes(*tie)), row.into());
        }
        Ok(part)
    }

    /// Its length times its first row's size: constant time (asked at every change), exact
    /// enough for a budget.
    fn size(&self) -> usize {
        let entry = |s: &Pos, r: &[u8]| s.0.len() + r.len() + 32;
        let first = match self {
            Sorted::Small(v) => v.first().map_or(0, |(p, r)| entry(p, r)),
            Sorted::Large(m) => m.iter().next().map_or(0, |(p, r)| entry(p, r)),
        };
        first * self.len() + 32
    }
}

/// A partition's rows in order. Over an append-only input a partition holds at most N + 1 rows:
/// a sorted vector (a B-tree node would cost far more than the row when N = 1). Over an
/// updating input it holds every row: a B-tree.
enum Sorted {
    Small(Vec<(Pos, Box<[u8]>)>),
    Large(BTreeMap<Pos, Box<[u8]>>),
}

impl Sorted {
    fn new(small: bool) -> Self {
        if small {
            Sorted::Small(Vec::new())
        } else {
            Sorted::Large(BTreeMap::new())
        }
    }

    fn len(&self) -> usize {
        match self {
            Sorted::Small(v) => v.len(),
            Sorted::Large(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn last_key(&self) -> Option<&Pos> {
        match self {
            Sorted::Small(v) => v.last().map(|(p, _)| p),
            Sorted::Large(m) => m.last_key_value().map(|(p, _)| p),
        }
    }

    fn insert(&mut self, pos: Pos, row: Box<[u8]>) {
        match self {
            Sorted::Small(v) => {
                let at = v.partition_point(|(p, _)| *p < pos);
                v.insert(at, (pos, row));
            }
            Sorted::Large(m) => {
                m.insert(pos, row);
            }
        }
    }

    fn pop_last(&mut self) -> Option<(Pos, Box<[u8]>)> {
        match self {
            Sorted::Small(v) => v.pop(),
            Sorted::Large(m) => m.pop_last(),
        }
    }

    /// The place of a row equal to `row` with sort key `sort`.
    fn find(&self, sort: &[u8], row: &[u8]) -> Option<Pos> {
        let same = |(p, r): (&Pos, &[u8])| (&*p.0 == sort && r == row).then(|| p.clone());
        match self {
            Sorted::Small(v) => v.iter().find_map(|(p, r)| same((p, &**r))),
            Sorted::Large(m) => {
                let (lo, hi): (Pos, Pos) = ((sort.into(), 0), (sort.into(), u64::MAX));
                m.range(lo..=hi).find_map(|(p, r)| same((p, &**r)))
            }
        }
    }

    fn remove(&mut self, pos: &Pos) -> Option<Box<[u8]>> {
        match self {
            Sorted::Small(v) => {
                let at = v.binary_search_by(|(p, _)| p.cmp(pos)).ok()?;
                Some(v.remove(at).1)
            }
            Sorted::Large(m) => m.remove(pos),
        }
    }

    fn get(&self, pos: &Pos) -> Option<&[u8]> {
        match self {
            Sorted::Small(v) => {
                let at = v.binary_search_by(|(p, _)| p.cmp(pos)).ok()?;
                Some(&v[at].1)
            }
            Sorted::Large(m) => m.get(pos).map(|r| &**r),
        }
    }

    /// The places of the first `n` rows.
    fn top(&self, n: usize) -> Vec<Pos> {
        self.iter().take(n).map(|(p, _)| p.clone()).collect()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&Pos, &Box<[u8]>)> + '_> {
        match self {
            Sorted::Small(v) => Box::new(v.iter().map(|(p, r)| (p, r))),
            Sorted::Large(m) => Box::new(m.iter()),
        }
    }
}

pub struct Rank {
    spec: Arc<RankSpec>,
    /// Partition keys ↔ row format; `None` without PARTITION BY (one partition).
    partitions: Option<RowConverter>,
    order: RowConverter,
    rows: RowConverter,
    /// Partition key → its rows in order.
    table: OperatorTable<Sorted>,
    max_parallelism: usize,
    hashes: Vec<u64>,
    key_groups: Vec<u16>,
    /// Arrival counter: the tie-break between equal sort keys.
    seq: u64,
}

impl Rank {
    fn tie(&mut self) -> u64 {
        self.seq += 1;
        if self.spec.later_first {
            u64::MAX - self.seq
        } else {
            self.seq
        }
    }
}

/// A partition the batch touched: its key group and key, and its top N before the batch.
struct Touched<'a> {
    key_group: u16,
    key: &'a [u8],
    before: Vec<Pos>,
}

impl Rank {
    /// Applies row `i` to its partition; records the partition's top N before its first change
    /// in this batch, and rows that leave state (they may have to be retracted).
    #[allow(clippy::too_many_arguments)]
    fn apply_row<'a>(
        &mut self,
        key_group: u16,
        key: &'a [u8],
        add: bool,
        sort: &[u8],
        row: &[u8],
        touched: &mut Vec<Touched<'a>>,
        seen: &mut hashbrown::HashSet<&'a [u8]>,
        gone: &mut HashMap<Pos, Box<[u8]>>,
    ) -> Result<()> {
        let (limit, updating) = (self.spec.limit, self.spec.updating_input);
        let first = !seen.contains(key);
        let before = if add {
            let tie = self.tie();
            self.table
                .update_when(key_group, key, |p| {
                    if !updating {
                        // Append-only and below the top N already: it would leave at once.
                        let full = p.as_ref().filter(|p| p.len() >= limit);
                        if let Some((last, last_tie)) = full.and_then(Sorted::last_key) {
                            if (sort, tie) > (last.as_ref(), *last_tie) {
                                return (None, false);
                            }
                        }
                    }
                    let part = p.get_or_insert_with(|| Sorted::new(!updating));
                    let before = first.then(|| part.top(limit));
                    part.insert((sort.into(), tie), row.into());
                    if !updating && part.len() > limit {
                        // Append-only: a row below the top N never comes back.
                        let (pos, evicted) = part.pop_last().expect("longer than the limit");
                        gone.insert(pos, evicted);
                    }
                    (before, true)
                })
                .map_err(io_err)?
        } else {
            // A retraction of a row that is not there (or no longer kept) changes nothing.
            self.table
                .update_when(key_group, key, |p| {
                    let Some(part) = p.as_mut() else {
                        return (None, false);
                    };
                    let Some(pos) = part.find(sort, row) else {
                        return (None, false);
                    };
                    let before = first.then(|| part.top(limit));
                    let r = part.remove(&pos).expect("found");
                    gone.insert(pos, r);
                    (before, true)
                })
                .map_err(io_err)?
        };
        if let Some(before) = before {
            seen.insert(key);
            touched.push(Touched {
                key_group,
                key,
                before,
            });
        }
        Ok(())
    }
}

impl Operator for Rank {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        if spec.state_ttl.is_some() {
            self.table.set_clock(flowline_common::clock::now_millis());
        }
        let n = batch.num_rows();
        let width = spec.input.fields().len();
        let kinds = if spec.updating_input {
            match row_kinds(&batch) {
                Some(k) => Some(k.clone()),
                None => return exec_err!("TopN: an updating input's batch has no change kind"),
            }
        } else {
            None
        };
        let data = crate::batch_of(&spec.input, batch.columns()[..width].to_vec(), n)?;
        let eval = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            exprs
                .map(|e| e.evaluate(&data).and_then(|v| v.into_array(n)))
                .collect::<Result<Vec<ArrayRef>>>()
        };
        let part_cols = eval(&mut spec.partition.iter())?;
        let part_keys = match &self.partitions {
            Some(c) => Some(c.convert_columns(&part_cols)?),
            None => None,
        };
        row_key_groups(
            &part_cols,
            n,
            self.max_parallelism,
            &mut self.hashes,
            &mut self.key_groups,
        )?;
        let sort_keys = self
            .order
            .convert_columns(&eval(&mut spec.order.iter().map(|(e, _)| e))?)?;
        let rows = self.rows.convert_columns(data.columns())?;

        // The top rows of each partition the batch touches, as they were before it, and the
        // rows that leave state meanwhile (they may have to be retracted). A partition's top is
        // remembered just before the batch first changes it: a row that changes nothing (below
        // the top N of an append-only input) costs no copy.
        let mut touched: Vec<Touched> = Vec::new();
        let mut seen: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::with_capacity(n);
        let mut gone: HashMap<Pos, Box<[u8]>> = HashMap::new();
        for i in 0..n {
            let key = part_keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let add = match &kinds {
                Some(k) => RowKind::from_i8(k.value(i)).is_some_and(RowKind::is_addition),
                None => true,
            };
            let kg = self.key_groups[i];
            let (sort, row) = (sort_keys.row(i), rows.row(i));
            self.apply_row(
                kg,
                key,
                add,
                sort.data(),
                row.data(),
                &mut touched,
                &mut seen,
                &mut gone,
            )?;
        }

        // Per partition and position: old and new row.
        let mut kinds_out: Vec<i8> = Vec::new();
        let mut rns: Vec<u64> = Vec::new();
        let mut out_rows: Vec<&[u8]> = Vec::new();
        let limit = spec.limit;
        for t in &touched {
            // Touched partitions stay in memory until the batch ends (no spill meanwhile).
            let part = self.table.peek(t.key);
            let new = part.map_or_else(Vec::new, |p| p.top(limit));
            let row_at = |pos: &Pos| -> &[u8] {
                match part.and_then(|p| p.get(pos)) {
                    Some(r) => r,
                    None => gone
                        .get(pos)
                        .expect("a row that left state is kept for the batch"),
                }
            };
            for at in 0..t.before.len().max(new.len()) {
                let rn = at as u64 + 1;
                match (t.before.get(at), new.get(at)) {
                    (Some(o), Some(nw)) if o == nw => {}
                    (Some(o), Some(nw)) => {
                        kinds_out.extend([RowKind::UpdateBefore as i8, RowKind::UpdateAfter as i8]);
                        rns.extend([rn, rn]);
                        out_rows.extend([row_at(o), row_at(nw)]);
                    }
                    (Some(o), None) => {
                        kinds_out.push(RowKind::Delete as i8);
                        rns.push(rn);
                        out_rows.push(row_at(o));
                    }
                    (None, Some(nw)) => {
                        kinds_out.push(RowKind::Insert as i8);
                        rns.push(rn);
                        out_rows.push(row_at(nw));
                    }
                    (None, None) => {}
                }
            }
        }
        let mut out = Vec::new();
        if !kinds_out.is_empty() {
            let total = kinds_out.len();
            let parser = self.rows.parser();
            let mut columns = self
                .rows
                .convert_rows(out_rows.iter().map(|r| parser.parse(r)))?;
            columns.push(Arc::new(UInt64Array::from(rns)));
            columns.push(Arc::new(Int8Array::from(kinds_out)));
            crate::push_sliced(&mut out, crate::batch_of(&spec.schema, columns, total)?);
        }
        for t in &touched {
            if self.table.peek(t.key).is_some_and(Sorted::is_empty) {
                self.table.delete(t.key_group, t.key).map_err(io_err)?;
            }
        }
        self.table.spill_if_over_budget().map_err(io_err)?;
        Ok(out)
    }

    /// The partitions are checkpointed as runs ([`Operator::snapshot_tables`]); the bytes are
    /// the arrival counter.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.table.checkpoint()?;
        Ok(self.seq.to_le_bytes().to_vec())
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.table.runs()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.table.restore(tables)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            return Ok(()); // an operator that had finished
        }
        let Ok(seq) = <[u8; 8]>::try_from(state) else {
            return exec_err!("TopN: this checkpoint holds state in an older format (before state tables); run with --fresh to start over");
        };
        self.seq = u64::from_le_bytes(seq);
        Ok(())
    }

    /// The arrival counter continues past every old subtask's.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        for s in states {
            let seq = self.seq;
            self.restore(s)?;
            self.seq = self.seq.max(seq);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.table.stats().memory_bytes as usize
    }

    fn table_stats(&self) -> TableStats {
        self.table.stats()
    }

    fn open_windows(&self) -> usize {
        self.table.hot_len()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, Harness};

    /// `ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn ... WHERE rn <= limit`.
    fn top(limit: usize, later_first: bool) -> RankSpec {
        let input = schema("k:str v:i64 id:i32");
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        fields.push(flowline_common::changelog::row_kind_field());
        RankSpec {
            partition: vec![Arc::new(Column::new("k", 0))],
            order: vec![(
                Arc::new(Column::new("v", 1)),
                SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            )],
            limit,
            later_first,
            input,
            updating_input: false,
            schema: Arc::new(Schema::new(fields)),
            state_ttl: None,
        }
    }

    #[test]
    fn top_n_ranks_ties_by_arrival_and_null_keys_as_a_partition() {
        Harness::new(top(2, false))
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     5     1
                 a     5     2
                 NULL  1     3",
            )
            .expect_unordered(
                "k v id rn _row_kind
                 a 5 1 1 +I
                 a 5 2 2 +I
                 NULL 1 3 1 +I",
            )
            // A better row takes rank 1; the rows below move down; the last drops out.
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     9     4",
            )
            .expect_unordered(
                "k v id rn _row_kind
                 a 5 1 1 -U
                 a 9 4 1 +U
                 a 5 2 2 -U
                 a 5 1 2 +U",
            )
            // A row below the top 2 changes nothing.
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     1     5",
            )
            .expect("");
    }

    #[test]
    fn top_n_survives_a_restart() {
        Harness::new(top(1, false))
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     3     1",
            )
            .expect(
                "k v id rn _row_kind
                 a 3 1 1 +I",
            )
            .restart()
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     2     2
                 a     4     3",
            )
            .expect(
                "k v id rn _row_kind
                 a 3 1 1 -U
                 a 4 3 1 +U",
            );
    }

    #[test]
    fn deduplication_keeping_the_last_row_replaces_on_ties() {
        Harness::new(top(1, true))
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     7     1",
            )
            .expect(
                "k v id rn _row_kind
                 a 7 1 1 +I",
            )
            .rows(
                0,
                "k:str v:i64 id:i32
                 a     7     2",
            )
            .expect(
                "k v id rn _row_kind
                 a 7 1 1 -U
                 a 7 2 1 +U",
            );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// With a budget of a few partitions (everything spills) TopN and deduplication give the
        /// changelog of an unbounded budget, through batches of any size and restarts anywhere.
        #[test]
        fn a_spilling_top_n_gives_the_same_changelog(
            limit in 1usize..4,
            later_first in proptest::bool::ANY,
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..30, 0i64..20), 0..30), proptest::bool::weighted(0.2)),
                1..20,
            )
        ) {
            let mut unbounded = Harness::new(top(limit, later_first));
            let mut spilling = Harness::with_budget(top(limit, later_first), 1500);
            let mut id = 0;
            for (rows, restart) in steps {
                let mut text = String::from("k:str v:i64 id:i32\n");
                for (k, v) in rows {
                    id += 1;
                    text += &format!("k{k} {v} {id}\n");
                }
                unbounded.rows(0, &text);
                spilling.rows(0, &text);
                if restart {
                    unbounded.restart();
                    spilling.restart();
                }
                proptest::prop_assert_eq!(spilling.take_table(), unbounded.take_table());
            }
        }
    }
}
