//! `flowline query`: DataFusion batch SQL over declared tables and files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use flowline_planner::Catalog;
use flowline_sql::Statement;

pub async fn run(sql: &str, init: Option<&Path>, format: &str) -> Result<()> {
    let batches = query(sql, init).await?;
    print!("{}", render(&batches, format)?);
    Ok(())
}

/// Runs `sql` in batch mode after the DDL of `init`.
pub async fn query(sql: &str, init: Option<&Path>) -> Result<Vec<RecordBatch>> {
    let mut catalog = Catalog::new_batch();
    if let Some(path) = init {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for stmt in
            flowline_sql::parse_script(&text).with_context(|| format!("in {}", path.display()))?
        {
            match stmt {
                Statement::Insert(_) | Statement::StatementSet(_) => continue,
                Statement::Query(_) => bail!(
                    "{}: an --init script declares tables; put the SELECT on the command line",
                    path.display()
                ),
                other => catalog
                    .apply(other)
                    .await
                    .with_context(|| format!("in {}", path.display()))?,
            }
        }
    }
    let mut stmts = flowline_sql::parse_script(sql)?;
    let Some(Statement::Query(q)) = stmts.pop() else {
        bail!("flowline query takes one SELECT statement");
    };
    for stmt in stmts {
        match stmt {
            // Window TVFs the SELECT uses.
            Statement::DefineSession(_) => catalog.apply(stmt).await?,
            _ => bail!("flowline query takes one SELECT statement"),
        }
    }
    let plan = catalog.plan_query_ast(*q).await?;
    let df = DataFrame::new(catalog.ctx.state(), plan);
    Ok(df.collect().await?)
}

pub fn render(batches: &[RecordBatch], format: &str) -> Result<String> {
    Ok(match format {
        "csv" => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf)?
        }
        "json" => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf)?
        }
        _ => format!(
            "{}\n",
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?
        ),
    })
}
