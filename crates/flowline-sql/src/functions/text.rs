//! Flink's text of values and names of types: `CAST(x AS STRING)` (rewritten to
//! [`TO_STRING`] by the SQL front end, as DataFusion's cast prints `true`, `2024-01-01T00:00:01`
//! and `1e20` where Flink prints `TRUE`, `2024-01-01 00:00:01` and `1.0E20`) and `TYPEOF(x)`.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, IntervalDayTimeType, IntervalMonthDayNanoType,
    IntervalUnit, IntervalYearMonthType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::Result;
use datafusion::logical_expr::ScalarUDF;

use super::{arity, immutable, udf};

/// The function `CAST(x AS STRING)` becomes.
pub const TO_STRING: &str = "__flowline_to_string";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(
            TO_STRING,
            immutable(&[1]),
            |a| arity("CAST AS STRING", a, &[1]).map(|_| DataType::Utf8),
            to_string,
        ),
        ScalarUDF::new_from_impl(TypeOf {
            signature: immutable(&[1, 2]),
        }),
    ]
}

/// `TYPEOF(x)`: Flink's name of the type of `x`, with ` NOT NULL` when `x` cannot be NULL (the
/// nullability is the argument's field's, so the function is not one of the array-only
/// [`udf`]s).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TypeOf {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for TypeOf {
    fn name(&self) -> &str {
        "typeof"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        arity("TYPEOF", args, &[1, 2]).map(|_| DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<datafusion::logical_expr::ColumnarValue> {
        let field = &args.arg_fields[0];
        let mut name = flink_type_name(field.data_type());
        if !field.is_nullable() {
            name.push_str(" NOT NULL");
        }
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::Utf8(Some(name)),
        ))
    }
}

/// Flink's name of the type an Arrow type stands for (without nullability: Flowline's
/// expressions do not track it).
pub fn flink_type_name(t: &DataType) -> String {
    match t {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "BIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            format!("DECIMAL({p}, {s})")
        }
        DataType::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::FixedSizeBinary(n) => format!("BINARY({n})"),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(u) | DataType::Time64(u) => format!("TIME({})", precision(u)),
        DataType::Timestamp(u, None) => format!("TIMESTAMP({})", precision(u)),
        DataType::Timestamp(u, Some(_)) => format!("TIMESTAMP_LTZ({})", precision(u)),
        DataType::Interval(IntervalUnit::YearMonth) => "INTERVAL MONTH".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL SECOND(3)".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("ARRAY<{}>", flink_type_name(f.data_type()))
        }
        DataType::Map(f, _) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP<{}, {}>",
                flink_type_name(kv[0].data_type()),
                flink_type_name(kv[1].data_type())
            ),
            other => format!("MAP<{}>", flink_type_name(other)),
        },
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("`{}` {}", f.name(), flink_type_name(f.data_type())))
                .collect();
            format!("ROW<{}>", inner.join(", "))
        }
        DataType::Dictionary(_, v) => flink_type_name(v),
        other => other.to_string(),
    }
}

fn precision(u: &TimeUnit) -> u32 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// Flink's text of every value of `a` (NULL stays NULL), as a Utf8 array.
pub fn flink_text(a: &ArrayRef) -> Result<ArrayRef> {
    to_string(std::slice::from_ref(a), a.len())
}

/// Flink's text of every value of `a` (NULL stays NULL).
fn to_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let a = &args[0];
    // Where Arrow's text is Flink's, the cast kernel is faster.
    if matches!(
        a.data_type(),
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Date32
            | DataType::Decimal128(_, _)
            | DataType::Null
    ) {
        return Ok(cast(a, &DataType::Utf8)?);
    }
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    let mut buf = String::new();
    let formatter = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())?;
    for i in 0..rows {
        if a.is_null(i) {
            out.append_null();
            continue;
        }
        buf.clear();
        write_value(&mut buf, a, i, &formatter)?;
        out.append_value(&buf);
    }
    Ok(Arc::new(out.finish()))
}

