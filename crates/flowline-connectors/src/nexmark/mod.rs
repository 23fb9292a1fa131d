//! `nexmark`: the Nexmark benchmark's event stream (persons, auctions, bids), with the table
//! shape of Flink's Nexmark DDL:
//!
//! ```sql
//! CREATE TABLE nexmark (
//!   event_type INT,
//!   person  ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR,
//!               state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
//!   auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT,
//!               dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
//!   bid     ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
//!               dateTime TIMESTAMP(3), extra VARCHAR>,
//!   dateTime AS CASE WHEN event_type = 0 THEN person.dateTime
//!                    WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
//!   WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
//! ) WITH ('connector' = 'nexmark', 'events.num' = '1000000');
//! ```
//!
//! Event `n` is a person, an auction or a bid by `n mod (1 + 3 + 46)` (the proportions are
//! options); its contents depend only on `seed` and `n`, its event time is
//! `base-time + n / first-event.rate`. Subtask `i` of `p` generates events `i, i + p, ...`, so any
//! parallelism yields the same events. A checkpoint taken at parallelism `p` resumes at another:
//! event `n` was produced then iff `n / p` is below the count subtask `n mod p` had produced, so
//! each new subtask starts where every old one had got to and skips, until it passes the one
//! furthest ahead, the events some had already produced.

mod generator;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use flowline_common::limits::BATCH_ROWS_MAX;
use flowline_common::{OptionSpec, Options};
use flowline_sql::TableDef;

pub use generator::{nexmark_schema, NexmarkConfig, NexmarkGenerator};

use crate::registry::opt;
use crate::{ConnectorError, Poll, Result, Source, TaskContext};
use flowline_formats::conform_batch;

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "nexmark"),
    OptionSpec::optional("events.num", "total events; unbounded if absent or 0"),
    OptionSpec::optional(
        "first-event.rate",
        "events per second of event time (default 10000000)",
    ),
    OptionSpec::optional(
        "next-event.rate",
        "accepted for Flink compatibility; the rate is first-event.rate",
    ),
    OptionSpec::optional("person.proportion", "share of persons (default 1)"),
    OptionSpec::optional("auction.proportion", "share of auctions (default 3)"),
    OptionSpec::optional("bid.proportion", "share of bids (default 46)"),
    OptionSpec::optional(
        "person.avg-size",
        "average person size in bytes (default 200)",
    ),
    OptionSpec::optional(
        "auction.avg-size",
        "average auction size in bytes (default 500)",
    ),
    OptionSpec::optional("bid.avg-size", "average bid size in bytes (default 100)"),
    OptionSpec::optional(
        "base-time",
        "event time of event 0: epoch millis or 'yyyy-MM-dd HH:mm:ss' (default: job start)",
    ),
    OptionSpec::optional(
        "seed",
        "random seed (default 0); same seed and base-time, same events",
    ),
    OptionSpec::optional(
        "rate.limited",
        "emit at first-event.rate in wall-clock time (default false: as fast as possible)",
    ),
];

pub fn validate(table: &TableDef, options: &Options) -> Result<()> {
    config(table, options)?;
    let produced = nexmark_schema();
    for f in table.physical_schema().fields() {
        if produced.field_with_name(f.name()).is_err() {
            return Err(ConnectorError::config(
                &table.name,
                format!("nexmark produces the columns event_type, person, auction, bid; '{}' is none of them", f.name()),
            ));
        }
    }
    Ok(())
}

