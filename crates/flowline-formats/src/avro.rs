//! Avro: `avro` and `avro-confluent`.
//!
//! ```text
//! filesystem  ─ Object Container File ─ blocks checked, records cut (container.rs) ─┐
//! kafka avro  ─ binary body, writer schema derived from the table ─────────────────┤
//! kafka avro-confluent ─ 0x00, schema id (BE u32), body ─ registry ─────────────────┴▶ arrow-avro Decoder ─▶ conform
//! batch ─▶ cast to the writer schema's Arrow types ─▶ arrow-avro Encoder / OCF Writer
//! ```
//!
//! Decoding is arrow-rs's columnar Avro decoder; columns are matched to the table by name and
//! cast to its types, so a file written by another tool with its own schema reads as long as
//! its fields carry the table's column names. The schema derived from a table follows Flink's
//! `AvroSchemaConverter`: record `org.apache.flink.avro.generated.record`, nested rows
//! `record_<field>`, nullable types as `["null", T]` with default null.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_avro::compression::CompressionCodec;
use arrow_avro::reader::{Decoder, ReaderBuilder};

mod container;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_avro::writer::format::{AvroBinaryFormat, AvroOcfFormat};
use arrow_avro::writer::{Encoder, Writer, WriterBuilder};
use arrow_schema::{DataType, Schema, SchemaRef, TimeUnit};
pub use container::AvroFileReader;
use flowline_common::{OptionSpec, Options};
use serde_json::{json, Value};

use crate::conform::conform_batch;
use crate::records::{BinaryDecoder, BinaryEncoder, PushError};
use crate::schema_registry::RegistryConfig;
use crate::writer::BatchWriter;
use crate::{FormatError, RecordBuffer, Result};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::optional(
        "avro.codec",
        "compression of written files: null (default), deflate, snappy, zstandard",
    ),
    OptionSpec::optional(
        "avro.timestamp_mapping.legacy",
        "true (default, as Flink): TIMESTAMP is timestamp-millis/micros; false: local-timestamp-*",
    ),
    OptionSpec::optional(
        "avro.ignore-parse-errors",
        "skip and count records that cannot be decoded (default false)",
    ),
];

pub const CONFLUENT_OPTIONS: &[OptionSpec] = &[
    OptionSpec::required(
        "avro-confluent.url",
        "schema registry URL, e.g. http://127.0.0.1:8081",
    ),
    OptionSpec::optional(
        "avro-confluent.subject",
        "subject the written schema is registered under (default <topic>-value, <topic>-key)",
    ),
    OptionSpec::optional(
        "avro-confluent.schema",
        "Avro schema (JSON) to write instead of the one derived from the table",
    ),
    OptionSpec::optional(
        "avro-confluent.basic-auth.credentials-source",
        "USER_INFO (the only source)",
    ),
    OptionSpec::optional(
        "avro-confluent.basic-auth.user-info",
        "user:password for the registry",
    ),
    OptionSpec::optional(
        "avro-confluent.bearer-auth.credentials-source",
        "STATIC_TOKEN (the only source)",
    ),
    OptionSpec::optional(
        "avro-confluent.bearer-auth.token",
        "bearer token for the registry",
    ),
    OptionSpec::optional(
        "avro-confluent.timestamp_mapping.legacy",
        "true (default): TIMESTAMP is timestamp-millis/micros; false: local-timestamp-*",
    ),
    OptionSpec::optional(
        "avro-confluent.ignore-parse-errors",
        "skip and count records that cannot be decoded (default false)",
    ),
];

/// Rows per decoded batch before it is handed on.
const DECODE_BATCH_ROWS: usize = 8192;
/// Codecs a written file may use, by their Avro names.
const CODECS: &[&str] = &["null", "deflate", "snappy", "zstandard"];

