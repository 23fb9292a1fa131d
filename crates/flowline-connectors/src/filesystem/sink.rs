//! Filesystem sink: rolling files, partition directories, atomic publish by rename.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use flowline_common::changelog::{self, RowKind};
use flowline_common::limits::{SINK_FILE_SIZE_DEFAULT_BYTES, SINK_ROLLOVER_INTERVAL_DEFAULT_MS};
use flowline_common::Options;
use flowline_formats::{create_writer, BatchWriter, FormatConfig};
use flowline_sql::TableDef;

use super::{extension, format, root, DEFAULT_PARTITION_NAME};
use crate::registry::opt;
use crate::{ConnectorError, Result, Sink, TaskContext};

/// Open partition files per subtask; past this the least recently written one is closed
/// (bounded memory and file handles when a batch spans many partitions).
const OPEN_PARTITIONS_MAX: usize = 64;

const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);

pub fn create_sink(table: &TableDef, o: &Options, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
    let format = format(table, o)?;
    let physical = table.physical_schema();
    let partition_cols: Vec<usize> = table
        .partitioned_by
        .iter()
        .map(|p| physical.index_of(p))
        .collect::<std::result::Result<_, _>>()?;
    let mut data_cols: Vec<usize> = (0..physical.fields().len())
        .filter(|i| !partition_cols.contains(i))
        .collect();
    let mut data_schema = Arc::new(physical.project(&data_cols)?);
    if format.is_changelog() {
        // Changelog records carry each row's change kind, the input's last column.
        data_cols.push(physical.fields().len());
        data_schema = Arc::new(changelog::with_row_kind(&data_schema));
    }
    let root = root(o);
    let root_for_commit = root.clone();
    std::fs::create_dir_all(&root).map_err(|source| ConnectorError::Io {
        table: table.name.clone(),
        path: root.clone(),
        source,
    })?;
    Ok(Box::new(FileSink {
        table: table.name.clone(),
        root,
        format,
        data_schema,
        partition_cols,
        data_cols,
        partition_names: table.partitioned_by.clone(),
        default_partition: o
            .get("partition.default-name")
            .unwrap_or(DEFAULT_PARTITION_NAME)
            .to_string(),
        file_size_max: opt(table, o.memory_size("sink.rolling-policy.file-size"))?
            .unwrap_or(SINK_FILE_SIZE_DEFAULT_BYTES),
        rollover: opt(table, o.duration("sink.rolling-policy.rollover-interval"))?
            .unwrap_or(Duration::from_millis(SINK_ROLLOVER_INTERVAL_DEFAULT_MS)),
        check_interval: opt(table, o.duration("sink.rolling-policy.check-interval"))?
            .unwrap_or(CHECK_INTERVAL_DEFAULT),
        run_id: ctx
            .job
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        two_phase: ctx.job.is_some(),
        epoch: 1,
        closed: Vec::new(),
        pending: Vec::new(),
        subtask: ctx.subtask,
        commit: super::commit::policy(table, o)?.map(|p| {
            (
                p,
                super::commit::committer(&ctx.shared, &root_for_commit, ctx.parallelism),
            )
        }),
        watermark: NO_WATERMARK,
        marks: Vec::new(),
        counter: 0,
        open: HashMap::new(),
        clock: 0,
    }))
}

struct OpenPart {
    writer: Box<dyn BatchWriter>,
    in_progress: PathBuf,
    final_path: PathBuf,
    opened: Instant,
    last_write: u64,
}

