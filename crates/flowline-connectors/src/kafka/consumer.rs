//! The source's consumer: librdkafka settings Flowline chooses unless the table sets them, and
//! partition discovery.

use std::time::Duration;

use flowline_common::Options;
use rdkafka::consumer::BaseConsumer;

use super::{client_config, kafka_error};
use crate::{ConnectorError, Result};

/// What librdkafka prefetches per partition at most, unless the table sets it: consuming stops
/// when the pipeline stops polling (backpressure), so this bounds the buffered bytes.
const PREFETCH_KBYTES_DEFAULT: &str = "8192";
/// How long the client waits to fetch again after the prefetch queue was full.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// A consumer for table `name`; `bounded` when it reads up to stop offsets (it then needs to be
/// told of each partition's end).
pub(super) fn consumer(name: &str, o: &Options, bounded: bool) -> Result<BaseConsumer> {
    let mut config = client_config(o);
    if o.get("properties.group.id").is_none() {
        // librdkafka wants a group id for a consumer; offsets are ours, so any stable one works.
        config.set("group.id", format!("flowline-{name}"));
    }
    config.set("enable.auto.commit", "false");
    if o.get("properties.queued.max.messages.kbytes").is_none() {
        config.set("queued.max.messages.kbytes", PREFETCH_KBYTES_DEFAULT);
    }
    if o.get("properties.fetch.queue.backoff.ms").is_none() {
        // Once the prefetch queue is full, librdkafka waits this long (default 1 s) before it
        // fetches again: a pipeline slower than the broker then starves for most of each
        // second. 2M JSON bids: 140k/s with the default, 300k/s with this (docs/BENCHMARKS.md).
        config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    }
    if bounded {
        config.set("enable.partition.eof", "true");
    }
    config
        .create()
        .map_err(|e| kafka_error(name, "cannot create the consumer", e))
}

/// `scan.topic-partition-discovery.interval`: Flink's default looks for new partitions every 5
/// minutes; zero or a negative value turns discovery off.
pub(super) fn discovery_interval(name: &str, o: &Options) -> Result<Option<Duration>> {
    Ok(match o.get("scan.topic-partition-discovery.interval") {
        None => Some(Duration::from_secs(300)),
        Some(v) if v.trim().starts_with('-') || v.trim() == "0" => None,
        Some(v) => {
            let d = flowline_common::options::parse_duration(v).map_err(|e| {
                ConnectorError::config(
                    name,
                    format!("invalid 'scan.topic-partition-discovery.interval' = '{v}': {e}"),
                )
            })?;
            (!d.is_zero()).then_some(d)
        }
    })
}
