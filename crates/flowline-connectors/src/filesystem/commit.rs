//! Partition commit (`sink.partition-commit.*`, Flink's options): a `_SUCCESS` file in each
//! partition directory once the partition is complete.
//!
//! ```text
//! subtask i publishes its files up to checkpoint k ─▶ its mark: the watermark (partition-time)
//!     or wall clock (process-time) when k was taken ─▶ min over all subtasks' marks = M
//!     ─▶ every partition directory without a success file whose time + delay < M gets one
//! ```
//!
//! A subtask's mark covers its files: a row of a partition arrives before the watermark passes
//! the partition's time (unless late), so it is in a checkpoint taken before the mark's. The
//! subtasks of one sink run in one process and meet in a table here (Flink has a separate
//! committer task). At the end of the input the mark is +infinity: every partition is committed.
//! The partition's time: `partition.time-extractor.timestamp-pattern` (`$dt $hm:00`) over its
//! values, or the first partition value, parsed as `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd` (UTC);
//! with the process-time trigger, when its directory last changed.

use flowline_common::{END_OF_TIME, NO_WATERMARK};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flowline_common::Options;
use flowline_sql::TableDef;

use super::source::unescape_partition;
use crate::registry::opt;
use crate::{ConnectorError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    ProcessTime,
    PartitionTime,
}

#[derive(Clone, Debug)]
pub struct CommitPolicy {
    pub trigger: Trigger,
    pub delay_ms: i64,
    pub success_file: String,
    pub pattern: Option<String>,
}

/// The partition commit the options ask for; None without `sink.partition-commit.policy.kind`.
pub fn policy(table: &TableDef, o: &Options) -> Result<Option<CommitPolicy>> {
    let bad = |msg: String| ConnectorError::config(&table.name, msg);
    let trigger = match o.get("sink.partition-commit.trigger") {
        None | Some("process-time") => Trigger::ProcessTime,
        Some("partition-time") => Trigger::PartitionTime,
        Some(other) => {
            return Err(bad(format!(
                "invalid 'sink.partition-commit.trigger' '{other}': expected process-time or partition-time"
            )))
        }
    };
    if let Some(kind) = o.get("partition.time-extractor.kind") {
        if kind != "default" {
            return Err(bad(format!(
                "'partition.time-extractor.kind' = '{kind}' is not supported; only 'default' (a timestamp pattern)"
            )));
        }
    }
    if let Some(f) = o.get("partition.time-extractor.timestamp-formatter") {
        if f != "yyyy-MM-dd HH:mm:ss" && f != "yyyy-MM-dd" {
            return Err(bad(format!(
                "'partition.time-extractor.timestamp-formatter' = '{f}' is not supported; use yyyy-MM-dd HH:mm:ss or yyyy-MM-dd"
            )));
        }
    }
    if let Some(tz) = o.get("sink.partition-commit.watermark-time-zone") {
        if tz != "UTC" {
            return Err(bad(format!(
                "'sink.partition-commit.watermark-time-zone' = '{tz}' is not supported; watermarks and partition times are UTC"
            )));
        }
    }
    let delay_ms = opt(table, o.duration("sink.partition-commit.delay"))?
        .map_or(0, flowline_common::clock::millis);
    let Some(kinds) = o.get("sink.partition-commit.policy.kind") else {
        return Ok(None);
    };
    let mut success = false;
    for k in kinds.split(',').map(str::trim) {
        match k {
            "success-file" => success = true,
            "metastore" | "custom" => {
                return Err(bad(format!(
                    "'sink.partition-commit.policy.kind' '{k}' is not supported (there is no metastore or custom \
                     policy class); use success-file"
                )))
            }
            other => {
                return Err(bad(format!(
                    "invalid 'sink.partition-commit.policy.kind' '{other}': expected success-file"
                )))
            }
        }
    }
    if !success || table.partitioned_by.is_empty() {
        return Ok(None);
    }
    Ok(Some(CommitPolicy {
        trigger,
        delay_ms,
        success_file: o
            .get("sink.partition-commit.success-file.name")
            .unwrap_or("_SUCCESS")
            .to_string(),
        pattern: o
            .get("partition.time-extractor.timestamp-pattern")
            .map(str::to_string),
    }))
}

