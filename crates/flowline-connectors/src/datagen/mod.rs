//! `datagen`: random or sequential rows at a rate, as Flink's datagen connector.
//!
//! Options: `rows-per-second` (default 10000, the total over all subtasks), `number-of-rows`
//! (bounded; default unbounded), and per field `fields.<f>.kind` = `random` | `sequence`,
//! `.min`/`.max` (random numbers), `.max-past` (random timestamps: ms before now),
//! `.length` (random strings, default 100), `.start`/`.end` (sequences, required for them),
//! `.null-rate` (fraction of NULLs). A bounded job ends when `number-of-rows` are emitted or
//! the first sequence runs out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryBuilder, BooleanBuilder, RecordBatch, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, SchemaRef};
use flowline_common::limits::BATCH_ROWS_MAX;
use flowline_common::{OptionSpec, Options};
use flowline_sql::TableDef;

use crate::registry::opt;
use crate::rng::SplitMix64;
use crate::{ConnectorError, Poll, Result, Source, TaskContext};

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "datagen"),
    OptionSpec::optional(
        "rows-per-second",
        "rows per second over all subtasks (default 10000)",
    ),
    OptionSpec::optional("number-of-rows", "total rows to emit; unbounded if absent"),
    OptionSpec::optional("fields.#.kind", "random (default) or sequence"),
    OptionSpec::optional("fields.#.min", "minimum of a random number"),
    OptionSpec::optional("fields.#.max", "maximum of a random number"),
    OptionSpec::optional(
        "fields.#.max-past",
        "random timestamps lie at most this far in the past (default 0)",
    ),
    OptionSpec::optional("fields.#.length", "length of a random string (default 100)"),
    OptionSpec::optional(
        "fields.#.var-len",
        "random string lengths between 1 and length (default false)",
    ),
    OptionSpec::optional("fields.#.start", "first value of a sequence"),
    OptionSpec::optional("fields.#.end", "last value of a sequence"),
    OptionSpec::optional("fields.#.null-rate", "fraction of NULL values (default 0)"),
];

const ROWS_PER_SECOND_DEFAULT: u64 = 10_000;
const STRING_LENGTH_DEFAULT: usize = 100;

#[derive(Debug, Clone)]
enum FieldGen {
    /// Inclusive range, split between subtasks.
    Sequence { next: i64, end: i64 },
    Random {
        min: f64,
        max: f64,
        length: usize,
        var_len: bool,
        max_past_ms: i64,
        null_rate: f64,
    },
}

pub fn validate(table: &TableDef, options: &Options) -> Result<()> {
    let schema = table.physical_schema();
    for key in options.map().keys() {
        if let Some(rest) = key.strip_prefix("fields.") {
            let field = rest.rsplit_once('.').map_or(rest, |(f, _)| f);
            if schema.index_of(field).is_err() {
                return Err(ConnectorError::config(
                    &table.name,
                    format!("option '{key}' names no column '{field}'"),
                ));
            }
        }
    }
    for f in schema.fields() {
        field_gen(table, options, f, 0, 1)?;
    }
    Ok(())
}

