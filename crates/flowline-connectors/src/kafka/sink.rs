//! The Kafka sink: one record per row.
//!
//! - `none`: records are sent as they come.
//! - `at-least-once`: every record sent before a barrier is acknowledged before the checkpoint
//!   can complete.
//! - `exactly-once`: a checkpoint's records are held (in memory and in the checkpoint) and
//!   written in one Kafka transaction once the checkpoint is complete. The transaction also
//!   commits the checkpoint id as the offset of a marker group (`<prefix>-<table>-<subtask>`),
//!   atomically with the records; after a crash, a restore reads the marker to know whether the
//!   restored checkpoint's records were committed, and writes them again only if not. The
//!   transactional id is stable per subtask, so `init_transactions` fences a zombie and aborts
//!   the transaction it left open. (librdkafka cannot resume another producer's transaction as
//!   Flink's Java client does, hence holding the records until the checkpoint is complete.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use flowline_common::{Options, RowKind};
use flowline_formats::{RecordBuffer, RecordEncoder};
use flowline_sql::TableDef;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{client_config, kafka_error, Layout};
use crate::{ConnectorError, Result, Sink, TaskContext};

/// How long a flush (barrier, end of input) may wait for the broker's acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of records one exactly-once subtask may hold for the checkpoints not yet complete.
const EXACTLY_ONCE_HELD_MAX: usize = 256 << 20;

pub fn create_sink(table: &TableDef, o: &Options, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
    create(table, o, ctx, false)
}

/// A Kafka sink; `upsert` writes a changelog as upserts and tombstones keyed by the key columns.
pub(crate) fn create(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    upsert: bool,
) -> Result<Box<dyn Sink>> {
    let layout = Layout::new(table, o)?;
    let name = table.name.clone();
    let topic = o
        .get("topic")
        .filter(|t| !t.contains(';'))
        .ok_or_else(|| ConnectorError::config(&name, "a Kafka sink needs one 'topic'"))?
        .to_string();
    let guarantee = o
        .get("sink.delivery-guarantee")
        .unwrap_or("at-least-once")
        .to_string();
    let mut config = client_config(o);
    let transactional = (guarantee == "exactly-once").then(|| {
        let prefix = o.get("sink.transactional-id-prefix").unwrap_or("flowline");
        format!("{prefix}-{name}-{}", ctx.subtask)
    });
    if let Some(id) = &transactional {
        config.set("transactional.id", id);
    }
    if guarantee == "at-least-once" && o.get("properties.enable.idempotence").is_none() {
        // Retries without reordering or duplicates from the client itself.
        config.set("enable.idempotence", "true");
    }
    let errors = Arc::new(Mutex::new(None));
    let producer: ThreadedProducer<Delivery> = config
        .create_with_context(Delivery {
            first_error: errors.clone(),
        })
        .map_err(|e| kafka_error(&name, "cannot create the producer", e))?;
    let exactly_once = match &transactional {
        Some(id) => {
            // Fences an earlier producer with this id and aborts what it left open.
            producer.init_transactions(FLUSH_TIMEOUT).map_err(|e| {
                kafka_error(&name, &format!("cannot start transactions for '{id}'"), e)
            })?;
            let mut mc = client_config(o);
            mc.set("group.id", id).set("enable.auto.commit", "false");
            let marker: BaseConsumer = mc
                .create()
                .map_err(|e| kafka_error(&name, "cannot create the marker client", e))?;
            Some(ExactlyOnce {
                marker,
                current: Held::default(),
                staged: Vec::new(),
            })
        }
        None => None,
    };
    let partitions = match o.get("sink.partitioner") {
        Some("fixed") => {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(15))
                .map_err(|e| {
                    kafka_error(
                        &name,
                        &format!("cannot read metadata of topic '{topic}'"),
                        e,
                    )
                })?;
            let n = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(ConnectorError::config(
                    &name,
                    format!("kafka: topic '{topic}' does not exist or has no partitions"),
                ));
            }
            Some(n as i32)
        }
        _ => None,
    };
    let upsert_keys = if upsert {
        let fields = layout
            .key_schema
            .fields()
            .iter()
            .map(|f| arrow::row::SortField::new(f.data_type().clone()))
            .collect();
        Some(
            arrow::row::RowConverter::new(fields)
                .map_err(|e| ConnectorError::config(&name, e.to_string()))?,
        )
    } else {
        None
    };
    let width = table.physical_schema().fields().len();
    let metadata_column = |key: &str| {
        table
            .persisted_metadata_columns()
            .position(|(_, _, k)| k == key)
            .map(|i| width + i)
    };
    let enc =
        |f, s| RecordEncoder::new(f, s).map_err(|e| ConnectorError::config(&name, e.to_string()));
    let value = enc(&layout.value_format, &layout.value_schema)?;
    let key = match &layout.key_format {
        Some(f) => Some(enc(f, &layout.key_schema)?),
        None => None,
    };
    Ok(Box::new(KafkaSink {
        table: name,
        topic,
        producer,
        errors,
        value,
        key,
        layout,
        fixed_partition: partitions.map(|n| ctx.subtask as i32 % n),
        flush_at_barrier: guarantee != "none",
        exactly_once,
        value_buf: RecordBuffer::default(),
        key_buf: RecordBuffer::default(),
        upsert_keys,
        timestamp_column: metadata_column("timestamp"),
        headers_column: metadata_column("headers"),
    }))
}

