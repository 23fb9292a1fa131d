//! The Flink SQL dialect: script parsing (DDL with `WITH` options, `WATERMARK`, computed columns,
//! views, `INSERT`, statement sets, `SET`), Flink type names mapped to Arrow, and the Flink
//! scalar functions that DataFusion lacks or names differently.
//!
//! ```text
//! script text ──tokenize──▶ split at `;` ──▶ Statement::{CreateTable, CreateView, Insert, Set, Query}
//! ```
//! Queries stay sqlparser ASTs: the planner hands them to DataFusion.

pub mod ddl;
pub mod dialect;
pub mod error;
pub mod functions;
pub mod script;
mod semantics;
pub mod types;
pub mod windows;

pub use datafusion::sql::sqlparser;
pub use ddl::{ColumnDef, ColumnKind, TableDef, WatermarkDef};
pub use error::{Result, SqlError};
pub use script::{parse_script, InsertDef, Statement};
pub use windows::SessionSpec;