#[derive(Debug, Clone, PartialEq)]
pub struct AvroOptions {
    /// Compression of written files (`None`: uncompressed).
    pub codec: Option<&'static str>,
    pub legacy_timestamps: bool,
    pub ignore_parse_errors: bool,
    /// `avro-confluent`: the registry and what to write.
    pub confluent: Option<Confluent>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Confluent {
    pub registry: RegistryConfig,
    pub subject: Option<String>,
    pub schema: Option<String>,
}

impl AvroOptions {
    /// Options of `avro` or `avro-confluent` (`name`).
    pub fn from_options(o: &Options, name: &str) -> Result<Self> {
        let key = |k: &str| format!("{name}.{k}");
        let codec = match o.get("avro.codec").filter(|_| name == "avro") {
            None | Some("null") => None,
            Some(c) => Some(*CODECS.iter().find(|v| **v == c).ok_or_else(|| {
                o.invalid(
                    "avro.codec",
                    format!("unknown codec; valid: {}", CODECS.join(", ")),
                )
            })?),
        };
        let confluent = if name == "avro-confluent" {
            let user_info = o.get(&key("basic-auth.user-info")).map(str::to_string);
            if let Some(src) = o.get(&key("basic-auth.credentials-source")) {
                if src != "USER_INFO" {
                    return Err(o
                        .invalid(
                            &key("basic-auth.credentials-source"),
                            "only USER_INFO is supported",
                        )
                        .into());
                }
            }
            if let Some(src) = o.get(&key("bearer-auth.credentials-source")) {
                if src != "STATIC_TOKEN" {
                    return Err(o
                        .invalid(
                            &key("bearer-auth.credentials-source"),
                            "only STATIC_TOKEN is supported",
                        )
                        .into());
                }
            }
            let url = o.require(&key("url"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(o
                    .invalid(&key("url"), "expected an http:// or https:// URL")
                    .into());
            }
            let schema = o.get(&key("schema")).map(str::to_string);
            if let Some(s) = &schema {
                arrow_schema_of(s).map_err(|e| {
                    o.invalid(&key("schema"), format!("not a valid Avro schema: {e}"))
                })?;
            }
            Some(Confluent {
                registry: RegistryConfig {
                    url: url.to_string(),
                    basic_auth: user_info,
                    bearer_token: o.get(&key("bearer-auth.token")).map(str::to_string),
                },
                subject: o.get(&key("subject")).map(str::to_string),
                schema,
            })
        } else {
            None
        };
        Ok(Self {
            codec,
            legacy_timestamps: o.bool(&key("timestamp_mapping.legacy"), true)?,
            ignore_parse_errors: o.bool(&key("ignore-parse-errors"), false)?,
            confluent,
        })
    }

    pub fn name(&self) -> &'static str {
        if self.confluent.is_some() {
            "avro-confluent"
        } else {
            "avro"
        }
    }

    /// The Avro schema (JSON) rows of `schema` are written with.
    fn writer_schema(&self, schema: &Schema) -> Result<String> {
        match self.confluent.as_ref().and_then(|c| c.schema.clone()) {
            Some(s) => Ok(s),
            None => avro_schema(schema, self.legacy_timestamps),
        }
    }
}

/// The Avro schema (JSON) Flink derives from a table's columns.
pub fn avro_schema(schema: &Schema, legacy_timestamps: bool) -> Result<String> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            field_json(
                f,
                "org.apache.flink.avro.generated.record",
                legacy_timestamps,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "type": "record",
        "name": "record",
        "namespace": "org.apache.flink.avro.generated",
        "fields": fields,
    })
    .to_string())
}

fn field_json(f: &arrow_schema::Field, parent: &str, legacy: bool) -> Result<Value> {
    let name = format!("{parent}_{}", f.name());
    let t = type_json(f.data_type(), f.is_nullable(), &name, legacy)?;
    Ok(if f.is_nullable() {
        json!({"name": f.name(), "type": t, "default": null})
    } else {
        json!({"name": f.name(), "type": t})
    })
}

