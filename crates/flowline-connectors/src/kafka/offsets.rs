//! The Kafka source's partitions and offsets: which subtask reads a partition, where reading
//! starts and where a bounded read stops.

use std::collections::BTreeMap;

use flowline_common::Options;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::source::*;
use super::{kafka_error, parse_specific_offsets};
use crate::{ConnectorError, Result};

pub(super) type Tp = (String, i32);

/// The subtask that reads a partition, as Flink's Kafka source assigns them: a topic's
/// partitions go round-robin from a start subtask that depends on the topic's name. The owner
/// of a partition does not change when partitions or topics are added.
pub(super) fn owner((topic, partition): &Tp, parallelism: usize) -> usize {
    // Java's String.hashCode over UTF-16 code units.
    let hash = topic
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let start = (hash.wrapping_mul(31) & 0x7fff_ffff) as usize % parallelism;
    (start + *partition as usize) % parallelism
}

/// The (topic, partition) pairs of `topic` / `topic-pattern`, sorted.
pub(super) fn partitions(consumer: &BaseConsumer, name: &str, o: &Options) -> Result<Vec<Tp>> {
    let topics: Vec<String> = match o.get("topic") {
        Some(t) => t
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => {
            let pattern = o.get("topic-pattern").unwrap_or_default();
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                ConnectorError::config(name, format!("invalid 'topic-pattern' = '{pattern}': {e}"))
            })?;
            let md = consumer
                .fetch_metadata(None, LOOKUP_TIMEOUT)
                .map_err(|e| kafka_error(name, "cannot list topics", e))?;
            let mut found: Vec<String> = md
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|t| re.is_match(t))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ConnectorError::config(
                    name,
                    format!("kafka: no topic matches 'topic-pattern' = '{pattern}'"),
                ));
            }
            found
        }
    };
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(&topic), LOOKUP_TIMEOUT)
            .map_err(|e| {
                kafka_error(name, &format!("cannot read metadata of topic '{topic}'"), e)
            })?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(ConnectorError::config(
                name,
                format!("kafka: topic '{topic}' not found"),
            ));
        };
        if let Some(err) = t.error() {
            let e = KafkaError::MetadataFetch(err.into());
            return Err(kafka_error(name, &format!("topic '{topic}'"), e));
        }
        if t.partitions().is_empty() {
            return Err(ConnectorError::config(
                name,
                format!("kafka: topic '{topic}' does not exist or has no partitions"),
            ));
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        out.extend(ids.into_iter().map(|p| (topic.clone(), p)));
    }
    Ok(out)
}

pub(super) fn tpl_of(tps: &[Tp], offset: Offset) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        let _ = tpl.add_partition_offset(t, *p, offset);
    }
    tpl
}

pub(super) fn offsets_of(tpl: &TopicPartitionList) -> BTreeMap<Tp, Offset> {
    tpl.elements()
        .iter()
        .map(|e| ((e.topic().to_string(), e.partition()), e.offset()))
        .collect()
}

/// Exclusive stop offsets per partition for a bounded read.
pub(super) fn stop_offsets(
    consumer: &BaseConsumer,
    name: &str,
    o: &Options,
    mode: &str,
    tps: &[Tp],
) -> Result<BTreeMap<Tp, i64>> {
    let high = |tp: &Tp| -> Result<i64> {
        let (_, hi) = consumer
            .fetch_watermarks(&tp.0, tp.1, LOOKUP_TIMEOUT)
            .map_err(|e| kafka_error(name, "cannot read the end offset", e))?;
        Ok(hi)
    };
    let mut out = BTreeMap::new();
    match mode {
        "latest-offset" => {
            for tp in tps {
                out.insert(tp.clone(), high(tp)?);
            }
        }
        "specific-offsets" => {
            let text = o.get("scan.bounded.specific-offsets").ok_or_else(|| {
                ConnectorError::config(name, "'scan.bounded.mode' = 'specific-offsets' needs 'scan.bounded.specific-offsets'")
            })?;
            let given: BTreeMap<i32, i64> = parse_specific_offsets(name, "scan.bounded.specific-offsets", text)?.into_iter().collect();
            for tp in tps {
                let stop = match given.get(&tp.1) {
                    Some(s) => *s,
                    None => high(tp)?,
                };
                out.insert(tp.clone(), stop);
            }
        }
        "timestamp" => {
            let ts: i64 = o
                .get("scan.bounded.timestamp-millis")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ConnectorError::config(name, "'scan.bounded.mode' = 'timestamp' needs 'scan.bounded.timestamp-millis' (ms since epoch)"))?;
            let found = consumer.offsets_for_times(tpl_of(tps, Offset::Offset(ts)), LOOKUP_TIMEOUT).map_err(|e| kafka_error(name, "cannot look up offsets by time", e))?;
            for (tp, off) in offsets_of(&found) {
                let stop = match off {
                    Offset::Offset(n) => n,
                    _ => high(&tp)?,
                };
                out.insert(tp, stop);
            }
        }
        "group-offsets" => {
            let committed = consumer.committed_offsets(tpl_of(tps, Offset::Invalid), LOOKUP_TIMEOUT).map_err(|e| kafka_error(name, "cannot read the group's offsets", e))?;
            for (tp, off) in offsets_of(&committed) {
                let Offset::Offset(n) = off else {
                    return Err(ConnectorError::config(name, format!("kafka: the group has no committed offset for {}-{} to stop at", tp.0, tp.1)));
                };
                out.insert(tp, n);
            }
        }
        other => {
            return Err(ConnectorError::config(
                name,
                format!("invalid 'scan.bounded.mode' = '{other}'; valid: unbounded, latest-offset, group-offsets, timestamp, specific-offsets"),
            ))
        }
    }
    Ok(out)
}
