//! `kafka`: a partitioned source whose offsets are part of checkpoints, and a sink.
//!
//! ```text
//! source subtask i: partitions p with index(p) % parallelism == i (assigned, not subscribed)
//!   BaseConsumer::poll ─▶ RecordBuffer (key, value) ─▶ RecordDecoder ─▶ batch
//!   snapshot = next offset per partition; restore seeks there; the group offset is committed
//!   after a checkpoint completes (for monitoring only, as in Flink)
//! sink subtask: RecordEncoder ─▶ ThreadedProducer::send; at-least-once flushes at the barrier
//! ```
//!
//! The client is rdkafka (librdkafka built from its bundled source): the mature Kafka client,
//! with idempotence and transactions; option keys follow Flink's Kafka connector.

mod consumer;
mod offsets;
mod records;
mod sink;
mod source;

use flowline_common::{OptionSpec, Options};
use flowline_formats::{RecordFormat, RECORD_FORMATS};
use flowline_sql::TableDef;

use crate::{ConnectorError, Result, Sink, TaskContext};

pub use sink::create_sink;
pub use source::create_source;

/// `upsert-kafka`: a compacted topic as a table keyed by its PRIMARY KEY. The sink writes `+I`/`+U`
/// rows as records keyed by the primary key and `-D` rows as tombstones (null values); a `-U`
/// row is dropped when the batch also writes its key, else it is a tombstone. The source reads every record
/// from the earliest offset as an upsert (`+U`) or, for a tombstone, a delete (`-D`); the
/// planner normalizes that into a changelog (`ChangelogNormalize`).
pub const UPSERT_OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "upsert-kafka"),
    OptionSpec::required("topic", "topic name"),
    OptionSpec::required("properties.bootstrap.servers", "comma-separated host:port of Kafka brokers"),
    OptionSpec::optional("properties.*", "passed to the Kafka client (librdkafka names; common Java-only ones are translated or ignored)"),
    OptionSpec::required("key.format", "format of the key (the PRIMARY KEY columns): json, csv, raw, avro, avro-confluent, protobuf"),
    OptionSpec::required("value.format", "format of the value: json, csv, raw, avro, avro-confluent, protobuf"),
    OptionSpec::optional("key.fields-prefix", "prefix of key columns' names that the key format leaves out"),
    OptionSpec::optional("value.fields-include", "ALL (default) or EXCEPT_KEY: whether the value also carries the key columns"),
    OptionSpec::optional("scan.bounded.mode", "source: unbounded (default), latest-offset, group-offsets, timestamp, specific-offsets"),
    OptionSpec::optional("scan.bounded.specific-offsets", "source: stop offsets (exclusive): 'partition:0,offset:42;...'"),
    OptionSpec::optional("scan.bounded.timestamp-millis", "source: stop before the first record at or after this time"),
    OptionSpec::optional("properties.group.id", "consumer group (offsets are committed there for monitoring)"),
    OptionSpec::optional("sink.delivery-guarantee", "none, at-least-once (default), exactly-once (Kafka transactions committed with checkpoints)"),
    OptionSpec::optional("sink.transactional-id-prefix", "exactly-once: prefix of the transactional ids (<prefix>-<table>-<subtask>)"),
    OptionSpec::optional("sink.buffer-flush.max-rows", "accepted for Flink compatibility; every change is written"),
    OptionSpec::optional("sink.buffer-flush.interval", "accepted for Flink compatibility; every change is written"),
    OptionSpec::optional("sink.parallelism", "accepted; the job's parallelism is used"),
];

/// The options of an `upsert-kafka` table as the `kafka` code reads them: the key is the
/// PRIMARY KEY.
pub(crate) fn upsert_options(table: &TableDef, o: &Options) -> Result<Options> {
    if table.primary_key.is_empty() {
        return Err(ConnectorError::config(
            &table.name,
            "connector 'upsert-kafka' needs a PRIMARY KEY (...) NOT ENFORCED: the key of the topic's records",
        ));
    }
    let mut map = o.map().clone();
    map.insert("key.fields".into(), table.primary_key.join(";"));
    // The source reads the whole topic: every key's latest version.
    map.insert("scan.startup.mode".into(), "earliest-offset".into());
    map.remove("sink.buffer-flush.max-rows");
    map.remove("sink.buffer-flush.interval");
    Ok(Options::new("connector 'upsert-kafka'", map))
}

