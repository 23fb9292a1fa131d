//! The stateless chain: a sequence of filters and projections fused into one pass per batch.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{exec_err, Result};
use datafusion::physical_expr::PhysicalExpr;

use crate::Operator;

/// One step of a stateless chain.
#[derive(Clone)]
pub enum ChainStep {
    /// Keep rows where the predicate is true (NULL counts as false).
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute the output columns of `schema` from the input batch.
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// One output row per element of the list column `list` (a NULL or empty list gives none,
    /// or one NULL row with `preserve_nulls`); output column `i` is the flattened list when
    /// `sources[i] == list`, else input column `sources[i]` repeated.
    Unnest {
        list: usize,
        sources: Vec<usize>,
        preserve_nulls: bool,
        schema: SchemaRef,
    },
}

impl fmt::Debug for ChainStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainStep::Filter(p) => write!(f, "Filter({p})"),
            ChainStep::Project { exprs, schema } => {
                let items: Vec<String> = exprs
                    .iter()
                    .zip(schema.fields())
                    .map(|(e, field)| {
                        let e = e.to_string();
                        if e.starts_with(&format!("{}@", field.name())) {
                            field.name().clone()
                        } else {
                            format!("{e} AS {}", field.name())
                        }
                    })
                    .collect();
                write!(f, "Project({})", items.join(", "))
            }
            ChainStep::Unnest {
                list,
                schema,
                sources,
                ..
            } => {
                let out = sources
                    .iter()
                    .position(|s| s == list)
                    .map_or("?".to_string(), |i| schema.field(i).name().clone());
                write!(f, "Unnest(#{list} AS {out})")
            }
        }
    }
}

/// Filters and projections applied in order, on whole batches, in the task that produced them.
#[derive(Clone, Debug, Default)]
pub struct StatelessChain {
    pub steps: Vec<ChainStep>,
}

impl StatelessChain {
    pub fn new(steps: Vec<ChainStep>) -> Self {
        Self { steps }
    }

    /// Runs the chain; `None` when every row was filtered out.
    pub fn apply(&self, mut batch: RecordBatch) -> Result<Option<RecordBatch>> {
        for step in &self.steps {
            match step {
                ChainStep::Filter(predicate) => {
                    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let Some(mask) =
                        (mask.data_type() == &DataType::Boolean).then(|| mask.as_boolean().clone())
                    else {
                        return exec_err!("filter predicate {predicate} is not BOOLEAN");
                    };
                    if mask.true_count() == 0 {
                        return Ok(None);
                    }
                    if mask.true_count() < batch.num_rows() {
                        batch = filter_record_batch(&batch, &mask)?;
                    }
                }
                ChainStep::Project { exprs, schema } => {
                    let rows = batch.num_rows();
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
                        .collect::<Result<Vec<ArrayRef>>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(rows));
                    batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                }
                ChainStep::Unnest {
                    list,
                    sources,
                    preserve_nulls,
                    schema,
                } => {
                    batch = unnest(&batch, *list, sources, *preserve_nulls, schema)?;
                    if batch.num_rows() == 0 {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(batch))
    }
}

fn unnest(
    batch: &RecordBatch,
    list: usize,
    sources: &[usize],
    preserve_nulls: bool,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let Some(lists) = batch.column(list).as_list_opt::<i32>() else {
        return exec_err!(
            "unnest: column {list} is not a list but {}",
            batch.column(list).data_type()
        );
    };
    let offsets = lists.value_offsets();
    let mut rows: Vec<u32> = Vec::with_capacity(lists.values().len());
    let mut values: Vec<Option<u32>> = Vec::with_capacity(lists.values().len());
    for i in 0..lists.len() {
        let (from, to) = (offsets[i] as u32, offsets[i + 1] as u32);
        if lists.is_null(i) || from == to {
            if preserve_nulls && lists.is_null(i) {
                rows.push(i as u32);
                values.push(None);
            }
            continue;
        }
        for v in from..to {
            rows.push(i as u32);
            values.push(Some(v));
        }
    }
    let (rows, values) = (UInt32Array::from(rows), UInt32Array::from(values));
    let columns = sources
        .iter()
        .map(|s| {
            if *s == list {
                take(lists.values(), &values, None)
            } else {
                take(batch.column(*s), &rows, None)
            }
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

impl Operator for StatelessChain {
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }
    fn on_batch(&mut self, _input: usize, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(self.apply(batch)?.into_iter().collect())
    }
}
