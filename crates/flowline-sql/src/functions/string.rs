//! SPLIT_INDEX, REGEXP_EXTRACT.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::ScalarUDF;
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
    ]
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
