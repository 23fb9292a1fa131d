//! Lowering: an optimised DataFusion logical plan → a tree of sources, stateless chains and
//! stateful operators.
//!
//! ```text
//! TableScan                          → Node::Source (+ WATERMARK FOR of the table, if any)
//! Projection / Filter / Unnest       → a step fused into the chain of the node(s) below
//! Union                              → several nodes feeding the same parent
//! Aggregate over window_start/_end   → Node::Operator(WindowAggregate), hash exchange on the keys
//! Extension(SessionWindowNode)       → Node::Operator(SessionWindow), hash exchange on PARTITION BY
//! Aggregate over other keys          → Node::Operator(GroupAggregate), updating, hash exchange on the keys
//! Join with equi-keys                → Node::Operator(Join), two inputs, each hashed on its keys
//! Join bounding l.t - r.t (time attributes) → Node::Operator(IntervalJoin), watermark-driven
//! Join with FOR SYSTEM_TIME AS OF    → Node::Operator(LookupJoin / TemporalJoin)
//! Filter rn <= N over Window(ROW_NUMBER) → Node::Operator(Rank: TopN / dedup), updating, hash on PARTITION BY
//!   ... PARTITION BY window_start, window_end → Node::Operator(WindowRank), append-only, per window
//! Window of aggregates (OVER)        → Node::Operator(OverAggregate), watermark-driven, hash on PARTITION BY
//! ```
//!
//! Updating streams carry a change-kind column after their columns
//! (`flowline_common::changelog`): projections above an updating node pass it through, a UNION
//! of updating and append-only inputs gives the append-only ones `+I`, and operators that only
//! take append-only input (windows, unnest) refuse an updating one.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::DFSchema;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::{enumerate_grouping_sets, grouping_set_to_exprlist};
use datafusion::logical_expr::{Aggregate, Expr, GroupingSet, LogicalPlan};
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
#[allow(deprecated)]
// its replacement, LoweredAggregateBuilder, is not public in DataFusion 55
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;
use flowline_common::changelog::{self, RowKind, ROW_KIND};
use flowline_operators::window_agg::GroupingSets;
use flowline_operators::{
    AggFunction, AggregateCall, ChainStep, ChangelogNormalizeSpec, GroupAggregateCall,
    GroupAggregateSpec, IntervalJoinSpec, JoinKind, JoinSpec, LookupJoinSpec, OverAggregateSpec,
    OverFrame, RankSpec, SessionAggregateSpec, SessionOutput, SessionWindowSpec, StatelessChain,
    TableLoader, VersionedJoinSpec, WindowAggregateSpec, WindowJoinSpec,
};

use crate::catalog::{df_error, Catalog};
use crate::session::SessionWindowNode;
use crate::{Branch, Node, OperatorNode, PlanError, Result, WatermarkSpec};
use flowline_sql::ColumnKind;

/// Lowers a query's plan. Watermarks are generated only under operators that use event time:
/// a stateless pipeline neither needs them nor pays for the columns they read.
pub(crate) fn lower(plan: &LogicalPlan, cat: &Catalog) -> Result<Vec<Node>> {
    lower_node(plan, cat, false)
}

/// Lowers a query whose sink uses event time (a partition-time commit): its sources generate
/// watermarks.
pub(crate) fn lower_timed(plan: &LogicalPlan, cat: &Catalog) -> Result<Vec<Node>> {
    lower_node(plan, cat, true)
}

