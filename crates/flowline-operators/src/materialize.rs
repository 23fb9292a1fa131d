//! Materialized tables: the current contents of a query's result, kept by key in a state
//! table and published to queries at each completed checkpoint.
//!
//! ```text
//! changelog ─hash(key)─▶ Materialize (per subtask): +I/+U put, -U/-D delete, by primary key
//!                        (no key: the whole row is the key and the value a count)
//! barrier n ─▶ table.checkpoint() = runs ─▶ Materialized: subtask's version n (pending)
//! query ─▶ Materialized::snapshot(): the newest version every subtask has at or before the
//!          last completed checkpoint ─▶ merge-read or point-read of those immutable runs
//! ```
//!
//! A query therefore sees the table exactly as the last completed checkpoint recorded it:
//! never a half-applied interval, never ahead of what the exactly-once sinks committed, and
//! without a lock against the writer (runs are immutable files, held open by the snapshot).
//! A job without checkpoints publishes each subtask's table on its own every `freshness`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, Result};
use flowline_common::changelog::{row_kinds, RowKind};
use flowline_state::table::{TableRun, TableSnapshot};

use crate::keygroups::row_key_groups;
use crate::state::{io_err, OperatorTable};
use crate::{Operator, OperatorContext, OperatorFactory, TableRuns};

/// The state table's name in checkpoints.
const TABLE: &str = "materialized";
/// A version published by a subtask whose input ended: final, visible at once.
const FINAL: u64 = u64::MAX;

/// One materialized table, shared by its operator's subtasks (which publish) and the query
/// server (which reads).
pub struct Materialized {
    pub name: String,
    /// Its columns.
    pub schema: SchemaRef,
    /// The primary key's columns (indices into `schema`); empty: the whole row is the key, and
    /// a row may be there several times.
    pub key: Vec<usize>,
    /// How often a job without checkpoints publishes (`FRESHNESS`).
    pub freshness: Duration,
    versions: Mutex<Versions>,
}

#[derive(Default)]
struct Versions {
    /// Per subtask: its table's runs by the checkpoint that recorded them.
    subtasks: BTreeMap<usize, BTreeMap<u64, Vec<TableRun>>>,
    /// The job's last completed checkpoint; `None`: the job does not checkpoint.
    completed: Option<CompletedCheckpoint>,
    max_parallelism: usize,
}

/// The id of the job's last completed checkpoint (the restored one until a new one completes).
#[derive(Clone)]
pub struct CompletedCheckpoint(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl fmt::Debug for CompletedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompletedCheckpoint({})", (self.0)())
    }
}

impl fmt::Debug for Materialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Materialized({})", self.name)
    }
}

impl Materialized {
    pub fn new(name: &str, schema: SchemaRef, key: Vec<usize>, freshness: Duration) -> Self {
        Self {
            name: name.to_string(),
            schema,
            key,
            freshness,
            versions: Mutex::default(),
        }
    }

