//! Expressions: DataFusion logical expressions to physical ones, and the small helpers that
//! look through casts and aliases.

use super::*;

/// The expression under casts (the row number is cast to Flink's BIGINT).
pub(super) fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_cast(&c.expr),
        Expr::TryCast(c) => strip_cast(&c.expr),
        other => other,
    }
}

pub(super) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// DataFusion's `__grouping_id`: one bit per expression (1 = NULL in this set, first expression
/// in the highest bit), with repeated sets told apart by an ordinal above those bits.
pub(super) fn grouping_ids(masks: &[Vec<bool>]) -> Vec<u64> {
    masks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ordinal = masks[..i].iter().filter(|o| *o == m).count() as u64;
            let bits = m
                .iter()
                .fold(0u64, |acc, null| (acc << 1) | u64::from(*null));
            bits | (ordinal << m.len())
        })
        .collect()
}

/// A column of `schema` by its unqualified name, as a physical expression.
pub(super) fn column(
    cat: &Catalog,
    schema: &DFSchema,
    name: &str,
) -> Result<Arc<dyn PhysicalExpr>> {
    let expr = Expr::Column(
        schema
            .qualified_field_with_unqualified_name(name)
            .map_err(df_error)?
            .into(),
    );
    physical(cat, &expr, schema)
}

/// A physical aggregate (and its FILTER) over rows of `schema`.
#[allow(deprecated)]
pub(super) fn aggregate_call(cat: &Catalog, e: &Expr, schema: &DFSchema) -> Result<AggregateCall> {
    let state = cat.ctx.state();
    let (expr, filter, _order) = create_aggregate_expr_and_maybe_filter(
        e,
        schema,
        schema.as_arrow(),
        state.execution_props(),
    )
    .map_err(df_error)?;
    Ok(AggregateCall { expr, filter })
}

pub(super) fn physical(
    cat: &Catalog,
    expr: &Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    cat.ctx
        .state()
        .create_physical_expr(expr.clone(), schema)
        .map_err(df_error)
}

/// Renames/casts columns of one UNION input to the union's schema.
pub(super) fn conform_step(input: &Schema, target: &Schema) -> Result<ChainStep> {
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
    Ok(ChainStep::Project {
        exprs,
        schema: Arc::new(target.clone()),
    })
}
