use std::path::PathBuf;

use flowline_common::OptionError;
use flowline_formats::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A bad `WITH` option (user error).
    #[error("table '{table}': {source}")]
    Option { table: String, source: OptionError },
    #[error("table '{table}': {message}")]
    Config { table: String, message: String },
    /// A record that cannot be decoded (bad input data).
    #[error("table '{table}': cannot parse {path}, line {line}: {reason} (set '{ignore_key}' = 'true' to skip and count bad rows)")]
    Decode {
        table: String,
        path: PathBuf,
        line: u64,
        reason: String,
        ignore_key: String,
    },
    #[error("table '{table}': {path}: {source}")]
    Io {
        table: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("table '{table}': {path}: {source}")]
    Format {
        table: String,
        path: PathBuf,
        source: FormatError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

impl ConnectorError {
    pub fn config(table: &str, message: impl Into<String>) -> Self {
        ConnectorError::Config {
            table: table.to_string(),
            message: message.into(),
        }
    }
}