/// Keeps the first failed delivery; the sink fails with it at its next call.
struct Delivery {
    first_error: Arc<Mutex<Option<KafkaError>>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut first = self.first_error.lock().expect("delivery error lock");
            first.get_or_insert_with(|| e.clone());
        }
    }
}

struct KafkaSink {
    table: String,
    topic: String,
    producer: ThreadedProducer<Delivery>,
    errors: Arc<Mutex<Option<KafkaError>>>,
    value: RecordEncoder,
    key: Option<RecordEncoder>,
    layout: Layout,
    fixed_partition: Option<i32>,
    flush_at_barrier: bool,
    value_buf: RecordBuffer,
    key_buf: RecordBuffer,
    exactly_once: Option<ExactlyOnce>,
    /// upsert-kafka: the key columns in row format (to pair a `-U` with its `+U`); `-D` rows
    /// become tombstones.
    upsert_keys: Option<arrow::row::RowConverter>,
    /// Persisted METADATA columns: the record's timestamp and headers.
    timestamp_column: Option<usize>,
    headers_column: Option<usize>,
}

/// A Kafka header: its key and value (None: a header without a value).
type Header<'a> = (&'a str, Option<&'a [u8]>);

/// Row `i`'s headers: the entries of a MAP<STRING, BYTES> (a NULL value is a header without
/// a value).
fn header_pairs(
    map: &arrow::array::MapArray,
    i: usize,
) -> std::result::Result<Vec<Header<'_>>, String> {
    let range = map.value_offsets()[i] as usize..map.value_offsets()[i + 1] as usize;
    let (Some(keys), Some(values)) = (
        map.keys().as_string_opt::<i32>(),
        map.values().as_binary_opt::<i32>(),
    ) else {
        return Err(format!(
            "metadata 'headers' must be a MAP<STRING, BYTES>, not {}",
            map.data_type()
        ));
    };
    Ok(range
        .map(|j| (keys.value(j), values.is_valid(j).then(|| values.value(j))))
        .collect())
}

/// Records held for one checkpoint: `(partition or -1, key, value, timestamp, headers)` encoded
/// back to back.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    records: usize,
}

/// One record to write: where, what, and its metadata.
struct Record<'a> {
    /// `-1`: the partitioner decides.
    partition: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// Milliseconds since the epoch; `None`: the producer's clock.
    timestamp: Option<i64>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

fn push_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

