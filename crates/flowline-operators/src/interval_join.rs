//! Interval joins: `l.t BETWEEN r.t - INTERVAL a AND r.t + INTERVAL b` (or the same bounds with
//! `<`, `<=`, `>`, `>=`) over the event-time attributes of two append-only inputs, as Flink's
//! interval join.
//!
//! ```text
//! row of one input ─▶ the other input's rows of its key whose time is within the bounds
//!     ─▶ the ON condition over the candidate pairs ─▶ joined rows now
//!     ─▶ kept until the watermark passes the last time a row of the other input could match
//! watermark W ─▶ drop the rows no later row can match; an outer side emits them NULL-padded
//!     if they never matched ─▶ forward W minus the largest bound (output rows stay on time)
//! ```
//!
//! With `l.t - r.t` in `[lower, upper]` (ms, a strict bound moved by 1 ms), a left row at `t`
//! matches right rows in `[t - upper, t - lower]` and is dropped once the watermark reaches
//! `t - lower`; a right row at `r` is dropped once it reaches `r + upper`. The output is
//! append-only: an outer join emits an unmatched row NULL-padded when it is dropped, never
//! before, so nothing is retracted. A row that arrives after the watermark passed its own drop
//! time is joined with the rows still kept and not stored (Flink does the same). A NULL key or a
//! NULL time never matches.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Int64Builder, RecordBatch,
    UInt32Array, UInt8Builder,
};
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;

use crate::join::JoinKind;
use crate::keygroups::InputFilters;
use crate::pairs::{eval_keys, filter_mask, pairs_schema, stored_columns};
use crate::{Operator, OperatorContext, OperatorFactory};

#[derive(Clone)]
pub struct IntervalJoinSpec {
    /// Inner, Left, Right or Full.
    pub kind: JoinKind,
    /// Per input: the equi-join key (may be empty: every row then meets in one subtask).
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per input: its columns.
    pub inputs: [SchemaRef; 2],
    /// Per input: its time attribute column.
    pub times: [usize; 2],
    /// `l.t - r.t` must lie in `[lower, upper]` (ms).
    pub lower: i64,
    pub upper: i64,
    /// The ON condition but the equalities (the bounds included), over left then right columns.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The left columns then the right ones.
    pub schema: SchemaRef,
}

impl IntervalJoinSpec {
    /// How far behind its input watermark the output runs: a row emitted at watermark `W`
    /// (a match, or an outer row when it is dropped) has a time after `W - delay`.
    pub fn delay(&self) -> i64 {
        (-self.lower).max(self.upper).max(0) + 1
    }

    fn outer(&self, side: usize) -> bool {
        matches!(
            (self.kind, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        )
    }
}

impl fmt::Debug for IntervalJoinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<String> = self.keys[0]
            .iter()
            .zip(&self.keys[1])
            .map(|(l, r)| format!("{l} = {r}"))
            .collect();
        write!(
            f,
            "IntervalJoin({:?}, on=[{}], {} - {} in [{} ms, {} ms]",
            self.kind,
            on.join(", "),
            self.inputs[0].field(self.times[0]).name(),
            self.inputs[1].field(self.times[1]).name(),
            self.lower,
            self.upper
        )?;
        if let Some(filter) = &self.filter {
            write!(f, ", filter={filter}")?;
        }
        write!(f, ")")
    }
}

impl OperatorFactory for IntervalJoinSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let side = |i: usize| -> Result<Side> {
            let keys = self.keys[i]
                .iter()
                .map(|k| k.data_type(&self.inputs[i]).map(SortField::new))
                .collect::<Result<Vec<_>>>()?;
            Ok(Side {
                keys: (!keys.is_empty())
                    .then(|| RowConverter::new(keys))
                    .transpose()?,
                rows: RowConverter::new(
                    self.inputs[i]
                        .fields()
                        .iter()
                        .map(|f| SortField::new(f.data_type().clone()))
                        .collect(),
                )?,
                stored: HashMap::new(),
                expiry: BTreeMap::new(),
                bytes: 0,
            })
        };
        Ok(Box::new(IntervalJoin {
            sides: [side(0)?, side(1)?],
            pairs: pairs_schema(&self.inputs[0], &self.inputs[1]),
            spec: Arc::new(self.clone()),
            watermark: NO_WATERMARK,
            env: ctx.state.clone(),
        }))
    }
}

/// A kept row.
struct Stored {
    time: i64,
    row: Box<[u8]>,
    matched: bool,
}

