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

mod aggregate;
mod exprs;
mod join;
mod over;
mod rank;
mod scan;

use aggregate::*;
use exprs::*;
use join::*;
use over::*;
use rank::*;
use scan::*;

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
                return Err(unsupported(
                    plan,
                    "an unnest of more than one list or of a nested list",
                    Some("unnest one list per CROSS JOIN UNNEST"),
                ));
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
                None => Err(unsupported(plan, "this extension node", None)),
            }
        }
        LogicalPlan::Sort(_) => Err(unsupported(
            plan,
            "ORDER BY (an unbounded result cannot be sorted)",
            Some("order within an OVER window, or keep the first rows with a TopN (ROW_NUMBER() OVER (ORDER BY ...) AS rn ... WHERE rn <= N)"),
        )),
        LogicalPlan::Limit(_) => Err(unsupported(
            plan,
            "LIMIT",
            Some("keep the first rows with a TopN (ROW_NUMBER() OVER (ORDER BY ...) AS rn ... WHERE rn <= N)"),
        )),
        other => Err(unsupported(other, "this plan node", None)),
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

/// A construct streaming jobs do not support (yet), named, with the supported alternative when
/// there is one.
fn unsupported(plan: &LogicalPlan, construct: &str, alternative: Option<&str>) -> PlanError {
    let node = plan.display().to_string();
    let alternative = alternative.map_or(String::new(), |a| format!("; {a}"));
    PlanError::Unsupported(format!(
        "`{node}`: {construct} is not supported in a streaming job{alternative}"
    ))
}
