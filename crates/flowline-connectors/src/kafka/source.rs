//! The Kafka source: assigned partitions, offsets in checkpoints, bounded reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use flowline_common::Options;
use flowline_formats::RecordDecoder;
use flowline_sql::TableDef;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::consumer::{consumer, discovery_interval};
use super::offsets::*;
use super::records::*;
use super::{kafka_error, parse_specific_offsets, Layout};
use crate::{ConnectorError, Poll, Result, Source, TaskContext};

/// How long metadata and offset lookups may take before the source gives up.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Records per batch, and bytes of payload, before a batch is decoded and sent.
const BATCH_RECORDS_MAX: usize = 8192;
const BATCH_BYTES_MAX: usize = 4 << 20;

pub fn create_source(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
) -> Result<Box<dyn Source>> {
    create(table, o, ctx, projection, false)
}

/// A Kafka source; `upsert` reads records as upserts keyed by the key columns (a null value is a
/// delete) and adds the change-kind column (`+U`, `-D`) after the projected columns.
pub(crate) fn create(
    table: &TableDef,
    o: &Options,
    ctx: &TaskContext,
    projection: Option<&[usize]>,
    upsert: bool,
) -> Result<Box<dyn Source>> {
    let layout = Layout::new(table, o)?;
    if upsert && matches!(layout.value_format, flowline_formats::RecordFormat::Csv(..)) {
        return Err(ConnectorError::config(
            &table.name,
            "the upsert-kafka source cannot read 'value.format' = 'csv' yet (a csv tombstone has no row to decode); use json, raw, avro, avro-confluent or protobuf",
        ));
    }
    let name = table.name.clone();
    let bounded_mode = o
        .get("scan.bounded.mode")
        .unwrap_or("unbounded")
        .to_string();
    let consumer = consumer(&name, o, bounded_mode != "unbounded")?;

    // Every partition of the topics; this subtask takes those it owns.
    let all = partitions(&consumer, &name, o)?;
    let mine: Vec<Tp> = all
        .into_iter()
        .filter(|tp| owner(tp, ctx.parallelism) == ctx.subtask)
        .collect();
    let discovery = discovery_interval(&name, o)?.filter(|_| bounded_mode == "unbounded");

    let stops = match bounded_mode.as_str() {
        "unbounded" => None,
        mode => {
            let found = stop_offsets(&consumer, &name, o, mode, &mine)?;
            Some(
                mine.iter()
                    .map(|tp| found.get(tp).copied().unwrap_or(i64::MAX))
                    .collect(),
            )
        }
    };
    // A changelog record may hold no row or several (an update's old and new rows): per-record
    // columns (metadata) cannot be lined up with its rows, and the value holds every column.
    let changelog = layout.value_format.is_changelog() && !upsert;
    if changelog && table.metadata_columns().next().is_some() {
        return Err(ConnectorError::config(
            &name,
            format!(
                "METADATA columns are not supported with 'value.format' = '{}' yet (a record may hold several rows)",
                layout.value_format.name()
            ),
        ));
    }
    let value = RecordDecoder::new(&layout.value_format, layout.value_schema.clone())
        .map_err(|e| ConnectorError::config(&name, e.to_string()))?;
    let key = match &layout.key_format {
        Some(f) if !changelog => Some(
            RecordDecoder::new(f, layout.key_schema.clone())
                .map_err(|e| ConnectorError::config(&name, e.to_string()))?,
        ),
        _ => None,
    };
    let width = table.physical_schema().fields().len();
    let source_schema = table.source_schema();
    let metadata: Vec<(String, arrow::datatypes::DataType)> = table
        .metadata_columns()
        .map(|(_, t, key)| (key.to_string(), t.clone()))
        .collect();
    let projection = projection
        .map(<[usize]>::to_vec)
        .unwrap_or_else(|| (0..source_schema.fields().len()).collect());
    let mut schema = source_schema
        .project(&projection)
        .map_err(|e| ConnectorError::config(&name, e.to_string()))?;
    if upsert || changelog {
        let mut fields: Vec<arrow::datatypes::Field> =
            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(flowline_common::changelog::row_kind_field());
        schema = arrow::datatypes::Schema::new(fields);
    }
    let schema = Arc::new(schema);
    let wants_meta = projection.iter().any(|i| *i >= width);
    let want_headers = projection
        .iter()
        .any(|i| *i >= width && metadata[*i - width].0 == "headers");
    Ok(Box::new(KafkaSource {
        table: name,
        options: o.clone(),
        consumer,
        positions: vec![None; mine.len()],
        done: vec![false; mine.len()],
        remaining: mine.len(),
        partitions: mine,
        started: false,
        stops,
        layout,
        value,
        key,
        buf: Buffered {
            meta: wants_meta.then(Vec::new),
            kinds: upsert.then(Vec::new),
            ..Default::default()
        },
        upsert,
        projection,
        schema,
        width,
        metadata,
        want_headers,
        discovery: discovery.map(|d| (d, Instant::now())),
        subtask: (ctx.subtask, ctx.parallelism),
        batch_split: None,
        stash: None,
        snapshots: BTreeMap::new(),
        skipped: ctx.counter(
            "flowline_source_records_skipped_total",
            "records dropped as undecodable (ignore-parse-errors)",
        ),
        skipped_seen: 0,
    }))
}

