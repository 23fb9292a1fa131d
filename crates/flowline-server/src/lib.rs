//! The HTTP endpoints of a running job: `/metrics` (Prometheus text), `/healthz` (live),
//! `/readyz` (every HTTP table takes rows) and `POST /v1/ingest/{table}` for tables with
//! `'connector' = 'http'`. Every error answer is JSON: `{"error": "what is wrong"}`.
//!
//! With tokens configured ([`security`]) every path, unknown ones included, answers 401 to a
//! request without one of them, before anything else is looked at: an unauthenticated client
//! learns nothing, not even which tables exist.

#[cfg(feature = "flight")]
pub mod flight;
pub mod query;
pub mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::header;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use flowline_common::metrics::process_rss_bytes;
use flowline_common::MetricsRegistry;
use flowline_connectors::job::JobShared;
use security::Security;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// Authentication or TLS set up wrong, or an open listener where it is refused.
    #[error("{0}")]
    Config(String),
}

/// What the server knows of the job: the HTTP tables it declares, and the job's shared state,
/// where its sources register those tables as they start. A declared table is never "not
/// found": until its sources have restored their position and opened their write-ahead logs,
/// ingest answers 503 with `Retry-After` and `/readyz` is not ready.
#[derive(Clone, Default)]
pub struct JobInfo {
    pub ingest_tables: Vec<String>,
    pub shared: Arc<JobShared>,
    /// `POST /v1/query`, when the server answers queries.
    pub query: Option<query::QueryService>,
}

/// How long a client should wait before retrying while the job starts or restores (seconds).
const STARTING_RETRY_AFTER_S: u64 = 1;

/// The endpoints, for the 404 answer.
const ENDPOINTS: &str =
    "GET /metrics, GET /healthz, GET /readyz, POST /v1/ingest/{table}, POST /v1/query";

/// Binds `addr` and serves in the background, as `security` says; returns the bound address
/// (port 0 picks one).
pub async fn serve(
    addr: &str,
    metrics: MetricsRegistry,
    job: JobInfo,
    security: &Security,
) -> Result<SocketAddr, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    security.check_bound("the http listener", addr, local)?;
    let mut app = router(metrics.clone(), job);
    if let Some(auth) = security.auth.clone() {
        let refused = metrics.counter(
            "flowline_auth_failures_total",
            "requests refused for missing or wrong credentials",
            &[("listener", "http")],
        );
        app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ok = auth.accepts(req.headers());
                let refused = refused.clone();
                async move {
                    if ok {
                        return next.run(req).await;
                    }
                    refused.inc();
                    let mut resp = error(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong credentials: send 'Authorization: Bearer <token>'".into(),
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"flowline\""),
                    );
                    resp
                }
            },
        ));
    }
    match security.tls.clone() {
        None => {
            // No Nagle: an answer goes out as headers, then body chunks, and a chunk held back
            // for the client's delayed ACK costs 40 ms.
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("error: http server stopped: {e}");
                }
            });
        }
        Some(tls) => {
            tokio::spawn(serve_tls(listener, app, tls));
        }
    }
    Ok(local)
}

/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections and serves HTTP/1.1 on each.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("flowline: warning: http listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that fails the handshake (plain HTTP, an untrusted certificate) is
            // simply disconnected.
            let Ok(Ok(stream)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn router(metrics: MetricsRegistry, job: JobInfo) -> Router {
    let rss = metrics.gauge(
        "flowline_process_rss_bytes",
        "resident set size of the process",
        &[],
    );
    let job = Arc::new(job);
    let ready_job = job.clone();
    let query = job.query.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let rss = rss.clone();
                async move {
                    rss.set(process_rss_bytes());
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                        .into_response()
                }
            }),
        )
        // Live: the process answers. Ready: every HTTP table takes rows.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || readyz(ready_job.clone())))
        .route(
            "/v1/query",
            post(move |headers, body| query_endpoint(query.clone(), headers, body))
                .layer(DefaultBodyLimit::max(query::MAX_SQL_BYTES)),
        )
        .route(
            "/v1/ingest/{table}",
            // The body is read by the handler, against the table's own 'ingest.max-body-size'.
            post(move |table, headers, body| ingest(job.clone(), table, headers, body))
                .layer(DefaultBodyLimit::disable()),
        )
        .fallback(|method: Method, uri: Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint {method} {}; the endpoints are {ENDPOINTS}",
                    uri.path()
                ),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            // axum adds the `Allow` header with the methods the path takes.
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} does not take {method}; the endpoints are {ENDPOINTS}",
                    uri.path()
                ),
            )
        })
}

async fn query_endpoint(
    service: Option<query::QueryService>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let Some(service) = service else {
        return error(
            StatusCode::NOT_FOUND,
            "this server answers no queries".into(),
        );
    };
    let sql = match query::sql_of(&headers, &body) {
        Ok(sql) => sql,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match query::answer(&service, &headers, sql).await {
        Ok(resp) => resp,
        Err((status, m)) => {
            let mut resp = error(status, m);
            if status == StatusCode::TOO_MANY_REQUESTS {
                retry_after(&mut resp, 1);
            }
            resp
        }
    }
}

async fn readyz(job: Arc<JobInfo>) -> axum::response::Response {
    let waiting: Vec<&String> = job
        .ingest_tables
        .iter()
        .filter(|t| !job.shared.ingest_table(t).is_some_and(|t| t.is_ready()))
        .collect();
    if waiting.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let names: Vec<&str> = waiting.iter().map(|s| s.as_str()).collect();
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the job is starting: http tables not yet taking rows: [{}]",
            names.join(", ")
        ),
    );
    retry_after(&mut resp, STARTING_RETRY_AFTER_S);
    resp
}

/// Content codings a request body may have.
enum Coding {
    Identity,
    Gzip,
}

fn coding(headers: &HeaderMap) -> Result<Coding, String> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Coding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim();
    if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
        Ok(Coding::Gzip)
    } else if v.is_empty() || v.eq_ignore_ascii_case("identity") {
        Ok(Coding::Identity)
    } else {
        Err(format!(
            "Content-Encoding '{v}' is not supported; send the body as is or with 'gzip'"
        ))
    }
}

async fn ingest(
    job: Arc<JobInfo>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let Some(t) = job.shared.ingest_table(&table).filter(|t| t.is_ready()) else {
        if job.ingest_tables.contains(&table) {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("table '{table}' is not taking rows yet: the job is starting or restoring from a checkpoint; retry"),
            );
            retry_after(&mut resp, STARTING_RETRY_AFTER_S);
            return resp;
        }
        let msg = format!(
            "no table '{table}' with 'connector' = 'http' in the running pipeline; http tables: [{}]",
            job.ingest_tables.join(", ")
        );
        return error(StatusCode::NOT_FOUND, msg);
    };
    let gzip = match coding(&headers) {
        Ok(c) => matches!(c, Coding::Gzip),
        Err(msg) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    let limit = t.max_body_bytes();
    let body = match axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).await
    {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body exceeds 'ingest.max-body-size' = {limit} bytes of table '{table}'"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            };
        }
    };
    // Decoding and the fsync wait are blocking work.
    let r = match tokio::task::spawn_blocking(move || t.ingest(body, gzip)).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("ingest failed (a bug): {e}"),
            )
        }
    };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json(status, &r.body);
    if let Some(s) = r.retry_after_s {
        retry_after(&mut resp, s);
    }
    resp
}

fn retry_after(resp: &mut axum::response::Response, seconds: u64) {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

/// Every error answer has the ingest errors' shape: `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> axum::response::Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, v: &serde_json::Value) -> axum::response::Response {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
