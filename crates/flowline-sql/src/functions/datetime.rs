//! DATE_FORMAT, TO_DATE, TO_TIMESTAMP, TO_TIMESTAMP_LTZ, UNIX_TIMESTAMP, FROM_UNIXTIME and the field
//! functions HOUR, MINUTE, ... (Flink returns BIGINT for those).
//!
//! Patterns are Java `SimpleDateFormat` patterns (`yyyy-MM-dd HH:mm:ss`), as in Flink. The session
//! time zone is UTC.

use std::fmt::Write;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::temporal::{date_part, DatePart};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

use super::string::as_utf8;
use super::{arity, immutable, udf};
use crate::types::LTZ_TIME_ZONE;

/// Flink's default pattern for TO_TIMESTAMP, UNIX_TIMESTAMP and FROM_UNIXTIME.
const DEFAULT_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

pub(super) fn functions() -> Vec<ScalarUDF> {
    let mut fns = vec![
        udf(
            "date_format",
            immutable(&[2]),
            |a| arity("DATE_FORMAT", a, &[2]).map(|_| DataType::Utf8),
            date_format,
        ),
        udf(
            "to_timestamp",
            immutable(&[1, 2]),
            |a| arity("TO_TIMESTAMP", a, &[1, 2]).map(|_| ts_ms(false)),
            to_timestamp,
        ),
        udf(
            "to_timestamp_ltz",
            immutable(&[1, 2]),
            |a| arity("TO_TIMESTAMP_LTZ", a, &[1, 2]).map(|_| ts_ms(true)),
            to_timestamp_ltz,
        ),
        udf(
            "unix_timestamp",
            Signature::one_of(
                vec![
                    TypeSignature::Nullary,
                    TypeSignature::Any(1),
                    TypeSignature::Any(2),
                ],
                Volatility::Volatile,
            ),
            |a| arity("UNIX_TIMESTAMP", a, &[0, 1, 2]).map(|_| DataType::Int64),
            unix_timestamp,
        ),
        udf(
            "to_date",
            immutable(&[1, 2]),
            |a| arity("TO_DATE", a, &[1, 2]).map(|_| DataType::Date32),
            to_date,
        ),
        udf(
            "from_unixtime",
            immutable(&[1, 2]),
            |a| arity("FROM_UNIXTIME", a, &[1, 2]).map(|_| DataType::Utf8),
            from_unixtime,
        ),
    ];
    macro_rules! field {
        ($name:literal, $part:expr) => {
            udf(
                $name,
                immutable(&[1]),
                |a| field_type($name, a),
                |args, _| field(&args[0], $part),
            )
        };
    }
    fns.extend([
        field!("year", DatePart::Year),
        field!("quarter", DatePart::Quarter),
        field!("month", DatePart::Month),
        field!("week", DatePart::Week),
        field!("dayofyear", DatePart::DayOfYear),
        field!("dayofmonth", DatePart::Day),
        field!("dayofweek", DatePart::DayOfWeekSunday0),
        field!("hour", DatePart::Hour),
        field!("minute", DatePart::Minute),
        field!("second", DatePart::Second),
    ]);
    fns
}

fn ts_ms(ltz: bool) -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, ltz.then(|| LTZ_TIME_ZONE.into()))
}

fn field_type(name: &str, args: &[DataType]) -> Result<DataType> {
    arity(name, args, &[1])?;
    match &args[0] {
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_) => Ok(DataType::Int64),
        DataType::Utf8 | DataType::Null => Ok(DataType::Int64),
        other => plan_err!(
            "{} expects a DATE, TIME or TIMESTAMP argument, got {other}",
            name.to_uppercase()
        ),
    }
}

fn field(arg: &ArrayRef, part: DatePart) -> Result<ArrayRef> {
    let arg = if matches!(arg.data_type(), DataType::Utf8 | DataType::Null) {
        cast(arg, &DataType::Timestamp(TimeUnit::Millisecond, None))?
    } else {
        arg.clone()
    };
    let v = cast(&date_part(&arg, part)?, &DataType::Int64)?;
    if part == DatePart::DayOfWeekSunday0 {
        // Flink: 1 = Sunday ... 7 = Saturday.
        let v = v
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|d| d + 1);
        return Ok(Arc::new(v));
    }
    Ok(v)
}

