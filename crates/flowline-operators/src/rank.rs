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
//! State: per partition its rows sorted by (sort key, arrival), in Arrow's row format. Over an
//! append-only input a row that falls below position N can never come back, so only the top N
//! are kept; an updating input may retract a top row, so all rows are kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int8Array, RecordBatch, UInt64Array, UInt64Builder,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{SchemaRef, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

use crate::groups::{Groups, Ttl};
use crate::{Operator, OperatorContext, OperatorFactory};

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
    fn create(&self, _ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
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
            groups: Groups::new(),
            parts: Vec::new(),
            seq: 0,
            bytes: 0,
            ttl: Ttl::new(self.state_ttl),
        }))
    }

    fn updating(&self) -> bool {
        true
    }
}

/// A row's place in its partition: (sort key bytes, arrival tie-break).
type Pos = (Box<[u8]>, u64);

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
    groups: Groups,
    parts: Vec<Sorted>,
    /// Arrival counter: the tie-break between equal sort keys.
    seq: u64,
    bytes: usize,
    ttl: Option<Ttl>,
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

    fn part_of(&mut self, key: &[u8]) -> u32 {
        let (g, created) = self.groups.intern(key);
        if created {
            let small = !self.spec.updating_input;
            self.parts
                .resize_with(self.groups.len(), || Sorted::new(small));
        }
        g
    }

    /// The positions (sort key, tie) of partition `g`'s top rows.
    fn top(&self, g: u32) -> Vec<Pos> {
        self.parts[g as usize].top(self.spec.limit)
    }
}

impl Operator for Rank {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        if let Some(ttl) = &mut self.ttl {
            for g in ttl.due(&mut self.groups) {
                let small = !spec.updating_input;
                let part = std::mem::replace(&mut self.parts[g as usize], Sorted::new(small));
                self.bytes -= part
                    .iter()
                    .map(|((s, _), r)| s.len() + r.len() + 32)
                    .sum::<usize>();
                self.groups.remove(g);
            }
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
        let part_keys = match &self.partitions {
            Some(c) => Some(c.convert_columns(&eval(&mut spec.partition.iter())?)?),
            None => None,
        };
        let sort_keys = self
            .order
            .convert_columns(&eval(&mut spec.order.iter().map(|(e, _)| e))?)?;
        let rows = self.rows.convert_columns(data.columns())?;

        // The top rows of each partition the batch touches, as they were before it, and the
        // rows that leave state meanwhile (they may have to be retracted).
        let mut before: Vec<(u32, Vec<Pos>)> = Vec::new();
        let mut touched: HashSet<u32> = HashSet::new();
        let mut gone: HashMap<Pos, Box<[u8]>> = HashMap::new();
        // A partition's top is remembered just before the batch first changes it: a row that
        // changes nothing (below the top N of an append-only input) costs no copy.
        for i in 0..n {
            let key = part_keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            let add = match &kinds {
                Some(k) => RowKind::from_i8(k.value(i)).is_some_and(RowKind::is_addition),
                None => true,
            };
            let row = rows.row(i);
            if add {
                let g = self.part_of(key);
                let tie = self.tie();
                let part = &self.parts[g as usize];
                if !spec.updating_input && part.len() >= spec.limit {
                    // Append-only and below the top N already: it would leave at once.
                    let (last, last_tie) = part.last_key().expect("not empty");
                    if (sort_keys.row(i).as_ref(), tie) > (last.as_ref(), *last_tie) {
                        continue;
                    }
                }
                if touched.insert(g) {
                    before.push((g, self.top(g)));
                }
                let sort: Box<[u8]> = sort_keys.row(i).as_ref().into();
                self.bytes += sort.len() + row.as_ref().len() + 32;
                let part = &mut self.parts[g as usize];
                part.insert((sort, tie), row.as_ref().into());
                if !spec.updating_input && part.len() > spec.limit {
                    // Append-only: a row below the top N never comes back.
                    let (pos, evicted) = part.pop_last().expect("longer than the limit");
                    self.bytes -= pos.0.len() + evicted.len() + 32;
                    gone.insert(pos, evicted);
                }
            } else {
                // A retraction of a row that is not there (or no longer kept) changes nothing.
                let Some(g) = self.groups.find(key) else {
                    continue;
                };
                let Some(pos) =
                    self.parts[g as usize].find(sort_keys.row(i).as_ref(), row.as_ref())
                else {
                    continue;
                };
                self.groups.touch(g);
                if touched.insert(g) {
                    before.push((g, self.top(g)));
                }
                let r = self.parts[g as usize].remove(&pos).expect("found");
                self.bytes -= pos.0.len() + r.len() + 32;
                gone.insert(pos, r);
            }
        }