fn config(table: &TableDef, o: &Options) -> Result<NexmarkConfig> {
    let d = NexmarkConfig::default();
    let base_time_ms = match o.get("base-time") {
        None => chrono::Utc::now().timestamp_millis(),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => chrono::NaiveDateTime::parse_from_str(v.trim(), "%Y-%m-%d %H:%M:%S")
                .map(|t| t.and_utc().timestamp_millis())
                .map_err(|_| {
                    opt::<()>(
                        table,
                        Err(o.invalid(
                            "base-time",
                            "expected epoch millis or 'yyyy-MM-dd HH:mm:ss'",
                        )),
                    )
                    .unwrap_err()
                })?,
        },
    };
    let c = NexmarkConfig {
        events_num: opt(table, o.parse::<u64>("events.num"))?.filter(|n| *n > 0),
        first_event_rate: opt(table, o.parse("first-event.rate"))?.unwrap_or(d.first_event_rate),
        person_proportion: opt(table, o.parse("person.proportion"))?.unwrap_or(d.person_proportion),
        auction_proportion: opt(table, o.parse("auction.proportion"))?
            .unwrap_or(d.auction_proportion),
        bid_proportion: opt(table, o.parse("bid.proportion"))?.unwrap_or(d.bid_proportion),
        avg_person_bytes: opt(table, o.parse("person.avg-size"))?.unwrap_or(d.avg_person_bytes),
        avg_auction_bytes: opt(table, o.parse("auction.avg-size"))?.unwrap_or(d.avg_auction_bytes),
        avg_bid_bytes: opt(table, o.parse("bid.avg-size"))?.unwrap_or(d.avg_bid_bytes),
        base_time_ms,
        seed: opt(table, o.parse("seed"))?.unwrap_or(0),
    };
    if c.first_event_rate == 0 {
        return Err(opt::<()>(
            table,
            Err(o.invalid("first-event.rate", "must be positive")),
        )
        .unwrap_err());
    }
    if c.person_proportion == 0 || c.auction_proportion == 0 {
        return Err(ConnectorError::config(
            &table.name,
            "person.proportion and auction.proportion must be positive",
        ));
    }
    Ok(c)
}

pub fn create_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Source>> {
    let config = config(table, o)?;
    let declared = table.physical_schema();
    let indices: Vec<usize> =
        projection.map_or_else(|| (0..declared.fields().len()).collect(), <[usize]>::to_vec);
    let schema: SchemaRef = Arc::new(declared.project(&indices)?);
    let wanted: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let rate_limited = opt(table, o.bool("rate.limited", false))?;
    // Rate-limited: about ten batches per second, so time advances smoothly.
    let batch_rows = if rate_limited {
        ((config.first_event_rate / ctx.parallelism.max(1) as u64) / 10)
            .clamp(1, BATCH_ROWS_MAX as u64) as usize
    } else {
        BATCH_ROWS_MAX
    };
    let generator =
        NexmarkGenerator::new(config, ctx.subtask as u64, ctx.parallelism as u64, &wanted);
    Ok(Box::new(NexmarkSource {
        generator,
        schema,
        rate_limited,
        batch_rows,
        started: None,
        before: None,
    }))
}

struct NexmarkSource {
    generator: NexmarkGenerator,
    schema: SchemaRef,
    rate_limited: bool,
    batch_rows: usize,
    started: Option<Instant>,
    /// After a restore at another parallelism: what the old subtasks had produced, until this
    /// generator passes the furthest of them.
    before: Option<Before>,
}

/// What the subtasks of a checkpoint taken at another parallelism had produced. Subtask `i`
/// had passed the first `produced[i]` events of its stride (produced them, or skipped them as
/// done by an earlier parallelism, `before`: restarts may rescale again before catching up).
struct Before {
    parallelism: u64,
    produced: Vec<u64>,
    before: Option<Box<Before>>,
}

impl Before {
    fn done(&self, event: u64) -> bool {
        event / self.parallelism < self.produced[(event % self.parallelism) as usize]
            || self.before.as_ref().is_some_and(|b| b.done(event))
    }

    /// Every event below this had been produced.
    fn all_below(&self) -> u64 {
        self.produced.iter().min().copied().unwrap_or(0) * self.parallelism
    }

