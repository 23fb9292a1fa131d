//! The unit of communication between operator tasks.

use arrow_array::RecordBatch;

/// Event time in milliseconds since the Unix epoch (Flink's `TIMESTAMP(3)` resolution).
pub type EventTimeMs = i64;

/// The watermark before any: every event time is still on time.
pub const NO_WATERMARK: EventTimeMs = EventTimeMs::MIN;
/// The watermark of an input that has ended: every window and timer may fire.
pub const END_OF_TIME: EventTimeMs = EventTimeMs::MAX;

/// What travels on every channel of the dataflow.
///
/// Ordering contract: a producer sends any number of `Batch`, `Watermark`, `Idle` and `Barrier`
/// messages and then exactly one `End` (bounded input exhausted, or the job is stopping).
/// After `End` it sends nothing more. A consumer with several producers tracks a watermark per
/// producer and advances to the minimum over the active ones (ended and idle producers do not
/// hold time back).
#[derive(Debug, Clone)]
pub enum Message {
    /// Arrow columnar rows.
    Batch(RecordBatch),
    /// Event-time progress, as in Flink: rows with an event time `<= W` that follow are late.
    Watermark(EventTimeMs),
    /// The producer has had no input for the idle timeout; it rejoins with its next `Batch` or
    /// `Watermark`.
    Idle,
    /// Checkpoint alignment marker: everything the producer sent before it belongs to the
    /// checkpoint, everything after to the next one.
    Barrier(Barrier),
    /// The input is exhausted.
    End,
}

/// A checkpoint barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    /// The job stops after this checkpoint (stop with a final checkpoint): tasks snapshot,
    /// forward the barrier and exit without flushing open windows or sending `End`.
    pub stop: bool,
}
