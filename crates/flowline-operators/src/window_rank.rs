//! Window TopN and window deduplication: `ROW_NUMBER() OVER (PARTITION BY window_start,
//! window_end, ... ORDER BY ...) ... WHERE rn <= N` over a window TVF (or a window aggregation),
//! as Flink's `WindowRank` and `WindowDeduplicate`. Each window's top N rows per partition are
//! emitted once, when the watermark passes the window's end; the output is append-only.
//!
//! ```text
//! rows ─▶ by window end ─▶ per partition: the N first rows by (sort key, arrival)
//!      ──watermark ≥ end - 1──▶ each partition's rows with their row number; the window dropped
//! ```
//!
//! Equal sort keys rank in arrival order; deduplication keeping the last row (N = 1, ordered by a
//! time attribute descending) ranks the later arrival first, as in Flink. A row whose window has
//! fired is late: dropped and counted.
//!
//! State: per open window and partition at most N rows, in Arrow's row format.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, Int64Array, RecordBatch, UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, DataFusionError, Result};

use crate::rank::RankSpec;
use crate::{LateRows, Operator, OperatorContext, OperatorFactory};

/// The plan of a window TopN: a TopN over an append-only input whose PARTITION BY holds the
/// window's bounds.
#[derive(Clone)]
pub struct WindowRankSpec {
    /// PARTITION BY (window bounds included), ORDER BY, N, tie order, the input and output
    /// columns (the output has no change kind).
    pub rank: RankSpec,
    /// The input's `window_end` column.
    pub end: usize,
}

impl fmt::Debug for WindowRankSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.rank.limit == 1 {
            "WindowDeduplicate"
        } else {
            "WindowTopN"
        };
        write!(
            f,
            "{what}(partition=[{}], order=[{}], rn<={}) -> append-only",
            self.rank.partition_list(),
            self.rank.order_list(),
            self.rank.limit
        )
    }
}

impl OperatorFactory for WindowRankSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let spec = &self.rank;
        let converter =
            |fields: Result<Vec<SortField>>| Ok::<_, DataFusionError>(RowConverter::new(fields?)?);
        Ok(Box::new(WindowRank {
            partitions: converter(
                spec.partition
                    .iter()
                    .map(|e| e.data_type(&spec.input).map(SortField::new))
                    .collect(),
            )?,
            order: converter(
                spec.order
                    .iter()
                    .map(|(e, o)| {
                        e.data_type(&spec.input)
                            .map(|t| SortField::new_with_options(t, *o))
                    })
                    .collect(),
            )?,
            rows: converter(Ok(spec
                .input
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()))?,
            spec: Arc::new(self.clone()),
            windows: BTreeMap::new(),
            watermark: NO_WATERMARK,
            seq: 0,
            bytes: 0,
            late: LateRows::new(ctx.keep_late),
        }))
    }
}

/// A row's place in its partition: (sort key, arrival tie-break), and the row.
type Ranked = ((Box<[u8]>, u64), Box<[u8]>);

/// One window's partitions, in order of first arrival.
#[derive(Default)]
struct Window {
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    /// Per partition: at most N rows, sorted.
    tops: Vec<Vec<Ranked>>,
}

pub struct WindowRank {
    spec: Arc<WindowRankSpec>,
    partitions: RowConverter,
    order: RowConverter,
    rows: RowConverter,
    /// Per window end.
    windows: BTreeMap<i64, Window>,
    watermark: i64,
    /// Arrival counter: the tie-break between equal sort keys.
    seq: u64,
    bytes: usize,
    late: LateRows,
}

impl WindowRank {
    /// Offers a row to its window's partition; it is kept if it ranks within the first N.
    fn offer(&mut self, end: i64, key: &[u8], sort: &[u8], tie: u64, row: &[u8]) {
        let limit = self.spec.rank.limit;
        let window = self.windows.entry(end).or_default();
        let p = match window.index.get(key) {
            Some(p) => *p,
            None => {
                window.index.insert(key.into(), window.tops.len());
                window.keys.push(key.into());
                window.tops.push(Vec::with_capacity(limit.min(16) + 1));
                self.bytes += 2 * key.len() + 64;
                window.tops.len() - 1
            }
        };
        let top = &mut window.tops[p];
        if top.len() >= limit {
            let ((last, last_tie), _) = top.last().expect("not empty");
            if (sort, tie) > (&**last, *last_tie) {
                return;
            }
        }
        let at = top.partition_point(|((s, t), _)| (&**s, *t) < (sort, tie));
        top.insert(at, ((sort.into(), tie), row.into()));
        self.bytes += sort.len() + row.len() + 32;
        if top.len() > limit {
            let ((s, _), r) = top.pop().expect("longer than the limit");
            self.bytes -= s.len() + r.len() + 32;
        }
    }