struct FileSink {
    table: String,
    root: PathBuf,
    format: FormatConfig,
    data_schema: SchemaRef,
    partition_cols: Vec<usize>,
    data_cols: Vec<usize>,
    partition_names: Vec<String>,
    default_partition: String,
    file_size_max: u64,
    rollover: Duration,
    check_interval: Duration,
    /// The job id with checkpointing (stable across restarts), else a fresh id per run.
    run_id: String,
    /// Exactly-once: closed files stay in progress until their checkpoint completes.
    two_phase: bool,
    /// The checkpoint the files being written now belong to (named with it).
    epoch: u64,
    /// Closed files not yet handed to a checkpoint: (in-progress path, final path).
    closed: Vec<(PathBuf, PathBuf)>,
    /// Files pre-committed with checkpoint `id`, waiting for it to complete.
    pending: Vec<(u64, Vec<(PathBuf, PathBuf)>)>,
    subtask: usize,
    /// Partition commit (`sink.partition-commit.*`), shared with the other subtasks.
    commit: Option<(
        super::commit::CommitPolicy,
        Arc<std::sync::Mutex<super::commit::Committer>>,
    )>,
    /// The input's watermark.
    watermark: i64,
    /// Per pre-committed checkpoint: the mark its files carry (see `commit.rs`).
    marks: Vec<(u64, i64)>,
    counter: u64,
    /// Open file per partition directory ("" when unpartitioned).
    open: HashMap<String, OpenPart>,
    clock: u64,
}

impl FileSink {
    /// What published files cover: the watermark (partition-time) or the wall clock.
    fn mark(&self) -> i64 {
        match &self.commit {
            Some((p, _))
                if p.trigger == super::commit::Trigger::ProcessTime
                    && self.watermark != END_OF_TIME =>
            {
                flowline_common::clock::now_millis()
            }
            _ => self.watermark,
        }
    }