fn type_json(dt: &DataType, nullable: bool, name: &str, legacy: bool) -> Result<Value> {
    let t = match dt {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::FixedSizeBinary(_) => json!("bytes"),
        DataType::Date32 | DataType::Date64 => json!({"type": "int", "logicalType": "date"}),
        DataType::Time32(_) | DataType::Time64(_) => {
            json!({"type": "int", "logicalType": "time-millis"})
        }
        DataType::Timestamp(unit, tz) => {
            let precision = match unit {
                TimeUnit::Second | TimeUnit::Millisecond => "millis",
                TimeUnit::Microsecond | TimeUnit::Nanosecond => "micros",
            };
            let local = if !legacy && tz.is_none() {
                "local-"
            } else {
                ""
            };
            json!({"type": "long", "logicalType": format!("{local}timestamp-{precision}")})
        }
        DataType::Decimal128(p, s) => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s})
        }
        DataType::List(item) | DataType::LargeList(item) => {
            json!({"type": "array", "items": type_json(item.data_type(), item.is_nullable(), name, legacy)?})
        }
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                unreachable!("map entries are a struct")
            };
            if !matches!(kv[0].data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                return Err(FormatError::Unsupported(format!(
                    "Avro maps have STRING keys, not {}",
                    kv[0].data_type()
                )));
            }
            json!({"type": "map", "values": type_json(kv[1].data_type(), kv[1].is_nullable(), name, legacy)?})
        }
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| field_json(f, name, legacy))
                .collect::<Result<Vec<_>>>()?;
            let short = name.rsplit('.').next().unwrap_or(name);
            json!({"type": "record", "name": short, "fields": fields})
        }
        other => {
            return Err(FormatError::Unsupported(format!(
                "type {other} has no Avro mapping"
            )))
        }
    };
    Ok(if nullable { json!(["null", t]) } else { t })
}

/// The Arrow schema arrow-avro reads and writes for an Avro schema (JSON).
fn arrow_schema_of(avro_json: &str) -> Result<SchemaRef> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(0), AvroSchema::new(avro_json.to_string()))?;
    Ok(decoder(&store)?.schema())
}

fn decoder(store: &SchemaStore) -> Result<Decoder> {
    Ok(ReaderBuilder::new()
        .with_batch_size(DECODE_BATCH_ROWS)
        .with_writer_schema_store(store.clone())
        .build_decoder()?)
}

impl From<arrow_avro::errors::AvroError> for FormatError {
    fn from(e: arrow_avro::errors::AvroError) -> Self {
        FormatError::Unsupported(format!("avro: {e}"))
    }
}

fn record_err(e: impl std::fmt::Display) -> PushError {
    PushError {
        reason: e.to_string(),
        fatal: false,
    }
}

/// The frame plain bodies are given so arrow-avro's streaming decoder takes them: a Confluent
/// header naming schema id 0, the table's own schema.
pub(crate) const PLAIN_FRAME: [u8; 5] = [0; 5];
const PLAIN_ID: u32 = 0;

/// One Avro record per message, plain or in the Confluent wire format.
pub(crate) struct AvroRecordDecoder {
    schema: SchemaRef,
    registry: Option<RegistryConfig>,
    store: SchemaStore,
    /// `None` until the first schema is known (Confluent).
    decoder: Option<Decoder>,
    out: Vec<RecordBatch>,
}

impl AvroRecordDecoder {
    pub fn new(options: &AvroOptions, schema: SchemaRef) -> Result<Self> {
        match &options.confluent {
            None => {
                let writer = avro_schema(&schema, options.legacy_timestamps)?;
                Self::with_writer_schema(&writer, schema)
            }
            Some(c) => Ok(Self {
                schema,
                registry: Some(c.registry.clone()),
                store: SchemaStore::new_with_type(FingerprintAlgorithm::Id),
                decoder: None,
                out: Vec::new(),
            }),
        }
    }