impl Held {
    fn push(&mut self, r: &Record<'_>) {
        let out = &mut self.bytes;
        out.extend_from_slice(&r.partition.to_le_bytes());
        push_bytes(out, r.key);
        push_bytes(out, r.value);
        out.extend_from_slice(&r.timestamp.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (k, v) in &r.headers {
            push_bytes(out, Some(k.as_bytes()));
            push_bytes(out, *v);
        }
        self.records += 1;
    }

    /// The records back; `None` if the bytes are malformed.
    fn records(bytes: &[u8]) -> Option<Vec<Record<'_>>> {
        let mut out = Vec::new();
        let mut at = 0;
        let take = |at: &mut usize, n: usize| {
            let b = bytes.get(*at..*at + n)?;
            *at += n;
            Some(b)
        };
        let u32_at = |at: &mut usize| {
            take(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let part = |at: &mut usize| -> Option<Option<&[u8]>> {
            match u32_at(at)? {
                u32::MAX => Some(None),
                n => take(at, n as usize).map(Some),
            }
        };
        while at < bytes.len() {
            let partition = u32_at(&mut at)? as i32;
            let key = part(&mut at)?;
            let value = part(&mut at)?;
            let ts = i64::from_le_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"));
            let n = u32_at(&mut at)?;
            let mut headers = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                let k = std::str::from_utf8(part(&mut at)??).ok()?;
                headers.push((k, part(&mut at)?));
            }
            out.push(Record {
                partition,
                key,
                value,
                timestamp: (ts != i64::MIN).then_some(ts),
                headers,
            });
        }
        Some(out)
    }
}

struct ExactlyOnce {
    /// Reads and writes the marker group's offset.
    marker: BaseConsumer,
    current: Held,
    /// Pre-committed checkpoints' records, waiting for their checkpoint to complete.
    staged: Vec<(u64, Vec<u8>)>,
}

/// The committables of an exactly-once sink: `(checkpoint, records)` per staged checkpoint.
fn encode_staged(staged: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, bytes) in staged {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn decode_staged(mut bytes: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let id = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let n = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
        out.push((id, bytes.get(16..16 + n)?.to_vec()));
        bytes = &bytes[16 + n..];
    }
    Some(out)
}

impl KafkaSink {
    /// The marker partition: the checkpoint id committed with each transaction is stored as the
    /// marker group's offset of the sink topic's partition 0.
    fn marker_tpl(&self, id: Option<u64>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        let off = id.map_or(Offset::Invalid, |i| Offset::Offset(i as i64));
        let _ = tpl.add_partition_offset(&self.topic, 0, off);
        tpl
    }

