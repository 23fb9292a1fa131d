//! Changelog formats: Flink's `debezium-json`, `canal-json` and `maxwell-json`.
//!
//! A changelog record wraps a table row in an envelope that says what happened to it. Decoding
//! works on whole batches: arrow-json decodes the envelopes (the row nested in them), then one
//! gather per column picks each output row out of `before`/`after` (Debezium) or `data`/`old`
//! (Canal, Maxwell), and a change-kind column (`flowline_common::changelog`) says what it is.
//!
//! ```text
//! {"before":null,"after":{"k":"a","n":1},"op":"c"}              ──▶  a 1 +I
//! {"before":{"k":"a","n":1},"after":{"k":"a","n":2},"op":"u"}   ──▶  a 1 -U,  a 2 +U
//! {"data":[{"k":"a","n":"2"}],"old":[{"n":"1"}],"type":"UPDATE"}──▶  a 1 -U,  a 2 +U
//! ```
//!
//! Encoding writes what Flink's serializers write: one record per row, an update's old row as a
//! delete and its new row as an insert (`{"before":{..},"after":null,"op":"d"}` then
//! `{"before":null,"after":{..},"op":"c"}`; Canal `DELETE`/`INSERT`; Maxwell `delete`/`insert`).
//! Replaying such a file gives the query's final table.

use std::io::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int8Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::{BooleanBuffer, NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use flowline_common::changelog::{self, RowKind};
use flowline_common::{OptionSpec, Options};
use regex::Regex;

use crate::json::{json_options, JsonLines, JsonOptions};
use crate::lines::{BadLines, LineFormat};
use crate::text::sql_timestamps_as_strings;
use crate::{FormatError, Result};

/// The changelog formats, by name.
pub const CHANGELOG_FORMATS: &[&str] = &["debezium-json", "canal-json", "maxwell-json"];

pub const DEBEZIUM_OPTIONS: &[OptionSpec] = json_options!(
    "debezium-json",
    OptionSpec::optional(
        "debezium-json.schema-include",
        "records carry Debezium's schema: {\"schema\":..., \"payload\":{...}} (read only, as in Flink)",
    ),
    OptionSpec::optional(
        "debezium-json.encode.ignore-null-fields",
        "leave NULL fields out of written rows",
    ),
);

pub const CANAL_OPTIONS: &[OptionSpec] = json_options!(
    "canal-json",
    OptionSpec::optional(
        "canal-json.database.include",
        "a regular expression: read only records whose \"database\" matches it",
    ),
    OptionSpec::optional(
        "canal-json.table.include",
        "a regular expression: read only records whose \"table\" matches it",
    ),
    OptionSpec::optional(
        "canal-json.encode.ignore-null-fields",
        "leave NULL fields out of written rows",
    ),
);

pub const MAXWELL_OPTIONS: &[OptionSpec] = json_options!(
    "maxwell-json",
    OptionSpec::optional(
        "maxwell-json.encode.ignore-null-fields",
        "leave NULL fields out of written rows",
    ),
);

/// How a changelog record wraps its row.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// `{"before":{..},"after":{..},"op":"c|r|u|d"}`, or that inside `"payload"` when the
    /// records include Debezium's schema.
    Debezium { schema_include: bool },
    /// `{"data":[{..}],"old":[{..}],"type":"INSERT|UPDATE|DELETE","database":..,"table":..}`,
    /// optionally filtered by database and table (full-match regular expressions).
    Canal {
        database: Option<String>,
        table: Option<String>,
    },
    /// `{"data":{..},"old":{..},"type":"insert|update|delete"}`.
    Maxwell,
}

/// A changelog format with its JSON options.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangelogFormat {
    pub envelope: Envelope,
    pub json: JsonOptions,
}

impl ChangelogFormat {
    /// Whether `name` is a changelog format.
    pub fn is_changelog(name: &str) -> bool {
        CHANGELOG_FORMATS.contains(&name)
    }

    /// The format `name` (one of [`CHANGELOG_FORMATS`]) with its `<name>.*` options.
    pub fn from_options(o: &Options, name: &str) -> Result<Self> {
        let envelope = match name {
            "debezium-json" => Envelope::Debezium {
                schema_include: o.bool("debezium-json.schema-include", false)?,
            },
            "canal-json" => {
                let pattern = |key: &str| -> Result<Option<String>> {
                    let Some(p) = o.get(key) else {
                        return Ok(None);
                    };
                    Regex::new(p)
                        .map_err(|e| o.invalid(key, format!("not a regular expression: {e}")))?;
                    Ok(Some(p.to_string()))
                };
                Envelope::Canal {
                    database: pattern("canal-json.database.include")?,
                    table: pattern("canal-json.table.include")?,
                }
            }
            "maxwell-json" => Envelope::Maxwell,
            other => {
                return Err(FormatError::Unsupported(format!(
                    "'{other}' is not a changelog format"
                )))
            }
        };
        Ok(Self {
            envelope,
            json: JsonOptions::with_prefix(o, name)?,
        })
    }

