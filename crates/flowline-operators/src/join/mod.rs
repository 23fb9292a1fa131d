//! Regular (non-windowed) equi-joins: INNER, LEFT, RIGHT and FULL OUTER, and the semi and anti
//! joins of `IN` / `EXISTS` subqueries, over append-only or updating inputs, as Flink's streaming
//! join.
//!
//! ```text
//! batch from one input ─eval keys─▶ row-format key bytes ─▶ the other input's rows of that key
//!     ─▶ the ON condition's non-equi part over the candidate pairs (one vectorised evaluation)
//!     ─▶ per row, in order: store / retract it, emit the joined rows
//! ```
//!
//! Output change kinds follow Flink's `StreamingJoinOperator`: an inner join forwards the input
//! row's kind (`+I`/`+U` or `-U`/`-D`); an outer join emits `+I`/`-D` only, and a row of an
//! outer side that gains its first match retracts its NULL-padded row (`-D [row, NULL]`) and
//! emits it again when it loses its last (`+I [row, NULL]`). A semi (anti) join emits a row of its
//! kept input when it gains its first match (loses its last), and retracts it on the reverse. An
//! inner or semi join of two append-only inputs is append-only. Rows whose key has a NULL never match (SQL equality): they are not
//! stored, and an outer side emits them NULL-padded at once.
//!
//! State: per input, a state table from key to its rows (Arrow's row format) and, on an outer
//! side, how many rows of the other input each matches; equal rows of an updating input share
//! one entry with a count (a retraction must find its row). Keys a batch looks up stay in memory
//! until the batch ends; past the budget cold keys spill to disk, and a checkpoint writes the
//! keys changed since the last one.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};
use flowline_state::table::{StateValue, TableStats};

use crate::keygroups::row_key_groups;
use crate::pairs::{filter_mask, key_columns, key_nulls, pairs_schema, stored_columns};
use crate::state::{io_err, OperatorTable};
use crate::{Operator, OperatorContext, OperatorFactory, TableRuns};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Rows of the left input that have a match (`EXISTS`, `IN`), once each.
    LeftSemi,
    /// Rows of the left input that have no match (`NOT EXISTS`).
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    /// Whether input `side` (0 = left, 1 = right) counts the matches of its rows: an outer side
    /// (it emits unmatched rows NULL-padded) or the side a semi/anti join emits.
    fn outer(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        ) || self.kept() == Some(side)
    }

    /// The input a semi or anti join emits rows of.
    pub fn kept(self) -> Option<usize> {
        match self {
            JoinKind::LeftSemi | JoinKind::LeftAnti => Some(0),
            JoinKind::RightSemi | JoinKind::RightAnti => Some(1),
            _ => None,
        }
    }

    fn anti(self) -> bool {
        matches!(self, JoinKind::LeftAnti | JoinKind::RightAnti)
    }
}

#[derive(Clone)]
pub struct JoinSpec {
    pub kind: JoinKind,
    /// Per input (left, right): the equi-join key over its columns; both lists have the same
    /// types, so equal keys have equal bytes.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per input: its columns, without the change kind.
    pub inputs: [SchemaRef; 2],
    /// Per input: whether its rows carry a change kind.
    pub updating: [bool; 2],
    /// The rest of the ON condition, over the left columns followed by the right ones.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The left columns, the right columns (only the emitted input's for a semi or anti join),
    /// then the change kind when the output is updating.
    pub schema: SchemaRef,
    /// `table.exec.state.ttl`: keys of an input not updated for this long are dropped.
    pub state_ttl: Option<std::time::Duration>,
}

impl JoinSpec {
    /// Only an inner or semi join of append-only inputs never retracts a row it emitted.
    pub fn output_updating(&self) -> bool {
        !matches!(
            self.kind,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        ) || self.updating[0]
            || self.updating[1]
    }
}

impl fmt::Debug for JoinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |side: usize| -> Vec<String> {
            self.keys[side].iter().map(|k| k.to_string()).collect()
        };
        let on: Vec<String> = keys(0)
            .iter()
            .zip(keys(1))
            .map(|(l, r)| format!("{l} = {r}"))
            .collect();
        write!(f, "Join({:?}, on=[{}]", self.kind, on.join(", "))?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        write!(f, ")")?;
        if self.output_updating() {
            write!(f, " -> updating")?;
        }
        Ok(())
    }
}

