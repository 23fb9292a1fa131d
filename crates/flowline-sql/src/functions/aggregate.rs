//! Flink's `AVG`: over integers it returns the input's integer type (the average truncated
//! toward zero, as Java's integer division), where DataFusion returns DOUBLE. Other inputs
//! behave as DataFusion's `avg`.
//!
//! The wrapper keeps integer arguments uncoerced (so the return type can follow them), feeds
//! DataFusion's Float64 accumulators with the values cast to DOUBLE, and casts the result back.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

pub fn flink_avg() -> AggregateUDF {
    AggregateUDF::new_from_impl(FlinkAvg {
        inner: datafusion::functions_aggregate::average::avg_udaf(),
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

struct FlinkAvg {
    inner: Arc<AggregateUDF>,
    signature: Signature,
}

impl fmt::Debug for FlinkAvg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlinkAvg")
    }
}

impl PartialEq for FlinkAvg {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for FlinkAvg {}
impl std::hash::Hash for FlinkAvg {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "flink_avg".hash(state)
    }
}

fn integer(t: &DataType) -> bool {
    t.is_integer()
}

fn float_field(f: &FieldRef) -> FieldRef {
    Arc::new(Field::new(f.name(), DataType::Float64, true))
}

/// Calls `f` with `args` as DataFusion's Float64 average sees them: DOUBLE input and result.
fn as_float<R>(args: AccumulatorArgs, f: impl FnOnce(AccumulatorArgs) -> R) -> R {
    let fields: Vec<FieldRef> = args.expr_fields.iter().map(float_field).collect();
    f(AccumulatorArgs {
        return_field: Arc::new(Field::new(args.name, DataType::Float64, true)),
        expr_fields: &fields,
        ..args
    })
}

impl AggregateUDFImpl for FlinkAvg {
    fn name(&self) -> &str {
        "avg"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [t] if integer(t) => Ok(vec![t.clone()]),
            [t @ (DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_))] => Ok(vec![t.clone()]),
            [t] if t.is_floating() || t.is_null() => Ok(vec![DataType::Float64]),
            [t] => plan_err!("AVG takes a number, got {t}"),
            _ => plan_err!("AVG takes one argument, got {}", args.len()),
        }
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [t] if integer(t) => Ok(t.clone()),
            _ => self.inner.return_type(args),
        }
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let out = args.return_field.data_type().clone();
        if !integer(&out) {
            return self.inner.inner().accumulator(args);
        }
        let inner = as_float(args, |a| self.inner.inner().accumulator(a))?;
        Ok(Box::new(IntegerAvg { inner, out }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !integer(args.return_field.data_type()) {
            return self.inner.inner().state_fields(args);
        }
        let fields: Vec<FieldRef> = args.input_fields.iter().map(float_field).collect();
        self.inner.inner().state_fields(StateFieldsArgs {
            input_fields: &fields,
            return_field: Arc::new(Field::new(args.name, DataType::Float64, true)),
            ..args
        })
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        if !integer(args.return_field.data_type()) {
            return self.inner.inner().groups_accumulator_supported(args);
        }
        as_float(args, |a| self.inner.inner().groups_accumulator_supported(a))
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let out = args.return_field.data_type().clone();
        if !integer(&out) {
            return self.inner.inner().create_groups_accumulator(args);
        }
        let inner = as_float(args, |a| self.inner.inner().create_groups_accumulator(a))?;
        Ok(Box::new(IntegerGroupsAvg { inner, out }))
    }
}

fn to_float(values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    values
        .iter()
        .map(|v| Ok(cast(v, &DataType::Float64)?))
        .collect()
}

#[derive(Debug)]
struct IntegerAvg {
    inner: Box<dyn Accumulator>,
    out: DataType,
}

impl Accumulator for IntegerAvg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(&to_float(values)?)
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.inner.evaluate()? {
            ScalarValue::Float64(Some(v)) => {
                ScalarValue::Float64(Some(v.trunc())).cast_to(&self.out)
            }
            other => other.cast_to(&self.out),
        }
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
        self.inner.retract_batch(&to_float(values)?)
    }
    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

struct IntegerGroupsAvg {
    inner: Box<dyn GroupsAccumulator>,
    out: DataType,
}

impl GroupsAccumulator for IntegerGroupsAvg {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(&to_float(values)?, groups, filter, total)
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        // Float → integer casts truncate toward zero, as Flink's integer average does.
        Ok(cast(&self.inner.evaluate(emit_to)?, &self.out)?)
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
        self.inner.convert_to_state(&to_float(values)?, filter)
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}
