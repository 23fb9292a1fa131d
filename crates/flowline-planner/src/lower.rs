//! Lowering: an optimised DataFusion logical plan → branches of source + stateless chain.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::PhysicalExpr;
use flowline_operators::{ChainStep, StatelessChain};

use crate::catalog::{df_error, Catalog};
use crate::{Branch, PlanError, Result};

pub(crate) fn lower(plan: &LogicalPlan, cat: &Catalog) -> Result<Vec<Branch>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let Some(binding) = cat.binding_for_scan(name) else {
                return Err(PlanError::Unsupported(format!("'{name}' is not a table declared with CREATE TABLE")));
            };
            if binding.factory.source.is_none() {
                return Err(PlanError::Invalid(format!(
                    "table '{}' uses connector '{}', which can only be written, not read",
                    binding.table.name, binding.factory.name
                )));
            }
            if scan.fetch.is_some() {
                return Err(unsupported(plan, "LIMIT on an unbounded stream"));
            }
            let mut chain = StatelessChain::default();
            for f in &scan.filters {
                chain.steps.push(ChainStep::Filter(physical(cat, f, &scan.projected_schema)?));
            }
            Ok(vec![Branch { source: binding.clone(), projection: scan.projection.clone(), chain }])
        }
        LogicalPlan::Projection(p) => {
            let mut branches = lower(&p.input, cat)?;
            let exprs = p.expr.iter().map(|e| physical(cat, e, p.input.schema())).collect::<Result<Vec<_>>>()?;
            let step = ChainStep::Project { exprs, schema: Arc::new(p.schema.as_arrow().clone()) };
            branches.iter_mut().for_each(|b| b.chain.steps.push(step.clone()));
            Ok(branches)
        }
        LogicalPlan::Filter(f) => {
            let mut branches = lower(&f.input, cat)?;
            let step = ChainStep::Filter(physical(cat, &f.predicate, f.input.schema())?);
            branches.iter_mut().for_each(|b| b.chain.steps.push(step.clone()));
            Ok(branches)
        }
        LogicalPlan::SubqueryAlias(a) => lower(&a.input, cat),
        LogicalPlan::Union(u) => {
            let target = u.schema.as_arrow();
            let mut all = Vec::new();
            for input in &u.inputs {
                let mut branches = lower(input, cat)?;
                let step = conform_step(input.schema().as_arrow(), target)?;
                branches.iter_mut().for_each(|b| b.chain.steps.push(step.clone()));
                all.extend(branches);
            }
            Ok(all)
        }
        other => Err(unsupported(other, "a stateful operator")),
    }
}

fn unsupported(plan: &LogicalPlan, what: &str) -> PlanError {
    let node = plan.display().to_string();
    PlanError::Unsupported(format!(
        "`{node}` needs {what}, which streaming jobs do not support yet; this version runs stateless queries \
         (projection, filter, CASE, casts, functions, UNION ALL)"
    ))
}

fn physical(cat: &Catalog, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    cat.ctx.state().create_physical_expr(expr.clone(), schema).map_err(df_error)
}

/// Renames/casts columns of one UNION input to the union's schema.
fn conform_step(input: &Schema, target: &Schema) -> Result<ChainStep> {
    let exprs = target
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(input.field(i).name(), i));
            if input.field(i).data_type() == f.data_type() {
                col
            } else {
                Arc::new(CastExpr::new(col, f.data_type().clone(), None)) as Arc<dyn PhysicalExpr>
            }
        })
        .collect();
    Ok(ChainStep::Project { exprs, schema: Arc::new(target.clone()) })
}