impl OperatorFactory for JoinSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let side = |i: usize| -> Result<Side> {
            let sort = |t: &datafusion::arrow::datatypes::DataType| SortField::new(t.clone());
            let key_types = self.keys[i]
                .iter()
                .map(|k| k.data_type(&self.inputs[i]).map(|t| sort(&t)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Side {
                keys: RowConverter::new(key_types)?,
                rows: RowConverter::new(
                    self.inputs[i]
                        .fields()
                        .iter()
                        .map(|f| sort(f.data_type()))
                        .collect(),
                )?,
                // The budget is the operator's: half for each input.
                table: OperatorTable::new(
                    ctx,
                    TABLES[i],
                    "join",
                    ctx.state.budget / 2,
                    self.state_ttl,
                )?,
                outer: self.kind.outer(i),
                updating: self.updating[i],
                key_groups: Vec::new(),
            })
        };
        Ok(Box::new(Join {
            spec: Arc::new(self.clone()),
            sides: [side(0)?, side(1)?],
            pairs: pairs_schema(&self.inputs[0], &self.inputs[1]),
            max_parallelism: ctx.state.max_parallelism,
            hashes: Vec::new(),
        }))
    }

    fn updating(&self) -> bool {
        self.output_updating()
    }
}

/// The inputs' state tables, by name in checkpoints.
const TABLES: [&str; 2] = ["left", "right"];

/// A distinct row of one input under one key.
struct Entry {
    row: Box<[u8]>,
    /// Times the row is present.
    count: u32,
    /// On an outer side: rows of the other input it matches (counted with their repeats).
    matched: u32,
}

/// One key's rows of one input: a value of the input's state table.
#[derive(Default)]
struct KeyRows {
    rows: Vec<Entry>,
    /// Bytes of the rows.
    bytes: usize,
}

impl KeyRows {
    fn push(&mut self, row: &[u8], count: u32, matched: u32) {
        self.bytes += row.len();
        self.rows.push(Entry {
            row: row.into(),
            count,
            matched,
        });
    }
}

/// On disk, per row: count, matched and length (u32, little-endian), then the row.
impl StateValue for KeyRows {
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes + 12 * self.rows.len());
        for e in &self.rows {
            out.extend_from_slice(&e.count.to_le_bytes());
            out.extend_from_slice(&e.matched.to_le_bytes());
            out.extend_from_slice(&(e.row.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.row);
        }
    }

    fn decode(mut bytes: &[u8]) -> std::io::Result<Self> {
        let mut rows = KeyRows::default();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a malformed join row");
        while !bytes.is_empty() {
            let (head, rest) = bytes.split_first_chunk::<12>().ok_or_else(bad)?;
            let u = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
            let len = u(8) as usize;
            let row = rest.get(..len).ok_or_else(bad)?;
            rows.push(row, u(0), u(4));
            bytes = &rest[len..];
        }
        Ok(rows)
    }

    fn size(&self) -> usize {
        self.bytes + self.rows.capacity() * std::mem::size_of::<Entry>()
    }
}

/// One input's rows, by key.
struct Side {
    keys: RowConverter,
    rows: RowConverter,
    /// Per key: its distinct rows (its own table: the inputs' keys are alike).
    table: OperatorTable<KeyRows>,
    outer: bool,
    /// The input carries retractions: equal rows share an entry, so a retraction finds its row.
    updating: bool,
    /// The key group of each row of the batch at hand.
    key_groups: Vec<u16>,
}

