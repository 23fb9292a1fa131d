//! The Kafka sink: one record per row; at-least-once flushes every record at the barrier.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use flowline_common::Options;
use flowline_formats::{RecordBuffer, RecordEncoder};
use flowline_sql::TableDef;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::{client_config, kafka_error, Layout};
use crate::{ConnectorError, Result, Sink, TaskContext};

/// How long a flush (barrier, end of input) may wait for the broker's acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn create_sink(table: &TableDef, o: &Options, ctx: &TaskContext) -> Result<Box<dyn Sink>> {
    let layout = Layout::new(table, o)?;
    let name = table.name.clone();
    let topic = o.get("topic").filter(|t| !t.contains(';')).ok_or_else(|| ConnectorError::config(&name, "a Kafka sink needs one 'topic'"))?.to_string();
    let guarantee = o.get("sink.delivery-guarantee").unwrap_or("at-least-once").to_string();
    let mut config = client_config(o);
    if guarantee == "at-least-once" && o.get("properties.enable.idempotence").is_none() {
        // Retries without reordering or duplicates from the client itself.
        config.set("enable.idempotence", "true");
    }
    let errors = Arc::new(Mutex::new(None));
    let producer: ThreadedProducer<Delivery> =
        config.create_with_context(Delivery { first_error: errors.clone() }).map_err(|e| kafka_error(&name, "cannot create the producer", e))?;
    let partitions = match o.get("sink.partitioner") {
        Some("fixed") => {
            let md = producer.client().fetch_metadata(Some(&topic), Duration::from_secs(15)).map_err(|e| kafka_error(&name, &format!("cannot read metadata of topic '{topic}'"), e))?;
            let n = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(ConnectorError::config(&name, format!("kafka: topic '{topic}' does not exist or has no partitions")));
            }
            Some(n as i32)
        }
        _ => None,
    };
    let enc = |f, s| RecordEncoder::new(f, s).map_err(|e| ConnectorError::config(&name, e.to_string()));
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
        value_buf: RecordBuffer::default(),
        key_buf: RecordBuffer::default(),
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
}

impl KafkaSink {
    fn check(&self) -> Result<()> {
        match self.errors.lock().expect("delivery error lock").take() {
            Some(e) => Err(kafka_error(&self.table, &format!("a record could not be written to topic '{}'", self.topic), e)),
            None => Ok(()),
        }
    }

    fn flush(&self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| kafka_error(&self.table, "flush", e))?;
        self.check()
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.check()?;
        let project = |cols: &[usize]| batch.project(cols).map_err(|e| ConnectorError::config(&self.table, e.to_string()));
        self.value_buf.clear();
        self.key_buf.clear();
        let values = project(&self.layout.value_columns)?;
        self.value.encode(&values, &mut self.value_buf).map_err(|e| ConnectorError::config(&self.table, e.to_string()))?;
        if let Some(k) = &self.key {
            let keys = project(&self.layout.key_columns)?;
            k.encode(&keys, &mut self.key_buf).map_err(|e| ConnectorError::config(&self.table, e.to_string()))?;
        }
        let values: Vec<_> = self.value_buf.ranges().collect();
        let keys: Vec<_> = if self.key.is_some() { self.key_buf.ranges().collect() } else { Vec::new() };
        for (i, v) in values.iter().enumerate() {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
            if let Some((s, e)) = v {
                record = record.payload(&self.value_buf.bytes()[*s..*e]);
            }
            if let Some(Some((s, e))) = keys.get(i) {
                record = record.key(&self.key_buf.bytes()[*s..*e]);
            }
            if let Some(p) = self.fixed_partition {
                record = record.partition(p);
            }
            let mut record = record;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The client's queue is full: wait for deliveries (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                        self.check()?;
                    }
                    Err((e, _)) => return Err(kafka_error(&self.table, &format!("cannot write to topic '{}'", self.topic), e)),
                }
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, _id: u64) -> Result<Vec<u8>> {
        // At-least-once: every record before the barrier is acknowledged before the checkpoint
        // can complete; after a restore they may be written again.
        if self.flush_at_barrier {
            self.flush()?;
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}
