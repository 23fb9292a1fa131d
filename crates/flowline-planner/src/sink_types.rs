//! INSERT type checking: the query's columns must be writable to the sink's columns.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use flowline_operators::ChainStep;
use flowline_sql::types::flink_type_name;
use flowline_sql::TableDef;

use crate::{PlanError, Result};

/// The last chain step of an INSERT: cast each query column to its sink column's type, fill
/// columns left out of `INSERT INTO t (cols)` with NULL. Refuses lossy or nonsensical writes.
pub(crate) fn sink_cast_step(
    _ctx: &SessionContext,
    plan: &LogicalPlan,
    sink: &TableDef,
    columns: &[String],
) -> Result<(ChainStep, SchemaRef)> {
    // The sink receives physical columns then persisted metadata columns; an INSERT lists
    // them in declared order.
    let sink_schema = sink.sink_schema();
    let query = plan.schema().as_arrow();
    let names: Vec<String> = sink_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let declared = sink.insert_columns();
    // For each sink column, the query column that feeds it.
    let sources: Vec<Option<usize>> = if columns.is_empty() {
        if query.fields().len() != sink_schema.fields().len() {
            return Err(PlanError::Invalid(format!(
                "INSERT INTO '{}': the query produces {} columns but the sink has {} ({})",
                sink.name,
                query.fields().len(),
                sink_schema.fields().len(),
                declared.join(", ")
            )));
        }
        names
            .iter()
            .map(|n| declared.iter().position(|d| d == n))
            .collect()
    } else {
        if columns.len() != query.fields().len() {
            return Err(PlanError::Invalid(format!(
                "INSERT INTO '{}': {} target columns listed but the query produces {}",
                sink.name,
                columns.len(),
                query.fields().len()
            )));
        }
        for c in columns {
            if !names.contains(c) {
                return Err(PlanError::Invalid(format!(
                    "INSERT INTO '{}': no column '{c}'; columns: {}",
                    sink.name,
                    names.join(", ")
                )));
            }
        }
        names
            .iter()
            .map(|n| columns.iter().position(|c| c == n))
            .collect()
    };
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for (j, (field, src)) in sink_schema.fields().iter().zip(&sources).enumerate() {
        let Some(i) = *src else {
            if !field.is_nullable() {
                return Err(PlanError::Invalid(format!(
                    "INSERT INTO '{}': column '{}' is NOT NULL and must be in the column list",
                    sink.name,
                    field.name()
                )));
            }
            exprs.push(Arc::new(Literal::new(ScalarValue::try_from(
                field.data_type(),
            )?)));
            continue;
        };
        let from = query.field(i).data_type();
        let to = field.data_type();
        if !writable(from, to) {
            return Err(PlanError::Invalid(format!(
                "INSERT INTO '{}': column '{}' (position {}) has type {} but the query's column '{}' has type {}",
                sink.name,
                field.name(),
                j + 1,
                flink_type_name(to),
                query.field(i).name(),
                flink_type_name(from)
            )));
        }
        let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(query.field(i).name(), i));
        exprs.push(if from == to {
            col
        } else {
            Arc::new(CastExpr::new(col, to.clone(), None))
        });
    }
    Ok((
        ChainStep::Project {
            exprs,
            schema: sink_schema.clone(),
        },
        sink_schema,
    ))
}

fn int_rank(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 => 1,
        DataType::Int16 => 2,
        DataType::Int32 => 3,
        DataType::Int64 => 4,
        _ => return None,
    })
}

/// Flink's implicit casts for INSERT: same type, widening numbers, any string/binary length,
/// any timestamp precision (keeping the time zone kind), and nested types field by field.
pub(crate) fn writable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || from.is_null() {
        return true;
    }
    match (from, to) {
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => int_rank(a) <= int_rank(b),
        (a, Float32 | Float64 | Decimal128(..)) if int_rank(a).is_some() => true,
        (Float32, Float64) => true,
        (Decimal128(..), Decimal128(..) | Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Timestamp(_, a), Timestamp(_, b)) => a.is_some() == b.is_some(),
        (Time32(_) | Time64(_), Time32(_) | Time64(_)) => true,
        (List(a), List(b)) => writable(a.data_type(), b.data_type()),
        (Struct(a), Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.name() == y.name() && writable(x.data_type(), y.data_type()))
        }
        (Map(a, _), Map(b, _)) => writable(a.data_type(), b.data_type()),
        _ => false,
    }
}
