//! Connectors: where rows come from and where they go.
//!
//! One folder per connector, listed explicitly in [`registry::CONNECTORS`]. A connector validates
//! its `WITH` options (an unknown key is an error that lists the valid ones) and builds
//! [`Source`]s and [`Sink`]s for the runtime.
//!
//! ```text
//!  runtime ──creates──▶ Source (one per subtask) ──next_batch()──▶ RecordBatch
//!  runtime ──creates──▶ Sink   (one per subtask) ◀──write(batch)── RecordBatch
//! ```
//!
//! Sources and sinks are synchronous: the runtime calls them on blocking threads, so file and
//! socket I/O need no async plumbing, and a slow sink blocks its channel (backpressure).

pub mod blackhole;
pub mod collect;
pub mod datagen;
mod error;
pub mod filesystem;
pub mod http;
pub mod jdbc;
pub mod job;
pub mod kafka;
pub mod nexmark;
pub mod print;
pub mod registry;
mod rng;

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use flowline_common::{Counter, MetricsRegistry};

pub use error::{ConnectorError, Result};
pub use flowline_formats::conform_batch;
pub use registry::{connector, ConnectorFactory, CONNECTORS};

/// Reads a bounded table to the end with one subtask (batch queries). An unbounded table is
/// refused with the option that would bound it. A changelog table (`debezium-json`, ...) is
/// read as the table its changes leave behind.
pub fn read_bounded(
    table: &flowline_sql::TableDef,
    factory: &ConnectorFactory,
    options: &flowline_common::Options,
) -> Result<Vec<RecordBatch>> {
    if let Some(hint) = (factory.unbounded_hint)(options) {
        return Err(ConnectorError::config(
            &table.name,
            format!("the table is unbounded and cannot be read by a batch query; {hint}"),
        ));
    }
    let create = factory.source.ok_or_else(|| {
        ConnectorError::config(
            &table.name,
            format!("connector '{}' cannot be read", factory.name),
        )
    })?;
    let ctx = TaskContext {
        table: table.name.clone(),
        subtask: 0,
        parallelism: 1,
        metrics: MetricsRegistry::new(),
        job: None,
        state_dir: None,
        shared: job::JobShared::new(),
    };
    let mut source = create(table, options, &ctx, None)?;
    let mut out = Vec::new();
    loop {
        match source.poll()? {
            Poll::Batch(b) => out.push(b),
            Poll::Pending(d) | Poll::Idle(d) => std::thread::sleep(d),
            Poll::End => break,
        }
    }
    if (factory.changelog_source)(table, options) {
        return Ok(apply_changelog(&out)?.into_iter().collect());
    }
    Ok(out)
}

/// The table a changelog leaves behind, in the order its rows were added: each `-U`/`-D` row
/// withdraws one equal row added before it (one that was never added, as in a changelog read
/// from its middle, withdraws nothing).
fn apply_changelog(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    use flowline_common::changelog::{row_kinds, strip_row_kind, RowKind};
    if batches.is_empty() {
        return Ok(None);
    }
    let rows: Vec<RecordBatch> = batches.iter().map(strip_row_kind).collect();
    let schema = rows[0].schema();
    let converter = arrow::row::RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| arrow::row::SortField::new(f.data_type().clone()))
            .collect(),
    )?;
    // Per distinct row, where its live copies are (batch, row).
    let mut live: std::collections::HashMap<Vec<u8>, Vec<(usize, usize)>> = Default::default();
    for (b, (batch, data)) in batches.iter().zip(&rows).enumerate() {
        let encoded = converter.convert_columns(data.columns())?;
        let kinds = row_kinds(batch);
        for r in 0..batch.num_rows() {
            let adds =
                kinds.is_none_or(|k| RowKind::from_i8(k.value(r)).is_none_or(RowKind::is_addition));
            let key = encoded.row(r).data();
            if adds {
                live.entry(key.to_vec()).or_default().push((b, r));
            } else if let Some(copies) = live.get_mut(key) {
                copies.pop();
            }
        }
    }
    let mut picks: Vec<(usize, usize)> = live.into_values().flatten().collect();
    picks.sort_unstable();
    let columns = (0..schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn arrow::array::Array> =
                rows.iter().map(|b| b.column(c).as_ref()).collect();
            arrow::compute::interleave(&arrays, &picks)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Some(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(picks.len())),
    )?))
}

/// What a source or sink subtask knows about its place in the job.
#[derive(Clone)]
pub struct TaskContext {
    /// Table name, for messages and metric labels.
    pub table: String,
    pub subtask: usize,
    pub parallelism: usize,
    pub metrics: MetricsRegistry,
    /// The job's id when checkpointing is on: exactly-once sinks name their files with it, so a
    /// restarted job finds (and commits or cleans up) what it left behind.
    pub job: Option<String>,
    /// The job's local state directory (write-ahead logs), when it has one.
    pub state_dir: Option<std::path::PathBuf>,
    /// What the job's tasks share (HTTP tables, file committers).
    pub shared: std::sync::Arc<job::JobShared>,
}

