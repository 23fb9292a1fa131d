//! Fits batches decoded with a file's, a writer's or a generator's own schema onto the table's
//! schema: columns (and ROW fields) by name, types by cast.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, StructArray};
use arrow_schema::{ArrowError, DataType, Fields, SchemaRef};

use crate::{FormatError, Result};

/// Returns `batch` with exactly `schema`'s columns. Columns absent from `batch` must be
/// nullable and become NULL; nested ROW fields are matched by name too (a missing one is NULL).
pub fn conform_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec());
    }
    let rows = batch.num_rows();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(col) => conform_array(col, f.data_type()).map_err(|e| {
                ArrowError::CastError(format!(
                    "column '{}': cannot read {} as {}: {e}",
                    f.name(),
                    col.data_type(),
                    f.data_type()
                ))
            }),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), rows)),
            None => Err(ArrowError::SchemaError(format!(
                "column '{}' (NOT NULL) is missing from the data (it has {})",
                f.name(),
                batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

fn conform_array(col: &ArrayRef, target: &DataType) -> std::result::Result<ArrayRef, ArrowError> {
    if col.data_type() == target {
        return Ok(col.clone());
    }
    if let (DataType::Struct(have), DataType::Struct(want)) = (col.data_type(), target) {
        return conform_struct(col.as_struct(), have, want);
    }
    arrow_cast::cast(col, target)
}

fn conform_struct(
    col: &StructArray,
    have: &Fields,
    want: &Fields,
) -> std::result::Result<ArrayRef, ArrowError> {
    let children = want
        .iter()
        .map(|f| match have.iter().position(|h| h.name() == f.name()) {
            Some(i) => conform_array(col.column(i), f.data_type()),
            None => Ok(new_null_array(f.data_type(), col.len())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(StructArray::try_new(
        want.clone(),
        children,
        col.nulls().cloned(),
    )?))
}

/// Batches from a reader that yields a file's own schema (Parquet, Avro), fitted onto the
/// table's schema by [`conform_batch`].
pub struct Conformed<I> {
    inner: I,
    schema: SchemaRef,
}

impl<I> Conformed<I> {
    pub(crate) fn new(inner: I, schema: SchemaRef) -> Self {
        Self { inner, schema }
    }
}

impl<I, E> Iterator for Conformed<I>
where
    I: Iterator<Item = std::result::Result<RecordBatch, E>>,
    FormatError: From<E>,
{
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.inner.next()?;
        Some(
            batch
                .map_err(FormatError::from)
                .and_then(|b| conform_batch(&b, &self.schema).map_err(FormatError::Arrow)),
        )
    }
}
