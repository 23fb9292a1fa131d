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
    /// A service outside Flowline failed (a broker, a database, a remote store).
    #[error("table '{table}': {message}")]
    External {
        table: String,
        message: String,
        /// Whether running again may succeed without changing anything.
        retryable: bool,
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

    pub fn external(table: &str, message: impl Into<String>, retryable: bool) -> Self {
        ConnectorError::External {
            table: table.to_string(),
            message: message.into(),
            retryable,
        }
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> flowline_common::fault::Fault {
        use flowline_common::fault::Fault;
        match self {
            ConnectorError::Option { .. }
            | ConnectorError::Config { .. }
            | ConnectorError::Decode { .. } => Fault::User,
            ConnectorError::Format {
                source: FormatError::Registry(_),
                ..
            } => Fault::External { retryable: true },
            ConnectorError::Format { .. } => Fault::User,
            // A file system error: a missing path is the user's, a full disk or an I/O failure
            // is outside Flowline.
            ConnectorError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Fault::User,
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => {
                    Fault::External { retryable: true }
                }
                _ => Fault::External { retryable: false },
            },
            ConnectorError::External { retryable, .. } => Fault::External {
                retryable: *retryable,
            },
            ConnectorError::Arrow(_) => Fault::Internal,
        }
    }
}
