//! Declared tables read when a query runs (`flowline query` and the query server): each scan
//! sees what the table holds at that moment, so a long-lived session over a lake table that a
//! job keeps writing answers with its committed files of now.
//!
//! Parquet tables on the filesystem are scans of DataFusion's own Parquet reader over the
//! table's committed files, listed by the sink's rules (hidden in-progress files are not the
//! table's yet; `k=v` directories give partition values, `%XX`-unescaped, the default name
//! meaning NULL): files are read in parallel, row groups pruned by the query's filters (pushed
//! into the scan by DataFusion's physical optimizer), each file's statistics given to the plan,
//! and their footers cached by the session between queries (DataFusion's file metadata cache, keyed
//! by path, size and modification time). Every other readable table is read to its end through
//! its connector at each scan.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::object_store::path::Path as StorePath;
use datafusion::object_store::ObjectMeta;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use flowline_common::Options;
use flowline_connectors::ConnectorFactory;
use flowline_sql::TableDef;

/// A declared, readable table, read at each scan.
pub struct LiveTable {
    def: TableDef,
    factory: &'static ConnectorFactory,
    options: Options,
    /// The table's physical columns, in declared order.
    schema: SchemaRef,
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LiveTable({}, connector {})",
            self.def.name, self.factory.name
        )
    }
}

impl LiveTable {
    pub fn new(def: &TableDef, factory: &'static ConnectorFactory, options: &Options) -> Self {
        Self {
            schema: def.source_schema(),
            def: def.clone(),
            factory,
            options: options.clone(),
        }
    }

    /// Whether scans read Parquet files with DataFusion's reader.
    fn is_parquet_lake(&self) -> bool {
        self.factory.name == "filesystem"
            && self
                .options
                .get("format")
                .is_some_and(|f| f.eq_ignore_ascii_case("parquet"))
    }

    async fn scan_parquet(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (def, options) = (self.def.clone(), self.options.clone());
        let files = tokio::task::spawn_blocking(move || {
            flowline_connectors::filesystem::lake_files(&def, &options)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let projected = |p: Option<&Vec<usize>>| -> Result<SchemaRef> {
            Ok(match p {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            })
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected(projection)?)));
        }
        // The scan's columns: the files' (declared order, partition columns left out), then
        // the partition columns (PARTITIONED BY order); `order[i]` is where declared column i is.
        let is_partition = |name: &str| self.def.partitioned_by.iter().any(|p| p == name);
        let file_fields: Vec<Arc<Field>> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect();
        let partition_fields: Vec<Arc<Field>> = self
            .def
            .partitioned_by
            .iter()
            .map(|p| Ok(Arc::new(self.schema.field_with_name(p)?.clone())))
            .collect::<Result<_>>()?;
        let scan_names: Vec<&String> = file_fields
            .iter()
            .chain(&partition_fields)
            .map(|f| f.name())
            .collect();
        let order: Vec<usize> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                scan_names
                    .iter()
                    .position(|n| *n == f.name())
                    .expect("a column")
            })
            .collect();
        let format = ParquetFormat::default();
        let file_schema = Arc::new(Schema::new(file_fields));
        // Each file's row count and column bounds from its footer (cached by the session
        // between queries, as DataFusion's own listing tables do): they choose a join's build
        // side and answer COUNT(*) and MIN/MAX without a scan.
        let store = match state.config().collect_statistics() {
            true => Some(
                state
                    .runtime_env()
                    .object_store(ObjectStoreUrl::local_filesystem())?,
            ),
            false => None,
        };
        let mut partitioned = Vec::with_capacity(files.len());
        for f in files {
            let values = partition_fields
                .iter()
                .map(|field| {
                    let raw = f
                        .partition
                        .iter()
                        .find(|(k, _)| k == field.name())
                        .and_then(|(_, v)| v.as_deref());
                    match raw {
                        None => ScalarValue::try_from(field.data_type()),
                        Some(v) => ScalarValue::try_from_string(v.to_string(), field.data_type()),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let location = StorePath::from_absolute_path(&f.path)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let meta = ObjectMeta {
                location,
                last_modified: f.modified.into(),
                size: f.size,
                e_tag: None,
                version: None,
            };
            let mut file = PartitionedFile::new_from_meta(meta).with_partition_values(values);
            if let Some(store) = &store {
                let stats = format
                    .infer_stats(state, store, file_schema.clone(), &file.object_meta)
                    .await?;
                file = file.with_statistics(Arc::new(stats));
            }
            partitioned.push(file);
        }
        // As many groups as the session runs partitions, files dealt round robin.
        let groups = state
            .config()
            .target_partitions()
            .max(1)
            .min(partitioned.len());
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, f) in partitioned.into_iter().enumerate() {
            file_groups[i % groups].push(f);
        }
        let table_schema = TableSchema::builder(file_schema)
            .with_table_partition_cols(partition_fields)
            .build();
        let statistics = match store {
            Some(_) => datafusion::common::Statistics::try_merge_iter(
                file_groups
                    .iter()
                    .flatten()
                    .filter_map(|f| f.statistics.as_deref()),
                table_schema.table_schema(),
            )?,
            None => datafusion::common::Statistics::new_unknown(table_schema.table_schema()),
        };
        let indices: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| order[*i]).collect(),
            None => order,
        };
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::local_filesystem(),
            format.file_source(table_schema),
        )
        .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
        .with_statistics(statistics)
        .with_projection_indices(Some(indices))?
        .with_limit(limit)
        .build();
        format.create_physical_plan(state, config).await
    }
}

#[async_trait::async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters prune row groups where they can; DataFusion still applies each.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.is_parquet_lake() {
            return self.scan_parquet(state, projection, limit).await;
        }
        let (def, factory, options) = (self.def.clone(), self.factory, self.options.clone());
        let batches = tokio::task::spawn_blocking(move || {
            flowline_connectors::read_bounded(&def, factory, &options)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(self.schema.clone(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}
