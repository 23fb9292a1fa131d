//! The query endpoint's engine, `flowline serve`, and `flowline query --connect`.
//!
//! One planner session lives as long as the server: the tables a script declares (read when a
//! query scans them, lake tables as DataFusion Parquet scans whose footers the session caches)
//! and files named as tables.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use flowline_server::query::{QueryAnswer, QueryEngine, QueryError, QueryShape, TableInfo};
use futures::StreamExt;

/// Answers queries over one long-lived batch catalog, on a runtime of its own: a query's
/// operators may compute for long between yields (a cross join's inner loop), and the server's
/// runtime must stay free to answer, time out and see clients go.
pub struct Engine {
    catalog: Arc<flowline_planner::Catalog>,
    runtime: Option<tokio::runtime::Runtime>,
    tables: Vec<TableInfo>,
    /// Memory each query may use (`--query-memory`).
    query_memory: Option<usize>,
}

/// Batches a query may have computed ahead of its client.
const AHEAD: usize = 2;

impl Engine {
    /// An engine over the tables and views `init` declares (none: files only), each query
    /// held to `query_memory` bytes.
    pub async fn new(
        init: Option<&Path>,
        query_memory: Option<u64>,
        materialized: &[Arc<flowline_operators::materialize::Materialized>],
    ) -> Result<Self> {
        let mut catalog = crate::query::catalog(init).await?;
        catalog.attach_materialized(materialized)?;
        // A server runs each query on every core (scans split into file groups, hash
        // partitioned joins and aggregations); `flowline query` plans for one.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        catalog
            .ctx
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = cores;
        let mut tables = Vec::new();
        for (name, binding) in &catalog.tables {
            let provider = catalog.ctx.table_provider(name.as_str()).await?;
            tables.push(TableInfo {
                name: name.clone(),
                kind: "TABLE",
                schema: provider.schema(),
                primary_key: binding.table.primary_key.clone(),
            });
        }
        // A running job's materialized tables, also those whose query only the streaming
        // planner knows (the declarations alone could not register them).
        for m in materialized {
            if !catalog.tables.contains_key(&m.name) {
                tables.push(TableInfo {
                    name: m.name.clone(),
                    kind: "TABLE",
                    schema: m.schema.clone(),
                    primary_key: m
                        .key
                        .iter()
                        .map(|c| m.schema.field(*c).name().clone())
                        .collect(),
                });
            }
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        for name in catalog.view_names() {
            let provider = catalog.ctx.table_provider(name.as_str()).await?;
            tables.push(TableInfo {
                name: name.clone(),
                kind: "VIEW",
                schema: provider.schema(),
                primary_key: Vec::new(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("flowline-query")
            .enable_all()
            .build()
            .context("cannot start the query runtime")?;
        Ok(Self {
            catalog: Arc::new(catalog),
            runtime: Some(runtime),
            tables,
            query_memory: query_memory.map(|m| m as usize),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Queries still computing are abandoned, not waited for.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts a query's task when its answer is dropped (the client went, or the time ran out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryEngine for Engine {
    fn tables(&self) -> Vec<TableInfo> {
        self.tables.clone()
    }

    fn describe(
        &self,
        sql: String,
    ) -> futures::future::BoxFuture<'static, Result<QueryShape, QueryError>> {
        let catalog = self.catalog.clone();
        Box::pin(async move {
            let plan = plan(&catalog, &sql).await?;
            let schema = Arc::new(plan.schema().as_arrow().clone());
            let mut params: Vec<(usize, String, DataType)> = plan
                .get_parameter_types()
                .map_err(|e| QueryError::Invalid(flowline_planner::df_error(e).to_string()))?
                .into_iter()
                .map(|(name, t)| {
                    let index = name[1..].parse().unwrap_or(usize::MAX);
                    (index, name, t.unwrap_or(DataType::Null))
                })
                .collect();
            params.sort();
            let parameters = Arc::new(Schema::new(
                params
                    .into_iter()
                    .map(|(_, name, t)| Field::new(name, t, true))
                    .collect::<Vec<_>>(),
            ));
            Ok(QueryShape { schema, parameters })
        })
    }

    fn query(
        &self,
        sql: String,
        params: Option<RecordBatch>,
    ) -> futures::future::BoxFuture<'static, Result<QueryAnswer, QueryError>> {
        let catalog = self.catalog.clone();
        let memory = self.query_memory;
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<_, QueryError>>(AHEAD);
        let task = self
            .runtime
            .as_ref()
            .expect("a running engine")
            .spawn(async move {
                let started = async {
                    let mut plan = plan(&catalog, &sql).await?;
                    if let Some(params) = params {
                        plan = plan
                            .with_param_values(param_values(&params)?)
                            .map_err(|e| {
                                QueryError::Invalid(flowline_planner::df_error(e).to_string())
                            })?;
                    }
                    DataFrame::new(session(&catalog, memory)?, plan)
                        .execute_stream()
                        .await
                        .map_err(|e| run_error(e, memory))
                };
                let mut stream = match started.await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = schema_tx.send(Err(e));
                        return;
                    }
                };
                if schema_tx.send(Ok(stream.schema())).is_err() {
                    return;
                }
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(|e| run_error(e, memory));
                    let failed = batch.is_err();
                    // A closed channel: the answer was dropped.
                    if tx.send(batch).await.is_err() || failed {
                        return;
                    }
                }
            });
        let guard = AbortOnDrop(task);
        Box::pin(async move {
            let schema = schema_rx
                .await
                .map_err(|_| QueryError::Failed("the query stopped before it started".into()))??;
            let batches = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                rx.recv().await.map(|b| (b, (rx, guard)))
            });
            Ok(QueryAnswer {
                schema,
                batches: batches.boxed(),
            })
        })
    }
}

/// The session a query runs in: the catalog's (its caches of file footers and listings), every
/// operator yielding (so a cancelled query stops), with a memory pool of the query's own when it
/// has a limit.
fn session(
    catalog: &flowline_planner::Catalog,
    memory: Option<usize>,
) -> Result<datafusion::execution::SessionState, QueryError> {
    let state = catalog.ctx.state();
    let mut builder = datafusion::execution::SessionStateBuilder::new_from_existing(state.clone())
        .with_physical_optimizer_rule(Arc::new(EveryOperatorYields));
    if let Some(bytes) = memory {
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(
            state.runtime_env(),
        )
        .with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(bytes),
        ))
        .build_arc()
        .map_err(|e| QueryError::Failed(e.to_string()))?;
        builder = builder.with_runtime_env(runtime);
    }
    Ok(builder.build())
}

