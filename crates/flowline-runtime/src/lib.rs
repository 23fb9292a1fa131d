//! Executes a [`JobGraph`]: every node of every pipeline runs as `parallelism` subtasks joined by
//! bounded channels of [`Message`]s.
//!
//! ```text
//!  source s (thread): poll ─▶ chain ─▶ watermark ─┐ forward (to subtask s) or hash exchange
//!  operator s (thread): merge inputs' watermarks ─▶ Operator ─▶ chain ─┘ (rows by key, control to all)
//!  sink s (tokio task): write, timers, finish on the last End
//! ```
//!
//! A consumer knows how many producers feed it; each message carries its producer's index, so
//! the consumer keeps one watermark per producer and advances to the minimum over the active
//! ones (idle and ended producers do not hold it back). Backpressure: a full channel blocks the
//! producer's thread. A stop request (Ctrl-C, SIGTERM) makes every source send `End`, so
//! operators flush, sinks finish and publish their files. The first error stops the job.

mod exchange;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, AsArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use flowline_common::{Counter, Gauge, Message, MetricsRegistry};
use flowline_connectors::collect::CollectSink;
use flowline_connectors::{ConnectorError, Poll, Sink, Source, TaskContext};
use flowline_operators::{Operator, OperatorContext};
use flowline_planner::{Branch, JobGraph, Node, OperatorNode, SinkTarget, TableBinding, WatermarkSpec};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use exchange::{Envelope, Inbox, Output, Route};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("{context}: {source}")]
    Operator { context: String, source: datafusion::error::DataFusionError },
    #[error("{0}")]
    Config(String),
    #[error("internal error (a bug in Flowline): {0}")]
    Internal(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Longest a source thread sleeps before it looks at the stop flag again.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A request to stop the job cleanly; cheap to clone and check.
#[derive(Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a finished job returns: the rows of its SELECT pipelines (one list per pipeline).
#[derive(Debug, Default)]
pub struct JobOutput {
    pub collected: Vec<Vec<RecordBatch>>,
}

#[derive(Clone)]
struct Counters {
    rows: Counter,
    batches: Counter,
}

impl Counters {
    fn new(m: &MetricsRegistry, rows: &'static str, batches: &'static str, labels: &[(&str, &str)]) -> Self {
        Self { rows: m.counter(rows, "rows", labels), batches: m.counter(batches, "batches", labels) }
    }
    fn add(&self, batch: &RecordBatch) {
        self.rows.add(batch.num_rows() as u64);
        self.batches.inc();
    }
}

/// Everything a task builder needs to know about the job.
struct Ctx<'a> {
    metrics: &'a MetricsRegistry,
    stop: &'a StopSignal,
    parallelism: usize,
    idle_timeout: Option<Duration>,
    tasks: &'a mut JoinSet<Result<()>>,
    /// Late-row sink inboxes of the current pipeline (one per subtask), if it has one.
    late: Option<Inbox>,
    late_schema: Option<SchemaRef>,
    pipeline: String,
    operators: usize,
}

