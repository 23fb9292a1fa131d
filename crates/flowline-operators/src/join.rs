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
//! State: per input, per key, its rows (Arrow's row format) and, on an outer side, how many rows
//! of the other input each matches; equal rows of an updating input share one entry with a count
//! (a retraction must find its row). It lives in memory and is written whole at each checkpoint.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, BooleanArray, RecordBatch, UInt32Array, UInt32Builder,
    UInt8Array, UInt8Builder,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::changelog::{row_kinds, RowKind};

use crate::groups::{Groups, Ttl};
use crate::pairs::{eval_keys, filter_mask, pairs_schema, stored_columns};
use crate::{Operator, OperatorContext, OperatorFactory};

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
    fn create(&self, _ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
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
                groups: Groups::new(),
                entries: Vec::new(),
                outer: self.kind.outer(i),
                updating: self.updating[i],
                bytes: 0,
                ttl: Ttl::new(self.state_ttl),
            })
        };
        Ok(Box::new(Join {
            spec: Arc::new(self.clone()),
            sides: [side(0)?, side(1)?],
            pairs: pairs_schema(&self.inputs[0], &self.inputs[1]),
        }))
    }

    fn updating(&self) -> bool {
        self.output_updating()
    }
}

/// A distinct row of one input under one key.
struct Entry {
    row: Box<[u8]>,
    /// Times the row is present.
    count: u32,
    /// On an outer side: rows of the other input it matches (counted with their repeats).
    matched: u32,
}

/// One input's rows, by key.
struct Side {
    keys: RowConverter,
    rows: RowConverter,
    groups: Groups,
    /// Per key (group id): its distinct rows.
    entries: Vec<Vec<Entry>>,
    outer: bool,
    /// The input carries retractions: equal rows share an entry, so a retraction finds its row.
    updating: bool,
    bytes: usize,
    ttl: Option<Ttl>,
}

impl Side {
    /// Adds `count` copies of `row`, which matches `matched` rows of the other input.
    fn put(&mut self, key: &[u8], row: &[u8], count: u32, matched: u32) {
        let (g, created) = self.groups.intern(key);
        if created {
            self.entries.resize_with(self.groups.len(), Vec::new);
        }
        let list = &mut self.entries[g as usize];
        // An append-only input is never retracted: its rows need not be found again, so a
        // repeated row gets an entry of its own rather than a scan of the key's rows.
        let same = match self.updating {
            true => list.iter_mut().find(|e| *e.row == *row),
            false => None,
        };
        match same {
            Some(e) => e.count += count,
            None => {
                self.bytes += row.len() + 16;
                list.push(Entry {
                    row: row.into(),
                    count,
                    matched,
                })
            }
        }
    }

    /// Stores (`add`) or retracts input row `i` of a batch, unless its key has a NULL (such a
    /// row never matches, so it is not kept).
    fn apply(&mut self, add: bool, key: &Rows, rows: &Rows, i: usize, has_key: bool, matched: u32) {
        if !has_key {
            return;
        }
        let (key, row) = (key.row(i), rows.row(i));
        if add {
            self.put(key.as_ref(), row.as_ref(), 1, matched);
        } else {
            self.retract(key.as_ref(), row.as_ref());
        }
    }

    /// Drops the keys not updated for the state TTL.
    fn expire(&mut self) {
        let Some(ttl) = &mut self.ttl else { return };
        for g in ttl.due(&mut self.groups) {
            let list = std::mem::take(&mut self.entries[g as usize]);
            self.bytes -= list.iter().map(|e| e.row.len() + 16).sum::<usize>();
            self.groups.remove(g);
        }
    }

    /// Removes one copy of `row`; a retraction of a row that is not there changes nothing.
    fn retract(&mut self, key: &[u8], row: &[u8]) {
        let Some(g) = self.groups.find(key) else {
            return;
        };
        self.groups.touch(g);
        let list = &mut self.entries[g as usize];
        let Some(at) = list.iter().position(|e| *e.row == *row) else {
            return;
        };
        list[at].count -= 1;
        if list[at].count == 0 {
            self.bytes -= list[at].row.len() + 16;
            list.swap_remove(at);
            if list.is_empty() {
                self.groups.remove(g);
            }
        }
    }
}

pub struct Join {
    spec: Arc<JoinSpec>,
    sides: [Side; 2],
    pairs: SchemaRef,
}

