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
//! parallelism yields the same events.

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
    }))
}

struct NexmarkSource {
    generator: NexmarkGenerator,
    schema: SchemaRef,
    rate_limited: bool,
    batch_rows: usize,
    started: Option<Instant>,
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
        let batch = self.generator.next_batch(self.batch_rows)?;
        Ok(Poll::Batch(conform_batch(&batch, &self.schema)?))
    }

    /// The position is the count of events produced (every event is a function of its number)
    /// and the base time (which defaults to the start of the first run).
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let v = serde_json::json!({"produced": self.generator.produced(), "base_time": self.generator.base_time()});
        Ok(serde_json::to_vec(&v).expect("JSON values serialize"))
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let v: serde_json::Value = serde_json::from_slice(position).map_err(|e| {
            ConnectorError::config(
                "nexmark",
                format!("the checkpointed position is not valid: {e}"),
            )
        })?;
        let (Some(produced), Some(base)) = (v["produced"].as_u64(), v["base_time"].as_i64()) else {
            return Err(ConnectorError::config(
                "nexmark",
                "the checkpointed position lacks 'produced' or 'base_time'",
            ));
        };
        self.generator.set_produced(produced);
        self.generator.set_base_time(base);
        Ok(())
    }
}