struct Side {
    /// None when the join has no equality (one key for all rows).
    keys: Option<RowConverter>,
    rows: RowConverter,
    stored: HashMap<Box<[u8]>, Vec<Stored>>,
    /// Keys by the watermark at which some of their rows are dropped.
    expiry: BTreeMap<i64, Vec<Box<[u8]>>>,
    bytes: usize,
}

struct IntervalJoin {
    spec: Arc<IntervalJoinSpec>,
    sides: [Side; 2],
    pairs: SchemaRef,
    watermark: i64,
    /// Its key groups (a rescaled restore keeps only their rows).
    env: crate::StateEnv,
}

impl IntervalJoin {
    /// When a row of input `side` at `time` can no longer match: the watermark at which the
    /// other input's rows that could match it are all late.
    fn drop_time(&self, side: usize, time: i64) -> i64 {
        if side == 0 {
            time.saturating_sub(self.spec.lower)
        } else {
            time.saturating_add(self.spec.upper)
        }
    }

    /// The other input's times a row of `side` at `time` matches.
    fn range(&self, side: usize, time: i64) -> (i64, i64) {
        if side == 0 {
            (
                time.saturating_sub(self.spec.upper),
                time.saturating_sub(self.spec.lower),
            )
        } else {
            (
                time.saturating_add(self.spec.lower),
                time.saturating_add(self.spec.upper),
            )
        }
    }

    /// Output columns: input `side`'s rows from `data` at `input` and the other input's stored
    /// rows `other` (None: NULL).
    fn columns(
        &self,
        side: usize,
        data: &[ArrayRef],
        input: &UInt32Array,
        other: &[Option<&[u8]>],
    ) -> Result<Vec<ArrayRef>> {
        let this: Vec<ArrayRef> = data
            .iter()
            .map(|c| take(c, input, None))
            .collect::<std::result::Result<_, _>>()?;
        let o = &self.sides[1 - side];
        let that = stored_columns(&o.rows, &self.spec.inputs[1 - side], other)?;
        Ok(if side == 0 {
            [this, that].concat()
        } else {
            [that, this].concat()
        })
    }

    /// Drops the rows the watermark `w` ends; unmatched rows of an outer side come back to be
    /// emitted NULL-padded.
    fn expire(&mut self, w: i64) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for s in 0..2 {
            let outer = self.spec.outer(s);
            let lower = self.spec.lower;
            let upper = self.spec.upper;
            let side = &mut self.sides[s];
            let later = side.expiry.split_off(&w.saturating_add(1));
            let due = std::mem::replace(&mut side.expiry, later);
            let mut padded: Vec<Box<[u8]>> = Vec::new();
            for key in due.into_values().flatten() {
                let Some(list) = side.stored.get_mut(&key) else {
                    continue;
                };
                let mut freed = 0;
                list.retain_mut(|r| {
                    let dropped = if s == 0 {
                        r.time.saturating_sub(lower)
                    } else {
                        r.time.saturating_add(upper)
                    };
                    if dropped > w {
                        return true;
                    }
                    freed += r.row.len() + 40;
                    if outer && !r.matched {
                        padded.push(std::mem::take(&mut r.row));
                    }
                    false
                });
                side.bytes = side.bytes.saturating_sub(freed);
                if list.is_empty() {
                    side.stored.remove(&key);
                }
            }
            if padded.is_empty() {
                continue;
            }
            let parser = side.rows.parser();
            let this = side
                .rows
                .convert_rows(padded.iter().map(|r| parser.parse(r)))?;
            let n = padded.len();
            let idx = UInt32Array::from_iter_values(0..n as u32);
            let cols = self.columns(s, &this, &idx, &vec![None; n])?;
            crate::push_sliced(&mut out, crate::batch_of(&self.spec.schema, cols, n)?);
        }
        Ok(out)
    }
}