pub fn validate_upsert(table: &TableDef, o: &Options) -> Result<()> {
    if let Some(f) = o
        .get("value.format")
        .filter(|f| flowline_formats::ChangelogFormat::is_changelog(f))
    {
        return Err(ConnectorError::config(
            &table.name,
            format!("upsert-kafka's 'value.format' must be an insert-only format (json, csv, raw), not the changelog format '{f}': upserts by key already make the changelog"),
        ));
    }
    validate(table, &upsert_options(table, o)?)
}

pub fn create_upsert_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn crate::Source>> {
    source::create(table, &upsert_options(table, o)?, ctx, projection, true)
}

pub fn create_upsert_sink(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
) -> Result<Box<dyn Sink>> {
    sink::create(table, &upsert_options(table, o)?, ctx, true)
}

pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::required("connector", "kafka"),
    OptionSpec::optional("topic", "topic name, or names separated by ';'"),
    OptionSpec::optional("topic-pattern", "regular expression of topic names to read (source)"),
    OptionSpec::required("properties.bootstrap.servers", "comma-separated host:port of Kafka brokers"),
    OptionSpec::optional("properties.group.id", "consumer group: group-offsets startup, and where offsets are committed for monitoring"),
    OptionSpec::optional("properties.*", "passed to the Kafka client (librdkafka names; common Java-only ones are translated or ignored)"),
    OptionSpec::optional("format", "value format: json, csv, raw, avro, avro-confluent, protobuf, or a changelog format (debezium-json, canal-json, maxwell-json)"),
    OptionSpec::optional("value.format", "value format (same as 'format')"),
    OptionSpec::optional("key.format", "key format: json, csv, raw, avro, avro-confluent, protobuf"),
    OptionSpec::optional("key.fields", "columns carried in the message key, separated by ';'"),
    OptionSpec::optional("key.fields-prefix", "prefix of key columns' names that the key format leaves out"),
    OptionSpec::optional("value.fields-include", "ALL (default) or EXCEPT_KEY: whether the value also carries the key columns"),
    OptionSpec::optional("scan.startup.mode", "earliest-offset, latest-offset, group-offsets (default), timestamp, specific-offsets"),
    OptionSpec::optional("scan.startup.specific-offsets", "'partition:0,offset:42;partition:1,offset:300'"),
    OptionSpec::optional("scan.startup.timestamp-millis", "start at the first record at or after this time (ms since epoch)"),
    OptionSpec::optional("scan.bounded.mode", "unbounded (default), latest-offset, group-offsets, timestamp, specific-offsets"),
    OptionSpec::optional("scan.bounded.specific-offsets", "stop offsets (exclusive): 'partition:0,offset:42;...'"),
    OptionSpec::optional("scan.bounded.timestamp-millis", "stop before the first record at or after this time"),
    OptionSpec::optional("scan.topic-partition-discovery.interval", "how often the source looks for new partitions (and, with 'topic-pattern', new topics); default 5 min, 0 or negative turns it off"),
    OptionSpec::optional("sink.partitioner", "default (by key, else sticky), fixed (subtask i writes partition i mod n), round-robin"),
    OptionSpec::optional("sink.delivery-guarantee", "none, at-least-once (default), exactly-once (Kafka transactions committed with checkpoints)"),
    OptionSpec::optional("sink.transactional-id-prefix", "exactly-once: prefix of the transactional ids (<prefix>-<table>-<subtask>)"),
    OptionSpec::optional("sink.parallelism", "accepted; the job's parallelism is used"),
];

