//! `http`: rows posted to `POST /v1/ingest/{table}`, optionally gzip. A body is what one file of
//! the table's format holds: NDJSON or a JSON array (`json`, the default, and the changelog
//! formats), CSV lines, or a Parquet, Avro or length-delimited protobuf file.
//!
//! ```text
//!  request ─▶ limits (body, depth, rows) ─▶ decode + validate against the table schema
//!          ─▶ append to a shard's write-ahead log (group commit, fsync) ─▶ 2xx
//!  source subtask s ─▶ reads shard s from its checkpointed position ─▶ rows
//! ```
//!
//! A 2xx means: every accepted row is on disk in the write-ahead log (fsynced), and the job
//! will process it exactly once in the committed output of exactly-once sinks, across crashes
//! and restarts, as long as the state directory survives. Requests are spread round-robin over
//! one log per source subtask. Logs are truncated after checkpoints; without checkpointing, a
//! segment is deleted once read (at-least-once after a crash).

mod body;
mod wal;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use flowline_common::limits::BATCH_ROWS_MAX;
use flowline_common::{Counter, OptionSpec, Options};
use flowline_formats::{FileInput, FormatConfig, FormatError};
use flowline_sql::TableDef;

use crate::registry::opt;
use crate::{ConnectorError, Poll, Result, Source, TaskContext};
use body::{json_row_error, split_lines, split_rows};
pub use wal::{Wal, WalReader};

/// Largest request body accepted (after gzip decompression too), unless the table sets less.
pub const BODY_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Deepest JSON nesting accepted in a row.
pub const JSON_DEPTH_MAX_DEFAULT: usize = 64;
/// Most rows accepted in one request.
pub const ROWS_PER_REQUEST_MAX_DEFAULT: usize = 100_000;
/// Bytes acknowledged but not yet read by the pipeline, per log, past which ingest answers 429.
pub const BACKLOG_BYTES_MAX_DEFAULT: u64 = 256 << 20;
/// Bad rows listed in a 400 response (the count is always complete).
const ERRORS_LISTED_MAX: usize = 100;

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "http"),
    OptionSpec::optional(
        "format",
        "what a request body holds (default json: NDJSON lines or one JSON array); any filesystem format",
    ),
    OptionSpec::optional(
        "ingest.ignore-errors",
        "accept the good rows of a request with bad ones, counting the bad (default false: 400)",
    ),
    OptionSpec::optional(
        "ingest.max-body-size",
        "largest request body, also after decompression (default 64mb)",
    ),
    OptionSpec::optional(
        "ingest.max-json-depth",
        "deepest JSON nesting in a row (default 64)",
    ),
    OptionSpec::optional(
        "ingest.max-rows",
        "most rows in one request (default 100000)",
    ),
    OptionSpec::optional(
        "ingest.max-backlog",
        "bytes accepted but not yet read by the pipeline before 429 (default 256mb)",
    ),
];

pub fn validate(table: &TableDef, o: &Options) -> Result<()> {
    format(table, o)?;
    Limits::from_options(table, o).map(|_| ())
}

/// The table's format: `format`, JSON by default.
fn format(table: &TableDef, o: &Options) -> Result<FormatConfig> {
    let parsed = match o.get("format") {
        Some(_) => flowline_formats::format_from_options(o, "format"),
        None => flowline_formats::json::JsonOptions::from_options(o).map(FormatConfig::Json),
    };
    parsed.map_err(|e| ConnectorError::config(&table.name, e.to_string()))
}

#[derive(Clone, Copy)]
struct Limits {
    body: u64,
    depth: usize,
    rows: usize,
    backlog: u64,
    ignore_errors: bool,
}

impl Limits {
    fn from_options(table: &TableDef, o: &Options) -> Result<Self> {
        Ok(Self {
            body: opt(table, o.memory_size("ingest.max-body-size"))?
                .unwrap_or(BODY_BYTES_MAX_DEFAULT),
            depth: opt(table, o.parse("ingest.max-json-depth"))?.unwrap_or(JSON_DEPTH_MAX_DEFAULT),
            rows: opt(table, o.parse("ingest.max-rows"))?.unwrap_or(ROWS_PER_REQUEST_MAX_DEFAULT),
            backlog: opt(table, o.memory_size("ingest.max-backlog"))?
                .unwrap_or(BACKLOG_BYTES_MAX_DEFAULT),
            ignore_errors: opt(table, o.bool("ingest.ignore-errors", false))?,
        })
    }
}

