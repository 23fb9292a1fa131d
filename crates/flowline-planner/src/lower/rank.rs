//! `ROW_NUMBER()` filtered by `rn <= N`: TopN and deduplication, per key or per window.

use super::*;

/// TopN and deduplication: a filter `rn <= N` (`rn < N`, `rn = 1`) over (projections of) a
/// window computing only `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS rn`, as Flink's
/// Rank. `None` when the filter is not over such a window. The filter itself stays above the
/// operator: every row it emits passes the `rn` bound, and other conditions apply as written.
pub(super) fn lower_rank(
    f: &datafusion::logical_expr::Filter,
    cat: &Catalog,
    timed: bool,
) -> Result<Option<Vec<Node>>> {
    use datafusion::logical_expr::{BinaryExpr, Operator as Op};
    let mut projections = Vec::new();
    let mut node = f.input.as_ref();
    let window = loop {
        match node {
            LogicalPlan::Projection(p) => {
                projections.push(p);
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Window(w) => break w,
            _ => return Ok(None),
        }
    };
    let [wexpr] = window.window_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::WindowFunction(wf) = strip_alias(wexpr) else {
        return Ok(None);
    };
    if !wf.fun.name().eq_ignore_ascii_case("row_number") {
        return Ok(None);
    }
    // Which columns of the filter's input are the row number: follow it up the projections.
    let rn_index = window.input.schema().fields().len();
    let mut rn_cols = vec![window.schema.qualified_field(rn_index).into()];
    for p in projections.iter().rev() {
        rn_cols = p
            .expr
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(strip_cast(strip_alias(e)), Expr::Column(c) if rn_cols.contains(c)))
            .map(|(i, _)| p.schema.qualified_field(i).into())
            .collect();
    }
    let is_rn = |e: &Expr| matches!(strip_cast(e), Expr::Column(c) if rn_cols.contains(c));
    let int = |e: &Expr| match e {
        Expr::Literal(v, _) => v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }),
        _ => None,
    };
    let mut limit: Option<i64> = None;
    for conjunct in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
            continue;
        };
        let bound = match (is_rn(left), is_rn(right), op) {
            (true, _, Op::LtEq) => int(right),
            (true, _, Op::Lt) => int(right).map(|n| n - 1),
            (true, _, Op::Eq) => int(right).filter(|n| *n == 1),
            (_, true, Op::GtEq) => int(left),
            (_, true, Op::Gt) => int(left).map(|n| n - 1),
            (_, true, Op::Eq) => int(left).filter(|n| *n == 1),
            _ => None,
        };
        if let Some(b) = bound {
            limit = Some(limit.map_or(b, |l| l.min(b)));
        }
    }
    let Some(limit) = limit else {
        return Ok(None);
    };
    if limit < 1 {
        return Err(PlanError::Invalid(format!(
            "`{}`: the row-number bound keeps no rows",
            f.predicate
        )));
    }
    let input_schema = window.input.schema();
    let partition = wf
        .params
        .partition_by
        .iter()
        .map(|e| physical(cat, e, input_schema))
        .collect::<Result<Vec<_>>>()?;
    let order = wf
        .params
        .order_by
        .iter()
        .map(|s| {
            let options = datafusion::arrow::compute::SortOptions {
                descending: !s.asc,
                nulls_first: s.nulls_first,
            };
            Ok((physical(cat, &s.expr, input_schema)?, options))
        })
        .collect::<Result<Vec<_>>>()?;
    if order.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "`{}`: ROW_NUMBER() needs an ORDER BY for TopN or deduplication",
            wexpr
        )));
    }
    // Deduplication keeping the last row by time: a row with the same time replaces the kept
    // one (Flink's Deduplicate), so the later arrival ranks first among equal times.
    let later_first = limit == 1
        && order.len() == 1
        && order[0].1.descending
        && matches!(
            order[0].0.data_type(input_schema.as_arrow()),
            Ok(DataType::Timestamp(_, _))
        );
    // Window TopN / dedup (Flink's WindowRank): PARTITION BY holds the window bounds of a
    // window TVF or window aggregation below.
    let window_bound = |bound: crate::interval::WindowBound| {
        wf.params.partition_by.iter().position(|e| match e {
            Expr::Column(c) => input_schema
                .index_of_column(c)
                .is_ok_and(|i| crate::interval::window_bound(&window.input, i) == Some(bound)),
            _ => false,
        })
    };
    let bounds = window_bound(crate::interval::WindowBound::Start)
        .zip(window_bound(crate::interval::WindowBound::End));
    let inputs = lower_node(&window.input, cat, timed || bounds.is_some())?;
    if let Some((start, end)) = bounds.filter(|_| !updating(&inputs)) {
        let Expr::Column(end_column) = &wf.params.partition_by[end] else {
            unreachable!("window_bound matched a column");
        };
        let key: Vec<_> = partition
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != start && *i != end)
            .map(|(_, e)| e.clone())
            .collect();
        let spec = flowline_operators::WindowRankSpec {
            rank: RankSpec {
                partition,
                order,
                limit: limit as usize,
                later_first,
                input: Arc::new(input_schema.as_arrow().clone()),
                updating_input: false,
                schema: Arc::new(window.schema.as_arrow().clone()),
                state_ttl: None,
            },
            end: input_schema.index_of_column(end_column).map_err(df_error)?,
            route: key.clone(),
        };
        let mut nodes = vec![OperatorNode::single(
            Arc::new(spec),
            inputs,
            key,
            cat.late_sink().is_some(),
        )];
        for p in projections.iter().rev() {
            nodes = project(p, nodes, cat)?;
        }
        return Ok(Some(nodes));
    }
    let spec = RankSpec {
        partition: partition.clone(),
        order,
        limit: limit as usize,
        later_first,
        input: Arc::new(input_schema.as_arrow().clone()),
        updating_input: updating(&inputs),
        schema: Arc::new(changelog::with_row_kind(window.schema.as_arrow())),
        state_ttl: state_ttl(cat),
    };
    let mut nodes = vec![OperatorNode::single(
        Arc::new(spec),
        inputs,
        partition,
        false,
    )];
    for p in projections.iter().rev() {
        nodes = project(p, nodes, cat)?;
    }
    Ok(Some(nodes))
}
