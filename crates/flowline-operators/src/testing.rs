//! The operator test harness: batches written as small text tables, and a [`Harness`] that feeds
//! one operator batches, watermarks, checkpoints (snapshot, then restore into a fresh instance,
//! as a restart does) and end-of-input, and compares what it emitted with an expected table.
//!
//! ```text
//! k:str  v:i64  ts:ts   _row_kind:kind
//! a      1      1000    +I
//! NULL   2      2000    -U
//! ```
//!
//! The first line names the columns and their types: `i32`, `i64`, `f64`, `str`, `bool`, `ts`
//! (a TIMESTAMP(3), written as milliseconds) and `kind` (the change-kind column, written `+I`,
//! `-U`, `+U`, `-D`). `NULL` is a NULL. Output tables are written the same way, without the type
//! line: a header of column names, then the rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, Int8Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flowline_common::changelog::{RowKind, ROW_KIND};

use crate::{Operator, OperatorContext, OperatorFactory};

/// A batch from a text table (see the module docs).
pub fn batch(text: &str) -> RecordBatch {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let header = lines.next().expect("a header line");
    let columns: Vec<(&str, &str)> = header
        .split_whitespace()
        .map(|c| c.split_once(':').expect("columns are name:type"))
        .collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), columns.len(), "row {i} of {text}");
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (c, (name, ty)) in columns.iter().enumerate() {
        let cells = rows.iter().map(|r| Some(r[c]).filter(|v| *v != "NULL"));
        let (data_type, array): (DataType, ArrayRef) = match *ty {
            "i32" => (
                DataType::Int32,
                Arc::new(
                    cells
                        .map(|v| v.map(|v| v.parse::<i32>().unwrap()))
                        .collect::<Int32Array>(),
                ),
            ),
            "i64" => (
                DataType::Int64,
                Arc::new(
                    cells
                        .map(|v| v.map(|v| v.parse::<i64>().unwrap()))
                        .collect::<Int64Array>(),
                ),
            ),
            "f64" => (
                DataType::Float64,
                Arc::new(
                    cells
                        .map(|v| v.map(|v| v.parse::<f64>().unwrap()))
                        .collect::<Float64Array>(),
                ),
            ),
            "bool" => (
                DataType::Boolean,
                Arc::new(
                    cells
                        .map(|v| v.map(|v| v == "true"))
                        .collect::<BooleanArray>(),
                ),
            ),
            "str" => (DataType::Utf8, Arc::new(cells.collect::<StringArray>())),
            "ts" => (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                Arc::new(
                    cells
                        .map(|v| v.map(|v| v.parse::<i64>().unwrap()))
                        .collect::<TimestampMillisecondArray>(),
                ),
            ),
            "kind" => (
                DataType::Int8,
                Arc::new(
                    cells
                        .map(|v| v.map(|v| kind_of(v) as i8))
                        .collect::<Int8Array>(),
                ),
            ),
            other => panic!("unknown column type '{other}' (i32, i64, f64, bool, str, ts, kind)"),
        };
        fields.push(Field::new(*name, data_type, *ty != "kind"));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

/// The schema of a text table's header line (`k:str v:i64 ts:ts`).
pub fn schema(header: &str) -> SchemaRef {
    batch(header).schema()
}

fn kind_of(s: &str) -> RowKind {
    match s {
        "+I" => RowKind::Insert,
        "-U" => RowKind::UpdateBefore,
        "+U" => RowKind::UpdateAfter,
        "-D" => RowKind::Delete,
        other => panic!("unknown change kind '{other}'"),
    }
}

/// `batches` as a text table: a header of column names, then a line per row (values as Arrow
/// prints them, timestamps as milliseconds, change kinds as `+I` ...).
pub fn table(batches: &[RecordBatch]) -> String {
    let Some(first) = batches.first() else {
        return String::new();
    };
    let names: Vec<&str> = first
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut lines = vec![names.join(" ")];
    let options = FormatOptions::default().with_null("NULL");
    for b in batches {
        let columns: Vec<ArrayRef> = b
            .columns()
            .iter()
            .zip(b.schema_ref().fields())
            .map(|(c, f)| match c.data_type() {
                DataType::Timestamp(..) => {
                    datafusion::arrow::compute::cast(c, &DataType::Int64).unwrap()
                }
                DataType::Int8 if f.name() == ROW_KIND => {
                    let kinds = c
                        .as_any()
                        .downcast_ref::<Int8Array>()
                        .expect("the change kind is an Int8");
                    Arc::new(
                        kinds
                            .iter()
                            .map(|k| k.and_then(RowKind::from_i8).map(RowKind::short))
                            .collect::<StringArray>(),
                    ) as ArrayRef
                }
                _ => c.clone(),
            })
            .collect();
        let formatters: Vec<ArrayFormatter> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            lines.push(cells.join(" "));
        }
    }
    lines.join("\n")
}