    /// Plain bodies written with the Avro schema `writer` (JSON), read as `schema` (fields
    /// matched by name).
    pub fn with_writer_schema(writer: &str, schema: SchemaRef) -> Result<Self> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(
            Fingerprint::Id(PLAIN_ID),
            AvroSchema::new(writer.to_string()),
        )?;
        Ok(Self {
            schema,
            registry: None,
            decoder: Some(decoder(&store)?),
            store,
            out: Vec::new(),
        })
    }

    /// Decodes plain records already cut apart, each preceded by [`PLAIN_FRAME`], in one pass.
    pub(crate) fn decode_framed(&mut self, framed: &[u8]) -> Result<()> {
        let mut at = 0;
        while at < framed.len() {
            if self.decoder.as_ref().is_some_and(|d| d.batch_is_full()) {
                self.flush_decoder()?;
            }
            let d = self.decoder.as_mut().expect("a plain decoder");
            let n = d.decode(&framed[at..])?;
            if n == 0 && !d.batch_is_full() {
                return Err(FormatError::Unsupported(
                    "avro: a record could not be decoded".into(),
                ));
            }
            at += n;
        }
        Ok(())
    }

    /// Hands the decoded rows on to `out`.
    fn flush_decoder(&mut self) -> Result<()> {
        if let Some(d) = self.decoder.as_mut() {
            if let Some(b) = d.flush()? {
                self.out.push(conform_batch(&b, &self.schema)?);
            }
        }
        Ok(())
    }

    /// Fetches schema `id` from the registry and rebuilds the decoder to know it.
    fn learn(&mut self, id: u32) -> std::result::Result<(), PushError> {
        let registry = self.registry.as_ref().expect("confluent");
        let text = registry.schema_by_id(id).map_err(|e| PushError {
            reason: e.0,
            fatal: true,
        })?;
        self.store
            .set(Fingerprint::Id(id), AvroSchema::new(text))
            .map_err(|e| record_err(format!("schema id {id}: {e}")))?;
        self.flush_decoder().map_err(|e| PushError {
            reason: e.to_string(),
            fatal: true,
        })?;
        self.decoder =
            Some(decoder(&self.store).map_err(|e| record_err(format!("schema id {id}: {e}")))?);
        Ok(())
    }
}

