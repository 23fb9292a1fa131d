//! Bounded filesystem source.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use flowline_common::limits::{BATCH_ROWS_MAX, LINE_BYTES_MAX, READ_CHUNK_BYTES};
use flowline_common::{Counter, Options};
use flowline_formats::{FileBatches, FileInput, FormatConfig, LineChunkDecoder, LineFormat};
use flowline_sql::TableDef;

use super::{format, root, DEFAULT_PARTITION_NAME};
use crate::{ConnectorError, Poll, Result, Source, TaskContext};

pub fn create_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Source>> {
    let format = format(table, o)?;
    let root = root(o);
    let mut files = Vec::new();
    list_files(&root, &mut files).map_err(|source| ConnectorError::Io {
        table: table.name.clone(),
        path: root.clone(),
        source,
    })?;
    // Numbers in names compare as numbers: a sink's rolled files `...-0-9`, `...-0-10` are read
    // in the order they were written (a changelog's order matters).
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    let mine: Vec<PathBuf> = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % ctx.parallelism == ctx.subtask)
        .map(|(_, f)| f)
        .collect();
    let physical = table.physical_schema();
    let indices: Vec<usize> =
        projection.map_or_else(|| (0..physical.fields().len()).collect(), <[usize]>::to_vec);
    let mut out_schema: SchemaRef = Arc::new(physical.project(&indices)?);
    // Columns stored in the files: the projected ones minus partition columns. For CSV all
    // non-partition columns are read, since CSV fields are positional.
    let is_partition = |name: &str| table.partitioned_by.iter().any(|p| p == name);
    let file_fields: Vec<_> = if matches!(format, FormatConfig::Csv(_)) {
        physical
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect()
    } else {
        out_schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect()
    };
    if format.is_changelog() {
        // A changelog's rows carry their change kind after the columns.
        out_schema = Arc::new(flowline_common::changelog::with_row_kind(&out_schema));
    }
    let ignore_key = format!("{}.ignore-parse-errors", format.name());
    Ok(Box::new(FileSource {
        table: table.name.clone(),
        root,
        files: mine.into_iter().rev().collect(),
        format,
        file_schema: Arc::new(Schema::new(file_fields)),
        out_schema,
        default_partition: o
            .get("partition.default-name")
            .unwrap_or(DEFAULT_PARTITION_NAME)
            .to_string(),
        current: None,
        done: Vec::new(),
        pending: Vec::new(),
        parse_errors: ctx.counter(
            "flowline_source_parse_errors_total",
            "rows skipped because they could not be parsed",
        ),
        ignore_key,
    }))
}

/// Compares `a` and `b` with runs of digits compared as numbers (`p-9` < `p-10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, nb) = (digits(a), digits(b));
                let trim = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
                let (da, db) = (&a[trim(&a[..na])..na], &b[trim(&b[..nb])..nb]);
                let by_value = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

/// A committed file of a filesystem table, as a reader sees it.
#[derive(Debug, Clone)]
pub struct LakeFile {
    pub path: PathBuf,
    pub size: u64,
    pub modified: std::time::SystemTime,
    /// Partition values from its `k=v` directories, unescaped; `None` is NULL (the default
    /// partition name).
    pub partition: Vec<(String, Option<String>)>,
}

/// The files of a filesystem table that readers see: committed files (not hidden in-progress
/// ones), in the order a source reads them; absolute paths.
pub fn lake_files(table: &TableDef, o: &Options) -> Result<Vec<LakeFile>> {
    let root = root(o);
    let io = |source| ConnectorError::Io {
        table: table.name.clone(),
        path: root.clone(),
        source,
    };
    let root = std::path::absolute(&root).map_err(io)?;
    let mut files = Vec::new();
    list_files(&root, &mut files).map_err(io)?;
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    let default_name = o
        .get("partition.default-name")
        .unwrap_or(DEFAULT_PARTITION_NAME);
    files
        .into_iter()
        .filter_map(|path| {
            // A file a commit or a cleanup removed since the listing is simply not there.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => return Some(Err(io(e))),
            };
            let partition = partition_values(&root, &path, default_name);
            Some(Ok(LakeFile {
                size: meta.len(),
                modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                partition,
                path,
            }))
        })
        .collect()
}

