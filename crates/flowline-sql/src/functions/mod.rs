//! Flink scalar functions that DataFusion lacks or names differently.
//!
//! DataFusion's own functions stay available (`UPPER`, `SUBSTRING`, `CONCAT_WS`, `CHAR_LENGTH`, ...);
//! these are added on top, with Flink's semantics where the two differ (`TO_TIMESTAMP` takes a Java
//! date pattern and yields `TIMESTAMP(3)`, invalid input gives NULL, not an error).
//!
//! All of them work on whole arrays; a constant pattern argument is compiled once per batch.

pub mod aggregate;
pub mod calendar;
mod datetime;
pub mod decimal;
mod hash;
pub mod json;
mod misc;
mod string;
pub mod temporal;
pub mod text;
pub mod window;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

type ReturnTypeFn = fn(&[DataType]) -> Result<DataType>;
type EvalFn = fn(&[ArrayRef], usize) -> Result<ArrayRef>;

/// A Flink function: a name, an arity check, a return-type rule and a vectorised body.
#[derive(Debug)]
struct FlinkFunction {
    name: &'static str,
    signature: Signature,
    return_type: ReturnTypeFn,
    eval: EvalFn,
}

// Function identity is the name: there is one Flink function per name.
impl PartialEq for FlinkFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for FlinkFunction {}
impl std::hash::Hash for FlinkFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for FlinkFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        (self.return_type)(arg_types)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out = (self.eval)(&arrays, args.number_rows)?;
        Ok(ColumnarValue::Array(out))
    }
}

fn udf(
    name: &'static str,
    signature: Signature,
    return_type: ReturnTypeFn,
    eval: EvalFn,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(FlinkFunction {
        name,
        signature,
        return_type,
        eval,
    })
}

fn immutable(arities: &[usize]) -> Signature {
    use datafusion::logical_expr::TypeSignature;
    Signature::one_of(
        arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
        Volatility::Immutable,
    )
}

/// Every Flink function Flowline adds, to be registered on each session.
pub fn flink_functions() -> Vec<Arc<ScalarUDF>> {
    let mut fns = Vec::new();
    fns.extend(datetime::functions());
    fns.extend(string::functions());
    fns.extend(misc::functions());
    fns.extend(text::functions());
    fns.extend(hash::functions());
    fns.extend(decimal::functions());
    fns.extend(json::functions());
    fns.extend(calendar::functions());
    fns.extend(window::functions());
    fns.extend(temporal::functions());
    fns.into_iter().map(Arc::new).collect()
}

/// Checks the argument count, for functions whose signature is `Any`.
fn arity(name: &str, args: &[DataType], allowed: &[usize]) -> Result<()> {
    if allowed.contains(&args.len()) {
        Ok(())
    } else {
        datafusion::common::plan_err!("{name} takes {allowed:?} arguments, got {}", args.len())
    }
}
