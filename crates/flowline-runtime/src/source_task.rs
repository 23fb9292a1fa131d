//! A source subtask: polls its connector, runs the stateless chain, computes the watermark
//! (per split for split sources) and takes checkpoints when a barrier is triggered.

use crate::*;

pub(crate) struct SourceTask {
    pub(crate) branch: Branch,
    pub(crate) ctx: TaskContext,
    pub(crate) output: Output,
    /// The late-row table, for rows dropped for a NULL time attribute.
    pub(crate) late: Option<Output>,
    pub(crate) late_schema: Option<SchemaRef>,
    pub(crate) stop: StopSignal,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) null_rowtime: NullRowtime,
    pub(crate) null_rowtime_rows: Counter,
    pub(crate) source_counters: Counters,
    pub(crate) chain_in: Counters,
    pub(crate) chain_out: Counters,
    pub(crate) watermark: Gauge,
    pub(crate) operator: String,
    pub(crate) checkpoint: Option<TaskCheckpoint>,
    pub(crate) marks: SourceMarks,
    /// False after a stop barrier or an abort: consumers must not take the input as complete.
    pub(crate) send_end: bool,
}

/// A source's watermarks. The generated and sent ones are part of its checkpointed position.
pub(crate) struct SourceMarks {
    /// Per split of a split source (Kafka partitions; one input for a source without splits):
    /// the highest watermark its rows generated, merged as any consumer merges its producers
    /// (Flink's per-partition watermarks).
    pub(crate) splits: InputWatermarks,
    /// When each split last delivered a batch: a split quiet for the idle timeout is idle.
    pub(crate) last_batch: Vec<Instant>,
    /// The watermark the rows so far allow.
    pub(crate) generated: EventTimeMs,
    /// The watermark sent downstream.
    pub(crate) sent: EventTimeMs,
}

/// A batch's split, its watermark so far, and the other splits' merge (fixed for the batch).
pub(crate) struct BatchMarks {
    split: usize,
    own: EventTimeMs,
    others: EventTimeMs,
}

impl SourceMarks {
    pub(crate) fn new() -> Self {
        Self {
            splits: InputWatermarks::new(1),
            last_batch: Vec::new(),
            generated: NO_WATERMARK,
            sent: NO_WATERMARK,
        }
    }

    /// Split `split` (of `splits` now known) delivered a batch: it is active again.
    fn on_batch(&mut self, split: usize, splits: usize) {
        let now = Instant::now();
        self.splits.grow(splits);
        self.last_batch.resize(self.splits.len(), now);
        self.last_batch[split] = now;
        self.splits.on_row(split);
    }

    /// Before the rows of a batch of `split`: the other splits' merge stays fixed while they
    /// are read, so a row's watermark is `min(split's so far, others)`, as `InputWatermarks`
    /// would merge it, without a walk over the splits per row.
    fn start_batch(&mut self, split: usize) -> BatchMarks {
        BatchMarks {
            split,
            own: self.splits.mark(split),
            others: self.splits.min_except(split).unwrap_or(END_OF_TIME),
        }
    }

    /// A row's watermark expression gave `w`.
    fn on_row_watermark(&mut self, b: &mut BatchMarks, w: EventTimeMs) {
        b.own = b.own.max(w);
        self.generated = self.generated.max(b.own.min(b.others));
    }

    /// After the batch's rows: the split's watermark goes into the merge.
    fn end_batch(&mut self, b: BatchMarks) {
        if let Some(merged) = self.splits.on_watermark(b.split, b.own) {
            self.generated = self.generated.max(merged);
        }
    }

    /// Splits that delivered nothing for `timeout` no longer hold time back.
    fn expire_idle(&mut self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else { return };
        for (s, last) in self.last_batch.iter().enumerate() {
            if self.splits.is_active(s) && last.elapsed() >= timeout {
                if let Some(merged) = self.splits.on_idle(s) {
                    self.generated = self.generated.max(merged);
                }
            }
        }
    }
}