/// The marks of one sink's subtasks and the partitions already committed.
pub struct Committer {
    marks: Vec<i64>,
    done: HashSet<PathBuf>,
}

/// The committer shared by the job's `parallelism` subtasks writing under `root`.
pub fn committer(
    job: &crate::job::JobShared,
    root: &Path,
    parallelism: usize,
) -> Arc<Mutex<Committer>> {
    let mut all = job.committers.lock().unwrap_or_else(|e| e.into_inner());
    let c = all.entry(root.to_path_buf()).or_insert_with(|| {
        Arc::new(Mutex::new(Committer {
            marks: vec![NO_WATERMARK; parallelism],
            done: HashSet::new(),
        }))
    });
    {
        let mut g = c.lock().unwrap_or_else(|e| e.into_inner());
        if g.marks.len() != parallelism || g.marks.iter().all(|m| *m == END_OF_TIME) {
            // A new run (another parallelism, or the last one finished).
            g.marks = vec![NO_WATERMARK; parallelism];
        }
    }
    c.clone()
}

/// Records subtask `subtask`'s mark and commits the partitions every subtask's marks cover.
pub fn commit_partitions(
    table: &str,
    root: &Path,
    partition_names: &[String],
    policy: &CommitPolicy,
    committer: &Mutex<Committer>,
    subtask: usize,
    mark: i64,
) -> Result<()> {
    let mut c = committer.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = c.marks.get_mut(subtask) {
        *m = (*m).max(mark);
    }
    let covered = c.marks.iter().copied().min().unwrap_or(NO_WATERMARK);
    if covered == NO_WATERMARK {
        return Ok(());
    }
    let io = |path: &Path, source: std::io::Error| ConnectorError::Io {
        table: table.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut dirs = Vec::new();
    list_partitions(root, partition_names.len(), &mut dirs).map_err(|e| io(root, e))?;
    for dir in dirs {
        if c.done.contains(&dir) {
            continue;
        }
        let success = dir.join(&policy.success_file);
        if success.exists() {
            c.done.insert(dir);
            continue;
        }
        let time = match policy.trigger {
            Trigger::PartitionTime => partition_time(table, root, &dir, partition_names, policy)?,
            Trigger::ProcessTime => std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .map(flowline_common::clock::millis_of)
                .map_err(|e| io(&dir, e))?,
        };
        if covered == END_OF_TIME || time.saturating_add(policy.delay_ms) < covered {
            std::fs::File::create(&success)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&success, e))?;
            c.done.insert(dir);
        }
    }
    Ok(())
}

/// Partition directories `depth` levels under `root` (hidden and `_` names skipped).
fn list_partitions(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if depth == 0 {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') || !entry.file_type()?.is_dir() {
            continue;
        }
        list_partitions(&entry.path(), depth - 1, out)?;
    }
    Ok(())
}

/// The time of partition directory `dir` (ms since the epoch, UTC) from its values.
fn partition_time(
    table: &str,
    root: &Path,
    dir: &Path,
    names: &[String],
    policy: &CommitPolicy,
) -> Result<i64> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut values: HashMap<String, String> = HashMap::new();
    for seg in rel.iter() {
        let seg = seg.to_string_lossy();
        if let Some((k, v)) = seg.split_once('=') {
            values.insert(unescape_partition(k), unescape_partition(v));
        }
    }
    let text = match &policy.pattern {
        Some(p) => {
            let mut t = p.clone();
            // Longer names first: `$dt` must not eat the start of `$dth`.
            let mut by_len: Vec<&String> = names.iter().collect();
            by_len.sort_by_key(|n| std::cmp::Reverse(n.len()));
            for n in by_len {
                t = t.replace(&format!("${n}"), values.get(n).map_or("", String::as_str));
            }
            t
        }
        None => names
            .first()
            .and_then(|n| values.get(n))
            .cloned()
            .unwrap_or_default(),
    };
    let parsed = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").or_else(|_| {
        chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight"))
    });
    match parsed {
        Ok(t) => Ok(t.and_utc().timestamp_millis()),
        Err(_) => Err(ConnectorError::config(
            table,
            format!(
                "partition '{}': its time '{text}' (from 'partition.time-extractor.timestamp-pattern') is not \
                 yyyy-MM-dd HH:mm:ss or yyyy-MM-dd",
                rel.display()
            ),
        )),
    }
}
