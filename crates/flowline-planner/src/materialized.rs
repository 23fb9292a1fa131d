//! A materialized table as a batch query sees it: the job's table as of its last completed
//! checkpoint ([`Materialized::snapshot`]), scanned one partition per subtask of the job, or
//! read by a point lookup when the query fixes every primary key column.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use flowline_operators::materialize::{Materialized, Snapshot};

#[derive(Debug)]
pub struct MaterializedTable {
    pub table: Arc<Materialized>,
}

#[async_trait]
impl TableProvider for MaterializedTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Seen for point lookups; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let snapshot = Arc::new(self.table.snapshot()?);
        if let Some(key) = self.key_values(filters)? {
            let rows = snapshot.lookup(&key)?.into_iter().collect::<Vec<_>>();
            return MemorySourceConfig::try_new_exec(&[rows], schema, projection.cloned())
                .map(|e| e as _);
        }
        let parts: Vec<Arc<dyn PartitionStream>> = (0..snapshot.partitions().max(1))
            .map(|part| {
                Arc::new(SnapshotPart {
                    snapshot: snapshot.clone(),
                    part,
                    schema: schema.clone(),
                }) as _
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            schema.clone(),
            parts,
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

impl MaterializedTable {
    /// The primary key's values when `filters` fix each of its columns to a literal (`k = 1`),
    /// each as a one-row array of the column's type.
    fn key_values(&self, filters: &[Expr]) -> Result<Option<Vec<ArrayRef>>> {
        let t = &self.table;
        if t.key.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(t.key.len());
        for &c in &t.key {
            let field = t.schema.field(c);
            let value = filters.iter().find_map(|f| match f {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) => match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(col), Expr::Literal(v, _))
                    | (Expr::Literal(v, _), Expr::Column(col))
                        if col.name == *field.name() =>
                    {
                        Some(v.clone())
                    }
                    _ => None,
                },
                _ => None,
            });
            let Some(value) = value else {
                return Ok(None);
            };
            // A literal that does not fit the column's type cannot be a key: scan (and
            // let the filter decide) rather than fail.
            match value.cast_to(field.data_type()) {
                Ok(v) if !v.is_null() => out.push(v.to_array_of_size(1)?),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// One subtask's part of a snapshot, as a stream of batches.
struct SnapshotPart {
    snapshot: Arc<Snapshot>,
    part: usize,
    schema: SchemaRef,
}

impl std::fmt::Debug for SnapshotPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotPart({})", self.part)
    }
}

impl PartitionStream for SnapshotPart {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .snapshot
            .batches(self.part, ctx.session_config().batch_size());
        let stream: futures::stream::BoxStream<'static, Result<_>> = match batches {
            Ok(it) => Box::pin(futures::stream::iter(it)),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        };
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}