    /// No event from this on had been.
    fn none_from(&self) -> u64 {
        let mine = self.produced.iter().max().copied().unwrap_or(0) * self.parallelism;
        mine.max(self.before.as_ref().map_or(0, |b| b.none_from()))
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "parallelism": self.parallelism,
            "produced": self.produced,
            "before": self.before.as_ref().map(|b| b.to_json()),
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Option<Self>> {
        if v.is_null() {
            return Some(None);
        }
        let produced: Vec<u64> = v["produced"]
            .as_array()?
            .iter()
            .map(|n| n.as_u64())
            .collect::<Option<_>>()?;
        let parallelism = v["parallelism"].as_u64()?;
        if produced.len() as u64 != parallelism || parallelism == 0 {
            return None;
        }
        let before = Self::from_json(&v["before"])?.map(Box::new);
        Some(Some(Before {
            parallelism,
            produced,
            before,
        }))
    }
}

/// A checkpointed position: (events produced, base time, what old subtasks had produced).
fn position(table: &str, bytes: &[u8]) -> Result<(u64, i64, Option<Before>)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ConnectorError::config(
            table,
            format!("the checkpointed position is not valid: {e}"),
        )
    })?;
    let (Some(produced), Some(base)) = (v["produced"].as_u64(), v["base_time"].as_i64()) else {
        return Err(ConnectorError::config(
            table,
            "the checkpointed position lacks 'produced' or 'base_time'",
        ));
    };
    let before = Before::from_json(&v["before"]).ok_or_else(|| {
        ConnectorError::config(table, "the checkpointed position's 'before' is not valid")
    })?;
    Ok((produced, base, before))
}

impl Source for NexmarkSource {
    fn poll(&mut self) -> Result<Poll> {
        // Pacing counts from the first event this run produces (which may follow a restore).
        let offset = self.generator.next_event_time_offset_ms();
        let started = *self
            .started
            .get_or_insert_with(|| Instant::now() - Duration::from_millis(offset.max(0) as u64));
        if self.generator.exhausted() {
            return Ok(Poll::End);
        }
        if self.rate_limited {
            let ahead_ms =
                self.generator.next_event_time_offset_ms() - started.elapsed().as_millis() as i64;
            if ahead_ms > 0 {
                return Ok(Poll::Pending(Duration::from_millis(
                    ahead_ms.min(100) as u64
                )));
            }
        }
        let first = self.generator.produced();
        let mut batch = self.generator.next_batch(self.batch_rows)?;
        if let Some(before) = &self.before {
            // Leave out the events an old subtask had produced.
            let g = &self.generator;
            let keep: arrow::array::BooleanArray = (first..g.produced())
                .map(|k| Some(!before.done(g.event_number(k))))
                .collect();
            batch = arrow::compute::filter_record_batch(&batch, &keep)?;
            if g.event_number(g.produced()) >= before.none_from() {
                self.before = None;
            }
        }
        Ok(Poll::Batch(conform_batch(&batch, &self.schema)?))
    }

    /// The position is the count of events produced (every event is a function of its number)
    /// and the base time (which defaults to the start of the first run).
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let v = serde_json::json!({
            "produced": self.generator.produced(),
            "base_time": self.generator.base_time(),
            "before": self.before.as_ref().map(Before::to_json),
        });
        Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (produced, base, before) = position("nexmark", bytes)?;
        self.generator.set_produced(produced);
        self.generator.set_base_time(base);
        self.before = before;
        Ok(())
    }

    /// Starts where every old subtask had got to (`positions` in old subtask order) and skips
    /// what some had produced beyond that.
    fn restore_rescaled(&mut self, positions: &[&[u8]]) -> Result<()> {
        let mut before = Before {
            parallelism: positions.len() as u64,
            produced: Vec::new(),
            before: None,
        };
        for p in positions {
            let (produced, base, earlier) = position("nexmark", p)?;
            self.generator.set_base_time(base);
            before.produced.push(produced);
            // Every old subtask restored from the same earlier one: any that still had it says
            // the same (one that had passed it skips nothing of it in its own stride).
            if before.before.is_none() {
                before.before = earlier.map(Box::new);
            }
        }
        if before.parallelism == 0 {
            return Ok(());
        }
        if before
            .before
            .as_ref()
            .is_some_and(|b| b.none_from() <= before.all_below())
        {
            before.before = None; // all it marks is below where every old subtask had got to
        }
        // This generator's first event at or past the point every old one had reached.
        let (g, from) = (&mut self.generator, before.all_below());
        let (first, step) = (g.event_number(0), g.event_number(1) - g.event_number(0));
        g.set_produced(from.saturating_sub(first).div_ceil(step));
        if g.event_number(g.produced()) < before.none_from() {
            self.before = Some(before);
        }
        Ok(())
    }
}