    /// The columns rows are stored (and exchanged) by: the primary key, else the whole row.
    pub fn stored_key(&self) -> Vec<usize> {
        match self.key.is_empty() {
            true => (0..self.schema.fields().len()).collect(),
            false => self.key.clone(),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records subtask `subtask`'s table as of checkpoint `id`, and lets go of versions no
    /// query can see any more (their runs are open files).
    fn publish(&self, subtask: usize, id: u64, runs: Vec<TableRun>) {
        let mut v = self.versions();
        v.subtasks.entry(subtask).or_default().insert(id, runs);
        if let Ok(visible) = v.visible() {
            for (s, id) in visible {
                if let Some(versions) = v.subtasks.get_mut(&s) {
                    versions.retain(|k, _| *k >= id);
                }
            }
        }
    }

    /// The table as of the last completed checkpoint (without checkpoints: each subtask's
    /// latest table). An error while the job is still reading its table back from the
    /// checkpoint it restarted from.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let v = self.versions();
        let Ok(visible) = v.visible() else {
            let completed = v.completed.as_ref().map_or(0, |c| (c.0)());
            return exec_err!(
                "materialized table '{}' is being restored from checkpoint {completed}; retry in a moment",
                self.name
            );
        };
        let parts = visible
            .into_iter()
            .map(|(s, id)| TableSnapshot {
                runs: v.subtasks[&s][&id].clone(),
            })
            .collect();
        Ok(Snapshot {
            schema: self.schema.clone(),
            key: self.key.clone(),
            max_parallelism: v.max_parallelism,
            parts,
        })
    }
}

impl Versions {
    /// The version of each subtask a query sees now: with checkpoints the one
    /// [`visible_version`] picks for all (`Err` while a restarted job's subtasks have not all
    /// read it back), without them each subtask's latest.
    fn visible(&self) -> std::result::Result<Vec<(usize, u64)>, ()> {
        match self.completed.as_ref().map(|c| (c.0)()) {
            Some(completed) => {
                let id = visible_version(&self.subtasks, completed).ok_or(())?;
                Ok(self.subtasks.keys().map(|s| (*s, id)).collect())
            }
            None => Ok(self
                .subtasks
                .iter()
                .filter_map(|(s, versions)| Some((*s, *versions.last_key_value()?.0)))
                .collect()),
        }
    }
}

/// The version a query sees: the newest id at or before the last `completed` checkpoint that
/// every subtask published (each registers a checkpoint's version before acknowledging it, and
/// the restored one before any is taken), or FINAL once all have ended.
fn visible_version<T>(subtasks: &BTreeMap<usize, BTreeMap<u64, T>>, completed: u64) -> Option<u64> {
    let visible = |id: &u64| *id <= completed || *id == FINAL;
    subtasks
        .values()
        .map(|versions| versions.keys().copied().filter(visible).collect::<Vec<_>>())
        .reduce(|a, b| a.into_iter().filter(|id| b.contains(id)).collect())
        .and_then(|common| common.into_iter().max())
}

/// A materialized table as of one checkpoint: each subtask's runs.
pub struct Snapshot {
    schema: SchemaRef,
    key: Vec<usize>,
    max_parallelism: usize,
    parts: Vec<TableSnapshot>,
}

impl Snapshot {
    /// Its parts (one per subtask of the job), which scan independently.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// The rows of part `part`, `batch_size` at a time, read as the caller asks for them.
    pub fn batches(
        &self,
        part: usize,
        batch_size: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + 'static> {
        let conv = rows_converter(&self.schema)?;
        let keyless = self.key.is_empty();
        let schema = self.schema.clone();
        let mut scan = self.parts.get(part).cloned().unwrap_or_default().scan();
        let batch_size = batch_size.max(1);
        // One buffer of row-format rows per batch, and their ends: nothing allocated per row.
        let (mut buf, mut ends, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        Ok(std::iter::from_fn(move || {
            buf.clear();
            ends.clear();
            counts.clear();
            while ends.len() < batch_size {
                let more = scan.next_live(|_, key, value| {
                    if keyless {
                        let n = value
                            .get(..8)
                            .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
                        counts.push(n.max(0) as u32);
                        buf.extend_from_slice(key);
                    } else {
                        buf.extend_from_slice(value);
                    }
                    ends.push(buf.len());
                });
                match more {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Some(Err(io_err(e))),
                }
            }
            if ends.is_empty() {
                return None;
            }
            let rows = ends.iter().scan(0, |start, end| {
                let row = &buf[*start..*end];
                *start = *end;
                Some(row)
            });
            Some(decode(
                &conv,
                &schema,
                rows,
                ends.len(),
                keyless.then_some(&counts),
            ))
        }))
    }

    /// The row whose primary key is `key` (one value per key column, of its type): a point
    /// read through the runs' bloom filters. Only for a table with a primary key.
    pub fn lookup(&self, key: &[ArrayRef]) -> Result<Option<RecordBatch>> {
        if self.key.is_empty() || key.len() != self.key.len() {
            return exec_err!("a point lookup needs every primary key column");
        }
        if self.parts.is_empty() {
            return Ok(None);
        }
        let (mut hashes, mut groups) = (Vec::new(), Vec::new());
        row_key_groups(key, 1, self.max_parallelism, &mut hashes, &mut groups)?;
        let key_conv = row_converter(&self.schema, &self.key)?;
        let rows = key_conv.convert_columns(key)?;
        for part in &self.parts {
            if let Some(value) = part.get(groups[0], rows.row(0).as_ref()).map_err(io_err)? {
                let conv = rows_converter(&self.schema)?;
                return decode(&conv, &self.schema, std::iter::once(&value[..]), 1, None).map(Some);
            }
        }
        Ok(None)
    }
}

/// A converter of whole rows of `schema`.
fn rows_converter(schema: &SchemaRef) -> Result<RowConverter> {
    row_converter(schema, &(0..schema.fields().len()).collect::<Vec<_>>())
}

fn row_converter(schema: &SchemaRef, columns: &[usize]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(schema.field(*c).data_type().clone()))
            .collect(),
    )?)
}

