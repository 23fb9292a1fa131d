//! `POST /v1/query`: SQL over HTTP for curl users. The body is the SELECT (or JSON
//! `{"sql": "..."}`); the answer streams batch by batch as JSON lines, CSV or an Arrow IPC
//! stream, as the `Accept` header asks. Errors before the first row are JSON answers with a
//! status; an error after rows were sent ends the stream early (the client sees a cut-off body).
//!
//! The server knows nothing of planning: a [`QueryEngine`] answers the SQL. Limits sit here:
//! at most `max_concurrent` queries run (more get 429 with `Retry-After`), each for at most
//! `timeout` and `max_rows` rows; a client that disconnects drops the stream, which cancels its
//! query.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use futures::stream::{BoxStream, StreamExt};

/// A query's answer: its schema, and its batches as they are computed.
pub struct QueryAnswer {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch, QueryError>>,
}

/// Why a query was not answered.
#[derive(Debug)]
pub enum QueryError {
    /// The SQL is wrong: unknown table, bad syntax (400).
    Invalid(String),
    /// It needs more than a limit of the server allows: memory (422).
    OverLimit(String),
    /// It failed while running (500).
    Failed(String),
}

impl QueryError {
    /// As the HTTP status and message the endpoints answer.
    pub fn status(self) -> (StatusCode, String) {
        match self {
            Self::Invalid(m) => (StatusCode::BAD_REQUEST, m),
            Self::OverLimit(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            Self::Failed(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// A table a server serves, for catalog listings.
#[derive(Clone, Debug)]
pub struct TableInfo {
    pub name: String,
    /// `TABLE` or `VIEW`.
    pub kind: &'static str,
    pub schema: SchemaRef,
    pub primary_key: Vec<String>,
}

/// What a query is before it runs: its answer's columns and its parameters' (`$1`, `$2`, ...
/// or `?`; `Null` where the plan leaves a type open).
#[derive(Clone, Debug)]
pub struct QueryShape {
    pub schema: SchemaRef,
    pub parameters: SchemaRef,
}

/// Answers SQL: the planner's long-lived session over the script's tables and files.
pub trait QueryEngine: Send + Sync {
    /// Runs `sql`; `params` (one row: column i is parameter i + 1) fills its placeholders.
    fn query(
        &self,
        sql: String,
        params: Option<RecordBatch>,
    ) -> futures::future::BoxFuture<'static, Result<QueryAnswer, QueryError>>;

    /// Plans `sql` without running it.
    fn describe(
        &self,
        sql: String,
    ) -> futures::future::BoxFuture<'static, Result<QueryShape, QueryError>>;

    /// The tables and views it serves.
    fn tables(&self) -> Vec<TableInfo>;
}

/// Per-query limits of a server.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    pub max_concurrent: usize,
    /// Memory each query may use (the engine's to enforce; operators that can spill do).
    pub memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub max_rows: Option<u64>,
}

impl QueryLimits {
    fn timed_out(&self) -> (StatusCode, String) {
        (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the query ran past the server's limit of {:?} (--query-timeout)",
                self.timeout.unwrap_or_default()
            ),
        )
    }

    /// Whether an answer of `rows` rows so far is within the limit.
    fn check_rows(&self, rows: u64) -> Result<(), (StatusCode, String)> {
        match self.max_rows {
            Some(m) if rows > m => Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the answer has more than {m} rows, the server's limit (--query-max-rows); \
                     add a LIMIT"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 16,
            memory: None,
            timeout: None,
            max_rows: None,
        }
    }
}

/// What the query endpoint needs.
#[derive(Clone)]
pub struct QueryService {
    pub engine: Arc<dyn QueryEngine>,
    pub limits: QueryLimits,
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
}

impl QueryService {
    pub fn new(engine: Arc<dyn QueryEngine>, limits: QueryLimits) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            engine,
            limits,
        }
    }
}

/// The encodings an answer can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    JsonLines,
    Csv,
    ArrowStream,
}