    fn tie(&mut self) -> u64 {
        self.seq += 1;
        if self.spec.rank.later_first {
            u64::MAX - self.seq
        } else {
            self.seq
        }
    }

    /// Emits and drops every window ending at or before `until + 1`.
    fn fire(&mut self, until: i64) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            if entry.key().saturating_sub(1) > until {
                break;
            }
            let window = entry.remove();
            let mut rns = Vec::new();
            let mut rows: Vec<&[u8]> = Vec::new();
            for top in &window.tops {
                for (i, (_, row)) in top.iter().enumerate() {
                    rns.push(i as u64 + 1);
                    rows.push(row);
                }
            }
            self.bytes -= window
                .tops
                .iter()
                .flatten()
                .map(|((s, _), r)| s.len() + r.len() + 32)
                .sum::<usize>()
                + window.keys.iter().map(|k| 2 * k.len() + 64).sum::<usize>();
            let n = rows.len();
            if n == 0 {
                continue;
            }
            let parser = self.rows.parser();
            let mut columns = self
                .rows
                .convert_rows(rows.iter().map(|r| parser.parse(r)))?;
            columns.push(Arc::new(UInt64Array::from(rns)));
            crate::push_sliced(
                &mut out,
                crate::batch_of(&self.spec.rank.schema, columns, n)?,
            );
        }
        Ok(out)
    }
}

impl Operator for WindowRank {
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let spec = self.spec.clone();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let eval =
            |exprs: &mut dyn Iterator<Item = &Arc<dyn datafusion::physical_expr::PhysicalExpr>>| {
                exprs
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<ArrayRef>>>()
            };
        let keys = self
            .partitions
            .convert_columns(&eval(&mut spec.rank.partition.iter())?)?;
        let sorts = self
            .order
            .convert_columns(&eval(&mut spec.rank.order.iter().map(|(e, _)| e))?)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let ends = crate::millis(batch.column(spec.end), "window_end")?;
        let mut late = Vec::new();
        for i in 0..n {
            match ends.is_valid(i).then(|| ends.value(i)) {
                Some(end) if end - 1 > self.watermark => {
                    let tie = self.tie();
                    self.offer(
                        end,
                        keys.row(i).as_ref(),
                        sorts.row(i).as_ref(),
                        tie,
                        rows.row(i).as_ref(),
                    );
                }
                _ => late.push(i as u32),
            }
        }
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
        self.fire(END_OF_TIME)
    }

    /// State batches of `[window end, partition key, sort key, tie, row]`, then the arrival
    /// counter.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let mut batches = Vec::new();
        let mut rows = StateRows::default();
        for (end, window) in &self.windows {
            for (key, top) in window.keys.iter().zip(&window.tops) {
                for ((sort, tie), row) in top {
                    rows.push(*end, key, sort, *tie, row);
                    if rows.ends.len() == 65536 {
                        batches.push(rows.finish()?);
                    }
                }
            }
        }
        if !rows.ends.is_empty() {
            batches.push(rows.finish()?);
        }
        let mut state = crate::encode_batches(&batches)?;
        state.extend_from_slice(&self.seq.to_le_bytes());
        Ok(state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let Some(at) = state.len().checked_sub(8) else {
            return exec_err!("window TopN: the checkpoint's state is truncated");
        };
        self.seq = u64::from_le_bytes(state[at..].try_into().expect("8 bytes"));
        for batch in crate::decode_batches(&state[..at])? {
            if batch.num_columns() != 5 {
                return exec_err!(
                    "window TopN: the checkpoint's state has {} columns, expected 5",
                    batch.num_columns()
                );
            }
            let ends = batch.column(0).as_primitive::<Int64Type>();
            let keys = batch.column(1).as_binary::<i32>();
            let sorts = batch.column(2).as_binary::<i32>();
            let ties = batch.column(3).as_primitive::<UInt64Type>();
            let rows = batch.column(4).as_binary::<i32>();
            for i in 0..batch.num_rows() {
                self.offer(
                    ends.value(i),
                    keys.value(i),
                    sorts.value(i),
                    ties.value(i),
                    rows.value(i),
                );
            }
        }
        Ok(())
    }

    fn late_rows(&self) -> u64 {
        self.late.total()
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        self.late.take()
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn open_windows(&self) -> usize {
        self.windows.len()
    }
}

