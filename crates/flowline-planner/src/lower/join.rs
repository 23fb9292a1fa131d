//! Joins: regular (updating), interval and window joins (watermark-driven, append-only), and
//! temporal / lookup joins (`FOR SYSTEM_TIME AS OF`).

use super::*;

/// A regular equi-join: both inputs hash-partitioned on their halves of the equality, the rest
/// of the ON condition evaluated by the join on candidate pairs.
pub(super) fn lower_join(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
    timed: bool,
) -> Result<Vec<Node>> {
    use datafusion::common::NullEquality;
    use datafusion::logical_expr::JoinType;
    let kind = match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::LeftSemi,
        JoinType::LeftAnti => JoinKind::LeftAnti,
        JoinType::RightSemi => JoinKind::RightSemi,
        JoinType::RightAnti => JoinKind::RightAnti,
        other => return Err(unsupported(plan, &format!("a {other} join"), None)),
    };
    if join.null_aware {
        return Err(unsupported(
            plan,
            "NOT IN over a subquery (a NULL in the subquery empties the result)",
            Some("write NOT EXISTS"),
        ));
    }
    if let Some(marker) = temporal_marker(join)? {
        return lower_temporal_join(plan, join, cat, timed, marker);
    }
    // Interval joins are inner or outer joins (never semi or anti).
    if matches!(
        kind,
        JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
    ) {
        if let Some(node) = lower_interval_join(plan, join, cat, kind)? {
            return Ok(vec![node]);
        }
    }
    // Window joins are any kind: the optimizer turns an inner join whose output keeps one
    // side's columns into a semi join, and IN / EXISTS are semi and anti window joins in Flink.
    if let Some(node) = lower_window_join(plan, join, cat, kind)? {
        return Ok(vec![node]);
    }
    if join.on.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "`{}`: a streaming join needs an equality between columns of its two inputs \
             (e.g. ON a.id = b.id); a join on other conditions alone (a cross join) is not supported",
            plan.display()
        )));
    }
    if join.null_equality == NullEquality::NullEqualsNull {
        return Err(unsupported(
            plan,
            "a join whose keys match NULL to NULL",
            None,
        ));
    }
    let keys = join_keys(plan, join, cat)?;
    // The rest of ON sees both inputs' columns (a semi join's output has only one's).
    let filter = pair_filter(cat, join, join.filter.as_ref())?;
    let left = lower_node(&join.left, cat, timed)?;
    let right = lower_node(&join.right, cat, timed)?;
    let out = join.schema.as_arrow();
    let mut spec = JoinSpec {
        kind,
        keys: keys.clone(),
        inputs: input_schemas(join),
        updating: [updating(&left), updating(&right)],
        filter,
        schema: Arc::new(out.clone()),
        state_ttl: state_ttl(cat),
    };
    if spec.output_updating() {
        spec.schema = Arc::new(changelog::with_row_kind(out));
    }
    let [lkey, rkey] = keys;
    Ok(vec![OperatorNode::pair(
        Arc::new(spec),
        [left, right],
        [lkey, rkey],
    )])
}

/// An interval join (see `crate::interval`) of an inner or outer `kind`, when the join is one
/// and both inputs are append-only; None leaves it a regular join.
pub(super) fn lower_interval_join(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
    kind: JoinKind,
) -> Result<Option<Node>> {
    let Some(bounds) = crate::interval::interval_bounds(join, cat) else {
        return Ok(None);
    };
    if bounds.lower > bounds.upper {
        return Err(PlanError::Invalid(format!(
            "`{}`: the time bounds of this interval join exclude every pair (left time - right time \
             must be at least {} ms and at most {} ms)",
            plan.display(),
            bounds.lower,
            bounds.upper
        )));
    }
    let Some((inputs, keys)) = append_only_pair(plan, join, cat)? else {
        return Ok(None);
    };
    let filter = pair_filter(cat, join, join.filter.as_ref())?;
    let spec = IntervalJoinSpec {
        kind,
        keys: keys.clone(),
        inputs: input_schemas(join),
        times: bounds.times,
        lower: bounds.lower,
        upper: bounds.upper,
        filter,
        schema: Arc::new(join.schema.as_arrow().clone()),
    };
    Ok(Some(OperatorNode::pair(Arc::new(spec), inputs, keys)))
}