/// Where a joined row's columns come from: a row of the input batch, a stored row of the other
/// input (key group, entry), or NULLs.
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
                .map(|o| o.map(|(g, e)| &*other.entries[g as usize][e as usize].row))
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
        self.sides.iter_mut().for_each(Side::expire);
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
        let (key_rows, null_key) = eval_keys(&spec.keys[side], &self.sides[side].keys, &data)?;
        let has_key = |i: usize| null_key.as_ref().is_none_or(|nb| nb.is_valid(i));
        let rows = self.sides[side].rows.convert_columns(data.columns())?;

        // The other input's rows under each row's key: the candidate pairs, in row order.
        let mut cand = Joined::new();
        let mut starts = Vec::with_capacity(n + 1);
        {
            let other = &self.sides[1 - side];
            for i in 0..n {
                starts.push(cand.kinds.len());
                if !has_key(i) {
                    continue;
                }
                if let Some(g) = other.groups.find(key_rows.row(i).as_ref()) {
                    for e in 0..other.entries[g as usize].len() {
                        cand.push(1, RowKind::Insert, Some(i as u32), Some((g, e as u32)));
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
                        .map(|(g, e)| other.entries[g as usize][e as usize].count)
                        .sum();
                    if (matched > 0) != anti {
                        let k = if add {
                            RowKind::Insert
                        } else {
                            RowKind::Delete
                        };
                        out.push(1, k, row, None);
                    }
                    this.apply(add, &key_rows, &rows, i, has_key(i), matched);
                    continue;
                }
                for (g, e) in matches {
                    let entry = &mut other.entries[g as usize][e as usize];
                    if add {
                        if entry.matched == 0 {
                            out.push(entry.count, show, None, Some((g, e)));
                        }
                        entry.matched += 1;
                    } else {
                        entry.matched = entry.matched.saturating_sub(1);
                        if entry.matched == 0 {
                            out.push(entry.count, hide, None, Some((g, e)));
                        }
                    }
                }
                this.apply(add, &key_rows, &rows, i, has_key(i), 0);
                continue;
            }
            if kind.is_addition() {
                let mut matched = 0u32;
                for (g, e) in matches {
                    let entry = &mut other.entries[g as usize][e as usize];
                    if other.outer {
                        if entry.matched == 0 {
                            out.push(entry.count, RowKind::Delete, None, Some((g, e)));
                        }
                        entry.matched += 1;
                    }
                    let k = if any_outer { RowKind::Insert } else { kind };
                    out.push(entry.count, k, row, Some((g, e)));
                    matched += entry.count;
                }
                if this.outer && matched == 0 {
                    out.push(1, RowKind::Insert, row, None);
                }
                this.apply(true, &key_rows, &rows, i, has_key(i), matched);
            } else {
                this.apply(false, &key_rows, &rows, i, has_key(i), 0);
                let mut any = false;
                for (g, e) in matches {
                    any = true;
                    let entry = &mut other.entries[g as usize][e as usize];
                    let k = if any_outer { RowKind::Delete } else { kind };
                    out.push(entry.count, k, row, Some((g, e)));
                    if other.outer {
                        entry.matched = entry.matched.saturating_sub(1);
                        if entry.matched == 0 {
                            out.push(entry.count, RowKind::Insert, None, Some((g, e)));
                        }
                    }
                }
                if this.outer && !any {
                    out.push(1, RowKind::Delete, row, None);
                }
            }
        }
        if out.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let rows_out = out.kinds.len();
        let mut columns = self.columns(side, &data, &out, spec.kind.kept())?;
        if spec.output_updating() {
            columns.push(Arc::new(datafusion::arrow::array::Int8Array::from(
                std::mem::take(&mut out.kinds),
            )));
        }
        let mut batches = Vec::new();
        crate::push_sliced(
            &mut batches,
            crate::batch_of(&spec.schema, columns, rows_out)?,
        );
        Ok(batches)
    }

    /// State batches of `[input, key bytes, row bytes, count, matched]`.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut batches = Vec::new();
        let mut st = StateRows::default();
        for (s, side) in self.sides.iter().enumerate() {
            for (g, list) in side.entries.iter().enumerate() {
                for e in list {
                    st.inputs.append_value(s as u8);
                    st.keys.append_value(&side.groups.keys[g]);
                    st.rows.append_value(&e.row);
                    st.counts.append_value(e.count);
                    st.matched.append_value(e.matched);
                    st.n += 1;
                    if st.n == 65536 {
                        st.flush(&mut batches)?;
                    }
                }
            }
        }
        st.flush(&mut batches)?;
        crate::encode_batches(&batches)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_columns() != 5 {
                return exec_err!(
                    "join: the checkpoint's state has {} columns, expected 5",
                    batch.num_columns()
                );
            }
            let inputs = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
            let keys = batch.column(1).as_binary::<i32>();
            let rows = batch.column(2).as_binary::<i32>();
            let counts = batch
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
            let matched = batch
                .column(4)
                .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
            for i in 0..batch.num_rows() {
                let side = &mut self.sides[usize::from(inputs.value(i) == 1)];
                side.put(
                    keys.value(i),
                    rows.value(i),
                    counts.value(i),
                    matched.value(i),
                );
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes + s.groups.size()).sum()
    }
}

/// Join state rows being written into state batches.
#[derive(Default)]
struct StateRows {
    inputs: UInt8Builder,
    keys: BinaryBuilder,
    rows: BinaryBuilder,
    counts: UInt32Builder,
    matched: UInt32Builder,
    n: usize,
}

impl StateRows {
    fn flush(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.n == 0 {
            return Ok(());
        }
        let inputs: UInt8Array = self.inputs.finish();
        out.push(crate::state_batch(
            vec![
                Arc::new(inputs),
                Arc::new(self.keys.finish()),
                Arc::new(self.rows.finish()),
                Arc::new(self.counts.finish()),
                Arc::new(self.matched.finish()),
            ],
            self.n,
        )?);
        self.n = 0;
        Ok(())
    }
}