impl Side {
    /// Adds a copy of `row`, which matches `matched` rows of the other input.
    fn put(&mut self, key_group: u16, key: &[u8], row: &[u8], matched: u32) -> Result<()> {
        let updating = self.updating;
        self.table
            .update(key_group, key, |v| {
                let list = v.get_or_insert_with(KeyRows::default);
                // An append-only input is never retracted: its rows need not be found again, so
                // a repeated row gets an entry of its own rather than a scan of the key's rows.
                let same = match updating {
                    true => list.rows.iter_mut().find(|e| *e.row == *row),
                    false => None,
                };
                match same {
                    Some(e) => e.count += 1,
                    None => list.push(row, 1, matched),
                }
            })
            .map_err(io_err)
    }

    /// Stores (`add`) or retracts input row `i` of a batch, unless its key has a NULL (such a
    /// row never matches, so it is not kept).
    fn apply(&mut self, add: bool, key: &Rows, rows: &Rows, i: usize, matched: u32) -> Result<()> {
        let (kg, key, row) = (self.key_groups[i], key.row(i), rows.row(i));
        if add {
            self.put(kg, key.as_ref(), row.as_ref(), matched)
        } else {
            self.retract(kg, key.as_ref(), row.as_ref())
        }
    }

    /// Removes one copy of `row`; a retraction of a row that is not there changes nothing.
    fn retract(&mut self, key_group: u16, key: &[u8], row: &[u8]) -> Result<()> {
        self.table
            .update_when(key_group, key, |v| {
                let Some(list) = v else { return ((), false) };
                let Some(at) = list.rows.iter().position(|e| *e.row == *row) else {
                    return ((), false);
                };
                list.rows[at].count -= 1;
                if list.rows[at].count == 0 {
                    list.bytes -= list.rows[at].row.len();
                    list.rows.swap_remove(at);
                    if list.rows.is_empty() {
                        *v = None;
                    }
                }
                ((), true)
            })
            .map_err(io_err)
    }
}

pub struct Join {
    spec: Arc<JoinSpec>,
    sides: [Side; 2],
    pairs: SchemaRef,
    max_parallelism: usize,
    /// Scratch for the key groups.
    hashes: Vec<u64>,
}

/// Where a joined row's columns come from: a row of the input batch, a stored row of the other
/// input (its table slot, entry), or NULLs.
struct Joined {
    kinds: Vec<i8>,
    input: Vec<Option<u32>>,
    other: Vec<Option<(u32, u32)>>,
}

impl Joined {
    fn new() -> Self {
        Self {
            kinds: Vec::new(),
            input: Vec::new(),
            other: Vec::new(),
        }
    }

    fn push(&mut self, times: u32, kind: RowKind, input: Option<u32>, other: Option<(u32, u32)>) {
        for _ in 0..times {
            self.kinds.push(kind as i8);
            self.input.push(input);
            self.other.push(other);
        }
    }
}

