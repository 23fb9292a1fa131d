//! A Confluent schema registry client: writer schemas by id (cached) and registration of the
//! schemas Flowline writes, over the registry's REST API.
//!
//! Calls are rare (once per schema id a job meets) and made from synchronous decoders, so each
//! runs on its own short-lived thread with a current-thread runtime: it works inside and outside
//! a tokio runtime and never blocks one of its workers' reactors.

use std::time::Duration;

/// Attempts per request when the registry cannot be reached or answers 5xx.
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The registry could not be reached or gave an answer Flowline cannot use: outside Flowline.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RegistryError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    pub url: String,
    /// `user:password` for HTTP basic authentication.
    pub basic_auth: Option<String>,
    pub bearer_token: Option<String>,
}

impl RegistryConfig {
    /// The schema (JSON text) registered under `id`.
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let v = self.request(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)?;
        if let Some(t) = v.get("schemaType").and_then(|t| t.as_str()) {
            if t != "AVRO" {
                return Err(RegistryError(format!(
                    "schema id {id} is a {t} schema, not Avro"
                )));
            }
        }
        v.get("schema")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                RegistryError(format!(
                    "the registry's answer for schema id {id} has no 'schema': {v}"
                ))
            })
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{}/versions", encode_path(subject));
        let v = self.request(reqwest::Method::POST, &path, Some(body))?;
        v.get("id")
            .and_then(|i| i.as_u64())
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                RegistryError(format!(
                    "the registry's answer to registering subject '{subject}' has no 'id': {v}"
                ))
            })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("schema registry client: {e}"))?;
                rt.block_on(self.send_with_retries(method, &url, body))
            })
            .join()
            .unwrap_or_else(|_| Err("schema registry client thread panicked".into()))
            .map_err(RegistryError)
        })
    }

    async fn send_with_retries(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("schema registry client for {url}: {e}"))?;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << (2 * attempt))).await;
            }
            let mut req = client
                .request(method.clone(), url)
                .header("Accept", "application/vnd.schemaregistry.v1+json");
            if let Some(b) = &body {
                req = req
                    .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                    .body(b.clone());
            }
            if let Some(user_info) = &self.basic_auth {
                let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
                req = req.basic_auth(user, Some(password));
            }
            if let Some(token) = &self.bearer_token {
                req = req.bearer_auth(token);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("schema registry {url} unreachable: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_server_error() {
                last = format!("schema registry {url} answered {status}: {text}");
                continue;
            }
            if !status.is_success() {
                // The registry explains itself as {"error_code":..,"message":..}.
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or(text);
                return Err(format!(
                    "schema registry {url} answered {status}: {message}"
                ));
            }
            return serde_json::from_str(&text).map_err(|e| {
                format!("schema registry {url} answered with bad JSON ({e}): {text}")
            });
        }
        Err(last)
    }
}

/// Percent-encodes a path segment (subjects may hold any character).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
