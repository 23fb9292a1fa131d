//! Flink's calendar arithmetic: `TIMESTAMPADD(unit, n, t)`, `TIMESTAMPDIFF(unit, t1, t2)`,
//! `FLOOR(t TO unit)` / `CEIL(t TO unit)`.
//!
//! The SQL front end turns the unit keyword into a string argument (`TIMESTAMPADD(DAY, ...)` is
//! `__flowline_timestampadd('DAY', ...)`). Values are worked on as microseconds; the result has
//! the input's type (a DATE stays a DATE).

use std::sync::Arc;

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Builder, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::ScalarUDF;

use super::string::as_utf8;
use super::{arity, immutable, udf};

pub const TIMESTAMPADD: &str = "__flowline_timestampadd";
pub const TIMESTAMPDIFF: &str = "__flowline_timestampdiff";
pub const FLOOR_TO: &str = "__flowline_floor_to";
pub const CEIL_TO: &str = "__flowline_ceil_to";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(TIMESTAMPADD, immutable(&[3]), add_type, timestampadd),
        udf(
            TIMESTAMPDIFF,
            immutable(&[3]),
            |a| arity("TIMESTAMPDIFF", a, &[3]).map(|_| DataType::Int32),
            timestampdiff,
        ),
        udf(FLOOR_TO, immutable(&[2]), round_type, |a, _| {
            round_to(a, false)
        }),
        udf(CEIL_TO, immutable(&[2]), round_type, |a, _| {
            round_to(a, true)
        }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Unit {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "MICROSECOND" => Self::Microsecond,
            "MILLISECOND" => Self::Millisecond,
            "SECOND" => Self::Second,
            "MINUTE" => Self::Minute,
            "HOUR" => Self::Hour,
            "DAY" => Self::Day,
            "WEEK" => Self::Week,
            "MONTH" => Self::Month,
            "QUARTER" => Self::Quarter,
            "YEAR" => Self::Year,
            other => return exec_err!("unknown time unit '{other}'"),
        })
    }

    /// The unit's length in microseconds, for the units of fixed length.
    fn micros(self) -> Option<i64> {
        Some(match self {
            Self::Microsecond => 1,
            Self::Millisecond => 1_000,
            Self::Second => 1_000_000,
            Self::Minute => 60_000_000,
            Self::Hour => 3_600_000_000,
            Self::Day => 86_400_000_000,
            Self::Week => 7 * 86_400_000_000,
            Self::Month | Self::Quarter | Self::Year => return None,
        })
    }

    fn months(self) -> u32 {
        match self {
            Self::Quarter => 3,
            Self::Year => 12,
            _ => 1,
        }
    }
}

fn temporal(name: &str, t: &DataType) -> Result<()> {
    match t {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Null => Ok(()),
        other => plan_err!("{name} takes a DATE or TIMESTAMP, got {other}"),
    }
}

fn add_type(args: &[DataType]) -> Result<DataType> {
    arity("TIMESTAMPADD", args, &[3])?;
    temporal("TIMESTAMPADD", &args[2])?;
    Ok(args[2].clone())
}

fn round_type(args: &[DataType]) -> Result<DataType> {
    arity("FLOOR/CEIL ... TO", args, &[2])?;
    temporal("FLOOR/CEIL ... TO", &args[1])?;
    Ok(args[1].clone())
}

/// The unit of a constant unit argument.
fn unit_of(a: &ArrayRef) -> Result<Unit> {
    let units = as_utf8(a)?;
    let units = units.as_string::<i32>();
    if units.is_empty() || units.is_null(0) {
        return exec_err!("the time unit is NULL");
    }
    Unit::parse(units.value(0))
}

fn micros(a: &ArrayRef) -> Result<TimestampMicrosecondArray> {
    let t = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(t.as_primitive::<TimestampMicrosecondType>().clone())
}

fn datetime(us: i64) -> Option<NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(us).map(|d| d.naive_utc())
}

fn back(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp_micros()
}

/// Results in microseconds, cast back to the type of `like`.
fn like(values: TimestampMicrosecondArray, like: &DataType) -> Result<ArrayRef> {
    let values: ArrayRef = Arc::new(values);
    if matches!(like, DataType::Null) {
        return Ok(values);
    }
    Ok(cast(&values, like)?)
}

fn add(t: i64, unit: Unit, n: i64) -> Option<i64> {
    match unit.micros() {
        Some(len) => t.checked_add(n.checked_mul(len)?),
        None => {
            let dt = datetime(t)?;
            let months = n.checked_mul(unit.months() as i64)?;
            let moved = if months >= 0 {
                dt.checked_add_months(Months::new(u32::try_from(months).ok()?))
            } else {
                dt.checked_sub_months(Months::new(u32::try_from(-months).ok()?))
            }?;
            Some(back(moved))
        }
    }
}