fn write_value(
    out: &mut String,
    a: &ArrayRef,
    i: usize,
    formatter: &ArrayFormatter<'_>,
) -> Result<()> {
    match a.data_type() {
        DataType::Boolean => out.push_str(if a.as_boolean().value(i) {
            "TRUE"
        } else {
            "FALSE"
        }),
        DataType::Float64 => write_java_double(out, a.as_primitive::<Float64Type>().value(i)),
        DataType::Float32 => {
            write_java_float(out, a.as_primitive::<Float32Type>().value(i));
        }
        DataType::Timestamp(u, _) => {
            // The stored value, read in place (no cast per row).
            let nanos = match u {
                TimeUnit::Second => a
                    .as_primitive::<TimestampSecondType>()
                    .value(i)
                    .saturating_mul(1_000_000_000),
                TimeUnit::Millisecond => a
                    .as_primitive::<TimestampMillisecondType>()
                    .value(i)
                    .saturating_mul(1_000_000),
                TimeUnit::Microsecond => a
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(i)
                    .saturating_mul(1_000),
                TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
            };
            let dt = chrono::DateTime::from_timestamp_nanos(nanos).naive_utc();
            let _ = write!(out, "{}", dt.format("%Y-%m-%d %H:%M:%S"));
            write_fixed_fraction(out, nanos.rem_euclid(1_000_000_000) as u32, precision(u));
        }
        DataType::Time32(u) | DataType::Time64(u) => {
            let _ = write!(out, "{}", formatter.value(i));
            // Arrow prints the fraction only when it is not zero; Flink prints TIME(0).
            if let Some(dot) = out.find('.') {
                if precision(u) == 0 {
                    out.truncate(dot);
                }
            }
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let m = a.as_primitive::<IntervalYearMonthType>().value(i);
            let sign = if m < 0 { '-' } else { '+' };
            let m = m.unsigned_abs();
            let _ = write!(out, "{sign}{}-{:02}", m / 12, m % 12);
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = a.as_primitive::<IntervalDayTimeType>().value(i);
            write_day_time(out, v.days as i64 * 86_400_000 + v.milliseconds as i64);
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
            if v.months != 0 && v.days == 0 && v.nanoseconds == 0 {
                let sign = if v.months < 0 { '-' } else { '+' };
                let m = v.months.unsigned_abs();
                let _ = write!(out, "{sign}{}-{:02}", m / 12, m % 12);
            } else {
                write_day_time(out, v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000);
            }
        }
        DataType::Binary => out.push_str(&String::from_utf8_lossy(a.as_binary::<i32>().value(i))),
        DataType::LargeBinary => {
            out.push_str(&String::from_utf8_lossy(a.as_binary::<i64>().value(i)))
        }
        DataType::BinaryView => out.push_str(&String::from_utf8_lossy(a.as_binary_view().value(i))),
        DataType::List(_) | DataType::LargeList(_) => {
            let values = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().value(i),
                _ => a.as_list::<i64>().value(i),
            };
            let f = ArrayFormatter::try_new(values.as_ref(), &FormatOptions::default())?;
            out.push('[');
            for j in 0..values.len() {
                if j > 0 {
                    out.push_str(", ");
                }
                if values.is_null(j) {
                    out.push_str("NULL");
                } else {
                    write_value(out, &values, j, &f)?;
                }
            }
            out.push(']');
        }
        DataType::Map(_, _) => {
            let map = a.as_map();
            let entries = map.value(i);
            let (k, v) = (entries.column(0), entries.column(1));
            let (fk, fv) = (
                ArrayFormatter::try_new(k.as_ref(), &FormatOptions::default())?,
                ArrayFormatter::try_new(v.as_ref(), &FormatOptions::default())?,
            );
            out.push('{');
            for j in 0..entries.len() {
                if j > 0 {
                    out.push_str(", ");
                }
                write_or_null(out, k, j, &fk)?;
                out.push('=');
                write_or_null(out, v, j, &fv)?;
            }
            out.push('}');
        }
        DataType::Struct(_) => {
            let s = a.as_struct();
            out.push('(');
            for (j, c) in s.columns().iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                let f = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
                write_or_null(out, c, i, &f)?;
            }
            out.push(')');
        }
        _ => {
            let _ = write!(out, "{}", formatter.value(i));
        }
    }
    Ok(())
}