    pub fn name(&self) -> &'static str {
        match self.envelope {
            Envelope::Debezium { .. } => "debezium-json",
            Envelope::Canal { .. } => "canal-json",
            Envelope::Maxwell => "maxwell-json",
        }
    }

    /// Checks that rows can be written in this format: Flink writes no Debezium schema.
    pub fn check_writable(&self) -> Result<()> {
        if let Envelope::Debezium {
            schema_include: true,
        } = self.envelope
        {
            return Err(FormatError::Unsupported(
                "'debezium-json.schema-include' = 'true' is for reading only: Debezium's schema is \
                 not written (as in Flink); remove the option from the table that is written"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The row type nested in envelopes: the table's fields, each nullable (a row that is absent
/// or partial, as Canal's `old`, decodes as NULLs).
fn row_type(rows: &Schema) -> DataType {
    DataType::Struct(
        rows.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect(),
    )
}

fn envelope_schema(envelope: &Envelope, rows: &Schema) -> Schema {
    let row = row_type(rows);
    let debezium = || {
        vec![
            Field::new("before", row.clone(), true),
            Field::new("after", row.clone(), true),
            Field::new("op", DataType::Utf8, true),
        ]
    };
    let fields = match envelope {
        Envelope::Debezium {
            schema_include: false,
        } => debezium(),
        Envelope::Debezium {
            schema_include: true,
        } => vec![Field::new(
            "payload",
            DataType::Struct(Fields::from(debezium())),
            true,
        )],
        Envelope::Canal { .. } => {
            let list = DataType::List(Arc::new(Field::new("item", row.clone(), true)));
            vec![
                Field::new("data", list.clone(), true),
                Field::new("old", list, true),
                Field::new("type", DataType::Utf8, true),
                Field::new("database", DataType::Utf8, true),
                Field::new("table", DataType::Utf8, true),
                Field::new("isDdl", DataType::Boolean, true),
            ]
        }
        Envelope::Maxwell => vec![
            Field::new("data", row.clone(), true),
            Field::new("old", row, true),
            Field::new("type", DataType::Utf8, true),
        ],
    };
    Schema::new(fields)
}

/// [`LineFormat`] decoding changelog records into rows of `rows` and a change-kind column.
pub struct ChangelogLines {
    envelope: Envelope,
    database: Option<Regex>,
    table: Option<Regex>,
    out: SchemaRef,
    inner: JsonLines,
}

impl ChangelogLines {
    /// Decodes records into batches of `rows`' columns followed by `_row_kind`.
    pub fn new(rows: SchemaRef, format: &ChangelogFormat) -> Result<Self> {
        let envelope_json = JsonOptions {
            // The envelope's own NULLs (`"before": null`) are normal.
            fail_on_missing_field: false,
            ..format.json.clone()
        };
        let full_match = |p: &Option<String>| {
            p.as_ref()
                .map(|p| Regex::new(&format!("^(?:{p})$")))
                .transpose()
                .map_err(|e| FormatError::Unsupported(e.to_string()))
        };
        let (database, table) = match &format.envelope {
            Envelope::Canal { database, table } => (full_match(database)?, full_match(table)?),
            _ => (None, None),
        };
        Ok(Self {
            inner: JsonLines::new(
                Arc::new(envelope_schema(&format.envelope, &rows)),
                &envelope_json,
            )?,
            envelope: format.envelope.clone(),
            database,
            table,
            out: Arc::new(changelog::with_row_kind(&rows)),
        })
    }

    fn unwrap(&self, batch: &RecordBatch) -> std::result::Result<RecordBatch, String> {
        let mut picks = Picks::default();
        match &self.envelope {
            Envelope::Debezium { schema_include } => {
                let payload;
                let (before, after, op) = if *schema_include {
                    payload = batch.column(0).as_struct().clone();
                    let nulls = payload.nulls().cloned();
                    // A row without payload has nothing to say: its parts are NULL.
                    let part = |i: usize| with_parent_nulls(payload.column(i), nulls.as_ref());
                    (part(0), part(1), part(2))
                } else {
                    (
                        batch.column(0).clone(),
                        batch.column(1).clone(),
                        batch.column(2).clone(),
                    )
                };
                let (before, after) = (before.as_struct(), after.as_struct());
                for (row, op) in op.as_string::<i32>().iter().enumerate() {
                    let image = |part: &StructArray, which: &str, what: &str| {
                        if part.is_valid(row) {
                            Ok(row)
                        } else {
                            Err(format!(
                                "the \"{which}\" field of a {what} record is null; a Debezium \
                                 PostgreSQL source needs the table's REPLICA IDENTITY set to FULL"
                            ))
                        }
                    };
                    match op {
                        Some("c" | "r") => {
                            picks.push(1, image(after, "after", "create")?, None, RowKind::Insert)
                        }
                        Some("u") => {
                            let b = image(before, "before", "UPDATE")?;
                            picks.push(0, b, None, RowKind::UpdateBefore);
                            let a = image(after, "after", "UPDATE")?;
                            picks.push(1, a, None, RowKind::UpdateAfter);
                        }
                        Some("d") => {
                            picks.push(0, image(before, "before", "DELETE")?, None, RowKind::Delete)
                        }
                        Some(other) => {
                            return Err(format!(
                                "unknown \"op\" value \"{other}\" (expected c, r, u or d)"
                            ))
                        }
                        None => return Err("the record has no \"op\" field".into()),
                    }
                }
                picks.gather(&[before, after], &self.out)
            }
            Envelope::Canal { .. } => {
                let data = batch.column(0).as_list::<i32>();
                let old = batch.column(1).as_list::<i32>();
                let kinds = batch.column(2).as_string::<i32>();
                let ddl = batch.column(5).as_boolean();
                let wanted = |col: usize, re: &Option<Regex>, row: usize| {
                    re.as_ref().is_none_or(|re| {
                        let c = batch.column(col).as_string::<i32>();
                        c.is_valid(row) && re.is_match(c.value(row))
                    })
                };
                for row in 0..batch.num_rows() {
                    if !wanted(3, &self.database, row) || !wanted(4, &self.table, row) {
                        continue;
                    }
                    let kind = kinds.is_valid(row).then(|| kinds.value(row));
                    if kind == Some("CREATE") || (ddl.is_valid(row) && ddl.value(row)) {
                        continue; // a schema change, not a row change
                    }
                    let rows = list_range(data, row);
                    match kind {
                        Some("INSERT") => {
                            rows.for_each(|d| picks.push(0, d, None, RowKind::Insert))
                        }
                        Some("UPDATE") => {
                            let mut olds = list_range(old, row);
                            for d in rows {
                                // `old` holds the changed fields; the others are unchanged.
                                match olds.next() {
                                    Some(o) => picks.push(1, o, Some(d), RowKind::UpdateBefore),
                                    None => picks.push(0, d, None, RowKind::UpdateBefore),
                                }
                                picks.push(0, d, None, RowKind::UpdateAfter);
                            }
                        }
                        Some("DELETE") => {
                            rows.for_each(|d| picks.push(0, d, None, RowKind::Delete))
                        }
                        Some(other) => {
                            return Err(format!(
                                "unknown \"type\" value \"{other}\" (expected INSERT, UPDATE, DELETE or CREATE)"
                            ))
                        }
                        None => return Err("the record has no \"type\" field".into()),
                    }
                }
                let (data, old) = (data.values().as_struct(), old.values().as_struct());
                picks.gather(&[data, old], &self.out)
            }
            Envelope::Maxwell => {
                let data = batch.column(0).as_struct();
                let old = batch.column(1).as_struct();
                let kinds = batch.column(2).as_string::<i32>();
                for (row, kind) in kinds.iter().enumerate() {
                    match kind {
                        Some("insert") => picks.push(0, row, None, RowKind::Insert),
                        Some("update") => {
                            picks.push(1, row, Some(row), RowKind::UpdateBefore);
                            picks.push(0, row, None, RowKind::UpdateAfter);
                        }
                        Some("delete") => picks.push(0, row, None, RowKind::Delete),
                        Some(other) => {
                            return Err(format!(
                                "unknown \"type\" value \"{other}\" (expected insert, update or delete)"
                            ))
                        }
                        None => return Err("the record has no \"type\" field".into()),
                    }
                }
                picks.gather(&[data, old], &self.out)
            }
        }
    }
}

impl LineFormat for ChangelogLines {
    fn decode(&mut self, bytes: &[u8]) -> std::result::Result<(), BadLines> {
        self.inner.decode(bytes)
    }

    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, BadLines> {
        match self.inner.flush()? {
            Some(b) => Ok(Some(self.unwrap(&b)?)),
            None => Ok(None),
        }
    }

    fn reset(&mut self) {
        self.inner.reset()
    }
}

/// Positions of list `row`'s elements in the list's values.
fn list_range(list: &ListArray, row: usize) -> std::ops::Range<usize> {
    if list.is_null(row) {
        return 0..0;
    }
    let offsets = list.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

/// `column` with the rows where its parent is NULL made NULL too.
fn with_parent_nulls(column: &ArrayRef, parent: Option<&NullBuffer>) -> ArrayRef {
    let Some(parent) = parent else {
        return column.clone();
    };
    let nulls = NullBuffer::union(Some(parent), column.nulls());
    let data = column.to_data().into_builder().nulls(nulls);
    arrow_array::make_array(data.build().expect("the same data with more nulls"))
}

/// Where each output row comes from, and its change kind.
#[derive(Default)]
struct Picks {
    /// (source, row, fallback row in source 0 for the columns that are NULL in this one).
    rows: Vec<(usize, usize, Option<usize>)>,
    kinds: Vec<i8>,
}

impl Picks {
    fn push(&mut self, source: usize, row: usize, fallback: Option<usize>, kind: RowKind) {
        self.rows.push((source, row, fallback));
        self.kinds.push(kind as i8);
    }

    /// One column per field of `out` (but its last, the change kind), gathered from `sources`.
    fn gather(
        self,
        sources: &[&StructArray],
        out: &SchemaRef,
    ) -> std::result::Result<RecordBatch, String> {
        let width = out.fields().len() - 1;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width + 1);
        let mut indices = Vec::with_capacity(self.rows.len());
        for col in 0..width {
            let arrays: Vec<&dyn Array> = sources.iter().map(|s| s.column(col).as_ref()).collect();
            indices.clear();
            indices.extend(self.rows.iter().map(|&(s, row, fallback)| match fallback {
                Some(f) if sources[s].is_null(row) || arrays[s].is_null(row) => (0, f),
                _ => (s, row),
            }));
            let gathered = arrow_select::interleave::interleave(&arrays, &indices)
                .map_err(|e| e.to_string())?;
            columns.push(gathered);
        }
        columns.push(Arc::new(Int8Array::from(self.kinds)));
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(self.rows.len()));
        RecordBatch::try_new_with_options(out.clone(), columns, &options).map_err(|e| {
            // A NULL in a NOT NULL column (a PRIMARY KEY column, say).
            e.to_string()
        })
    }
}

/// Writes one record per row of `batch` (an updating batch: rows then `_row_kind`; without
/// that column every row is an insert) as JSON lines, as Flink's serializers do.
pub fn encode(format: &ChangelogFormat, batch: &RecordBatch, out: &mut impl Write) -> Result<()> {
    let n = batch.num_rows();
    let additions: BooleanBuffer = match changelog::row_kinds(batch) {
        Some(kinds) => kinds
            .values()
            .iter()
            .map(|k| RowKind::from_i8(*k).is_none_or(RowKind::is_addition))
            .collect(),
        None => BooleanBuffer::new_set(n),
    };
    let rows = changelog::strip_row_kind(batch);
    let rows = if format.json.iso_timestamps {
        rows
    } else {
        sql_timestamps_as_strings(&rows)?
    };
    let fields: Fields = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let row_struct = |nulls: Option<NullBuffer>| -> Result<ArrayRef> {
        Ok(Arc::new(StructArray::try_new(
            fields.clone(),
            rows.columns().to_vec(),
            nulls,
        )?))
    };
    let row_field = |name: &str| Field::new(name, DataType::Struct(fields.clone()), true);
    let kind_texts = |add: &'static str, remove: &'static str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(additions.iter().map(|a| {
            if a {
                add
            } else {
                remove
            }
        })))
    };
    let (schema, columns): (Vec<Field>, Vec<ArrayRef>) = match format.envelope {
        Envelope::Debezium { .. } => (
            vec![
                row_field("before"),
                row_field("after"),
                Field::new("op", DataType::Utf8, false),
            ],
            vec![
                row_struct(Some(NullBuffer::new(!&additions)))?,
                row_struct(Some(NullBuffer::new(additions.clone())))?,
                kind_texts("c", "d"),
            ],
        ),
        Envelope::Canal { .. } => {
            let item = Arc::new(Field::new("item", DataType::Struct(fields.clone()), true));
            let list = ListArray::try_new(
                item.clone(),
                OffsetBuffer::from_lengths(std::iter::repeat_n(1, n)),
                row_struct(None)?,
                None,
            )?;
            (
                vec![
                    Field::new("data", DataType::List(item), false),
                    Field::new("type", DataType::Utf8, false),
                ],
                vec![Arc::new(list), kind_texts("INSERT", "DELETE")],
            )
        }
        Envelope::Maxwell => (
            vec![row_field("data"), Field::new("type", DataType::Utf8, false)],
            vec![row_struct(None)?, kind_texts("insert", "delete")],
        ),
    };
    let envelopes = RecordBatch::try_new(Arc::new(Schema::new(schema)), columns)?;
    let mut w = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(!format.json.ignore_null_fields)
        .build::<_, arrow_json::writer::LineDelimited>(out);
    w.write(&envelopes)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests;
