//! Flink's textual forms of values: the SQL timestamp format used by the json and csv formats,
//! and the `+I[...]` rows of the print connector.

use std::fmt::Write;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{
    Array, ArrayRef, GenericListArray, MapArray, OffsetSizeTrait, RecordBatch, StructArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};

/// `2020-01-01 12:00:00.123`: Flink's SQL timestamp format (fraction without trailing zeros).
pub fn write_sql_timestamp(out: &mut String, nanos: i64, ltz: bool) {
    let dt = chrono::DateTime::from_timestamp_nanos(nanos).naive_utc();
    let _ = write!(out, "{}", dt.format("%Y-%m-%d %H:%M:%S"));
    write_fraction(out, nanos.rem_euclid(1_000_000_000) as u32, false);
    if ltz {
        out.push('Z');
    }
}

/// Fraction of a second: minimal digits (`.1`) or, with `java_groups`, groups of three (`.100`).
fn write_fraction(out: &mut String, nanos: u32, java_groups: bool) {
    if nanos == 0 {
        return;
    }
    let digits = format!("{nanos:09}");
    let keep = if java_groups {
        if nanos.is_multiple_of(1_000_000) {
            3
        } else if nanos.is_multiple_of(1_000) {
            6
        } else {
            9
        }
    } else {
        digits.trim_end_matches('0').len()
    };
    out.push('.');
    out.push_str(&digits[..keep]);
}

/// `2020-01-01T12:00`: Java's `LocalDateTime.toString()`, which Flink's print connector shows.
pub fn write_java_timestamp(out: &mut String, nanos: i64) {
    let dt = chrono::DateTime::from_timestamp_nanos(nanos).naive_utc();
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    let _ = write!(out, "{}", dt.format("%Y-%m-%dT%H:%M"));
    if dt.format("%S").to_string() != "00" || frac != 0 {
        let _ = write!(out, "{}", dt.format(":%S"));
        write_fraction(out, frac, true);
    }
}

fn timestamps_as_nanos(col: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    arrow_cast::cast(col, &DataType::Timestamp(TimeUnit::Nanosecond, None))
}

/// Replaces timestamp columns, also inside ROW, ARRAY and MAP values, by strings in Flink's SQL
/// format, for text formats.
pub fn sql_timestamps_as_strings(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| has_timestamp(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, col)| timestamps_as_text(f, col))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

fn has_timestamp(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(..) => true,
        DataType::Struct(fields) => fields.iter().any(|f| has_timestamp(f.data_type())),
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => {
            has_timestamp(f.data_type())
        }
        _ => false,
    }
}

/// A list column (of items `item`) with the timestamps in its items as SQL-format strings.
fn list_as_text<O: OffsetSizeTrait>(item: &Field, col: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let list = col.as_list::<O>();
    let (item, values) = timestamps_as_text(item, list.values())?;
    Ok(Arc::new(GenericListArray::<O>::try_new(
        Arc::new(item),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )?))
}