impl TaskContext {
    /// A counter labelled with this table and subtask.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        let subtask = self.subtask.to_string();
        self.metrics
            .counter(name, help, &[("table", &self.table), ("subtask", &subtask)])
    }
}

/// Result of one poll of a source.
#[derive(Debug)]
pub enum Poll {
    /// Rows produced.
    Batch(RecordBatch),
    /// Nothing now; poll again after at most this long (rate limits, idle inputs).
    Pending(Duration),
    /// Nothing now, and nothing to read at all (e.g. more subtasks than Kafka partitions): the
    /// source does not hold back event time. Poll again after about this long.
    Idle(Duration),
    /// The source is exhausted (bounded input).
    End,
}

/// Produces the rows of one subtask's share of a table.
///
/// Contract: the runtime calls `poll` repeatedly from one blocking thread until it returns
/// `End` or an error, or until the job is cancelled (then the source is dropped). A source must
/// not block for long inside `poll`: return `Pending` instead so cancellation stays prompt.
/// Batches carry exactly the table's physical columns, in declared order (partition columns
/// included); projections are applied by the runtime.
///
/// Checkpoints: `snapshot` returns the source's position after the rows it has returned so far;
/// `restore` (called before the first `poll`) continues from such a position, so that the rows
/// after it come again, exactly. `checkpoint_complete(id)` says checkpoint `id` is durable (a
/// write-ahead log may drop what lies before the oldest retained checkpoint's position).
pub trait Source: Send {
    fn poll(&mut self) -> Result<Poll>;
    fn snapshot(&mut self) -> Result<Vec<u8>>;
    fn restore(&mut self, position: &[u8]) -> Result<()>;
    /// Resumes from a checkpoint taken at another parallelism: `positions` are every old
    /// subtask's, and this subtask takes up the splits it owns now. A source that cannot
    /// redistribute its position refuses.
    fn restore_rescaled(&mut self, _positions: &[&[u8]]) -> Result<()> {
        Err(ConnectorError::Config {
            table: String::new(),
            message: "this source's checkpointed position cannot be redistributed to another parallelism; run with the parallelism the checkpoint was taken with, or --fresh".into(),
        })
    }
    fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// For a source of independent splits (Kafka partitions), the split (`0..splits()`) every
    /// row of the last batch came from: the runtime keeps a watermark per split and sends their
    /// minimum, so a split read ahead does not make another's rows late.
    fn split_of_last_batch(&self) -> Option<usize> {
        None
    }
    fn splits(&self) -> usize {
        1
    }
}

/// Consumes the rows of one subtask.
///
/// Contract: `write` per batch, in order; `on_timer` at least every `timer_interval` when it
/// returns `Some` (rolling files by time); `finish` once when the input ends (flush, close,
/// make output visible). A sink dropped without `finish` leaves no visible partial output.
///
/// Two-phase commit when the job checkpoints: `pre_commit(id)` on checkpoint `id`'s barrier
/// flushes what was written and returns the committables (stored in the checkpoint);
/// `commit(id)` publishes everything pre-committed up to `id` once the checkpoint is complete;
/// `restore(id, committables)` at start commits what checkpoint `id` recorded (idempotently)
/// and removes what no complete checkpoint covers. The defaults make an at-least-once sink.
pub trait Sink: Send {
    fn exactly_once(&self) -> bool {
        false
    }
    fn pre_commit(&mut self, _id: u64) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    fn restore(&mut self, _id: u64, _committables: &[u8]) -> Result<()> {
        Ok(())
    }
    fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Event time advanced to `w` (the minimum over the sink's inputs; `END_OF_TIME` once they
    /// all ended).
    fn on_watermark(&mut self, _w: i64) -> Result<()> {
        Ok(())
    }
    fn timer_interval(&self) -> Option<Duration> {
        None
    }
    fn on_timer(&mut self) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()>;
}

/// Milliseconds since the epoch of a timestamp column of any unit (a TIMESTAMP_LTZ is UTC; a
/// TIMESTAMP is read as UTC, as Flink's Kafka sink reads its record timestamp).
pub(crate) fn millis_of(
    a: &arrow::array::ArrayRef,
) -> std::result::Result<arrow::array::TimestampMillisecondArray, String> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
    if !matches!(a.data_type(), DataType::Timestamp(_, _)) {
        return Err(format!("expected a timestamp, got {}", a.data_type()));
    }
    let ms = arrow::compute::cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(|e| e.to_string())?;
    Ok(ms.as_primitive::<TimestampMillisecondType>().clone())
}