fn list_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        list_files(&entry.path(), out)?;
    }
    Ok(())
}

enum Reader {
    Lines {
        file: File,
        decoder: LineChunkDecoder<Box<dyn LineFormat>>,
        carry: Vec<u8>,
        eof: bool,
    },
    /// Parquet, Avro and protobuf files: whole batches.
    Batches(Box<dyn FileBatches>),
}

struct OpenFile {
    path: PathBuf,
    reader: Reader,
    /// Partition column values of this file, from its `k=v` directories.
    partition: Vec<(String, Option<String>)>,
    skipped_reported: u64,
    /// Bytes (line formats) or rows (batch formats) of the file behind the rows returned so far.
    consumed: u64,
}

/// Counts the records skipped as undecodable since the last report (`total` so far).
fn report_skipped(reported: &mut u64, total: u64, counter: &Counter) {
    counter.add(total - *reported);
    *reported = total;
}

struct FileSource {
    table: String,
    root: PathBuf,
    files: Vec<PathBuf>,
    format: FormatConfig,
    file_schema: SchemaRef,
    out_schema: SchemaRef,
    default_partition: String,
    current: Option<OpenFile>,
    /// Files read to the end, for the checkpointed position.
    done: Vec<PathBuf>,
    /// Files to read on from an offset before the others (restored from a checkpoint taken at
    /// another parallelism, which was in the middle of several of this subtask's files).
    pending: Vec<(PathBuf, u64)>,
    parse_errors: Counter,
    ignore_key: String,
}

