//! Who may use a listener and how it is reached: bearer tokens, TLS, and the refusal to serve a
//! non-loopback address open.
//!
//! Tokens come from a file (`--auth-file`, or `FLOWLINE_AUTH_FILE`: one token per line, `#`
//! comments) or from `FLOWLINE_AUTH_TOKENS` (separated by commas or white space), never from
//! the command line, where `ps` would show them. A request carries one as
//! `Authorization: Bearer <token>`, or as the password of HTTP basic auth (any user name), for
//! clients that only speak basic auth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use base64::Engine;
use tokio_rustls::rustls;

use crate::ServerError;

/// The environment variable holding tokens.
pub const TOKENS_ENV: &str = "FLOWLINE_AUTH_TOKENS";
/// The environment variable naming a token file.
pub const TOKEN_FILE_ENV: &str = "FLOWLINE_AUTH_FILE";
/// Tokens shorter than this are accepted with a warning: they can be guessed.
const SHORT_TOKEN: usize = 16;

/// The tokens a listener accepts.
pub struct Auth {
    tokens: Vec<Box<[u8]>>,
    /// Where they came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "Auth({} tokens from {})", self.tokens.len(), self.source)
    }
}

impl Auth {
    /// Tokens from `text`: one per line (a file) or separated by commas and white space (the
    /// variable); `#` starts a comment line.
    pub fn parse(text: &str, source: &str) -> Result<Self, ServerError> {
        let tokens: Vec<Box<[u8]>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|t| !t.is_empty())
            .map(|t| t.as_bytes().into())
            .collect();
        if tokens.is_empty() {
            return Err(ServerError::Config(format!(
                "{source} holds no token (one per line; '#' starts a comment)"
            )));
        }
        Ok(Self {
            tokens,
            source: source.to_string(),
        })
    }

    /// The tokens configured for this process: the file `file` (`--auth-file`) or the one
    /// `FLOWLINE_AUTH_FILE` names, plus those in `FLOWLINE_AUTH_TOKENS`; `None` when neither is
    /// set. Warns about tokens that are short and a file others may read.
    pub fn from_env(file: Option<&Path>) -> Result<Option<Self>, ServerError> {
        let file: Option<PathBuf> = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from));
        let mut parts: Vec<Self> = Vec::new();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServerError::Config(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            warn_if_readable_by_others(path);
            parts.push(Self::parse(
                &text,
                &format!("token file {}", path.display()),
            )?);
        }
        if let Ok(text) = std::env::var(TOKENS_ENV) {
            parts.push(Self::parse(&text, TOKENS_ENV)?);
        }
        let Some(mut auth) = parts.pop() else {
            return Ok(None);
        };
        for p in parts {
            auth.tokens.extend(p.tokens);
            auth.source = format!("{} and {}", p.source, auth.source);
        }
        if auth.tokens.iter().any(|t| t.len() < SHORT_TOKEN) {
            eprintln!(
                "flowline: warning: {} holds a token shorter than {SHORT_TOKEN} characters; \
                 use long random ones (e.g. `openssl rand -hex 24`)",
                auth.source
            );
        }
        Ok(Some(auth))
    }

    /// Whether a request's headers carry one of the tokens.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| self.accepted_token(v))
            .is_some()
    }

    /// The token an `Authorization` value carries, if it is one of ours: `Bearer <token>`, or
    /// `Basic` with the token as the password.
    pub fn accepted_token(&self, authorization: &str) -> Option<String> {
        let (scheme, rest) = authorization.trim().split_once(' ')?;
        let rest = rest.trim();
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            rest.as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("basic") {
            // user:password, the password being the token.
            // Padded or not: Go's Flight client (ADBC's) sends it unpadded.
            let lenient = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let d = lenient.decode(rest).ok()?;
            let colon = d.iter().position(|b| *b == b':')?;
            d[colon + 1..].to_vec()
        } else {
            return None;
        };
        self.accepts_token(&token)
            .then(|| String::from_utf8(token).ok())
            .flatten()
    }

    /// Compares with every token in time that does not depend on where they differ.
    pub fn accepts_token(&self, given: &[u8]) -> bool {
        let mut ok = false;
        for t in &self.tokens {
            ok |= constant_time_eq(t, given);
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "flowline: warning: the token file {} may be read by other users (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// Makes ring the process's TLS crypto, for the HTTP clients built without one of their own
/// (`flowline query --connect https://...`, the schema registry client); a no-op when one is
/// set already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS for a listener from PEM files: the certificate chain and its private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate file", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate file", cert, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "certificate file",
            cert,
            &"holds no certificate (PEM 'BEGIN CERTIFICATE')",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key file", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Config(format!("TLS: the certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How every listener of this process is secured.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub auth: Option<Arc<Auth>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The PEM certificate chain and key behind `tls`, for listeners that build their own TLS
    /// (Flight SQL's tonic).
    pub tls_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Serve a non-loopback address without authentication (`--insecure`).
    pub insecure: bool,
}

impl Security {
    /// Refuses an open listener on an address others can reach (checked on the bound address,
    /// so a host name is judged by what it resolved to); warns when tokens would cross the
    /// network in clear text.
    pub fn check_bound(
        &self,
        what: &str,
        addr: &str,
        bound: SocketAddr,
    ) -> Result<(), ServerError> {
        if bound.ip().is_loopback() {
            return Ok(());
        }
        if self.auth.is_none() && !self.insecure {
            return Err(ServerError::Config(format!(
                "refusing to serve {what} on {addr} ({bound}) without authentication: anyone who \
                 reaches it could use it. Configure tokens (--auth-file FILE, or the environment \
                 variables {TOKEN_FILE_ENV} or {TOKENS_ENV}), serve a loopback address, or pass \
                 --insecure to serve it open"
            )));
        }
        if self.auth.is_some() && self.tls.is_none() {
            eprintln!(
                "flowline: warning: {what} on {bound} takes tokens without TLS: they cross the \
                 network in clear text (--tls-cert and --tls-key serve it over TLS)"
            );
        }
        Ok(())
    }

    /// `http` or `https`, for messages.
    pub fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_are_read_from_lines_and_lists_and_checked_in_both_schemes() {
        let auth = Auth::parse(
            "# ops team\n  first-token-0123456789 \n\nsecond,third\n",
            "test",
        )
        .unwrap();
        assert_eq!(auth.tokens.len(), 3);
        assert!(auth.accepts(&headers("Bearer first-token-0123456789")));
        assert!(auth.accepts(&headers("bearer   third")));
        assert!(!auth.accepts(&headers("Bearer thir")));
        assert!(!auth.accepts(&headers("Bearer third2")));
        assert!(!auth.accepts(&headers("Bearer")));
        assert!(!auth.accepts(&headers("Token third")));
        assert!(!auth.accepts(&HeaderMap::new()));
        // Basic: any user, the token as the password.
        let basic = |up: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            )
        };
        assert!(auth.accepts(&headers(&basic("alice:second"))));
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:second");
        assert!(auth.accepts(&headers(&format!("Basic {unpadded}"))));
        assert!(auth.accepts(&headers(&basic(":second"))));
        assert!(!auth.accepts(&headers(&basic("second:wrong"))));
        assert!(!auth.accepts(&headers(&basic("second"))));
        assert!(!auth.accepts(&headers("Basic not-base64!")));
        assert!(format!("{auth:?}").contains("3 tokens"));
        assert!(!format!("{auth:?}").contains("third"));
    }

    #[test]
    fn an_empty_token_source_is_an_error() {
        let e = Auth::parse("# nothing\n\n", "token file t").unwrap_err();
        assert!(e.to_string().contains("token file t holds no token"), "{e}");
    }

    #[test]
    fn an_open_listener_is_refused_off_loopback() {
        let open = Security::default();
        let lo: SocketAddr = "127.0.0.1:9249".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9249".parse().unwrap();
        assert!(open.check_bound("http", "localhost:9249", lo).is_ok());
        let e = open.check_bound("http", "0.0.0.0:9249", any).unwrap_err();
        assert!(e.to_string().contains("without authentication"), "{e}");
        assert!(e.to_string().contains("--insecure"), "{e}");
        let insecure = Security {
            insecure: true,
            ..Security::default()
        };
        assert!(insecure.check_bound("http", "0.0.0.0:9249", any).is_ok());
        let authed = Security {
            auth: Some(Arc::new(Auth::parse("a-long-enough-token-x", "t").unwrap())),
            ..Security::default()
        };
        assert!(authed.check_bound("http", "0.0.0.0:9249", any).is_ok());
    }

    #[test]
    fn tls_files_that_are_missing_or_empty_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let e = tls_config(&cert, &dir.path().join("key.pem")).unwrap_err();
        assert!(e.to_string().contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not pem\n").unwrap();
        let e = tls_config(&cert, &dir.path().join("key.pem")).unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
    }
}