/// Translates a Java `SimpleDateFormat` pattern into a chrono strftime string.
pub fn java_to_strftime(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a single quote.
            i += 1;
            if i < chars.len() && chars[i] == '\'' {
                out.push('\'');
                i += 1;
                continue;
            }
            while i < chars.len() && chars[i] != '\'' {
                push_literal(&mut out, chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) | ('u', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 1) => "%1f",
            ('S', 2) => "%2f",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', _) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('Z', _) => "%z",
            ('X', _) | ('x', _) => "%:z",
            ('z', _) => "%Z",
            _ => {
                for _ in 0..n {
                    push_literal(&mut out, c);
                }
                i += n;
                continue;
            }
        };
        out.push_str(spec);
        i += n;
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// Compiles a pattern column that is usually constant: recompiles only when the value changes.
struct PatternCache {
    java: String,
    items: Vec<Item<'static>>,
    strftime: String,
}

impl PatternCache {
    fn new() -> Self {
        Self {
            java: String::from("\u{0}"),
            items: Vec::new(),
            strftime: String::new(),
        }
    }

    fn get(&mut self, java: &str) -> Result<(&[Item<'static>], &str)> {
        if self.java != java {
            let strftime = java_to_strftime(java);
            let items: Vec<Item<'static>> = StrftimeItems::new(&strftime)
                .map(|i| i.to_owned())
                .collect();
            if items.iter().any(|i| matches!(i, Item::Error)) {
                return exec_err!("invalid date pattern '{java}'");
            }
            self.java = java.to_string();
            self.items = items;
            self.strftime = strftime;
        }
        Ok((&self.items, &self.strftime))
    }
}

fn parse_datetime(s: &str, strftime: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, strftime).ok().or_else(|| {
        NaiveDate::parse_from_str(s, strftime)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
}

/// Parses strings with an optional pattern column; the default pattern also accepts a fraction.
fn parse_column(
    args: &[ArrayRef],
    rows: usize,
    mut emit: impl FnMut(Option<NaiveDateTime>),
) -> Result<()> {
    let s = as_utf8(&args[0])?;
    let s = s.as_string::<i32>();
    let pat = if args.len() > 1 {
        Some(as_utf8(&args[1])?)
    } else {
        None
    };
    let pat = pat.as_ref().map(|p| p.as_string::<i32>());
    let mut cache = PatternCache::new();
    for i in 0..rows {
        if s.is_null(i) || pat.is_some_and(|p| p.is_null(i)) {
            emit(None);
            continue;
        }
        let v = match pat {
            Some(p) => {
                let (_, strftime) = cache.get(p.value(i))?;
                parse_datetime(s.value(i), strftime)
            }
            None => parse_datetime(s.value(i), "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|| parse_datetime(s.value(i), "%Y-%m-%dT%H:%M:%S%.f")),
        };
        emit(v);
    }
    Ok(())
}

fn to_timestamp(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut out = TimestampMillisecondBuilder::with_capacity(rows);
    parse_column(args, rows, |v| {
        out.append_option(v.map(|d| d.and_utc().timestamp_millis()))
    })?;
    Ok(Arc::new(out.finish()))
}

/// `TO_DATE(s [, pattern])`: the pattern is Java's (default `yyyy-MM-dd`); NULL when `s` (or
/// the pattern) does not parse, as Flink's.
fn to_date(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    if !matches!(
        args[0].data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) {
        return Ok(cast(&args[0], &DataType::Date32)?);
    }
    let s = as_utf8(&args[0])?;
    let s = s.as_string::<i32>();
    let patterns = args.get(1).map(as_utf8).transpose()?;
    let patterns = patterns.as_ref().map(|p| p.as_string::<i32>());
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    let mut cache = PatternCache::new();
    let mut out = Date32Builder::with_capacity(rows);
    for i in 0..rows {
        let date = match patterns {
            _ if s.is_null(i) => None,
            Some(p) if p.is_null(i) => None,
            Some(p) => match cache.get(p.value(i)) {
                Ok((_, strftime)) => parse_datetime(s.value(i), strftime),
                Err(_) => None,
            },
            None => parse_datetime(s.value(i), "%Y-%m-%d"),
        };
        out.append_option(date.map(|d| (d.date() - epoch).num_days() as i32));
    }
    Ok(Arc::new(out.finish()))
}

fn to_timestamp_ltz(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    if matches!(
        args[0].data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let plain = to_timestamp(args, rows)?;
        return Ok(cast(&plain, &ts_ms(true))?);
    }
    // TO_TIMESTAMP_LTZ(epoch, precision): precision 0 = seconds, 3 = milliseconds (the default).
    let v = cast(&args[0], &DataType::Int64)?;
    let v = v.as_primitive::<Int64Type>();
    let precision = if args.len() > 1 {
        Some(cast(&args[1], &DataType::Int64)?)
    } else {
        None
    };
    let precision = precision.as_ref().map(|p| p.as_primitive::<Int64Type>());
    let mut out = TimestampMillisecondBuilder::with_capacity(rows).with_timezone(LTZ_TIME_ZONE);
    for i in 0..rows {
        if v.is_null(i) || precision.is_some_and(|p| p.is_null(i)) {
            out.append_null();
            continue;
        }
        let scale = match precision.map_or(3, |p| p.value(i)) {
            0 => 1000,
            3 => 1,
            p => {
                return exec_err!(
                    "TO_TIMESTAMP_LTZ: precision must be 0 (seconds) or 3 (milliseconds), got {p}"
                )
            }
        };
        out.append_value(v.value(i) * scale);
    }
    Ok(Arc::new(out.finish()))
}

fn unix_timestamp(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut out = Int64Builder::with_capacity(rows);
    if args.is_empty() {
        let now = chrono::Utc::now().timestamp();
        (0..rows).for_each(|_| out.append_value(now));
    } else {
        parse_column(args, rows, |v| {
            out.append_option(v.map(|d| d.and_utc().timestamp()))
        })?;
    }
    Ok(Arc::new(out.finish()))
}

fn from_unixtime(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let secs = cast(&args[0], &DataType::Int64)?;
    let secs = secs.as_primitive::<Int64Type>();
    let millis: ArrayRef = Arc::new(secs.unary::<_, Int64Type>(|s| s * 1_000_000_000));
    let ts = cast(&millis, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    let pat: ArrayRef = if args.len() > 1 {
        args[1].clone()
    } else {
        constant_pattern(rows)
    };
    date_format(&[ts, pat], rows)
}

fn constant_pattern(rows: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(1, DEFAULT_PATTERN.len());
    b.append_value(DEFAULT_PATTERN);
    let one = b.finish();
    let idx = datafusion::arrow::array::UInt32Array::from(vec![0u32; rows]);
    datafusion::arrow::compute::take(&one, &idx, None).expect("take of a one-row array")
}

/// DATE_FORMAT(timestamp | string, pattern).
fn date_format(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let ts = match args[0].data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let parsed = to_timestamp(&args[..1], rows)?;
            cast(&parsed, &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null => {
            cast(&args[0], &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        }
        other => return exec_err!("DATE_FORMAT expects a TIMESTAMP or STRING, got {other}"),
    };
    let ts = ts.as_primitive::<TimestampNanosecondType>();
    let pat = as_utf8(&args[1])?;
    let pat = pat.as_string::<i32>();
    let mut cache = PatternCache::new();
    let mut out = StringBuilder::with_capacity(rows, rows * 20);
    for i in 0..rows {
        if ts.is_null(i) || pat.is_null(i) {
            out.append_null();
            continue;
        }
        let (items, _) = cache.get(pat.value(i))?;
        let dt = DateTime::from_timestamp_nanos(ts.value(i)).naive_utc();
        let _ = write!(out, "{}", dt.format_with_items(items.iter()));
        out.append_value("");
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_patterns() {
        assert_eq!(java_to_strftime("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(
            java_to_strftime("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(java_to_strftime("d/M/yy '100%'"), "%-d/%-m/%y 100%%");
    }
}