impl IntervalJoin {
    /// Restores a snapshot's rows; with `filters` (one per input), only the rows whose key's
    /// key group is this subtask's.
    fn restore_owned(
        &mut self,
        state: &[u8],
        mut filters: Option<&mut InputFilters>,
    ) -> Result<()> {
        for batch in crate::decode_batches(state)? {
            if batch.num_columns() != 5 {
                return exec_err!(
                    "interval join: the checkpoint's state has {} columns, expected 5",
                    batch.num_columns()
                );
            }
            let inputs = batch
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
            let keys = batch.column(1).as_binary::<i32>();
            let times = batch
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let rows = batch.column(3).as_binary::<i32>();
            let matched = batch.column(4).as_boolean();
            let owned = match filters.as_deref_mut() {
                Some(f) => f.owns(inputs, keys)?,
                None => vec![true; batch.num_rows()],
            };
            for i in (0..batch.num_rows()).filter(|i| owned[*i]) {
                let s = usize::from(inputs.value(i) == 1);
                let drop_at = self.drop_time(s, times.value(i));
                let side = &mut self.sides[s];
                let key: Box<[u8]> = keys.value(i).into();
                side.bytes += rows.value(i).len() + key.len() + 40;
                side.stored.entry(key.clone()).or_default().push(Stored {
                    time: times.value(i),
                    row: rows.value(i).into(),
                    matched: matched.value(i),
                });
                side.expiry.entry(drop_at).or_default().push(key);
            }
        }
        Ok(())
    }
}

impl Operator for IntervalJoin {
    fn on_batch(&mut self, side: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        let n = batch.num_rows();
        let width = spec.inputs[side].fields().len();
        let data = crate::batch_of(&spec.inputs[side], batch.columns()[..width].to_vec(), n)?;
        let times = crate::millis(data.column(spec.times[side]), "the join's time attribute")?;
        let (keys, nulls) = match &self.sides[side].keys {
            Some(conv) => {
                let (rows, nulls) = eval_keys(&spec.keys[side], conv, &data)?;
                (Some(rows), nulls)
            }
            None => (None, None),
        };
        let key_of = |i: usize| -> &[u8] { keys.as_ref().map_or(&[], |k| k.row(i).data()) };
        let valid = |i: usize| times.is_valid(i) && nulls.as_ref().is_none_or(|nb| nb.is_valid(i));

        // Candidate pairs (row, other input's key and position) within the time bounds.
        let (mut input, mut other) = (Vec::new(), Vec::new());
        {
            let o = &self.sides[1 - side];
            for i in 0..n {
                if !valid(i) {
                    continue;
                }
                let Some(list) = o.stored.get(key_of(i)) else {
                    continue;
                };
                let (from, to) = self.range(side, times.value(i));
                for (p, r) in list.iter().enumerate() {
                    if r.time >= from && r.time <= to {
                        input.push(i as u32);
                        other.push(p as u32);
                    }
                }
            }
        }
        // The candidate pairs' columns, built once: the ON condition sees them, and the pairs
        // that pass it are the output.
        let mut matched = vec![false; n];
        let mut out = Vec::new();
        let mut out_other = Vec::new();
        if !input.is_empty() {
            let o = &self.sides[1 - side];
            let rows: Vec<Option<&[u8]>> = input
                .iter()
                .zip(&other)
                .map(|(i, p)| Some(&*o.stored[key_of(*i as usize)][*p as usize].row))
                .collect();
            let mut cols = self.columns(
                side,
                data.columns(),
                &UInt32Array::from(input.clone()),
                &rows,
            )?;
            let pass = filter_mask(spec.filter.as_ref(), &self.pairs, cols.clone(), input.len())?;
            for c in 0..input.len() {
                if pass.as_ref().is_none_or(|p| p.value(c)) {
                    matched[input[c] as usize] = true;
                    out_other.push((input[c], other[c]));
                }
            }
            if let Some(pass) = &pass {
                cols = cols
                    .iter()
                    .map(|c| filter(c, pass))
                    .collect::<std::result::Result<_, _>>()?;
            }
            if !out_other.is_empty() {
                crate::push_sliced(
                    &mut out,
                    crate::batch_of(&spec.schema, cols, out_other.len())?,
                );
            }
        }
        // Mark the other input's rows that matched (an outer side emits only unmatched ones).
        if spec.outer(1 - side) {
            let o = &mut self.sides[1 - side];
            for (i, p) in &out_other {
                if let Some(list) = o.stored.get_mut(key_of(*i as usize)) {
                    list[*p as usize].matched = true;
                }
            }
        }
        // Keep each row until no row of the other input can match it.
        let rows = self.sides[side].rows.convert_columns(data.columns())?;
        let mut padded = Vec::new();
        for (i, &was_matched) in matched.iter().enumerate().take(n) {
            let drop_at = if times.is_valid(i) {
                self.drop_time(side, times.value(i))
            } else {
                i64::MIN
            };
            if !valid(i) || drop_at <= self.watermark {
                if spec.outer(side) && !was_matched {
                    padded.push(i as u32);
                }
                continue;
            }
            let key: Box<[u8]> = key_of(i).into();
            let this = &mut self.sides[side];
            let row: Box<[u8]> = rows.row(i).as_ref().into();
            this.bytes += row.len() + key.len() + 40;
            this.stored.entry(key.clone()).or_default().push(Stored {
                time: times.value(i),
                row,
                matched: was_matched,
            });
            this.expiry.entry(drop_at).or_default().push(key);
        }
        if !padded.is_empty() {
            let cols = self.columns(
                side,
                data.columns(),
                &UInt32Array::from(padded.clone()),
                &vec![None; padded.len()],
            )?;
            crate::push_sliced(&mut out, crate::batch_of(&spec.schema, cols, padded.len())?);
        }
        Ok(out)
    }