/// An HTTP table of the running job: its schema, limits and one log per source subtask.
pub struct IngestTable {
    name: String,
    /// The physical columns, as bodies are decoded (a changelog format adds the change kind).
    schema: SchemaRef,
    format: FormatConfig,
    limits: Limits,
    /// The logs requests go to, once their first source subtask has restored its position.
    shards: Mutex<Vec<Option<Arc<Wal>>>>,
    /// Every log opened, by subtask (its readers are the subtasks of each pipeline reading it).
    logs: Mutex<Vec<Option<Arc<Wal>>>>,
    next: AtomicUsize,
    accepted: Counter,
    rejected: Counter,
}

/// What an ingest request gets back.
#[derive(Debug)]
pub struct IngestResponse {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub body: serde_json::Value,
}

impl IngestResponse {
    fn error(status: u16, message: String) -> Self {
        Self {
            status,
            retry_after_s: None,
            body: serde_json::json!({ "error": message }),
        }
    }
}

impl IngestTable {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.limits.body
    }

    /// Whether every source subtask has restored its position and opened its log: until then
    /// a request could reach a subtask that is not there yet, so ingest answers 503.
    pub fn is_ready(&self) -> bool {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(Option::is_some)
    }

    /// Validates, logs durably and answers one request.
    pub fn ingest(&self, body: Bytes, gzip: bool) -> IngestResponse {
        let limits = self.limits;
        let too_large = |what: &str| {
            IngestResponse::error(
                413,
                format!(
                    "{what} exceeds 'ingest.max-body-size' = {} bytes",
                    limits.body
                ),
            )
        };
        if body.len() as u64 > limits.body {
            return too_large("the request body");
        }
        let body = if gzip {
            let mut inflated = Vec::new();
            let mut d = flate2::read::GzDecoder::new(&body[..]).take(limits.body + 1);
            if let Err(e) = d.read_to_end(&mut inflated) {
                return IngestResponse::error(400, format!("the body is not valid gzip: {e}"));
            }
            if inflated.len() as u64 > limits.body {
                return too_large("the decompressed body");
            }
            Bytes::from(inflated)
        } else {
            body
        };
        let shard = {
            let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
            let live: Vec<&Arc<Wal>> = shards.iter().flatten().collect();
            if live.is_empty() {
                return IngestResponse {
                    status: 503,
                    retry_after_s: Some(1),
                    body: serde_json::json!({"error": "the pipeline is starting"}),
                };
            }
            live[self.next.fetch_add(1, Ordering::Relaxed) % live.len()].clone()
        };
        if shard.backlog() > limits.backlog {
            return IngestResponse {
                status: 429,
                retry_after_s: Some(1),
                body: serde_json::json!({"error": format!("the pipeline is behind by more than 'ingest.max-backlog' = {} bytes; retry later", limits.backlog)}),
            };
        }
        let Decoded {
            batch,
            rows,
            errors,
            rejected,
        } = match self.decode(body) {
            Ok(d) => d,
            Err(response) => return response,
        };
        let listed = || -> Vec<serde_json::Value> {
            errors
                .iter()
                .take(ERRORS_LISTED_MAX)
                .map(|(row, reason)| serde_json::json!({"row": row, "error": reason}))
                .collect()
        };
        if rejected > 0 && !limits.ignore_errors {
            self.rejected.add(rejected as u64);
            return IngestResponse {
                status: 400,
                retry_after_s: None,
                body: serde_json::json!({"accepted": 0, "rejected": rejected, "errors": listed(),
                    "error": format!("{rejected} of {rows} rows are not valid for table {}; nothing was accepted", self.name)}),
            };
        }
        // Records, not rows: a changelog's update record is two rows.
        let accepted = rows - rejected;
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
            let payload = match encode_ipc(&batch) {
                Ok(p) => p,
                Err(e) => return IngestResponse::error(500, e),
            };
            if let Err(e) = shard.append(payload) {
                return IngestResponse::error(
                    503,
                    format!(
                        "the write-ahead log in {} failed: {e}",
                        shard.dir().display()
                    ),
                );
            }
        }
        self.accepted.add(accepted as u64);
        self.rejected.add(rejected as u64);
        IngestResponse {
            status: 200,
            retry_after_s: None,
            body: serde_json::json!({"accepted": accepted, "rejected": rejected, "errors": listed()}),
        }
    }

    fn too_many_rows(&self, rows: usize) -> IngestResponse {
        IngestResponse::error(
            413,
            format!(
                "the request has {rows} rows; 'ingest.max-rows' = {}",
                self.limits.rows
            ),
        )
    }

    /// The body's good rows as one batch, and the bad ones. Line formats name each bad row;
    /// a body that is not a file of the table's format at all is an error response.
    fn decode(&self, body: Bytes) -> std::result::Result<Decoded, IngestResponse> {
        let internal = |e: &dyn std::fmt::Display| IngestResponse::error(500, e.to_string());
        let mut decoder = match self.format.line_decoder(&self.schema) {
            Ok(Some(d)) => d,
            Ok(None) => return self.decode_file(body),
            Err(e) => return Err(internal(&e)),
        };
        let json = matches!(
            self.format,
            FormatConfig::Json(_) | FormatConfig::Changelog(_)
        );
        let rows = if json {
            split_rows(&body).map_err(|e| IngestResponse::error(400, e))?
        } else {
            split_lines(&body)
        };
        if rows.len() > self.limits.rows {
            return Err(self.too_many_rows(rows.len()));
        }
        let mut errors = Vec::new();
        // The row each line of `text` came from.
        let mut lines_row = Vec::with_capacity(rows.len());
        let mut text = Vec::with_capacity(body.len() + rows.len());
        for (i, row) in rows.iter().enumerate() {
            if json {
                if let Some(reason) = json_row_error(row, self.limits.depth) {
                    errors.push((i, reason));
                    continue;
                }
                // One row per line: a pretty-printed array element's newlines are whitespace.
                text.extend(
                    row.iter()
                        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                );
            } else {
                text.extend_from_slice(row);
            }
            text.push(b'\n');
            lines_row.push(i);
        }
        decoder.skip_bad_lines(true);
        let batch = decoder.decode_chunk(&text).map_err(|e| internal(&e))?;
        errors.extend(
            decoder
                .last_skipped
                .drain(..)
                .map(|e| (lines_row[e.line as usize - 1], e.reason)),
        );
        errors.sort_by_key(|(i, _)| *i);
        Ok(Decoded {
            batch,
            rows: rows.len(),
            rejected: errors.len(),
            errors,
        })
    }

    /// A body holding one file of a whole-batch format (Parquet, Avro, protobuf messages).
    fn decode_file(&self, body: Bytes) -> std::result::Result<Decoded, IngestResponse> {
        let mut format = self.format.clone();
        if let FormatConfig::Protobuf(p) = &mut format {
            p.ignore_parse_errors |= self.limits.ignore_errors;
        }
        let bad = |e: FormatError| {
            IngestResponse::error(
                400,
                format!("the body is not a valid {} file: {e}", format.name()),
            )
        };
        let mut reader = format
            .open_batches(FileInput::Bytes(body), &self.schema, BATCH_ROWS_MAX)
            .map_err(bad)?;
        let (mut batches, mut rows) = (Vec::new(), 0);
        for b in reader.by_ref() {
            let b = b.map_err(bad)?;
            rows += b.num_rows();
            if rows > self.limits.rows {
                return Err(self.too_many_rows(rows));
            }
            batches.push(b);
        }
        let rejected = reader.skipped() as usize;
        let batch = flowline_formats::concat_all(&self.schema, batches)
            .map_err(|e| IngestResponse::error(500, e.to_string()))?;
        Ok(Decoded {
            batch,
            rows: rows + rejected,
            errors: Vec::new(),
            rejected,
        })
    }
}

