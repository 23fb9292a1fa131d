//! Recognises an interval join: a join whose condition bounds `l.t - r.t` from both sides with
//! constants, where `l.t` and `r.t` are the inputs' event-time attributes (Flink's rule: a bound
//! on a plain timestamp column, e.g. Nexmark's `A.expires`, keeps it a regular join).
//!
//! ```text
//! l.t BETWEEN r.t - INTERVAL '10' SECOND AND r.t + INTERVAL '5' SECOND   ─▶ l.t - r.t in [-10000, 5000]
//! l.t >= r.t AND l.t < r.t + INTERVAL '1' HOUR                          ─▶ l.t - r.t in [0, 3599999]
//! ```
//!
//! A time attribute is the column of a table's `WATERMARK FOR`, passed through projections,
//! filters and aliases under its name (a computed time column keeps the name it is declared
//! with); anything an operator produces (an aggregation's `window_end`, a join's columns) is not.

use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, LogicalPlan, Operator};

use datafusion::common::tree_node::TreeNode;
use flowline_sql::functions::window;

use crate::catalog::{Catalog, RAW_PREFIX};

/// The time attributes and bounds of an interval join: `l.t - r.t` in `[lower, upper]` ms.
pub(crate) struct IntervalBounds {
    pub times: [usize; 2],
    pub lower: i64,
    pub upper: i64,
}

/// The bounds when `join`'s condition makes it an interval join.
pub(crate) fn interval_bounds(join: &Join, cat: &Catalog) -> Option<IntervalBounds> {
    let filter = join.filter.as_ref()?;
    let (ls, rs) = (join.left.schema(), join.right.schema());
    // Per (left column, right column): the tightest bounds found.
    let mut found: Vec<(Column, Column, Option<i64>, Option<i64>)> = Vec::new();
    let mut add = |l: Column, r: Column, op: Operator, c: i64| {
        let i = match found.iter().position(|(fl, fr, _, _)| *fl == l && *fr == r) {
            Some(i) => i,
            None => {
                found.push((l, r, None, None));
                found.len() - 1
            }
        };
        let (_, _, lo, hi) = &mut found[i];
        match op {
            Operator::GtEq => *lo = Some(lo.map_or(c, |v| v.max(c))),
            Operator::Gt => *lo = Some(lo.map_or(c + 1, |v| v.max(c + 1))),
            Operator::LtEq => *hi = Some(hi.map_or(c, |v| v.min(c))),
            Operator::Lt => *hi = Some(hi.map_or(c - 1, |v| v.min(c - 1))),
            _ => {}
        }
    };
    for e in datafusion::logical_expr::utils::split_conjunction(filter) {
        let comparisons: Vec<(&Expr, Operator, &Expr)> = match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => vec![(left, *op, right)],
            Expr::Between(b) if !b.negated => vec![
                (&*b.expr, Operator::GtEq, &*b.low),
                (&*b.expr, Operator::LtEq, &*b.high),
            ],
            _ => continue,
        };
        for (a, op, b) in comparisons {
            if !matches!(
                op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) {
                continue;
            }
            let (Some((ca, oa)), Some((cb, ob))) = (time_term(a), time_term(b)) else {
                continue;
            };
            // a + oa op b + ob, as l - r op c.
            if ls.has_column(&ca) && rs.has_column(&cb) {
                add(ca, cb, op, ob - oa);
            } else if rs.has_column(&ca) && ls.has_column(&cb) {
                let flipped = op.swap().unwrap_or(op);
                add(cb, ca, flipped, oa - ob);
            }
        }
    }
    for (l, r, lo, hi) in found {
        let (Some(lower), Some(upper)) = (lo, hi) else {
            continue;
        };
        let (Ok(li), Ok(ri)) = (ls.index_of_column(&l), rs.index_of_column(&r)) else {
            continue;
        };
        if is_rowtime(&join.left, li, cat) && is_rowtime(&join.right, ri, cat) {
            return Some(IntervalBounds {
                times: [li, ri],
                lower,
                upper,
            });
        }
    }
    None
}

