//! Streaming operators: one file per operator family.
//!
//! - `chain.rs`: the fused stateless chain (filter, projection, CASE, casts, functions, unnest)
//!   evaluated with DataFusion physical expressions on whole batches;
//! - `window_agg.rs`: window aggregation (TUMBLE, HOP, CUMULATE and SESSION windows) with
//!   DataFusion's vectorised `GroupsAccumulator`s;
//! - `session.rs`: SESSION window assignment (buffers rows until their session closes);
//! - `group_agg.rs`: non-windowed GROUP BY with an updating result (retractions);
//! - `normalize.rs`: an upsert stream (upsert-kafka) turned into a changelog;
//! - `join/`: regular equi-joins (inner, outer, semi, anti) over append-only or updating inputs,
//!   each input's rows in a state table;
//! - `rank.rs`: TopN and deduplication (`ROW_NUMBER() ... WHERE rn <= N`);
//! - `over_agg.rs`: OVER aggregations (`SUM(x) OVER (PARTITION BY ... ORDER BY t ROWS|RANGE ...)`);
//! - `interval_join.rs`: interval joins (time bounds between the inputs' time attributes);
//! - `window_join.rs`: window joins (two window TVF results joined per window);
//! - `window_parts.rs`: window state in a state table, by window and key group (window
//!   aggregation, window join, window TopN);
//! - `window_rank.rs`: window TopN and window deduplication (append-only, per window);
//! - `temporal_join/`: lookup joins and event-time temporal joins (`FOR SYSTEM_TIME AS OF`).
//!
//! Each stateful operator has a spec (built by the planner, implementing [`OperatorFactory`])
//! and a per-subtask instance implementing [`Operator`].

mod accumulators;
pub mod chain;
pub mod group_agg;
mod groups;
pub mod interval_join;
pub mod join;
pub mod keygroups;
pub mod materialize;
pub mod normalize;
pub mod over_agg;
mod pairs;
pub mod rank;
pub mod session;
mod session_table;
mod state;
pub mod temporal_join;
#[cfg(test)]
pub mod testing;
pub mod window_agg;
pub mod window_join;
mod window_parts;
pub mod window_rank;

use std::fmt;

use datafusion::arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;

pub use chain::{ChainStep, StatelessChain};
pub use group_agg::{AggFunction, GroupAggregateCall, GroupAggregateSpec};
pub use interval_join::IntervalJoinSpec;
pub use join::{JoinKind, JoinSpec};
pub use normalize::ChangelogNormalizeSpec;
pub use over_agg::{OverAggregateSpec, OverFrame};
pub use rank::RankSpec;
pub use session::{
    SessionAggregate, SessionAggregateSpec, SessionOutput, SessionWindow, SessionWindowSpec,
};
pub use temporal_join::{LookupJoinSpec, TableLoader, VersionedJoinSpec};
pub use window_agg::{AggregateCall, WindowAggregate, WindowAggregateSpec};
pub use window_join::WindowJoinSpec;
pub use window_rank::WindowRankSpec;