    /// Commits the partitions that all subtasks' published files cover.
    fn commit_partitions(&self, mark: i64) -> Result<()> {
        let Some((policy, committer)) = &self.commit else {
            return Ok(());
        };
        super::commit::commit_partitions(
            &self.table,
            &self.root,
            &self.partition_names,
            policy,
            committer,
            self.subtask,
            mark,
        )
    }
    fn io(&self, path: &std::path::Path, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            table: self.table.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn open_part(&mut self, dir: &str) -> Result<OpenPart> {
        let dir_path = self.root.join(dir);
        std::fs::create_dir_all(&dir_path).map_err(|e| self.io(&dir_path, e))?;
        let name = if self.two_phase {
            format!(
                "part-{}-{}-{}-{}{}",
                self.run_id,
                self.subtask,
                self.epoch,
                self.counter,
                extension(&self.format)
            )
        } else {
            format!(
                "part-{}-{}-{}{}",
                self.run_id,
                self.subtask,
                self.counter,
                extension(&self.format)
            )
        };
        self.counter += 1;
        let in_progress = dir_path.join(format!(".{name}.inprogress"));
        let final_path = dir_path.join(name);
        let file = File::create(&in_progress).map_err(|e| self.io(&in_progress, e))?;
        let writer =
            create_writer(&self.format, self.data_schema.clone(), file).map_err(|source| {
                ConnectorError::Format {
                    table: self.table.clone(),
                    path: in_progress.clone(),
                    source,
                }
            })?;
        Ok(OpenPart {
            writer,
            in_progress,
            final_path,
            opened: Instant::now(),
            last_write: 0,
        })
    }

    fn close_part(&mut self, part: OpenPart) -> Result<()> {
        let OpenPart {
            writer,
            in_progress,
            final_path,
            ..
        } = part;
        writer.finish().map_err(|source| ConnectorError::Format {
            table: self.table.clone(),
            path: in_progress.clone(),
            source,
        })?;
        if self.two_phase {
            // Durable before the checkpoint that will publish it can complete: after a power loss
            // the file the manifest promises is there whole.
            std::fs::File::open(&in_progress)
                .and_then(|f| f.sync_all())
                .map_err(|e| self.io(&in_progress, e))?;
            self.closed.push((in_progress, final_path));
            return Ok(());
        }
        std::fs::rename(&in_progress, &final_path).map_err(|e| self.io(&final_path, e))
    }

    /// Publishes a pre-committed file. Already published (a second commit of the same
    /// checkpoint, or a restore after the commit): nothing to do.
    fn publish(&self, in_progress: &Path, final_path: &Path) -> Result<()> {
        match std::fs::rename(in_progress, final_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && final_path.exists() => Ok(()),
            Err(e) => Err(self.io(final_path, e)),
        }
    }

    /// Removes what no complete checkpoint covers: this subtask's in-progress files, and its
    /// published files of checkpoints after `restored` (published by a checkpoint whose
    /// manifest was later found damaged; the replay writes those rows again).
    fn clean_up(&self, restored: u64) -> Result<()> {
        let prefix = format!("part-{}-{}-", self.run_id, self.subtask);
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| self.io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| self.io(&dir, e))?;
                let path = entry.path();
                if entry.file_type().map_err(|e| self.io(&path, e))?.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let orphan = match name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".inprogress"))
                {
                    Some(n) => n.starts_with(&prefix),
                    None => name
                        .strip_prefix(&prefix)
                        .and_then(|rest| rest.split('-').next())
                        .and_then(|epoch| epoch.parse::<u64>().ok())
                        .is_some_and(|epoch| epoch > restored),
                };
                if orphan {
                    std::fs::remove_file(&path).map_err(|e| self.io(&path, e))?;
                }
            }
        }
        Ok(())
    }

    fn write_part(&mut self, dir: String, batch: &RecordBatch) -> Result<()> {
        if !self.open.contains_key(&dir) {
            if self.open.len() >= OPEN_PARTITIONS_MAX {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, p)| p.last_write)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    let part = self.open.remove(&k).expect("key just found");
                    self.close_part(part)?;
                }
            }
            let part = self.open_part(&dir)?;
            self.open.insert(dir.clone(), part);
        }
        self.clock += 1;
        let clock = self.clock;
        let part = self.open.get_mut(&dir).expect("inserted above");
        part.last_write = clock;
        let res = part.writer.write(batch);
        let full = part.writer.bytes_written() >= self.file_size_max;
        res.map_err(|source| ConnectorError::Format {
            table: self.table.clone(),
            path: self.root.join(&dir),
            source,
        })?;
        if full {
            let part = self.open.remove(&dir).expect("present");
            self.close_part(part)?;
        }
        Ok(())
    }

    /// `k1=v1/k2=v2` for each row.
    fn partition_dirs(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let strings = self
            .partition_cols
            .iter()
            .map(|i| cast(batch.column(*i), &DataType::Utf8))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let strings: Vec<&arrow::array::StringArray> = strings
            .iter()
            .map(|a| a.as_any().downcast_ref().expect("cast to Utf8"))
            .collect();
        Ok((0..batch.num_rows())
            .map(|row| {
                let mut dir = String::new();
                for (name, col) in self.partition_names.iter().zip(&strings) {
                    if !dir.is_empty() {
                        dir.push('/');
                    }
                    let value = if col.is_null(row) {
                        self.default_partition.as_str()
                    } else {
                        col.value(row)
                    };
                    dir.push_str(name);
                    dir.push('=');
                    escape_partition(value, &mut dir);
                }
                dir
            })
            .collect())
    }
}