/// `METADATA FROM '<key>'` columns the source fills, as Flink's Kafka connector names them.
pub const METADATA_KEYS: &[&str] = &[
    "topic",
    "partition",
    "headers",
    "leader-epoch",
    "offset",
    "timestamp",
    "timestamp-type",
];

/// Persisted METADATA columns the sink writes: the record's headers and timestamp.
pub const WRITABLE_METADATA_KEYS: &[&str] = &["headers", "timestamp"];

pub fn validate(table: &TableDef, o: &Options) -> Result<()> {
    let cfg = |e: String| ConnectorError::config(&table.name, e);
    if o.get("format").is_some() && o.get("value.format").is_some() {
        return Err(cfg("set either 'format' or 'value.format', not both".into()));
    }
    let layout = Layout::new(table, o)?;
    if o.get("topic").is_some() == o.get("topic-pattern").is_some() {
        return Err(cfg("set exactly one of 'topic' and 'topic-pattern'".into()));
    }
    if let Some(g) = o.get("sink.delivery-guarantee") {
        match g {
            "none" | "at-least-once" => {}
            "exactly-once" => {
                if o.get("sink.transactional-id-prefix").is_none() {
                    return Err(cfg("'sink.delivery-guarantee' = 'exactly-once' needs 'sink.transactional-id-prefix' (unique per job writing to the cluster)".into()));
                }
            }
            other => return Err(cfg(format!("invalid 'sink.delivery-guarantee' = '{other}'; valid: none, at-least-once, exactly-once"))),
        }
    }
    if let Some(p) = o.get("sink.partitioner") {
        if !matches!(p, "default" | "fixed" | "round-robin") {
            return Err(cfg(format!(
                "invalid 'sink.partitioner' = '{p}'; valid: default, fixed, round-robin"
            )));
        }
    }
    let _ = layout;
    Ok(())
}

/// Which columns travel in the key and which in the value, and their formats.
pub(crate) struct Layout {
    pub value_format: RecordFormat,
    pub key_format: Option<RecordFormat>,
    /// Physical column indices in the key, in key order.
    pub key_columns: Vec<usize>,
    /// Physical column indices in the value, in value order.
    pub value_columns: Vec<usize>,
    /// Schemas as the formats see them (key columns without `key.fields-prefix`).
    pub key_schema: arrow::datatypes::SchemaRef,
    pub value_schema: arrow::datatypes::SchemaRef,
}

