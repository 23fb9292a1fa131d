//! One record per message (Kafka keys and values): `json`, `csv`, `raw`, the changelog formats,
//! and the binary formats `avro`, `avro-confluent` and `protobuf`.
//!
//! ```text
//! messages ──push──▶ RecordBuffer (records joined by '\n') ──RecordDecoder──▶ RecordBatch
//! RecordBatch ──RecordEncoder──▶ RecordBuffer ──record(i)──▶ one message per row
//! ```
//!
//! Decoding reuses the line decoders of files: a buffer of many records goes to the vectorised
//! arrow decoder in one call, and only a failing buffer is retried record by record to name the
//! bad one (or skip it with `<format>.ignore-parse-errors`). Binary formats decode record by
//! record into column builders ([`BinaryDecoder`]).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_schema::{DataType, SchemaRef};
use flowline_common::Options;

use crate::avro::{AvroOptions, AvroRecordDecoder, AvroRecordEncoder};
use crate::csv::{CsvLines, CsvOptions};
use crate::json::{JsonLines, JsonOptions};
use crate::protobuf::{ProtobufFormat, ProtobufRecordDecoder, ProtobufRecordEncoder};
use crate::text::sql_timestamps_as_strings;
use crate::{
    boxed_lines, ChangelogFormat, ChangelogLines, FormatError, LineChunkDecoder, LineFormat, Result,
};

/// Formats a message-carrying connector may name in `format`, `key.format` or `value.format`.
pub const RECORD_FORMATS: &[&str] = &[
    "json",
    "csv",
    "raw",
    "debezium-json",
    "canal-json",
    "maxwell-json",
    "avro",
    "avro-confluent",
    "protobuf",
];

/// A record format with its parsed options.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordFormat {
    Json(JsonOptions),
    Csv(CsvOptions),
    /// The whole message as the single column (STRING or BYTES).
    Raw,
    /// A changelog record per message: decoded rows carry a change kind.
    Changelog(ChangelogFormat),
    /// `avro` (a binary body per message) or `avro-confluent` (with a schema id).
    Avro(AvroOptions),
    Protobuf(ProtobufFormat),
}

