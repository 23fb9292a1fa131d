//! Flink's DECIMAL results where DataFusion's differ (Flink's `LogicalTypeMerging`):
//!
//! - division `DECIMAL(p1, s1) / DECIMAL(p2, s2)` has the scale `max(6, s1 + p2 + 1)` and rounds
//!   half up, where DataFusion's has the scale `s1 + 4` and truncates: `CAST(10 AS DECIMAL(10, 2))
//!   / 3` is `3.3333333333333`, a DECIMAL(21, 13);
//! - `CEIL`/`FLOOR` of a DECIMAL is a DECIMAL of scale 0, where DataFusion's is a DOUBLE;
//! - `ROUND(DECIMAL(p, s), r)` is a DECIMAL(1 + p - s + r, r), where DataFusion's keeps p.
//!
//! An analyzer rule (it runs after DataFusion's type coercion, so every operand's type is known)
//! rewrites these expressions into calls of functions that use Arrow's vectorised kernels.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{plan_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    cast, BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, ScalarUDF,
};
use datafusion::optimizer::AnalyzerRule;

use super::{arity, immutable, udf};

const MAX_PRECISION: u8 = 38;
/// Flink keeps at least this many fraction digits when a result's precision is cut to 38.
const MIN_ADJUSTED_SCALE: i8 = 6;

const CEIL: &str = "__flowline_decimal_ceil";
const FLOOR: &str = "__flowline_decimal_floor";
const DIVIDE: &str = "__flowline_decimal_divide";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![ceil_floor_udf(true), ceil_floor_udf(false), divide_udf()]
}

fn divide_udf() -> ScalarUDF {
    udf(DIVIDE, immutable(&[2]), divide_type, divide)
}

fn divide_type(args: &[DataType]) -> Result<DataType> {
    match args {
        [DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)] => {
            let (p, s) = division_type(*p1, *s1, *p2, *s2);
            Ok(DataType::Decimal128(p, s))
        }
        _ => plan_err!("decimal division of {args:?}"),
    }
}

/// `l / r` at Flink's result scale, rounded half up.
fn divide(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    use datafusion::arrow::compute::kernels::numeric::div;
    let out = divide_type(&[args[0].data_type().clone(), args[1].data_type().clone()])?;
    let (DataType::Decimal128(p1, s1), DataType::Decimal128(_, s2), DataType::Decimal128(_, s)) =
        (args[0].data_type(), args[1].data_type(), &out)
    else {
        unreachable!("checked by divide_type")
    };
    // Arrow divides at the left operand's scale + 4, truncating: widen the left operand so the
    // quotient has one digit more than Flink's scale, then round to it (the cast rounds half
    // away from zero, as Java's HALF_UP).
    let integer_digits = *p1 as i16 - *s1 as i16;
    let work = (*s as i16 + 1 - 4)
        .min(MAX_PRECISION as i16 - 4 - *s2 as i16 - integer_digits)
        .max(*s1 as i16) as i8;
    let left = if work > *s1 {
        datafusion::arrow::compute::cast(
            &args[0],
            &DataType::Decimal128((integer_digits + work as i16) as u8, work),
        )?
    } else {
        args[0].clone()
    };
    let quotient = div(&left, &args[1])?;
    Ok(datafusion::arrow::compute::cast(&quotient, &out)?)
}

fn ceil_floor_udf(ceil: bool) -> ScalarUDF {
    if ceil {
        udf(CEIL, immutable(&[1]), rounded_type, |a, _| {
            ceil_floor(a, true)
        })
    } else {
        udf(FLOOR, immutable(&[1]), rounded_type, |a, _| {
            ceil_floor(a, false)
        })
    }
}

/// Flink's `findDivisionDecimalType`.
fn division_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let scale = MIN_ADJUSTED_SCALE.max(s1 + p2 as i8 + 1);
    let precision = p1 as i16 - s1 as i16 + s2 as i16 + scale as i16;
    adjust(precision, scale)
}

/// Flink's `adjustPrecisionScale`: over 38 digits, the scale gives way to the integer part.
fn adjust(precision: i16, scale: i8) -> (u8, i8) {
    if precision <= MAX_PRECISION as i16 {
        return (precision as u8, scale);
    }
    let digits = precision - scale as i16;
    let scale = (MAX_PRECISION as i16 - digits).max(scale.min(MIN_ADJUSTED_SCALE) as i16);
    (MAX_PRECISION, scale as i8)
}

/// `CEIL`/`FLOOR` of a DECIMAL(p, s): Flink's `findRoundDecimalType(p, s, 0)`.
fn rounded_type(args: &[DataType]) -> Result<DataType> {
    arity("CEIL/FLOOR", args, &[1])?;
    match &args[0] {
        DataType::Decimal128(p, s) if *s > 0 => Ok(DataType::Decimal128(
            (1 + *p as i16 - *s as i16).min(MAX_PRECISION as i16) as u8,
            0,
        )),
        DataType::Decimal128(p, s) => Ok(DataType::Decimal128(*p, *s)),
        other => plan_err!("CEIL/FLOOR of a DECIMAL got {other}"),
    }
}

