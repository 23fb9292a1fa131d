//! Avro Object Container Files, read block by block with every block checked.
//!
//! ```text
//! header (arrow-avro) ─▶ block: count, size, data, sync ─▶ decompress ─▶ record ends (a walk
//!   over the writer schema) ─▶ arrow-avro's record decoder, one record at a time ─▶ conform
//! ```
//!
//! arrow-avro's own file reader trusts each block's record count: in a corrupt block whose
//! records end before its bytes do, it loops forever (found by `scripts/fuzz`). Here a block's
//! records must take exactly its bytes, array and map item counts are bounded by the bytes
//! left, and allocation follows the bytes actually present, so any input ends in batches or
//! an error that names the block.

use std::io::{BufRead, Read};

use arrow_array::RecordBatch;
use arrow_avro::compression::CompressionCodec;
use arrow_schema::SchemaRef;
use serde_json::Value;

use super::{AvroRecordDecoder, PLAIN_FRAME};
use crate::records::BinaryDecoder;
use crate::{FormatError, Result};

/// The largest block (compressed or not) a file may hold. Writers use 16 KB to 1 MB.
const BLOCK_BYTES_MAX: u64 = 256 << 20;
/// The most reserved ahead for a block before its bytes arrive.
const BLOCK_RESERVE_MAX: usize = 16 << 20;
/// Deepest nesting of values walked (records in records, arrays of arrays...).
const NESTING_MAX: usize = 128;
/// Most items of one array or map block whose items take no bytes (nulls, empty records).
const ZERO_WIDTH_ITEMS_MAX: u64 = 1 << 20;

fn err(what: impl std::fmt::Display) -> FormatError {
    FormatError::Unsupported(format!("avro file: {what}"))
}

/// Reads an Avro Object Container File as batches of the table's schema.
pub struct AvroFileReader {
    input: Box<dyn BufRead + Send>,
    sync: [u8; 16],
    codec: Option<CompressionCodec>,
    shape: Shape,
    decoder: AvroRecordDecoder,
    batch_rows: usize,
    /// The current block's (decompressed) records, how far they are read and how many are left.
    block: Vec<u8>,
    /// The current block as read (compressed), kept for its allocation.
    raw: Vec<u8>,
    cursor: usize,
    /// The next batch's records, each behind the frame arrow-avro's decoder expects.
    framed: Vec<u8>,
    count: u64,
    remaining: u64,
    /// Blocks read so far, and the file offset where the current one starts, for errors.
    blocks: u64,
    block_at: u64,
    offset: u64,
    done: bool,
}

impl AvroFileReader {
    pub fn open(input: crate::FileInput, schema: SchemaRef, batch_rows: usize) -> Result<Self> {
        Self::from_reader(input.into_buf_read(), schema, batch_rows)
    }

