//! Helpers shared by the integration tests.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use flowline_common::changelog::{row_kinds, strip_row_kind, RowKind};
use flowline_common::MetricsRegistry;
use flowline_planner::Catalog;
use flowline_runtime::{run_job, StopSignal};
use flowline_sql::Statement;

/// Renders rows as text, one `Vec<String>` per row (NULL as "NULL").
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

pub fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

/// Runs all INSERTs of a script as a streaming job.
pub async fn run_script(script: &str, parallelism: usize) -> anyhow::Result<MetricsRegistry> {
    let graph = flowline_planner::plan_script(script, Some(parallelism)).await?;
    let metrics = MetricsRegistry::new();
    run_job(&graph, &metrics, &StopSignal::new()).await?;
    Ok(metrics)
}

/// Runs a SELECT as a streaming job over the tables of `ddl`, collecting its rows.
pub async fn stream_select(
    ddl: &str,
    select: &str,
    parallelism: usize,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut catalog = Catalog::new();
    for stmt in flowline_sql::parse_script(ddl)? {
        catalog.apply(stmt).await?;
    }
    let q = query_of(&mut catalog, select).await?;
    let pipeline = catalog.plan_select(q).await?;
    let graph = flowline_planner::JobGraph {
        pipelines: vec![pipeline],
        parallelism,
        config: catalog.config.clone(),
    };
    let out = run_job(&graph, &MetricsRegistry::new(), &StopSignal::new()).await?;
    Ok(out.collected.into_iter().flatten().collect())
}

/// `flowline explain` of a SELECT over the tables of `ddl`.
pub async fn explain_select(ddl: &str, select: &str) -> anyhow::Result<String> {
    let mut catalog = Catalog::new();
    for stmt in flowline_sql::parse_script(ddl)? {
        catalog.apply(stmt).await?;
    }
    let q = query_of(&mut catalog, select).await?;
    let graph = flowline_planner::JobGraph {
        pipelines: vec![catalog.plan_select(q).await?],
        parallelism: 1,
        config: catalog.config.clone(),
    };
    Ok(graph.explain(false))
}

/// Runs a SELECT in batch mode with DataFusion over the (bounded) tables of `ddl`: the oracle.
pub async fn batch_select(ddl: &str, select: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let mut catalog = flowline_planner::batch_catalog(ddl).await?;
    Ok(flowline_planner::batch_query(&mut catalog, select).await?)
}

/// The SELECT of `sql`, after applying what its window TVFs define (SESSION tables).
async fn query_of(
    catalog: &mut Catalog,
    sql: &str,
) -> anyhow::Result<flowline_sql::sqlparser::ast::Query> {
    let mut stmts = flowline_sql::parse_script(sql)?;
    let Some(Statement::Query(q)) = stmts.pop() else {
        anyhow::bail!("not a query: {sql}")
    };
    for stmt in stmts {
        catalog.apply(stmt).await?;
    }
    Ok(*q)
}

/// The table a changelog leaves behind, as sorted rows.
pub fn apply_changelog(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let mut table: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for b in batches {
        let kinds: Vec<RowKind> = match row_kinds(b) {
            Some(k) => k
                .values()
                .iter()
                .map(|v| RowKind::from_i8(*v).expect("valid change kind"))
                .collect(),
            None => vec![RowKind::Insert; b.num_rows()],
        };
        for (row, kind) in rows(&[strip_row_kind(b)]).into_iter().zip(kinds) {
            if kind.is_addition() {
                *table.entry(row).or_default() += 1;
            } else {
                match table.get_mut(&row) {
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        table.remove(&row);
                    }
                    None => {
                        return Err(format!(
                            "{} withdraws {row:?}, which is not in the table",
                            kind.short()
                        ))
                    }
                }
            }
        }
    }
    Ok(table
        .into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n))
        .collect())
}

/// The multi-threaded runtime the tests drive jobs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes the lines of `data` as `files` consecutive JSON-lines files `part-000.json`, ...:
/// in name order, so subtask s reads parts s, s + p, ... in order.
pub fn write_parts(dir: &std::path::Path, data: &str, files: usize) {
    let lines: Vec<&str> = data.lines().collect();
    for (i, chunk) in lines.chunks(lines.len().div_ceil(files).max(1)).enumerate() {
        std::fs::write(
            dir.join(format!("part-{i:03}.json")),
            chunk.join("\n") + "\n",
        )
        .unwrap();
    }
}
