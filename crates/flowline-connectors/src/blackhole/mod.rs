//! `blackhole`: swallows every row (benchmarks, dry runs).

use arrow::record_batch::RecordBatch;
use flowline_common::OptionSpec;

use crate::{Result, Sink};

pub const OPTIONS: &[OptionSpec] = &[OptionSpec::required("connector", "blackhole")];

pub struct BlackholeSink;

impl Sink for BlackholeSink {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        drop(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