fn field_gen(
    table: &TableDef,
    o: &Options,
    f: &Field,
    subtask: usize,
    parallelism: usize,
) -> Result<FieldGen> {
    let key = |s: &str| format!("fields.{}.{s}", f.name());
    let supported = matches!(
        f.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Utf8
            | DataType::Boolean
            | DataType::Binary
            | DataType::Date32
            | DataType::Timestamp(..)
    );
    if !supported {
        return Err(ConnectorError::config(
            &table.name,
            format!(
                "datagen cannot generate column '{}' of type {} yet",
                f.name(),
                f.data_type()
            ),
        ));
    }
    match o.get(&key("kind")).unwrap_or("random") {
        "sequence" => {
            let start: i64 = opt(table, o.parse(&key("start")))?.ok_or_else(|| {
                ConnectorError::config(
                    &table.name,
                    format!("a sequence needs '{}' and '{}'", key("start"), key("end")),
                )
            })?;
            let end: i64 = opt(table, o.parse(&key("end")))?.ok_or_else(|| {
                ConnectorError::config(
                    &table.name,
                    format!("a sequence needs '{}' and '{}'", key("start"), key("end")),
                )
            })?;
            if end < start {
                return Err(ConnectorError::config(
                    &table.name,
                    format!("'{}' must not be below '{}'", key("end"), key("start")),
                ));
            }
            // Contiguous share of the range for this subtask: the first `len % p` subtasks get one
            // more value, exactly as `number-of-rows` is shared, so the two bounds agree.
            let (len, p, i) = (
                (end - start + 1) as u128,
                parallelism as u128,
                subtask as u128,
            );
            let lo = start + (len / p * i + i.min(len % p)) as i64;
            let size = (len / p + u128::from(i < len % p)) as i64;
            Ok(FieldGen::Sequence {
                next: lo,
                end: lo + size - 1,
            })
        }
        "random" => {
            let (dmin, dmax) = match f.data_type() {
                DataType::Int8 => (i8::MIN as f64, i8::MAX as f64),
                DataType::Int16 => (i16::MIN as f64, i16::MAX as f64),
                DataType::Int32 => (i32::MIN as f64, i32::MAX as f64),
                DataType::Int64 => (i64::MIN as f64, i64::MAX as f64),
                _ => (0.0, 1.0),
            };
            Ok(FieldGen::Random {
                min: opt(table, o.parse(&key("min")))?.unwrap_or(dmin),
                max: opt(table, o.parse(&key("max")))?.unwrap_or(dmax),
                length: opt(table, o.parse(&key("length")))?.unwrap_or(STRING_LENGTH_DEFAULT),
                var_len: opt(table, o.bool(&key("var-len"), false))?,
                max_past_ms: opt(table, o.duration(&key("max-past")))?
                    .map_or(0, flowline_common::clock::millis),
                null_rate: opt(table, o.parse(&key("null-rate")))?.unwrap_or(0.0),
            })
        }
        other => Err(ConnectorError::config(
            &table.name,
            format!(
                "invalid '{}' = '{other}'; valid: random, sequence",
                key("kind")
            ),
        )),
    }
}

pub fn create_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Source>> {
    let full = table.physical_schema();
    let indices: Vec<usize> =
        projection.map_or_else(|| (0..full.fields().len()).collect(), <[usize]>::to_vec);
    let schema: SchemaRef = Arc::new(full.project(&indices)?);
    let gens = schema
        .fields()
        .iter()
        .map(|f| field_gen(table, o, f, ctx.subtask, ctx.parallelism))
        .collect::<Result<Vec<_>>>()?;
    // A sequence bounds the source even when it is not read: check the unprojected ones too.
    let bounded_by_sequence = full
        .fields()
        .iter()
        .map(|f| field_gen(table, o, f, ctx.subtask, ctx.parallelism))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter_map(|g| match g {
            FieldGen::Sequence { next, end } => Some((end - next + 1).max(0) as u64),
            _ => None,
        })
        .min();
    let total_rows: Option<u64> = opt(table, o.parse("number-of-rows"))?;
    let share = |n: u64| {
        n / ctx.parallelism as u64 + u64::from((ctx.subtask as u64) < n % ctx.parallelism as u64)
    };
    let rows_left = match (total_rows.map(share), bounded_by_sequence) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let rate_total: u64 =
        opt(table, o.parse("rows-per-second"))?.unwrap_or(ROWS_PER_SECOND_DEFAULT);
    let rate = share(rate_total).max(1);
    let seed = (flowline_common::clock::now_nanos() as u64)
        ^ (ctx.subtask as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Ok(Box::new(DatagenSource {
        schema,
        gens,
        rows_left,
        rate,
        batch_rows: (rate as usize / 10).clamp(1, BATCH_ROWS_MAX),
        started: None,
        emitted: 0,
        paced_from: 0,
        rng: SplitMix64::new(seed),
        scratch: Vec::new(),
    }))
}

struct DatagenSource {
    schema: SchemaRef,
    gens: Vec<FieldGen>,
    rows_left: Option<u64>,
    rate: u64,
    batch_rows: usize,
    started: Option<Instant>,
    emitted: u64,
    /// `emitted` when this run started (pacing counts from there after a restore).
    paced_from: u64,
    rng: SplitMix64,
    scratch: Vec<u8>,
}

impl Source for DatagenSource {
    fn poll(&mut self) -> Result<Poll> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.rows_left == Some(0) {
            return Ok(Poll::End);
        }
        // Pace to `rate` rows per second since the start.
        let due = (started.elapsed().as_secs_f64() * self.rate as f64) as u64;
        let emitted = self.emitted - self.paced_from;
        if emitted >= due + self.batch_rows as u64 {
            let ahead = (emitted - due) as f64 / self.rate as f64;
            return Ok(Poll::Pending(Duration::from_secs_f64(ahead.min(0.1))));
        }
        let n = self
            .rows_left
            .map_or(self.batch_rows, |l| (l as usize).min(self.batch_rows));
        let columns = self
            .schema
            .fields()
            .iter()
            .zip(self.gens.iter_mut())
            .map(|(f, g)| generate(f.data_type(), g, n, &mut self.rng, &mut self.scratch))
            .collect::<Result<Vec<_>>>()?;
        self.emitted += n as u64;
        if let Some(l) = self.rows_left.as_mut() {
            *l -= n as u64;
        }
        // With no column projected (e.g. only PROCTIME() is used) the batch still has n rows.
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Poll::Batch(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?))
    }

    /// Rows emitted, rows left, the random generator's state and each sequence's next value:
    /// the rows after a restore are the ones the failed run would have produced next.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let sequences: Vec<Option<i64>> = self
            .gens
            .iter()
            .map(|g| match g {
                FieldGen::Sequence { next, .. } => Some(*next),
                _ => None,
            })
            .collect();
        let v = serde_json::json!({"emitted": self.emitted, "rows_left": self.rows_left, "rng": self.rng.state(), "sequences": sequences});
        Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(position).map_err(|e| {
            ConnectorError::config(
                "datagen",
                format!("the checkpointed position is not valid: {e}"),
            )
        })?;
        self.emitted = v["emitted"].as_u64().unwrap_or(0);
        self.paced_from = self.emitted;
        self.rows_left = v["rows_left"].as_u64();
        self.rng = SplitMix64::new(v["rng"].as_u64().unwrap_or(0));
        for (g, s) in self
            .gens
            .iter_mut()
            .zip(v["sequences"].as_array().into_iter().flatten())
        {
            if let (FieldGen::Sequence { next, .. }, Some(n)) = (g, s.as_i64()) {
                *next = n;
            }
        }
        Ok(())
    }
}