    pub fn from_reader(
        mut input: Box<dyn BufRead + Send>,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Result<Self> {
        let header = arrow_avro::reader::read_header_info(&mut input)?;
        let writer = header.writer_schema()?.json_string;
        let shape = Shape::parse(&writer)?;
        let decoder = AvroRecordDecoder::with_writer_schema(&writer, schema)?;
        let codec = header.compression()?;
        if matches!(codec, Some(CompressionCodec::Bzip2 | CompressionCodec::Xz)) {
            return Err(err(format!(
                "codec {codec:?} is not supported (null, deflate, snappy, zstandard are)"
            )));
        }
        Ok(Self {
            input,
            sync: header.sync(),
            codec,
            shape,
            decoder,
            batch_rows: batch_rows.max(1),
            block: Vec::new(),
            raw: Vec::new(),
            cursor: 0,
            framed: Vec::new(),
            count: 0,
            remaining: 0,
            blocks: 0,
            block_at: header.header_len(),
            offset: header.header_len(),
            done: false,
        })
    }

    /// An error in the current block.
    fn block_err(&self, what: impl std::fmt::Display) -> FormatError {
        err(format!(
            "block {} (byte {}): {what}",
            self.blocks, self.block_at
        ))
    }

    /// A zig-zag varint of the block framing; `None` at a clean end of the file.
    fn read_long(&mut self) -> Result<Option<i64>> {
        let read = crate::read_varint(&mut self.input).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                self.block_err("the file ends inside a block header")
            }
            std::io::ErrorKind::InvalidData => self.block_err("a block header varint is too long"),
            _ => e.into(),
        })?;
        Ok(read.map(|(v, n)| {
            self.offset += n;
            ((v >> 1) as i64) ^ -((v & 1) as i64)
        }))
    }

    /// Reads the next block; `false` at the end of the file.
    fn next_block(&mut self) -> Result<bool> {
        self.blocks += 1;
        self.block_at = self.offset;
        let Some(count) = self.read_long()? else {
            return Ok(false);
        };
        let size = self
            .read_long()?
            .ok_or_else(|| self.block_err("the file ends inside a block header"))?;
        if count < 0 || size < 0 || size as u64 > BLOCK_BYTES_MAX {
            return Err(self.block_err(format!(
                "{count} records in {size} bytes is not a valid block header"
            )));
        }
        // Buffers are reused from block to block; the reservation is bounded, growth follows
        // the bytes actually there.
        let mut data = std::mem::take(&mut self.raw);
        data.clear();
        data.reserve((size as usize).min(BLOCK_RESERVE_MAX));
        (&mut self.input).take(size as u64).read_to_end(&mut data)?;
        self.offset += data.len() as u64;
        if data.len() as u64 != size as u64 {
            return Err(self.block_err(format!(
                "the file ends inside the block ({} of {size} bytes)",
                data.len()
            )));
        }
        let mut sync = [0u8; 16];
        self.input
            .read_exact(&mut sync)
            .map_err(|_| self.block_err("the file ends before the block's sync marker"))?;
        self.offset += 16;
        if sync != self.sync {
            return Err(self.block_err(
                "the sync marker after the block is not the file's (corrupt or not an Avro file)",
            ));
        }
        let mut block = std::mem::take(&mut self.block);
        if self.codec.is_none() {
            std::mem::swap(&mut block, &mut data);
        } else {
            self.decompress(&data, &mut block)?;
        }
        self.raw = data;
        self.block = block;
        let zero_width = self.shape.zero_width[self.shape.root];
        if (count as u64 > self.block.len() as u64 && !zero_width)
            || (zero_width && count as u64 > ZERO_WIDTH_ITEMS_MAX)
        {
            return Err(self.block_err(format!(
                "{count} records cannot fit in {} bytes",
                self.block.len()
            )));
        }
        self.cursor = 0;
        self.count = count as u64;
        self.remaining = count as u64;
        Ok(true)
    }

    /// Decompresses `data` into `out`.
    fn decompress(&self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        let bad = |e: &dyn std::fmt::Display| self.block_err(format!("cannot decompress: {e}"));
        let mut bounded = |r: &mut dyn Read| -> Result<()> {
            r.take(BLOCK_BYTES_MAX + 1)
                .read_to_end(out)
                .map_err(|e| bad(&e))?;
            if out.len() as u64 > BLOCK_BYTES_MAX {
                return Err(
                    self.block_err(format!("decompresses to more than {BLOCK_BYTES_MAX} bytes"))
                );
            }
            Ok(())
        };
        match self.codec {
            None => {
                out.extend_from_slice(data);
                Ok(())
            }
            Some(CompressionCodec::Deflate) => {
                bounded(&mut flate2::read::DeflateDecoder::new(data))
            }
            Some(CompressionCodec::ZStandard) => {
                bounded(&mut zstd::stream::read::Decoder::new(data).map_err(|e| bad(&e))?)
            }
            Some(CompressionCodec::Snappy) => {
                // The compressed block, then the CRC-32 (big-endian) of the uncompressed data.
                let Some((body, crc)) = data.split_last_chunk::<4>() else {
                    return Err(self.block_err("a snappy block is shorter than its checksum"));
                };
                let len = snap::raw::decompress_len(body).map_err(|e| bad(&e))?;
                if len as u64 > BLOCK_BYTES_MAX {
                    return Err(self
                        .block_err(format!("decompresses to more than {BLOCK_BYTES_MAX} bytes")));
                }
                out.resize(len, 0);
                let n = snap::raw::Decoder::new()
                    .decompress(body, out)
                    .map_err(|e| bad(&e))?;
                out.truncate(n);
                if crc32fast::hash(out) != u32::from_be_bytes(*crc) {
                    return Err(self.block_err("snappy checksum mismatch"));
                }
                Ok(())
            }
            Some(other) => Err(self.block_err(format!("codec {other:?} is not supported"))),
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut rows = 0;
        while rows < self.batch_rows && !self.done {
            if self.remaining == 0 {
                if self.cursor != self.block.len() {
                    return Err(self.block_err(format!(
                        "its records end at byte {} of its {} bytes (a wrong record count?)",
                        self.cursor,
                        self.block.len()
                    )));
                }
                if !self.next_block()? {
                    self.done = true;
                }
                continue;
            }
            let record = &self.block[self.cursor..];
            let len = self
                .shape
                .value_len(self.shape.root, record, 0)
                .map_err(|e| self.block_err(format!("record {}: {e}", self.record_no())))?;
            self.framed.extend_from_slice(&PLAIN_FRAME);
            self.framed.extend_from_slice(&record[..len]);
            self.cursor += len;
            self.remaining -= 1;
            rows += 1;
        }
        // The records' ends are known, so arrow-avro decodes them in one pass.
        let framed = std::mem::take(&mut self.framed);
        let decoded = self.decoder.decode_framed(&framed);
        self.framed = framed;
        self.framed.clear();
        decoded.map_err(|e| self.block_err(e))?;
        self.decoder.finish()
    }

    /// 1-based number of the current record in its block.
    fn record_no(&self) -> u64 {
        self.count - self.remaining + 1
    }
}

