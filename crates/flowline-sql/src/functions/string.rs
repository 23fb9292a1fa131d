//! SPLIT_INDEX, REGEXP_EXTRACT, and Flink's SUBSTR (negative starts count from the end), CONCAT
//! (NULL when any argument is NULL), LOCATE, IS_DIGIT, IS_ALPHA, IS_DECIMAL, TO_BASE64 and
//! FROM_BASE64.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Builder, Int64Array, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};
use regex::Regex;

use super::{arity, immutable, udf};

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf(
            "split_index",
            immutable(&[3]),
            |a| arity("SPLIT_INDEX", a, &[3]).map(|_| DataType::Utf8),
            split_index,
        ),
        udf(
            "regexp_extract",
            immutable(&[2, 3]),
            |a| arity("REGEXP_EXTRACT", a, &[2, 3]).map(|_| DataType::Utf8),
            regexp_extract,
        ),
        udf(
            "substr",
            immutable(&[2, 3]),
            |a| arity("SUBSTR", a, &[2, 3]).map(|_| DataType::Utf8),
            substr,
        ),
        udf(
            "concat",
            Signature::variadic_any(Volatility::Immutable),
            |_| Ok(DataType::Utf8),
            concat,
        ),
        udf(
            "locate",
            immutable(&[2, 3]),
            |a| arity("LOCATE", a, &[2, 3]).map(|_| DataType::Int32),
            locate,
        ),
        udf(
            "is_digit",
            immutable(&[1]),
            |a| boolean("IS_DIGIT", a),
            |a, n| {
                classify(a, n, |s| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
                })
            },
        ),
        udf(
            "is_alpha",
            immutable(&[1]),
            |a| boolean("IS_ALPHA", a),
            |a, n| {
                classify(a, n, |s| {
                    !s.is_empty() && s.chars().all(char::is_alphabetic)
                })
            },
        ),
        udf(
            "is_decimal",
            immutable(&[1]),
            |a| boolean("IS_DECIMAL", a),
            |a, n| {
                classify(a, n, |s| {
                    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
                    !t.is_empty()
                        && t != "."
                        && t.chars().filter(|c| *c == '.').count() <= 1
                        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
            },
        ),
        udf(
            "to_base64",
            immutable(&[1]),
            |a| arity("TO_BASE64", a, &[1]).map(|_| DataType::Utf8),
            to_base64,
        ),
        udf(
            "from_base64",
            immutable(&[1]),
            |a| arity("FROM_BASE64", a, &[1]).map(|_| DataType::Utf8),
            from_base64,
        ),
    ]
}

/// The type of a one-argument predicate.
fn boolean(name: &str, args: &[DataType]) -> Result<DataType> {
    arity(name, args, &[1]).map(|_| DataType::Boolean)
}

/// IS_DIGIT, IS_ALPHA, IS_DECIMAL: false for NULL, as Flink's.
fn classify(args: &[ArrayRef], rows: usize, test: fn(&str) -> bool) -> Result<ArrayRef> {
    let s = as_utf8(&args[0])?;
    let s = s.as_string::<i32>();
    Ok(Arc::new(
        (0..rows)
            .map(|i| Some(s.is_valid(i) && test(s.value(i))))
            .collect::<BooleanArray>(),
    ))
}

/// SUBSTR(s, start[, len]): 1-based; a negative start counts from the end; 0 is 1.
fn substr(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = as_utf8(&args[0])?;
    let s = s.as_string::<i32>();
    let start = as_i64(&args[1])?;
    let len = if args.len() == 3 {
        Some(as_i64(&args[2])?)
    } else {
        None
    };
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if s.is_null(i) || start.is_null(i) || len.as_ref().is_some_and(|l| l.is_null(i)) {
            out.append_null();
            continue;
        }
        let v = s.value(i);
        let chars = v.chars().count() as i64;
        let from = match start.value(i) {
            p if p > 0 => p - 1,
            0 => 0,
            p => chars + p,
        };
        let take = len.as_ref().map_or(i64::MAX, |l| l.value(i));
        if from < 0 || from >= chars || take < 0 {
            // Flink: a start before the string or a negative length gives an empty string.
            out.append_value("");
            continue;
        }
        let piece: String = v
            .chars()
            .skip(from as usize)
            .take(take.min(chars) as usize)
            .collect();
        out.append_value(piece);
    }
    Ok(Arc::new(out.finish()))
}

/// CONCAT(s1, s2, ...): NULL when any argument is NULL (DataFusion's skips NULLs).
fn concat(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let strings = args
        .iter()
        .map(super::text::flink_text)
        .collect::<Result<Vec<_>>>()?;
    let strings: Vec<&StringArray> = strings.iter().map(|a| a.as_string::<i32>()).collect();
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    let mut buf = String::new();
    for i in 0..rows {
        if strings.iter().any(|s| s.is_null(i)) {
            out.append_null();
            continue;
        }
        buf.clear();
        for s in &strings {
            buf.push_str(s.value(i));
        }
        out.append_value(&buf);
    }
    Ok(Arc::new(out.finish()))
}

