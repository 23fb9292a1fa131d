//! Line-oriented decoding (JSON lines, CSV) with exact error positions.
//!
//! The fast path hands a whole chunk of complete lines to the vectorised arrow decoder. Only when
//! that fails does the slow path go line by line, to name the bad line (and, with
//! `ignore-parse-errors`, to drop just the bad lines and count them).

use arrow_array::RecordBatch;

/// Why a run of lines does not decode; the driver adds which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadLines(pub String);

impl From<String> for BadLines {
    fn from(reason: String) -> Self {
        BadLines(reason)
    }
}

impl From<&str> for BadLines {
    fn from(reason: &str) -> Self {
        BadLines(reason.to_string())
    }
}

impl From<arrow_schema::ArrowError> for BadLines {
    fn from(e: arrow_schema::ArrowError) -> Self {
        BadLines(e.to_string())
    }
}

/// A vectorised decoder of newline-separated records.
pub trait LineFormat: Send {
    /// Feeds bytes holding whole lines. May buffer rows until `flush`.
    fn decode(&mut self, bytes: &[u8]) -> Result<(), BadLines>;
    /// Returns the rows decoded so far as one batch.
    fn flush(&mut self) -> Result<Option<RecordBatch>, BadLines>;
    /// Drops any partial state (after an error).
    fn reset(&mut self);
}

/// A record that could not be decoded: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    /// 1-based line number in the input.
    pub line: u64,
    pub reason: String,
}

/// Drives a [`LineFormat`] over chunks of a stream, tracking line numbers.
pub struct LineChunkDecoder<F> {
    format: F,
    probe: F,
    ignore_errors: bool,
    /// Line number of the first line of the next chunk (1-based).
    next_line: u64,
    /// Lines skipped because they could not be decoded (only with `ignore_errors`).
    pub skipped: u64,
    /// The lines the last [`LineChunkDecoder::decode_chunk`] skipped, with why.
    pub last_skipped: Vec<DecodeError>,
}

impl<F: LineFormat> LineChunkDecoder<F> {
    /// `probe` is a second decoder of the same format, used to test single lines.
    pub fn new(format: F, probe: F, ignore_errors: bool) -> Self {
        Self {
            format,
            probe,
            ignore_errors,
            next_line: 1,
            skipped: 0,
            last_skipped: Vec::new(),
        }
    }

    /// Whether bad lines are skipped (and listed in `last_skipped`) rather than failing.
    pub fn skip_bad_lines(&mut self, skip: bool) {
        self.ignore_errors = skip;
    }

    /// Counts lines from 1 again: the next chunk is a new input (one buffer of records).
    pub fn restart_lines(&mut self) {
        self.next_line = 1;
    }

    /// Decodes a chunk that ends at a line boundary (or at end of input).
    pub fn decode_chunk(&mut self, chunk: &[u8]) -> Result<Option<RecordBatch>, DecodeError> {
        let first_line = self.next_line;
        self.next_line += count_newlines(chunk);
        self.last_skipped.clear();
        let fast = self.format.decode(chunk).and_then(|_| self.format.flush());
        match fast {
            Ok(batch) => Ok(batch),
            Err(_) => {
                self.format.reset();
                self.slow_path(chunk, first_line)
            }
        }
    }

    fn slow_path(
        &mut self,
        chunk: &[u8],
        first_line: u64,
    ) -> Result<Option<RecordBatch>, DecodeError> {
        let mut good: Vec<u8> = Vec::with_capacity(chunk.len());
        for (i, line) in chunk.split_inclusive(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let checked = self.probe.decode(line).and_then(|_| self.probe.flush());
            if let Err(BadLines(reason)) = checked {
                self.probe.reset();
                let error = DecodeError {
                    line: first_line + i as u64,
                    reason,
                };
                if self.ignore_errors {
                    self.skipped += 1;
                    self.last_skipped.push(error);
                    continue;
                }
                return Err(error);
            }
            good.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                good.push(b'\n');
            }
        }
        let decoded = self.format.decode(&good).and_then(|_| self.format.flush());
        decoded.map_err(|reason| DecodeError {
            line: first_line,
            reason: format!("internal error: {reason}"),
        })
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}