impl Iterator for AvroFileReader {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.next_batch();
        if r.is_err() {
            // Nothing after a bad block is read, nor the rows of the batch it interrupted.
            self.done = true;
            let _ = self.decoder.reset();
        }
        r.transpose()
    }
}

/// The shape of an Avro schema: enough to find where each encoded value ends.
struct Shape {
    nodes: Vec<Node>,
    root: usize,
    /// Per node, whether its values may take no bytes at all (null, fixed(0), records of
    /// those): an array of them is bounded by count, not by bytes.
    zero_width: Vec<bool>,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    /// `int` and `long`: zig-zag varints.
    Varint,
    Float,
    Double,
    /// `bytes` and `string`: a length, then the bytes.
    Bytes,
    Fixed(usize),
    Enum(usize),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<usize>),
    /// A named type used before its definition was finished (recursive types).
    Named(String),
}

impl Shape {
    fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| err(format!("the header's schema is not JSON: {e}")))?;
        let mut b = ShapeBuilder {
            nodes: Vec::new(),
            names: Vec::new(),
        };
        let root = b.node(&v, "")?;
        // Resolve references by name now that every named type is defined.
        for i in 0..b.nodes.len() {
            if let Node::Named(n) = b.nodes[i].clone() {
                let target = b
                    .names
                    .iter()
                    .find(|(name, _)| *name == n)
                    .map(|(_, t)| *t)
                    .ok_or_else(|| err(format!("the schema names an unknown type '{n}'")))?;
                b.nodes[i] = b.nodes[target].clone();
                if matches!(b.nodes[i], Node::Named(_)) {
                    return Err(err(format!("type '{n}' is defined as itself")));
                }
            }
        }
        let zero_width = zero_width(&b.nodes);
        Ok(Self {
            nodes: b.nodes,
            root,
            zero_width,
        })
    }

    /// The length of the value of `node` at the start of `buf`.
    fn value_len(
        &self,
        node: usize,
        buf: &[u8],
        depth: usize,
    ) -> std::result::Result<usize, String> {
        if depth > NESTING_MAX {
            return Err(format!("values nest deeper than {NESTING_MAX} levels"));
        }
        let need = |n: usize| {
            if n <= buf.len() {
                Ok(n)
            } else {
                Err(format!(
                    "the block ends inside a value ({n} bytes needed, {} left)",
                    buf.len()
                ))
            }
        };
        match &self.nodes[node] {
            Node::Null => Ok(0),
            Node::Boolean => need(1),
            Node::Varint => read_long(buf).map(|(_, n)| n),
            Node::Enum(symbols) => {
                let (i, n) = read_long(buf)?;
                if !usize::try_from(i).is_ok_and(|i| i < *symbols) {
                    return Err(format!("enum symbol {i} of {symbols}"));
                }
                Ok(n)
            }
            Node::Float => need(4),
            Node::Double => need(8),
            Node::Fixed(n) => need(*n),
            Node::Bytes => {
                let (len, n) = read_long(buf)?;
                if len < 0 {
                    return Err(format!("negative length {len}"));
                }
                need(n.saturating_add(len as usize))
            }
            Node::Union(branches) => {
                let (i, n) = read_long(buf)?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| format!("union branch {i} of a union of {}", branches.len()))?;
                Ok(n + self.value_len(*branch, &buf[n..], depth + 1)?)
            }
            Node::Record(fields) => {
                let mut at = 0;
                for f in fields {
                    at += self.value_len(*f, &buf[at..], depth + 1)?;
                }
                Ok(at)
            }
            Node::Array(item) | Node::Map(item) => {
                let map = matches!(self.nodes[node], Node::Map(_));
                let zero_width = !map && self.zero_width[*item];
                let mut at = 0;
                loop {
                    let (count, n) = read_long(&buf[at..])?;
                    at += n;
                    if count == 0 {
                        return Ok(at);
                    }
                    if count < 0 {
                        // A negative count is followed by the block's size in bytes.
                        at += read_long(&buf[at..])?.1;
                    }
                    let count = count.unsigned_abs();
                    let left = (buf.len() - at) as u64;
                    if (!zero_width && count > left) || count > ZERO_WIDTH_ITEMS_MAX.max(left) {
                        return Err(format!("{count} items cannot fit in {left} bytes"));
                    }
                    for _ in 0..count {
                        if map {
                            at += self.value_len(BYTES_NODE, &buf[at..], depth + 1)?;
                        }
                        at += self.value_len(*item, &buf[at..], depth + 1)?;
                    }
                }
            }
            Node::Named(n) => Err(format!("unresolved type '{n}'")),
        }
    }
}

