//! Maps a batch onto a declared schema: columns (and ROW fields) by name, types by cast.

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, StructArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Fields, SchemaRef};
use arrow::error::ArrowError;

/// Returns `batch` with exactly `schema`'s columns. Columns absent from `batch` must be nullable
/// and become NULL; nested ROW fields are matched by name too.
pub fn conform_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?);
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(col) => conform_array(col, f.data_type()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), rows)),
            None => Err(ArrowError::SchemaError(format!(
                "column '{}' is missing and is NOT NULL",
                f.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

fn conform_array(col: &ArrayRef, target: &DataType) -> Result<ArrayRef, ArrowError> {
    if col.data_type() == target {
        return Ok(col.clone());
    }
    if let (DataType::Struct(have), DataType::Struct(want)) = (col.data_type(), target) {
        return conform_struct(col.as_struct(), have, want);
    }
    cast(col, target)
}

fn conform_struct(col: &StructArray, have: &Fields, want: &Fields) -> Result<ArrayRef, ArrowError> {
    let children = want
        .iter()
        .map(|f| match have.iter().position(|h| h.name() == f.name()) {
            Some(i) => conform_array(col.column(i), f.data_type()),
            None => Ok(new_null_array(f.data_type(), col.len())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(StructArray::try_new(
        want.clone(),
        children,
        col.nulls().cloned(),
    )?))
}