fn lower_node(plan: &LogicalPlan, cat: &Catalog, timed: bool) -> Result<Vec<Node>> {
    let lower = |p: &LogicalPlan, c: &Catalog| lower_node(p, c, timed);
    match plan {
        LogicalPlan::TableScan(_) => {
            if cat
                .binding_for_scan(&table_of(plan))
                .is_some_and(|b| b.factory.upsert_source)
            {
                return lower_upsert_scan(plan, cat, timed);
            }
            Ok(vec![Node::Source(lower_scan(plan, cat, timed)?)])
        }
        LogicalPlan::Projection(p) => project(p, lower(&p.input, cat)?, cat),
        LogicalPlan::Filter(f) => {
            let step = ChainStep::Filter(physical(cat, &f.predicate, f.input.schema())?);
            let inputs = match lower_rank(f, cat, timed)? {
                Some(ranked) => ranked,
                None => lower(&f.input, cat)?,
            };
            fuse(inputs, step)
        }
        LogicalPlan::Window(w) => lower_over(w, cat),
        LogicalPlan::SubqueryAlias(a) => lower(&a.input, cat),
        LogicalPlan::Union(u) => {
            let target = u.schema.as_arrow();
            let lowered = u
                .inputs
                .iter()
                .map(|i| lower(i, cat))
                .collect::<Result<Vec<_>>>()?;
            let any_updating = lowered.iter().any(|nodes| updating(nodes));
            let mut all = Vec::new();
            for (input, nodes) in u.inputs.iter().zip(lowered) {
                let width = input.schema().fields().len();
                let step = conform_step(input.schema().as_arrow(), target)?;
                for node in nodes {
                    // Every input of an updating union carries the change kind; append-only ones insert.
                    let step = match (any_updating, node.updating()) {
                        (false, _) => step.clone(),
                        (true, true) => carry_row_kind(step.clone(), width),
                        (true, false) => with_row_kind(
                            step.clone(),
                            Arc::new(Literal::new(ScalarValue::Int8(Some(RowKind::Insert as i8)))),
                        ),
                    };
                    all.extend(fuse(vec![node], step)?);
                }
            }
            Ok(all)
        }
        LogicalPlan::Unnest(u) => {
            if u.list_type_columns.len() != 1
                || !u.struct_type_columns.is_empty()
                || u.list_type_columns[0].1.depth != 1
            {
                return Err(unsupported(plan, "an unnest of more than one list"));
            }
            let step = ChainStep::Unnest {
                list: u.list_type_columns[0].0,
                sources: u.dependency_indices.clone(),
                preserve_nulls: u.options.preserve_nulls(),
                schema: Arc::new(u.schema.as_arrow().clone()),
            };
            let inputs = lower(&u.input, cat)?;
            refuse_updating(plan, &inputs, "an unnest")?;
            fuse(inputs, step)
        }
        LogicalPlan::Aggregate(agg) if !is_window_aggregate(agg) => {
            lower_group_aggregate(plan, agg, cat)
        }
        LogicalPlan::Aggregate(agg) => lower_window_aggregate(plan, agg, cat),
        LogicalPlan::Join(join) => lower_join(plan, join, cat, timed),
        LogicalPlan::Extension(ext) => {
            match ext.node.as_any().downcast_ref::<SessionWindowNode>() {
                Some(node) => lower_session(node, cat),
                None => Err(unsupported(plan, "an operator")),
            }
        }
        other => Err(unsupported(other, "a stateful operator")),
    }
}

/// `table.exec.state.ttl` (checked when SET): how long unbounded operators keep a key that is
/// not updated; none (or 0) keeps state forever.
fn state_ttl(cat: &Catalog) -> Option<std::time::Duration> {
    cat.config
        .get("table.exec.state.ttl")
        .and_then(|v| flowline_common::options::parse_duration(v).ok())
        .filter(|d| !d.is_zero())
}

/// A projection fused over its lowered input.
fn project(
    p: &datafusion::logical_expr::Projection,
    inputs: Vec<Node>,
    cat: &Catalog,
) -> Result<Vec<Node>> {
    let exprs = p
        .expr
        .iter()
        .map(|e| physical(cat, e, p.input.schema()))
        .collect::<Result<Vec<_>>>()?;
    let step = ChainStep::Project {
        exprs,
        schema: Arc::new(p.schema.as_arrow().clone()),
    };
    let step = if updating(&inputs) {
        carry_row_kind(step, p.input.schema().fields().len())
    } else {
        step
    };
    fuse(inputs, step)
}

