//! The Kafka source's buffered records: payloads and keys for the decoders, and the metadata
//! columns (partition, offset, timestamp, headers).

use std::sync::Arc;

use arrow::array::ArrayRef;
use flowline_common::RowKind;
use flowline_formats::RecordBuffer;
use rdkafka::Message;

/// What METADATA columns can show of one record.
pub(super) struct RecordMeta {
    /// Index of its partition in `KafkaSource::partitions` (topic and partition id).
    pub(super) split: usize,
    pub(super) offset: i64,
    /// Milliseconds, and whether the producer set it (CreateTime) or the broker (LogAppendTime).
    pub(super) timestamp: Option<(i64, &'static str)>,
    /// The record's headers, when the `headers` metadata is read.
    pub(super) headers: Headers,
}

/// A record's headers: (key, value) in order.
pub(super) type Headers = Vec<(String, Option<Vec<u8>>)>;

/// The headers of `msg` (only called when the `headers` metadata is read).
pub(super) fn headers_of(msg: &rdkafka::message::BorrowedMessage<'_>) -> Headers {
    use rdkafka::message::Headers as _;
    msg.headers().map_or_else(Vec::new, |hs| {
        hs.iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect()
    })
}

/// Records read and not yet decoded.
#[derive(Default)]
pub(super) struct Buffered {
    pub(super) value: RecordBuffer,
    pub(super) key: RecordBuffer,
    /// Per record, when a metadata column is read.
    pub(super) meta: Option<Vec<RecordMeta>>,
    /// Per record of an upsert source: `+U`, or `-D` for a tombstone.
    pub(super) kinds: Option<Vec<i8>>,
    /// Per record: its partition (index into `KafkaSource::partitions`) and offset, to name a
    /// record that cannot be decoded.
    pub(super) at: Vec<(usize, i64)>,
}

/// How records are buffered: the formats' needs.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub(super) value_json: bool,
    pub(super) key_json: bool,
    pub(super) raw_value: bool,
    pub(super) has_key: bool,
}

impl Buffered {
    pub(super) fn push(
        &mut self,
        shape: Shape,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        record: RecordMeta,
    ) {
        if let Some(kinds) = self.kinds.as_mut() {
            // Upserts: a tombstone deletes its key; its row has only the key columns.
            kinds.push(if payload.is_some() {
                RowKind::UpdateAfter
            } else {
                RowKind::Delete
            } as i8);
            let payload = match payload {
                None if shape.value_json => Some(&b"{}"[..]),
                other => other,
            };
            self.value.push(payload, shape.value_json);
        } else if payload.is_none() && !shape.raw_value {
            return; // a tombstone: no row in json or csv
        } else {
            self.value.push(payload, shape.value_json);
        }
        if shape.has_key {
            self.key.push(key, shape.key_json);
        }
        self.at.push((record.split, record.offset));
        if let Some(meta) = self.meta.as_mut() {
            meta.push(record);
        }
    }
}

/// Removes the per-record entries of the records at `skipped` (ascending): they have no row.
pub(super) fn drop_skipped<T>(items: &mut Vec<T>, skipped: &[usize]) {
    let mut i = 0;
    let mut skipped = skipped.iter().peekable();
    items.retain(|_| {
        let keep = skipped.next_if_eq(&&i).is_none();
        i += 1;
        keep
    });
}

/// The `headers` metadata: a MAP<STRING, BYTES> per record, with the declared type's field names.
pub(super) fn headers_array(
    meta: &[RecordMeta],
    declared: &arrow::datatypes::DataType,
) -> ArrayRef {
    use arrow::array::{BinaryBuilder, MapBuilder, MapFieldNames, StringBuilder};
    let names = match declared {
        arrow::datatypes::DataType::Map(entries, _) => match entries.data_type() {
            arrow::datatypes::DataType::Struct(f) if f.len() == 2 => Some(MapFieldNames {
                entry: entries.name().clone(),
                key: f[0].name().clone(),
                value: f[1].name().clone(),
            }),
            _ => None,
        },
        _ => None,
    };
    let mut b = MapBuilder::new(names, StringBuilder::new(), BinaryBuilder::new());
    for m in meta {
        for (k, v) in &m.headers {
            b.keys().append_value(k);
            b.values().append_option(v.as_deref());
        }
        b.append(true)
            .expect("keys and values are appended in pairs");
    }
    Arc::new(b.finish())
}
