//! The HTTP endpoints of a running job: `/metrics` (Prometheus text), `/healthz` and
//! `POST /v1/ingest/{table}` for tables with `'connector' = 'http'`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::header;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use flowline_common::metrics::process_rss_bytes;
use flowline_common::MetricsRegistry;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds `addr` and serves in the background; returns the bound address (port 0 picks one).
pub async fn serve(addr: &str, metrics: MetricsRegistry) -> Result<SocketAddr, ServerError> {
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
    let rss = metrics.gauge(
        "flowline_process_rss_bytes",
        "resident set size of the process",
        &[],
    );
    let app = Router::new()
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/v1/ingest/{table}",
            post(ingest).layer(DefaultBodyLimit::max(
                flowline_connectors::http::BODY_BYTES_MAX_DEFAULT as usize,
            )),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("error: http server stopped: {e}");
        }
    });
    Ok(local)
}

async fn ingest(
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let Some(t) = flowline_connectors::http::ingest_table(&table) else {
        let known = flowline_connectors::http::ingest_tables();
        let msg = format!("no table '{table}' with 'connector' = 'http' in the running pipeline; http tables: [{}]", known.join(", "));
        return json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": msg }));
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    // Decoding and the fsync wait are blocking work.
    let r = match tokio::task::spawn_blocking(move || t.ingest(body, gzip)).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("ingest failed: {e}"),
            )
                .into_response()
        }
    };
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json(status, &r.body);
    if let Some(s) = r.retry_after_s {
        if let Ok(v) = s.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn json(status: StatusCode, v: &serde_json::Value) -> axum::response::Response {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