struct KafkaSource {
    table: String,
    /// upsert-kafka: records are upserts and tombstones (`Buffered::kinds`).
    upsert: bool,
    options: Options,
    consumer: BaseConsumer,
    /// The assigned partitions; per-partition state below is indexed like this list.
    partitions: Vec<Tp>,
    /// Next offset to read per partition (once read or restored): what a checkpoint records.
    positions: Vec<Option<i64>>,
    started: bool,
    /// Exclusive stop offset per partition, for a bounded read.
    stops: Option<Vec<i64>>,
    /// Partitions that reached their stop offset, and how many have not.
    done: Vec<bool>,
    remaining: usize,
    layout: Layout,
    value: RecordDecoder,
    key: Option<RecordDecoder>,
    buf: Buffered,
    /// Columns to return, indices into the table's source schema (physical, then metadata).
    projection: Vec<usize>,
    schema: arrow::datatypes::SchemaRef,
    /// Physical columns; metadata columns follow.
    width: usize,
    /// Key and declared type of each metadata column.
    metadata: Vec<(String, arrow::datatypes::DataType)>,
    /// The `headers` metadata is read: records keep their headers.
    want_headers: bool,
    /// `scan.topic-partition-discovery.interval` and the last look.
    discovery: Option<(Duration, Instant)>,
    /// (this subtask, parallelism): which new partitions are ours.
    subtask: (usize, usize),
    /// The partition (index in `partitions`) of the records buffered, and of the last batch.
    batch_split: Option<usize>,
    stash: Option<Stashed>,
    /// Positions by checkpoint id, until the checkpoint completes (then committed to the group).
    snapshots: BTreeMap<u64, Vec<Option<i64>>>,
    skipped: flowline_common::Counter,
    skipped_seen: u64,
}

impl KafkaSource {
    /// Assigns the partitions: restored positions, else the startup mode's offsets.
    fn start(&mut self) -> Result<()> {
        self.started = true;
        let fresh: Vec<Tp> = self
            .partitions
            .iter()
            .zip(&self.positions)
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        let found = if fresh.is_empty() {
            BTreeMap::new()
        } else {
            self.startup_offsets(&fresh)?
        };
        let starts: Vec<Offset> = self
            .partitions
            .iter()
            .zip(&self.positions)
            .map(|(tp, p)| match p {
                Some(o) => Offset::Offset(*o),
                None => found.get(tp).copied().unwrap_or(Offset::Beginning),
            })
            .collect();
        let mut tpl = TopicPartitionList::new();
        for (tp, off) in self.partitions.iter().zip(&starts) {
            tpl.add_partition_offset(&tp.0, tp.1, *off)
                .map_err(|e| kafka_error(&self.table, "cannot assign partitions", e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_error(&self.table, "cannot assign partitions", e))?;
        // Partitions a restore found done, or already at their stop offset: nothing to fetch.
        for i in (0..self.partitions.len()).filter(|i| self.done[*i]) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.partitions[i].0, self.partitions[i].1);
            let _ = self.consumer.pause(&tpl);
        }
        for (i, off) in starts.iter().enumerate() {
            if matches!((off, self.stop_of(i)), (Offset::Offset(at), Some(stop)) if *at >= stop) {
                self.mark_done(i);
            }
        }
        Ok(())
    }

