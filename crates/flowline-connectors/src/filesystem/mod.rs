//! `filesystem`: a file or a directory of files in `json` (JSON lines), `csv`, `parquet`, `avro`
//! (Object Container Files), `protobuf` (length-delimited messages) or a changelog format.
//!
//! As a source it is bounded: it reads the files present at start (recursively, skipping names
//! that start with `.` or `_`), files spread over subtasks. Partition directories `k=v` fill the
//! `PARTITIONED BY` columns. As a sink it writes `part-<uuid>-<subtask>-<n>.<ext>` files, rolling
//! by size and time, into `k=v` directories for `PARTITIONED BY` columns (which, as in Flink and
//! Hive, are not repeated inside the files). A file is written under a hidden in-progress name
//! and renamed into place when complete, so readers never see partial files.

pub(crate) mod commit;
mod sink;
mod source;

use std::path::PathBuf;

use flowline_common::{OptionSpec, Options};
use flowline_sql::TableDef;

pub use sink::create_sink;
pub use source::{create_source, lake_files, LakeFile};

use crate::registry::opt;
use crate::{ConnectorError, Result};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "filesystem"),
    OptionSpec::required("path", "a file or directory"),
    OptionSpec::required(
        "format",
        "json, csv, parquet, avro, protobuf, debezium-json, canal-json, maxwell-json",
    ),
    OptionSpec::optional(
        "partition.default-name",
        "directory name for NULL partition values (default __DEFAULT_PARTITION__)",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.file-size",
        "roll a file when it reaches this size (default 128MB)",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.rollover-interval",
        "roll a file after this long open (default 30 min)",
    ),
    OptionSpec::optional(
        "sink.rolling-policy.check-interval",
        "how often to check the rollover interval (default 1 min)",
    ),
    OptionSpec::optional(
        "sink.partition-commit.trigger",
        "when a partition is complete: process-time (default) or partition-time (the watermark)",
    ),
    OptionSpec::optional(
        "sink.partition-commit.delay",
        "commit a partition this long after its time (default 0)",
    ),
    OptionSpec::optional(
        "sink.partition-commit.policy.kind",
        "what a commit does: success-file (writes a _SUCCESS file in the partition)",
    ),
    OptionSpec::optional(
        "sink.partition-commit.success-file.name",
        "the success file's name (default _SUCCESS)",
    ),
    OptionSpec::optional(
        "sink.partition-commit.watermark-time-zone",
        "time zone of the watermark for partition-time commits (only UTC)",
    ),
    OptionSpec::optional(
        "partition.time-extractor.kind",
        "how a partition's time is found: default (a timestamp pattern)",
    ),
    OptionSpec::optional(
        "partition.time-extractor.timestamp-pattern",
        "the partition's time from its values, e.g. '$dt $hm:00' (default: the first partition value)",
    ),
    OptionSpec::optional(
        "partition.time-extractor.timestamp-formatter",
        "the pattern's format: yyyy-MM-dd HH:mm:ss (default) or yyyy-MM-dd",
    ),
    OptionSpec::optional(
        "lookup.join.cache.ttl",
        "as the table of a lookup join: read the files again after this long (default 60 min, as Flink)",
    ),
    OptionSpec::optional(
        "source.monitor-interval",
        "continuous directory monitoring (not supported yet)",
    ),
];

pub const DEFAULT_PARTITION_NAME: &str = "__DEFAULT_PARTITION__";

pub fn validate(table: &TableDef, options: &Options) -> Result<()> {
    let path = options.get("path").unwrap_or_default();
    if let Some((scheme, _)) = path.split_once("://") {
        if scheme != "file" {
            return Err(ConnectorError::config(
                &table.name,
                format!("'path' = '{path}': the filesystem connector reads and writes local paths (or file:// URLs), not {scheme}://"),
            ));
        }
    }
    if options.get("source.monitor-interval").is_some() {
        return Err(ConnectorError::config(
            &table.name,
            "'source.monitor-interval' (continuous file monitoring) is not supported yet; the filesystem source reads the files present at start",
        ));
    }
    opt(
        table,
        flowline_formats::format_from_options(options, "format").map_err(|e| match e {
            flowline_formats::FormatError::Option(o) => o,
            other => options.invalid("format", other.to_string()),
        }),
    )?;
    opt(table, options.memory_size("sink.rolling-policy.file-size"))?;
    opt(
        table,
        options.duration("sink.rolling-policy.rollover-interval"),
    )?;
    opt(
        table,
        options.duration("sink.rolling-policy.check-interval"),
    )?;
    opt(table, options.duration("lookup.join.cache.ttl"))?;
    commit::policy(table, options)?;
    for p in &table.partitioned_by {
        if !table
            .physical_schema()
            .fields()
            .iter()
            .any(|f| f.name() == p)
        {
            return Err(ConnectorError::config(
                &table.name,
                format!("partition column '{p}' must be a physical column"),
            ));
        }
    }
    Ok(())
}

/// The local path of `path`: a plain path or a `file://` URL (Flink's usual form).
fn root(options: &Options) -> PathBuf {
    let path = options.get("path").unwrap_or_default();
    PathBuf::from(path.strip_prefix("file://").unwrap_or(path))
}

fn format(table: &TableDef, options: &Options) -> Result<flowline_formats::FormatConfig> {
    flowline_formats::format_from_options(options, "format")
        .map_err(|e| ConnectorError::config(&table.name, e.to_string()))
}

/// File extension for a format (Flink writes none; tools such as DuckDB and DataFusion expect one).
fn extension(format: &flowline_formats::FormatConfig) -> &'static str {
    match format.name() {
        "json" | "debezium-json" | "canal-json" | "maxwell-json" => ".json",
        "csv" => ".csv",
        "avro" => ".avro",
        "protobuf" => ".pb",
        _ => ".parquet",
    }
}
