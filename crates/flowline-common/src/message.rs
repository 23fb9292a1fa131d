//! The unit of communication between operator tasks.

use arrow_array::RecordBatch;

/// Event time in milliseconds since the Unix epoch (Flink's `TIMESTAMP(3)` resolution).
pub type EventTimeMs = i64;

/// What travels on every channel of the dataflow.
///
/// Ordering contract: a producer sends any number of `Batch`, `Watermark` and `Barrier`
/// messages and then exactly one `End` (bounded input exhausted, or the job is stopping).
/// After `End` it sends nothing more.
#[derive(Debug, Clone)]
pub enum Message {
    /// Arrow columnar rows.
    Batch(RecordBatch),
    /// Event-time progress: no row with a smaller event time follows on this channel.
    Watermark(EventTimeMs),
    /// Checkpoint alignment marker.
    Barrier(u64),
    /// The input is exhausted.
    End,
}
