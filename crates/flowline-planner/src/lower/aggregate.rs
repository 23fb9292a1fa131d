//! Aggregations: window aggregates (TUMBLE, HOP, CUMULATE), session windows and group
//! aggregates (updating).

use super::*;

pub(super) fn lower_window_aggregate(
    plan: &LogicalPlan,
    agg: &Aggregate,
    cat: &Catalog,
) -> Result<Vec<Node>> {
    if let Some(node) = session_aggregate(agg, cat)? {
        return Ok(vec![node]);
    }
    let out = agg.schema.as_arrow();
    // GROUPING SETS / ROLLUP / CUBE: one list of distinct expressions and, per set, which are NULL.
    let enumerated = enumerate_grouping_sets(agg.group_expr.clone()).map_err(df_error)?;
    let (group_list, sets): (Vec<Expr>, Option<Vec<Vec<bool>>>) = match enumerated.first() {
        Some(Expr::GroupingSet(GroupingSet::GroupingSets(sets))) => {
            let distinct: Vec<Expr> = grouping_set_to_exprlist(&enumerated)
                .map_err(df_error)?
                .into_iter()
                .cloned()
                .collect();
            let masks = sets
                .iter()
                .map(|set| distinct.iter().map(|e| !set.contains(e)).collect())
                .collect();
            (distinct, Some(masks))
        }
        Some(Expr::GroupingSet(_)) => {
            return Err(unsupported(plan, "this form of grouping set", None))
        }
        _ => (agg.group_expr.clone(), None),
    };
    let Some((start, end)) = window_key_positions(agg, &group_list) else {
        return Err(PlanError::Unsupported(format!(
            "`{}`: every grouping set of a window aggregation must include window_start and window_end",
            plan.display()
        )));
    };
    for i in [start, end] {
        if !matches!(out.field(i).data_type(), DataType::Timestamp(_, _)) {
            return Err(PlanError::Invalid(format!(
                "`{}`: {} must be a timestamp",
                plan.display(),
                out.field(i).name()
            )));
        }
    }
    let grouping_sets = match sets {
        Some(masks) => {
            if masks.iter().any(|m| m[start] || m[end]) {
                return Err(PlanError::Invalid(format!(
                    "`{}`: every grouping set of a window aggregation must contain window_start and window_end",
                    plan.display()
                )));
            }
            let id_type = out.field(group_list.len()).data_type().clone();
            Some(GroupingSets {
                ids: grouping_ids(&masks),
                masks,
                id_type,
            })
        }
        None => None,
    };
    let input_schema = agg.input.schema();
    let group_exprs = group_list
        .iter()
        .map(|e| physical(cat, e, input_schema))
        .collect::<Result<Vec<_>>>()?;
    let aggregates = agg
        .aggr_expr
        .iter()
        .map(|e| aggregate_call(cat, e, input_schema))
        .collect::<Result<Vec<_>>>()?;
    // With grouping sets, a key NULL in some set must not split one group across subtasks.
    let key = match &grouping_sets {
        Some(g) => (0..group_exprs.len())
            .filter(|i| *i != start && *i != end && g.masks.iter().all(|m| !m[*i]))
            .map(|i| group_exprs[i].clone())
            .collect(),
        None => group_exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != start && *i != end)
            .map(|(_, e)| e.clone())
            .collect(),
    };
    let spec = WindowAggregateSpec {
        group_exprs,
        start,
        end,
        aggregates,
        schema: Arc::new(out.clone()),
        grouping_sets,
    };
    let inputs = lower_node(&agg.input, cat, true)?;
    refuse_updating(plan, &inputs, "a window aggregation")?;
    Ok(vec![OperatorNode::single(
        Arc::new(spec),
        inputs,
        key,
        cat.late_sink().is_some(),
    )])
}

/// Whether `agg` groups by the window of a window TVF (its keys include the window's start and
/// end, found by lineage whatever they are named) or of a SESSION TVF.
pub(super) fn is_window_aggregate(agg: &Aggregate) -> bool {
    if session_input(agg).is_some() {
        // The SESSION node's own columns (session_aggregate checks the rest).
        let fields = agg.schema.fields();
        let keys: Vec<&str> = fields
            .iter()
            .take(fields.len() - agg.aggr_expr.len())
            .map(|f| f.name().as_str())
            .collect();
        return keys.contains(&"window_start") && keys.contains(&"window_end");
    }
    let Ok(enumerated) = enumerate_grouping_sets(agg.group_expr.clone()) else {
        return false;
    };
    let keys: Vec<Expr> = match enumerated.first() {
        Some(Expr::GroupingSet(_)) => match grouping_set_to_exprlist(&enumerated) {
            Ok(list) => list.into_iter().cloned().collect(),
            Err(_) => return false,
        },
        _ => agg.group_expr.clone(),
    };
    window_key_positions(agg, &keys).is_some()
}

