//! CSV (no header, as Flink's csv format), decoded by arrow-csv.

use arrow_array::RecordBatch;
use arrow_csv::reader::Decoder;
use arrow_csv::ReaderBuilder;
use arrow_schema::SchemaRef;
use flowline_common::{OptionSpec, Options};

use crate::lines::{BadLines, LineFormat};
use crate::Result;

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::optional(
        "csv.field-delimiter",
        "field separator, one character (default ',')",
    ),
    OptionSpec::optional("csv.quote-character", "quote character (default '\"')"),
    OptionSpec::optional(
        "csv.disable-quote-character",
        "treat quotes as ordinary characters",
    ),
    OptionSpec::optional("csv.allow-comments", "ignore lines starting with '#'"),
    OptionSpec::optional(
        "csv.ignore-parse-errors",
        "skip (and count) rows that cannot be parsed instead of failing",
    ),
    OptionSpec::optional(
        "csv.null-literal",
        "string that stands for NULL (default: empty field)",
    ),
    OptionSpec::optional(
        "csv.escape-character",
        "escape character inside quoted fields",
    ),
];

const CSV_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: Option<u8>,
    pub escape: Option<u8>,
    pub allow_comments: bool,
    pub ignore_parse_errors: bool,
    pub null_literal: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            quote: Some(b'"'),
            escape: None,
            allow_comments: false,
            ignore_parse_errors: false,
            null_literal: None,
        }
    }
}

fn one_byte(o: &Options, key: &str) -> Result<Option<u8>> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => {
            let v = if v == "\\t" { "\t" } else { v };
            if v.len() == 1 {
                Ok(Some(v.as_bytes()[0]))
            } else {
                Err(o.invalid(key, "expected a single character").into())
            }
        }
    }
}

impl CsvOptions {
    pub fn from_options(o: &Options) -> Result<Self> {
        let d = Self::default();
        let quote = if o.bool("csv.disable-quote-character", false)? {
            None
        } else {
            Some(one_byte(o, "csv.quote-character")?.unwrap_or(b'"'))
        };
        Ok(Self {
            delimiter: one_byte(o, "csv.field-delimiter")?.unwrap_or(d.delimiter),
            quote,
            escape: one_byte(o, "csv.escape-character")?,
            allow_comments: o.bool("csv.allow-comments", false)?,
            ignore_parse_errors: o.bool("csv.ignore-parse-errors", false)?,
            null_literal: o.get("csv.null-literal").map(str::to_string),
        })
    }
}

/// [`LineFormat`] over arrow-csv.
pub struct CsvLines {
    schema: SchemaRef,
    options: CsvOptions,
    decoder: Decoder,
    pending: Vec<RecordBatch>,
}

impl CsvLines {
    pub fn new(schema: SchemaRef, options: &CsvOptions) -> Result<Self> {
        let decoder = build(&schema, options)?;
        Ok(Self {
            schema,
            options: options.clone(),
            decoder,
            pending: Vec::new(),
        })
    }
}

fn build(schema: &SchemaRef, o: &CsvOptions) -> Result<Decoder> {
    let mut b = ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_batch_size(CSV_BATCH_ROWS)
        .with_delimiter(o.delimiter);
    if let Some(q) = o.quote {
        b = b.with_quote(q);
    }
    if let Some(e) = o.escape {
        b = b.with_escape(e);
    }
    if o.allow_comments {
        b = b.with_comment(b'#');
    }
    if let Some(null) = &o.null_literal {
        let re = regex::Regex::new(&format!("^{}$", regex::escape(null)))
            .map_err(|e| crate::FormatError::Unsupported(e.to_string()))?;
        b = b.with_null_regex(re);
    }
    Ok(b.build_decoder())
}

impl LineFormat for CsvLines {
    fn decode(&mut self, mut bytes: &[u8]) -> Result<(), BadLines> {
        while !bytes.is_empty() {
            let n = self.decoder.decode(bytes)?;
            bytes = &bytes[n..];
            if n == 0 || !bytes.is_empty() {
                if let Some(b) = self.decoder.flush()? {
                    self.pending.push(b);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, BadLines> {
        let last = self.decoder.flush()?;
        let mut all = std::mem::take(&mut self.pending);
        all.extend(last);
        Ok(crate::concat_all(&self.schema, all)?)
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.decoder =
            build(&self.schema, &self.options).expect("rebuilding a decoder that built before");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineChunkDecoder;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn bad_csv_line_is_named() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let o = CsvOptions::default();
        let mut d = LineChunkDecoder::new(
            CsvLines::new(schema.clone(), &o).unwrap(),
            CsvLines::new(schema, &o).unwrap(),
            false,
        );
        let b = d.decode_chunk(b"1,x\n2,\"y,z\"\n").unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        let err = d.decode_chunk(b"3,a\nfour,b\n").unwrap_err();
        assert_eq!(err.line, 4, "{err}");
    }
}