impl Join {
    /// The joined columns (left then right) of `rows`, or only input `only`'s (a semi or anti
    /// join's output), taking input-side columns from `data`.
    fn columns(
        &self,
        side: usize,
        data: &RecordBatch,
        rows: &Joined,
        only: Option<usize>,
    ) -> Result<Vec<ArrayRef>> {
        let other = &self.sides[1 - side];
        let input_cols = if only.is_none_or(|k| k == side) {
            let input_idx: UInt32Array = rows.input.iter().copied().collect();
            data.columns()
                .iter()
                .map(|c| take(c, &input_idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let other_cols = if only == Some(side) {
            Vec::new()
        } else {
            let stored: Vec<Option<&[u8]>> = rows
                .other
                .iter()
                .map(|o| o.map(|(slot, e)| &*other.table.at(slot).rows[e as usize].row))
                .collect();
            stored_columns(&other.rows, &self.spec.inputs[1 - side], &stored)?
        };
        Ok(if side == 0 {
            [input_cols, other_cols].concat()
        } else {
            [other_cols, input_cols].concat()
        })
    }

    /// Which candidate pairs satisfy the non-equi part of the ON condition (all without one).
    fn filter(
        &self,
        side: usize,
        data: &RecordBatch,
        cand: &Joined,
    ) -> Result<Option<BooleanArray>> {
        if self.spec.filter.is_none() || cand.kinds.is_empty() {
            return Ok(None);
        }
        let columns = self.columns(side, data, cand, None)?;
        filter_mask(
            self.spec.filter.as_ref(),
            &self.pairs,
            columns,
            cand.kinds.len(),
        )
    }
}

impl Operator for Join {
    fn on_batch(&mut self, side: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        if spec.state_ttl.is_some() {
            let now = flowline_common::clock::now_millis();
            self.sides.iter_mut().for_each(|s| s.table.set_clock(now));
        }
        let n = batch.num_rows();
        let width = spec.inputs[side].fields().len();
        let kinds = if spec.updating[side] {
            match row_kinds(&batch) {
                Some(k) => Some(k.clone()),
                None => return exec_err!("join: an updating input's batch has no change kind"),
            }
        } else {
            None
        };
        let data = crate::batch_of(&spec.inputs[side], batch.columns()[..width].to_vec(), n)?;
        let key_cols = key_columns(&spec.keys[side], &data)?;
        let null_key = key_nulls(&key_cols);
        let has_key = |i: usize| null_key.as_ref().is_none_or(|nb| nb.is_valid(i));
        let key_rows = self.sides[side].keys.convert_columns(&key_cols)?;
        row_key_groups(
            &key_cols,
            n,
            self.max_parallelism,
            &mut self.hashes,
            &mut self.sides[side].key_groups,
        )?;
        let rows = self.sides[side].rows.convert_columns(data.columns())?;

        // The other input's rows under each row's key: the candidate pairs, in row order. The
        // keys found stay in memory (by slot) until the batch ends.
        let mut cand = Joined::new();
        let mut starts = Vec::with_capacity(n + 1);
        {
            let [left, right] = &mut self.sides;
            let (this, other) = if side == 0 {
                (&*left, right)
            } else {
                (&*right, left)
            };
            for i in 0..n {
                starts.push(cand.kinds.len());
                if !has_key(i) {
                    continue;
                }
                let key = key_rows.row(i);
                let found = other
                    .table
                    .locate(this.key_groups[i], key.as_ref())
                    .map_err(io_err)?;
                if let Some(slot) = found {
                    for e in 0..other.table.at(slot).rows.len() {
                        cand.push(1, RowKind::Insert, Some(i as u32), Some((slot, e as u32)));
                    }
                }
            }
            starts.push(cand.kinds.len());
        }
        let pass = self.filter(side, &data, &cand)?;

        let any_outer = spec.kind != JoinKind::Inner;
        let mut out = Joined::new();
        let [left, right] = &mut self.sides;
        let (this, other) = if side == 0 {
            (left, right)
        } else {
            (right, left)
        };
        let other_outer = other.outer;
        let other = &mut other.table;
        for i in 0..n {
            let kind = match &kinds {
                Some(k) => match RowKind::from_i8(k.value(i)) {
                    Some(kind) => kind,
                    None => return exec_err!("join: unknown change kind {}", k.value(i)),
                },
                None => RowKind::Insert,
            };
            let matches = (starts[i]..starts[i + 1])
                .filter(|c| pass.as_ref().is_none_or(|p| p.value(*c)))
                .map(|c| cand.other[c].expect("candidates have a stored row"));
            let row = Some(i as u32);
            if let Some(keep) = spec.kind.kept() {
                // Semi / anti: a kept row is emitted while it has (semi) or has not (anti) a
                // match; rows of the other input only change that.
                let anti = spec.kind.anti();
                let (show, hide) = if anti {
                    (RowKind::Delete, RowKind::Insert)
                } else {
                    (RowKind::Insert, RowKind::Delete)
                };
                let add = kind.is_addition();
                if side == keep {
                    let matched: u32 = matches
                        .map(|(slot, e)| other.at(slot).rows[e as usize].count)
                        .sum();
                    if (matched > 0) != anti {
                        let k = if add {
                            RowKind::Insert
                        } else {
                            RowKind::Delete
                        };
                        out.push(1, k, row, None);
                    }
                    if has_key(i) {
                        this.apply(add, &key_rows, &rows, i, matched)?;
                    }
                    continue;
                }
                for (slot, e) in matches {
                    let (count, was) = other.change_at(slot, |v| {
                        let entry = &mut v.rows[e as usize];
                        let was = entry.matched;
                        entry.matched = match add {
                            true => was + 1,
                            false => was.saturating_sub(1),
                        };
                        (entry.count, was)
                    });
                    if add && was == 0 {
                        out.push(count, show, None, Some((slot, e)));
                    } else if !add && was <= 1 {
                        out.push(count, hide, None, Some((slot, e)));
                    }
                }
                if has_key(i) {
                    this.apply(add, &key_rows, &rows, i, 0)?;
                }
                continue;
            }
            if kind.is_addition() {
                let mut matched = 0u32;
                for (slot, e) in matches {
                    let count = if other_outer {
                        let (count, was) = other.change_at(slot, |v| {
                            let entry = &mut v.rows[e as usize];
                            entry.matched += 1;
                            (entry.count, entry.matched - 1)
                        });
                        if was == 0 {
                            out.push(count, RowKind::Delete, None, Some((slot, e)));
                        }
                        count
                    } else {
                        other.at(slot).rows[e as usize].count
                    };
                    let k = if any_outer { RowKind::Insert } else { kind };
                    out.push(count, k, row, Some((slot, e)));
                    matched += count;
                }
                if this.outer && matched == 0 {
                    out.push(1, RowKind::Insert, row, None);
                }
                if has_key(i) {
                    this.apply(true, &key_rows, &rows, i, matched)?;
                }
            } else {
                if has_key(i) {
                    this.apply(false, &key_rows, &rows, i, 0)?;
                }
                let mut any = false;
                for (slot, e) in matches {
                    any = true;
                    let k = if any_outer { RowKind::Delete } else { kind };
                    if other_outer {
                        let (count, now) = other.change_at(slot, |v| {
                            let entry = &mut v.rows[e as usize];
                            entry.matched = entry.matched.saturating_sub(1);
                            (entry.count, entry.matched)
                        });
                        out.push(count, k, row, Some((slot, e)));
                        if now == 0 {
                            out.push(count, RowKind::Insert, None, Some((slot, e)));
                        }
                    } else {
                        let count = other.at(slot).rows[e as usize].count;
                        out.push(count, k, row, Some((slot, e)));
                    }
                }
                if this.outer && !any {
                    out.push(1, RowKind::Delete, row, None);
                }
            }
        }
        let mut batches = Vec::new();
        if !out.kinds.is_empty() {
            let rows_out = out.kinds.len();
            let mut columns = self.columns(side, &data, &out, spec.kind.kept())?;
            if spec.output_updating() {
                columns.push(Arc::new(datafusion::arrow::array::Int8Array::from(
                    std::mem::take(&mut out.kinds),
                )));
            }
            crate::push_sliced(
                &mut batches,
                crate::batch_of(&spec.schema, columns, rows_out)?,
            );
        }
        // Slots are read above: only now may cold keys leave memory.
        for s in &mut self.sides {
            s.table.spill_if_over_budget().map_err(io_err)?;
        }
        Ok(batches)
    }

    /// The rows are checkpointed as runs ([`Operator::snapshot_tables`]); no bytes of its own.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        for s in &mut self.sides {
            s.table.checkpoint()?;
        }
        Ok(Vec::new())
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.sides.iter().flat_map(|s| s.table.runs()).collect()
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        for s in &mut self.sides {
            s.table.restore(tables.clone())?;
        }
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if !state.is_empty() {
            return exec_err!("join: this checkpoint holds state in an older format (before state tables); run with --fresh to start over");
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides
            .iter()
            .map(|s| s.table.stats().memory_bytes as usize)
            .sum()
    }

    fn table_stats(&self) -> TableStats {
        let [l, r] = [self.sides[0].table.stats(), self.sides[1].table.stats()];
        TableStats {
            memory_bytes: l.memory_bytes + r.memory_bytes,
            disk_bytes: l.disk_bytes + r.disk_bytes,
            spills: l.spills + r.spills,
            compactions: l.compactions + r.compactions,
            checkpoint_bytes: l.checkpoint_bytes + r.checkpoint_bytes,
        }
    }
}

#[cfg(test)]
mod tests;