    /// Partition discovery: partitions (and, with `topic-pattern`, topics) that appeared since
    /// the last look and that this subtask owns are read from their earliest offset, as Flink
    /// reads newly discovered partitions.
    fn discover(&mut self) -> Result<()> {
        if let Some((_, last)) = self.discovery.as_mut() {
            *last = Instant::now();
        }
        let all = match partitions(&self.consumer, &self.table, &self.options) {
            Ok(all) => all,
            // Not fatal: the partitions being read are unaffected; look again next time.
            Err(_) => return Ok(()),
        };
        let (subtask, parallelism) = self.subtask;
        let new: Vec<Tp> = all
            .into_iter()
            .filter(|tp| owner(tp, parallelism) == subtask && !self.partitions.contains(tp))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &new {
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Beginning)
                .map_err(|e| kafka_error(&self.table, "cannot assign a new partition", e))?;
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_error(&self.table, "cannot assign a new partition", e))?;
        let n = new.len();
        self.partitions.extend(new);
        self.positions.extend(std::iter::repeat_n(None, n));
        self.done.extend(std::iter::repeat_n(false, n));
        self.remaining += n;
        Ok(())
    }

    fn startup_offsets(&self, tps: &[Tp]) -> Result<BTreeMap<Tp, Offset>> {
        let (o, name) = (&self.options, &self.table);
        let mode = o.get("scan.startup.mode").unwrap_or("group-offsets");
        let all = |off: Offset| {
            tps.iter()
                .map(|tp| (tp.clone(), off))
                .collect::<BTreeMap<_, _>>()
        };
        match mode {
            "earliest-offset" => Ok(all(Offset::Beginning)),
            "latest-offset" => Ok(all(Offset::End)),
            "timestamp" => {
                let ts: i64 = o.get("scan.startup.timestamp-millis").and_then(|v| v.parse().ok()).ok_or_else(|| {
                    ConnectorError::config(name, "'scan.startup.mode' = 'timestamp' needs 'scan.startup.timestamp-millis' (ms since epoch)")
                })?;
                let found = self
                    .consumer
                    .offsets_for_times(tpl_of(tps, Offset::Offset(ts)), LOOKUP_TIMEOUT)
                    .map_err(|e| kafka_error(name, "cannot look up offsets by time", e))?;
                // No record at or after the time: start at the end.
                Ok(offsets_of(&found).into_iter().map(|(tp, off)| (tp, if matches!(off, Offset::Offset(_)) { off } else { Offset::End })).collect())
            }
            "specific-offsets" => {
                let text = o.get("scan.startup.specific-offsets").ok_or_else(|| {
                    ConnectorError::config(name, "'scan.startup.mode' = 'specific-offsets' needs 'scan.startup.specific-offsets'")
                })?;
                let given: BTreeMap<i32, i64> = parse_specific_offsets(name, "scan.startup.specific-offsets", text)?.into_iter().collect();
                let (named, rest): (Vec<Tp>, Vec<Tp>) = tps.iter().cloned().partition(|tp| given.contains_key(&tp.1));
                // Partitions not named start from the group's offsets, as in Flink.
                let mut out = self.group_offsets(&rest)?;
                out.extend(named.into_iter().map(|tp| {
                    let off = given[&tp.1];
                    (tp, Offset::Offset(off))
                }));
                Ok(out)
            }
            "group-offsets" => self.group_offsets(tps),
            other => Err(ConnectorError::config(
                name,
                format!("invalid 'scan.startup.mode' = '{other}'; valid: earliest-offset, latest-offset, group-offsets, timestamp, specific-offsets"),
            )),
        }
    }

    /// The group's committed offsets; without one, `properties.auto.offset.reset` decides.
    fn group_offsets(&self, tps: &[Tp]) -> Result<BTreeMap<Tp, Offset>> {
        if tps.is_empty() {
            return Ok(BTreeMap::new());
        }
        let name = &self.table;
        let committed = self
            .consumer
            .committed_offsets(tpl_of(tps, Offset::Invalid), LOOKUP_TIMEOUT)
            .map_err(|e| kafka_error(name, "cannot read the group's committed offsets", e))?;
        let reset = self.options.get("properties.auto.offset.reset");
        let mut out = BTreeMap::new();
        for (tp, off) in offsets_of(&committed) {
            let off = match (off, reset) {
                (Offset::Offset(n), _) if n >= 0 => Offset::Offset(n),
                (_, Some("earliest" | "smallest" | "beginning")) => Offset::Beginning,
                (_, Some("latest" | "largest" | "end")) => Offset::End,
                _ => {
                    return Err(ConnectorError::config(
                        name,
                        format!(
                            "kafka: group '{}' has no committed offset for {}-{}; set 'scan.startup.mode' (e.g. 'earliest-offset') or 'properties.auto.offset.reset'",
                            self.options.get("properties.group.id").unwrap_or("(none)"),
                            tp.0,
                            tp.1
                        ),
                    ))
                }
            };
            out.insert(tp, off);
        }
        Ok(out)
    }

    fn stop_of(&self, split: usize) -> Option<i64> {
        self.stops.as_ref().map(|s| s[split])
    }

    fn all_done(&self) -> bool {
        self.stops.is_some() && self.remaining == 0
    }

    fn mark_done(&mut self, split: usize) {
        if !self.done[split] {
            let (topic, partition) = &self.partitions[split];
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, *partition);
            let _ = self.consumer.pause(&tpl);
            self.done[split] = true;
            self.remaining -= 1;
        }
    }

    /// The index of an assigned partition, without allocating: usually the batch's own.
    fn split_of(&self, topic: &str, partition: i32) -> Option<usize> {
        let is = |i: usize| self.partitions[i].1 == partition && self.partitions[i].0 == topic;
        match self.batch_split {
            Some(i) if is(i) => Some(i),
            _ => (0..self.partitions.len()).find(|i| is(*i)),
        }
    }

    /// Decodes what the buffers hold into one batch of the projected columns.
    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.buf.value.is_empty() {
            return Ok(None);
        }
        let (partitions, at) = (&self.partitions, &self.buf.at);
        let where_ = |e: &flowline_formats::RecordError| match at.get(e.index) {
            Some((split, offset)) => format!(
                "topic '{}' partition {} offset {offset}",
                partitions[*split].0, partitions[*split].1
            ),
            None => format!("record {} of the batch read", e.index),
        };
        let value = self.value.decode(&self.buf.value).map_err(|e| {
            ConnectorError::config(
                &self.table,
                format!("kafka value: {}: {}", where_(&e), e.reason),
            )
        })?;
        let skipped_records = self.value.last_skipped(&self.buf.value);
        let key = match self.key.as_mut() {
            Some(k) => k.decode(&self.buf.key).map_err(|e| {
                ConnectorError::config(
                    &self.table,
                    format!("kafka key: {}: {}", where_(&e), e.reason),
                )
            })?,
            None => None,
        };
        self.buf.value.clear();
        self.buf.key.clear();
        self.buf.at.clear();
        let skipped = self.value.skipped() + self.key.as_ref().map_or(0, |k| k.skipped());
        if skipped > self.skipped_seen {
            self.skipped.add(skipped - self.skipped_seen);
            self.skipped_seen = skipped;
        }
        let mut meta = self
            .buf
            .meta
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let Some(value) = value else {
            if let Some(k) = self.buf.kinds.as_mut() {
                k.clear();
            }
            return Ok(None);
        };
        let rows = value.num_rows();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.width + self.metadata.len()];
        if self.buf.meta.is_some() {
            // Records the value format skipped have no row.
            drop_skipped(&mut meta, &skipped_records);
            for (j, (key, data_type)) in self.metadata.iter().enumerate() {
                columns[self.width + j] = Some(self.metadata_column(key, data_type, &meta)?);
            }
        }
        for (j, i) in self.layout.value_columns.iter().enumerate() {
            columns[*i] = Some(value.column(j).clone());
        }
        if let Some(key) = key {
            if key.num_rows() != rows {
                return Err(ConnectorError::config(
                    &self.table,
                    "kafka: keys and values decoded to different row counts (a record's key or value was skipped as undecodable); \
                     ignore-parse-errors with 'key.fields' needs both to decode",
                ));
            }
            for (j, i) in self.layout.key_columns.iter().enumerate() {
                // Upserts take the key from the key: a tombstone's value has none.
                if columns[*i].is_none() || self.upsert {
                    columns[*i] = Some(key.column(j).clone());
                }
            }
        }
        let out: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|i| {
                columns.get(*i).cloned().flatten().ok_or_else(|| {
                    ConnectorError::config(&self.table, format!("internal: column {i} not decoded"))
                })
            })
            .collect::<Result<_>>()?;
        let mut out = out;
        if self.layout.value_format.is_changelog() && !self.upsert {
            // The change kind the value format decoded, after the value's columns.
            out.push(value.column(value.num_columns() - 1).clone());
        }
        if let Some(kinds) = self.buf.kinds.as_mut() {
            let mut kinds = std::mem::take(kinds);
            drop_skipped(&mut kinds, &skipped_records);
            out.push(Arc::new(arrow::array::Int8Array::from(kinds)));
        }
        Ok(Some(
            RecordBatch::try_new(self.schema.clone(), out)
                .map_err(|e| ConnectorError::config(&self.table, e.to_string()))?,
        ))
    }
}