/// A streaming operator. The runtime calls the hooks from a single task, in message order.
///
/// - `on_batch`: rows arrive on input `input` (always 0 but for a join's right input, 1);
///   return the rows to emit now (possibly none).
/// - `on_watermark`: event time advanced to `ts`; emit what the watermark completes.
/// - `on_end`: the input is exhausted; emit everything still held.
///
/// `on_watermark` receives the merged watermark of all inputs; the runtime forwards it
/// downstream after the rows it returns.
///
/// Checkpoints: `snapshot` (on an aligned barrier) returns the operator's state as bytes and
/// leaves the operator as it was; `restore` (before any other hook) loads such bytes. State kept
/// in state tables travels beside the bytes as run files (`snapshot_tables`, `restore_tables`). The
/// runtime keeps the watermark itself and replays it with `on_watermark` after `restore`.
pub trait Operator: Send {
    fn snapshot(&mut self) -> Result<Vec<u8>>;
    fn restore(&mut self, state: &[u8]) -> Result<()>;
    /// The runs of its state tables as of the last `snapshot` (an operator on state tables
    /// checkpoints them in `snapshot` and keeps only small bytes of its own).
    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        Vec::new()
    }
    /// Its state tables' runs from a checkpoint, before `restore` (possibly taken at another
    /// parallelism: runs of other subtasks, of which it serves its own key groups).
    fn restore_tables(&mut self, _tables: Vec<TableRuns>) -> Result<()> {
        Ok(())
    }
    /// Checkpoint `id` holds what the last `snapshot` took (called right after it, before the
    /// task acknowledges the checkpoint).
    fn checkpointed(&mut self, _id: u64) {}
    /// Whether its state tables stay in the job's checkpoints after its input ended (a
    /// materialized table's contents are the result; other operators have emitted theirs).
    fn keeps_state_when_finished(&self) -> bool {
        false
    }
    /// Restores from a checkpoint taken at another parallelism: `states` are the bytes of every
    /// subtask the operator had then, after `restore_tables` handed it their tables (of which it
    /// serves its own key groups). An operator whose keyed state is all in state tables has
    /// nothing (or only counters) in its bytes; one that still keeps keyed state in its bytes
    /// cannot split it by key group and refuses.
    fn restore_rescaled(&mut self, states: &[&[u8]]) -> Result<()> {
        if states.iter().all(|s| s.is_empty()) {
            return Ok(());
        }
        datafusion::common::exec_err!(
            "this operator keeps its state in memory, not in key-grouped state tables, so its checkpoint can only be restored at the parallelism it was taken with"
        )
    }
    /// Bytes of its state tables: in memory, on local disk; with spill and merge counts.
    fn table_stats(&self) -> flowline_state::table::TableStats {
        Default::default()
    }
    fn on_batch(&mut self, input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>>;
    fn on_watermark(&mut self, _ts: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
    /// More of what the last `on_watermark` or `on_end` completes, when it was too much to
    /// return at once (a window larger than memory fires a part at a time): the runtime calls
    /// it, sending each part downstream before asking for the next, until it gives `None`.
    fn pending(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        Ok(None)
    }
    /// Rows dropped as late so far (cumulative).
    fn late_rows(&self) -> u64 {
        0
    }
    /// The late rows kept since the last call (only when [`OperatorContext::keep_late`]).
    fn take_late(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }
    /// Approximate bytes of state held (open windows, buffered rows).
    fn state_bytes(&self) -> usize {
        0
    }
    /// Windows (or sessions) currently open.
    fn open_windows(&self) -> usize {
        0
    }
    /// How far behind the input watermark the forwarded one runs (ms): an operator that emits
    /// rows older than its input watermark (an interval join) holds it back so they stay on time.
    fn watermark_delay(&self) -> i64 {
        0
    }
}

/// Rows an operator found late: counted, and kept for the late-row table when the job has one.
pub(crate) struct LateRows {
    total: u64,
    keep: bool,
    kept: Vec<RecordBatch>,
}

impl LateRows {
    pub fn new(keep: bool) -> Self {
        Self {
            total: 0,
            keep,
            kept: Vec::new(),
        }
    }

    /// Records the rows of `batch` at `rows` (ascending) as late.
    pub fn add(&mut self, batch: &RecordBatch, rows: &[u32]) -> Result<()> {
        self.total += rows.len() as u64;
        if self.keep && !rows.is_empty() {
            let idx = datafusion::arrow::array::UInt32Array::from(rows.to_vec());
            self.kept
                .push(datafusion::arrow::compute::take_record_batch(batch, &idx)?);
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn take(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.kept)
    }
}

/// Millisecond values of a timestamp column of any unit (`what` names it in the error).
pub(crate) fn millis(a: &ArrayRef, what: &str) -> Result<TimestampMillisecondArray> {
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Ok(a.as_primitive::<TimestampMillisecondType>().clone())
        }
        DataType::Timestamp(_, _) => {
            Ok(cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?
                .as_primitive::<TimestampMillisecondType>()
                .clone())
        }
        other => datafusion::common::exec_err!("{what} must be a timestamp, got {other}"),
    }
}

/// What a subtask's operator is created with.
#[derive(Clone, Debug, Default)]
pub struct OperatorContext {
    pub subtask: usize,
    /// Keep late rows for a late-row table instead of only counting them.
    pub keep_late: bool,
    /// Where and how much state its tables keep.
    pub state: StateEnv,
    /// The job's last completed checkpoint; `None` when the job does not checkpoint.
    pub completed: Option<materialize::CompletedCheckpoint>,
}

/// What an operator's state tables ([`flowline_state::table`]) are given.
#[derive(Clone, Debug)]
pub struct StateEnv {
    /// Local directory for the tables' spill runs (scratch: nothing there outlives the process).
    pub dir: std::path::PathBuf,
    /// Bytes the subtask's tables may hold in memory together before they spill.
    pub budget: usize,
    /// `pipeline.max-parallelism`: how many key groups keyed state is split into.
    pub max_parallelism: usize,
    /// The key groups this subtask owns.
    pub key_groups: std::ops::Range<u16>,
}