impl SourceTask {
    pub(crate) fn create(&self) -> Result<Box<dyn Source>> {
        let TableBinding {
            table,
            factory,
            options,
        } = &self.branch.source;
        let create = factory
            .source
            .ok_or_else(|| RuntimeError::Internal(format!("{} has no source", factory.name)))?;
        Ok(create(
            table,
            options,
            &self.ctx,
            self.branch.projection.as_deref(),
        )?)
    }

    pub(crate) fn run(mut self) -> Result<()> {
        let res = self.pump();
        // Tell the consumers this input is over (they may already be gone), unless it is not.
        if self.send_end && !self.stop.is_aborted() {
            self.output.broadcast(Message::End);
            if let Some(late) = &self.late {
                late.broadcast(Message::End);
            }
        }
        res
    }

    pub(crate) fn op_err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator {
            context: format!("operator {}", self.operator),
            source,
        }
    }

    /// Runs the chain over source rows and sends the result; false when the consumers are gone.
    pub(crate) fn forward(&mut self, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        let Some(out) = self.branch.chain.apply(batch).map_err(|e| self.op_err(e))? else {
            return Ok(true);
        };
        self.chain_out.add(&out);
        self.output.send_batch(out).map_err(|e| self.op_err(e))
    }

    pub(crate) fn snapshot(&self, source: &mut dyn Source) -> Result<Vec<u8>> {
        let position = source.snapshot()?;
        Ok(envelope(
            serde_json::json!({"watermark": self.marks.generated, "sent": self.marks.sent}),
            position,
        ))
    }

    pub(crate) fn send_watermark(&mut self, w: EventTimeMs) {
        self.marks.sent = w;
        self.watermark.set(w.max(0) as u64);
        self.output.broadcast(Message::Watermark(w));
    }

    /// Takes a checkpoint if one was triggered since the last; `Some(stop)` when it did.
    pub(crate) fn on_trigger(
        &mut self,
        source: &mut dyn Source,
        last: &mut u64,
    ) -> Result<Option<bool>> {
        let Some(cp) = &self.checkpoint else {
            return Ok(None);
        };
        let trigger = *cp.trigger.borrow();
        let Some(barrier) = trigger.filter(|b| b.id > *last) else {
            return Ok(None);
        };
        *last = barrier.id;
        let started = Instant::now();
        let state = self.snapshot(source)?;
        cp.save(barrier.id, state, Vec::new(), started.elapsed());
        self.output.broadcast(Message::Barrier(barrier));
        if let Some(late) = &self.late {
            late.broadcast(Message::Barrier(barrier));
        }
        Ok(Some(barrier.stop))
    }

    pub(crate) fn pump(&mut self) -> Result<()> {
        let mut source = self.create()?;
        if let Some(cp) = self.checkpoint.clone() {
            // At another parallelism: every old subtask's position, of which the source takes
            // the splits it now owns; the watermark is the least of theirs.
            if let Some(restoring) = cp.restoring() {
                let (mut generated, mut sent) = (END_OF_TIME, END_OF_TIME);
                let mut positions = Vec::new();
                for state in restoring.states {
                    let (header, position) = open_envelope(state)?;
                    positions.push(position);
                    generated = generated.min(header["watermark"].as_i64().unwrap_or(NO_WATERMARK));
                    sent = sent.min(header["sent"].as_i64().unwrap_or(NO_WATERMARK));
                }
                match restoring.rescaled {
                    false => source.restore(positions[0])?,
                    true => source.restore_rescaled(&positions).map_err(|e| match e {
                        ConnectorError::Config { table, message } if table.is_empty() => {
                            ConnectorError::config(&self.branch.source.table.name, message)
                        }
                        e => e,
                    })?,
                }
                self.marks.generated = generated;
                self.marks.splits.restore([], self.marks.generated);
                if sent > NO_WATERMARK {
                    self.send_watermark(sent);
                }
            }
        }
        let mut last_trigger = self.checkpoint.as_ref().map_or(0, |c| c.restored_id());
        let mut completed = last_trigger;
        let mut last_input = Instant::now();
        let mut idle = false;
        loop {
            if self.stop.is_aborted() || (self.checkpoint.is_none() && self.stop.is_stopped()) {
                return Ok(());
            }
            if let Some(cp) = &self.checkpoint {
                let done = *cp.completed.borrow();
                if done > completed {
                    completed = done;
                    source.checkpoint_complete(done)?;
                }
            }
            if let Some(stop) = self.on_trigger(source.as_mut(), &mut last_trigger)? {
                if stop {
                    self.send_end = false;
                    return Ok(());
                }
            }
            match source.poll()? {
                Poll::Batch(mut batch) => {
                    last_input = Instant::now();
                    idle = false;
                    self.source_counters.add(&batch);
                    self.chain_in.add(&batch);
                    let mut rows = batch.num_rows();
                    let mut start = 0;
                    // Splits can be added while running (Kafka partition discovery): a new one
                    // holds time back until it delivers or goes idle, as in Flink.
                    let split = source.split_of_last_batch().unwrap_or(0);
                    self.marks.on_batch(split, source.splits().max(split + 1));
                    self.marks.expire_idle(self.idle_timeout);
                    if let Some(WatermarkSpec::EventTime { chain, .. }) = &self.branch.watermark {
                        let mut batch_marks = self.marks.start_batch(split);
                        let (mut marks, mut times) = watermark_columns(
                            chain.apply(batch.clone()).map_err(|e| self.op_err(e))?,
                        )?;
                        if times.null_count() > 0 {
                            // Flink's watermark assigner fails the job; 'drop' counts them.
                            let kept = self.null_rowtime(&times)?;
                            let keep = |a: &TimestampMillisecondArray| -> Result<TimestampMillisecondArray> {
                                let kept = datafusion::arrow::compute::filter(a, &kept)
                                    .map_err(|e| self.op_err(e.into()))?;
                                Ok(kept.as_primitive::<TimestampMillisecondType>().clone())
                            };
                            (marks, times) = (keep(&marks)?, keep(&times)?);
                            self.route_null_rowtimes(&batch, &kept)?;
                            batch = filter_record_batch(&batch, &kept)
                                .map_err(|e| self.op_err(e.into()))?;
                            rows = batch.num_rows();
                        }
                        // Rows see the watermark of the rows before them, as if it were sent after
                        // every row: a row behind a watermark not yet sent splits the batch there.
                        for j in 0..rows {
                            let (watermark, sent) = (self.marks.generated, self.marks.sent);
                            if times.is_valid(j) && times.value(j) <= watermark && watermark > sent
                            {
                                if !self.forward(batch.slice(start, j - start))? {
                                    return Ok(());
                                }
                                start = j;
                                self.send_watermark(watermark);
                            }
                            if marks.is_valid(j) {
                                self.marks
                                    .on_row_watermark(&mut batch_marks, marks.value(j));
                            }
                        }
                        self.marks.end_batch(batch_marks);
                    }
                    if !self.forward(batch.slice(start, rows - start))? {
                        return Ok(()); // the consumers are gone: the job is failing elsewhere
                    }
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        self.marks.generated = flowline_common::clock::now_millis() - 1;
                    }
                    if self.marks.generated > self.marks.sent {
                        self.send_watermark(self.marks.generated);
                    }
                }
                Poll::Idle(wait) => {
                    if !idle {
                        idle = true;
                        self.output.broadcast(Message::Idle);
                    }
                    std::thread::sleep(wait.min(STOP_CHECK_INTERVAL))
                }
                Poll::Pending(wait) => {
                    // A split gone idle no longer holds back the others.
                    if matches!(self.branch.watermark, Some(WatermarkSpec::EventTime { .. })) {
                        self.marks.expire_idle(self.idle_timeout);
                        if self.marks.generated > self.marks.sent {
                            self.send_watermark(self.marks.generated);
                        }
                    }
                    // Processing time passes while nothing arrives.
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        let now = flowline_common::clock::now_millis() - 1;
                        if now > self.marks.sent {
                            self.marks.generated = now;
                            self.send_watermark(now);
                        }
                    }
                    if let Some(timeout) = self.idle_timeout {
                        if !idle && last_input.elapsed() >= timeout {
                            idle = true;
                            self.output.broadcast(Message::Idle);
                        }
                    }
                    std::thread::sleep(wait.min(STOP_CHECK_INTERVAL))
                }
                Poll::End => {
                    if let Some(cp) = &self.checkpoint {
                        // Later checkpoints record this source at its end.
                        let state = self.snapshot(source.as_mut())?;
                        drop(cp.finished(state));
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// What a source does with a row whose time attribute (`WATERMARK FOR` column) is NULL
/// (`table.exec.source.null-rowtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NullRowtime {
    /// Fail the job, as Flink's watermark assigner does (the default).
    Fail,
    /// Drop the row and count it in `flowline_null_rowtime_rows_total`.
    Drop,
}

impl NullRowtime {
    const OPTION: &'static str = "table.exec.source.null-rowtime";

    pub(crate) fn from_config(config: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        match config.get(Self::OPTION).map(|v| v.to_ascii_lowercase()) {
            None => Ok(Self::Fail),
            Some(v) if v == "fail" => Ok(Self::Fail),
            Some(v) if v == "drop" => Ok(Self::Drop),
            Some(v) => Err(RuntimeError::Config(format!(
                "invalid '{}' = '{v}': use 'fail' (the default, as Flink) or 'drop'",
                Self::OPTION
            ))),
        }
    }
}

impl SourceTask {
    /// Sends the rows of `batch` not `kept` to the late-row table, if the job has one.
    pub(crate) fn route_null_rowtimes(
        &mut self,
        batch: &RecordBatch,
        kept: &BooleanArray,
    ) -> Result<()> {
        let (Some(late), Some(schema)) = (&mut self.late, &self.late_schema) else {
            return Ok(());
        };
        let err = |source| RuntimeError::Operator {
            context: format!("rows with a NULL time attribute of {}", self.operator),
            source,
        };
        let dropped = datafusion::arrow::compute::not(kept).map_err(|e| err(e.into()))?;
        let rows = filter_record_batch(batch, &dropped).map_err(|e| err(e.into()))?;
        let rows = conform_batch(&rows, schema).map_err(|e| err(e.into()))?;
        late.send_batch(rows).map_err(err)?;
        Ok(())
    }

    /// The rows to keep of a batch whose time attributes `times` include NULLs, or the error
    /// that fails the job.
    pub(crate) fn null_rowtime(&self, times: &TimestampMillisecondArray) -> Result<BooleanArray> {
        let nulls = times.null_count();
        match self.null_rowtime {
            NullRowtime::Drop => {
                self.null_rowtime_rows.add(nulls as u64);
                Ok(datafusion::arrow::compute::is_not_null(times)
                    .map_err(|e| self.op_err(e.into()))?)
            }
            NullRowtime::Fail => {
                let text = match &self.branch.watermark {
                    Some(WatermarkSpec::EventTime { text, .. }) => text.as_str(),
                    _ => "",
                };
                Err(RuntimeError::Config(format!(
                    "table {}: RowTime field should not be null, please convert it to a non-null \
                     long value: {nulls} row(s) of a batch have a NULL time attribute ({text}); \
                     set 'table.exec.source.null-rowtime' = 'drop' to drop and count them instead",
                    self.branch.source.table.name
                )))
            }
        }
    }
}

/// The watermark expression and the time attribute of each row, in ms.
pub(crate) fn watermark_columns(
    batch: Option<RecordBatch>,
) -> Result<(TimestampMillisecondArray, TimestampMillisecondArray)> {
    let millis = |c: &ArrayRef| -> Result<TimestampMillisecondArray> {
        let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| {
            RuntimeError::Operator {
                context: "watermark".into(),
                source: e.into(),
            }
        })?;
        Ok(ms.as_primitive::<TimestampMillisecondType>().clone())
    };
    match batch {
        Some(b) if b.num_columns() == 2 => Ok((millis(b.column(0))?, millis(b.column(1))?)),
        _ => Err(RuntimeError::Internal(
            "the watermark chain must yield the watermark and the time attribute".into(),
        )),
    }
}