/// Positions in `keys` (an aggregation's distinct group expressions) of the window's start and
/// end, by lineage.
pub(super) fn window_key_positions(agg: &Aggregate, keys: &[Expr]) -> Option<(usize, usize)> {
    use crate::interval::{window_bound, WindowBound};
    let bound = |e: &Expr| match e {
        Expr::Column(c) => agg
            .input
            .schema()
            .index_of_column(c)
            .ok()
            .and_then(|i| window_bound(&agg.input, i)),
        _ => None,
    };
    let find = |b: WindowBound| keys.iter().position(|e| bound(e) == Some(b));
    // By name when lineage is lost (a window over a constant time, folded by the optimizer):
    // still a window aggregation, whose checks then refuse what is wrong with it.
    let named = |name: &str| (0..keys.len()).find(|i| agg.schema.field(*i).name() == name);
    find(WindowBound::Start)
        .zip(find(WindowBound::End))
        .or_else(|| named("window_start").zip(named("window_end")))
}

/// `GROUP BY keys` without a window: an updating aggregation (`+I`, `-U`/`+U`, `-D`), behind a
/// hash exchange on the keys. Its input may be updating too (retractions).
pub(super) fn lower_group_aggregate(
    plan: &LogicalPlan,
    agg: &Aggregate,
    cat: &Catalog,
) -> Result<Vec<Node>> {
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(unsupported(
            plan,
            "GROUPING SETS, ROLLUP or CUBE without a window TVF",
            Some("group by a window TVF's window_start and window_end as well"),
        ));
    }
    let inputs = lower_node(&agg.input, cat, false)?;
    let input_schema = agg.input.schema();
    let out = agg.schema.as_arrow();
    let group_exprs = agg
        .group_expr
        .iter()
        .map(|e| physical(cat, e, input_schema))
        .collect::<Result<Vec<_>>>()?;
    let aggregates = agg
        .aggr_expr
        .iter()
        .enumerate()
        .map(|(i, e)| group_aggregate_call(cat, e, input_schema, out.field(group_exprs.len() + i)))
        .collect::<Result<Vec<_>>>()?;

    let spec = GroupAggregateSpec {
        group_exprs: group_exprs.clone(),
        aggregates,
        schema: Arc::new(changelog::with_row_kind(out)),
        updating_input: updating(&inputs),
        state_ttl: state_ttl(cat),
    };
    Ok(vec![OperatorNode::single(
        Arc::new(spec),
        inputs,
        group_exprs,
        false,
    )])
}

/// One aggregate of an updating aggregation.
pub(super) fn group_aggregate_call(
    cat: &Catalog,
    e: &Expr,
    schema: &DFSchema,
    out: &Field,
) -> Result<GroupAggregateCall> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = inner else {
        return Err(PlanError::Unsupported(format!(
            "`{e}` is not an aggregate function call"
        )));
    };
    let p = &f.params;
    let call = AggregateCallExpr {
        expr: e,
        name: f.func.name(),
        args: &p.args,
        distinct: p.distinct,
        filter: p.filter.as_deref(),
    };
    retracting_call(
        cat,
        call,
        schema,
        out,
        "a non-windowed (updating) aggregation",
    )
}

/// An aggregate function call, from an aggregation or an OVER window.
pub(super) struct AggregateCallExpr<'a> {
    pub(super) expr: &'a Expr,
    pub(super) name: &'a str,
    pub(super) args: &'a [Expr],
    pub(super) distinct: bool,
    pub(super) filter: Option<&'a Expr>,
}

/// An aggregate computed with retracting accumulators (`what` names the operator in errors).
pub(super) fn retracting_call(
    cat: &Catalog,
    call: AggregateCallExpr,
    schema: &DFSchema,
    out: &Field,
    what: &str,
) -> Result<GroupAggregateCall> {
    let (e, name) = (call.expr, call.name);
    let function = AggFunction::from_name(name).ok_or_else(|| {
        PlanError::Unsupported(format!(
            "`{e}`: {} is not supported in {what} yet; supported: COUNT, SUM, AVG, MIN, MAX, \
             each with DISTINCT and FILTER (WHERE ...). Window TVF aggregations support every aggregate function",
            name.to_uppercase()
        ))
    })?;
    let arg = match call.args {
        [] => Expr::Literal(ScalarValue::Int64(Some(1)), None),
        [a] => a.clone(),
        _ => {
            return Err(PlanError::Unsupported(format!(
                "`{e}`: {} with several arguments",
                name.to_uppercase()
            )))
        }
    };
    let arg = physical(cat, &arg, schema)?;
    let arg_type = arg.data_type(schema.as_arrow()).map_err(df_error)?;
    let filter = call.filter.map(|x| physical(cat, x, schema)).transpose()?;
    Ok(GroupAggregateCall {
        function,
        distinct: call.distinct,
        arg,
        arg_type,
        filter,
        output: out.data_type().clone(),
        name: out.name().clone(),
    })
}

