//! Flink's JSON functions: `JSON_VALUE`, `JSON_QUERY`, `JSON_EXISTS` (SQL/JSON path in lax mode,
//! with Flink's default error behaviour: NULL, or FALSE for `JSON_EXISTS`), `JSON_STRING`,
//! `JSON_ARRAY` and `JSON_OBJECT` (the SQL front end turns `JSON_OBJECT(k VALUE v, ...)` into a
//! call with the keys and values in turn, and `RETURNING t` into a cast).
//!
//! A path is `$` followed by `.key`, `."key"`, `['key']`, `[n]` or `[*]` steps. A document that
//! does not parse, or a path that does not, gives the function's default (NULL or FALSE), as
//! Flink's `NULL ON ERROR`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};
use serde_json::Value;

use super::{arity, immutable, udf};

/// The function `JSON_OBJECT(... ABSENT ON NULL)` becomes.
pub const JSON_OBJECT_ABSENT: &str = "__flowline_json_object_absent";

pub(super) fn functions() -> Vec<ScalarUDF> {
    vec![
        udf("json_value", immutable(&[2]), path_string, |a, _| {
            select(a, |v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
                _ => None,
            })
        }),
        udf("json_query", immutable(&[2]), path_string, |a, _| {
            select(a, |v| match v {
                Value::Object(_) | Value::Array(_) => Some(v.to_string()),
                _ => None,
            })
        }),
        udf(
            "json_exists",
            immutable(&[2]),
            |a| arity("JSON_EXISTS", a, &[2]).map(|_| DataType::Boolean),
            json_exists,
        ),
        udf(
            "json_string",
            immutable(&[1]),
            |a| arity("JSON_STRING", a, &[1]).map(|_| DataType::Utf8),
            json_string,
        ),
        udf(
            "json_array",
            any_arity(),
            |_| Ok(DataType::Utf8),
            json_array,
        ),
        udf("json_object", any_arity(), object_type, |a, rows| {
            json_object(a, rows, false)
        }),
        udf(JSON_OBJECT_ABSENT, any_arity(), object_type, |a, rows| {
            json_object(a, rows, true)
        }),
    ]
}

fn path_string(args: &[DataType]) -> Result<DataType> {
    arity("JSON_VALUE/JSON_QUERY", args, &[2]).map(|_| DataType::Utf8)
}

fn any_arity() -> Signature {
    let mut arities = vec![TypeSignature::Nullary];
    arities.extend((1..=64).map(TypeSignature::Any));
    Signature::one_of(arities, Volatility::Immutable)
}

fn object_type(args: &[DataType]) -> Result<DataType> {
    if !args.len().is_multiple_of(2) {
        return plan_err!("JSON_OBJECT takes KEY k VALUE v pairs");
    }
    Ok(DataType::Utf8)
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Every,
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let path = path.trim();
    // Lax mode is the default; `strict` is accepted and treated the same.
    let path = path
        .strip_prefix("lax ")
        .or_else(|| path.strip_prefix("strict "))
        .unwrap_or(path)
        .trim_start();
    let mut rest = path.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            if let Some(r) = r.strip_prefix('"') {
                let end = r.find('"')?;
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end + 1..];
            } else {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end..];
            }
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            steps.push(if inner == "*" {
                Step::Every
            } else if let Some(key) = inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
            {
                Step::Key(key.to_string())
            } else {
                Step::Index(inner.parse().ok()?)
            });
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// The values `steps` select in `doc` (lax mode: a missing key or index selects nothing).
fn walk<'a>(doc: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(doc);
        return;
    };
    match (step, doc) {
        (Step::Key(k), Value::Object(m)) => {
            if let Some(v) = m.get(k) {
                walk(v, rest, out);
            }
        }
        (Step::Index(i), Value::Array(a)) => {
            if let Some(v) = a.get(*i) {
                walk(v, rest, out);
            }
        }
        (Step::Every, Value::Array(a)) => a.iter().for_each(|v| walk(v, rest, out)),
        // Lax mode: a key step over an array applies to its elements.
        (Step::Key(_), Value::Array(a)) => a.iter().for_each(|v| walk(v, rest, out)),
        _ => {}
    }
}

/// What `f` makes of the values `path` selects in `doc`; None when the document or the path
/// does not parse.
fn with_selected<R>(doc: &str, path: &str, f: impl FnOnce(&[&Value]) -> R) -> Option<R> {
    let steps = parse_path(path)?;
    let doc: Value = serde_json::from_str(doc).ok()?;
    let mut found = Vec::new();
    walk(&doc, &steps, &mut found);
    Some(f(&found))
}

/// The one value `path` selects in `doc`, if the document and the path parse.
fn select_one(doc: &str, path: &str) -> Option<Value> {
    with_selected(doc, path, |found| match found {
        [one] => Some((*one).clone()),
        _ => None,
    })
    .flatten()
}

fn strings(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(datafusion::arrow::compute::cast(a, &DataType::Utf8)?)
}

fn select(args: &[ArrayRef], text: impl Fn(&Value) -> Option<String>) -> Result<ArrayRef> {
    let (docs, paths) = (strings(&args[0])?, strings(&args[1])?);
    let (docs, paths) = (docs.as_string::<i32>(), paths.as_string::<i32>());
    let out: StringArray = (0..docs.len())
        .map(|i| {
            if docs.is_null(i) || paths.is_null(i) {
                return None;
            }
            select_one(docs.value(i), paths.value(i)).and_then(|v| text(&v))
        })
        .collect();
    Ok(Arc::new(out))
}

