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

/// The one value `path` selects in `doc`, if the document and the path parse.
fn select_one(doc: &str, path: &str) -> Option<Value> {
    let steps = parse_path(path)?;
    let doc: Value = serde_json::from_str(doc).ok()?;
    let mut found = Vec::new();
    walk(&doc, &steps, &mut found);
    match found.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
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
        let exists = parse_path(paths.value(i))
            .zip(serde_json::from_str::<Value>(docs.value(i)).ok())
            .is_some_and(|(steps, doc)| {
                let mut found = Vec::new();
                walk(&doc, &steps, &mut found);
                !found.is_empty()
            });
        out.append_value(exists);
    }
    Ok(Arc::new(out.finish()))
}

/// The JSON value of row `i` of `a` (NULL is `null`).
fn to_json(a: &ArrayRef, i: usize) -> Result<Value> {
    if a.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = strings(&a.slice(i, 1))?;
            Value::String(s.as_string::<i32>().value(0).to_string())
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let values = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().value(i),
                _ => a.as_list::<i64>().value(i),
            };
            Value::Array(
                (0..values.len())
                    .map(|j| to_json(&values, j))
                    .collect::<Result<_>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), to_json(c, i)?);
            }
            Value::Object(m)
        }
        t if t.is_numeric() => {
            // Flink's text of the number (1.0E20 for a large DOUBLE), as a JSON number.
            let text = super::text::flink_text(&a.slice(i, 1))?;
            let text = text.as_string::<i32>().value(0).to_string();
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        _ => {
            let text = super::text::flink_text(&a.slice(i, 1))?;
            Value::String(text.as_string::<i32>().value(0).to_string())
        }
    })
}

fn json_string(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        if args[0].is_null(i) {
            out.append_null();
        } else {
            out.append_value(to_json(&args[0], i)?.to_string());
        }
    }
    Ok(Arc::new(out.finish()))
}

/// `JSON_ARRAY(v, ...)`: NULL elements are left out (Flink's default `ABSENT ON NULL`).
fn json_array(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(rows, rows * 8);
    for i in 0..rows {
        let items = args
            .iter()
            .filter(|a| !a.is_null(i))
            .map(|a| to_json(a, i))
            .collect::<Result<Vec<_>>>()?;
        out.append_value(Value::Array(items).to_string());
    }
    Ok(Arc::new(out.finish()))
}

/// `JSON_OBJECT(KEY k VALUE v, ...)`: a NULL value is `null` (Flink's default `NULL ON NULL`),
/// or left out with `ABSENT ON NULL`.
fn json_object(args: &[ArrayRef], rows: usize, absent_on_null: bool) -> Result<ArrayRef> {
    let mut out = StringBuilder::with_capacity(rows, rows * 16);
    let keys: Vec<ArrayRef> = args.iter().step_by(2).map(strings).collect::<Result<_>>()?;
    for i in 0..rows {
        let mut m = serde_json::Map::new();
        for (k, v) in keys.iter().zip(args.iter().skip(1).step_by(2)) {
            if k.is_null(i) {
                return datafusion::common::exec_err!("JSON_OBJECT: a key is NULL");
            }
            if absent_on_null && v.is_null(i) {
                continue;
            }
            m.insert(k.as_string::<i32>().value(i).to_string(), to_json(v, i)?);
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
