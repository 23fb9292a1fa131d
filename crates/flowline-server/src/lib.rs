//! The HTTP endpoints of a running job: `/metrics` (Prometheus text) and `/healthz`.

use std::net::SocketAddr;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use flowline_common::metrics::process_rss_bytes;
use flowline_common::MetricsRegistry;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// Binds `addr` and serves in the background; returns the bound address (port 0 picks one).
pub async fn serve(addr: &str, metrics: MetricsRegistry) -> Result<SocketAddr, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr: addr.to_string(), source })?;
    let rss = metrics.gauge("flowline_process_rss_bytes", "resident set size of the process", &[]);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let rss = rss.clone();
                async move {
                    rss.set(process_rss_bytes());
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()).into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("error: http server stopped: {e}");
        }
    });
    Ok(local)
}