/// State rows being gathered into a batch of `[window end, partition key, sort key, tie, row]`.
#[derive(Default)]
struct StateRows {
    ends: Vec<i64>,
    keys: BinaryBuilder,
    sorts: BinaryBuilder,
    ties: UInt64Builder,
    rows: BinaryBuilder,
}

impl StateRows {
    fn push(&mut self, end: i64, key: &[u8], sort: &[u8], tie: u64, row: &[u8]) {
        self.ends.push(end);
        self.keys.append_value(key);
        self.sorts.append_value(sort);
        self.ties.append_value(tie);
        self.rows.append_value(row);
    }

    /// The rows gathered so far, as one state batch; starts over empty.
    fn finish(&mut self) -> Result<RecordBatch> {
        let n = self.ends.len();
        crate::state_batch(
            vec![
                Arc::new(Int64Array::from(std::mem::take(&mut self.ends))),
                Arc::new(self.keys.finish()),
                Arc::new(self.sorts.finish()),
                Arc::new(self.ties.finish()),
                Arc::new(self.rows.finish()),
            ],
            n,
        )
    }
}

#[cfg(test)]
mod harness_tests {
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;
    use crate::testing::{schema, Harness};

    /// `ROW_NUMBER() OVER (PARTITION BY k, ws, we ORDER BY v DESC) AS rn ... WHERE rn <= 2` over
    /// a window TVF's rows.
    fn top2() -> WindowRankSpec {
        let input = schema("k:str v:i64 ws:ts we:ts");
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        let column = |name: &str, i: usize| -> Arc<dyn datafusion::physical_expr::PhysicalExpr> {
            Arc::new(Column::new(name, i))
        };
        WindowRankSpec {
            rank: RankSpec {
                partition: vec![column("k", 0), column("ws", 2), column("we", 3)],
                order: vec![(
                    column("v", 1),
                    SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                )],
                limit: 2,
                later_first: false,
                input,
                updating_input: false,
                schema: Arc::new(Schema::new(fields)),
                state_ttl: None,
            },
            end: 3,
        }
    }

    #[test]
    fn each_window_emits_its_top_rows_once_when_it_closes() {
        Harness::new(top2())
            .rows(
                0,
                "k:str v:i64 ws:ts we:ts
                 a     1     0     10
                 a     5     0     10
                 a     5     0     10
                 a     3     0     10
                 NULL  2     0     10
                 a     9     10    20",
            )
            .watermark(8)
            .expect("")
            // Ties rank by arrival; a NULL key is a partition of its own; [10, 20) stays open.
            .watermark(9)
            .expect_unordered(
                "k v ws we rn
                 a 5 0 10 1
                 a 5 0 10 2
                 NULL 2 0 10 1",
            )
            .end()
            .expect(
                "k v ws we rn
                 a 9 10 20 1",
            );
    }

    #[test]
    fn rows_of_a_closed_window_are_late_and_a_restart_keeps_open_windows() {
        let mut h = Harness::new(top2());
        h.rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     4     10    20",
        )
        .watermark(9)
        .expect("")
        .rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     6     10    20",
        )
        .restart()
        .rows(
            0,
            "k:str v:i64 ws:ts we:ts
             b     7     0     10
             b     5     10    20",
        )
        .watermark(19)
        .expect(
            "k v ws we rn
             b 6 10 20 1
             b 5 10 20 2",
        );
        assert_eq!(h.late_rows(), 1, "the row of [0, 10) after watermark 9");
    }
}
