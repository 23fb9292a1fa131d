//! Formats: bytes ⇄ Arrow record batches.
//!
//! ```text
//! file bytes ──▶ LineChunkDecoder<Json|Csv> ──▶ RecordBatch      (fast path: whole chunks;
//!                                                                 slow path on error: line by line)
//! RecordBatch ──▶ BatchWriter (json lines, csv, parquet, changelog) ──▶ file
//! messages ⇄ RecordBuffer ⇄ RecordDecoder / RecordEncoder (json, csv, raw, changelog; one record each)
//! ```
//!
//! Changelog formats (`debezium-json`, `canal-json`, `maxwell-json`) are JSON lines whose rows
//! carry a change kind: decoded batches end with `flowline_common::changelog::ROW_KIND`, and
//! encoders read it. They work wherever JSON lines do, in files and in messages.
//!
//! Option keys follow Flink: `format` picks the format, `<format>.<option>` configures it
//! (`json.ignore-parse-errors`, `csv.field-delimiter`, `parquet.compression`).

pub mod avro;
pub mod changelog;
mod conform;
pub mod csv;
pub mod json;
mod lines;
pub mod parquet;
pub mod protobuf;
mod records;
#[cfg(test)]
mod round_trip_tests;
mod schema_registry;
pub mod text;
mod writer;

use flowline_common::{OptionError, OptionSpec, Options};

pub use changelog::{ChangelogFormat, ChangelogLines, CHANGELOG_FORMATS};
pub use conform::conform_batch;
pub use lines::{BadLines, DecodeError, LineChunkDecoder, LineFormat};
pub use records::{
    RecordBuffer, RecordDecoder, RecordEncoder, RecordError, RecordFormat, RECORD_FORMATS,
};
pub use schema_registry::{RegistryConfig, RegistryError};
pub use writer::{create_writer, BatchWriter};

/// Formats a connector may name in `'format'`.
pub const FORMATS: &[&str] = &[
    "json",
    "csv",
    "parquet",
    "debezium-json",
    "canal-json",
    "maxwell-json",
    "avro",
    "protobuf",
];

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Unsupported(String),
    /// The schema registry failed: outside Flowline.
    #[error("schema registry: {0}")]
    Registry(#[from] schema_registry::RegistryError),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// A format with its parsed options.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatConfig {
    Json(json::JsonOptions),
    Csv(csv::CsvOptions),
    Parquet(parquet::ParquetOptions),
    Changelog(ChangelogFormat),
    /// Avro Object Container Files.
    Avro(avro::AvroOptions),
    /// Length-delimited protobuf messages.
    Protobuf(protobuf::ProtobufFormat),
}

/// The bytes of one file of a whole-batch format: a file on disk, or a file's contents in
/// memory (an HTTP ingest request body).
pub enum FileInput {
    File(std::fs::File),
    Bytes(bytes::Bytes),
}

impl FileInput {
    /// A buffered reader over the input (the formats that read front to back).
    pub(crate) fn into_buf_read(self) -> Box<dyn std::io::BufRead + Send> {
        match self {
            FileInput::File(f) => Box::new(std::io::BufReader::with_capacity(256 * 1024, f)),
            FileInput::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        }
    }
}

/// Batches of `schema` as one: `None` for none, the batch itself for one (no copy), else
/// concatenated.
pub fn concat_all(
    schema: &arrow_schema::SchemaRef,
    mut batches: Vec<arrow_array::RecordBatch>,
) -> std::result::Result<Option<arrow_array::RecordBatch>, arrow_schema::ArrowError> {
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.pop()),
        _ => arrow_select::concat::concat_batches(schema, &batches).map(Some),
    }
}

/// An unsigned LEB128 varint read byte by byte (a protobuf length prefix; an Avro block header
/// before zig-zag): `None` at a clean end of input, else the value and its length in bytes.
/// Input that ends inside one is `UnexpectedEof`, one over 10 bytes `InvalidData`.
pub(crate) fn read_varint(r: &mut impl std::io::Read) -> std::io::Result<Option<(u64, u64)>> {
    let (mut v, mut shift, mut len) = (0u64, 0, 0);
    loop {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            return if len == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        len += 1;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(Some((v, len)));
        }
        shift += 7;
        if shift >= 64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "varint too long",
            ));
        }
    }
}

/// A file read as whole batches (Parquet, Avro, protobuf) rather than line by line.
pub trait FileBatches: Iterator<Item = Result<arrow_array::RecordBatch>> + Send {
    /// Records skipped so far as undecodable (with `ignore-parse-errors`).
    fn skipped(&self) -> u64 {
        0
    }
}

impl FileBatches for parquet::ParquetFileReader {}
impl FileBatches for avro::AvroFileReader {}
impl FileBatches for protobuf::ProtobufFileReader {
    fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl FormatConfig {
    pub fn name(&self) -> &'static str {
        match self {
            FormatConfig::Json(_) => "json",
            FormatConfig::Csv(_) => "csv",
            FormatConfig::Parquet(_) => "parquet",
            FormatConfig::Changelog(c) => c.name(),
            FormatConfig::Avro(_) => "avro",
            FormatConfig::Protobuf(_) => "protobuf",
        }
    }