/// What a request body decoded to.
struct Decoded {
    batch: Option<RecordBatch>,
    /// Records in the body, good and bad.
    rows: usize,
    /// (row index, reason) of the bad rows a line format can name.
    errors: Vec<(usize, String)>,
    /// Bad rows, named or not.
    rejected: usize,
}

fn encode_ipc(batch: &RecordBatch) -> std::result::Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(buf)
}

fn decode_ipc(bytes: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| e.to_string())?;
    r.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

pub fn create_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Source>> {
    let Some(state_dir) = &ctx.state_dir else {
        return Err(ConnectorError::config(&table.name, "the http connector needs a state directory for its write-ahead log (flowline run --state-dir)"));
    };
    let schema = table.physical_schema();
    let format = format(table, o)?;
    let limits = Limits::from_options(table, o)?;
    let dir = state_dir
        .join("wal")
        .join(&table.name)
        .join(ctx.subtask.to_string());
    let ingest = {
        let mut all = ctx.shared.ingest.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter().find(|t| t.name == table.name) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(IngestTable {
                    name: table.name.clone(),
                    schema: schema.clone(),
                    format: format.clone(),
                    limits,
                    shards: Mutex::new(vec![None; ctx.parallelism]),
                    logs: Mutex::new(vec![None; ctx.parallelism]),
                    next: AtomicUsize::new(0),
                    accepted: ctx.counter(
                        "flowline_ingest_rows_accepted_total",
                        "rows accepted by HTTP ingest",
                    ),
                    rejected: ctx.counter(
                        "flowline_ingest_rows_rejected_total",
                        "rows rejected by HTTP ingest",
                    ),
                });
                all.push(t.clone());
                t
            }
        }
    };
    // One log per subtask, shared by every pipeline that reads the table (each with a reader
    // of its own): a request is in each INSERT's input once.
    let wal = {
        let mut logs = ingest.logs.lock().unwrap_or_else(|e| e.into_inner());
        match logs.get(ctx.subtask).cloned().flatten() {
            Some(wal) => wal,
            None => {
                let wal =
                    Arc::new(Wal::open(dir.clone()).map_err(|source| ConnectorError::Io {
                        table: table.name.clone(),
                        path: dir.clone(),
                        source,
                    })?);
                if let Some(slot) = logs.get_mut(ctx.subtask) {
                    *slot = Some(wal.clone());
                }
                wal
            }
        }
    };
    let reader = wal.add_reader();
    let start = wal::segments(&dir)
        .ok()
        .and_then(|s| s.first().copied())
        .unwrap_or(0);
    let mut indices: Vec<usize> =
        projection.map_or_else(|| (0..schema.fields().len()).collect(), <[usize]>::to_vec);
    if format.is_changelog() {
        // A changelog's rows carry their change kind after the columns.
        indices.push(schema.fields().len());
    }
    Ok(Box::new(HttpSource {
        table: table.name.clone(),
        ingest,
        subtask: ctx.subtask,
        reader: WalReader::new(dir, (start, 0)),
        wal,
        reader_id: reader,
        projection: indices,
        registered: false,
        checkpoints: Vec::new(),
        checkpointing: ctx.job.is_some(),
        shared: ctx.shared.clone(),
    }))
}