    /// The last checkpoint whose records were committed, from the marker group.
    fn committed_marker(&self) -> Result<u64> {
        let eo = self.exactly_once.as_ref().expect("exactly-once sink");
        let tpl = eo
            .marker
            .committed_offsets(self.marker_tpl(None), FLUSH_TIMEOUT)
            .map_err(|e| kafka_error(&self.table, "cannot read the commit marker", e))?;
        Ok(tpl
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(n) if n >= 0 => Some(n as u64),
                _ => None,
            })
            .unwrap_or(0))
    }

    /// Writes held records in one transaction that also commits `id` as the marker.
    fn write_transaction(&self, id: u64, bytes: &[u8]) -> Result<()> {
        let eo = self.exactly_once.as_ref().expect("exactly-once sink");
        let records = Held::records(bytes).ok_or_else(|| {
            ConnectorError::config(&self.table, "the checkpointed Kafka records are malformed")
        })?;
        let tx = |what: &str, e| self.error(&format!("transaction for checkpoint {id}: {what}"), e);
        self.producer
            .begin_transaction()
            .map_err(|e| tx("begin", e))?;
        for r in &records {
            self.send(self.base_record(r))?;
        }
        let group = eo.marker.group_metadata().ok_or_else(|| {
            ConnectorError::config(
                &self.table,
                "kafka: no group metadata for the commit marker",
            )
        })?;
        self.producer
            .send_offsets_to_transaction(&self.marker_tpl(Some(id)), &group, FLUSH_TIMEOUT)
            .map_err(|e| tx("commit marker", e))?;
        flowline_common::failpoint::hit("kafka.before-commit");
        self.producer
            .commit_transaction(FLUSH_TIMEOUT)
            .map_err(|e| tx("commit", e))?;
        self.check()
    }

    fn base_record<'a>(&'a self, r: &Record<'a>) -> BaseRecord<'a, [u8], [u8]> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
        if let Some(v) = r.value {
            record = record.payload(v);
        }
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if r.partition >= 0 {
            record = record.partition(r.partition);
        }
        if let Some(t) = r.timestamp {
            record = record.timestamp(t);
        }
        if !r.headers.is_empty() {
            let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                h = h.insert(rdkafka::message::Header { key, value: *value });
            }
            record = record.headers(h);
        }
        record
    }

    fn send<'a>(&self, mut record: BaseRecord<'a, [u8], [u8]>) -> Result<()> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The client's queue is full: wait for deliveries (backpressure).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                    self.check()?;
                }
                Err((e, _)) => {
                    return Err(self.error(&format!("cannot write to topic '{}'", self.topic), e))
                }
            }
        }
    }

    fn check(&self) -> Result<()> {
        match self.errors.lock().expect("delivery error lock").take() {
            Some(e) => Err(self.error(
                &format!("a record could not be written to topic '{}'", self.topic),
                e,
            )),
            None => Ok(()),
        }
    }

    fn flush(&self) -> Result<()> {
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| self.error("flush", e))?;
        self.check()
    }

    fn error(&self, what: &str, e: KafkaError) -> ConnectorError {
        producer_error(&self.table, what, e, self.producer.client())
    }
}

