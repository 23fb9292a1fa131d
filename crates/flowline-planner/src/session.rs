//! SESSION window TVFs in plans.
//!
//! The SQL rewrite turns `TABLE(SESSION(...))` into a table `__flowline_session_N` and a
//! [`SessionSpec`]; the catalog defines that table here:
//! - streaming: a view over a [`SessionWindowNode`] (a DataFusion extension node that lowering
//!   turns into the session operator);
//! - batch (`flowline query`, and the oracle): the same sessions with window functions
//!   (`LAG` finds gaps, a running `SUM` numbers the sessions, `MIN`/`MAX` give their bounds).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{plan_err, DFSchema, DFSchemaRef, Result};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use flowline_sql::functions::window as f;
use flowline_sql::SessionSpec;

use crate::catalog::quote;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionWindowNode {
    pub input: LogicalPlan,
    pub time_col: String,
    pub keys: Vec<String>,
    pub gap_ms: i64,
    pub schema: DFSchemaRef,
}

impl PartialOrd for SessionWindowNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.time_col, &self.keys, self.gap_ms).partial_cmp(&(
            &other.time_col,
            &other.keys,
            other.gap_ms,
        ))
    }
}

impl SessionWindowNode {
    pub fn try_new(
        input: LogicalPlan,
        time_col: String,
        keys: Vec<String>,
        gap_ms: i64,
    ) -> Result<Self> {
        let schema = session_schema(input.schema(), &time_col, &keys)?;
        Ok(Self {
            input,
            time_col,
            keys,
            gap_ms,
            schema,
        })
    }
}

/// The input's columns, then window_start, window_end (TIMESTAMP(3)) and window_time (typed like
/// the time attribute).
fn session_schema(input: &DFSchema, time_col: &str, keys: &[String]) -> Result<DFSchemaRef> {
    let names: Vec<&String> = input.fields().iter().map(|f| f.name()).collect();
    for k in keys {
        if !names.contains(&k) {
            return plan_err!(
                "SESSION PARTITION BY {k}: no such column; the input has {}",
                join(&names)
            );
        }
    }
    let Some(time) = input.fields().iter().find(|f| f.name() == time_col) else {
        return plan_err!(
            "SESSION DESCRIPTOR({time_col}): no such column; the input has {}",
            join(&names)
        );
    };
    let tz = match time.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        other => {
            return plan_err!(
            "SESSION DESCRIPTOR({time_col}): the time attribute must be a TIMESTAMP, got {other}"
        )
        }
    };
    for name in ["window_start", "window_end", "window_time"] {
        if names.iter().any(|n| *n == name) {
            return plan_err!(
                "SESSION: the input already has a column named {name}; rename it first"
            );
        }
    }
    let extra = DFSchema::from_unqualified_fields(
        vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new(
                "window_time",
                DataType::Timestamp(TimeUnit::Millisecond, tz),
                false,
            ),
        ]
        .into(),
        Default::default(),
    )?;
    let mut schema = input.clone();
    schema.merge(&extra);
    Ok(Arc::new(schema))
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl UserDefinedLogicalNodeCore for SessionWindowNode {
    fn name(&self) -> &str {
        "SessionWindow"
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SessionWindow: partition=[{}], time={}, gap={}ms",
            self.keys.join(", "),
            self.time_col,
            self.gap_ms
        )
    }
    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let Some(input) = inputs.pop() else {
            return plan_err!("SessionWindow takes one input");
        };
        Self::try_new(input, self.time_col.clone(), self.keys.clone(), self.gap_ms)
    }
    /// Only the columns used above, the keys and the time attribute are read.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let input = self.input.schema();
        let n = input.fields().len();
        let mut need: Vec<usize> = output_columns.iter().copied().filter(|c| *c < n).collect();
        for name in self.keys.iter().chain(std::iter::once(&self.time_col)) {
            need.push(input.fields().iter().position(|f| f.name() == name)?);
        }
        need.sort_unstable();
        need.dedup();
        Some(vec![need])
    }
    fn prevent_predicate_push_down_columns(&self) -> std::collections::HashSet<String> {
        // Filtering rows before sessionisation would change the sessions.
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

/// The batch form of a session TVF, as SQL over `columns` of the input.
pub fn batch_sql(spec: &SessionSpec, columns: &[String]) -> String {
    let ts = &quote(&spec.time_col);
    let gap = spec.gap_ms;
    let keys: Vec<String> = spec.keys.iter().map(|k| quote(k)).collect();
    let part = if keys.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {}", keys.join(", "))
    };
    let by_session = if spec.keys.is_empty() {
        "PARTITION BY __flowline_sid".to_string()
    } else {
        format!("{part}, __flowline_sid")
    };
    let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let cols = cols.join(", ");
    format!(
        "SELECT {cols}, \
           {bound}(MIN({ts}) OVER ({by_session}), 0) AS window_start, \
           {bound}(MAX({ts}) OVER ({by_session}), {gap}) AS window_end, \
           {time}(MAX({ts}) OVER ({by_session}), {gap}, {ts}) AS window_time \
         FROM (SELECT *, SUM(__flowline_new) OVER ({part} ORDER BY {ts} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS __flowline_sid \
               FROM (SELECT *, CASE WHEN {ts} > {bound}(LAG({ts}) OVER ({part} ORDER BY {ts}), {gap}) THEN 1 \
                                    WHEN LAG({ts}) OVER ({part} ORDER BY {ts}) IS NULL THEN 1 ELSE 0 END AS __flowline_new \
                     FROM (SELECT * FROM {input}) AS __flowline_in WHERE {ts} IS NOT NULL) AS __flowline_gaps) AS __flowline_sessions",
        bound = f::BOUND,
        time = f::TIME,
        input = spec.input,
    )
}