impl Source for KafkaSource {
    fn poll(&mut self) -> Result<Poll> {
        if !self.started {
            self.start()?;
        }
        if self
            .discovery
            .is_some_and(|(every, last)| last.elapsed() >= every)
        {
            self.discover()?;
        }
        if self.partitions.is_empty() {
            // More subtasks than partitions: nothing to read, and this subtask must not hold
            // back event time.
            return Ok(if self.stops.is_some() {
                Poll::End
            } else {
                Poll::Idle(Duration::from_millis(100))
            });
        }
        let value_json = self.value.is_json();
        let key_json = self.key.as_ref().is_some_and(|k| k.is_json());
        let raw_value = !value_json
            && matches!(
                self.layout.value_format,
                flowline_formats::RecordFormat::Raw
            );
        // A batch holds one partition's records (the runtime keeps a watermark per partition):
        // a record of another partition waits for the next poll.
        self.batch_split = None;
        let shape = Shape {
            value_json,
            key_json,
            raw_value,
            has_key: self.key.is_some(),
        };
        if let Some(r) = self.stash.take() {
            self.buf.push(
                shape,
                r.payload.as_deref(),
                r.key.as_deref(),
                RecordMeta {
                    split: r.split,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    headers: r.headers,
                },
            );
            self.advance(r.split, r.offset);
        }
        while self.buf.value.len() < BATCH_RECORDS_MAX
            && self.buf.value.bytes_len() < BATCH_BYTES_MAX
        {
            if self.all_done() {
                break;
            }
            let wait = if self.buf.value.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            let msg = match self.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.on_end_of_partition(p);
                    continue;
                }
                Some(Err(e)) => return Err(kafka_error(&self.table, "cannot read", e)),
            };
            let Some(split) = self.split_of(msg.topic(), msg.partition()) else {
                continue;
            };
            let offset = msg.offset();
            if self.stop_of(split).is_some_and(|stop| offset >= stop) {
                drop(msg);
                self.mark_done(split);
                continue;
            }
            let timestamp = match msg.timestamp() {
                rdkafka::Timestamp::CreateTime(t) => Some((t, "CreateTime")),
                rdkafka::Timestamp::LogAppendTime(t) => Some((t, "LogAppendTime")),
                rdkafka::Timestamp::NotAvailable => None,
            };
            let headers = if self.want_headers {
                headers_of(&msg)
            } else {
                Vec::new()
            };
            if self.batch_split.is_some_and(|b| b != split) {
                self.stash = Some(Stashed {
                    split,
                    offset,
                    payload: msg.payload().map(<[u8]>::to_vec),
                    key: msg.key().map(<[u8]>::to_vec),
                    timestamp,
                    headers,
                });
                break;
            }
            self.buf.push(
                shape,
                msg.payload(),
                msg.key(),
                RecordMeta {
                    split,
                    offset,
                    timestamp,
                    headers,
                },
            );
            drop(msg);
            self.advance(split, offset);
        }
        if let Some(batch) = self.flush()? {
            return Ok(Poll::Batch(batch));
        }
        if self.all_done() {
            return Ok(Poll::End);
        }
        Ok(Poll::Pending(Duration::from_millis(10)))
    }

    fn split_of_last_batch(&self) -> Option<usize> {
        self.batch_split
    }

    fn splits(&self) -> usize {
        self.partitions.len()
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        let name = |i: usize| format!("{}:{}", self.partitions[i].1, self.partitions[i].0);
        let positions: BTreeMap<String, i64> = self
            .positions
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((name(i), (*o)?)))
            .collect();
        let done: Vec<String> = (0..self.partitions.len())
            .filter(|i| self.done[*i])
            .map(name)
            .collect();
        let id = self.snapshots.keys().next_back().map_or(1, |k| k + 1);
        self.snapshots.insert(id, self.positions.clone());
        Ok(
            serde_json::to_vec(&serde_json::json!({"positions": positions, "done": done}))
                .expect("JSON values serialize"),
        )
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let bad =
            || ConnectorError::config(&self.table, "the checkpointed Kafka position is malformed");
        let v: serde_json::Value = serde_json::from_slice(position).map_err(|_| bad())?;
        // "<partition>:<topic>" → the index of an assigned partition (others are not ours).
        let split = |k: &str| -> Result<Option<usize>> {
            let (p, t) = k.split_once(':').ok_or_else(bad)?;
            let p: i32 = p.parse().map_err(|_| bad())?;
            Ok(self.partitions.iter().position(|tp| tp.1 == p && tp.0 == t))
        };
        for (k, o) in v["positions"].as_object().ok_or_else(bad)? {
            if let Some(i) = split(k)? {
                self.positions[i] = Some(o.as_i64().ok_or_else(bad)?);
            }
        }
        for d in v["done"].as_array().into_iter().flatten() {
            if let Some(i) = split(d.as_str().ok_or_else(bad)?)? {
                if !self.done[i] {
                    self.done[i] = true;
                    self.remaining -= 1;
                }
            }
        }
        Ok(())
    }

    /// Each old subtask's positions name their partitions: this subtask takes those assigned
    /// to it now (restore ignores the others).
    fn restore_rescaled(&mut self, positions: &[&[u8]]) -> Result<()> {
        positions.iter().try_for_each(|p| self.restore(p))
    }

    fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        // The newest snapshot is covered by a completed checkpoint: report its offsets to the
        // group (monitoring and group-offsets startup; recovery uses the checkpoint).
        let Some((_, positions)) = self.snapshots.pop_last() else {
            return Ok(());
        };
        self.snapshots.clear();
        if positions.iter().all(Option::is_none)
            || self.options.get("properties.group.id").is_none()
        {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in self.partitions.iter().zip(&positions) {
            if let Some(o) = o {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            }
        }
        // Best effort: a failed commit only makes the group's lag look larger.
        let _ = self.consumer.commit(&tpl, CommitMode::Async);
        Ok(())
    }
}