    fn on_watermark(&mut self, ts: i64) -> Result<Vec<RecordBatch>> {
        self.watermark = self.watermark.max(ts);
        self.expire(ts)
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        self.expire(END_OF_TIME)
    }

    fn watermark_delay(&self) -> i64 {
        self.spec.delay()
    }

    /// State batches of `[input, key, time, row, matched]`.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut inputs = UInt8Builder::new();
        let mut keys = BinaryBuilder::new();
        let mut times = Int64Builder::new();
        let mut rows = BinaryBuilder::new();
        let mut matched = BooleanBuilder::new();
        let mut n = 0;
        for (s, side) in self.sides.iter().enumerate() {
            for (key, list) in &side.stored {
                for r in list {
                    inputs.append_value(s as u8);
                    keys.append_value(key);
                    times.append_value(r.time);
                    rows.append_value(&r.row);
                    matched.append_value(r.matched);
                    n += 1;
                }
            }
        }
        let batch = crate::state_batch(
            vec![
                Arc::new(inputs.finish()),
                Arc::new(keys.finish()),
                Arc::new(times.finish()),
                Arc::new(rows.finish()),
                Arc::new(matched.finish()),
            ],
            n,
        )?;
        crate::encode_batches(&[batch])
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.restore_owned(state, None)
    }

    /// Every old subtask's rows of this subtask's key groups (the rows are filed by join key,
    /// which the exchange routes by).
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        let mut filters = InputFilters::new(&self.spec.keys, &self.spec.inputs, &self.env)?;
        for s in states {
            self.restore_owned(s, Some(&mut filters))?;
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, Harness};

    /// `L [kind] JOIN R ON L.k = R.k AND L.t BETWEEN R.t - 10 AND R.t + 5` (ms).
    fn spec(kind: JoinKind) -> IntervalJoinSpec {
        let (left, right) = (schema("k:str a:i64 t:ts"), schema("rk:str b:i64 rt:ts"));
        IntervalJoinSpec {
            kind,
            keys: [
                vec![Arc::new(Column::new("k", 0))],
                vec![Arc::new(Column::new("rk", 0))],
            ],
            inputs: [left.clone(), right.clone()],
            times: [2, 2],
            lower: -10,
            upper: 5,
            filter: None,
            schema: Arc::new(Schema::new(
                left.fields()
                    .iter()
                    .chain(right.fields())
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
        }
    }

    #[test]
    fn rows_meet_within_the_bounds_in_either_arrival_order() {
        Harness::new(spec(JoinKind::Inner))
            .rows(
                0,
                "k:str a:i64 t:ts
                 x     1     100
                 x     2     120",
            )
            .expect("")
            // 100 - 105 = -5 and 100 - 95 = 5 are within [-10, 5]; 120 is not near either.
            .rows(
                1,
                "rk:str b:i64 rt:ts
                 x      7     105
                 x      8     95
                 NULL   9     100",
            )
            .expect_unordered(
                "k a t rk b rt
                 x 1 100 x 7 105
                 x 1 100 x 8 95",
            );
    }

    #[test]
    fn an_outer_row_is_padded_once_no_match_can_come_and_survives_a_restart() {
        Harness::new(spec(JoinKind::Left))
            .rows(
                0,
                "k:str a:i64 t:ts
                 x     1     100
                 y     2     100",
            )
            .restart()
            .rows(
                1,
                "rk:str b:i64 rt:ts
                 x      7     105",
            )
            .expect(
                "k a t rk b rt
                 x 1 100 x 7 105",
            )
            // Rows of R up to t + 10 could still match a left row at t: not yet.
            .watermark(109)
            .expect("")
            .watermark(111)
            .expect(
                "k a t rk b rt
                 y 2 100 NULL NULL NULL",
            );
    }
}
