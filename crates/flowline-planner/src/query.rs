//! Batch SQL: one SELECT over the tables a script declares (and files named as tables), every
//! input read to its end. `flowline query` runs it; so can the server and tests.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::LogicalPlan;
use flowline_sql::Statement;

use crate::catalog::{df_error, Catalog};
use crate::{PlanError, Result};

/// A batch catalog with the tables and views `declarations` declares (its INSERTs are ignored:
/// a pipeline script can serve as the declarations).
pub async fn batch_catalog(declarations: &str) -> Result<Catalog> {
    let mut catalog = Catalog::new_batch();
    for stmt in flowline_sql::parse_script(declarations)? {
        match stmt {
            Statement::Insert(_) | Statement::StatementSet(_) => continue,
            Statement::Query(_) => {
                return Err(PlanError::Invalid(
                    "the declarations hold a SELECT; give the query on its own".into(),
                ))
            }
            other => catalog.apply(other).await?,
        }
    }
    Ok(catalog)
}

/// The plan of one SELECT over `catalog`'s tables, for a server: `catalog` is shared by every
/// query, so a statement that would change it (a window TVF definition) is refused.
pub async fn plan_select(catalog: &Catalog, sql: &str) -> Result<LogicalPlan> {
    let mut stmts = flowline_sql::parse_script(sql)?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(Statement::Query(q)), true) => catalog.plan_query_ast(*q).await,
        _ => Err(PlanError::Invalid(
            "a query is one SELECT statement (or VALUES / WITH ... SELECT)".into(),
        )),
    }
}

/// Runs the SELECT `sql` in batch mode over `catalog`'s tables.
pub async fn batch_query(catalog: &mut Catalog, sql: &str) -> Result<Vec<RecordBatch>> {
    let one_select = || PlanError::Invalid("a batch query is one SELECT statement".into());
    let mut stmts = flowline_sql::parse_script(sql)?;
    let Some(Statement::Query(q)) = stmts.pop() else {
        return Err(one_select());
    };
    for stmt in stmts {
        match stmt {
            // Window TVFs the SELECT uses.
            Statement::DefineSession(_) => catalog.apply(stmt).await?,
            _ => return Err(one_select()),
        }
    }
    let plan = catalog.plan_query_ast(*q).await?;
    let df = DataFrame::new(catalog.ctx.state(), plan);
    df.collect().await.map_err(df_error)
}