/// `col` (of `field`) with its timestamps, at any depth, as SQL-format strings.
fn timestamps_as_text(field: &Field, col: &ArrayRef) -> Result<(Field, ArrayRef), ArrowError> {
    if !has_timestamp(field.data_type()) {
        return Ok((field.clone(), col.clone()));
    }
    let out: ArrayRef = match field.data_type() {
        DataType::Timestamp(_, tz) => {
            let nanos = timestamps_as_nanos(col)?;
            let nanos = nanos.as_primitive::<TimestampNanosecondType>();
            let mut s = String::new();
            let mut b = StringBuilder::with_capacity(nanos.len(), nanos.len() * 24);
            for v in nanos.iter() {
                match v {
                    Some(v) => {
                        s.clear();
                        write_sql_timestamp(&mut s, v, tz.is_some());
                        b.append_value(&s);
                    }
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Struct(_) => {
            let st = col.as_struct();
            let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = st
                .fields()
                .iter()
                .zip(st.columns())
                .map(|(f, c)| timestamps_as_text(f, c))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip();
            Arc::new(StructArray::try_new(
                fields.into(),
                columns,
                st.nulls().cloned(),
            )?)
        }
        DataType::List(item) => list_as_text::<i32>(item, col)?,
        DataType::LargeList(item) => list_as_text::<i64>(item, col)?,
        DataType::Map(entries, sorted) => {
            let map = col.as_map();
            let (entries_field, entries_array) =
                timestamps_as_text(entries, &(Arc::new(map.entries().clone()) as ArrayRef))?;
            Arc::new(MapArray::try_new(
                Arc::new(entries_field),
                map.offsets().clone(),
                entries_array.as_struct().clone(),
                map.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => col.clone(),
    };
    Ok((
        Field::new(field.name(), out.data_type().clone(), field.is_nullable()),
        out,
    ))
}

/// Renders each row as Flink's print connector does: `+I[1, abc, 2020-01-01T12:00]`, with the
/// row's change kind (`-U[...]`, `+U[...]`, `-D[...]`) when the batch is updating.
pub fn flink_rows(batch: &RecordBatch) -> Result<Vec<String>, ArrowError> {
    let kinds = flowline_common::changelog::row_kinds(batch).cloned();
    let stripped;
    let batch = if kinds.is_some() {
        stripped = flowline_common::changelog::strip_row_kind(batch);
        &stripped
    } else {
        batch
    };
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<Option<ArrayFormatter>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => Ok(None),
            _ => ArrayFormatter::try_new(c.as_ref(), &options).map(Some),
        })
        .collect::<Result<_, _>>()?;
    let nanos: Vec<Option<ArrayRef>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Timestamp(..) => timestamps_as_nanos(c).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let kind = kinds
            .as_ref()
            .and_then(|k| flowline_common::RowKind::from_i8(k.value(row)))
            .unwrap_or(flowline_common::RowKind::Insert);
        let mut s = String::with_capacity(64);
        s.push_str(kind.short());
        s.push('[');
        for col in 0..batch.num_columns() {
            if col > 0 {
                s.push_str(", ");
            }
            if let Some(ns) = &nanos[col] {
                let ns = ns.as_primitive::<TimestampNanosecondType>();
                if ns.is_null(row) {
                    s.push_str("NULL");
                } else {
                    write_java_timestamp(&mut s, ns.value(row));
                }
            } else if let Some(f) = &formatters[col] {
                let _ = write!(s, "{}", f.value(row));
            }
        }
        s.push(']');
        rows.push(s);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_timestamps_become_sql_text() {
        use arrow_array::{ListArray, TimestampMillisecondArray};
        let ts: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
            Some(1_577_880_000_100),
            None,
        ]));
        let row = StructArray::from(vec![(
            Arc::new(Field::new("t", ts.data_type().clone(), true)),
            ts.clone(),
        )]);
        let list = ListArray::try_new(
            Arc::new(Field::new("item", ts.data_type().clone(), true)),
            arrow_buffer::OffsetBuffer::from_lengths([2, 0]),
            ts,
            None,
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter(vec![
            ("r", Arc::new(row) as ArrayRef),
            ("l", Arc::new(list) as ArrayRef),
        ])
        .unwrap();
        let text = sql_timestamps_as_strings(&batch).unwrap();
        let mut out = Vec::new();
        let mut w = arrow_json::LineDelimitedWriter::new(&mut out);
        w.write(&text).unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"r\":{\"t\":\"2020-01-01 12:00:00.1\"},\"l\":[\"2020-01-01 12:00:00.1\",null]}\n{\"r\":{},\"l\":[]}\n"
        );
    }

    #[test]
    fn timestamp_texts() {
        let t = 1_577_880_000_100_000_000i64; // 2020-01-01 12:00:00.1
        let mut s = String::new();
        write_sql_timestamp(&mut s, t, false);
        assert_eq!(s, "2020-01-01 12:00:00.1");
        s.clear();
        write_java_timestamp(&mut s, t);
        assert_eq!(s, "2020-01-01T12:00:00.100");
        s.clear();
        write_java_timestamp(&mut s, 1_577_880_000_000_000_000);
        assert_eq!(s, "2020-01-01T12:00");
    }
}