/// Rows in the row format as a batch of `schema`; each `counts[i]` times when given.
fn decode<'a>(
    conv: &RowConverter,
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a [u8]>,
    n: usize,
    counts: Option<&Vec<u32>>,
) -> Result<RecordBatch> {
    let parser = conv.parser();
    let columns = conv.convert_rows(rows.map(|r| parser.parse(r)))?;
    let batch = crate::batch_of(schema, columns, n)?;
    match counts {
        Some(counts) if counts.iter().any(|n| *n != 1) => {
            let idx: UInt32Array = counts
                .iter()
                .enumerate()
                .flat_map(|(i, n)| std::iter::repeat_n(i as u32, *n as usize))
                .collect();
            Ok(take_record_batch(&batch, &idx)?)
        }
        _ => Ok(batch),
    }
}

/// The planned operator: the table it keeps.
#[derive(Clone)]
pub struct MaterializeSpec {
    pub table: Arc<Materialized>,
    /// Emit the rows too (to the Parquet copy of an append-only table).
    pub passthrough: bool,
}

impl fmt::Debug for MaterializeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.table;
        let key: Vec<&str> = t
            .key
            .iter()
            .map(|c| t.schema.field(*c).name().as_str())
            .collect();
        match key.is_empty() {
            true => write!(f, "Materialize({}, key=whole row)", t.name),
            false => write!(f, "Materialize({}, key=[{}])", t.name, key.join(", ")),
        }
    }
}

impl OperatorFactory for MaterializeSpec {
    fn create(&self, ctx: &OperatorContext) -> Result<Box<dyn Operator>> {
        let t = &self.table;
        {
            let mut v = t.versions();
            v.completed = ctx.completed.clone();
            v.max_parallelism = ctx.state.max_parallelism;
        }
        // A fresh job's table is empty until its first checkpoint completes. A restored job's
        // is the restored checkpoint's, which this subtask publishes once it has read it
        // (`restore_tables`, or `checkpointed` when the checkpoint holds nothing of it): until
        // every subtask has, queries are asked to retry rather than shown less.
        t.versions().subtasks.entry(ctx.subtask).or_default();
        if ctx.completed.as_ref().is_none_or(|c| (c.0)() == 0) {
            t.publish(ctx.subtask, 0, Vec::new());
        }
        let key = t.stored_key();
        Ok(Box::new(Materialize {
            table: OperatorTable::new(
                ctx,
                TABLE,
                &format!("mt-{}", t.name),
                ctx.state.budget,
                None,
            )?,
            key_conv: row_converter(&t.schema, &key)?,
            row_conv: rows_converter(&t.schema)?,
            key,
            spec: self.clone(),
            subtask: ctx.subtask,
            checkpoints: ctx.completed.is_some(),
            published: Instant::now(),
            version: 0,
            max_parallelism: ctx.state.max_parallelism,
            hashes: Vec::new(),
            groups: Vec::new(),
        }))
    }
}

pub struct Materialize {
    spec: MaterializeSpec,
    table: OperatorTable<Vec<u8>>,
    /// The key's columns (the primary key, or every column).
    key: Vec<usize>,
    key_conv: RowConverter,
    row_conv: RowConverter,
    subtask: usize,
    /// Whether the job checkpoints (else the operator publishes every `freshness`).
    checkpoints: bool,
    published: Instant,
    /// Without checkpoints: the number of the last version published.
    version: u64,
    max_parallelism: usize,
    hashes: Vec<u64>,
    groups: Vec<u16>,
}

impl Materialize {
    /// Without checkpoints: writes what changed as a run and publishes the table.
    fn publish_now(&mut self, id: u64) -> Result<()> {
        self.table.checkpoint()?;
        let runs = self.table.runs().pop().map(|t| t.runs).unwrap_or_default();
        self.spec.table.publish(self.subtask, id, runs);
        self.published = Instant::now();
        Ok(())
    }

    fn publish_if_due(&mut self) -> Result<()> {
        if !self.checkpoints && self.published.elapsed() >= self.spec.table.freshness {
            self.version += 1;
            self.publish_now(self.version)?;
        }
        Ok(())
    }
}