/// A producer's `e` as the user's error. Once the client has hit a fatal error (a
/// transactional producer fenced by a newer instance, say), calls fail with codes that hide it:
/// the bare `Fatal`, or `State` when the fatal error arrived while a transaction call was under
/// way (its request is then refused as out of state). The cause is the client's, so whenever the
/// client has one it is what the error names.
fn producer_error<C: ClientContext>(
    table: &str,
    what: &str,
    e: KafkaError,
    client: &rdkafka::client::Client<C>,
) -> ConnectorError {
    match client.fatal_error() {
        Some((code, reason)) => kafka_error(
            table,
            &format!("{what}: {reason}"),
            KafkaError::MessageProduction(code),
        ),
        None => kafka_error(table, what, e),
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.check()?;
        // Upserts: -D rows are tombstones. A -U row is dropped when the batch also writes its key
        // (its +U follows); otherwise its row is gone (a filter dropped the new version), and it
        // is a tombstone too.
        let mut deletes: Vec<bool> = Vec::new();
        let err = |e: arrow::error::ArrowError| ConnectorError::config(&self.table, e.to_string());
        let batch = match (
            flowline_common::changelog::row_kinds(&batch),
            &self.upsert_keys,
        ) {
            (Some(kinds), Some(conv)) => {
                let kinds: Vec<RowKind> = kinds
                    .values()
                    .iter()
                    .map(|k| RowKind::from_i8(*k).unwrap_or(RowKind::Insert))
                    .collect();
                let keys = batch.project(&self.layout.key_columns).map_err(err)?;
                let rows = conv.convert_columns(keys.columns()).map_err(err)?;
                let written: std::collections::HashSet<&[u8]> = kinds
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.is_addition())
                    .map(|(i, _)| rows.row(i).data())
                    .collect();
                let keep: Vec<bool> = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        *k != RowKind::UpdateBefore || !written.contains(rows.row(i).data())
                    })
                    .collect();
                deletes = kinds
                    .iter()
                    .zip(&keep)
                    .filter(|(_, keep)| **keep)
                    .map(|(k, _)| !k.is_addition())
                    .collect();
                let kept = arrow::compute::filter_record_batch(
                    &batch,
                    &arrow::array::BooleanArray::from(keep),
                )
                .map_err(err)?;
                flowline_common::changelog::strip_row_kind(&kept)
            }
            (Some(_), None) if self.layout.value_format.is_changelog() => batch,
            (Some(_), None) => {
                return Err(ConnectorError::config(
                    &self.table,
                    "internal: the kafka sink received an updating stream",
                ))
            }
            (None, _) => batch,
        };
        let project = |cols: &[usize]| {
            batch
                .project(cols)
                .map_err(|e| ConnectorError::config(&self.table, e.to_string()))
        };
        self.value_buf.clear();
        self.key_buf.clear();
        let values = if self.upsert_keys.is_none()
            && flowline_common::changelog::row_kinds(&batch).is_some()
        {
            // A changelog value format writes each row's change kind: the batch's last column.
            let mut cols = self.layout.value_columns.clone();
            cols.push(batch.num_columns() - 1);
            project(&cols)?
        } else {
            project(&self.layout.value_columns)?
        };
        self.value
            .encode(&values, &mut self.value_buf)
            .map_err(|e| ConnectorError::config(&self.table, e.to_string()))?;
        if let Some(k) = &mut self.key {
            let keys = project(&self.layout.key_columns)?;
            k.encode(&keys, &mut self.key_buf)
                .map_err(|e| ConnectorError::config(&self.table, e.to_string()))?;
        }
        let mut values: Vec<_> = self.value_buf.ranges().collect();
        for (v, delete) in values.iter_mut().zip(&deletes) {
            if *delete {
                *v = None;
            }
        }
        let keys: Vec<_> = if self.key.is_some() {
            self.key_buf.ranges().collect()
        } else {
            Vec::new()
        };
        // Persisted metadata columns follow the physical ones.
        let timestamps = match self.timestamp_column {
            Some(c) => Some(crate::millis_of(batch.column(c)).map_err(|e| {
                ConnectorError::config(&self.table, format!("metadata 'timestamp': {e}"))
            })?),
            None => None,
        };
        let headers = self
            .headers_column
            .map(|c| {
                batch.column(c).as_map_opt().cloned().ok_or_else(|| {
                    ConnectorError::config(
                        &self.table,
                        "metadata 'headers' must be a MAP<STRING, BYTES>",
                    )
                })
            })
            .transpose()?;
        let (value_bytes, key_bytes) = (self.value_buf.bytes(), self.key_buf.bytes());
        let record = |i: usize, v: &Option<(usize, usize)>| -> Result<Record<'_>> {
            Ok(Record {
                partition: self.fixed_partition.unwrap_or(-1),
                key: keys
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|(s, e)| &key_bytes[s..e]),
                value: v.map(|(s, e)| &value_bytes[s..e]),
                timestamp: timestamps
                    .as_ref()
                    .and_then(|t| t.is_valid(i).then(|| t.value(i))),
                headers: match &headers {
                    Some(h) if h.is_valid(i) => {
                        header_pairs(h, i).map_err(|e| ConnectorError::config(&self.table, e))?
                    }
                    _ => Vec::new(),
                },
            })
        };
        if let Some(eo) = &mut self.exactly_once {
            let records = values
                .iter()
                .enumerate()
                .map(|(i, v)| record(i, v))
                .collect::<Result<Vec<_>>>()?;
            for r in &records {
                eo.current.push(r);
            }
            let held =
                eo.current.bytes.len() + eo.staged.iter().map(|(_, b)| b.len()).sum::<usize>();
            if held > EXACTLY_ONCE_HELD_MAX {
                return Err(ConnectorError::config(
                    &self.table,
                    format!("kafka exactly-once: more than {} MB of records wait for a checkpoint; checkpoint more often", EXACTLY_ONCE_HELD_MAX >> 20),
                ));
            }
            return Ok(());
        }
        for (i, v) in values.iter().enumerate() {
            let r = record(i, v)?;
            self.send(self.base_record(&r))?;
        }
        Ok(())
    }

    fn exactly_once(&self) -> bool {
        self.exactly_once.is_some()
    }

    fn pre_commit(&mut self, id: u64) -> Result<Vec<u8>> {
        if let Some(eo) = self.exactly_once.as_mut() {
            let held = std::mem::take(&mut eo.current);
            if held.records > 0 {
                eo.staged.push((id, held.bytes));
            }
            return Ok(encode_staged(&eo.staged));
        }
        // At-least-once: every record before the barrier is acknowledged before the checkpoint
        // can complete; after a restore they may be written again.
        if self.flush_at_barrier {
            self.flush()?;
        }
        Ok(Vec::new())
    }

    fn commit(&mut self, id: u64) -> Result<()> {
        let Some(eo) = self.exactly_once.as_mut() else {
            return Ok(());
        };
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut eo.staged)
            .into_iter()
            .partition(|(e, _)| *e <= id);
        eo.staged = later;
        for (epoch, bytes) in due {
            self.write_transaction(epoch, &bytes)?;
        }
        Ok(())
    }

    fn restore(&mut self, _id: u64, committables: &[u8]) -> Result<()> {
        if self.exactly_once.is_none() || committables.is_empty() {
            return Ok(());
        }
        let staged = decode_staged(committables).ok_or_else(|| {
            ConnectorError::config(&self.table, "the checkpointed Kafka records are malformed")
        })?;
        // Written already if the marker says so (the crash came after the commit).
        let committed = self.committed_marker()?;
        for (epoch, bytes) in staged.into_iter().filter(|(e, _)| *e > committed) {
            self.write_transaction(epoch, &bytes)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(eo) = self.exactly_once.as_mut() {
            // Without checkpoints: the whole input in one transaction at the end.
            let held = std::mem::take(&mut eo.current);
            let staged = std::mem::take(&mut eo.staged);
            let id = self.committed_marker()? + 1;
            for (_, bytes) in staged {
                self.write_transaction(id, &bytes)?;
            }
            if held.records > 0 {
                self.write_transaction(id, &held.bytes)?;
            }
            return Ok(());
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zombie producer fenced by a newer instance with its transactional id: librdkafka fails
    /// its later calls with the bare `Fatal` code, and the error the user sees must still say it
    /// was taken over (the broker's fencing answer is injected: librdkafka's mock broker does
    /// not fence by itself).
    #[test]
    fn a_fenced_producer_says_it_was_taken_over() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::RDKafkaApiKey;
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let zombie: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("transactional.id", "flowline-out-0")
            .create()
            .expect("producer");
        let timeout = Duration::from_secs(10);
        zombie.init_transactions(timeout).expect("init");
        zombie.begin_transaction().expect("begin");
        let record = || BaseRecord::<[u8], [u8]>::to("t").payload(&b"x"[..]);
        zombie.send(record()).map_err(|(e, _)| e).expect("send");
        cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
        );
        let commit = zombie.commit_transaction(timeout).expect_err("fenced");
        let message = producer_error("out", "commit", commit, zombie.client()).to_string();
        assert!(
            message.contains("taken over its transactional id"),
            "{message}"
        );
        // Every call after that fails with the bare `Fatal` code (what the zombie of the Kafka
        // test met when its next checkpoint's records were sent).
        let Err((error, _)) = zombie.send(record()) else {
            panic!("the fenced producer accepted a record");
        };
        assert_eq!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fatal));
        let message = producer_error("out", "cannot write", error, zombie.client()).to_string();
        assert!(
            message.contains("taken over its transactional id"),
            "{message}"
        );
        // A transaction call under way when the fencing arrived fails out of state (what the
        // zombie of the Kafka test met in CI sending its commit marker): the cause is named too.
        let state = KafkaError::MessageProduction(RDKafkaErrorCode::State);
        let message = producer_error("out", "commit marker", state, zombie.client()).to_string();
        assert!(
            message.contains("taken over its transactional id"),
            "{message}"
        );
    }
}
