//! What the joins (`join.rs`, `interval_join.rs`, `temporal_join.rs`) share: join keys in
//! Arrow's row format, stored rows turned back into columns, and the rest of the ON condition
//! evaluated over candidate pairs.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;

/// Candidate pairs, for the ON condition: both inputs' columns, all nullable (an outer join
/// pads with NULLs).
pub(crate) fn pairs_schema(left: &Schema, right: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        left.fields()
            .iter()
            .chain(right.fields())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// The key rows of `data`, and which rows have a NULL in their key (they never match).
pub(crate) fn eval_keys(
    keys: &[Arc<dyn PhysicalExpr>],
    conv: &RowConverter,
    data: &RecordBatch,
) -> Result<(Rows, Option<NullBuffer>)> {
    let cols = key_columns(keys, data)?;
    Ok((conv.convert_columns(&cols)?, key_nulls(&cols)))
}

/// The key columns of `data`.
pub(crate) fn key_columns(
    keys: &[Arc<dyn PhysicalExpr>],
    data: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    let n = data.num_rows();
    keys.iter()
        .map(|k| k.evaluate(data).and_then(|v| v.into_array(n)))
        .collect()
}

/// Which rows have a NULL in their key (`None`: none has).
pub(crate) fn key_nulls(cols: &[ArrayRef]) -> Option<NullBuffer> {
    cols.iter().fold(None, |acc: Option<NullBuffer>, c| {
        NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
    })
}

/// Columns of `schema` from stored rows (Arrow's row format of `conv`); NULL where a row is
/// `None`.
pub(crate) fn stored_columns(
    conv: &RowConverter,
    schema: &Schema,
    rows: &[Option<&[u8]>],
) -> Result<Vec<ArrayRef>> {
    if rows.iter().all(Option::is_none) {
        return Ok(schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows.len()))
            .collect());
    }
    let parser = conv.parser();
    let arrays = conv.convert_rows(rows.iter().flatten().map(|r| parser.parse(r)))?;
    if rows.iter().all(Option::is_some) {
        return Ok(arrays);
    }
    let mut next = 0u32;
    let positions: UInt32Array = rows
        .iter()
        .map(|r| {
            r.map(|_| {
                next += 1;
                next - 1
            })
        })
        .collect();
    Ok(arrays
        .iter()
        .map(|a| take(a, &positions, None))
        .collect::<std::result::Result<_, _>>()?)
}

/// Which pairs satisfy `filter` (NULL is not true); `None` without a filter or pairs.
pub(crate) fn filter_mask(
    filter: Option<&Arc<dyn PhysicalExpr>>,
    pairs: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<Option<BooleanArray>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    if rows == 0 {
        return Ok(None);
    }
    let batch = crate::batch_of(pairs, columns, rows)?;
    let mask = filter.evaluate(&batch)?.into_array(rows)?;
    let Some(mask) = mask.as_boolean_opt() else {
        return exec_err!("join: the ON condition is not a boolean expression");
    };
    let values = match mask.nulls() {
        Some(n) => mask.values() & n.inner(),
        None => mask.values().clone(),
    };
    Ok(Some(BooleanArray::new(values, None)))
}