/// TopN and deduplication: a filter `rn <= N` (`rn < N`, `rn = 1`) over (projections of) a
/// window computing only `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS rn`, as Flink's
/// Rank. `None` when the filter is not over such a window. The filter itself stays above the
/// operator: every row it emits passes the `rn` bound, and other conditions apply as written.
fn lower_rank(
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
        let key = partition
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

/// OVER aggregations, as Flink's: aggregates over a frame ending at the current row, ordered by
/// one time attribute ascending, over an append-only input. Each Window node becomes one
/// operator; DataFusion puts windows of different PARTITION BY / ORDER BY in separate nodes.
fn lower_over(w: &datafusion::logical_expr::Window, cat: &Catalog) -> Result<Vec<Node>> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition};
    let input_schema = w.input.schema();
    let width = input_schema.fields().len();
    let out = w.schema.as_arrow();
    let mut window: Option<&datafusion::logical_expr::expr::WindowFunctionParams> = None;
    let mut aggregates = Vec::new();
    for (i, e) in w.window_expr.iter().enumerate() {
        let Expr::WindowFunction(wf) = strip_alias(e) else {
            return Err(PlanError::Unsupported(format!(
                "`{e}` is not a window function call"
            )));
        };
        let WindowFunctionDefinition::AggregateUDF(udaf) = &wf.fun else {
            return Err(PlanError::Unsupported(format!(
                "`{e}`: {} OVER (...) is supported only as TopN / deduplication: \
                 ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS rn with WHERE rn <= N (or rn = 1) \
                 above it. OVER windows compute aggregates (COUNT, SUM, AVG, MIN, MAX)",
                wf.fun.name().to_uppercase()
            )));
        };
        let p = &wf.params;
        match window {
            None => window = Some(p),
            Some(first)
                if first.partition_by == p.partition_by
                    && first.order_by == p.order_by
                    && first.window_frame == p.window_frame => {}
            Some(_) => {
                return Err(PlanError::Unsupported(format!(
                    "`{e}`: the OVER windows of one SELECT must all be the same (as in Flink)"
                )))
            }
        }
        let call = AggregateCallExpr {
            expr: e,
            name: udaf.name(),
            args: &p.args,
            distinct: p.distinct,
            filter: p.filter.as_deref(),
        };
        aggregates.push(retracting_call(
            cat,
            call,
            input_schema,
            out.field(width + i),
            "an OVER window",
        )?);
    }
    let Some(p) = window else {
        return Err(PlanError::Unsupported(
            "an OVER window without functions".into(),
        ));
    };
    let shown = &w.window_expr[0];
    let time = match p.order_by.as_slice() {
        [s] if s.asc => match &s.expr {
            Expr::Column(c) => input_schema
                .index_of_column(c)
                .ok()
                .filter(|i| crate::interval::is_time_attribute(&w.input, *i, cat)),
            _ => None,
        },
        _ => None,
    };
    let Some(time) = time else {
        return Err(PlanError::Unsupported(format!(
            "`{shown}`: an OVER window must be ORDER BY one time attribute ascending \
             (a column with WATERMARK FOR, or a PROCTIME() column), as in Flink"
        )));
    };
    let f = &p.window_frame;
    let bad_frame = || {
        PlanError::Unsupported(format!(
            "`{shown}`: OVER windows support frames from UNBOUNDED or n PRECEDING (ROWS) or \
             INTERVAL '..' PRECEDING (RANGE) to CURRENT ROW, as Flink; not {f}"
        ))
    };
    if !matches!(f.end_bound, WindowFrameBound::CurrentRow) {
        return Err(bad_frame());
    }
    let frame = match (&f.units, &f.start_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => {
            OverFrame::Rows(None)
        }
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
            match v.cast_to(&DataType::UInt64) {
                Ok(ScalarValue::UInt64(Some(n))) => OverFrame::Rows(Some(n)),
                _ => return Err(bad_frame()),
            }
        }
        (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(Some(0)),
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => {
            OverFrame::Range(None)
        }
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => {
            OverFrame::Range(Some(crate::interval::interval_ms(v).ok_or_else(bad_frame)?))
        }
        (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range(Some(0)),
        _ => return Err(bad_frame()),
    };
    let partition = p
        .partition_by
        .iter()
        .map(|e| physical(cat, e, input_schema))
        .collect::<Result<Vec<_>>>()?;
    let inputs = lower_node(&w.input, cat, true)?;
    if updating(&inputs) {
        return Err(PlanError::Unsupported(format!(
            "`{shown}`: an OVER aggregation takes an append-only input (as in Flink), \
             and its input is updating (a non-windowed aggregation, an outer join or TopN below it)"
        )));
    }
    let spec = OverAggregateSpec {
        partition: partition.clone(),
        time,
        proctime: !crate::interval::is_rowtime(&w.input, time, cat),
        frame,
        aggregates,
        schema: Arc::new(out.clone()),
        state_ttl: state_ttl(cat),
    };
    Ok(vec![OperatorNode::single(
        Arc::new(spec),
        inputs,
        partition,
        cat.late_sink().is_some(),
    )])
}

