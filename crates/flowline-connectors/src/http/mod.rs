//! `http`: rows posted to `POST /v1/ingest/{table}` (NDJSON or a JSON array, optionally gzip).
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

mod wal;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use flowline_common::{Counter, OptionSpec, Options};
use flowline_formats::json::JsonLines;
use flowline_formats::LineFormat;
use flowline_sql::TableDef;

use crate::registry::opt;
use crate::{ConnectorError, Poll, Result, Source, TaskContext};
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
        "json (NDJSON lines or one JSON array per request)",
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
    if let Some(f) = o.get("format").filter(|f| *f != "json") {
        return Err(ConnectorError::config(
            &table.name,
            format!("format '{f}' is not supported by the http connector; valid: json"),
        ));
    }
    Limits::from_options(table, o).map(|_| ())
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
    schema: SchemaRef,
    limits: Limits,
    shards: Mutex<Vec<Option<Arc<Wal>>>>,
    next: AtomicUsize,
    accepted: Counter,
    rejected: Counter,
}

fn tables() -> &'static Mutex<Vec<Arc<IngestTable>>> {
    static TABLES: OnceLock<Mutex<Vec<Arc<IngestTable>>>> = OnceLock::new();
    TABLES.get_or_init(|| Mutex::new(Vec::new()))
}

/// The HTTP table `name` of the running job, if it has one.
pub fn ingest_table(name: &str) -> Option<Arc<IngestTable>> {
    tables()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|t| t.name == name)
        .cloned()
}

/// Names of the HTTP tables of the running job.
pub fn ingest_tables() -> Vec<String> {
    tables()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|t| t.name.clone())
        .collect()
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
    pub fn max_body_bytes(&self) -> u64 {
        self.limits.body
    }

    /// Validates, logs durably and answers one request.
    pub fn ingest(&self, body: &[u8], gzip: bool) -> IngestResponse {
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
        let mut inflated;
        let mut body = body;
        if gzip {
            inflated = Vec::new();
            let mut d = flate2::read::GzDecoder::new(body).take(limits.body + 1);
            if let Err(e) = d.read_to_end(&mut inflated) {
                return IngestResponse::error(400, format!("the body is not valid gzip: {e}"));
            }
            if inflated.len() as u64 > limits.body {
                return too_large("the decompressed body");
            }
            body = &inflated;
        }
        let lines = match split_rows(body) {
            Ok(l) => l,
            Err(e) => return IngestResponse::error(400, e),
        };
        if lines.len() > limits.rows {
            return IngestResponse::error(
                413,
                format!(
                    "the request has {} rows; 'ingest.max-rows' = {}",
                    lines.len(),
                    limits.rows
                ),
            );
        }
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
        let (batch, errors) = match self.decode(&lines, limits.depth) {
            Ok(r) => r,
            Err(e) => return IngestResponse::error(500, e),
        };
        let rejected = errors.len();
        if rejected > 0 && !limits.ignore_errors {
            self.rejected.add(rejected as u64);
            let listed: Vec<serde_json::Value> = errors
                .iter()
                .take(ERRORS_LISTED_MAX)
                .map(|(row, reason)| serde_json::json!({"row": row, "error": reason}))
                .collect();
            return IngestResponse {
                status: 400,
                retry_after_s: None,
                body: serde_json::json!({"accepted": 0, "rejected": rejected, "errors": listed,
                    "error": format!("{rejected} of {} rows are not valid for table {}; nothing was accepted", lines.len(), self.name)}),
            };
        }
        let accepted = batch.as_ref().map_or(0, |b| b.num_rows());
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
        let listed: Vec<serde_json::Value> = errors
            .iter()
            .take(ERRORS_LISTED_MAX)
            .map(|(row, reason)| serde_json::json!({"row": row, "error": reason}))
            .collect();
        IngestResponse {
            status: 200,
            retry_after_s: None,
            body: serde_json::json!({"accepted": accepted, "rejected": rejected, "errors": listed}),
        }
    }

    /// The good rows as one batch, and (row index, reason) for each bad one.
    fn decode(
        &self,
        lines: &[&[u8]],
        depth_max: usize,
    ) -> std::result::Result<(Option<RecordBatch>, Vec<(usize, String)>), String> {
        let mut errors = Vec::new();
        let mut good: Vec<&[u8]> = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            match json_depth(l) {
                d if d > depth_max => errors.push((
                    i,
                    format!("nesting depth {d} exceeds 'ingest.max-json-depth' = {depth_max}"),
                )),
                _ if !l.trim_ascii_start().starts_with(b"{") => {
                    errors.push((i, "a row must be a JSON object".to_string()))
                }
                _ => good.push(l),
            }
        }
        let options = flowline_formats::json::JsonOptions::default();
        let mut decoder =
            JsonLines::new(self.schema.clone(), &options).map_err(|e| e.to_string())?;
        let joined = join_lines(&good);
        if errors.is_empty() {
            if let Ok(b) = decode_all(&mut decoder, &joined) {
                return Ok((b, errors));
            }
        }
        // Slow path: row by row, to name every bad row.
        let mut batches = Vec::new();
        let good_idx: Vec<usize> = (0..lines.len())
            .filter(|i| !errors.iter().any(|(e, _)| e == i))
            .collect();
        for (i, l) in good_idx.into_iter().zip(good) {
            let mut one =
                JsonLines::new(self.schema.clone(), &options).map_err(|e| e.to_string())?;
            let mut line = l.to_vec();
            line.push(b'\n');
            match decode_all(&mut one, &line) {
                Ok(Some(b)) => batches.push(b),
                Ok(None) => {}
                Err(e) => errors.push((i, e)),
            }
        }
        errors.sort_by_key(|(i, _)| *i);
        let batch = if batches.is_empty() {
            None
        } else {
            Some(
                arrow::compute::concat_batches(&self.schema, &batches)
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok((batch, errors))
    }
}