    /// Whether bad records are skipped and counted instead of failing the job.
    pub fn ignore_parse_errors(&self) -> bool {
        match self {
            FormatConfig::Json(o) => o.ignore_parse_errors,
            FormatConfig::Csv(o) => o.ignore_parse_errors,
            FormatConfig::Parquet(_) => false,
            FormatConfig::Changelog(c) => c.json.ignore_parse_errors,
            FormatConfig::Avro(a) => a.ignore_parse_errors,
            FormatConfig::Protobuf(p) => p.ignore_parse_errors,
        }
    }

    /// Whether rows in this format carry a change kind (an updating stream).
    pub fn is_changelog(&self) -> bool {
        matches!(self, FormatConfig::Changelog(_))
    }
}

/// A boxed line decoder: `make` builds the format's decoder and the probe that finds bad lines.
pub(crate) fn boxed_lines<F: LineFormat + 'static>(
    make: impl Fn() -> Result<F>,
    ignore_parse_errors: bool,
) -> Result<LineChunkDecoder<Box<dyn LineFormat>>> {
    Ok(LineChunkDecoder::new(
        Box::new(make()?),
        Box::new(make()?),
        ignore_parse_errors,
    ))
}

impl FormatConfig {
    /// The decoder of a line format's files into batches of `schema` (followed by the change
    /// kind for a changelog format); `None` for the formats read as whole batches.
    pub fn line_decoder(
        &self,
        schema: &arrow_schema::SchemaRef,
    ) -> Result<Option<LineChunkDecoder<Box<dyn LineFormat>>>> {
        let s = || schema.clone();
        Ok(Some(match self {
            FormatConfig::Json(o) => {
                boxed_lines(|| json::JsonLines::new(s(), o), o.ignore_parse_errors)?
            }
            FormatConfig::Csv(o) => {
                boxed_lines(|| csv::CsvLines::new(s(), o), o.ignore_parse_errors)?
            }
            FormatConfig::Changelog(c) => {
                boxed_lines(|| ChangelogLines::new(s(), c), c.json.ignore_parse_errors)?
            }
            FormatConfig::Parquet(_) | FormatConfig::Avro(_) | FormatConfig::Protobuf(_) => {
                return Ok(None)
            }
        }))
    }

    /// The reader of a file as batches of `schema` for the formats without lines.
    pub fn open_batches(
        &self,
        file: FileInput,
        schema: &arrow_schema::SchemaRef,
        batch_rows: usize,
    ) -> Result<Box<dyn FileBatches>> {
        let s = schema.clone();
        Ok(match self {
            FormatConfig::Parquet(_) => {
                Box::new(parquet::ParquetFileReader::open(file, s, batch_rows)?)
            }
            FormatConfig::Avro(_) => Box::new(avro::AvroFileReader::open(file, s, batch_rows)?),
            FormatConfig::Protobuf(p) => {
                Box::new(protobuf::ProtobufFileReader::open(file, p, s, batch_rows)?)
            }
            other => {
                return Err(FormatError::Unsupported(format!(
                    "format '{}' is read line by line",
                    other.name()
                )))
            }
        })
    }
}

/// The option keys a format accepts (to be merged into its connector's list).
pub fn format_option_specs(format: &str) -> &'static [OptionSpec] {
    match format {
        "json" => json::OPTIONS,
        "csv" => csv::OPTIONS,
        "parquet" => parquet::OPTIONS,
        "debezium-json" => changelog::DEBEZIUM_OPTIONS,
        "canal-json" => changelog::CANAL_OPTIONS,
        "maxwell-json" => changelog::MAXWELL_OPTIONS,
        "avro" => avro::OPTIONS,
        "avro-confluent" => avro::CONFLUENT_OPTIONS,
        "protobuf" => protobuf::OPTIONS,
        _ => &[],
    }
}

/// The options the format named by `format_key` (`format`, `value.format`, `key.format`)
/// reads. As in Flink, a key or value format's options may carry the `key.`/`value.` prefix
/// (`'value.avro-confluent.url'`); the prefixed key wins over the bare `<format>.<option>`.
pub fn format_view(options: &Options, format_key: &str) -> Options {
    let prefix = format_key.strip_suffix("format").unwrap_or("");
    if prefix.is_empty() {
        return options.clone();
    }
    let mut map = options.map().clone();
    for (k, v) in options.map() {
        if let Some(rest) = k.strip_prefix(prefix) {
            map.insert(rest.to_string(), v.clone());
        }
    }
    Options::new(options.owner(), map)
}

/// Reads the `format` option (or `default`) and that format's options.
pub fn format_from_options(options: &Options, key: &str) -> Result<FormatConfig> {
    let name = options.require(key)?;
    match name {
        "json" => Ok(FormatConfig::Json(json::JsonOptions::from_options(
            options,
        )?)),
        "csv" => Ok(FormatConfig::Csv(csv::CsvOptions::from_options(options)?)),
        "parquet" => Ok(FormatConfig::Parquet(
            parquet::ParquetOptions::from_options(options)?,
        )),
        "avro" => Ok(FormatConfig::Avro(avro::AvroOptions::from_options(
            options, "avro",
        )?)),
        "protobuf" => Ok(FormatConfig::Protobuf(
            protobuf::ProtobufFormat::from_options(options)?,
        )),
        c if ChangelogFormat::is_changelog(c) => Ok(FormatConfig::Changelog(
            ChangelogFormat::from_options(options, c)?,
        )),
        other => Err(options
            .invalid(
                key,
                format!(
                    "unknown format '{other}'; valid formats: {}",
                    FORMATS.join(", ")
                ),
            )
            .into()),
    }
}