/// A window join: equalities between both inputs' `window_start` and `window_end`, each the
/// window of a window TVF (or of a window aggregation over one), over append-only inputs, as
/// Flink's. None leaves it a regular join.
pub(super) fn lower_window_join(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
    kind: JoinKind,
) -> Result<Option<Node>> {
    use crate::interval::{window_bound, WindowBound};
    let (ls, rs) = (join.left.schema(), join.right.schema());
    // By lineage, not by name: `window_start AS starttime` is still the window's start.
    let window_pair = |bound: WindowBound| {
        join.on.iter().find_map(|(l, r)| {
            let (Expr::Column(lc), Expr::Column(rc)) = (l, r) else {
                return None;
            };
            let (li, ri) = (ls.index_of_column(lc).ok()?, rs.index_of_column(rc).ok()?);
            (window_bound(&join.left, li) == Some(bound)
                && window_bound(&join.right, ri) == Some(bound))
            .then_some((li, ri))
        })
    };
    let (Some(_), Some((lend, rend))) = (
        window_pair(WindowBound::Start),
        window_pair(WindowBound::End),
    ) else {
        return Ok(None);
    };
    let Some((inputs, keys)) = append_only_pair(plan, join, cat)? else {
        return Ok(None);
    };
    let spec = WindowJoinSpec {
        kind,
        keys: keys.clone(),
        inputs: input_schemas(join),
        ends: [lend, rend],
        filter: pair_filter(cat, join, join.filter.as_ref())?,
        schema: Arc::new(join.schema.as_arrow().clone()),
    };
    Ok(Some(OperatorNode::pair(Arc::new(spec), inputs, keys)))
}

/// A join's two lowered inputs and, per input, its join key expressions.
pub(super) type JoinInputs = ([Vec<Node>; 2], [Vec<Arc<dyn PhysicalExpr>>; 2]);

/// The lowered inputs of a watermark-driven join (interval, window), with their join keys;
/// None when an input is updating (the join then stays a regular one).
pub(super) fn append_only_pair(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
) -> Result<Option<JoinInputs>> {
    let left = lower_node(&join.left, cat, true)?;
    let right = lower_node(&join.right, cat, true)?;
    if updating(&left) || updating(&right) {
        return Ok(None);
    }
    Ok(Some(([left, right], join_keys(plan, join, cat)?)))
}

/// `FOR SYSTEM_TIME AS OF` (see `crate::temporal`): the marker call in a join's condition.
pub(super) struct TemporalMarker {
    versioned: bool,
    /// The probe row's time (left input) and the table's column (right input).
    probe_time: datafusion::common::Column,
    table_column: datafusion::common::Column,
    /// The condition without the marker.
    rest: Option<Expr>,
}

pub(super) fn temporal_marker(
    join: &datafusion::logical_expr::Join,
) -> Result<Option<TemporalMarker>> {
    use datafusion::logical_expr::utils::{conjunction, split_conjunction};
    use flowline_sql::functions::temporal::{LOOKUP, VERSIONED};
    let Some(filter) = &join.filter else {
        return Ok(None);
    };
    let mut found = None;
    let mut rest = Vec::new();
    for e in split_conjunction(filter) {
        match e {
            Expr::ScalarFunction(f)
                if found.is_none() && [LOOKUP, VERSIONED].contains(&f.func.name()) =>
            {
                let [Expr::Column(a), Expr::Column(b)] = f.args.as_slice() else {
                    return Err(PlanError::Invalid(format!(
                        "FOR SYSTEM_TIME AS OF: expected a column of each input, got {e}"
                    )));
                };
                if !join.left.schema().has_column(a) || !join.right.schema().has_column(b) {
                    return Err(PlanError::Invalid(format!(
                        "FOR SYSTEM_TIME AS OF {a}: the time must be a column of the input the \
                         temporal table is joined to (the table comes second: FROM o JOIN t FOR \
                         SYSTEM_TIME AS OF o.ts)"
                    )));
                }
                found = Some((f.func.name() == VERSIONED, a.clone(), b.clone()));
            }
            other => rest.push(other.clone()),
        }
    }
    Ok(
        found.map(|(versioned, probe_time, table_column)| TemporalMarker {
            versioned,
            probe_time,
            table_column,
            rest: conjunction(rest),
        }),
    )
}