impl Default for StateEnv {
    fn default() -> Self {
        let max = flowline_common::keygroups::DEFAULT_MAX_PARALLELISM;
        Self {
            dir: std::env::temp_dir().join(format!("flowline-state-{}", std::process::id())),
            budget: usize::MAX,
            max_parallelism: max,
            key_groups: 0..max as u16,
        }
    }
}

/// One state table's part of a checkpoint: its runs, newest first, each with the key groups it
/// speaks for (files shared with earlier checkpoints, see [`flowline_state::table`]).
#[derive(Clone, Debug)]
pub struct TableRuns {
    pub table: String,
    pub runs: Vec<flowline_state::table::TableRun>,
}

/// A planned stateful operator: creates one [`Operator`] per subtask. `Debug` is its line in
/// `flowline explain`.
pub trait OperatorFactory: Send + Sync + fmt::Debug {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>>;
    /// Whether the operator updates rows it emitted earlier: its output carries a change-kind
    /// column (`flowline_common::changelog`).
    fn updating(&self) -> bool {
        false
    }
}

/// Encodes batches (each with its own schema) as a sequence of length-prefixed Arrow IPC streams.
pub fn encode_batches(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    // Written in place (a length placeholder, then the stream): state can be large and the
    // task is paused meanwhile.
    let mut out = Vec::with_capacity(
        batches
            .iter()
            .map(|b| b.get_array_memory_size() + 1024)
            .sum(),
    );
    for b in batches {
        let at = out.len();
        out.extend_from_slice(&[0; 8]);
        let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &b.schema())?;
        w.write(b)?;
        w.finish()?;
        drop(w);
        let n = (out.len() - at - 8) as u64;
        out[at..at + 8].copy_from_slice(&n.to_le_bytes());
    }
    Ok(out)
}

/// The batches [`encode_batches`] wrote.
pub fn decode_batches(mut bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 8 {
            return datafusion::common::exec_err!("operator state is truncated");
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let Some(stream) = bytes.get(8..8 + n) else {
            return datafusion::common::exec_err!("operator state is truncated");
        };
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(stream),
            None,
        )?;
        for b in reader {
            out.push(b?);
        }
        bytes = &bytes[8 + n..];
    }
    Ok(out)
}

/// Appends one length-prefixed section of batches (operators whose state has several kinds of
/// batches write one section per kind).
pub(crate) fn push_section(out: &mut Vec<u8>, batches: &[RecordBatch]) -> Result<()> {
    let bytes = encode_batches(batches)?;
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// The `n` sections [`push_section`] wrote (`what` names the operator in errors).
pub(crate) fn read_sections(
    mut bytes: &[u8],
    n: usize,
    what: &str,
) -> Result<Vec<Vec<RecordBatch>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = bytes
            .get(..8)
            .map(|l| u64::from_le_bytes(l.try_into().expect("8 bytes")) as usize);
        let Some(section) = len.and_then(|len| bytes.get(8..8 + len)) else {
            return datafusion::common::exec_err!("{what}: the checkpoint's state is truncated");
        };
        out.push(decode_batches(section)?);
        bytes = &bytes[8 + section.len()..];
    }
    Ok(out)
}

/// Each aggregate's state columns in a state batch, which start at column `first`.
pub(crate) fn state_columns<'a>(
    aggregates: &[AggregateCall],
    batch: &'a RecordBatch,
    first: usize,
) -> Result<Vec<&'a [ArrayRef]>> {
    let mut col = first;
    let mut out = Vec::with_capacity(aggregates.len());
    for a in aggregates {
        let width = a.expr.state_fields()?.len();
        let Some(cols) = batch.columns().get(col..col + width) else {
            return datafusion::common::exec_err!("operator state has too few columns");
        };
        out.push(cols);
        col += width;
    }
    Ok(out)
}

/// A batch of `schema` from `columns`, each cast to its field's type where it differs:
/// accumulators may produce slightly different types or type parameters, and the planner's
/// schema is the contract.
pub(crate) fn batch_of(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// Appends `batch` to `out` in slices of at most `BATCH_ROWS_MAX` rows.
pub(crate) fn push_sliced(out: &mut Vec<RecordBatch>, batch: RecordBatch) {
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = flowline_common::limits::BATCH_ROWS_MAX.min(batch.num_rows() - offset);
        out.push(batch.slice(offset, len));
        offset += len;
    }
}

/// A state batch from columns, every field nullable and named by position.
pub(crate) fn state_batch(columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}