/// The media type of an Arrow IPC stream answer.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Encoding {
    /// The first media type of `Accept` that names one (JSON lines for none, `*/*`).
    pub(crate) fn from_accept(headers: &HeaderMap) -> Result<Self, String> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Self::JsonLines);
        };
        for media in accept.split(',') {
            let media = media
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "application/x-ndjson"
                | "application/jsonl"
                | "application/json"
                | "application/*"
                | "*/*"
                | "" => return Ok(Self::JsonLines),
                "text/csv" | "text/*" => return Ok(Self::Csv),
                ARROW_STREAM => return Ok(Self::ArrowStream),
                _ => {}
            }
        }
        Err(format!(
            "cannot answer as '{accept}'; accepted: application/x-ndjson (JSON lines, the \
             default), text/csv, {ARROW_STREAM}"
        ))
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::JsonLines => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::ArrowStream => ARROW_STREAM,
        }
    }
}

/// Encodes batches one after another in one encoding.
enum Encoder {
    JsonLines,
    Csv { header: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(encoding: Encoding, schema: &SchemaRef) -> Result<Self, String> {
        Ok(match encoding {
            Encoding::JsonLines => Self::JsonLines,
            Encoding::Csv => Self::Csv { header: true },
            Encoding::ArrowStream => Self::Arrow(Box::new(
                arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)
                    .map_err(|e| e.to_string())?,
            )),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let err = |e: arrow::error::ArrowError| e.to_string();
        match self {
            Self::JsonLines => {
                let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
                w.write(batch).map_err(err)?;
                w.finish().map_err(err)?;
                Ok(w.into_inner())
            }
            Self::Csv { header } => {
                let mut out = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(*header)
                        .build(&mut out);
                    w.write(batch).map_err(err)?;
                }
                *header = false;
                Ok(out)
            }
            Self::Arrow(w) => {
                w.write(batch).map_err(err)?;
                Ok(std::mem::take(w.get_mut()))
            }
        }
    }

    /// What ends the answer: the header of an empty CSV answer, the IPC end-of-stream marker.
    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<u8>, String> {
        match self {
            Self::Csv { header: true } => self.batch(&RecordBatch::new_empty(schema.clone())),
            Self::JsonLines | Self::Csv { header: false } => Ok(Vec::new()),
            Self::Arrow(w) => {
                w.finish().map_err(|e| e.to_string())?;
                Ok(std::mem::take(w.get_mut()))
            }
        }
    }
}

/// The SQL of a request body: the text itself, or the `sql` field of a JSON object.
pub(crate) fn sql_of(headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let text = std::str::from_utf8(body).map_err(|_| "the query is not UTF-8 text".to_string())?;
    let sql = if is_json {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("the JSON body is malformed: {e}"))?;
        v.get("sql")
            .and_then(|s| s.as_str())
            .ok_or("the JSON body has no string field 'sql'")?
            .to_string()
    } else {
        text.to_string()
    };
    if sql.trim().is_empty() {
        return Err(
            "the body holds no SQL: POST the SELECT as the body, or {\"sql\": \"...\"} as JSON"
                .into(),
        );
    }
    Ok(sql)
}

/// The largest query text taken.
pub(crate) const MAX_SQL_BYTES: usize = 1 << 20;

/// A query answering under the server's limits: its columns and its batches (the first
/// already computed, so that most errors come before any row is sent). The stream holds the
/// query's slot until it ends or is dropped; it stops with an error past the time or row limit.
pub struct Running {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch, (StatusCode, String)>>,
}