/// Runs the job to completion (bounded inputs) or until `stop` is signalled.
pub async fn run_job(graph: &JobGraph, metrics: &MetricsRegistry, stop: &StopSignal) -> Result<JobOutput> {
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let idle_timeout = match graph.config.get("table.exec.source.idle-timeout") {
        Some(v) => {
            let d = flowline_common::options::parse_duration(v)
                .map_err(|e| RuntimeError::Config(format!("invalid 'table.exec.source.idle-timeout' = '{v}': {e}")))?;
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    let mut collected = Vec::new();
    for (pi, pipeline) in graph.pipelines.iter().enumerate() {
        let out = Arc::new(Mutex::new(Vec::new()));
        collected.push(out.clone());
        let sink_name = match &pipeline.sink {
            SinkTarget::Table(b) => b.table.name.clone(),
            SinkTarget::Collect => format!("select_{pi}"),
        };
        let p = graph.parallelism;
        let sink_inbox = Inbox::new(p);
        let mut late_inbox = None;
        if let Some(late) = &pipeline.late_sink {
            late_inbox = Some((Inbox::new(p), late.clone()));
        }
        let mut ctx = Ctx {
            metrics,
            stop,
            parallelism: p,
            idle_timeout,
            tasks: &mut tasks,
            late: late_inbox.as_ref().map(|(i, _)| i.clone()),
            late_schema: pipeline.late_sink.as_ref().map(|b| b.table.physical_schema()),
            pipeline: sink_name.clone(),
            operators: 0,
        };
        for node in &pipeline.inputs {
            spawn_node(node, &sink_inbox, Route::Forward, &mut ctx)?;
        }
        // Sinks last: they know their producer counts only now.
        for (subtask, rx, producers) in sink_inbox.into_receivers() {
            let sink: Box<dyn Sink> = match &pipeline.sink {
                SinkTarget::Table(b) => create_sink(b, subtask, p, metrics)?,
                SinkTarget::Collect => Box::new(CollectSink { batches: out.clone() }),
            };
            let st = subtask.to_string();
            let counters = Counters::new(metrics, "flowline_sink_rows_total", "flowline_sink_batches_total", &[("table", &sink_name), ("subtask", &st)]);
            tasks.spawn(sink_task(sink, rx, producers, counters));
        }
        if let Some((inbox, binding)) = late_inbox {
            for (subtask, rx, producers) in inbox.into_receivers() {
                let sink = create_sink(&binding, subtask, p, metrics)?;
                let st = subtask.to_string();
                let counters =
                    Counters::new(metrics, "flowline_sink_rows_total", "flowline_sink_batches_total", &[("table", &binding.table.name), ("subtask", &st)]);
                tasks.spawn(sink_task(sink, rx, producers, counters));
            }
        }
    }
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        let res = res.map_err(|e| RuntimeError::Internal(format!("task panicked: {e}"))).and_then(|r| r);
        if let Err(e) = res {
            stop.stop();
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let collected = collected.into_iter().map(|c| std::mem::take(&mut *c.lock().expect("collect lock"))).collect();
    Ok(JobOutput { collected })
}

fn create_sink(b: &TableBinding, subtask: usize, parallelism: usize, metrics: &MetricsRegistry) -> Result<Box<dyn Sink>> {
    let create = b.factory.sink.ok_or_else(|| RuntimeError::Internal(format!("{} has no sink", b.factory.name)))?;
    let ctx = TaskContext { table: b.table.name.clone(), subtask, parallelism, metrics: metrics.clone() };
    Ok(create(&b.table, &b.options, &ctx)?)
}

/// Spawns `parallelism` subtasks of `node`, whose rows go to `target` by `route`.
fn spawn_node(node: &Node, target: &Inbox, route: Route, ctx: &mut Ctx) -> Result<()> {
    match node {
        Node::Source(branch) => {
            for subtask in 0..ctx.parallelism {
                let output = target.output(subtask, route.clone());
                let st = subtask.to_string();
                let op = format!("{}.source.{}", ctx.pipeline, branch.source.table.name);
                let task = SourceTask {
                    branch: branch.clone(),
                    ctx: TaskContext {
                        table: branch.source.table.name.clone(),
                        subtask,
                        parallelism: ctx.parallelism,
                        metrics: ctx.metrics.clone(),
                    },
                    output,
                    stop: ctx.stop.clone(),
                    idle_timeout: ctx.idle_timeout,
                    source_counters: Counters::new(
                        ctx.metrics,
                        "flowline_source_rows_total",
                        "flowline_source_batches_total",
                        &[("table", &branch.source.table.name), ("subtask", &st)],
                    ),
                    chain_in: Counters::new(ctx.metrics, "flowline_operator_rows_in_total", "flowline_operator_batches_in_total", &[("operator", &op), ("subtask", &st)]),
                    chain_out: Counters::new(ctx.metrics, "flowline_operator_rows_out_total", "flowline_operator_batches_out_total", &[("operator", &op), ("subtask", &st)]),
                    watermark: ctx.metrics.gauge("flowline_source_watermark_ms", "source watermark (ms since epoch)", &[("table", &branch.source.table.name), ("subtask", &st)]),
                    operator: op,
                };
                ctx.tasks.spawn_blocking(move || task.run());
            }
        }
        Node::Operator(op) => {
            let inbox = Inbox::new(ctx.parallelism);
            let route_in = Route::Hash(op.key.clone());
            for input in &op.inputs {
                spawn_node(input, &inbox, route_in.clone(), ctx)?;
            }
            ctx.operators += 1;
            let name = format!("{}.op{}", ctx.pipeline, ctx.operators);
            for (subtask, rx, producers) in inbox.into_receivers() {
                let output = target.output(subtask, route.clone());
                let late = match (&ctx.late, op.keep_late) {
                    (Some(late), true) => Some(late.output(subtask, Route::Forward)),
                    _ => None,
                };
                let operator = op.operator.create(&OperatorContext { subtask, keep_late: late.is_some() }).map_err(|source| {
                    RuntimeError::Operator { context: format!("creating operator {name}"), source }
                })?;
                let task = OperatorTask::new(op, operator, name.clone(), subtask, rx, producers, output, late, ctx);
                ctx.tasks.spawn_blocking(move || task.run());
            }
        }
    }
    Ok(())
}

struct SourceTask {
    branch: Branch,
    ctx: TaskContext,
    output: Output,
    stop: StopSignal,
    idle_timeout: Option<Duration>,
    source_counters: Counters,
    chain_in: Counters,
    chain_out: Counters,
    watermark: Gauge,
    operator: String,
}

impl SourceTask {
    fn create(&self) -> Result<Box<dyn Source>> {
        let TableBinding { table, factory, options } = &self.branch.source;
        let create = factory.source.ok_or_else(|| RuntimeError::Internal(format!("{} has no source", factory.name)))?;
        Ok(create(table, options, &self.ctx, self.branch.projection.as_deref())?)
    }

    fn run(mut self) -> Result<()> {
        let res = self.pump();
        // Whatever happened, tell the consumers this input is over (they may already be gone).
        self.output.broadcast(Message::End);
        res
    }

    fn op_err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator { context: format!("operator {}", self.operator), source }
    }

    /// Runs the chain over source rows and sends the result; false when the consumers are gone.
    fn forward(&mut self, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        let Some(out) = self.branch.chain.apply(batch).map_err(|e| self.op_err(e))? else { return Ok(true) };
        self.chain_out.add(&out);
        self.output.send_batch(out).map_err(|e| self.op_err(e))
    }

    fn pump(&mut self) -> Result<()> {
        let mut source = self.create()?;
        let mut watermark = i64::MIN;
        let mut sent_watermark = i64::MIN;
        let mut last_input = Instant::now();
        let mut idle = false;
        while !self.stop.is_stopped() {
            match source.poll()? {
                Poll::Batch(batch) => {
                    last_input = Instant::now();
                    idle = false;
                    self.source_counters.add(&batch);
                    self.chain_in.add(&batch);
                    let rows = batch.num_rows();
                    let mut start = 0;
                    if let Some(WatermarkSpec::EventTime { chain, .. }) = &self.branch.watermark {
                        let (marks, times) = watermark_columns(chain.apply(batch.clone()).map_err(|e| self.op_err(e))?)?;
                        // Rows see the watermark of the rows before them, as if it were sent after
                        // every row: a row behind a watermark not yet sent splits the batch there.
                        for j in 0..rows {
                            if times.is_valid(j) && times.value(j) <= watermark && watermark > sent_watermark {
                                if !self.forward(batch.slice(start, j - start))? {
                                    return Ok(());
                                }
                                start = j;
                                sent_watermark = watermark;
                                self.watermark.set(watermark.max(0) as u64);
                                self.output.broadcast(Message::Watermark(watermark));
                            }
                            if marks.is_valid(j) {
                                watermark = watermark.max(marks.value(j));
                            }
                        }
                    }
                    if !self.forward(batch.slice(start, rows - start))? {
                        return Ok(()); // the consumers are gone: the job is failing elsewhere
                    }
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        watermark = now_millis() - 1;
                    }
                    if watermark > sent_watermark {
                        sent_watermark = watermark;
                        self.watermark.set(watermark.max(0) as u64);
                        self.output.broadcast(Message::Watermark(watermark));
                    }
                }
                Poll::Pending(wait) => {
                    // Processing time passes while nothing arrives.
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        let now = now_millis() - 1;
                        if now > sent_watermark {
                            sent_watermark = now;
                            self.output.broadcast(Message::Watermark(now));
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
                Poll::End => return Ok(()),
            }
        }
        Ok(())
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The watermark expression and the time attribute of each row, in ms.
fn watermark_columns(batch: Option<RecordBatch>) -> Result<(TimestampMillisecondArray, TimestampMillisecondArray)> {
    let millis = |c: &ArrayRef| -> Result<TimestampMillisecondArray> {
        let ms = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| RuntimeError::Operator { context: "watermark".into(), source: e.into() })?;
        Ok(ms.as_primitive::<TimestampMillisecondType>().clone())
    };
    match batch {
        Some(b) if b.num_columns() == 2 => Ok((millis(b.column(0))?, millis(b.column(1))?)),
        _ => Err(RuntimeError::Internal("the watermark chain must yield the watermark and the time attribute".into())),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum InputState {
    Active,
    Idle,
    Ended,
}

struct OperatorTask {
    name: String,
    operator: Box<dyn Operator>,
    chain: flowline_operators::StatelessChain,
    rx: mpsc::Receiver<Envelope>,
    inputs: Vec<(i64, InputState)>,
    watermark: i64,
    idle_sent: bool,
    output: Output,
    late: Option<Output>,
    late_schema: Option<SchemaRef>,
    rows_in: Counters,
    rows_out: Counters,
    late_rows: Counter,
    late_seen: u64,
    state_bytes: Gauge,
    open_windows: Gauge,
    watermark_gauge: Gauge,
}

impl OperatorTask {
    #[allow(clippy::too_many_arguments)]
    fn new(
        node: &OperatorNode,
        operator: Box<dyn Operator>,
        name: String,
        subtask: usize,
        rx: mpsc::Receiver<Envelope>,
        producers: usize,
        output: Output,
        late: Option<Output>,
        ctx: &Ctx,
    ) -> Self {
        let st = subtask.to_string();
        let labels = [("operator", name.as_str()), ("subtask", st.as_str())];
        let m = ctx.metrics;
        Self {
            operator,
            chain: node.chain.clone(),
            rx,
            inputs: vec![(i64::MIN, InputState::Active); producers],
            watermark: i64::MIN,
            idle_sent: false,
            output,
            late,
            late_schema: ctx.late_schema.clone(),
            rows_in: Counters::new(m, "flowline_operator_rows_in_total", "flowline_operator_batches_in_total", &labels),
            rows_out: Counters::new(m, "flowline_operator_rows_out_total", "flowline_operator_batches_out_total", &labels),
            late_rows: m.counter("flowline_late_rows_total", "rows dropped because their window had fired", &labels),
            late_seen: 0,
            state_bytes: m.gauge("flowline_operator_state_bytes", "bytes of operator state (open windows)", &labels),
            open_windows: m.gauge("flowline_operator_open_windows", "windows or sessions open", &labels),
            watermark_gauge: m.gauge("flowline_operator_watermark_ms", "operator input watermark (ms since epoch)", &labels),
            name,
        }
    }

    fn err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator { context: format!("operator {}", self.name), source }
    }

    fn run(mut self) -> Result<()> {
        let res = self.pump();
        self.output.broadcast(Message::End);
        if let Some(late) = &mut self.late {
            late.broadcast(Message::End);
        }
        res
    }

    fn pump(&mut self) -> Result<()> {
        let mut ended = 0;
        if self.inputs.is_empty() {
            return self.finish();
        }
        while let Some(Envelope { from, msg }) = self.rx.blocking_recv() {
            match msg {
                Message::Batch(batch) => {
                    self.inputs[from].1 = InputState::Active;
                    self.rows_in.add(&batch);
                    let out = self.operator.on_batch(batch).map_err(|e| self.err(e))?;
                    if !self.emit(out)? {
                        return Ok(());
                    }
                    self.route_late()?;
                }
                Message::Watermark(ts) => {
                    let input = &mut self.inputs[from];
                    input.0 = input.0.max(ts);
                    input.1 = InputState::Active;
                    if !self.advance()? {
                        return Ok(());
                    }
                }
                Message::Idle => {
                    self.inputs[from].1 = InputState::Idle;
                    if !self.advance()? {
                        return Ok(());
                    }
                }
                Message::End => {
                    self.inputs[from].1 = InputState::Ended;
                    ended += 1;
                    if ended == self.inputs.len() {
                        return self.finish();
                    }
                    if !self.advance()? {
                        return Ok(());
                    }
                }
                Message::Barrier(_) => {}
            }
        }
        // Every producer gone without End: an upstream task failed; stop without flushing.
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let out = self.operator.on_end().map_err(|e| self.err(e))?;
        self.emit(out)?;
        self.route_late()?;
        self.publish_state();
        Ok(())
    }

    /// Moves the operator's watermark to the minimum over its inputs, as Flink does: an ended
    /// input counts as +infinity (it sent its last watermark), an idle one is left out. False if
    /// downstream is gone.
    fn advance(&mut self) -> Result<bool> {
        let active = self
            .inputs
            .iter()
            .filter_map(|(w, s)| match s {
                InputState::Active => Some(*w),
                InputState::Ended => Some(i64::MAX),
                InputState::Idle => None,
            })
            .min();
        let all_idle = !self.inputs.iter().any(|(_, s)| *s == InputState::Active);
        if all_idle && self.inputs.iter().any(|(_, s)| *s == InputState::Idle) && !self.idle_sent {
            // Idle until an input speaks again.
            self.idle_sent = true;
            self.output.broadcast(Message::Idle);
        }
        let Some(min) = active else { return Ok(true) };
        if !all_idle {
            self.idle_sent = false;
        }
        if min <= self.watermark {
            return Ok(true);
        }
        self.watermark = min;
        let out = self.operator.on_watermark(min).map_err(|e| self.err(e))?;
        if !self.emit(out)? {
            return Ok(false);
        }
        self.watermark_gauge.set(min.max(0) as u64);
        self.publish_state();
        self.output.broadcast(Message::Watermark(min));
        Ok(true)
    }

    fn publish_state(&self) {
        self.state_bytes.set(self.operator.state_bytes() as u64);
        self.open_windows.set(self.operator.open_windows() as u64);
    }

    fn emit(&mut self, batches: Vec<RecordBatch>) -> Result<bool> {
        for b in batches {
            let Some(out) = self.chain.apply(b).map_err(|e| self.err(e))? else { continue };
            self.rows_out.add(&out);
            if !self.output.send_batch(out).map_err(|e| self.err(e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn route_late(&mut self) -> Result<()> {
        let total = self.operator.late_rows();
        if total > self.late_seen {
            self.late_rows.add(total - self.late_seen);
            self.late_seen = total;
        }
        let batches = self.operator.take_late();
        if let (Some(late), Some(schema)) = (&mut self.late, &self.late_schema) {
            for b in batches {
                let b = conform_by_name(&b, schema).map_err(|e| RuntimeError::Operator { context: format!("late rows of {}", self.name), source: e })?;
                late.send_batch(b).map_err(|e| RuntimeError::Operator { context: format!("late rows of {}", self.name), source: e })?;
            }
        }
        Ok(())
    }
}

/// Shapes rows to `schema` by column name: matching columns are cast, missing ones are NULL.
fn conform_by_name(batch: &RecordBatch, schema: &SchemaRef) -> datafusion::error::Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => Ok(cast(batch.column(i), f.data_type())?),
            Err(_) => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

async fn sink_task(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Envelope>,
    producers: usize,
    counters: Counters,
) -> Result<()> {
    let mut ended = 0;
    if producers == 0 {
        tokio::task::block_in_place(|| sink.finish())?;
        return Ok(());
    }
    let mut timer = sink.timer_interval().map(|d| {
        let mut t = tokio::time::interval(d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let msg = match timer.as_mut() {
            Some(t) => tokio::select! {
                m = rx.recv() => m,
                _ = t.tick() => {
                    tokio::task::block_in_place(|| sink.on_timer())?;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match msg.map(|e| e.msg) {
            Some(Message::Batch(batch)) => {
                counters.add(&batch);
                tokio::task::block_in_place(|| sink.write(batch))?;
            }
            Some(Message::End) => {
                ended += 1;
                if ended == producers {
                    tokio::task::block_in_place(|| sink.finish())?;
                    return Ok(());
                }
            }
            Some(Message::Watermark(_)) | Some(Message::Barrier(_)) | Some(Message::Idle) => {}
            // Every sender gone without End: an upstream task failed; drop the sink unfinished.
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_rows_are_shaped_by_name() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        let input = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, true), Field::new("a", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec!["x", "y"]))]).unwrap();
        let target = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true), Field::new("c", DataType::Int32, true), Field::new("b", DataType::Int32, true)]));
        let out = conform_by_name(&batch, &target).unwrap();
        assert_eq!(out.num_columns(), 3);
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(out.column(2).data_type(), &DataType::Int32);
    }
}
