//! An in-memory sink for SELECT results (tests, `flowline query` on streaming plans).

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

use crate::{Result, Sink};

/// Appends every batch to a shared vector.
pub struct CollectSink {
    pub batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Sink for CollectSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.batches.lock().expect("collect sink lock").push(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
