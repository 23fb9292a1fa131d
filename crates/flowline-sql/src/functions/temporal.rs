//! Markers of a temporal join (`JOIN t FOR SYSTEM_TIME AS OF probe.time`).
//!
//! DataFusion has no temporal join, so the planner rewrites `FOR SYSTEM_TIME AS OF` into a
//! regular join whose ON condition also holds one of these calls, over a column of each input:
//! the probe side's time and the versioned side's time attribute (or, for a lookup join, any of
//! its columns). A call over both inputs stays in the join's condition through DataFusion's
//! optimiser, and keeps the columns it names; streaming lowering takes it out and plans the
//! temporal join. Evaluated (as a batch query does), a marker is TRUE: a lookup join over a
//! table that does not change is exactly a regular join.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::ScalarUDF;

use super::{immutable, udf};

/// `__flowline_lookup(probe_time, table_column)`: join the table as it is when the row is
/// processed (a lookup join).
pub const LOOKUP: &str = "__flowline_lookup";
/// `__flowline_versioned(probe_time, version_time)`: join the version valid at the probe row's
/// event time (an event-time temporal join).
pub const VERSIONED: &str = "__flowline_versioned";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(LOOKUP, immutable(&[2]), boolean, always),
        udf(VERSIONED, immutable(&[2]), boolean, always),
    ]
}

fn boolean(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Boolean)
}

fn always(_: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    Ok(Arc::new(BooleanArray::from(vec![true; rows])))
}
