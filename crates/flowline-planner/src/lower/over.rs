//! OVER aggregations (`SUM(x) OVER (PARTITION BY k ORDER BY ts ROWS ...)`).

use super::*;

/// OVER aggregations, as Flink's: aggregates over a frame ending at the current row, ordered by
/// one time attribute ascending, over an append-only input. Each Window node becomes one
/// operator; DataFusion puts windows of different PARTITION BY / ORDER BY in separate nodes.
pub(super) fn lower_over(w: &datafusion::logical_expr::Window, cat: &Catalog) -> Result<Vec<Node>> {
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