impl Layout {
    pub fn new(table: &TableDef, o: &Options) -> Result<Self> {
        let cfg = |e: String| ConnectorError::config(&table.name, e);
        let format_key = if o.get("value.format").is_some() {
            "value.format"
        } else {
            "format"
        };
        if o.get(format_key).is_none() {
            return Err(cfg(format!(
                "connector 'kafka' requires option 'format' (or 'value.format'); valid formats: {}",
                RECORD_FORMATS.join(", ")
            )));
        }
        let fmt = |key: &str| RecordFormat::from_options(o, key).map_err(|e| cfg(e.to_string()));
        // The registry subjects avro-confluent writes under by default (one topic only).
        let topic = o.get("topic").filter(|t| !t.contains(';'));
        let mut value_format = fmt(format_key)?;
        if let Some(topic) = topic {
            value_format.set_default_subject(format!("{topic}-value"));
        }
        let schema = table.physical_schema();
        let prefix = o.get("key.fields-prefix").unwrap_or("");
        let key_names: Vec<&str> = o
            .get("key.fields")
            .map(|k| {
                k.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let key_format = match (o.get("key.format"), key_names.is_empty()) {
            (Some(k), false) if flowline_formats::ChangelogFormat::is_changelog(k) => {
                return Err(cfg(format!(
                    "'key.format' must be an insert-only format (json, csv, raw), not the changelog format '{k}'"
                )))
            }
            (Some(_), false) => {
                let mut f = fmt("key.format")?;
                if let Some(topic) = topic {
                    f.set_default_subject(format!("{topic}-key"));
                }
                Some(f)
            }
            (Some(_), true) => {
                return Err(cfg(
                    "'key.format' needs 'key.fields': the columns the key carries".into(),
                ))
            }
            (None, false) => return Err(cfg("'key.fields' needs 'key.format'".into())),
            (None, true) => None,
        };
        let mut key_columns = Vec::new();
        for name in &key_names {
            let Some(i) = schema.fields().iter().position(|f| f.name() == name) else {
                return Err(cfg(format!(
                    "'key.fields' names '{name}', which is not a physical column"
                )));
            };
            if !name.starts_with(prefix) {
                return Err(cfg(format!(
                    "key column '{name}' does not start with 'key.fields-prefix' '{prefix}'"
                )));
            }
            key_columns.push(i);
        }
        let except_key = match o
            .get("value.fields-include")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("ALL") => false,
            Some("EXCEPT_KEY") => true,
            Some(other) => {
                return Err(cfg(format!(
                    "invalid 'value.fields-include' = '{other}'; valid: ALL, EXCEPT_KEY"
                )))
            }
        };
        if except_key && value_format.is_changelog() {
            return Err(cfg(format!(
                "'value.format' = '{}' carries whole rows with their change kind: use 'value.fields-include' = 'ALL' \
                 (the key, if any, repeats columns of the value)",
                value_format.name()
            )));
        }
        if !prefix.is_empty() && !except_key {
            return Err(cfg(
                "'key.fields-prefix' needs 'value.fields-include' = 'EXCEPT_KEY' (as in Flink)"
                    .into(),
            ));
        }
        let value_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !except_key || !key_columns.contains(i))
            .collect();
        // A PRIMARY KEY implies NOT NULL (Flink): Avro writes and reads such a column without
        // a null branch. (Other formats keep it nullable: an upsert tombstone's value has none.)
        let avro = |f: Option<&RecordFormat>| f.is_some_and(|f| matches!(f, RecordFormat::Avro(_)));
        let (key_avro, value_avro) = (avro(key_format.as_ref()), avro(Some(&value_format)));
        let project = |cols: &[usize], strip: &str, pk_not_null: bool| {
            let fields: Vec<arrow::datatypes::Field> = cols
                .iter()
                .map(|i| {
                    let f = schema.field(*i);
                    let pk = pk_not_null && table.primary_key.iter().any(|k| k == f.name());
                    f.clone()
                        .with_name(f.name().strip_prefix(strip).unwrap_or(f.name()))
                        .with_nullable(f.is_nullable() && !pk)
                })
                .collect();
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields))
        };
        let layout = Self {
            key_schema: project(&key_columns, prefix, key_avro),
            value_schema: project(&value_columns, "", value_avro),
            value_format,
            key_format,
            key_columns,
            value_columns,
        };
        layout
            .value_format
            .check_schema(&layout.value_schema)
            .map_err(|e| cfg(format!("value: {e}")))?;
        if let Some(k) = &layout.key_format {
            k.check_schema(&layout.key_schema)
                .map_err(|e| cfg(format!("key: {e}")))?;
        }
        Ok(layout)
    }
}

/// The client configuration from `properties.*`. Java-client keys that librdkafka spells
/// differently are translated; Java-only ones with no meaning here are dropped.
pub(crate) fn client_config(o: &Options) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    for (k, v) in o.map() {
        let Some(key) = k.strip_prefix("properties.") else {
            continue;
        };
        let key = match key {
            "max.request.size" => "message.max.bytes",
            "key.deserializer"
            | "value.deserializer"
            | "key.serializer"
            | "value.serializer"
            | "max.poll.records"
            | "partition.discovery.interval.ms" => continue,
            k => k,
        };
        c.set(key, v);
    }
    c
}