fn write_or_null(
    out: &mut String,
    a: &ArrayRef,
    i: usize,
    formatter: &ArrayFormatter<'_>,
) -> Result<()> {
    if a.is_null(i) {
        out.push_str("NULL");
        Ok(())
    } else {
        write_value(out, a, i, formatter)
    }
}

/// `.123` with exactly `digits` digits (none for 0).
fn write_fixed_fraction(out: &mut String, nanos: u32, digits: u32) {
    if digits == 0 {
        return;
    }
    let all = format!("{nanos:09}");
    out.push('.');
    out.push_str(&all[..digits as usize]);
}

/// Flink's day-time interval text: `+3 00:00:00.000`.
fn write_day_time(out: &mut String, millis: i64) {
    let sign = if millis < 0 { '-' } else { '+' };
    let ms = millis.unsigned_abs();
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let _ = write!(
        out,
        "{sign}{days} {:02}:{:02}:{:02}.{:03}",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    );
}

/// Java's `Double.toString`: plain between 10^-3 and 10^7, else `d.dddE±n`; the shortest digits
/// that read back as the same double, and at least one digit after the point.
pub fn write_java_double(out: &mut String, v: f64) {
    write_java_number(out, v, format!("{v:e}"));
}

/// Java's `Float.toString`, as [`write_java_double`] (the shortest digits of the float).
pub fn write_java_float(out: &mut String, v: f32) {
    write_java_number(out, f64::from(v), format!("{v:e}"));
}

/// `v`'s special values, or its shortest scientific form `sci` in Java's layout.
fn write_java_number(out: &mut String, v: f64, sci: String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        write_java_decimal(out, sci, v == 0.0 || (1e-3..1e7).contains(&v.abs()));
    }
}

/// From Rust's shortest scientific form (`-1.25e-5`) to Java's.
fn write_java_decimal(out: &mut String, sci: String, plain: bool) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if plain {
        if exp >= 0 {
            let point = exp as usize + 1;
            // The integer part: the first `point` digits, padded with zeros.
            let int: String = digits
                .chars()
                .chain(std::iter::repeat('0'))
                .take(point)
                .collect();
            out.push_str(&int);
            out.push('.');
            let frac = if digits.len() > point {
                &digits[point..]
            } else {
                "0"
            };
            out.push_str(frac);
        } else {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        let _ = write!(out, "E{exp}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: f64) -> String {
        let mut s = String::new();
        write_java_double(&mut s, v);
        s
    }

    #[test]
    fn doubles_print_as_java() {
        assert_eq!(d(1.0e20), "1.0E20");
        assert_eq!(d(0.5), "0.5");
        assert_eq!(d(100.0), "100.0");
        assert_eq!(d(0.001), "0.001");
        assert_eq!(d(0.0001), "1.0E-4");
        assert_eq!(d(1234567.0), "1234567.0");
        assert_eq!(d(12345678.0), "1.2345678E7");
        assert_eq!(d(-2.5), "-2.5");
        assert_eq!(d(0.0), "0.0");
        assert_eq!(d(std::f64::consts::SQRT_2), "1.4142135623730951");
        assert_eq!(d(123.456), "123.456");
    }

    #[test]
    fn intervals_print_as_flink() {
        let mut s = String::new();
        write_day_time(&mut s, 3 * 86_400_000);
        assert_eq!(s, "+3 00:00:00.000");
    }
}
