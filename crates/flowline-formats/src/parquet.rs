//! Parquet: options, a reader that maps a file onto the table schema, and writer properties.

use arrow_schema::SchemaRef;
use flowline_common::{OptionSpec, Options};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;

use crate::conform::Conformed;
use crate::{FileInput, FormatError, Result};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::optional(
        "parquet.compression",
        "SNAPPY (default), ZSTD, LZ4, UNCOMPRESSED",
    ),
    OptionSpec::optional(
        "parquet.page.size",
        "target data page size in bytes (default 1 MB)",
    ),
    OptionSpec::optional(
        "parquet.dictionary.enable",
        "dictionary encoding (default true)",
    ),
    OptionSpec::optional(
        "parquet.row-group.rows",
        "rows per row group (default 1048576)",
    ),
];

/// Rows per row group: big enough for good compression and statistics, bounded so a writer's
/// buffered row group stays within memory.
const ROW_GROUP_ROWS_DEFAULT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct ParquetOptions {
    pub compression: Compression,
    pub page_size_bytes: Option<usize>,
    pub dictionary: bool,
    pub row_group_rows: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            compression: Compression::SNAPPY,
            page_size_bytes: None,
            dictionary: true,
            row_group_rows: ROW_GROUP_ROWS_DEFAULT,
        }
    }
}

impl ParquetOptions {
    pub fn from_options(o: &Options) -> Result<Self> {
        let compression = match o
            .get("parquet.compression")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("SNAPPY") => Compression::SNAPPY,
            Some("ZSTD") => Compression::ZSTD(ZstdLevel::default()),
            Some("LZ4") => Compression::LZ4_RAW,
            Some("UNCOMPRESSED") | Some("NONE") => Compression::UNCOMPRESSED,
            Some(_) => {
                return Err(o
                    .invalid(
                        "parquet.compression",
                        "expected SNAPPY, ZSTD, LZ4 or UNCOMPRESSED",
                    )
                    .into())
            }
        };
        Ok(Self {
            compression,
            page_size_bytes: o.parse("parquet.page.size")?,
            dictionary: o.bool("parquet.dictionary.enable", true)?,
            row_group_rows: o
                .parse("parquet.row-group.rows")?
                .unwrap_or(ROW_GROUP_ROWS_DEFAULT),
        })
    }

    pub fn writer_properties(&self) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_compression(self.compression)
            .set_dictionary_enabled(self.dictionary)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("flowline {}", env!("CARGO_PKG_VERSION")));
        if let Some(p) = self.page_size_bytes {
            b = b.set_data_page_size_limit(p);
        }
        b.build()
    }
}

/// Reads a Parquet file as batches of `schema`: only the table's columns are read, then matched
/// by name (missing nullable columns become NULL) and cast to the declared types.
pub type ParquetFileReader = Conformed<ParquetRecordBatchReader>;

impl ParquetFileReader {
    pub fn open(input: FileInput, schema: SchemaRef, batch_rows: usize) -> Result<Self> {
        match input {
            FileInput::File(f) => Self::open_chunks(f, schema, batch_rows),
            FileInput::Bytes(b) => Self::open_chunks(b, schema, batch_rows),
        }
    }

    fn open_chunks<T: ChunkReader + 'static>(
        input: T,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
        let file_schema = builder.schema().clone();
        let mut wanted: Vec<usize> = Vec::new();
        for f in schema.fields() {
            if let Ok(i) = file_schema.index_of(f.name()) {
                wanted.push(i);
            } else if !f.is_nullable() {
                return Err(FormatError::Unsupported(format!(
                    "column '{}' (NOT NULL) is missing from the file",
                    f.name()
                )));
            }
        }
        wanted.sort_unstable();
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
        let inner = builder
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()?;
        Ok(Conformed::new(inner, schema))
    }
}
