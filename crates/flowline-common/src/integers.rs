//! Java's integer arithmetic where Flink's results follow it.

use std::sync::Arc;

use arrow_array::types::{Int16Type, Int32Type, Int8Type};
use arrow_array::{ArrayRef, Int64Array};
use arrow_schema::DataType;

/// BIGINT values narrowed to TINYINT, SMALLINT or INT by keeping the low bits, as Java's
/// `(int) long` does (Flink's `SUM` over an INT wraps on overflow). `None` for other types.
pub fn wrap_to(wide: &Int64Array, out: &DataType) -> Option<ArrayRef> {
    Some(match out {
        DataType::Int8 => Arc::new(wide.unary::<_, Int8Type>(|v| v as i8)),
        DataType::Int16 => Arc::new(wide.unary::<_, Int16Type>(|v| v as i16)),
        DataType::Int32 => Arc::new(wide.unary::<_, Int32Type>(|v| v as i32)),
        _ => return None,
    })
}