fn ceil_floor(args: &[ArrayRef], ceil: bool) -> Result<ArrayRef> {
    let DataType::Decimal128(_, s) = args[0].data_type().clone() else {
        return plan_err!("CEIL/FLOOR of a DECIMAL got {}", args[0].data_type());
    };
    let DataType::Decimal128(out_p, out_s) = rounded_type(&[args[0].data_type().clone()])? else {
        unreachable!("a DECIMAL rounds to a DECIMAL")
    };
    let unit = 10_i128.pow(s.max(0) as u32);
    let values = args[0].as_primitive::<Decimal128Type>();
    let out: datafusion::arrow::array::Decimal128Array = values.unary(|v| {
        let (q, r) = (v / unit, v % unit);
        match (ceil, r) {
            (true, r) if r > 0 => q + 1,
            (false, r) if r < 0 => q - 1,
            _ => q,
        }
    });
    Ok(Arc::new(out.with_precision_and_scale(out_p, out_s)?))
}

/// Rewrites decimal division and `CEIL`/`FLOOR` of decimals to Flink's results.
#[derive(Debug, Default)]
pub struct FlinkDecimals;

impl AnalyzerRule for FlinkDecimals {
    fn name(&self) -> &str {
        "flink_decimals"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let rewritten = plan.transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            // Output columns keep their names (`sum(a / b)` stays that, not the call's name):
            // the plans above refer to them by name.
            let names = NamePreserver::new(&plan);
            let rewritten = plan.map_expressions(|e| {
                let saved = names.save(&e);
                Ok(e.transform_up(|e| rewrite(e, &schema))?
                    .update_data(|e| saved.restore(e)))
            })?;
            if rewritten.transformed {
                rewritten.map_data(|p| p.recompute_schema())
            } else {
                Ok(rewritten)
            }
        })?;
        if !rewritten.transformed {
            return Ok(rewritten.data);
        }
        // The rewritten expressions have Flink's types, not the ones DataFusion coerced their
        // parents to (`a / b > 0.1` compared a DECIMAL(32, 10) with a cast 0.1; the quotient
        // is now a DECIMAL(38, 16)): coerce again.
        datafusion::optimizer::analyzer::type_coercion::TypeCoercion::new()
            .analyze(rewritten.data, config)
    }
}

fn rewrite(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    match &e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) => {
            let (DataType::Decimal128(..), DataType::Decimal128(..)) =
                (left.get_type(schema)?, right.get_type(schema)?)
            else {
                return Ok(Transformed::no(e));
            };
            // A call, not casts around the operator: the rule may run again on its own output.
            Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(
                    Arc::new(divide_udf()),
                    vec![(**left).clone(), (**right).clone()],
                ),
            )))
        }
        // ROUND(DECIMAL(p, s), r) is a DECIMAL(1 + p - s + r, r) for a constant r < s (Flink's
        // `findRoundDecimalType`); DataFusion's keeps p.
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.name() == "round" && args.len() == 2 =>
        {
            // The digits are a literal, perhaps cast (`2` is `CAST(2 AS INT)` before folding).
            let mut digits = &args[1];
            while let Expr::Cast(c) = digits {
                digits = &c.expr;
            }
            let (DataType::Decimal128(p, s), Expr::Literal(r, _)) =
                (args[0].get_type(schema)?, digits)
            else {
                return Ok(Transformed::no(e));
            };
            let r = match r.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(r)) => r,
                _ => return Ok(Transformed::no(e)),
            };
            let Ok(r) = i8::try_from(r) else {
                return Ok(Transformed::no(e));
            };
            if r < 0 || r >= s {
                return Ok(Transformed::no(e));
            }
            let p = (1 + p as i16 - s as i16 + r as i16).min(MAX_PRECISION as i16) as u8;
            Ok(Transformed::yes(cast(e, DataType::Decimal128(p, r))))
        }
        Expr::ScalarFunction(ScalarFunction { func, args })
            if matches!(func.name(), "ceil" | "floor") && args.len() == 1 =>
        {
            if !matches!(args[0].get_type(schema)?, DataType::Decimal128(..)) {
                return Ok(Transformed::no(e));
            }
            let udf = Arc::new(ceil_floor_udf(func.name() == "ceil"));
            Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(udf, args.clone()),
            )))
        }
        _ => Ok(Transformed::no(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_types_are_flinks() {
        assert_eq!(division_type(2, 1, 10, 0), (13, 12));
        assert_eq!(division_type(10, 2, 10, 0), (21, 13));
        // Over 38 digits the scale gives way to the integer digits, keeping at least 6.
        assert_eq!(division_type(38, 10, 10, 0), (38, 10));
        assert_eq!(division_type(38, 0, 10, 0), (38, 6));
    }
}