/// Escapes characters that cannot appear in a path segment (Hive/Flink style `%XX`).
fn escape_partition(v: &str, out: &mut String) {
    for c in v.chars() {
        if matches!(
            c,
            '/' | '\\' | '=' | '%' | ':' | '#' | '?' | '"' | '\'' | '*' | '\n' | '\r' | '\t'
        ) || c.is_control()
        {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
}

impl Sink for FileSink {
    fn exactly_once(&self) -> bool {
        self.two_phase
    }

    fn pre_commit(&mut self, id: u64) -> Result<Vec<u8>> {
        let parts: Vec<OpenPart> = self.open.drain().map(|(_, p)| p).collect();
        for p in parts {
            self.close_part(p)?;
        }
        let closed = std::mem::take(&mut self.closed);
        if !closed.is_empty() {
            self.pending.push((id, closed));
        }
        self.epoch = id + 1;
        if self.commit.is_some() {
            let mark = self.mark();
            self.marks.push((id, mark));
        }
        let rel = |p: &Path| {
            p.strip_prefix(&self.root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        let files: Vec<[String; 2]> = self
            .pending
            .iter()
            .flat_map(|(_, f)| f)
            .map(|(a, b)| [rel(a), rel(b)])
            .collect();
        Ok(serde_json::to_vec(&files).expect("JSON values serialize"))
    }

    fn commit(&mut self, id: u64) -> Result<()> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(e, _)| *e <= id);
        self.pending = later;
        let total: usize = due.iter().map(|(_, f)| f.len()).sum();
        let mut dirs = std::collections::BTreeSet::new();
        for (i, (a, b)) in due.iter().flat_map(|(_, f)| f).enumerate() {
            self.publish(a, b)?;
            dirs.extend(b.parent().map(Path::to_path_buf));
            if i == 0 && total > 1 {
                flowline_common::failpoint::hit("sink.mid-commit");
            }
        }
        // The renames themselves durable (a crash before this is covered: restore publishes again).
        for d in dirs {
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(|e| self.io(&d, e))?;
        }
        let covered = self
            .marks
            .iter()
            .filter(|(e, _)| *e <= id)
            .map(|(_, m)| *m)
            .max();
        self.marks.retain(|(e, _)| *e > id);
        if let Some(mark) = covered {
            self.commit_partitions(mark)?;
        }
        Ok(())
    }

    fn restore(&mut self, id: u64, committables: &[u8]) -> Result<()> {
        if !committables.is_empty() {
            let files: Vec<[String; 2]> = serde_json::from_slice(committables).map_err(|e| {
                ConnectorError::config(
                    &self.table,
                    format!("the checkpoint's list of files to commit is not valid: {e}"),
                )
            })?;
            for [a, b] in files {
                self.publish(&self.root.join(a), &self.root.join(b))?;
            }
        }
        self.clean_up(id)?;
        self.epoch = id + 1;
        Ok(())
    }

    fn write(&mut self, mut batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.format.is_changelog() && changelog::row_kinds(&batch).is_none() {
            // An append-only input to a changelog format: every row is an insert.
            let mut columns = batch.columns().to_vec();
            columns.push(changelog::kind_column(RowKind::Insert, batch.num_rows()));
            batch =
                RecordBatch::try_new(Arc::new(changelog::with_row_kind(&batch.schema())), columns)?;
        }
        if self.partition_cols.is_empty() {
            let data = RecordBatch::try_new(self.data_schema.clone(), batch.columns().to_vec())?;
            return self.write_part(String::new(), &data);
        }
        let dirs = self.partition_dirs(&batch)?;
        let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
        for (row, dir) in dirs.iter().enumerate() {
            groups.entry(dir.as_str()).or_default().push(row as u32);
        }
        let data = RecordBatch::try_new(
            self.data_schema.clone(),
            self.data_cols
                .iter()
                .map(|i| batch.column(*i).clone())
                .collect(),
        )?;
        let mut groups: Vec<(&str, Vec<u32>)> = groups.into_iter().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (dir, rows) in groups {
            let part = if rows.len() == data.num_rows() {
                data.clone()
            } else {
                take_record_batch(&data, &UInt32Array::from(rows))?
            };
            self.write_part(dir.to_string(), &part)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, w: i64) -> Result<()> {
        self.watermark = self.watermark.max(w);
        Ok(())
    }

    fn timer_interval(&self) -> Option<Duration> {
        Some(self.check_interval.min(self.rollover))
    }

    fn on_timer(&mut self) -> Result<()> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, p)| p.opened.elapsed() >= self.rollover)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let part = self.open.remove(&k).expect("present");
            self.close_part(part)?;
        }
        Ok(())
    }

    /// The end of the input without checkpoints: every file is published, every partition
    /// complete.
    fn finish(&mut self) -> Result<()> {
        let parts: Vec<OpenPart> = self.open.drain().map(|(_, p)| p).collect();
        for p in parts {
            self.close_part(p)?;
        }
        self.commit_partitions(END_OF_TIME)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Not finished (error or cancellation): remove in-progress files rather than publish them.
        for (_, p) in self.open.drain() {
            let _ = std::fs::remove_file(&p.in_progress);
        }
    }
}
