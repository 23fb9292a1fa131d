//! Window assignment functions behind the window TVFs (see `crate::windows`).
//!
//! They are internal (named `__flowline_*`): the TVF rewrite calls them with constant sizes in
//! milliseconds. Both batch and streaming plans evaluate them, so a window means the same thing
//! in `flowline query` and in `flowline run`. Window bounds follow Flink: a window of `size` with
//! `offset` starts at `ts - (ts - offset) mod size`; HOP and CUMULATE produce one value per window
//! the row belongs to (a list, unnested by the rewrite), in increasing order.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, PrimitiveArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit, TimestampMillisecondType};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};

use super::{arity, immutable, udf};

pub const TUMBLE: &str = "__flowline_tumble";
pub const HOP: &str = "__flowline_hop";
pub const CUMULATE: &str = "__flowline_cumulate";
pub const BOUND: &str = "__flowline_window_bound";
pub const TIME: &str = "__flowline_window_time";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(TUMBLE, immutable(&[3]), tumble_type, tumble_eval),
        udf(HOP, immutable(&[4]), list_type, hop_eval),
        udf(CUMULATE, immutable(&[4]), list_type, cumulate_eval),
        udf(BOUND, immutable(&[2]), bound_type, bound_eval),
        udf(TIME, immutable(&[3]), time_type, time_eval),
        udf(
            PROCTIME,
            Signature::exact(vec![], Volatility::Volatile),
            proctime_type,
            proctime_eval,
        ),
    ]
}

/// Flink's `PROCTIME()`: the wall clock when the row is processed, as TIMESTAMP_LTZ(3).
pub const PROCTIME: &str = "proctime";

fn proctime_type(_: &[DataType]) -> Result<DataType> {
    Ok(DataType::Timestamp(
        TimeUnit::Millisecond,
        Some(crate::types::LTZ_TIME_ZONE.into()),
    ))
}

fn proctime_eval(_: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let now = flowline_common::clock::now_millis();
    Ok(Arc::new(
        TimestampMillisecondArray::from_value(now, rows).with_timezone(crate::types::LTZ_TIME_ZONE),
    ))
}

const TS_MS: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

/// The start of the window of `size` (shifted by `offset`) that holds `ts`, all in ms.
pub fn window_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

fn check_time(name: &str, t: &DataType) -> Result<()> {
    match t {
        DataType::Timestamp(_, _) | DataType::Null => Ok(()),
        other => plan_err!(
            "{name}: the time attribute must be a TIMESTAMP or TIMESTAMP_LTZ column, got {other}"
        ),
    }
}

/// Millisecond values of a timestamp array of any unit (time zone dropped: values are UTC).
fn millis(a: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let c = cast(a, &TS_MS)?;
    Ok(c.as_primitive::<TimestampMillisecondType>().clone())
}

/// A constant ms argument (the rewrite passes literals).
fn constant(a: &ArrayRef, what: &str) -> Result<i64> {
    let c = cast(a, &DataType::Int64)?;
    let c: &Int64Array = c.as_primitive();
    match c.iter().flatten().next() {
        Some(v) => Ok(v),
        None if c.is_empty() => Ok(1),
        None => plan_err!("window {what} must not be NULL"),
    }
}

fn tumble_type(args: &[DataType]) -> Result<DataType> {
    arity("TUMBLE", args, &[3])?;
    check_time("TUMBLE", &args[0])?;
    Ok(TS_MS)
}

fn tumble_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let ts = millis(&args[0])?;
    let (size, offset) = (constant(&args[1], "size")?, constant(&args[2], "offset")?);
    let out: TimestampMillisecondArray = ts.unary(|t| window_start(t, size, offset));
    Ok(Arc::new(out))
}

fn list_type(args: &[DataType]) -> Result<DataType> {
    arity("HOP/CUMULATE", args, &[4])?;
    check_time("HOP/CUMULATE", &args[0])?;
    Ok(DataType::List(Arc::new(Field::new("item", TS_MS, true))))
}

/// Builds a list per row from `windows(ts)`; a NULL time gives an empty list (no window).
fn per_row_lists(
    ts: &TimestampMillisecondArray,
    per_row: usize,
    mut windows: impl FnMut(i64, &mut Vec<i64>),
) -> ArrayRef {
    let mut values = Vec::with_capacity(ts.len() * per_row);
    let mut offsets = Vec::with_capacity(ts.len() + 1);
    offsets.push(0i32);
    for t in ts.iter() {
        if let Some(t) = t {
            windows(t, &mut values);
        }
        offsets.push(values.len() as i32);
    }
    let values = PrimitiveArray::<TimestampMillisecondType>::from(values);
    let field = Arc::new(Field::new("item", TS_MS, true));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}

/// HOP(ts, slide, size, offset): the starts of every window `[s, s + size)` holding `ts`.
fn hop_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let ts = millis(&args[0])?;
    let (slide, size, offset) = (
        constant(&args[1], "slide")?,
        constant(&args[2], "size")?,
        constant(&args[3], "offset")?,
    );
    let per_row = (size / slide.max(1)).max(1) as usize;
    Ok(per_row_lists(&ts, per_row, |t, out| {
        let last = window_start(t, slide, offset);
        let mut first = last;
        while first - slide > t - size {
            first -= slide;
        }
        let mut s = first;
        while s <= last {
            out.push(s);
            s += slide;
        }
    }))
}

/// CUMULATE(ts, step, size, offset): the ends of every window `[start, start + k*step)` holding `ts`.
fn cumulate_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let ts = millis(&args[0])?;
    let (step, size, offset) = (
        constant(&args[1], "step")?,
        constant(&args[2], "size")?,
        constant(&args[3], "offset")?,
    );
    let per_row = (size / step.max(1)).max(1) as usize;
    Ok(per_row_lists(&ts, per_row, |t, out| {
        let start = window_start(t, size, offset);
        let mut end = start + step;
        while end <= start + size {
            if end > t {
                out.push(end);
            }
            end += step;
        }
    }))
}

fn bound_type(args: &[DataType]) -> Result<DataType> {
    arity("window bound", args, &[2])?;
    check_time("window bound", &args[0])?;
    Ok(TS_MS)
}

/// `t + ms`, as TIMESTAMP(3).
fn bound_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let t = millis(&args[0])?;
    let ms = constant(&args[1], "size")?;
    let out: TimestampMillisecondArray = t.unary(|v| v + ms);
    Ok(Arc::new(out))
}

fn time_type(args: &[DataType]) -> Result<DataType> {
    arity("window time", args, &[3])?;
    check_time("window time", &args[0])?;
    Ok(match &args[2] {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        _ => TS_MS,
    })
}

/// `window_time`: `t + ms - 1`, typed like the time attribute (TIMESTAMP or TIMESTAMP_LTZ).
fn time_eval(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let t = millis(&args[0])?;
    let ms = constant(&args[1], "size")?;
    let out: TimestampMillisecondArray = t.unary(|v| v + ms - 1);
    let tz = match args[2].data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    Ok(Arc::new(out.with_timezone_opt(tz)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_start_follows_flink_with_offsets_and_negative_times() {
        assert_eq!(window_start(12_345, 10_000, 0), 10_000);
        assert_eq!(window_start(-1, 10_000, 0), -10_000);
        assert_eq!(window_start(12_345, 10_000, 3_000), 3_000);
        assert_eq!(window_start(13_000, 10_000, 3_000), 13_000);
    }
}