/// A text table with its whitespace normalised (each line's cells separated by one space).
fn normalise(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A text table with its rows sorted (the header stays first): for output whose order is not
/// part of the contract.
pub fn sorted_rows(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() > 1 {
        lines[1..].sort_unstable();
    }
    lines.join("\n")
}

/// Feeds the same rows (on `input`), an optional restart and a watermark to an unbounded and a
/// spilling harness of one operator: what each emitted, rows sorted (the order of a window's
/// groups is not part of the contract).
pub fn step_both(
    unbounded: &mut Harness,
    spilling: &mut Harness,
    input: usize,
    text: &str,
    restart: bool,
    watermark: i64,
) -> (String, String) {
    for h in [&mut *unbounded, &mut *spilling] {
        h.rows(input, text);
        if restart {
            h.restart();
        }
        h.watermark(watermark);
    }
    (
        sorted_rows(&unbounded.take_table()),
        sorted_rows(&spilling.take_table()),
    )
}

/// Drives one operator as a subtask's task would.
pub struct Harness {
    factory: Arc<dyn OperatorFactory>,
    ctx: OperatorContext,
    operator: Box<dyn Operator>,
    /// The last watermark, replayed after a restore as the runtime does.
    watermark: Option<i64>,
    /// Emitted since the last [`Harness::expect`].
    emitted: Vec<RecordBatch>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.ctx.state.dir);
        // The process's directory, once no other harness uses it.
        if let Some(parent) = self.ctx.state.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

impl Harness {
    pub fn new(factory: impl OperatorFactory + 'static) -> Self {
        Self::with_budget(factory, usize::MAX)
    }

    /// An operator whose state tables may hold `budget` bytes in memory (a small budget spills
    /// everything to disk).
    pub fn with_budget(factory: impl OperatorFactory + 'static, budget: usize) -> Self {
        let factory: Arc<dyn OperatorFactory> = Arc::new(factory);
        let mut ctx = OperatorContext::default();
        ctx.state.budget = budget;
        // Its own spill directory, removed with the harness.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.state.dir = ctx.state.dir.join(format!("harness-{n}"));
        let operator = factory.create(&ctx).unwrap();
        Self {
            factory,
            ctx,
            operator,
            watermark: None,
            emitted: Vec::new(),
        }
    }

    fn keep(&mut self, out: Vec<RecordBatch>) {
        self.emitted
            .extend(out.into_iter().filter(|b| b.num_rows() > 0));
    }

    /// What a watermark or the end completed: `out`, then what the operator has pending.
    fn keep_all(&mut self, out: Vec<RecordBatch>) {
        self.keep(out);
        while let Some(more) = self.operator.pending().unwrap() {
            self.keep(more);
        }
    }

    /// Rows on input `input` (0, or 1 for a join's right input), as a text table.
    pub fn rows(&mut self, input: usize, text: &str) -> &mut Self {
        let out = self.operator.on_batch(input, batch(text)).unwrap();
        self.keep(out);
        self
    }

    pub fn watermark(&mut self, ts: i64) -> &mut Self {
        self.watermark = Some(ts);
        let out = self.operator.on_watermark(ts).unwrap();
        self.keep_all(out);
        self
    }

    /// A checkpoint and a restart from it: the state is snapshotted, a fresh operator restores
    /// it and sees the last watermark again.
    pub fn restart(&mut self) -> &mut Self {
        let state = self.operator.snapshot().unwrap();
        let tables = self.operator.snapshot_tables();
        self.operator = self.factory.create(&self.ctx).unwrap();
        self.operator.restore_tables(tables).unwrap();
        self.operator.restore(&state).unwrap();
        if let Some(w) = self.watermark {
            let out = self.operator.on_watermark(w).unwrap();
            self.keep_all(out);
        }
        self
    }

    pub fn end(&mut self) -> &mut Self {
        let out = self.operator.on_end().unwrap();
        self.keep_all(out);
        self
    }

    /// What it emitted since the last `expect`, as a text table (taken).
    pub fn take_table(&mut self) -> String {
        table(&std::mem::take(&mut self.emitted))
    }

    /// Its state tables' statistics.
    pub fn table_stats(&self) -> flowline_state::table::TableStats {
        self.operator.table_stats()
    }

    pub fn late_rows(&self) -> u64 {
        self.operator.late_rows()
    }

    /// Asserts what was emitted since the last call, in order.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) -> &mut Self {
        let emitted = std::mem::take(&mut self.emitted);
        assert_eq!(
            normalise(&table(&emitted)),
            normalise(expected),
            "emitted rows"
        );
        self
    }

    /// Asserts what was emitted since the last call, in any order.
    #[track_caller]
    pub fn expect_unordered(&mut self, expected: &str) -> &mut Self {
        let emitted = std::mem::take(&mut self.emitted);
        assert_eq!(
            sorted_rows(&normalise(&table(&emitted))),
            sorted_rows(&normalise(expected)),
            "emitted rows (in any order)"
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_tables_round_trip() {
        let b = batch(
            "k:str v:i64 ts:ts _row_kind:kind
             a     1     1000 +I
             NULL  NULL  2000 -U",
        );
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            table(&[b]),
            "k v ts _row_kind\na 1 1000 +I\nNULL NULL 2000 -U"
        );
    }

    #[test]
    #[should_panic(expected = "emitted rows")]
    fn a_wrong_expectation_fails() {
        // An operator that emits nothing, expected to emit a row.
        let spec = crate::rank::RankSpec {
            partition: Vec::new(),
            order: Vec::new(),
            limit: 1,
            later_first: false,
            input: schema("v:i64"),
            updating_input: false,
            schema: Arc::new(Schema::new(vec![
                Field::new("v", DataType::Int64, true),
                Field::new("rn", DataType::UInt64, false),
                flowline_common::changelog::row_kind_field(),
            ])),
            state_ttl: None,
        };
        Harness::new(spec).expect("v rn _row_kind\n1 1 +I");
    }
}
