//! MOD, IF.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::and;
use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, is_not_null};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::ScalarUDF;

use super::{arity, immutable, udf};

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf("mod", immutable(&[2]), mod_type, mod_eval),
        udf("if", immutable(&[3]), if_type, if_eval),
    ]
}

fn mod_type(args: &[DataType]) -> Result<DataType> {
    arity("MOD", args, &[2])?;
    let (a, b) = (&args[0], &args[1]);
    if !a.is_numeric() && !a.is_null() || !b.is_numeric() && !b.is_null() {
        return plan_err!("MOD expects numeric arguments, got {a} and {b}");
    }
    Ok(if a == b {
        a.clone()
    } else if a.is_integer() && b.is_integer() {
        DataType::Int64
    } else {
        DataType::Float64
    })
}

fn mod_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let t = mod_type(&[args[0].data_type().clone(), args[1].data_type().clone()])?;
    let (a, b) = (cast(&args[0], &t)?, cast(&args[1], &t)?);
    Ok(rem(&a, &b)?)
}

fn if_type(args: &[DataType]) -> Result<DataType> {
    arity("IF", args, &[3])?;
    match comparison_coercion(&args[1], &args[2]) {
        Some(t) => Ok(t),
        None => plan_err!(
            "IF: the two branches have incompatible types {} and {}",
            args[1],
            args[2]
        ),
    }
}

fn if_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let t = if_type(&[
        args[0].data_type().clone(),
        args[1].data_type().clone(),
        args[2].data_type().clone(),
    ])?;
    let cond = cast(&args[0], &DataType::Boolean)?;
    let cond: &BooleanArray = cond.as_boolean();
    // A NULL condition takes the ELSE branch, as in CASE WHEN.
    let mask = and(cond, &is_not_null(cond)?)?;
    let (then, otherwise) = (cast(&args[1], &t)?, cast(&args[2], &t)?);
    Ok(zip(&mask, &then, &otherwise)?)
}