/// A record read while the batch held another partition's.
struct Stashed {
    split: usize,
    offset: i64,
    payload: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    timestamp: Option<(i64, &'static str)>,
    headers: Headers,
}

impl KafkaSource {
    /// A record buffered: its partition's position moves past it.
    fn advance(&mut self, split: usize, offset: i64) {
        self.batch_split = Some(split);
        self.positions[split] = Some(offset + 1);
        if self.stop_of(split).is_some_and(|s| offset + 1 >= s) {
            self.mark_done(split);
        }
    }

    /// One METADATA column of the buffered records, cast to its declared type.
    fn metadata_column(
        &self,
        key: &str,
        data_type: &arrow::datatypes::DataType,
        meta: &[RecordMeta],
    ) -> Result<ArrayRef> {
        use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
        let array: ArrayRef = match key {
            "topic" => Arc::new(StringArray::from_iter_values(
                meta.iter().map(|m| self.partitions[m.split].0.as_str()),
            )),
            "partition" => Arc::new(Int32Array::from_iter_values(
                meta.iter().map(|m| self.partitions[m.split].1),
            )),
            "offset" => Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.offset))),
            "timestamp" => Arc::new(TimestampMillisecondArray::from_iter(
                meta.iter().map(|m| m.timestamp.map(|t| t.0)),
            )),
            "timestamp-type" => Arc::new(StringArray::from_iter(
                meta.iter()
                    .map(|m| Some(m.timestamp.map_or("NoTimestampType", |t| t.1))),
            )),
            "headers" => headers_array(meta, data_type),
            // librdkafka knows it, but its Rust binding does not expose it (without unsafe
            // code): NULL, Flink's value when the epoch is unknown.
            "leader-epoch" => {
                arrow::array::new_null_array(&arrow::datatypes::DataType::Int32, meta.len())
            }
            other => {
                return Err(ConnectorError::config(
                    &self.table,
                    format!("kafka has no metadata '{other}'"),
                ))
            }
        };
        arrow::compute::cast(&array, data_type).map_err(|e| {
            ConnectorError::config(
                &self.table,
                format!("metadata '{key}' cannot be read as {data_type}: {e}"),
            )
        })
    }

    /// The consumer read everything a partition (of one of the topics) has now. Its fetch
    /// position is past every record and transaction marker, so a partition whose position
    /// reached its stop offset is done even when the last offsets before the stop held no
    /// records.
    fn on_end_of_partition(&mut self, p: i32) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let positions = offsets_of(&positions);
        let finished: Vec<usize> = (0..self.partitions.len())
            .filter(|i| self.partitions[*i].1 == p && !self.done[*i])
            .filter(|i| matches!((positions.get(&self.partitions[*i]), self.stop_of(*i)), (Some(Offset::Offset(at)), Some(stop)) if *at >= stop))
            .collect();
        for i in finished {
            self.mark_done(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn partitions_are_owned_as_flink_assigns_them() {
        // Java: ("events".hashCode() * 31 & 0x7FFFFFFF) % 3 == 2, then round-robin.
        let owners: Vec<usize> = (0..4).map(|p| owner(&("events".into(), p), 3)).collect();
        assert_eq!(owners, [2, 0, 1, 2]);
        let owners: Vec<usize> = (0..4).map(|p| owner(&("orders".into(), p), 3)).collect();
        assert_eq!(owners, [0, 1, 2, 0]);
        assert!((0..8).all(|p| owner(&("t".into(), p), 1) == 0));
    }
}