/// LOCATE(needle, s[, from]): the 1-based character position of needle in s at or after from,
/// 0 when absent.
fn locate(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let needle = as_utf8(&args[0])?;
    let s = as_utf8(&args[1])?;
    let (needle, s) = (needle.as_string::<i32>(), s.as_string::<i32>());
    let from = if args.len() == 3 {
        Some(as_i64(&args[2])?)
    } else {
        None
    };
    let mut out = Int32Builder::with_capacity(rows);
    for i in 0..rows {
        if needle.is_null(i) || s.is_null(i) || from.as_ref().is_some_and(|f| f.is_null(i)) {
            out.append_null();
            continue;
        }
        let start = from.as_ref().map_or(1, |f| f.value(i));
        if start < 1 {
            out.append_value(0);
            continue;
        }
        let v = s.value(i);
        let skip = v.char_indices().nth(start as usize - 1).map(|(b, _)| b);
        let pos = skip.and_then(|b| v[b..].find(needle.value(i)).map(|p| b + p));
        out.append_value(pos.map_or(0, |p| v[..p].chars().count() as i32 + 1));
    }
    Ok(Arc::new(out.finish()))
}

fn to_base64(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    use base64::Engine;
    let b = match args[0].data_type() {
        DataType::Binary => args[0].clone(),
        _ => cast(&as_utf8(&args[0])?, &DataType::Binary)?,
    };
    let b = b.as_binary::<i32>();
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if b.is_null(i) {
            out.append_null();
        } else {
            out.append_value(base64::engine::general_purpose::STANDARD.encode(b.value(i)));
        }
    }
    Ok(Arc::new(out.finish()))
}

/// FROM_BASE64(s): the decoded text (a STRING in Flink, the bytes read as UTF-8, invalid
/// sequences replaced); NULL for NULL or text that is not base64.
fn from_base64(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    use base64::Engine;
    let s = as_utf8(&args[0])?;
    let s = s.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        let decoded = s
            .is_valid(i)
            .then(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.value(i))
                    .ok()
            })
            .flatten()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        out.append_option(decoded);
    }
    Ok(Arc::new(out.finish()))
}

pub(super) fn as_utf8(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &DataType::Utf8)?)
}

fn as_i64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?.as_primitive().clone())
}

/// SPLIT_INDEX(str, sep, idx): the idx-th (0-based) piece of str split by sep, NULL if absent.
fn split_index(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = as_utf8(&args[0])?;
    let sep = as_utf8(&args[1])?;
    let idx = as_i64(&args[2])?;
    let (s, sep) = (s.as_string::<i32>(), sep.as_string::<i32>());
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if s.is_null(i) || sep.is_null(i) || idx.is_null(i) || idx.value(i) < 0 {
            out.append_null();
            continue;
        }
        let sep_i = sep.value(i);
        let piece = if sep_i.is_empty() {
            None
        } else {
            s.value(i).split(sep_i).nth(idx.value(i) as usize)
        };
        out.append_option(piece);
    }
    Ok(Arc::new(out.finish()))
}

/// REGEXP_EXTRACT(str, regex[, group]): the group (default 0, the whole match) of the first
/// match, NULL when nothing matches.
fn regexp_extract(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = as_utf8(&args[0])?;
    let pat = as_utf8(&args[1])?;
    let group = if args.len() == 3 {
        Some(as_i64(&args[2])?)
    } else {
        None
    };
    let (s, pat) = (s.as_string::<i32>(), pat.as_string::<i32>());
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    let mut cached: Option<(String, Regex)> = None;
    for i in 0..rows {
        if s.is_null(i) || pat.is_null(i) || group.as_ref().is_some_and(|g| g.is_null(i)) {
            out.append_null();
            continue;
        }
        let p = pat.value(i);
        if cached.as_ref().is_none_or(|(cp, _)| cp != p) {
            match Regex::new(p) {
                Ok(re) => cached = Some((p.to_string(), re)),
                Err(e) => {
                    return exec_err!("REGEXP_EXTRACT: invalid regular expression '{p}': {e}")
                }
            }
        }
        let re = &cached.as_ref().expect("set above").1;
        let g = group.as_ref().map_or(0, |g| g.value(i));
        let value = if g < 0 {
            None
        } else {
            re.captures(s.value(i))
                .and_then(|c| c.get(g as usize))
                .map(|m| m.as_str())
        };
        out.append_option(value);
    }
    Ok(Arc::new(out.finish()))
}
