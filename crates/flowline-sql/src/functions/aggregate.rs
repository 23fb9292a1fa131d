//! Flink's integer results where DataFusion widens:
//!
//! - `AVG` over integers returns the input's integer type (the average truncated toward zero, as
//!   Java's integer division), where DataFusion returns DOUBLE;
//! - `SUM` over TINYINT, SMALLINT and INT returns the input's type (wrapping on overflow, as
//!   Java's arithmetic), where DataFusion returns BIGINT;
//! - `STDDEV_*` and `VAR_*` over integers return the input's type (truncated toward zero).
//!
//! Other inputs behave as DataFusion's functions. The wrapper keeps those integer arguments
//! uncoerced (so the return type can follow them), feeds DataFusion's accumulators with the
//! values cast to their working type (DOUBLE for AVG, BIGINT for SUM), and narrows the result.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

pub fn flink_avg() -> AggregateUDF {
    AggregateUDF::new_from_impl(IntegerResult {
        name: "avg",
        inner: datafusion::functions_aggregate::average::avg_udaf(),
        work: DataType::Float64,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

pub fn flink_sum() -> AggregateUDF {
    AggregateUDF::new_from_impl(IntegerResult {
        name: "sum",
        inner: datafusion::functions_aggregate::sum::sum_udaf(),
        work: DataType::Int64,
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

/// `STDDEV_*`/`VAR_*` (and Flink's `STDDEV`, `VARIANCE`) over integers return the input's type,
/// truncated toward zero, as Flink's.
pub fn flink_deviations() -> Vec<AggregateUDF> {
    use datafusion::functions_aggregate::{stddev, variance};
    [
        ("stddev", stddev::stddev_udaf()),
        ("stddev_samp", stddev::stddev_udaf()),
        ("stddev_pop", stddev::stddev_pop_udaf()),
        ("variance", variance::var_samp_udaf()),
        ("var_samp", variance::var_samp_udaf()),
        ("var_pop", variance::var_pop_udaf()),
    ]
    .into_iter()
    .map(|(name, inner)| {
        AggregateUDF::new_from_impl(IntegerResult {
            name,
            inner,
            work: DataType::Float64,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    })
    .collect()
}

/// DataFusion's aggregate `inner`, with an integer result of the argument's type.
struct IntegerResult {
    name: &'static str,
    inner: Arc<AggregateUDF>,
    /// The type the inner accumulators work in.
    work: DataType,
    signature: Signature,
}

impl fmt::Debug for IntegerResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flink {}", self.name)
    }
}

impl PartialEq for IntegerResult {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for IntegerResult {}
impl std::hash::Hash for IntegerResult {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        ("flink", self.name).hash(state)
    }
}

impl IntegerResult {
    /// Whether an argument of type `t` gives a result of its own type.
    fn narrowed(&self, t: &DataType) -> bool {
        match self.work {
            DataType::Int64 => matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32),
            _ => t.is_integer(),
        }
    }

    fn work_field(&self, f: &FieldRef) -> FieldRef {
        Arc::new(Field::new(f.name(), self.work.clone(), true))
    }

    /// Calls `f` with `args` as DataFusion's accumulator sees them: input and result of the
    /// working type.
    fn as_work<R>(&self, args: AccumulatorArgs, f: impl FnOnce(AccumulatorArgs) -> R) -> R {
        let fields: Vec<FieldRef> = args
            .expr_fields
            .iter()
            .map(|f| self.work_field(f))
            .collect();
        f(AccumulatorArgs {
            return_field: Arc::new(Field::new(args.name, self.work.clone(), true)),
            expr_fields: &fields,
            ..args
        })
    }
}

impl AggregateUDFImpl for IntegerResult {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [t] if self.narrowed(t) => Ok(vec![t.clone()]),
            // DataFusion's coercions (its functions coerce by signature, not by this method).
            [t @ (DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_))] => Ok(vec![t.clone()]),
            [t] if t.is_floating() => Ok(vec![DataType::Float64]),
            [t] if t.is_unsigned_integer() && self.work == DataType::Int64 => {
                Ok(vec![DataType::UInt64])
            }
            [t] if t.is_integer() || t.is_null() => Ok(vec![self.work.clone()]),
            [t] => plan_err!("{} takes a number, got {t}", self.name.to_uppercase()),
            _ => plan_err!(
                "{} takes one argument, got {}",
                self.name.to_uppercase(),
                args.len()
            ),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t] if self.narrowed(t) => Ok(t.clone()),
            _ => self.inner.return_type(args),
        }
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let out = args.return_field.data_type().clone();
        if !self.narrowed(&out) {
            return self.inner.inner().accumulator(args);
        }
        let inner = self.as_work(args, |a| self.inner.inner().accumulator(a))?;
        Ok(Box::new(Narrowed {
            inner,
            work: self.work.clone(),
            out,
        }))
    }
    // OVER windows with a sliding frame (ROWS n PRECEDING) use these.
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let out = args.return_field.data_type().clone();
        if !self.narrowed(&out) {
            return self.inner.inner().create_sliding_accumulator(args);
        }
        let inner = self.as_work(args, |a| self.inner.inner().create_sliding_accumulator(a))?;
        Ok(Box::new(Narrowed {
            inner,
            work: self.work.clone(),
            out,
        }))
    }
    fn reverse_expr(&self) -> datafusion::logical_expr::ReversedUDAF {
        self.inner.inner().reverse_expr()
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !self.narrowed(args.return_field.data_type()) {
            return self.inner.inner().state_fields(args);
        }
        let fields: Vec<FieldRef> = args
            .input_fields
            .iter()
            .map(|f| self.work_field(f))
            .collect();
        self.inner.inner().state_fields(StateFieldsArgs {
            input_fields: &fields,
            return_field: Arc::new(Field::new(args.name, self.work.clone(), true)),
            ..args
        })
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        if !self.narrowed(args.return_field.data_type()) {
            return self.inner.inner().groups_accumulator_supported(args);
        }
        self.as_work(args, |a| self.inner.inner().groups_accumulator_supported(a))
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let out = args.return_field.data_type().clone();
        if !self.narrowed(&out) {
            return self.inner.inner().create_groups_accumulator(args);
        }
        let inner = self.as_work(args, |a| self.inner.inner().create_groups_accumulator(a))?;
        Ok(Box::new(NarrowedGroups {
            inner,
            work: self.work.clone(),
            out,
        }))
    }
}