fn generate(
    dt: &DataType,
    g: &mut FieldGen,
    n: usize,
    rng: &mut SplitMix64,
    scratch: &mut Vec<u8>,
) -> Result<ArrayRef> {
    let values: ArrayRef = match g {
        FieldGen::Sequence { next, .. } => {
            let start = *next;
            *next += n as i64;
            let seq: ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values(
                start..start + n as i64,
            ));
            return Ok(cast(&seq, dt)?);
        }
        FieldGen::Random {
            min,
            max,
            length,
            var_len,
            max_past_ms,
            null_rate,
        } => {
            let null_rate = *null_rate;
            let is_null = |rng: &mut SplitMix64| null_rate > 0.0 && rng.next_f64() < null_rate;
            match dt {
                DataType::Utf8 | DataType::Binary => {
                    let mut sb = StringBuilder::with_capacity(n, n * *length);
                    let mut bb = BinaryBuilder::new();
                    for _ in 0..n {
                        if is_null(rng) {
                            sb.append_null();
                            bb.append_null();
                            continue;
                        }
                        let len = if *var_len {
                            1 + rng.below(*length as u64) as usize
                        } else {
                            *length
                        };
                        scratch.clear();
                        rng.fill_hex(scratch, len);
                        if matches!(dt, DataType::Utf8) {
                            sb.append_value(
                                std::str::from_utf8(scratch).expect("hex digits are ASCII"),
                            );
                        } else {
                            bb.append_value(&scratch);
                        }
                    }
                    if matches!(dt, DataType::Utf8) {
                        Arc::new(sb.finish())
                    } else {
                        Arc::new(bb.finish())
                    }
                }
                DataType::Boolean => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    for _ in 0..n {
                        if is_null(rng) {
                            b.append_null()
                        } else {
                            b.append_value(rng.next_u64() & 1 == 1)
                        }
                    }
                    Arc::new(b.finish())
                }
                DataType::Timestamp(..) | DataType::Date32 => {
                    let now = chrono::Utc::now().timestamp_millis();
                    let v: arrow::array::TimestampMillisecondArray = (0..n)
                        .map(|_| {
                            (!is_null(rng)).then(|| now - rng.below(*max_past_ms as u64 + 1) as i64)
                        })
                        .collect();
                    return Ok(cast(&v, dt)?);
                }
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                    let v: arrow::array::Float64Array = (0..n)
                        .map(|_| (!is_null(rng)).then(|| *min + rng.next_f64() * (*max - *min)))
                        .collect();
                    return Ok(cast(&v, dt)?);
                }
                _ => {
                    // Integers: uniform in [min, max].
                    let (lo, hi) = (*min as i128, *max as i128);
                    let span = (hi - lo + 1).max(1) as u128;
                    let v: arrow::array::Int64Array = (0..n)
                        .map(|_| {
                            (!is_null(rng)).then(|| {
                                let r = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128)
                                    % span;
                                (lo + r as i128) as i64
                            })
                        })
                        .collect();
                    return Ok(cast(&v, dt)?);
                }
            }
        }
    };
    Ok(values)
}
