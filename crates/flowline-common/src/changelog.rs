//! Changelog rows: how an updating result travels.
//!
//! An updating stream is an ordinary batch with one more column at the end, [`ROW_KIND`]
//! (`Int8`), holding each row's change kind with the byte values of Flink's `RowKind`. A stream
//! without that column is append-only: every row is an insert. Operators that update rows they
//! emitted earlier (non-windowed aggregation, ...) add the column; stateless steps carry it
//! through; sinks that accept updates read it.
//!
//! ```text
//!  key  count  _row_kind
//!  a    1      0  (+I)      a group appears
//!  a    1      1  (-U)      its old row is withdrawn ...
//!  a    2      2  (+U)      ... and replaced
//!  a    2      3  (-D)      the group is gone
//! ```

use std::sync::Arc;

use arrow_array::{Array, Int8Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

/// Name of the change-kind column of an updating batch (always its last column).
pub const ROW_KIND: &str = "_row_kind";

/// A row's change kind; the values are Flink's `RowKind` byte values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    pub fn from_i8(v: i8) -> Option<Self> {
        Some(match v {
            0 => Self::Insert,
            1 => Self::UpdateBefore,
            2 => Self::UpdateAfter,
            3 => Self::Delete,
            _ => return None,
        })
    }

    /// Flink's short form: `+I`, `-U`, `+U`, `-D`.
    pub fn short(self) -> &'static str {
        match self {
            Self::Insert => "+I",
            Self::UpdateBefore => "-U",
            Self::UpdateAfter => "+U",
            Self::Delete => "-D",
        }
    }

    /// Whether the row adds to the result (`+I`, `+U`) rather than withdrawing from it.
    pub fn is_addition(self) -> bool {
        matches!(self, Self::Insert | Self::UpdateAfter)
    }
}

/// The field of the change-kind column.
pub fn row_kind_field() -> Field {
    Field::new(ROW_KIND, DataType::Int8, false)
}

/// The schema of an updating stream of `schema`'s rows: its fields, then the change kind.
pub fn with_row_kind(schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(row_kind_field());
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The change-kind column of `batch`, when it is an updating batch.
pub fn row_kinds(batch: &RecordBatch) -> Option<&Int8Array> {
    let schema = batch.schema_ref();
    let last = schema.fields().last()?;
    if last.name() != ROW_KIND {
        return None;
    }
    batch.columns().last()?.as_any().downcast_ref::<Int8Array>()
}

/// `batch` without its change-kind column (the batch itself when it has none).
pub fn strip_row_kind(batch: &RecordBatch) -> RecordBatch {
    if row_kinds(batch).is_none() {
        return batch.clone();
    }
    let mut b = batch.clone();
    b.remove_column(b.num_columns() - 1);
    b
}

/// A change-kind column of `n` copies of `kind`.
pub fn kind_column(kind: RowKind, n: usize) -> Arc<Int8Array> {
    Arc::new(Int8Array::from_value(kind as i8, n))
}