fn json_exists(args: &[ArrayRef], _rows: usize) -> Result<ArrayRef> {
    let (docs, paths) = (strings(&args[0])?, strings(&args[1])?);
    let (docs, paths) = (docs.as_string::<i32>(), paths.as_string::<i32>());
    let mut out = BooleanBuilder::with_capacity(docs.len());
    for i in 0..docs.len() {
        if docs.is_null(i) || paths.is_null(i) {
            out.append_null();
            continue;
        }
        let exists = with_selected(docs.value(i), paths.value(i), |found| !found.is_empty())
            .unwrap_or(false);
        out.append_value(exists);
    }
    Ok(Arc::new(out.finish()))
}

/// The JSON value of every row of `a` (NULL is `null`), converted a column at a time: strings
/// cast once, numbers printed once by Flink's text writer, nested values from their children.
fn json_values(a: &ArrayRef) -> Result<Vec<Value>> {
    let null_or = |i: usize, v: Value| if a.is_null(i) { Value::Null } else { v };
    Ok(match a.data_type() {
        DataType::Null => vec![Value::Null; a.len()],
        DataType::Boolean => {
            let b = a.as_boolean();
            (0..a.len())
                .map(|i| null_or(i, Value::Bool(b.value(i))))
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = strings(a)?;
            let s = s.as_string::<i32>();
            (0..a.len())
                .map(|i| null_or(i, Value::String(s.value(i).to_string())))
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) => (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    return Ok(Value::Null);
                }
                let items = match a.data_type() {
                    DataType::List(_) => a.as_list::<i32>().value(i),
                    _ => a.as_list::<i64>().value(i),
                };
                Ok(Value::Array(json_values(&items)?))
            })
            .collect::<Result<_>>()?,
        DataType::Struct(fields) => {
            let columns = a
                .as_struct()
                .columns()
                .iter()
                .map(json_values)
                .collect::<Result<Vec<_>>>()?;
            (0..a.len())
                .map(|i| {
                    let m = fields
                        .iter()
                        .zip(&columns)
                        .map(|(f, c)| (f.name().clone(), c[i].clone()))
                        .collect();
                    null_or(i, Value::Object(m))
                })
                .collect()
        }
        t => {
            // Flink's text of each value (1.0E20 for a large DOUBLE): a JSON number for numbers,
            // a string for the rest (dates, timestamps, ...).
            let numeric = t.is_numeric();
            let text = super::text::flink_text(a)?;
            let text = text.as_string::<i32>();
            (0..a.len())
                .map(|i| {
                    let t = text.value(i);
                    let v = match numeric {
                        true => serde_json::from_str(t).unwrap_or(Value::String(t.to_string())),
                        false => Value::String(t.to_string()),
                    };
                    null_or(i, v)
                })
                .collect()
        }
    })
}

fn json_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let values = json_values(&args[0])?;
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for (i, v) in values.iter().enumerate() {
        if args[0].is_null(i) {
            out.append_null();
        } else {
            out.append_value(v.to_string());
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `JSON_ARRAY(v, ...)`: NULL elements are left out (Flink's default `ABSENT ON NULL`).
fn json_array(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let columns = args.iter().map(json_values).collect::<Result<Vec<_>>>()?;
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        let items = args
            .iter()
            .zip(&columns)
            .filter(|(a, _)| !a.is_null(i))
            .map(|(_, c)| c[i].clone())
            .collect();
        out.append_value(Value::Array(items).to_string());
    }
    Ok(Arc::new(out.finish()))
}

/// `JSON_OBJECT(KEY k VALUE v, ...)`: a NULL value is `null` (Flink's default `NULL ON NULL`),
/// or left out with `ABSENT ON NULL`.
fn json_object(args: &[ArrayRef], rows: usize, absent_on_null: bool) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(rows, rows * 16);
    let keys: Vec<ArrayRef> = args.iter().step_by(2).map(strings).collect::<Result<_>>()?;
    let values: Vec<&ArrayRef> = args.iter().skip(1).step_by(2).collect();
    let columns = values
        .iter()
        .map(|v| json_values(v))
        .collect::<Result<Vec<_>>>()?;
    for i in 0..rows {
        let mut m = serde_json::Map::new();
        for ((k, v), c) in keys.iter().zip(&values).zip(&columns) {
            if k.is_null(i) {
                return datafusion::common::exec_err!("JSON_OBJECT: a key is NULL");
            }
            if absent_on_null && v.is_null(i) {
                continue;
            }
            m.insert(k.as_string::<i32>().value(i).to_string(), c[i].clone());
        }
        out.append_value(Value::Object(m).to_string());
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("$.a[0]['b c'].d"),
            Some(vec![
                Step::Key("a".into()),
                Step::Index(0),
                Step::Key("b c".into()),
                Step::Key("d".into())
            ])
        );
        assert_eq!(parse_path("a.b"), None);
        assert_eq!(
            select_one(r#"{"a": {"b": [1, 2]}}"#, "$.a.b[1]"),
            Some(Value::from(2))
        );
        assert_eq!(select_one(r#"{"a": 1}"#, "$.c"), None);
        assert_eq!(select_one("not json", "$"), None);
    }
}
