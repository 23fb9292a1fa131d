//! Streaming operators: one file per operator family.
//!
//! Today: the fused stateless chain (filter, projection, CASE, casts, functions) evaluated with
//! DataFusion physical expressions on whole batches. Windows, joins, aggregates, TopN and dedup
//! arrive with the event-time and updating-results work, each behind [`Operator`].

pub mod chain;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;

pub use chain::{ChainStep, StatelessChain};

/// A streaming operator. The runtime calls the hooks from a single task, in message order.
///
/// - `on_batch`: rows arrive; return the rows to emit now (possibly none).
/// - `on_watermark`: event time advanced to `ts`; emit what the watermark completes.
/// - `on_end`: the input is exhausted; emit everything still held.
///
/// Checkpointing adds `on_barrier` (snapshot state) with the exactly-once work.
pub trait Operator: Send {
    fn on_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>>;
    fn on_watermark(&mut self, _ts: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
    fn on_end(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}
