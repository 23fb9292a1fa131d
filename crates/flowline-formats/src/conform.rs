//! Fits batches decoded with a file's or a writer's own schema onto the table's schema.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;

use crate::{FormatError, Result};

/// The columns of `schema` taken from `batch` by name and cast to the declared types; a column
/// the batch lacks is NULL if nullable and an error if NOT NULL.
pub fn conform_by_name(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.schema_ref().index_of(f.name()) {
            Ok(i) => {
                let col = batch.column(i);
                if col.data_type() == f.data_type() {
                    Ok(col.clone())
                } else {
                    arrow_cast::cast(col, f.data_type()).map_err(|e| {
                        FormatError::Unsupported(format!(
                            "column '{}': cannot read {} as {}: {e}",
                            f.name(),
                            col.data_type(),
                            f.data_type()
                        ))
                    })
                }
            }
            Err(_) if f.is_nullable() => Ok(arrow_array::new_null_array(f.data_type(), rows)),
            Err(_) => Err(FormatError::Unsupported(format!(
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
        .collect::<Result<_>>()?;
    let opts = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &opts,
    )?)
}