        // Per partition and position: old and new row.
        let mut kinds_out: Vec<i8> = Vec::new();
        let mut rns: Vec<u64> = Vec::new();
        let mut out_rows: Vec<&[u8]> = Vec::new();
        let afters: Vec<Vec<Pos>> = before.iter().map(|(g, _)| self.top(*g)).collect();
        for ((g, old), new) in before.iter().zip(&afters) {
            let part = &self.parts[*g as usize];
            let row_at = |pos: &Pos| -> &[u8] {
                match part.get(pos) {
                    Some(r) => r,
                    None => gone
                        .get(pos)
                        .expect("a row that left state is kept for the batch"),
                }
            };
            for at in 0..old.len().max(new.len()) {
                let rn = at as u64 + 1;
                match (old.get(at), new.get(at)) {
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
        for (g, _) in &before {
            if self.parts[*g as usize].is_empty() {
                self.groups.remove(*g);
            }
        }
        if kinds_out.is_empty() {
            return Ok(Vec::new());
        }
        let total = kinds_out.len();
        let parser = self.rows.parser();
        let mut columns = self
            .rows
            .convert_rows(out_rows.iter().map(|r| parser.parse(r)))?;
        columns.push(Arc::new(UInt64Array::from(rns)));
        columns.push(Arc::new(Int8Array::from(kinds_out)));
        let mut out = Vec::new();
        crate::push_sliced(&mut out, crate::batch_of(&spec.schema, columns, total)?);
        Ok(out)
    }

    /// State batches of `[partition key, sort key, tie, row]`.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut batches = Vec::new();
        let (mut keys, mut sorts, mut ties, mut rows) = (
            BinaryBuilder::new(),
            BinaryBuilder::new(),
            UInt64Builder::new(),
            BinaryBuilder::new(),
        );
        let mut n = 0;
        let mut flush = |keys: &mut BinaryBuilder,
                         sorts: &mut BinaryBuilder,
                         ties: &mut UInt64Builder,
                         rows: &mut BinaryBuilder,
                         n: usize|
         -> Result<()> {
            batches.push(crate::state_batch(
                vec![
                    Arc::new(keys.finish()),
                    Arc::new(sorts.finish()),
                    Arc::new(ties.finish()),
                    Arc::new(rows.finish()),
                ],
                n,
            )?);
            Ok(())
        };
        for (g, part) in self.parts.iter().enumerate() {
            for ((sort, tie), row) in part.iter() {
                keys.append_value(&self.groups.keys[g]);
                sorts.append_value(sort);
                ties.append_value(*tie);
                rows.append_value(row);
                n += 1;
                if n == 65536 {
                    flush(&mut keys, &mut sorts, &mut ties, &mut rows, n)?;
                    n = 0;
                }
            }
        }
        if n > 0 {
            flush(&mut keys, &mut sorts, &mut ties, &mut rows, n)?;
        }
        let mut state = crate::encode_batches(&batches)?;
        state.extend_from_slice(&self.seq.to_le_bytes());
        Ok(state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let Some(at) = state.len().checked_sub(8) else {
            return exec_err!("TopN: the checkpoint's state is truncated");
        };
        self.seq = u64::from_le_bytes(state[at..].try_into().expect("8 bytes"));
        for batch in crate::decode_batches(&state[..at])? {
            if batch.num_columns() != 4 {
                return exec_err!(
                    "TopN: the checkpoint's state has {} columns, expected 4",
                    batch.num_columns()
                );
            }
            let keys = batch.column(0).as_binary::<i32>();
            let sorts = batch.column(1).as_binary::<i32>();
            let ties = batch.column(2).as_primitive::<UInt64Type>();
            let rows = batch.column(3).as_binary::<i32>();
            for i in 0..batch.num_rows() {
                let g = self.part_of(keys.value(i));
                self.bytes += sorts.value(i).len() + rows.value(i).len() + 32;
                self.parts[g as usize]
                    .insert((sorts.value(i).into(), ties.value(i)), rows.value(i).into());
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes + self.groups.size()
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
}