/// Which nodes' values may take no bytes: the least fixpoint, so a record that contains itself
/// (which no finite value can) is not.
fn zero_width(nodes: &[Node]) -> Vec<bool> {
    let mut zero: Vec<bool> = nodes
        .iter()
        .map(|n| matches!(n, Node::Null | Node::Fixed(0)))
        .collect();
    loop {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            if let Node::Record(fields) = n {
                if !zero[i] && fields.iter().all(|f| zero[*f]) {
                    zero[i] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            return zero;
        }
    }
}

/// Node 0 is always `bytes` (map keys are walked as it).
const BYTES_NODE: usize = 0;

struct ShapeBuilder {
    nodes: Vec<Node>,
    /// Full names of named types and their nodes.
    names: Vec<(String, usize)>,
}

impl ShapeBuilder {
    fn push(&mut self, n: Node) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(Node::Bytes);
        }
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    /// The full name of `name` in `namespace`.
    fn full_name(name: &str, namespace: &str) -> String {
        if name.contains('.') || namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}.{name}")
        }
    }

    fn node(&mut self, v: &Value, namespace: &str) -> Result<usize> {
        Ok(match v {
            Value::String(s) => match s.as_str() {
                "null" => self.push(Node::Null),
                "boolean" => self.push(Node::Boolean),
                "int" | "long" => self.push(Node::Varint),
                "float" => self.push(Node::Float),
                "double" => self.push(Node::Double),
                "bytes" | "string" => self.push(Node::Bytes),
                name => {
                    let full = Self::full_name(name, namespace);
                    let known = |n: &str| self.names.iter().find(|(k, _)| k == n).map(|(_, i)| *i);
                    match known(&full).or_else(|| known(name)) {
                        Some(i) => i,
                        // Defined later, or being defined (recursion): resolved after parsing.
                        None => self.push(Node::Named(full)),
                    }
                }
            },
            Value::Array(branches) => {
                let b = branches
                    .iter()
                    .map(|b| self.node(b, namespace))
                    .collect::<Result<Vec<_>>>()?;
                self.push(Node::Union(b))
            }
            Value::Object(o) => {
                let ty = o
                    .get("type")
                    .ok_or_else(|| err("a schema object without 'type'"))?;
                let name = o.get("name").and_then(Value::as_str);
                let ns = o
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(namespace)
                    .to_string();
                let named = |b: &mut Self, i: usize| {
                    if let Some(n) = name {
                        let full = Self::full_name(n, &ns);
                        b.names.push((full, i));
                    }
                };
                match ty.as_str() {
                    Some("record" | "error") => {
                        let i = self.push(Node::Record(Vec::new()));
                        named(self, i);
                        let inner_ns = name
                            .filter(|n| n.contains('.'))
                            .and_then(|n| n.rsplit_once('.'))
                            .map_or(ns.clone(), |(p, _)| p.to_string());
                        let fields = o
                            .get("fields")
                            .and_then(Value::as_array)
                            .ok_or_else(|| err("a record without 'fields'"))?;
                        let mut f = Vec::with_capacity(fields.len());
                        for field in fields {
                            let t = field
                                .get("type")
                                .ok_or_else(|| err("a record field without 'type'"))?;
                            f.push(self.node(t, &inner_ns)?);
                        }
                        self.nodes[i] = Node::Record(f);
                        i
                    }
                    Some("enum") => {
                        let symbols = o
                            .get("symbols")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        let i = self.push(Node::Enum(symbols));
                        named(self, i);
                        i
                    }
                    Some("fixed") => {
                        let size = o
                            .get("size")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| err("a fixed type without 'size'"))?;
                        let i = self.push(Node::Fixed(size as usize));
                        named(self, i);
                        i
                    }
                    Some("array") => {
                        let items = o
                            .get("items")
                            .ok_or_else(|| err("an array without 'items'"))?;
                        let item = self.node(items, namespace)?;
                        self.push(Node::Array(item))
                    }
                    Some("map") => {
                        let values = o
                            .get("values")
                            .ok_or_else(|| err("a map without 'values'"))?;
                        let value = self.node(values, namespace)?;
                        self.push(Node::Map(value))
                    }
                    // A primitive with a logical type, or a nested type definition.
                    _ => self.node(ty, namespace)?,
                }
            }
            other => return Err(err(format!("'{other}' is not an Avro schema"))),
        })
    }
}