/// `col`, `col + INTERVAL`, `col - INTERVAL` (casts around the column allowed): the column
/// and the offset in ms.
fn time_term(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => time_term(&c.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, o) = time_term(left)?;
            let Expr::Literal(v, _) = right.as_ref() else {
                return None;
            };
            let ms = interval_ms(v)?;
            match op {
                Operator::Plus => Some((c, o + ms)),
                Operator::Minus => Some((c, o - ms)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A day-time interval in ms (a month has no fixed length: not a bound).
pub(crate) fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        _ => None,
    }
}

/// Whether column `col` of `plan` is an event-time attribute (see the module docs).
pub(crate) fn is_rowtime(plan: &LogicalPlan, col: usize, cat: &Catalog) -> bool {
    attribute(plan, col, cat, &|table, name| {
        table.watermark.as_ref().is_some_and(|w| w.column == name)
    })
}

/// Whether column `col` of `plan` is a time attribute: event time, or a `PROCTIME()` column.
pub(crate) fn is_time_attribute(plan: &LogicalPlan, col: usize, cat: &Catalog) -> bool {
    is_rowtime(plan, col, cat)
        || attribute(plan, col, cat, &|table, name| {
            table.columns.iter().any(|c| {
                c.name == name
                    && matches!(&c.kind, flowline_sql::ColumnKind::Computed { expr }
                        if matches!(expr, flowline_sql::sqlparser::ast::Expr::Function(f)
                            if f.name.to_string().eq_ignore_ascii_case("proctime")))
            })
        })
}

/// Whether column `col` of `plan` is a column of a table that `declared` says is a time
/// attribute, passed up through projections, filters, aliases and OVER windows by name.
fn attribute(
    plan: &LogicalPlan,
    col: usize,
    cat: &Catalog,
    declared: &dyn Fn(&flowline_sql::TableDef, &str) -> bool,
) -> bool {
    match plan {
        LogicalPlan::TableScan(s) => {
            let name = s.table_name.table();
            let Some(binding) = cat.binding_for_scan(name) else {
                return false;
            };
            declared(&binding.table, s.projected_schema.field(col).name())
        }
        LogicalPlan::Projection(p) => {
            // A computed time column: named as declared, over the raw scan of its table (the
            // optimiser may compute it lower down and only rename it here).
            let computed = raw_table_under(&p.input).is_some_and(|t| {
                cat.tables
                    .get(t)
                    .is_some_and(|b| declared(&b.table, p.schema.field(col).name()))
            });
            let mut e = &p.expr[col];
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            computed
                || matches!(e, Expr::Column(c) if p
                    .input
                    .schema()
                    .index_of_column(c)
                    .is_ok_and(|i| attribute(&p.input, i, cat, declared)))
        }
        LogicalPlan::Filter(f) => attribute(&f.input, col, cat, declared),
        LogicalPlan::SubqueryAlias(a) => attribute(&a.input, col, cat, declared),
        LogicalPlan::Window(w) => {
            col < w.input.schema().fields().len() && attribute(&w.input, col, cat, declared)
        }
        _ => false,
    }
}

/// The table whose raw scan (computed columns not yet added) lies under projections and filters.
fn raw_table_under(plan: &LogicalPlan) -> Option<&str> {
    match plan {
        LogicalPlan::TableScan(s) => s.table_name.table().strip_prefix(RAW_PREFIX),
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) => raw_table_under(plan.inputs()[0]),
        _ => None,
    }
}

/// Which bound of a window TVF's window a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowBound {
    Start,
    End,
}

/// The window bound column `col` of `plan` holds, by lineage (whatever it is named): passed up
/// through projections, filters, aliases, window functions, unnests, the group keys of
/// aggregations and the surviving side of joins.
pub(crate) fn window_bound(plan: &LogicalPlan, col: usize) -> Option<WindowBound> {
    let through = |input: &LogicalPlan, c: &datafusion::common::Column| {
        input
            .schema()
            .index_of_column(c)
            .ok()
            .and_then(|i| window_bound(input, i))
    };
    match plan {
        LogicalPlan::Projection(p) => {
            let mut e = p.expr.get(col)?;
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            match e {
                Expr::Column(c) => through(&p.input, c),
                other => expr_window_bound(other),
            }
        }
        LogicalPlan::Filter(f) => window_bound(&f.input, col),
        LogicalPlan::SubqueryAlias(a) => window_bound(&a.input, col),
        // A window TopN keeps its input's window columns.
        LogicalPlan::Window(w) => {
            if col < w.input.schema().fields().len() {
                window_bound(&w.input, col)
            } else {
                None
            }
        }
        LogicalPlan::Aggregate(a) => match a.group_expr.get(col)? {
            Expr::Column(c) => through(&a.input, c),
            other => expr_window_bound(other),
        },
        // CUMULATE's window_end: one element of the list its function computes.
        LogicalPlan::Unnest(u) => {
            let i = *u.dependency_indices.get(col)?;
            window_bound(&u.input, i)
        }
        // A join's output: the left columns then the right ones, or one side's for semi/anti.
        LogicalPlan::Join(j) => {
            use datafusion::logical_expr::JoinType;
            let left = j.left.schema().fields().len();
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                    window_bound(&j.left, col)
                }
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                    window_bound(&j.right, col)
                }
                _ if col < left => window_bound(&j.left, col),
                _ => window_bound(&j.right, col - left),
            }
        }
        _ => None,
    }
}

/// The bound an expression computes, by the outermost window function it calls:
/// `window_start` is TUMBLE's or HOP's, `window_end` is BOUND's or CUMULATE's.
fn expr_window_bound(e: &Expr) -> Option<WindowBound> {
    let mut found = None;
    let _ = e.apply(|e| {
        if let Expr::ScalarFunction(f) = e {
            let name = f.func.name();
            found = if [window::TUMBLE, window::HOP].contains(&name) {
                Some(WindowBound::Start)
            } else if [window::BOUND, window::CUMULATE].contains(&name) {
                Some(WindowBound::End)
            } else {
                None
            };
            if found.is_some() {
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}