/// The expression under casts (the row number is cast to Flink's BIGINT).
fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_cast(&c.expr),
        Expr::TryCast(c) => strip_cast(&c.expr),
        other => other,
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// Whether the rows of `nodes` carry a change kind.
pub(crate) fn updating(nodes: &[Node]) -> bool {
    nodes.iter().any(Node::updating)
}

/// `what` (an operator that needs append-only input) refuses updating `inputs`.
fn refuse_updating(plan: &LogicalPlan, inputs: &[Node], what: &str) -> Result<()> {
    match inputs.iter().find_map(Node::updating_reason) {
        Some(reason) => Err(PlanError::Unsupported(format!(
            "`{}`: {what} needs an append-only input, but {reason}; \
             aggregate over a window TVF for final rows, or apply it before the updating operator",
            plan.display()
        ))),
        None => Ok(()),
    }
}

/// A projection over an updating input (whose change kind is column `input_width`) that
/// passes the change kind through.
pub(crate) fn carry_row_kind(step: ChainStep, input_width: usize) -> ChainStep {
    with_row_kind(step, Arc::new(Column::new(ROW_KIND, input_width)))
}

/// A projection that also outputs `kind` as the change-kind column.
fn with_row_kind(step: ChainStep, kind: Arc<dyn PhysicalExpr>) -> ChainStep {
    let ChainStep::Project { mut exprs, schema } = step else {
        return step;
    };
    exprs.push(kind);
    ChainStep::Project {
        exprs,
        schema: Arc::new(changelog::with_row_kind(&schema)),
    }
}

/// A projection picking columns `cols` of `schema` from a batch where column `cols[i]` sits at
/// position `positions[i]`.
fn pick_step(schema: &Schema, cols: &[usize], positions: &[usize]) -> ChainStep {
    let exprs = cols
        .iter()
        .zip(positions)
        .map(|(c, pos)| {
            Arc::new(Column::new(schema.field(*c).name(), *pos)) as Arc<dyn PhysicalExpr>
        })
        .collect();
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|c| schema.field(*c).clone())
            .collect::<Vec<Field>>(),
    ));
    ChainStep::Project { exprs, schema }
}

fn fuse(mut nodes: Vec<Node>, step: ChainStep) -> Result<Vec<Node>> {
    nodes
        .iter_mut()
        .for_each(|n| n.chain_mut().steps.push(step.clone()));
    Ok(nodes)
}

fn table_of(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::TableScan(s) => s.table_name.table().to_string(),
        _ => String::new(),
    }
}