fn timestampadd(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let unit = unit_of(&args[0])?;
    let n = cast(&args[1], &DataType::Int64)?;
    let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let t = micros(&args[2])?;
    let out: TimestampMicrosecondArray = t
        .iter()
        .zip(n.iter())
        .map(|(t, n)| add(t?, unit, n?))
        .collect();
    like(out, args[2].data_type())
}

/// Whole months from `a` to `b`, as Flink counts them (a month is complete when the day and time
/// of `b` reach those of `a`).
fn months_between(a: NaiveDateTime, b: NaiveDateTime) -> i64 {
    let months = (b.year() as i64 - a.year() as i64) * 12 + b.month() as i64 - a.month() as i64;
    let rest = |d: NaiveDateTime| (d.day(), d.num_seconds_from_midnight(), d.nanosecond());
    if months > 0 && rest(b) < rest(a) {
        months - 1
    } else if months < 0 && rest(b) > rest(a) {
        months + 1
    } else {
        months
    }
}

fn timestampdiff(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let unit = unit_of(&args[0])?;
    let (a, b) = (micros(&args[1])?, micros(&args[2])?);
    let mut out = Int32Builder::with_capacity(rows);
    for (a, b) in a.iter().zip(b.iter()) {
        let (Some(a), Some(b)) = (a, b) else {
            out.append_null();
            continue;
        };
        let diff = match unit.micros() {
            Some(len) => (b - a) / len,
            None => match (datetime(a), datetime(b)) {
                (Some(x), Some(y)) => months_between(x, y) / unit.months() as i64,
                _ => return exec_err!("TIMESTAMPDIFF: a time out of range"),
            },
        };
        // Flink's result is an INT.
        out.append_value(diff as i32);
    }
    Ok(Arc::new(out.finish()))
}

fn floor(dt: NaiveDateTime, unit: Unit) -> Option<NaiveDateTime> {
    let date = dt.date();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0);
    match unit {
        Unit::Microsecond | Unit::Millisecond | Unit::Second | Unit::Minute | Unit::Hour => {
            let len = unit.micros()?;
            datetime(back(dt).div_euclid(len) * len)
        }
        Unit::Day => midnight(date),
        // Flink's weeks start on Sunday.
        Unit::Week => midnight(date - Duration::days(date.weekday().num_days_from_sunday() as i64)),
        Unit::Month => midnight(date.with_day(1)?),
        Unit::Quarter => midnight(NaiveDate::from_ymd_opt(
            date.year(),
            (date.month0() / 3) * 3 + 1,
            1,
        )?),
        Unit::Year => midnight(NaiveDate::from_ymd_opt(date.year(), 1, 1)?),
    }
}

fn round_to(args: &[ArrayRef], ceil: bool) -> Result<ArrayRef> {
    let unit = unit_of(&args[0])?;
    let t = micros(&args[1])?;
    let out: TimestampMicrosecondArray = t
        .iter()
        .map(|t| {
            let t = t?;
            let down = back(floor(datetime(t)?, unit)?);
            if ceil && down != t {
                add(down, unit, 1)
            } else {
                Some(down)
            }
        })
        .collect();
    like(out, args[1].data_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn months_between_counts_whole_months() {
        assert_eq!(
            months_between(at("2024-01-15 00:00:00"), at("2024-03-14 00:00:00")),
            1
        );
        assert_eq!(
            months_between(at("2024-01-15 00:00:00"), at("2024-03-15 00:00:00")),
            2
        );
        assert_eq!(
            months_between(at("2024-03-14 00:00:00"), at("2024-01-15 00:00:00")),
            -1
        );
    }

    #[test]
    fn floor_and_ceil() {
        let t = back(at("2024-03-15 10:20:30"));
        let f = |u| floor(datetime(t).unwrap(), u).unwrap().to_string();
        assert_eq!(f(Unit::Hour), "2024-03-15 10:00:00");
        assert_eq!(f(Unit::Month), "2024-03-01 00:00:00");
        assert_eq!(f(Unit::Quarter), "2024-01-01 00:00:00");
        assert_eq!(f(Unit::Week), "2024-03-10 00:00:00");
        let down = back(floor(datetime(t).unwrap(), Unit::Month).unwrap());
        assert_eq!(
            datetime(add(down, Unit::Month, 1).unwrap())
                .unwrap()
                .to_string(),
            "2024-04-01 00:00:00"
        );
    }
}
