//! JSON lines, decoded by arrow-json's vectorised tape decoder.

use arrow_array::RecordBatch;
use arrow_json::reader::Decoder;
use arrow_json::ReaderBuilder;
use arrow_schema::SchemaRef;
use flowline_common::{OptionSpec, Options};

use crate::lines::{BadLines, LineFormat};
use crate::Result;

/// The option keys of a JSON-based format: `json` itself and the changelog formats share them
/// under their own prefix (`debezium-json.ignore-parse-errors`, ...).
macro_rules! json_options {
    ($prefix:literal $(, $extra:expr)* $(,)?) => {
        &[
            OptionSpec::optional(
                concat!($prefix, ".ignore-parse-errors"),
                "skip (and count) rows that cannot be parsed instead of failing",
            ),
            OptionSpec::optional(
                concat!($prefix, ".timestamp-format.standard"),
                "SQL (default) or ISO-8601",
            ),
            OptionSpec::optional(
                concat!($prefix, ".map-null-key.mode"),
                "FAIL (default), DROP or LITERAL: what to write for a NULL map key (Arrow maps cannot hold one, so this never applies)",
            ),
            OptionSpec::optional(
                concat!($prefix, ".map-null-key.literal"),
                "the key written for a NULL map key with map-null-key.mode LITERAL",
            ),
            OptionSpec::optional(
                concat!($prefix, ".encode.decimal-as-plain-number"),
                "accepted; decimals are always written as plain numbers (1000, never 1E+3)",
            ),
            $($extra,)*
        ]
    };
}
pub(crate) use json_options;

pub const OPTIONS: &[OptionSpec] = json_options!(
    "json",
    OptionSpec::optional(
        "json.fail-on-missing-field",
        "fail when a field is missing (default false: NULL)",
    ),
    OptionSpec::optional(
        "json.encode.ignore-null-fields",
        "leave NULL fields out of written objects (default false: write null)",
    ),
);

/// Rows per decoded batch; a chunk of `READ_CHUNK_BYTES` rarely holds more.
const JSON_BATCH_ROWS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonOptions {
    pub ignore_parse_errors: bool,
    pub fail_on_missing_field: bool,
    /// Write timestamps as ISO-8601 (`2020-01-01T12:00:00`) rather than SQL (`2020-01-01 12:00:00`).
    pub iso_timestamps: bool,
    /// Leave NULL fields out of written objects instead of writing `null`.
    pub ignore_null_fields: bool,
}

impl JsonOptions {
    /// The `json.*` options.
    pub fn from_options(o: &Options) -> Result<Self> {
        Self::with_prefix(o, "json")
    }

    /// The JSON options under `prefix` (`json`, `debezium-json`, ...).
    pub fn with_prefix(o: &Options, prefix: &str) -> Result<Self> {
        let key = |k: &str| format!("{prefix}.{k}");
        let standard = key("timestamp-format.standard");
        let iso_timestamps = match o.get(&standard) {
            None | Some("SQL") => false,
            Some("ISO-8601") => true,
            Some(_) => return Err(o.invalid(&standard, "expected 'SQL' or 'ISO-8601'").into()),
        };
        let null_key = key("map-null-key.mode");
        match o.get(&null_key) {
            None | Some("FAIL" | "DROP" | "LITERAL") => {}
            Some(_) => {
                return Err(o
                    .invalid(&null_key, "expected 'FAIL', 'DROP' or 'LITERAL'")
                    .into())
            }
        }
        o.bool(&key("encode.decimal-as-plain-number"), false)?;
        Ok(Self {
            ignore_parse_errors: o.bool(&key("ignore-parse-errors"), false)?,
            fail_on_missing_field: o.bool(&key("fail-on-missing-field"), false)?,
            iso_timestamps,
            ignore_null_fields: o.bool(&key("encode.ignore-null-fields"), false)?,
        })
    }
}

/// [`LineFormat`] over arrow-json.
pub struct JsonLines {
    schema: SchemaRef,
    strict: bool,
    decoder: Decoder,
    pending: Vec<RecordBatch>,
}

impl JsonLines {
    pub fn new(schema: SchemaRef, options: &JsonOptions) -> Result<Self> {
        let decoder = build(&schema, options.fail_on_missing_field)?;
        Ok(Self {
            schema,
            strict: options.fail_on_missing_field,
            decoder,
            pending: Vec::new(),
        })
    }
}

fn build(schema: &SchemaRef, strict: bool) -> Result<Decoder> {
    // Unknown fields are ignored, as Flink does; missing fields are checked after decoding.
    let _ = strict;
    Ok(ReaderBuilder::new(schema.clone())
        .with_batch_size(JSON_BATCH_ROWS)
        .build_decoder()?)
}

impl LineFormat for JsonLines {
    fn decode(&mut self, mut bytes: &[u8]) -> Result<(), BadLines> {
        while !bytes.is_empty() {
            let n = self.decoder.decode(bytes)?;
            bytes = &bytes[n..];
            if n == 0 || !bytes.is_empty() {
                // The decoder is full: move its rows out and go on.
                if let Some(b) = self.decoder.flush()? {
                    self.pending.push(b);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, BadLines> {
        let last = self.decoder.flush()?;
        if let Some(b) = &last {
            if self.strict {
                check_no_missing(b)?;
            }
        }
        let mut all = std::mem::take(&mut self.pending);
        all.extend(last);
        Ok(crate::concat_all(&self.schema, all)?)
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.decoder =
            build(&self.schema, self.strict).expect("rebuilding a decoder that built before");
    }
}

/// `json.fail-on-missing-field`: arrow-json decodes a missing field as NULL, so with this option
/// any NULL is rejected (an explicit JSON `null` too: stricter than Flink, never looser).
fn check_no_missing(batch: &RecordBatch) -> Result<(), BadLines> {
    for (i, col) in batch.columns().iter().enumerate() {
        if col.null_count() > 0 {
            return Err(BadLines(format!(
                "field '{}' is missing (json.fail-on-missing-field is true)",
                batch.schema().field(i).name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::LineChunkDecoder;
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]))
    }

    fn decoder(ignore: bool) -> LineChunkDecoder<JsonLines> {
        let o = JsonOptions {
            ignore_parse_errors: ignore,
            ..Default::default()
        };
        LineChunkDecoder::new(
            JsonLines::new(schema(), &o).unwrap(),
            JsonLines::new(schema(), &o).unwrap(),
            ignore,
        )
    }

    #[test]
    fn bad_line_is_named() {
        let mut d = decoder(false);
        let b = d
            .decode_chunk(b"{\"a\":1,\"b\":\"x\"}\n{\"a\":2}\n")
            .unwrap()
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        let err = d
            .decode_chunk(b"{\"a\":3}\n{\"a\":\"oops\"}\n{\"a\":5}\n")
            .unwrap_err();
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn ignore_parse_errors_skips_and_counts() {
        let mut d = decoder(true);
        let b = d
            .decode_chunk(b"{\"a\":1}\n{not json\n{\"a\":3}\n")
            .unwrap()
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(d.skipped, 1);
    }
}