/// Wraps every operator's output in DataFusion's `CooperativeExec`, which spends a unit of the
/// task's tokio budget per batch. DataFusion only makes scans and exchanges yield; an operator
/// that makes many batches from one input batch (a cross or nested-loop join) then never
/// returns to the runtime, and a query that timed out or lost its client would go on using
/// its cores until it finished. The cost is a budget check per batch.
#[derive(Debug)]
struct EveryOperatorYields;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for EveryOperatorYields {
    fn optimize(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::coop::CooperativeExec;
        use datafusion::physical_plan::execution_plan::SchedulingType;
        plan.transform_up(|node| {
            let yields = node.properties().scheduling_type == SchedulingType::Cooperative;
            if yields || node.children().is_empty() {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "EveryOperatorYields"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A failure while running; running out of the query's memory is the client's to fix.
fn run_error(e: datafusion::error::DataFusionError, memory: Option<usize>) -> QueryError {
    if matches!(
        e.find_root(),
        datafusion::error::DataFusionError::ResourcesExhausted(_)
    ) {
        return QueryError::OverLimit(format!(
            "the query needs more memory than its limit of {} bytes (--query-memory), beyond \
             what its operators could spill: {}",
            memory.unwrap_or_default(),
            e.find_root()
        ));
    }
    QueryError::Failed(flowline_planner::df_error(e).to_string())
}

/// Plans one SELECT, its `?` placeholders numbered `$1`, `$2`, ... first.
async fn plan(
    catalog: &flowline_planner::Catalog,
    sql: &str,
) -> Result<datafusion::logical_expr::LogicalPlan, QueryError> {
    flowline_planner::plan_select(catalog, &positional_placeholders(sql))
        .await
        .map_err(|e| QueryError::Invalid(e.to_string()))
}

/// Parameter values from one row of `params`: column i is `$i+1`.
fn param_values(params: &RecordBatch) -> Result<Vec<ScalarValue>, QueryError> {
    if params.num_rows() != 1 {
        return Err(QueryError::Invalid(format!(
            "parameters are bound as one row; got {} rows (run one row at a time)",
            params.num_rows()
        )));
    }
    params
        .columns()
        .iter()
        .map(|c| {
            ScalarValue::try_from_array(c, 0)
                .map_err(|e| QueryError::Invalid(format!("a parameter value: {e}")))
        })
        .collect()
}

/// `?` placeholders (JDBC and ADBC style) as DataFusion's `$1`, `$2`, ..., outside quotes and
/// comments.
fn positional_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                // To the closing quote; a doubled quote is part of the text and reopens.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            _ => out.push(c),
        }
    }
    out
}

/// `flowline query --connect URL`: asks a running server; prints as `format` says.
pub async fn query_remote(url: &str, sql: &str, format: &str) -> Result<()> {
    let accept = match format {
        "csv" => "text/csv",
        "json" => "application/x-ndjson",
        _ => flowline_server::query::ARROW_STREAM,
    };
    let endpoint = format!("{}/v1/query", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .build()
        .context("cannot make an HTTP client")?;
    let mut req = client
        .post(&endpoint)
        .header("Accept", accept)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(sql.to_string());
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        req = req.bearer_auth(token.trim());
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{endpoint}: the answer was cut off"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        let hint = match status.as_u16() {
            401 => format!(" (set {TOKEN_ENV} to a token the server accepts)"),
            _ => String::new(),
        };
        anyhow::bail!("{endpoint} answered {status}: {message}{hint}");
    }
    match format {
        "csv" | "json" => print!("{}", String::from_utf8_lossy(&body)),
        _ => {
            let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
                std::io::Cursor::new(body),
                None,
            )
            .context("the server's Arrow answer is malformed")?;
            let batches = reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .context("the server's Arrow answer is malformed")?;
            print!("{}", crate::query::render(&batches, format)?);
        }
    }
    Ok(())
}

/// The token `flowline query --connect` sends.
pub const TOKEN_ENV: &str = "FLOWLINE_TOKEN";

#[cfg(test)]
mod tests {
    #[test]
    fn question_marks_become_positions_outside_quotes_and_comments() {
        assert_eq!(
            super::positional_placeholders(
                "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = ? AND b > ?"
            ),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = $1 AND b > $2"
        );
    }
}