fn decode_all(d: &mut JsonLines, bytes: &[u8]) -> std::result::Result<Option<RecordBatch>, String> {
    d.decode(bytes)?;
    d.flush()
}

fn join_lines(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// The rows of a body: NDJSON lines, or the elements of one JSON array.
fn split_rows(body: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let trimmed = body.trim_ascii();
    if trimmed.starts_with(b"[") {
        return split_array(trimmed);
    }
    Ok(body
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Calls `f(index, byte)` for every `[`, `]`, `{`, `}` and `,` outside JSON strings.
fn scan_structure(
    bytes: &[u8],
    mut f: impl FnMut(usize, u8) -> std::result::Result<(), String>,
) -> std::result::Result<bool, String> {
    let (mut in_str, mut esc) = (false, false);
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b']' | b'{' | b'}' | b',' => f(i, c)?,
            _ => {}
        }
    }
    Ok(!in_str)
}

/// The top-level elements of a JSON array.
fn split_array(a: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 1usize);
    let closed = scan_structure(a, |i, c| {
        match c {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("the JSON array is malformed (unbalanced brackets)")?;
                if depth == 0 {
                    let last = a[start..i].trim_ascii();
                    if !last.is_empty() {
                        out.push(last);
                    }
                    if i + 1 != a.len() {
                        return Err("the body has text after its JSON array".into());
                    }
                }
            }
            _ if depth == 1 => {
                out.push(a[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    if depth != 0 || !closed {
        return Err("the JSON array is not closed".into());
    }
    Ok(out)
}

/// Deepest nesting of arrays and objects in `l`.
fn json_depth(l: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let _ = scan_structure(l, |_, c| {
        match c {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        Ok(())
    });
    max
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

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
    let limits = Limits::from_options(table, o)?;
    let dir = state_dir
        .join("wal")
        .join(&table.name)
        .join(ctx.subtask.to_string());
    let wal = Arc::new(Wal::open(dir.clone()).map_err(|source| ConnectorError::Io {
        table: table.name.clone(),
        path: dir.clone(),
        source,
    })?);
    let start = wal::segments(&dir)
        .ok()
        .and_then(|s| s.first().copied())
        .unwrap_or(0);
    let ingest = {
        let mut all = tables().lock().unwrap_or_else(|e| e.into_inner());
        let t = match all.iter().find(|t| t.name == table.name) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(IngestTable {
                    name: table.name.clone(),
                    schema: schema.clone(),
                    limits,
                    shards: Mutex::new(vec![None; ctx.parallelism]),
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
        };
        t.clone()
    };
    let indices: Vec<usize> =
        projection.map_or_else(|| (0..schema.fields().len()).collect(), <[usize]>::to_vec);
    Ok(Box::new(HttpSource {
        table: table.name.clone(),
        ingest,
        subtask: ctx.subtask,
        reader: WalReader::new(dir, (start, 0)),
        wal,
        projection: indices,
        registered: false,
        checkpoints: Vec::new(),
        checkpointing: ctx.job.is_some(),
    }))
}

struct HttpSource {
    table: String,
    ingest: Arc<IngestTable>,
    subtask: usize,
    wal: Arc<Wal>,
    reader: WalReader,
    projection: Vec<usize>,
    /// The log takes requests once the source has restored its position.
    registered: bool,
    /// Positions of the checkpoints taken, oldest first (trimmed as they complete).
    checkpoints: Vec<wal::Position>,
    checkpointing: bool,
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
                self.wal.truncate_before(before).map_err(|e| self.err(e))?;
            }
            return Ok(Poll::Pending(Duration::from_millis(5)));
        };
        self.wal.note_read(n);
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
            self.wal.truncate_before(oldest).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        let mut all = tables().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|t| t.name != self.table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