fn to_work(values: &[ArrayRef], work: &DataType) -> Result<Vec<ArrayRef>> {
    values.iter().map(|v| Ok(cast(v, work)?)).collect()
}

/// The result in the argument's type: a BIGINT sum wraps (Java's `int` arithmetic), a DOUBLE
/// average truncates toward zero (Java's integer division; Arrow's float → integer cast does).
fn narrow(result: &ArrayRef, out: &DataType) -> Result<ArrayRef> {
    match result
        .as_primitive_opt::<Int64Type>()
        .and_then(|wide| flowline_common::integers::wrap_to(wide, out))
    {
        Some(narrowed) => Ok(narrowed),
        None => Ok(cast(result, out)?),
    }
}

#[derive(Debug)]
struct Narrowed {
    inner: Box<dyn Accumulator>,
    work: DataType,
    out: DataType,
}

impl Accumulator for Narrowed {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(&to_work(values, &self.work)?)
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let result = self.inner.evaluate()?.to_array()?;
        ScalarValue::try_from_array(&narrow(&result, &self.out)?, 0)
    }
    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<Self>()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }
    // Sliding window frames (OVER ... ROWS n PRECEDING) retract rows leaving the frame.
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(&to_work(values, &self.work)?)
    }
    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

struct NarrowedGroups {
    inner: Box<dyn GroupsAccumulator>,
    work: DataType,
    out: DataType,
}

impl GroupsAccumulator for NarrowedGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(&to_work(values, &self.work)?, groups, filter, total)
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        narrow(&self.inner.evaluate(emit_to)?, &self.out)
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.inner.state(emit_to)
    }
    fn merge_batch(&mut self, values: &[ArrayRef], groups: &[usize], total: usize) -> Result<()> {
        self.inner.merge_batch(values, groups, total)
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.inner
            .convert_to_state(&to_work(values, &self.work)?, filter)
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}
