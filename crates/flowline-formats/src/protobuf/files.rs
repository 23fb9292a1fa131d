//! Files of length-delimited protobuf messages (each preceded by its size as a varint), read
//! and written with the record decoder and encoder of `mod.rs`.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use prost::Message as _;

use super::{err, ProtobufFormat, ProtobufRecordDecoder, ProtobufRecordEncoder};
use crate::records::BinaryDecoder;
use crate::Result;

/// The largest message a file may announce: a bigger length prefix means the file is not
/// length-delimited protobuf (and must not make us allocate it).
const MESSAGE_BYTES_MAX: u64 = 64 << 20;

/// Reads a file of length-delimited messages (each preceded by its size as a varint, as
/// protobuf's `writeDelimitedTo` and `parseDelimitedFrom`) as batches of `schema`.
pub struct ProtobufFileReader {
    file: Box<dyn std::io::BufRead + Send>,
    offset: u64,
    record: u64,
    body: Vec<u8>,
    decoder: ProtobufRecordDecoder,
    batch_rows: usize,
    ignore_parse_errors: bool,
    pub skipped: u64,
}

impl ProtobufFileReader {
    pub fn open(
        input: crate::FileInput,
        format: &ProtobufFormat,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Result<Self> {
        Self::from_reader(input.into_buf_read(), format, schema, batch_rows)
    }

    pub fn from_reader(
        file: Box<dyn std::io::BufRead + Send>,
        format: &ProtobufFormat,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Result<Self> {
        Ok(Self {
            file,
            offset: 0,
            record: 0,
            body: Vec::new(),
            decoder: ProtobufRecordDecoder::new(format, schema)?,
            batch_rows,
            ignore_parse_errors: format.ignore_parse_errors,
            skipped: 0,
        })
    }

    /// The next length prefix; `None` at the end of the file.
    fn read_len(&mut self) -> std::io::Result<Option<u64>> {
        let Some((v, n)) = crate::read_varint(&mut self.file)? else {
            return Ok(None);
        };
        self.offset += n;
        Ok(Some(v))
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        use std::io::Read;
        let mut rows = 0;
        while rows < self.batch_rows {
            let at = self.offset;
            let here = |s: &Self, what: String| {
                err(format!("record {} (byte {at}): {what}", s.record + 1))
            };
            let len = match self.read_len() {
                Ok(Some(len)) if len <= MESSAGE_BYTES_MAX => len as usize,
                Ok(Some(len)) => {
                    return Err(here(self, format!("length prefix {len} is over {MESSAGE_BYTES_MAX} bytes: not length-delimited protobuf messages")))
                }
                Ok(None) => break,
                Err(e) => return Err(here(self, format!("bad length prefix: {e}"))),
            };
            self.body.resize(len, 0);
            if let Err(e) = self.file.read_exact(&mut self.body) {
                return Err(here(self, format!("truncated message of {len} bytes: {e}")));
            }
            self.offset += len as u64;
            self.record += 1;
            match self.decoder.push(&self.body) {
                Ok(()) => rows += 1,
                Err(_) if self.ignore_parse_errors => self.skipped += 1,
                Err(e) => {
                    return Err(err(format!(
                        "record {} (byte {at}): {}",
                        self.record, e.reason
                    )))
                }
            }
        }
        self.decoder.finish()
    }
}

impl Iterator for ProtobufFileReader {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

/// Writes rows as length-delimited messages.
pub(crate) struct ProtobufFileWriter {
    encoder: ProtobufRecordEncoder,
    out: std::io::BufWriter<std::fs::File>,
    bytes: u64,
}

impl ProtobufFileWriter {
    pub fn new(format: &ProtobufFormat, schema: &SchemaRef, file: std::fs::File) -> Result<Self> {
        Ok(Self {
            encoder: ProtobufRecordEncoder::new(format, schema)?,
            out: std::io::BufWriter::with_capacity(256 * 1024, file),
            bytes: 0,
        })
    }
}

impl crate::writer::BatchWriter for ProtobufFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        use std::io::Write;
        let mut buf = Vec::new();
        for m in self.encoder.messages(batch)? {
            buf.clear();
            m.encode_length_delimited(&mut buf)
                .map_err(|e| err(e.to_string()))?;
            self.out.write_all(&buf)?;
            self.bytes += buf.len() as u64;
        }
        Ok(())
    }
    fn bytes_written(&self) -> u64 {
        self.bytes
    }
    fn finish(self: Box<Self>) -> Result<()> {
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}