/// A zig-zag varint at the start of `buf`: its value and length.
fn read_long(buf: &[u8]) -> std::result::Result<(i64, usize), String> {
    let (mut v, mut shift) = (0u64, 0);
    for (i, b) in buf.iter().enumerate() {
        if shift >= 64 {
            return Err("a varint is longer than 10 bytes".into());
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok((((v >> 1) as i64) ^ -((v & 1) as i64), i + 1));
        }
        shift += 7;
    }
    Err("the block ends inside a number".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::FormatConfig;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    /// An Avro file of rows (1, "a"), (2, NULL), (3, "ccc") in one block, and where its first
    /// block starts.
    fn file(codec: &str) -> (Vec<u8>, usize) {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")])),
            ],
        )
        .unwrap();
        let o = flowline_common::Options::new(
            "t",
            [("avro.codec".to_string(), codec.to_string())].into(),
        );
        let format =
            FormatConfig::Avro(crate::avro::AvroOptions::from_options(&o, "avro").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.avro");
        let mut w =
            crate::create_writer(&format, schema(), std::fs::File::create(&path).unwrap()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = arrow_avro::reader::read_header_info(&bytes[..]).unwrap();
        (bytes, header.header_len() as usize)
    }

    fn read(bytes: Vec<u8>) -> Result<Vec<RecordBatch>> {
        let r = AvroFileReader::from_reader(Box::new(std::io::Cursor::new(bytes)), schema(), 2)?;
        r.collect()
    }

    #[test]
    fn reads_every_codec() {
        for codec in ["null", "deflate", "snappy", "zstandard"] {
            let batches = read(file(codec).0).unwrap();
            assert_eq!(
                batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                [2, 1]
            );
            let names = batches[0]
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert_eq!(names.value(0), "a", "{codec}");
            assert!(names.is_null(1), "{codec}");
        }
    }

    /// A corrupt record count is an error naming the block, not a hang (arrow-avro 59's own
    /// reader loops forever on the first two).
    #[test]
    fn a_wrong_record_count_is_an_error() {
        let (good, start) = file("null");
        assert_eq!(good[start], 6, "count 3 as a zig-zag varint");
        // Zig-zag: 4 is 2, 2 is 1, 8 is 4, 1 is -1.
        for (count, expected) in [
            (4u8, "its records end at byte"),
            (2, "its records end at byte"),
            (0, "its records end at byte"),
            (8, "record 4: the block ends inside"),
            (1, "not a valid block header"),
        ] {
            let mut bad = good.clone();
            bad[start] = count;
            let e = read(bad).unwrap_err().to_string();
            assert!(
                e.contains(expected) && e.contains("block 1"),
                "count byte {count}: {e}"
            );
        }
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let e = read(bad).unwrap_err().to_string();
        assert!(e.contains("sync marker"), "{e}");
        let e = read(good[..good.len() - 20].to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends inside the block"), "{e}");
    }

    #[test]
    fn value_ends_follow_the_schema() {
        let shape = Shape::parse(
            r#"{"type": "record", "name": "Node", "namespace": "x", "fields": [
                {"name": "v", "type": {"type": "fixed", "name": "F", "size": 2}},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
                {"name": "tags", "type": {"type": "map", "values": "x.F"}},
                {"name": "next", "type": ["null", "Node"]},
                {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#,
        )
        .unwrap();
        // v=ab, e=B, tags={k: cd}, next={v=ef, e=A, tags={}, next=null, ts=-1}, ts=1
        let bytes = [
            b'a', b'b', 2, 2, 2, b'k', b'c', b'd', 0, 2, b'e', b'f', 0, 0, 0, 1, 2, 0xff,
        ];
        let root = shape.root;
        assert_eq!(shape.value_len(root, &bytes, 0), Ok(17));
        assert!(shape.value_len(root, &bytes[..16], 0).is_err());
        let mut bad_enum = bytes;
        bad_enum[2] = 4;
        assert_eq!(
            shape.value_len(root, &bad_enum, 0),
            Err("enum symbol 2 of 2".into())
        );
        // An array announcing more items than it has bytes for.
        let arrays = Shape::parse(r#"{"type": "array", "items": "long"}"#).unwrap();
        let e = arrays.value_len(arrays.root, &[0xfe, 0xff, 0xff, 0xff, 0x0f, 2, 0], 0);
        assert!(e.unwrap_err().contains("cannot fit"));
        assert!(Shape::parse(
            r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}"#
        )
        .is_err());
    }
}