impl RecordFormat {
    /// The format named by option `key` (`format`, `key.format`, `value.format`) and its options.
    pub fn from_options(options: &Options, key: &str) -> Result<Self> {
        let name = options.require(key)?;
        let options = &crate::format_view(options, key);
        match name {
            "json" => Ok(RecordFormat::Json(JsonOptions::from_options(options)?)),
            "csv" => Ok(RecordFormat::Csv(CsvOptions::from_options(options)?)),
            "raw" => Ok(RecordFormat::Raw),
            a @ ("avro" | "avro-confluent") => {
                Ok(RecordFormat::Avro(AvroOptions::from_options(options, a)?))
            }
            "protobuf" => Ok(RecordFormat::Protobuf(ProtobufFormat::from_options(
                options,
            )?)),
            c if ChangelogFormat::is_changelog(c) => Ok(RecordFormat::Changelog(
                ChangelogFormat::from_options(options, c)?,
            )),
            other => Err(options
                .invalid(
                    key,
                    format!(
                        "unknown format '{other}'; valid formats: {}",
                        RECORD_FORMATS.join(", ")
                    ),
                )
                .into()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            RecordFormat::Json(_) => "json",
            RecordFormat::Csv(_) => "csv",
            RecordFormat::Raw => "raw",
            RecordFormat::Changelog(c) => c.name(),
            RecordFormat::Avro(a) => a.name(),
            RecordFormat::Protobuf(_) => "protobuf",
        }
    }

    pub fn ignore_parse_errors(&self) -> bool {
        match self {
            RecordFormat::Json(o) => o.ignore_parse_errors,
            RecordFormat::Csv(o) => o.ignore_parse_errors,
            RecordFormat::Raw => false,
            RecordFormat::Changelog(c) => c.json.ignore_parse_errors,
            RecordFormat::Avro(a) => a.ignore_parse_errors,
            RecordFormat::Protobuf(p) => p.ignore_parse_errors,
        }
    }

    /// The registry subject `avro-confluent` writes under when the options name none (Flink:
    /// `<topic>-value` or `<topic>-key`).
    pub fn set_default_subject(&mut self, subject: String) {
        if let RecordFormat::Avro(AvroOptions {
            confluent: Some(c), ..
        }) = self
        {
            c.subject.get_or_insert(subject);
        }
    }

    /// Whether decoded rows carry a change kind (an updating stream).
    pub fn is_changelog(&self) -> bool {
        matches!(self, RecordFormat::Changelog(_))
    }

    /// The decoder of buffers of this format's records into batches of `schema` (followed by
    /// the change kind for a changelog format); `None` for raw and the binary formats.
    pub fn line_decoder(
        &self,
        schema: &SchemaRef,
    ) -> Result<Option<LineChunkDecoder<Box<dyn LineFormat>>>> {
        let s = || schema.clone();
        Ok(Some(match self {
            RecordFormat::Json(o) => boxed_lines(|| JsonLines::new(s(), o), o.ignore_parse_errors)?,
            RecordFormat::Csv(o) => boxed_lines(|| CsvLines::new(s(), o), o.ignore_parse_errors)?,
            RecordFormat::Changelog(c) => {
                boxed_lines(|| ChangelogLines::new(s(), c), c.json.ignore_parse_errors)?
            }
            RecordFormat::Raw | RecordFormat::Avro(_) | RecordFormat::Protobuf(_) => {
                return Ok(None)
            }
        }))
    }

    /// Checks that `schema` can be carried: raw needs exactly one STRING or BYTES column.
    pub fn check_schema(&self, schema: &SchemaRef) -> Result<()> {
        if matches!(self, RecordFormat::Raw) {
            let ok = schema.fields().len() == 1
                && matches!(
                    schema.field(0).data_type(),
                    DataType::Utf8 | DataType::Binary
                );
            if !ok {
                return Err(FormatError::Unsupported(format!(
                    "format 'raw' carries exactly one STRING or BYTES column, the table has {}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if let RecordFormat::Protobuf(p) = self {
            p.check_schema(schema)?;
        }
        Ok(())
    }
}

/// Records one after another, each followed by `'\n'`; `None` payloads (Kafka tombstones) are
/// remembered but hold no bytes.
#[derive(Default, Debug)]
pub struct RecordBuffer {
    bytes: Vec<u8>,
    /// Per record: the end of its bytes (exclusive, before the '\n'), or `None` for no payload.
    ends: Vec<Option<usize>>,
}

impl RecordBuffer {
    /// Appends one record. Newlines inside a JSON record are whitespace and become spaces, so
    /// one record is one line.
    pub fn push(&mut self, payload: Option<&[u8]>, json: bool) {
        match payload {
            None => self.ends.push(None),
            Some(p) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(p);
                if json {
                    for b in &mut self.bytes[start..] {
                        if *b == b'\n' || *b == b'\r' {
                            *b = b' ';
                        }
                    }
                }
                self.ends.push(Some(self.bytes.len()));
                self.bytes.push(b'\n');
            }
        }
    }

    /// Appends one record made of `frame` then `payload` (a schema id header and a body).
    pub fn push_framed(&mut self, frame: &[u8], payload: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.bytes.extend_from_slice(payload);
        self.ends.push(Some(self.bytes.len()));
        self.bytes.push(b'\n');
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Record `i`'s bytes, `None` for no payload.
    pub fn record(&self, i: usize) -> Option<&[u8]> {
        let end = self.ends[i]?;
        let start = self.ends[..i]
            .iter()
            .rev()
            .find_map(|e| *e)
            .map_or(0, |e| e + 1);
        Some(&self.bytes[start..end])
    }

    /// Records as (start, end) ranges, `None` for no payload: one pass, for encoders' callers.
    pub fn ranges(&self) -> impl Iterator<Item = Option<(usize, usize)>> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |e| {
            e.map(|end| {
                let r = (start, end);
                start = end + 1;
                r
            })
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A record that could not be decoded: its index in the buffer and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index}: {reason}")]
pub struct RecordError {
    pub index: usize,
    pub reason: String,
}

impl<T: LineFormat + ?Sized> LineFormat for Box<T> {
    fn decode(&mut self, bytes: &[u8]) -> std::result::Result<(), crate::lines::BadLines> {
        (**self).decode(bytes)
    }
    fn flush(&mut self) -> std::result::Result<Option<RecordBatch>, crate::lines::BadLines> {
        (**self).flush()
    }
    fn reset(&mut self) {
        (**self).reset()
    }
}

/// Why one binary record could not be decoded. A `fatal` error (the schema registry cannot be
/// reached) fails the job even with `ignore-parse-errors`: the record is not at fault.
#[derive(Debug)]
pub(crate) struct PushError {
    pub reason: String,
    pub fatal: bool,
}

/// Decodes binary records one at a time into column builders.
pub(crate) trait BinaryDecoder: Send {
    /// Decodes one record. After an error the rows pushed since the last `finish` may be
    /// damaged: call `reset` and push the good ones again.
    fn push(&mut self, record: &[u8]) -> std::result::Result<(), PushError>;
    /// The rows pushed since the last `finish` or `reset`, as a batch of the table's schema.
    fn finish(&mut self) -> Result<Option<RecordBatch>>;
    /// Drops the rows pushed since the last `finish`.
    fn reset(&mut self) -> Result<()>;
}

/// Encodes each row of a batch as one binary record.
pub(crate) trait BinaryEncoder: Send {
    fn encode(&mut self, batch: &RecordBatch, out: &mut RecordBuffer) -> Result<()>;
}

enum Decoding {
    Lines(LineChunkDecoder<Box<dyn LineFormat>>),
    Raw,
    Binary {
        decoder: Box<dyn BinaryDecoder>,
        ignore_parse_errors: bool,
        skipped: u64,
        last_skipped: Vec<usize>,
    },
}

/// Decodes buffers of records into batches of `schema`.
pub struct RecordDecoder {
    schema: SchemaRef,
    decoding: Decoding,
    json: bool,
}

impl RecordDecoder {
    pub fn new(format: &RecordFormat, schema: SchemaRef) -> Result<Self> {
        format.check_schema(&schema)?;
        let binary = |decoder: Box<dyn BinaryDecoder>| Decoding::Binary {
            decoder,
            ignore_parse_errors: format.ignore_parse_errors(),
            skipped: 0,
            last_skipped: Vec::new(),
        };
        let decoding = match format {
            RecordFormat::Raw => Decoding::Raw,
            RecordFormat::Avro(a) => binary(Box::new(AvroRecordDecoder::new(a, schema.clone())?)),
            RecordFormat::Protobuf(p) => {
                binary(Box::new(ProtobufRecordDecoder::new(p, schema.clone())?))
            }
            _ => Decoding::Lines(format.line_decoder(&schema)?.expect("a line format")),
        };
        Ok(Self {
            schema,
            decoding,
            json: matches!(format, RecordFormat::Json(_) | RecordFormat::Changelog(_)),
        })
    }

    /// Whether [`RecordBuffer::push`] should be told the records are JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Records skipped so far as undecodable (with `ignore-parse-errors`).
    pub fn skipped(&self) -> u64 {
        match &self.decoding {
            Decoding::Lines(l) => l.skipped,
            Decoding::Raw => 0,
            Decoding::Binary { skipped, .. } => *skipped,
        }
    }

    /// Indices of the records the last [`RecordDecoder::decode`] skipped as undecodable.
    pub fn last_skipped(&self, records: &RecordBuffer) -> Vec<usize> {
        let lines = match &self.decoding {
            Decoding::Lines(l) if !l.last_skipped.is_empty() => l,
            Decoding::Binary { last_skipped, .. } => return last_skipped.clone(),
            _ => return Vec::new(),
        };
        let with_payload: Vec<usize> = records
            .ends
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| i)
            .collect();
        lines
            .last_skipped
            .iter()
            .filter_map(|e| with_payload.get(e.line as usize - 1).copied())
            .collect()
    }

    /// The rows of `records`. Records without payload produce no row (json, csv), or a row of
    /// NULLs (raw, and the binary formats: an upsert tombstone, whose key columns come from
    /// the key; such a batch's schema has every field nullable). The error names the index of
    /// the first bad record.
    pub fn decode(
        &mut self,
        records: &RecordBuffer,
    ) -> std::result::Result<Option<RecordBatch>, RecordError> {
        let lines = match &mut self.decoding {
            Decoding::Raw => {
                return raw_batch(&self.schema, records)
                    .map(Some)
                    .map_err(|e| RecordError {
                        index: 0,
                        reason: e.to_string(),
                    })
            }
            Decoding::Binary {
                decoder,
                ignore_parse_errors,
                skipped,
                last_skipped,
            } => {
                return decode_binary(
                    decoder.as_mut(),
                    records,
                    *ignore_parse_errors,
                    skipped,
                    last_skipped,
                    &self.schema,
                )
            }
            Decoding::Lines(l) => l,
        };
        if records.bytes.is_empty() {
            return Ok(None);
        }
        // Line numbers count from 1 per call: a fresh line counter for each buffer.
        lines.restart_lines();
        lines.decode_chunk(&records.bytes).map_err(|e| {
            // Line n is the n-th record with a payload.
            let index = records
                .ends
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_some())
                .nth(e.line as usize - 1)
                .map_or(0, |(i, _)| i);
            RecordError {
                index,
                reason: e.reason,
            }
        })
    }
}

/// Binary records one by one. A bad record may leave half a row in the builders, so after one
/// the rows decoded since the last good batch are decoded again without it.
fn decode_binary(
    decoder: &mut dyn BinaryDecoder,
    records: &RecordBuffer,
    ignore_parse_errors: bool,
    skipped: &mut u64,
    last_skipped: &mut Vec<usize>,
    schema: &SchemaRef,
) -> std::result::Result<Option<RecordBatch>, RecordError> {
    last_skipped.clear();
    let fail = |index: usize, e: FormatError| RecordError {
        index,
        reason: e.to_string(),
    };
    let mut done: Vec<RecordBatch> = Vec::new();
    // Records pushed since the last `finish`.
    let mut pending: Vec<(usize, (usize, usize))> = Vec::new();
    // Records without payload: how many decoded rows precede each (its row of NULLs).
    let (mut null_rows, mut decoded) = (Vec::new(), 0usize);
    for (i, range) in records.ranges().enumerate() {
        let Some((s, e)) = range else {
            null_rows.push(decoded);
            continue;
        };
        match decoder.push(&records.bytes[s..e]) {
            Ok(()) => {
                pending.push((i, (s, e)));
                decoded += 1;
            }
            Err(err) if ignore_parse_errors && !err.fatal => {
                *skipped += 1;
                last_skipped.push(i);
                decoder.reset().map_err(|e| fail(i, e))?;
                for (j, (s, e)) in &pending {
                    decoder
                        .push(&records.bytes[*s..*e])
                        .map_err(|err| RecordError {
                            index: *j,
                            reason: err.reason,
                        })?;
                }
                pending.clear();
                done.extend(decoder.finish().map_err(|e| fail(i, e))?);
            }
            Err(err) => {
                let _ = decoder.reset();
                return Err(RecordError {
                    index: i,
                    reason: err.reason,
                });
            }
        }
    }
    let last = records.len().saturating_sub(1);
    done.extend(decoder.finish().map_err(|e| fail(last, e))?);
    let rows = crate::concat_all(schema, done).map_err(|e| fail(last, e.into()))?;
    if null_rows.is_empty() {
        return Ok(rows);
    }
    with_null_rows(schema, rows, &null_rows)
        .map(Some)
        .map_err(|e| fail(last, e))
}

/// `rows` with a row of NULLs inserted before decoded row `at` for each `at` of `null_rows`
/// (ascending); the schema has every field nullable.
fn with_null_rows(
    schema: &SchemaRef,
    rows: Option<RecordBatch>,
    null_rows: &[usize],
) -> Result<RecordBatch> {
    let rows = rows.unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    let mut indices = Vec::with_capacity(rows.num_rows() + null_rows.len());
    let mut next = 0;
    for &at in null_rows {
        indices.extend((next..at).map(|i| (0, i)));
        indices.push((1, 0));
        next = at;
    }
    indices.extend((next..rows.num_rows()).map(|i| (0, i)));
    let columns = rows
        .columns()
        .iter()
        .map(|c| {
            let null = arrow_array::new_null_array(c.data_type(), 1);
            arrow_select::interleave::interleave(&[c.as_ref(), null.as_ref()], &indices)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let nullable = arrow_schema::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    );
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(indices.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(nullable),
        columns,
        &opts,
    )?)
}

fn raw_batch(schema: &SchemaRef, records: &RecordBuffer) -> Result<RecordBatch> {
    let values = records
        .ranges()
        .map(|r| r.map(|(s, e)| &records.bytes[s..e]));
    let column: ArrayRef = match schema.field(0).data_type() {
        DataType::Utf8 => {
            let mut b = arrow_array::builder::StringBuilder::with_capacity(
                records.len(),
                records.bytes.len(),
            );
            for v in values {
                match v {
                    Some(bytes) => b.append_value(String::from_utf8_lossy(bytes)),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        _ => Arc::new(BinaryArray::from_iter(values)),
    };
    Ok(RecordBatch::try_new(schema.clone(), vec![column])?)
}

/// Encodes batches, one record per row.
pub struct RecordEncoder {
    format: RecordFormat,
    binary: Option<Box<dyn BinaryEncoder>>,
}

impl RecordEncoder {
    pub fn new(format: &RecordFormat, schema: &SchemaRef) -> Result<Self> {
        format.check_schema(schema)?;
        let binary: Option<Box<dyn BinaryEncoder>> = match format {
            RecordFormat::Avro(a) => Some(Box::new(AvroRecordEncoder::new(a, schema)?)),
            RecordFormat::Protobuf(p) => Some(Box::new(ProtobufRecordEncoder::new(p, schema)?)),
            _ => None,
        };
        Ok(Self {
            format: format.clone(),
            binary,
        })
    }

    /// Appends one record per row of `batch` to `out`.
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut RecordBuffer) -> Result<()> {
        if let Some(b) = self.binary.as_mut() {
            return b.encode(batch, out);
        }
        let mut text = Vec::new();
        match &self.format {
            RecordFormat::Avro(_) | RecordFormat::Protobuf(_) => unreachable!("binary encoder"),
            RecordFormat::Raw => {
                let col = batch.column(0);
                for i in 0..batch.num_rows() {
                    if col.is_null(i) {
                        out.push(None, false);
                    } else if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                        out.push(Some(s.value(i).as_bytes()), false);
                    } else if let Some(b) = col.as_any().downcast_ref::<BinaryArray>() {
                        out.push(Some(b.value(i)), false);
                    }
                }
                return Ok(());
            }
            RecordFormat::Json(o) => {
                let batch = if o.iso_timestamps {
                    batch.clone()
                } else {
                    sql_timestamps_as_strings(batch)?
                };
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(!o.ignore_null_fields)
                    .build::<_, arrow_json::writer::LineDelimited>(&mut text);
                w.write(&batch)?;
                w.finish()?;
            }
            RecordFormat::Changelog(c) => {
                c.check_writable()?;
                crate::changelog::encode(c, batch, &mut text)?;
            }
            RecordFormat::Csv(o) => {
                let batch = sql_timestamps_as_strings(batch)?;
                let mut w = arrow_csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(o.delimiter)
                    .with_quote(o.quote.unwrap_or(b'"'))
                    .build(&mut text);
                w.write(&batch)?;
            }
        }
        // One line per row; a CSV field may hold a newline inside quotes.
        let quote = match &self.format {
            RecordFormat::Csv(o) => Some(o.quote.unwrap_or(b'"')),
            _ => None,
        };
        let (mut start, mut quoted) = (0, false);
        for (i, b) in text.iter().enumerate() {
            if Some(*b) == quote {
                quoted = !quoted;
            } else if *b == b'\n' && !quoted {
                let end = if i > start && text[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                out.push(Some(&text[start..end]), false);
                start = i + 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn json() -> RecordFormat {
        RecordFormat::Json(JsonOptions::from_options(&Options::default()).unwrap())
    }

    #[test]
    fn json_round_trip_and_bad_record_index() {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a\nb"), Some("x"), None])),
            ],
        )
        .unwrap();
        let mut buf = RecordBuffer::default();
        RecordEncoder::new(&json(), &schema())
            .unwrap()
            .encode(&batch, &mut buf)
            .unwrap();
        assert_eq!(buf.len(), 3);
        assert_eq!(buf.record(0).unwrap(), br#"{"id":1,"name":"a\nb"}"#);
        let mut dec = RecordDecoder::new(&json(), schema()).unwrap();
        let mut input = RecordBuffer::default();
        for i in 0..3 {
            input.push(buf.record(i), true);
        }
        assert_eq!(dec.decode(&input).unwrap().unwrap(), batch);

        // A pretty-printed record, a tombstone, then a bad one: the error names record 2.
        let mut bad = RecordBuffer::default();
        bad.push(Some(b"{\n  \"id\": 5\n}"), true);
        bad.push(None, true);
        bad.push(Some(b"{\"id\": \"x\"}"), true);
        let err = dec.decode(&bad).unwrap_err();
        assert_eq!(err.index, 2, "{err}");
    }

    #[test]
    fn csv_records_keep_quoted_newlines() {
        let csv = RecordFormat::Csv(CsvOptions::from_options(&Options::default()).unwrap());
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x\ny", "z"])),
            ],
        )
        .unwrap();
        let mut buf = RecordBuffer::default();
        RecordEncoder::new(&csv, &schema())
            .unwrap()
            .encode(&batch, &mut buf)
            .unwrap();
        assert_eq!(buf.len(), 2);
        assert_eq!(buf.record(0).unwrap(), b"1,\"x\ny\"");
    }

    #[test]
    fn raw_needs_one_string_or_bytes_column() {
        assert!(RecordDecoder::new(&RecordFormat::Raw, schema()).is_err());
        let one = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, true)]));
        let mut dec = RecordDecoder::new(&RecordFormat::Raw, one).unwrap();
        let mut buf = RecordBuffer::default();
        buf.push(Some(b"hello"), false);
        buf.push(None, false);
        let b = dec.decode(&buf).unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(0).is_null(1));
    }
}
