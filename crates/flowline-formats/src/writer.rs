//! File writers for the filesystem sink: one open file, batches in, bytes counted.

use std::fs::File;
use std::io::{BufWriter, Write};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;

use crate::json::JsonOptions;
use crate::text::sql_timestamps_as_strings;
use crate::ChangelogFormat;
use crate::{FormatConfig, Result};

/// Writes batches into one file. `finish` must be called; dropping loses buffered rows.
pub trait BatchWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Bytes written so far, including what is buffered (for the rolling policy).
    fn bytes_written(&self) -> u64;
    /// Flushes everything and syncs the file to disk.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Output buffer per text file before a write syscall.
const TEXT_WRITE_BUFFER_BYTES: usize = 256 * 1024;

struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Out = Counting<BufWriter<File>>;

pub fn create_writer(
    format: &FormatConfig,
    schema: SchemaRef,
    file: File,
) -> Result<Box<dyn BatchWriter>> {
    let out = Counting {
        inner: BufWriter::with_capacity(TEXT_WRITE_BUFFER_BYTES, file),
        bytes: 0,
    };
    Ok(match format {
        FormatConfig::Json(o) => Box::new(JsonWriter {
            out,
            options: o.clone(),
        }),
        FormatConfig::Changelog(c) => {
            c.check_writable()?;
            Box::new(ChangelogWriter {
                out,
                format: c.clone(),
            })
        }
        FormatConfig::Csv(o) => Box::new(CsvWriter {
            out,
            delimiter: o.delimiter,
            quote: o.quote.unwrap_or(b'"'),
        }),
        FormatConfig::Avro(o) => {
            Box::new(crate::avro::AvroFileWriter::new(o, &schema, file_of(out)?)?)
        }
        FormatConfig::Protobuf(p) => Box::new(crate::protobuf::ProtobufFileWriter::new(
            p,
            &schema,
            file_of(out)?,
        )?),
        FormatConfig::Parquet(o) => Box::new(ParquetWriter {
            inner: ArrowWriter::try_new(file_of(out)?, schema, Some(o.writer_properties()))?,
        }),
    })
}

fn file_of(out: Out) -> Result<File> {
    Ok(out.inner.into_inner().map_err(|e| e.into_error())?)
}

fn finish_text(mut out: Out) -> Result<()> {
    out.flush()?;
    let file = file_of(out)?;
    file.sync_all()?;
    Ok(())
}

struct JsonWriter {
    out: Out,
    options: JsonOptions,
}

impl BatchWriter for JsonWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = if self.options.iso_timestamps {
            batch.clone()
        } else {
            sql_timestamps_as_strings(batch)?
        };
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(!self.options.ignore_null_fields)
            .build::<_, arrow_json::writer::LineDelimited>(&mut self.out);
        w.write(&batch)?;
        w.finish()?;
        Ok(())
    }
    fn bytes_written(&self) -> u64 {
        self.out.bytes
    }
    fn finish(self: Box<Self>) -> Result<()> {
        finish_text(self.out)
    }
}

/// Changelog records (rows with a change kind) as JSON lines.
struct ChangelogWriter {
    out: Out,
    format: ChangelogFormat,
}

impl BatchWriter for ChangelogWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        crate::changelog::encode(&self.format, batch, &mut self.out)
    }
    fn bytes_written(&self) -> u64 {
        self.out.bytes
    }
    fn finish(self: Box<Self>) -> Result<()> {
        finish_text(self.out)
    }
}

struct CsvWriter {
    out: Out,
    delimiter: u8,
    quote: u8,
}

impl BatchWriter for CsvWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = sql_timestamps_as_strings(batch)?;
        let mut w = arrow_csv::WriterBuilder::new()
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
            .build(&mut self.out);
        w.write(&batch)?;
        Ok(())
    }
    fn bytes_written(&self) -> u64 {
        self.out.bytes
    }
    fn finish(self: Box<Self>) -> Result<()> {
        finish_text(self.out)
    }
}

struct ParquetWriter {
    inner: ArrowWriter<File>,
}

impl BatchWriter for ParquetWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner.write(batch)?;
        Ok(())
    }
    fn bytes_written(&self) -> u64 {
        (self.inner.bytes_written() + self.inner.in_progress_size()) as u64
    }
    fn finish(self: Box<Self>) -> Result<()> {
        let file = self.inner.into_inner()?;
        file.sync_all()?;
        Ok(())
    }
}