/// Starts `sql` (with `params`) under `service`'s limits; errors as the HTTP status they are.
pub async fn run(
    service: &QueryService,
    sql: String,
    params: Option<RecordBatch>,
) -> Result<Running, (StatusCode, String)> {
    let permit = service.slots.clone().try_acquire_owned().map_err(|_| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} queries are running, the most this server runs at once; retry",
                service.limits.max_concurrent
            ),
        )
    })?;
    let limits = service.limits.clone();
    let deadline = limits.timeout.map(|t| tokio::time::Instant::now() + t);
    let answer = match deadline {
        Some(d) => tokio::time::timeout_at(d, service.engine.query(sql, params))
            .await
            .map_err(|_| limits.timed_out())?,
        None => service.engine.query(sql, params).await,
    }
    .map_err(QueryError::status)?;
    // Fused: an empty answer has ended at the first look, and is asked again.
    let mut batches = answer.batches.fuse().boxed();
    let first = next_batch(&mut batches, deadline, &limits).await?;
    if let Some(b) = &first {
        limits.check_rows(b.num_rows() as u64)?;
    }
    let state = Limited {
        batches,
        pending: first,
        rows: 0,
        limits,
        deadline,
        done: false,
        _permit: permit,
    };
    let batches = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let next = match s.pending.take() {
            Some(b) => Ok(Some(b)),
            None => next_batch(&mut s.batches, s.deadline, &s.limits).await,
        };
        match next {
            Ok(Some(b)) => {
                s.rows += b.num_rows() as u64;
                let item = s.limits.check_rows(s.rows).map(|()| b);
                s.done = item.is_err();
                Some((item, s))
            }
            Ok(None) => None,
            Err(e) => {
                s.done = true;
                Some((Err(e), s))
            }
        }
    });
    Ok(Running {
        schema: answer.schema,
        batches: batches.boxed(),
    })
}

/// A query's answer being read: what is left of it, and its slot among the running queries
/// (given back when the answer ends or the client goes).
struct Limited {
    batches: BoxStream<'static, Result<RecordBatch, QueryError>>,
    pending: Option<RecordBatch>,
    rows: u64,
    limits: QueryLimits,
    deadline: Option<tokio::time::Instant>,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Runs a query for the HTTP endpoint: the answer, or an error answer's status and message.
pub(crate) async fn answer(
    service: &QueryService,
    headers: &HeaderMap,
    sql: String,
) -> Result<axum::response::Response, (StatusCode, String)> {
    let encoding = Encoding::from_accept(headers).map_err(|m| (StatusCode::NOT_ACCEPTABLE, m))?;
    let running = run(service, sql, None).await?;
    let schema = running.schema.clone();
    let mut encoder =
        Encoder::new(encoding, &schema).map_err(|m| (StatusCode::INTERNAL_SERVER_ERROR, m))?;
    let body = running
        .batches
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .map(move |item| match item {
            Some(Ok(b)) => encoder.batch(&b),
            Some(Err((_, m))) => Err(m),
            // The end: the CSV header of an empty answer, the IPC end-of-stream marker.
            None => encoder.finish(&schema),
        })
        // An error ends the answer early: nothing follows it.
        .scan(false, |failed, r| {
            let out = (!*failed).then_some(r.map(Bytes::from).map_err(std::io::Error::other));
            *failed |= matches!(out, Some(Err(_)));
            futures::future::ready(out)
        });
    let mut resp = axum::response::Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    Ok(resp)
}

/// The next non-empty batch, within the deadline.
async fn next_batch(
    batches: &mut BoxStream<'static, Result<RecordBatch, QueryError>>,
    deadline: Option<tokio::time::Instant>,
    limits: &QueryLimits,
) -> Result<Option<RecordBatch>, (StatusCode, String)> {
    loop {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, batches.next())
                .await
                .map_err(|_| limits.timed_out())?,
            None => batches.next().await,
        };
        match next {
            Some(Ok(b)) if b.num_rows() == 0 => continue,
            Some(Ok(b)) => return Ok(Some(b)),
            Some(Err(e)) => return Err(e.status()),
            None => return Ok(None),
        }
    }
}