/// A lookup join (the table read whole by each subtask) or an event-time temporal join (the
/// versioned table as a second input); both hash the probe rows on the key.
pub(super) fn lower_temporal_join(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
    timed: bool,
    marker: TemporalMarker,
) -> Result<Vec<Node>> {
    use datafusion::logical_expr::JoinType;
    let left_join = match join.join_type {
        JoinType::Inner => false,
        JoinType::Left => true,
        other => {
            return Err(unsupported(
                plan,
                &format!("a {other} temporal join"),
                Some("use an inner or LEFT temporal join"),
            ))
        }
    };
    let (ls, rs) = (join.left.schema(), join.right.schema());
    let [lkey, rkey] = join_keys(plan, join, cat)?;
    let filter = pair_filter(cat, join, marker.rest.as_ref())?;
    let table_name = table_name_under(&join.right).unwrap_or_else(|| "the table".into());
    let out = Arc::new(join.schema.as_arrow().clone());
    if marker.versioned {
        let left = lower_node(&join.left, cat, true)?;
        let right = lower_node(&join.right, cat, true)?;
        if let Some(reason) = left.iter().find_map(Node::updating_reason) {
            return Err(PlanError::Unsupported(format!(
                "`{}`: an event-time temporal join needs an append-only input before FOR SYSTEM_TIME AS OF, \
                 but {reason} makes it updating",
                plan.display()
            )));
        }
        let times = [
            ls.index_of_column(&marker.probe_time).map_err(df_error)?,
            rs.index_of_column(&marker.table_column).map_err(df_error)?,
        ];
        let spec = VersionedJoinSpec {
            left_join,
            keys: [lkey.clone(), rkey.clone()],
            inputs: input_schemas(join),
            versions_updating: updating(&right),
            times,
            table_name,
            filter,
            schema: out,
        };
        return Ok(vec![OperatorNode::pair(
            Arc::new(spec),
            [left, right],
            [lkey, rkey],
        )]);
    }
    // Lookup: the table side is read by the operator, not streamed.
    let left = lower_node(&join.left, cat, timed)?;
    let branch = match lower_node(&join.right, cat, false)?.as_slice() {
        [Node::Source(b)] => b.clone(),
        _ => {
            return Err(PlanError::Unsupported(format!(
                "`{}`: the table of a lookup join (FOR SYSTEM_TIME AS OF a processing-time column) \
                 must be a table declared with CREATE TABLE, read as it is",
                plan.display()
            )))
        }
    };
    let reload = branch
        .source
        .options
        .duration("lookup.join.cache.ttl")
        .map_err(|e| PlanError::Invalid(e.to_string()))?
        .or(Some(std::time::Duration::from_secs(3600)));
    let load: TableLoader = Arc::new(move || {
        let source = &branch.source;
        let batches =
            flowline_connectors::read_bounded(&source.table, source.factory, &source.options)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = match &branch.projection {
                Some(p) => b.project(p)?,
                None => b,
            };
            out.extend(branch.chain.apply(b)?);
        }
        Ok(out)
    });
    let updating_input = updating(&left);
    let mut spec = LookupJoinSpec {
        left_join,
        keys: [lkey.clone(), rkey],
        input: Arc::new(ls.as_arrow().clone()),
        updating: updating_input,
        table: Arc::new(rs.as_arrow().clone()),
        table_name,
        load,
        reload,
        filter,
        schema: out.clone(),
    };
    if updating_input {
        spec.schema = Arc::new(changelog::with_row_kind(&out));
    }
    Ok(vec![OperatorNode::single(
        Arc::new(spec),
        left,
        lkey,
        false,
    )])
}

/// The table a plan reads, when it reads one (through projections, filters and aliases).
pub(super) fn table_name_under(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::TableScan(s) => Some(
            s.table_name
                .table()
                .strip_prefix(crate::catalog::RAW_PREFIX)
                .unwrap_or(s.table_name.table())
                .to_string(),
        ),
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            table_name_under(plan.inputs()[0])
        }
        _ => None,
    }
}

/// A condition over a join's candidate pairs (both inputs' columns), as a physical expression.
pub(super) fn pair_filter(
    cat: &Catalog,
    join: &datafusion::logical_expr::Join,
    cond: Option<&Expr>,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let pairs = join
        .left
        .schema()
        .join(join.right.schema())
        .map_err(df_error)?;
    cond.map(|f| physical(cat, f, &pairs)).transpose()
}

/// A join's inputs' columns.
pub(super) fn input_schemas(
    join: &datafusion::logical_expr::Join,
) -> [datafusion::arrow::datatypes::SchemaRef; 2] {
    [
        Arc::new(join.left.schema().as_arrow().clone()),
        Arc::new(join.right.schema().as_arrow().clone()),
    ]
}

/// Both inputs' halves of a join's equalities, cast to one type per pair.
pub(super) fn join_keys(
    plan: &LogicalPlan,
    join: &datafusion::logical_expr::Join,
    cat: &Catalog,
) -> Result<[Vec<Arc<dyn PhysicalExpr>>; 2]> {
    use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
    let (ls, rs) = (join.left.schema(), join.right.schema());
    let mut keys = [Vec::new(), Vec::new()];
    for (l, r) in &join.on {
        let (mut lk, mut rk) = (physical(cat, l, ls)?, physical(cat, r, rs)?);
        let (lt, rt) = (
            lk.data_type(ls.as_arrow()).map_err(df_error)?,
            rk.data_type(rs.as_arrow()).map_err(df_error)?,
        );
        if lt != rt {
            // Equal keys must hash and compare alike on both inputs: one type.
            let Some(common) = comparison_coercion(&lt, &rt) else {
                return Err(PlanError::Invalid(format!(
                    "`{}`: cannot compare join keys {l} ({lt}) and {r} ({rt})",
                    plan.display()
                )));
            };
            lk = Arc::new(CastExpr::new(lk, common.clone(), None));
            rk = Arc::new(CastExpr::new(rk, common, None));
        }
        keys[0].push(lk);
        keys[1].push(rk);
    }
    Ok(keys)
}