impl FileSource {
    fn io_err(&self, path: &Path, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            table: self.table.clone(),
            path: path.to_path_buf(),
            source,
        }
    }

    fn open(&self, path: PathBuf) -> Result<OpenFile> {
        let file = File::open(&path).map_err(|e| self.io_err(&path, e))?;
        let fmt_err = |source| ConnectorError::Format {
            table: self.table.clone(),
            path: path.clone(),
            source,
        };
        let reader = match self
            .format
            .line_decoder(&self.file_schema)
            .map_err(fmt_err)?
        {
            Some(decoder) => Reader::Lines {
                file,
                decoder,
                carry: Vec::new(),
                eof: false,
            },
            None => Reader::Batches(
                self.format
                    .open_batches(FileInput::File(file), &self.file_schema, BATCH_ROWS_MAX)
                    .map_err(fmt_err)?,
            ),
        };
        let partition = partition_values(&self.root, &path, &self.default_partition);
        Ok(OpenFile {
            path,
            reader,
            partition,
            skipped_reported: 0,
            consumed: 0,
        })
    }

    /// Reads the next batch of the open file; `None` at its end.
    fn read(&mut self) -> Result<Option<RecordBatch>> {
        let table = self.table.clone();
        let ignore_key = self.ignore_key.clone();
        let Some(open) = self.current.as_mut() else {
            return Ok(None);
        };
        let path = open.path.clone();
        loop {
            match &mut open.reader {
                Reader::Batches(r) => {
                    let batch = r
                        .next()
                        .transpose()
                        .map_err(|source| ConnectorError::Format {
                            table: table.clone(),
                            path: path.clone(),
                            source,
                        })?;
                    open.consumed += batch.as_ref().map_or(0, |b| b.num_rows() as u64);
                    report_skipped(&mut open.skipped_reported, r.skipped(), &self.parse_errors);
                    return Ok(batch);
                }
                Reader::Lines {
                    file,
                    decoder,
                    carry,
                    eof,
                } => {
                    if *eof && carry.is_empty() {
                        return Ok(None);
                    }
                    let mut chunk = std::mem::take(carry);
                    let start = chunk.len();
                    chunk.resize(start + READ_CHUNK_BYTES, 0);
                    let n = read_full(file, &mut chunk[start..]).map_err(|source| {
                        ConnectorError::Io {
                            table: table.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    chunk.truncate(start + n);
                    if n == 0 {
                        *eof = true;
                    } else if let Some(last_nl) = chunk.iter().rposition(|b| *b == b'\n') {
                        // Keep the incomplete last line for the next chunk.
                        *carry = chunk.split_off(last_nl + 1);
                    } else if chunk.len() > LINE_BYTES_MAX {
                        return Err(ConnectorError::Decode {
                            table: table.clone(),
                            path: path.clone(),
                            line: 0,
                            reason: format!("a line is longer than {LINE_BYTES_MAX} bytes"),
                            ignore_key,
                        });
                    } else {
                        *carry = chunk;
                        continue;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    open.consumed += chunk.len() as u64;
                    let batch =
                        decoder
                            .decode_chunk(&chunk)
                            .map_err(|e| ConnectorError::Decode {
                                table: table.clone(),
                                path: path.clone(),
                                line: e.line,
                                reason: e.reason,
                                ignore_key: ignore_key.clone(),
                            })?;
                    report_skipped(
                        &mut open.skipped_reported,
                        decoder.skipped,
                        &self.parse_errors,
                    );
                    match batch {
                        Some(b) if b.num_rows() > 0 => return Ok(Some(b)),
                        _ => continue,
                    }
                }
            }
        }
    }

    /// Adds partition columns and orders columns as the output schema.
    fn complete(
        &self,
        batch: RecordBatch,
        partition: &[(String, Option<String>)],
    ) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let columns = self
            .out_schema
            .fields()
            .iter()
            .map(|f| {
                if let Some(col) = batch.column_by_name(f.name()) {
                    return Ok(col.clone());
                }
                let value = partition
                    .iter()
                    .find(|(k, _)| k == f.name())
                    .and_then(|(_, v)| v.clone());
                let strings: ArrayRef = match value {
                    Some(v) => Arc::new(StringArray::from(vec![v; rows])),
                    None => new_null_array(&arrow::datatypes::DataType::Utf8, rows),
                };
                Ok(cast(&strings, f.data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            columns,
            &opts,
        )?)
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn partition_values(root: &Path, file: &Path, default_name: &str) -> Vec<(String, Option<String>)> {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| {
            let s = c.as_os_str().to_string_lossy();
            let (k, v) = s.split_once('=')?;
            let v = unescape_partition(v);
            Some((k.to_string(), (v != default_name).then_some(v)))
        })
        .collect()
}

/// Reverses the `%XX` escaping of partition values (Hive/Flink style).
pub(crate) fn unescape_partition(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Bytes, not a str slice: a multi-byte character may follow the `%`.
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Source for FileSource {
    fn poll(&mut self) -> Result<Poll> {
        loop {
            if self.current.is_none() {
                if let Some((path, offset)) = self.pending.pop() {
                    self.current = Some(self.open_at(path, offset)?);
                    continue;
                }
                let Some(next) = self.files.pop() else {
                    return Ok(Poll::End);
                };
                self.current = Some(self.open(next)?);
            }
            match self.read()? {
                Some(batch) => {
                    let partition = self
                        .current
                        .as_ref()
                        .map(|c| c.partition.clone())
                        .unwrap_or_default();
                    return Ok(Poll::Batch(self.complete(batch, &partition)?));
                }
                None => {
                    if let Some(done) = self.current.take() {
                        self.done.push(done.path);
                    }
                }
            }
        }
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let path = |p: &Path| serde_json::Value::String(p.to_string_lossy().into_owned());
        let v = serde_json::json!({
            "done": self.done.iter().map(|p| path(p)).collect::<Vec<_>>(),
            "current": self.current.as_ref().map(|c| path(&c.path)),
            "offset": self.current.as_ref().map_or(0, |c| c.consumed),
            "resume": self.pending.iter().map(|(p, o)| serde_json::json!([path(p), o])).collect::<Vec<_>>(),
        });
        Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        self.resume_from(&[position], false)
    }

    /// Every old subtask's files read, and the files they were in the middle of that are this
    /// subtask's now (files are dealt out by their index in the sorted listing).
    fn restore_rescaled(&mut self, positions: &[&[u8]]) -> Result<()> {
        self.resume_from(positions, true)
    }
}

impl FileSource {
    fn bad_position(&self, why: String) -> ConnectorError {
        ConnectorError::config(
            &self.table,
            format!("cannot resume from the checkpointed position: {why}"),
        )
    }

    /// Resumes from checkpointed positions: files read to the end are skipped, files read in
    /// part are read on from their offsets. `rescaled`: the positions are another
    /// parallelism's, so files in the middle of which they were may be other subtasks' now.
    fn resume_from(&mut self, positions: &[&[u8]], rescaled: bool) -> Result<()> {
        let mut done: Vec<PathBuf> = Vec::new();
        let mut resume: Vec<(PathBuf, u64)> = Vec::new();
        for position in positions {
            let v: serde_json::Value =
                serde_json::from_slice(position).map_err(|e| self.bad_position(e.to_string()))?;
            let paths = |key: &str| -> Vec<PathBuf> {
                v[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .map(PathBuf::from)
                    .collect()
            };
            done.extend(paths("done"));
            if let Some(current) = v["current"].as_str().map(PathBuf::from) {
                resume.push((current, v["offset"].as_u64().unwrap_or(0)));
            }
            for r in v["resume"].as_array().into_iter().flatten() {
                if let (Some(p), Some(o)) = (r[0].as_str(), r[1].as_u64()) {
                    resume.push((PathBuf::from(p), o));
                }
            }
        }
        for (path, _) in &resume {
            if !self.files.contains(path) && (!rescaled || !path.exists()) {
                return Err(self.bad_position(format!(
                    "the file {} it was reading is gone",
                    path.display()
                )));
            }
        }
        // Another subtask's file now (after a rescale): that subtask resumes it.
        resume.retain(|(path, _)| self.files.contains(path));
        self.files
            .retain(|f| !done.contains(f) && !resume.iter().any(|(p, _)| p == f));
        self.done = done;
        self.pending = resume;
        if let Some((path, offset)) = self.pending.pop() {
            self.current = Some(self.open_at(path, offset)?);
        }
        Ok(())
    }

    /// Opens `path` to read on from `offset` (bytes of a line format, rows of a batch format).
    fn open_at(&mut self, path: PathBuf, offset: u64) -> Result<OpenFile> {
        let mut open = self.open(path)?;
        match &mut open.reader {
            Reader::Lines { file, .. } => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(offset))
                    .map_err(|e| self.io_err(&open.path, e))?;
                open.consumed = offset;
                Ok(open)
            }
            Reader::Batches(_) => {
                // Skip the rows already returned (the reader's batches are the same as then).
                let held = self.current.replace(open);
                while self.current.as_ref().is_some_and(|c| c.consumed < offset) {
                    if self.read()?.is_none() {
                        break;
                    }
                }
                let open = std::mem::replace(&mut self.current, held);
                match open {
                    Some(open) if open.consumed == offset => Ok(open),
                    _ => Err(self.bad_position(format!(
                        "the file no longer has row {offset} at a batch boundary"
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;

    #[test]
    fn numbers_in_file_names_sort_as_numbers() {
        let mut names = vec!["part-a-0-10", "part-a-0-9", "part-a-1-0", "part-a-0-0", "b"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["b", "part-a-0-0", "part-a-0-9", "part-a-0-10", "part-a-1-0"]
        );
        assert!(natural_cmp("x-007", "x-7").is_eq());
    }
}
