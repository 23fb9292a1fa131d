//! `flowline query`: DataFusion batch SQL over declared tables and files.

use std::path::Path;

use anyhow::{Context, Result};
use datafusion::arrow::record_batch::RecordBatch;

pub async fn run(sql: &str, init: Option<&Path>, format: &str) -> Result<()> {
    let batches = query(sql, init).await?;
    print!("{}", render(&batches, format)?);
    Ok(())
}

/// Runs `sql` in batch mode after the declarations of the script `init`.
pub async fn query(sql: &str, init: Option<&Path>) -> Result<Vec<RecordBatch>> {
    let mut catalog = catalog(init).await?;
    Ok(flowline_planner::batch_query(&mut catalog, sql).await?)
}

/// A batch catalog of the tables and views the script `init` declares (none: files only).
pub async fn catalog(init: Option<&Path>) -> Result<flowline_planner::Catalog> {
    Ok(match init {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            flowline_planner::batch_catalog(&text)
                .await
                .with_context(|| format!("in {}", path.display()))?
        }
        None => flowline_planner::Catalog::new_batch(),
    })
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
