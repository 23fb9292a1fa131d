//! `FOR SYSTEM_TIME AS OF`: Flink's temporal and lookup joins, rewritten before DataFusion plans
//! the query (it has no temporal join).
//!
//! ```text
//! JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur
//!   ─▶ JOIN rates AS r ON o.cur = r.cur AND __flowline_versioned(o.ts, r.<rates' rowtime>)
//! JOIN dim FOR SYSTEM_TIME AS OF o.proc AS d ON o.k = d.k
//!   ─▶ JOIN dim AS d ON o.k = d.k AND __flowline_lookup(o.proc, d.<first column>)
//! ```
//!
//! Which one is decided by the joined table, as in Flink: a table with a `WATERMARK` (and the
//! `PRIMARY KEY` a versioned table needs) is joined at the probe row's event time; a table
//! without one is looked up as it is when the row is processed (its connector must be bounded:
//! the join reads it whole). Lowering finds the marker in the join condition
//! (`flowline_sql::functions::temporal`) and plans the temporal join operator.

use std::ops::ControlFlow;

use flowline_sql::functions::temporal::{LOOKUP, VERSIONED};
use flowline_sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, JoinConstraint, JoinOperator, ObjectName, Query, SetExpr,
    TableFactor, TableVersion, TableWithJoins, VisitMut, VisitorMut,
};

use crate::catalog::Catalog;
use crate::{PlanError, Result};

/// Rewrites every `FOR SYSTEM_TIME AS OF` of `query` (and its subqueries).
pub(crate) fn rewrite(query: &mut Query, cat: &Catalog) -> Result<()> {
    let mut visitor = Rewriter { cat, error: None };
    let _ = query.visit(&mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Rewriter<'a> {
    cat: &'a Catalog,
    error: Option<PlanError>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Err(e) = body(&mut query.body, self.cat) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn body(set: &mut SetExpr, cat: &Catalog) -> Result<()> {
    match set {
        SetExpr::Select(select) => {
            for from in &mut select.from {
                tables(from, cat)?;
            }
            Ok(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            body(left, cat)?;
            body(right, cat)
        }
        // Nested queries are visited on their own.
        _ => Ok(()),
    }
}

fn tables(from: &mut TableWithJoins, cat: &Catalog) -> Result<()> {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = &mut from.relation
    {
        tables(table_with_joins, cat)?;
    }
    if let TableFactor::Table {
        name,
        version: Some(_),
        ..
    } = &from.relation
    {
        return Err(PlanError::Invalid(format!(
            "FOR SYSTEM_TIME AS OF on '{name}': a temporal table is joined to another table \
             (FROM orders AS o JOIN {name} FOR SYSTEM_TIME AS OF o.ts AS r ON ...), it cannot come first"
        )));
    }
    for join in &mut from.joins {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = &mut join.relation
        {
            tables(table_with_joins, cat)?;
        }
        let TableFactor::Table {
            name,
            alias,
            version,
            ..
        } = &mut join.relation
        else {
            continue;
        };
        let Some(v) = version.take() else {
            continue;
        };
        let table = flowline_sql::script::object_name(name);
        let TableVersion::ForSystemTimeAsOf(time) = v else {
            return Err(PlanError::Invalid(format!(
                "'{table}': only FOR SYSTEM_TIME AS OF selects a table's version"
            )));
        };
        if !matches!(time, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            return Err(PlanError::Invalid(format!(
                "JOIN {table} FOR SYSTEM_TIME AS OF {time}: the version is chosen by a time attribute \
                 of the other input, e.g. FOR SYSTEM_TIME AS OF o.order_time (an event-time column) or \
                 o.proc_time (a PROCTIME() column)"
            )));
        }
        let Some(binding) = cat.tables.get(&table) else {
            let what = if cat.views.contains(&table) {
                "is a view; joining a versioned view is not supported yet, join a table declared with CREATE TABLE"
            } else {
                "is not a table declared with CREATE TABLE"
            };
            return Err(PlanError::Invalid(format!(
                "JOIN {table} FOR SYSTEM_TIME AS OF {time}: '{table}' {what}"
            )));
        };
        let def = &binding.table;
        let reference = alias
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| Ident::new(table.clone()));
        let column =
            |c: &str| Expr::CompoundIdentifier(vec![reference.clone(), Ident::with_quote('`', c)]);
        let marker = match &def.watermark {
            Some(wm) => {
                if def.primary_key.is_empty() {
                    return Err(PlanError::Invalid(format!(
                        "JOIN {table} FOR SYSTEM_TIME AS OF {time}: an event-time temporal join needs a \
                         versioned table, one with a PRIMARY KEY (the key whose versions are joined) \
                         and a WATERMARK; '{table}' has no PRIMARY KEY"
                    )));
                }
                call(VERSIONED, time, column(&wm.column))
            }
            None => {
                if let Some(hint) = (binding.factory.unbounded_hint)(&binding.options) {
                    return Err(PlanError::Invalid(format!(
                        "JOIN {table} FOR SYSTEM_TIME AS OF {time}: '{table}' has no WATERMARK, so it is \
                         joined as a lookup table, read whole; but connector '{}' is unbounded ({hint}). \
                         Give it a PRIMARY KEY and a WATERMARK to join it as a versioned table",
                        binding.factory.name
                    )));
                }
                let Some(first) = def.columns.first() else {
                    return Err(PlanError::Invalid(format!("'{table}' has no columns")));
                };
                call(LOOKUP, time, column(&first.name))
            }
        };
        let constraint = match &mut join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c) => c,
            _ => {
                return Err(PlanError::Invalid(format!(
                    "JOIN {table} FOR SYSTEM_TIME AS OF ...: a temporal join is an inner JOIN or a \
                     LEFT JOIN"
                )))
            }
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(PlanError::Invalid(format!(
                "JOIN {table} FOR SYSTEM_TIME AS OF ...: a temporal join needs ON with an equality on \
                 the table's key (ON o.currency = r.currency)"
            )));
        };
        let cond = std::mem::replace(
            on,
            Expr::Value(flowline_sql::sqlparser::ast::Value::Null.into()),
        );
        *on = Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(cond))),
            op: BinaryOperator::And,
            right: Box::new(marker),
        };
    }
    Ok(())
}

fn call(name: &str, a: Expr, b: Expr) -> Expr {
    let arg = |e: Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![arg(a), arg(b)],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}
