use std::fmt;

/// A SQL error that points at the script: 1-based line and column of the offending token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
}

impl SqlError {
    pub fn new(message: impl Into<String>, line: u64, column: u64) -> Self {
        Self {
            message: message.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "SQL error at line {}, column {}: {}",
                self.line, self.column, self.message
            )
        } else {
            write!(f, "SQL error: {}", self.message)
        }
    }
}

impl std::error::Error for SqlError {}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;