/// `'partition:0,offset:42;partition:1,offset:300'` → [(0, 42), (1, 300)].
pub(crate) fn parse_specific_offsets(
    table: &str,
    key: &str,
    text: &str,
) -> Result<Vec<(i32, i64)>> {
    let bad = || {
        ConnectorError::config(table, format!("invalid '{key}' = '{text}': expected 'partition:0,offset:42;partition:1,offset:300'"))
    };
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (p, off) = part.split_once(',').ok_or_else(bad)?;
        let p = p
            .trim()
            .strip_prefix("partition:")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)?;
        let off = off
            .trim()
            .strip_prefix("offset:")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)?;
        out.push((p, off));
    }
    Ok(out)
}

/// A Kafka client error with what to check.
pub(crate) fn kafka_error(
    table: &str,
    what: &str,
    e: rdkafka::error::KafkaError,
) -> ConnectorError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    let hint = match code {
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => "; the topic does not exist (create it, or enable auto-creation on the broker)",
        Some(C::TopicAuthorizationFailed) | Some(C::GroupAuthorizationFailed) | Some(C::ClusterAuthorizationFailed) => {
            "; the broker refused: check the principal's ACLs and 'properties.sasl.*' / 'properties.security.protocol'"
        }
        Some(C::MessageSizeTooLarge) | Some(C::InvalidMessageSize) => {
            "; a record is larger than the broker or topic allows (max.message.bytes): raise it, or 'properties.message.max.bytes' on the client"
        }
        Some(C::ProducerFenced) | Some(C::InvalidProducerEpoch) | Some(C::Fenced) => {
            "; another instance of this job (same table, subtask and 'sink.transactional-id-prefix') \
             has taken over its transactional id, so this one stops without committing: \
             a zombie of a restarted job is fenced this way. Give concurrently running jobs different prefixes"
        }
        Some(C::AllBrokersDown) | Some(C::BrokerTransportFailure) | Some(C::OperationTimedOut) | Some(C::MessageTimedOut) => {
            "; is 'properties.bootstrap.servers' right and the broker reachable?"
        }
        _ => "",
    };
    let message = format!("kafka: {what}: {e}{hint}");
    match code {
        // The user's to fix: the topic, the ACLs, the size limits.
        Some(C::UnknownTopicOrPartition)
        | Some(C::UnknownTopic)
        | Some(C::TopicAuthorizationFailed)
        | Some(C::GroupAuthorizationFailed)
        | Some(C::ClusterAuthorizationFailed)
        | Some(C::MessageSizeTooLarge)
        | Some(C::InvalidMessageSize) => ConnectorError::config(table, message),
        // The broker is unreachable or slow: running again may pass.
        Some(C::AllBrokersDown)
        | Some(C::BrokerTransportFailure)
        | Some(C::OperationTimedOut)
        | Some(C::MessageTimedOut)
        | Some(C::RequestTimedOut)
        | Some(C::NetworkException) => ConnectorError::external(table, message, true),
        _ => ConnectorError::external(table, message, false),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kafka_errors_say_whose_fault_they_are() {
        use flowline_common::fault::Fault;
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode as C;
        let fault =
            |code| kafka_error("t", "producing", KafkaError::MessageProduction(code)).fault();
        assert_eq!(
            fault(C::AllBrokersDown),
            Fault::External { retryable: true }
        );
        assert_eq!(
            fault(C::MessageTimedOut),
            Fault::External { retryable: true }
        );
        assert_eq!(fault(C::TopicAuthorizationFailed), Fault::User);
        assert_eq!(fault(C::UnknownTopicOrPartition), Fault::User);
        assert_eq!(
            fault(C::ProducerFenced),
            Fault::External { retryable: false }
        );
    }

    use super::*;

    #[test]
    fn specific_offsets_parse_and_errors_show_the_syntax() {
        assert_eq!(
            parse_specific_offsets("t", "k", "partition:0,offset:42; partition:1,offset:300")
                .unwrap(),
            vec![(0, 42), (1, 300)]
        );
        let e = parse_specific_offsets("t", "k", "0:42")
            .unwrap_err()
            .to_string();
        assert!(e.contains("partition:0,offset:42"), "{e}");
    }
}