/// A scan of an upsert source (upsert-kafka): the source reads every column with a change kind
/// (`+U`, `-D`), a ChangelogNormalize keyed by the PRIMARY KEY turns that into a changelog, and
/// the scan's projection and filters follow it. With `watermark`, the table's WATERMARK FOR is
/// generated at the source (the versioned side of a temporal join needs it).
fn lower_upsert_scan(plan: &LogicalPlan, cat: &Catalog, watermark: bool) -> Result<Vec<Node>> {
    let scanned = lower_scan(plan, cat, false)?;
    let table = &scanned.source.table;
    let full = table.source_schema();
    let key = table
        .primary_key
        .iter()
        .map(|k| {
            full.index_of(k).map_err(|_| {
                PlanError::Invalid(format!(
                    "table '{}': PRIMARY KEY column '{k}' is not a column",
                    table.name
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = ChangelogNormalizeSpec {
        key: key.clone(),
        schema: Arc::new(changelog::with_row_kind(&full)),
        state_ttl: state_ttl(cat),
    };
    let exchange = key
        .iter()
        .map(|i| Arc::new(Column::new(full.field(*i).name(), *i)) as Arc<dyn PhysicalExpr>)
        .collect();
    // The columns the query reads, and the change kind after them; then the scan's filters.
    let picked: Vec<usize> = scanned
        .projection
        .clone()
        .unwrap_or_else(|| (0..full.fields().len()).collect());
    let mut chain = StatelessChain::default();
    chain.steps.push(carry_row_kind(
        pick_step(&full, &picked, &picked),
        full.fields().len(),
    ));
    chain.steps.extend(scanned.chain.steps.iter().cloned());
    let mut source = Branch {
        source: scanned.source.clone(),
        projection: None,
        chain: StatelessChain::default(),
        watermark: None,
    };
    if watermark {
        if let Some((wm_plan, text)) = cat.watermark_plan(&table.name) {
            let wm = watermark_branch(wm_plan, cat)?;
            attach_watermark(&mut source, wm, text.clone());
        }
    }
    let mut node =
        OperatorNode::single(Arc::new(spec), vec![Node::Source(source)], exchange, false);
    *node.chain_mut() = chain;
    Ok(vec![node])
}

/// A scan becomes a source branch; with `watermark`, the table's WATERMARK FOR is fused in.
fn lower_scan(plan: &LogicalPlan, cat: &Catalog, watermark: bool) -> Result<Branch> {
    let LogicalPlan::TableScan(scan) = plan else {
        return Err(unsupported(plan, "a table scan"));
    };
    let name = scan.table_name.table();
    let Some(binding) = cat.binding_for_scan(name) else {
        return Err(PlanError::Unsupported(format!(
            "'{name}' is not a table declared with CREATE TABLE"
        )));
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
        chain
            .steps
            .push(ChainStep::Filter(physical(cat, f, &scan.projected_schema)?));
    }
    let mut branch = Branch {
        source: binding.clone(),
        projection: scan.projection.clone(),
        chain,
        watermark: None,
    };
    if watermark {
        if let Some((wm_plan, text)) = cat.watermark_plan(&binding.table.name) {
            let wm = watermark_branch(wm_plan, cat)?;
            attach_watermark(&mut branch, wm, text.clone());
        } else if binding
            .table
            .columns
            .iter()
            .any(|c| matches!(&c.kind, ColumnKind::Computed { expr } if is_proctime(expr)))
        {
            branch.watermark = Some(WatermarkSpec::ProcessingTime);
        }
    }
    Ok(branch)
}

/// The branch computing `SELECT <watermark expr> FROM table`: a scan and one projection.
fn watermark_branch(plan: &LogicalPlan, cat: &Catalog) -> Result<Branch> {
    let mut steps = Vec::new();
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(cat, e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                steps.push(ChainStep::Project {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::TableScan(_) => break,
            other => return Err(unsupported(other, "a watermark expression over one table")),
        }
    }
    let mut branch = lower_scan(node, cat, false)?;
    steps.reverse();
    branch.chain.steps.extend(steps);
    Ok(branch)
}

/// Reads the columns both chains need; each chain first picks its own columns.
fn attach_watermark(branch: &mut Branch, wm: Branch, text: String) {
    let physical = branch.source.table.source_schema();
    let all: Vec<usize> = (0..physical.fields().len()).collect();
    let main = branch.projection.clone().unwrap_or_else(|| all.clone());
    let wanted = wm.projection.clone().unwrap_or_else(|| all.clone());
    let mut read = main.clone();
    read.extend(wanted.iter().filter(|c| !main.contains(c)));
    let select = |cols: &[usize]| -> ChainStep {
        let positions: Vec<usize> = cols
            .iter()
            .map(|c| read.iter().position(|r| r == c).expect("column read"))
            .collect();
        pick_step(&physical, cols, &positions)
    };
    if read.len() > main.len() {
        branch.chain.steps.insert(0, select(&main));
    }
    let mut chain = wm.chain;
    if read != wanted {
        chain.steps.insert(0, select(&wanted));
    }
    branch.projection = if branch.projection.is_none() && read == all {
        None
    } else {
        Some(read)
    };
    branch.watermark = Some(WatermarkSpec::EventTime { chain, text });
}

fn is_proctime(expr: &flowline_sql::sqlparser::ast::Expr) -> bool {
    matches!(expr, flowline_sql::sqlparser::ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime"))
}

fn lower_window_aggregate(plan: &LogicalPlan, agg: &Aggregate, cat: &Catalog) -> Result<Vec<Node>> {
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
            return Err(unsupported(plan, "this form of grouping set, which"))
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
fn is_window_aggregate(agg: &Aggregate) -> bool {
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
fn window_key_positions(agg: &Aggregate, keys: &[Expr]) -> Option<(usize, usize)> {
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
fn lower_group_aggregate(plan: &LogicalPlan, agg: &Aggregate, cat: &Catalog) -> Result<Vec<Node>> {
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err(unsupported(
            plan,
            "GROUPING SETS, ROLLUP or CUBE without a window TVF, which",
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
fn group_aggregate_call(
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
struct AggregateCallExpr<'a> {
    expr: &'a Expr,
    name: &'a str,
    args: &'a [Expr],
    distinct: bool,
    filter: Option<&'a Expr>,
}

/// An aggregate computed with retracting accumulators (`what` names the operator in errors).
fn retracting_call(
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
fn session_input(agg: &Aggregate) -> Option<&SessionWindowNode> {
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

fn session_aggregate(agg: &Aggregate, cat: &Catalog) -> Result<Option<Node>> {
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

/// A regular equi-join: both inputs hash-partitioned on their halves of the equality, the rest
/// of the ON condition evaluated by the join on candidate pairs.
fn lower_join(
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
        other => return Err(unsupported(plan, &format!("a {other} join, which"))),
    };
    if join.null_aware {
        return Err(unsupported(
            plan,
            "NOT IN over a subquery (a NULL in the subquery empties the result), which; write NOT EXISTS,",
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
            "a join whose keys match NULL to NULL, which",
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
fn lower_interval_join(
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
fn lower_window_join(
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
type JoinInputs = ([Vec<Node>; 2], [Vec<Arc<dyn PhysicalExpr>>; 2]);

/// The lowered inputs of a watermark-driven join (interval, window), with their join keys;
/// None when an input is updating (the join then stays a regular one).
fn append_only_pair(
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
struct TemporalMarker {
    versioned: bool,
    /// The probe row's time (left input) and the table's column (right input).
    probe_time: datafusion::common::Column,
    table_column: datafusion::common::Column,
    /// The condition without the marker.
    rest: Option<Expr>,
}

fn temporal_marker(join: &datafusion::logical_expr::Join) -> Result<Option<TemporalMarker>> {
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
fn lower_temporal_join(
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
                &format!("a {other} temporal join (only inner and LEFT are), which"),
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
fn table_name_under(plan: &LogicalPlan) -> Option<String> {
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
fn pair_filter(
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
fn input_schemas(
    join: &datafusion::logical_expr::Join,
) -> [datafusion::arrow::datatypes::SchemaRef; 2] {
    [
        Arc::new(join.left.schema().as_arrow().clone()),
        Arc::new(join.right.schema().as_arrow().clone()),
    ]
}

/// Both inputs' halves of a join's equalities, cast to one type per pair.
fn join_keys(
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

/// DataFusion's `__grouping_id`: one bit per expression (1 = NULL in this set, first expression
/// in the highest bit), with repeated sets told apart by an ordinal above those bits.
fn grouping_ids(masks: &[Vec<bool>]) -> Vec<u64> {
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

fn lower_session(node: &SessionWindowNode, cat: &Catalog) -> Result<Vec<Node>> {
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

fn unsupported(plan: &LogicalPlan, what: &str) -> PlanError {
    let node = plan.display().to_string();
    PlanError::Unsupported(format!(
        "`{node}` needs {what}, which streaming jobs do not support yet; this version runs projections, filters, \
         functions, UNION ALL and window aggregations over window TVFs"
    ))
}

/// A column of `schema` by its unqualified name, as a physical expression.
fn column(cat: &Catalog, schema: &DFSchema, name: &str) -> Result<Arc<dyn PhysicalExpr>> {
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
fn aggregate_call(cat: &Catalog, e: &Expr, schema: &DFSchema) -> Result<AggregateCall> {
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

fn physical(cat: &Catalog, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    cat.ctx
        .state()
        .create_physical_expr(expr.clone(), schema)
        .map_err(df_error)
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
    Ok(ChainStep::Project {
        exprs,
        schema: Arc::new(target.clone()),
    })
}