/// `GROUP BY <partition keys>, window_start, window_end[, window_time]` right over a SESSION
/// TVF, with aggregates over the input's columns: one operator that keeps accumulators per
/// session instead of the session's rows. Anything else takes the general path (session
/// assignment, then window aggregation).
/// The SESSION node `agg` reads, through aliases and projections that only pick columns
/// (projection pushdown adds them).
pub(super) fn session_input(agg: &Aggregate) -> Option<&SessionWindowNode> {
    let mut input = agg.input.as_ref();
    loop {
        match input {
            LogicalPlan::SubqueryAlias(a) => input = &a.input,
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
                input = &p.input
            }
            _ => break,
        }
    }
    let LogicalPlan::Extension(ext) = input else {
        return None;
    };
    ext.node.as_any().downcast_ref::<SessionWindowNode>()
}

pub(super) fn session_aggregate(agg: &Aggregate, cat: &Catalog) -> Result<Option<Node>> {
    let Some(node) = session_input(agg) else {
        return Ok(None);
    };
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Ok(None);
    }
    let window_cols = ["window_start", "window_end", "window_time"];
    let mut outputs = Vec::new();
    for e in &agg.group_expr {
        let Expr::Column(c) = e else { return Ok(None) };
        let out = match c.name.as_str() {
            "window_start" => SessionOutput::Start,
            "window_end" => SessionOutput::End,
            "window_time" => SessionOutput::Time,
            name => match node.keys.iter().position(|k| k == name) {
                Some(i) => SessionOutput::Key(i),
                None => return Ok(None),
            },
        };
        outputs.push(out);
    }
    if !outputs.contains(&SessionOutput::Start)
        || !outputs.contains(&SessionOutput::End)
        || outputs
            .iter()
            .filter(|o| matches!(o, SessionOutput::Key(_)))
            .count()
            != node.keys.len()
    {
        return Ok(None);
    }
    let uses_window = |e: &Expr| {
        e.column_refs()
            .iter()
            .any(|c| window_cols.contains(&c.name.as_str()))
    };
    if agg.aggr_expr.iter().any(uses_window) {
        return Ok(None);
    }
    // The aggregates run on the session's input rows: resolve their columns there, by name.
    let input_schema = node.input.schema();
    let aggregates = agg
        .aggr_expr
        .iter()
        .map(|e| {
            let e = e
                .clone()
                .transform(|x| match x {
                    Expr::Column(c) => {
                        let field = input_schema.qualified_field_with_unqualified_name(&c.name)?;
                        Ok(Transformed::yes(Expr::Column(field.into())))
                    }
                    other => Ok(Transformed::no(other)),
                })
                .map_err(df_error)?
                .data;
            aggregate_call(cat, &e, input_schema)
        })
        .collect::<Result<Vec<_>>>()?;
    outputs.extend((0..aggregates.len()).map(SessionOutput::Aggregate));
    let keys = node
        .keys
        .iter()
        .map(|k| column(cat, input_schema, k))
        .collect::<Result<Vec<_>>>()?;
    let spec = SessionAggregateSpec {
        keys: keys.clone(),
        time: column(cat, input_schema, &node.time_col)?,
        gap_ms: node.gap_ms,
        aggregates,
        outputs,
        schema: Arc::new(agg.schema.as_arrow().clone()),
        input_schema: Arc::new(input_schema.as_arrow().clone()),
    };
    let inputs = lower_node(&node.input, cat, true)?;
    if inputs.iter().any(Node::updating) {
        return Err(PlanError::Unsupported(
            "a SESSION window needs an append-only input, but its input produces updates".into(),
        ));
    }
    Ok(Some(OperatorNode::single(
        Arc::new(spec),
        inputs,
        keys,
        cat.late_sink().is_some(),
    )))
}

pub(super) fn lower_session(node: &SessionWindowNode, cat: &Catalog) -> Result<Vec<Node>> {
    let input_schema = node.input.schema();
    let keys = node
        .keys
        .iter()
        .map(|k| column(cat, input_schema, k))
        .collect::<Result<Vec<_>>>()?;
    let spec = SessionWindowSpec {
        keys: keys.clone(),
        time: column(cat, input_schema, &node.time_col)?,
        gap_ms: node.gap_ms,
        schema: Arc::new(node.schema.as_arrow().clone()),
    };
    let inputs = lower_node(&node.input, cat, true)?;
    if inputs.iter().any(Node::updating) {
        return Err(PlanError::Unsupported(
            "a SESSION window needs an append-only input, but its input produces updates".into(),
        ));
    }
    Ok(vec![OperatorNode::single(
        Arc::new(spec),
        inputs,
        keys,
        cat.late_sink().is_some(),
    )])
}
