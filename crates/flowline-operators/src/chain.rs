//! The stateless chain: a sequence of filters and projections fused into one pass per batch.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
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
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
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
                        if e.starts_with(&format!("{}@", field.name())) { field.name().clone() } else { format!("{e} AS {}", field.name()) }
                    })
                    .collect();
                write!(f, "Project({})", items.join(", "))
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
                    let Some(mask) = (mask.data_type() == &DataType::Boolean).then(|| mask.as_boolean().clone()) else {
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
            }
        }
        Ok(Some(batch))
    }
}

impl Operator for StatelessChain {
    fn on_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(self.apply(batch)?.into_iter().collect())
    }
}