impl Operator for Materialize {
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.table.checkpoint()?;
        Ok(Vec::new())
    }

    fn snapshot_tables(&mut self) -> Vec<TableRuns> {
        self.table.runs()
    }

    fn keeps_state_when_finished(&self) -> bool {
        true
    }

    fn checkpointed(&mut self, id: u64) {
        flowline_common::failpoint::hit(&format!("materialize.checkpointed.{}", self.subtask));
        let runs = self.table.runs().pop().map(|t| t.runs).unwrap_or_default();
        self.spec.table.publish(self.subtask, id, runs);
    }

    fn restore_tables(&mut self, tables: Vec<TableRuns>) -> Result<()> {
        self.table.restore(tables)?;
        // Restored before any checkpoint is taken: the last completed one is the restored one.
        let id = self
            .spec
            .table
            .versions()
            .completed
            .as_ref()
            .map_or(0, |c| (c.0)());
        self.table.checkpoint()?;
        self.checkpointed(id);
        Ok(())
    }

    fn restore_rescaled(&mut self, _states: &[&[u8]]) -> Result<()> {
        Ok(())
    }

    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    fn table_stats(&self) -> flowline_state::table::TableStats {
        self.table.stats()
    }

    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let width = self.spec.table.schema.fields().len();
        if batch.num_columns() < width {
            return exec_err!(
                "materialized table '{}': got rows of {} columns, expected {width}",
                self.spec.table.name,
                batch.num_columns()
            );
        }
        let columns = &batch.columns()[..width];
        let key_columns: Vec<ArrayRef> = self.key.iter().map(|c| columns[*c].clone()).collect();
        let keys = self.key_conv.convert_columns(&key_columns)?;
        row_key_groups(
            &key_columns,
            batch.num_rows(),
            self.max_parallelism,
            &mut self.hashes,
            &mut self.groups,
        )?;
        let kinds = row_kinds(&batch);
        let keyless = self.spec.table.key.is_empty();
        let rows = (!keyless)
            .then(|| self.row_conv.convert_columns(columns))
            .transpose()?;
        for i in 0..batch.num_rows() {
            let kind = kinds.map_or(RowKind::Insert, |k| {
                RowKind::from_i8(k.value(i)).unwrap_or(RowKind::Insert)
            });
            let (group, key) = (self.groups[i], keys.row(i));
            match (&rows, kind.is_addition()) {
                (Some(rows), true) => {
                    self.table
                        .put(group, key.as_ref(), rows.row(i).as_ref().to_vec())
                }
                (Some(_), false) => self.table.delete(group, key.as_ref()).map_err(io_err)?,
                (None, add) => {
                    let n = self
                        .table
                        .get(group, key.as_ref())
                        .map_err(io_err)?
                        .and_then(|v| v.get(..8))
                        .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")));
                    let n = if add { n + 1 } else { n - 1 };
                    match n > 0 {
                        true => self
                            .table
                            .put(group, key.as_ref(), n.to_le_bytes().to_vec()),
                        false => self.table.delete(group, key.as_ref()).map_err(io_err)?,
                    }
                }
            }
        }
        self.table.spill_if_over_budget().map_err(io_err)?;
        self.publish_if_due()?;
        Ok(match self.spec.passthrough {
            true => vec![batch],
            false => Vec::new(),
        })
    }

    fn on_watermark(&mut self, _ts: i64) -> Result<Vec<RecordBatch>> {
        self.publish_if_due()?;
        Ok(Vec::new())
    }

    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        // The input is complete: this is the table's final content.
        self.publish_now(FINAL)?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subtasks(versions: &[&[u64]]) -> BTreeMap<usize, BTreeMap<u64, ()>> {
        versions
            .iter()
            .enumerate()
            .map(|(i, ids)| (i, ids.iter().map(|id| (*id, ())).collect()))
            .collect()
    }

    #[test]
    fn a_query_sees_the_last_completed_checkpoint_every_subtask_recorded() {
        // Both recorded 3; 4 is not complete yet (one subtask has taken it).
        assert_eq!(
            visible_version(&subtasks(&[&[0, 3, 4], &[0, 3]]), 3),
            Some(3)
        );
        // 4 completed: every subtask had recorded it before acknowledging.
        assert_eq!(
            visible_version(&subtasks(&[&[0, 3, 4], &[0, 3, 4]]), 4),
            Some(4)
        );
        // A fresh job before its first checkpoint: empty tables (version 0).
        assert_eq!(visible_version(&subtasks(&[&[0], &[0, 1]]), 0), Some(0));
        // Restored from 7: every subtask published 7 before any new checkpoint.
        assert_eq!(visible_version(&subtasks(&[&[0, 7], &[0, 7]]), 7), Some(7));
        // One subtask ended (its final table), the other not: the last common checkpoint.
        assert_eq!(
            visible_version(&subtasks(&[&[5, FINAL], &[5, 6]]), 6),
            Some(5)
        );
        assert_eq!(
            visible_version(&subtasks(&[&[5, FINAL], &[5, FINAL]]), 5),
            Some(FINAL)
        );
    }
}