struct HttpSource {
    table: String,
    ingest: Arc<IngestTable>,
    subtask: usize,
    wal: Arc<Wal>,
    reader: WalReader,
    /// This source's number among the log's readers.
    reader_id: usize,
    projection: Vec<usize>,
    /// The log takes requests once the source has restored its position.
    registered: bool,
    /// Positions of the checkpoints taken, oldest first (trimmed as they complete).
    checkpoints: Vec<wal::Position>,
    checkpointing: bool,
    /// The job's registry of HTTP tables, which this source leaves when it is dropped.
    shared: Arc<crate::job::JobShared>,
}

impl HttpSource {
    fn err(&self, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Io {
            table: self.table.clone(),
            path: self.wal.dir().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl Source for HttpSource {
    fn poll(&mut self) -> Result<Poll> {
        if !self.registered {
            self.registered = true;
            self.ingest.shards.lock().unwrap_or_else(|e| e.into_inner())[self.subtask] =
                Some(self.wal.clone());
        }
        let before = self.reader.position();
        let Some((record, n)) = self
            .reader
            .next(self.wal.durable_end())
            .map_err(|e| self.err(e))?
        else {
            if !self.checkpointing && before.0 > 0 {
                self.wal
                    .truncate_before(self.reader_id, before)
                    .map_err(|e| self.err(e))?;
            }
            return Ok(Poll::Pending(Duration::from_millis(5)));
        };
        self.wal.note_read(self.reader_id, n);
        let batches = decode_ipc(&record).map_err(|e| self.err(e))?;
        let batches = batches
            .iter()
            .map(|b| b.project(&self.projection))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        match batches.len() {
            0 => Ok(Poll::Pending(Duration::ZERO)),
            1 => Ok(Poll::Batch(batches.into_iter().next().expect("one"))),
            _ => Ok(Poll::Batch(arrow::compute::concat_batches(
                &batches[0].schema(),
                &batches,
            )?)),
        }
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let (seg, off) = self.reader.position();
        self.checkpoints.push((seg, off));
        Ok(
            serde_json::to_vec(&serde_json::json!({"segment": seg, "offset": off}))
                .expect("JSON values serialize"),
        )
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(position)
            .map_err(|e| self.err(format!("bad checkpointed position: {e}")))?;
        let pos = (
            v["segment"].as_u64().unwrap_or(0),
            v["offset"].as_u64().unwrap_or(0),
        );
        let first = wal::segments(self.wal.dir())
            .ok()
            .and_then(|s| s.first().copied());
        if first.is_some_and(|f| f > pos.0) {
            return Err(self.err(format!(
                "the write-ahead log no longer holds the checkpointed position (segment {})",
                pos.0
            )));
        }
        self.reader = WalReader::new(self.wal.dir().to_path_buf(), pos);
        Ok(())
    }

    /// Keeps the log back to the position of the checkpoint before the completed one (a
    /// restore may fall back one checkpoint), and drops the rest.
    fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        // Checkpoints complete in order: every snapshot taken so far but the last is complete.
        if self.checkpoints.len() >= 2 {
            let keep_from = self.checkpoints.len() - 2;
            self.checkpoints.drain(..keep_from);
            let oldest = self.checkpoints[0];
            self.wal
                .truncate_before(self.reader_id, oldest)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        let mut all = self.shared.ingest.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|t| t.name != self.table);
    }
}

#[cfg(test)]
mod tests {
    use super::body::json_depth;
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use flowline_common::MetricsRegistry;
    use flowline_sql::script::{parse_script, Statement};

    #[test]
    fn bodies_split_into_rows() {
        assert_eq!(split_rows(b"{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        let rows = split_rows(b" [ {\"a\": [1, 2]}, {\"b\": \"x,]\"} ] ").unwrap();
        assert_eq!(
            rows,
            vec![&b"{\"a\": [1, 2]}"[..], &b"{\"b\": \"x,]\"}"[..]]
        );
        assert!(split_rows(b"[{\"a\":1}").is_err());
        assert_eq!(json_depth(b"{\"a\":{\"b\":[1]},\"c\":\"{{{\"}"), 3);
        assert_eq!(
            split_lines(b"1, a \r\n  \n2,b"),
            vec![&b"1, a "[..], b"2,b"]
        );
    }

    /// An http table `name (id BIGINT, name STRING)` with the options `with`, its running
    /// source and its ingest endpoint.
    struct Endpoint {
        source: Box<dyn Source>,
        ingest: Arc<IngestTable>,
        _dir: tempfile::TempDir,
    }

    impl Endpoint {
        fn new(name: &str, with: &str) -> Self {
            let ddl = format!(
                "CREATE TABLE {name} (id BIGINT, name STRING) WITH ('connector' = 'http'{with})"
            );
            let Statement::CreateTable(table) = parse_script(&ddl).unwrap().remove(0) else {
                panic!("not a table")
            };
            let (_, options) = crate::registry::connector(&table).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let ctx = TaskContext {
                table: name.into(),
                subtask: 0,
                parallelism: 1,
                metrics: MetricsRegistry::new(),
                job: None,
                state_dir: Some(dir.path().into()),
                shared: crate::job::JobShared::new(),
            };
            let mut source = create_source(&table, &options, &ctx, None).unwrap();
            // The first poll opens the log to requests.
            assert!(matches!(source.poll().unwrap(), Poll::Pending(_)));
            let ingest = ctx.shared.ingest_table(name).unwrap();
            Self {
                source,
                ingest,
                _dir: dir,
            }
        }

        fn post(&self, body: impl Into<Bytes>) -> IngestResponse {
            self.ingest.ingest(body.into(), false)
        }

        /// The rows the source reads next.
        fn read(&mut self) -> RecordBatch {
            for _ in 0..100 {
                if let Poll::Batch(b) = self.source.poll().unwrap() {
                    return b;
                }
            }
            panic!("no rows");
        }
    }

    fn ids(b: &RecordBatch) -> Vec<i64> {
        let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        a.iter().map(|v| v.unwrap()).collect()
    }

    fn names(b: &RecordBatch) -> Vec<Option<String>> {
        let a = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn json_bodies_name_each_bad_row_and_accept_nothing() {
        let mut e = Endpoint::new("http_json", "");
        let r = e.post("[{\"id\": 1,\n \"name\": \"a\"}, {\"id\": \"x\"}, 7, {\"id\": 4}]");
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["rejected"], 2);
        assert_eq!(r.body["errors"][0]["row"], 1);
        assert_eq!(r.body["errors"][1]["row"], 2);
        assert_eq!(r.body["errors"][1]["error"], "a row must be a JSON object");
        let r = e.post("{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2}\n");
        assert_eq!(r.status, 200, "{}", r.body);
        let b = e.read();
        assert_eq!(ids(&b), [1, 2]);
        assert_eq!(names(&b), [Some("a".into()), None]);
    }

    #[test]
    fn csv_bodies_are_lines() {
        let mut e = Endpoint::new(
            "http_csv",
            ", 'format' = 'csv', 'ingest.ignore-errors' = 'true'",
        );
        let r = e.post("1,a b \r\nnot a number,x\n\n3,\"c,d\"\n");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["accepted"], 2);
        assert_eq!(r.body["errors"][0]["row"], 1, "{}", r.body);
        let b = e.read();
        assert_eq!(ids(&b), [1, 3]);
        assert_eq!(names(&b), [Some("a b ".into()), Some("c,d".into())]);
    }

    #[test]
    fn changelog_bodies_carry_the_change_kind() {
        let mut e = Endpoint::new("http_debezium", ", 'format' = 'debezium-json'");
        let body = concat!(
            "{\"before\": null, \"after\": {\"id\": 1, \"name\": \"a\"}, \"op\": \"c\"}\n",
            "{\"before\": {\"id\": 1, \"name\": \"a\"}, \"after\": {\"id\": 1, \"name\": \"b\"}, \"op\": \"u\"}\n",
        );
        let r = e.post(body);
        assert_eq!(r.status, 200, "{}", r.body);
        let b = e.read();
        let kinds = flowline_common::changelog::row_kinds(&b).expect("a change kind column");
        let kinds: Vec<_> = (0..b.num_rows()).map(|i| kinds.value(i)).collect();
        use flowline_common::changelog::RowKind;
        assert_eq!(
            kinds,
            [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter].map(|k| k as i8)
        );
        assert_eq!(
            names(&b),
            [Some("a".into()), Some("a".into()), Some("b".into())]
        );
    }

    /// The bytes of a file of `format` holding `batch`.
    fn file_bytes(format: &FormatConfig, batch: &RecordBatch) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let mut w = flowline_formats::create_writer(format, batch.schema(), file).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn binary_bodies_are_files_of_the_format() {
        let proto = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            proto.path(),
            "syntax = \"proto3\"; message Row { optional int64 id = 1; optional string name = 2; }",
        )
        .unwrap();
        let proto_opts = format!(
            ", 'format' = 'protobuf', 'protobuf.message-class-name' = 'Row', 'protobuf.proto-file' = '{}'",
            proto.path().display()
        );
        for (name, with) in [
            ("http_avro", ", 'format' = 'avro'".to_string()),
            ("http_parquet", ", 'format' = 'parquet'".to_string()),
            ("http_protobuf", proto_opts),
        ] {
            let mut e = Endpoint::new(name, &with);
            let batch = RecordBatch::try_new(
                e.ingest.schema.clone(),
                vec![
                    Arc::new(Int64Array::from(vec![5, 6])),
                    Arc::new(StringArray::from(vec![Some("x"), None])),
                ],
            )
            .unwrap();
            let r = e.post(file_bytes(&e.ingest.format, &batch));
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            let b = e.read();
            assert_eq!(ids(&b), [5, 6], "{name}");
            assert_eq!(names(&b), [Some("x".into()), None], "{name}");
            let r = e.post(&b"\x07garbage"[..]);
            assert_eq!(r.status, 400, "{name}: {}", r.body);
            let msg = r.body["error"].as_str().unwrap();
            assert!(msg.contains("is not a valid"), "{name}: {msg}");
        }
    }

    #[test]
    fn formats_are_checked_at_planning_time() {
        let ddl = "CREATE TABLE t (id BIGINT) WITH ('connector' = 'http', 'format' = 'xml')";
        let Statement::CreateTable(table) = parse_script(ddl).unwrap().remove(0) else {
            panic!()
        };
        let e = crate::registry::connector(&table)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unknown format 'xml'") && e.contains("avro"),
            "{e}"
        );
        let ddl = "CREATE TABLE t (id BIGINT) WITH ('connector' = 'http', 'json.fail-on-missing-field' = 'true')";
        let Statement::CreateTable(table) = parse_script(ddl).unwrap().remove(0) else {
            panic!()
        };
        crate::registry::connector(&table).unwrap();
    }
}