impl BinaryDecoder for AvroRecordDecoder {
    fn push(&mut self, record: &[u8]) -> std::result::Result<(), PushError> {
        let (frame, body) = if self.registry.is_some() {
            if record.len() < 5 || record[0] != 0 {
                return Err(record_err(format!(
                    "not in the Confluent wire format (magic byte 0, then a 4-byte schema id): {} bytes starting {:02x?}",
                    record.len(),
                    &record[..record.len().min(5)]
                )));
            }
            let id = u32::from_be_bytes(record[1..5].try_into().expect("4 bytes"));
            if self.store.lookup(&Fingerprint::Id(id)).is_none() {
                self.learn(id)?;
            }
            (&record[..5], &record[5..])
        } else {
            (&PLAIN_FRAME[..], record)
        };
        let flush = |s: &mut Self| {
            s.flush_decoder().map_err(|e| PushError {
                reason: e.to_string(),
                fatal: true,
            })
        };
        if self.decoder.as_ref().is_some_and(|d| d.batch_is_full()) {
            flush(self)?;
        }
        let d = self.decoder.as_mut().expect("a known schema");
        if d.decode(frame).map_err(record_err)? != frame.len() {
            return Err(record_err("bad schema id frame"));
        }
        // A new writer schema closes the batch being built.
        if d.batch_is_full() {
            flush(self)?;
        }
        let d = self.decoder.as_mut().expect("a known schema");
        let n = d.decode(body).map_err(record_err)?;
        if n != body.len() {
            return Err(record_err(if n == 0 {
                format!("truncated record ({} bytes)", body.len())
            } else {
                format!("{} bytes after the end of the record", body.len() - n)
            }));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        self.flush_decoder()?;
        Ok(crate::concat_all(
            &self.schema,
            std::mem::take(&mut self.out),
        )?)
    }

    fn reset(&mut self) -> Result<()> {
        self.out.clear();
        if self.decoder.is_some() {
            self.decoder = Some(decoder(&self.store)?);
        }
        Ok(())
    }
}

/// Encodes rows as Avro bodies, Confluent-framed for `avro-confluent`.
pub(crate) struct AvroRecordEncoder {
    /// The Arrow schema the writer schema reads as; batches are cast to it.
    arrow: SchemaRef,
    encoder: Encoder,
    writer_schema: String,
    confluent: Option<(Confluent, String)>,
    /// The Confluent frame once the schema is registered.
    frame: Option<[u8; 5]>,
}

impl AvroRecordEncoder {
    pub fn new(options: &AvroOptions, schema: &SchemaRef) -> Result<Self> {
        let writer_schema = options.writer_schema(schema)?;
        let arrow = with_avro_schema(arrow_schema_of(&writer_schema)?, &writer_schema);
        let encoder =
            WriterBuilder::new(arrow.as_ref().clone()).build_encoder::<AvroBinaryFormat>()?;
        let confluent = match &options.confluent {
            None => None,
            Some(c) => {
                let subject = c.subject.clone().ok_or_else(|| {
                    FormatError::Unsupported(
                        "writing avro-confluent needs 'avro-confluent.subject'".into(),
                    )
                })?;
                Some((c.clone(), subject))
            }
        };
        Ok(Self {
            arrow,
            encoder,
            writer_schema,
            confluent,
            frame: None,
        })
    }
}

fn with_avro_schema(arrow: SchemaRef, avro_json: &str) -> SchemaRef {
    let mut md = arrow.metadata().clone();
    md.insert(
        arrow_avro::schema::SCHEMA_METADATA_KEY.to_string(),
        avro_json.to_string(),
    );
    Arc::new(Schema::new_with_metadata(arrow.fields().clone(), md))
}

impl BinaryEncoder for AvroRecordEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut RecordBuffer) -> Result<()> {
        if let (Some((c, subject)), None) = (&self.confluent, self.frame) {
            let id = c.registry.register(subject, &self.writer_schema)?;
            let mut frame = [0u8; 5];
            frame[1..].copy_from_slice(&id.to_be_bytes());
            self.frame = Some(frame);
        }
        let batch = conform_batch(batch, &self.arrow)?;
        self.encoder.encode(&batch)?;
        let rows = self.encoder.flush();
        for row in rows.iter() {
            match &self.frame {
                Some(f) => out.push_framed(f, &row),
                None => out.push(Some(&row), false),
            }
        }
        Ok(())
    }
}

/// A file writer's output that reports its size while arrow-avro owns it.
struct Counted {
    inner: BufWriter<File>,
    bytes: Arc<AtomicU64>,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes an Avro Object Container File, one block per batch.
pub(crate) struct AvroFileWriter {
    inner: Writer<Counted, AvroOcfFormat>,
    arrow: SchemaRef,
    bytes: Arc<AtomicU64>,
}

impl AvroFileWriter {
    pub fn new(options: &AvroOptions, schema: &SchemaRef, file: File) -> Result<Self> {
        let writer_schema = options.writer_schema(schema)?;
        let arrow = with_avro_schema(arrow_schema_of(&writer_schema)?, &writer_schema);
        let codec = options.codec.map(|c| match c {
            "deflate" => CompressionCodec::Deflate,
            "snappy" => CompressionCodec::Snappy,
            _ => CompressionCodec::ZStandard,
        });
        let bytes = Arc::new(AtomicU64::new(0));
        let out = Counted {
            inner: BufWriter::with_capacity(256 * 1024, file),
            bytes: bytes.clone(),
        };
        let inner = WriterBuilder::new(arrow.as_ref().clone())
            .with_compression(codec)
            .build::<_, AvroOcfFormat>(out)?;
        Ok(Self {
            inner,
            arrow,
            bytes,
        })
    }
}

impl BatchWriter for AvroFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = conform_batch(batch, &self.arrow)?;
        self.inner.write(&batch)?;
        Ok(())
    }
    fn bytes_written(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.inner.finish()?;
        let mut out = self.inner.into_inner();
        out.flush()?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}
