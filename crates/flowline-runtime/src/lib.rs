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

mod checkpoint;
mod exchange;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use flowline_common::{failpoint, Barrier, Counter, Gauge, Message, MetricsRegistry};
use flowline_connectors::collect::CollectSink;
use flowline_connectors::{conform_batch, ConnectorError, Poll, Sink, Source, TaskContext};
use flowline_operators::{Operator, OperatorContext};
use flowline_planner::{
    Branch, JobGraph, Node, OperatorNode, SinkTarget, TableBinding, WatermarkSpec,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use checkpoint::CheckpointConfig;
use checkpoint::{envelope, open_envelope, Aligner, Step, TaskCheckpoint, TaskRegistry};
use exchange::{Envelope, Inbox, Output, Route};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("{context}: {source}")]
    Operator {
        context: String,
        source: datafusion::error::DataFusionError,
    },
    #[error("{0}")]
    Config(String),
    #[error("internal error (a bug in Flowline): {0}")]
    Internal(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Longest a source thread sleeps before it looks at the stop flag again.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A request to stop the job; cheap to clone and check.
///
/// `stop` is the clean stop (Ctrl-C, SIGTERM): without checkpoints sources end their input, so
/// windows flush and files are published; with checkpoints a final checkpoint is taken and the
/// job exits without flushing, to resume later. `abort` (a task failed) makes sources quit
/// without ending their input, so nothing half-done is published.
#[derive(Clone, Default)]
pub struct StopSignal(Arc<(AtomicBool, AtomicBool)>);

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0 .0.store(true, Ordering::Relaxed)
    }
    pub fn is_stopped(&self) -> bool {
        self.0 .0.load(Ordering::Relaxed)
    }
    pub fn abort(&self) {
        self.0 .1.store(true, Ordering::Relaxed);
        self.stop();
    }
    pub fn is_aborted(&self) -> bool {
        self.0 .1.load(Ordering::Relaxed)
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
    fn new(
        m: &MetricsRegistry,
        rows: &'static str,
        batches: &'static str,
        labels: &[(&str, &str)],
    ) -> Self {
        Self {
            rows: m.counter(rows, "rows", labels),
            batches: m.counter(batches, "batches", labels),
        }
    }
    fn add(&self, batch: &RecordBatch) {
        self.rows.add(batch.num_rows() as u64);
        self.batches.inc();
    }
}

type BlockingTask = Box<dyn FnOnce() -> Result<()> + Send>;
type AsyncTask = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Everything a task builder needs to know about the job.
struct Ctx<'a> {
    metrics: &'a MetricsRegistry,
    stop: &'a StopSignal,
    parallelism: usize,
    idle_timeout: Option<Duration>,
    null_rowtime: NullRowtime,
    /// Tasks built, started once the restored checkpoint (if any) is known to fit.
    blocking: Vec<BlockingTask>,
    futures: Vec<AsyncTask>,
    registry: TaskRegistry,
    checkpoint: Option<&'a (dyn Fn(String) -> TaskCheckpoint + Sync)>,
    job: Option<String>,
    state_dir: Option<std::path::PathBuf>,
    /// Late-row sink inboxes of the current pipeline (one per subtask), if it has one.
    late: Option<Inbox>,
    late_schema: Option<SchemaRef>,
    /// `p<index>.<sink table>`: prefixes task keys and metric labels.
    pipeline: String,
    operators: usize,
    sources: usize,
    restoring: Option<checkpoint::RestoreClock>,
}

impl Ctx<'_> {
    fn task_context(&self, table: &str, subtask: usize) -> TaskContext {
        TaskContext {
            table: table.to_string(),
            subtask,
            parallelism: self.parallelism,
            metrics: self.metrics.clone(),
            job: self.job.clone(),
            state_dir: self.state_dir.clone(),
        }
    }

    /// Registers a task for checkpoints; its handle when the job checkpoints.
    fn register(&mut self, key: String, descriptor: String) -> Option<TaskCheckpoint> {
        self.registry.tasks.insert(key.clone(), descriptor);
        self.checkpoint.map(|f| f(key))
    }
}

/// Where a job keeps local state (write-ahead logs) and how it checkpoints.
#[derive(Default)]
pub struct JobState {
    pub dir: Option<std::path::PathBuf>,
    pub checkpoint: Option<CheckpointConfig>,
}

/// Runs the job to completion (bounded inputs) or until `stop` is signalled.
pub async fn run_job(
    graph: &JobGraph,
    metrics: &MetricsRegistry,
    stop: &StopSignal,
) -> Result<JobOutput> {
    run_job_with_state(graph, metrics, stop, JobState::default()).await
}

/// [`run_job`] with a state directory and checkpoints: resumes from `state.checkpoint.restored`.
pub async fn run_job_with_state(
    graph: &JobGraph,
    metrics: &MetricsRegistry,
    stop: &StopSignal,
    state: JobState,
) -> Result<JobOutput> {
    let idle_timeout = match graph.config.get("table.exec.source.idle-timeout") {
        Some(v) => {
            let d = flowline_common::options::parse_duration(v).map_err(|e| {
                RuntimeError::Config(format!(
                    "invalid 'table.exec.source.idle-timeout' = '{v}': {e}"
                ))
            })?;
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    let null_rowtime = NullRowtime::from_config(&graph.config)?;
    let (mut coordinator, handles) = match &state.checkpoint {
        Some(cfg) => {
            let (c, h) = checkpoint::coordinator(cfg, metrics, stop);
            (Some(c), Some(h))
        }
        None => (None, None),
    };
    let handle_fn: Option<&(dyn Fn(String) -> TaskCheckpoint + Sync)> = handles
        .as_ref()
        .map(|h| h as &(dyn Fn(String) -> TaskCheckpoint + Sync));
    let mut ctx = Ctx {
        metrics,
        stop,
        parallelism: graph.parallelism,
        idle_timeout,
        null_rowtime,
        blocking: Vec::new(),
        futures: Vec::new(),
        registry: TaskRegistry::default(),
        checkpoint: handle_fn,
        job: state.checkpoint.as_ref().map(|c| c.job.clone()),
        state_dir: state.dir.clone(),
        late: None,
        late_schema: None,
        pipeline: String::new(),
        operators: 0,
        sources: 0,
        restoring: state
            .checkpoint
            .as_ref()
            .and_then(|c| checkpoint::RestoreClock::new(c, metrics)),
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
        let late_inbox = pipeline
            .late_sink
            .as_ref()
            .map(|late| (Inbox::new(p), late.clone()));
        ctx.late = late_inbox.as_ref().map(|(i, _)| i.clone());
        ctx.late_schema = pipeline
            .late_sink
            .as_ref()
            .map(|b| b.table.physical_schema());
        ctx.pipeline = format!("p{pi}.{sink_name}");
        ctx.operators = 0;
        ctx.sources = 0;
        for node in &pipeline.inputs {
            spawn_node(node, &sink_inbox, Route::Forward, &mut ctx)?;
        }
        // Sinks last: they know their producer counts only now.
        let mut sinks = Vec::new();
        for (subtask, rx, producers) in sink_inbox.into_receivers() {
            let sink: Box<dyn Sink> = match &pipeline.sink {
                SinkTarget::Table(b) => create_sink(b, subtask, &ctx)?,
                SinkTarget::Collect => Box::new(CollectSink {
                    batches: out.clone(),
                }),
            };
            let descriptor = match &pipeline.sink {
                SinkTarget::Table(b) => format!("sink {} ({})", b.table.name, b.factory.name),
                SinkTarget::Collect => "sink SELECT".to_string(),
            };
            sinks.push((
                format!("{}.sink", ctx.pipeline),
                descriptor,
                sink_name.clone(),
                subtask,
                rx,
                producers,
                sink,
            ));
        }
        if let Some((inbox, binding)) = late_inbox {
            for (subtask, rx, producers) in inbox.into_receivers() {
                let sink = create_sink(&binding, subtask, &ctx)?;
                let descriptor = format!(
                    "late-row sink {} ({})",
                    binding.table.name, binding.factory.name
                );
                sinks.push((
                    format!("{}.late", ctx.pipeline),
                    descriptor,
                    binding.table.name.clone(),
                    subtask,
                    rx,
                    producers,
                    sink,
                ));
            }
        }
        for (name, descriptor, table, subtask, rx, producers, sink) in sinks {
            let st = subtask.to_string();
            let counters = Counters::new(
                metrics,
                "flowline_sink_rows_total",
                "flowline_sink_batches_total",
                &[("table", &table), ("subtask", &st)],
            );
            let cp = ctx.register(format!("{name}#{subtask}"), descriptor);
            let task = SinkTask {
                sink,
                rx,
                producers,
                counters,
                checkpoint: cp,
                stop: stop.clone(),
                name: format!("{name}#{subtask}"),
            };
            ctx.futures.push(Box::pin(task.run()));
        }
    }

    let Ctx {
        blocking,
        futures,
        registry,
        restoring,
        ..
    } = ctx;
    if let (Some(cfg), Some(c)) = (&state.checkpoint, coordinator.as_mut()) {
        if let Some(r) = &cfg.restored {
            registry.check(r, graph.parallelism, &cfg.store.location())?;
        }
        c.set_tasks(registry.tasks.clone(), graph.parallelism);
    }
    let coordinator = coordinator.map(|c| tokio::spawn(c.run()));
    if state
        .checkpoint
        .as_ref()
        .is_some_and(|c| c.restored.is_some())
    {
        failpoint::hit("restore");
    }
    if let Some(r) = &restoring {
        r.report_if_idle();
    }
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for t in blocking {
        tasks.spawn_blocking(t);
    }
    for f in futures {
        tasks.spawn(f);
    }
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        let res = res
            .map_err(|e| RuntimeError::Internal(format!("task panicked: {e}")))
            .and_then(|r| r);
        if let Err(e) = res {
            stop.abort();
            first_error.get_or_insert(e);
        }
    }
    if let Some(mut c) = coordinator {
        let wait = state.checkpoint.as_ref().map(|cfg| cfg.timeout);
        if let Some(wait) = wait.filter(|_| first_error.is_none() && !stop.is_stopped()) {
            // A sink can finish before its last acknowledgement reaches the coordinator (a
            // thread sends it): the checkpoint that lets it publish then records an upstream
            // task by its acknowledged state, and the final one, which says the job is
            // finished, is still to come. Without it a rerun would replay from that checkpoint.
            if tokio::time::timeout(wait, &mut c).await.is_err() {
                eprintln!("flowline: the final checkpoint did not complete within {wait:?}; a rerun resumes from the last complete one");
            }
        }
        c.abort();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let collected = collected
        .into_iter()
        .map(|c| std::mem::take(&mut *c.lock().expect("collect lock")))
        .collect();
    Ok(JobOutput { collected })
}

fn create_sink(b: &TableBinding, subtask: usize, ctx: &Ctx) -> Result<Box<dyn Sink>> {
    let create = b
        .factory
        .sink
        .ok_or_else(|| RuntimeError::Internal(format!("{} has no sink", b.factory.name)))?;
    Ok(create(
        &b.table,
        &b.options,
        &ctx.task_context(&b.table.name, subtask),
    )?)
}

/// Spawns `parallelism` subtasks of `node`, whose rows go to `target` by `route`.
fn spawn_node(node: &Node, target: &Inbox, route: Route, ctx: &mut Ctx) -> Result<()> {
    match node {
        Node::Source(branch) => {
            ctx.sources += 1;
            let table = &branch.source.table.name;
            let op = format!("{}.source{}.{}", ctx.pipeline, ctx.sources, table);
            // Rows dropped for a NULL time attribute go to the late-row table, if any.
            let keeps_late = ctx.null_rowtime == NullRowtime::Drop
                && matches!(branch.watermark, Some(WatermarkSpec::EventTime { .. }));
            for subtask in 0..ctx.parallelism {
                let output = target.output(subtask, route.clone());
                let late = match (&ctx.late, keeps_late) {
                    (Some(late), true) => Some(late.output(subtask, Route::Forward)),
                    _ => None,
                };
                let st = subtask.to_string();
                let checkpoint = ctx.register(
                    format!("{op}#{subtask}"),
                    format!("source {table} ({})", branch.source.factory.name),
                );
                let task = SourceTask {
                    branch: branch.clone(),
                    ctx: ctx.task_context(table, subtask),
                    output,
                    late,
                    late_schema: ctx.late_schema.clone(),
                    stop: ctx.stop.clone(),
                    idle_timeout: ctx.idle_timeout,
                    null_rowtime: ctx.null_rowtime,
                    null_rowtime_rows: ctx.metrics.counter(
                        "flowline_null_rowtime_rows_total",
                        "rows dropped because their time attribute is NULL ('table.exec.source.null-rowtime' = 'drop')",
                        &[("table", table), ("subtask", &st)],
                    ),
                    source_counters: Counters::new(
                        ctx.metrics,
                        "flowline_source_rows_total",
                        "flowline_source_batches_total",
                        &[("table", table), ("subtask", &st)],
                    ),
                    chain_in: Counters::new(
                        ctx.metrics,
                        "flowline_operator_rows_in_total",
                        "flowline_operator_batches_in_total",
                        &[("operator", &op), ("subtask", &st)],
                    ),
                    chain_out: Counters::new(
                        ctx.metrics,
                        "flowline_operator_rows_out_total",
                        "flowline_operator_batches_out_total",
                        &[("operator", &op), ("subtask", &st)],
                    ),
                    watermark: ctx.metrics.gauge(
                        "flowline_source_watermark_ms",
                        "source watermark (ms since epoch)",
                        &[("table", table), ("subtask", &st)],
                    ),
                    operator: op.clone(),
                    checkpoint,
                    marks: (i64::MIN, i64::MIN),
                    splits: Vec::new(),
                    send_end: true,
                };
                ctx.blocking.push(Box::new(move || task.run()));
            }
        }
        Node::Operator(op) => {
            let inbox = Inbox::new(ctx.parallelism);
            // Producers register in input order: `input_of[p]` is producer p's input.
            let mut input_of = Vec::new();
            for (i, input) in op.inputs.iter().enumerate() {
                for node in &input.nodes {
                    spawn_node(node, &inbox, Route::Hash(input.key.clone()), ctx)?;
                }
                input_of.resize(inbox.producers(), i);
            }
            ctx.operators += 1;
            let name = format!("{}.op{}", ctx.pipeline, ctx.operators);
            for (subtask, rx, producers) in inbox.into_receivers() {
                debug_assert_eq!(producers, input_of.len(), "hash routes reach every subtask");
                let output = target.output(subtask, route.clone());
                let late = match (&ctx.late, op.keep_late) {
                    (Some(late), true) => Some(late.output(subtask, Route::Forward)),
                    _ => None,
                };
                let operator = op
                    .operator
                    .create(&OperatorContext {
                        subtask,
                        keep_late: late.is_some(),
                    })
                    .map_err(|source| RuntimeError::Operator {
                        context: format!("creating operator {name}"),
                        source,
                    })?;
                let checkpoint =
                    ctx.register(format!("{name}#{subtask}"), format!("{:?}", op.operator));
                let task = OperatorTask::new(
                    op,
                    operator,
                    name.clone(),
                    subtask,
                    rx,
                    input_of.clone(),
                    output,
                    late,
                    checkpoint,
                    ctx,
                );
                ctx.blocking.push(Box::new(move || task.run()));
            }
        }
    }
    Ok(())
}

struct SourceTask {
    branch: Branch,
    ctx: TaskContext,
    output: Output,
    /// The late-row table, for rows dropped for a NULL time attribute.
    late: Option<Output>,
    late_schema: Option<SchemaRef>,
    stop: StopSignal,
    idle_timeout: Option<Duration>,
    null_rowtime: NullRowtime,
    null_rowtime_rows: Counter,
    source_counters: Counters,
    chain_in: Counters,
    chain_out: Counters,
    watermark: Gauge,
    operator: String,
    checkpoint: Option<TaskCheckpoint>,
    /// (watermark from the rows so far, watermark sent): part of the checkpointed position.
    marks: (i64, i64),
    /// Per split of a split source (Kafka partitions): the highest watermark expression seen
    /// and when its last batch came. The source's watermark is the minimum over the splits that
    /// are not idle, as Flink's per-partition watermarks.
    splits: Vec<(i64, Instant)>,
    /// False after a stop barrier or an abort: consumers must not take the input as complete.
    send_end: bool,
}

impl SourceTask {
    fn create(&self) -> Result<Box<dyn Source>> {
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

    fn run(mut self) -> Result<()> {
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

    fn op_err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator {
            context: format!("operator {}", self.operator),
            source,
        }
    }

    /// Runs the chain over source rows and sends the result; false when the consumers are gone.
    fn forward(&mut self, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(true);
        }
        let Some(out) = self.branch.chain.apply(batch).map_err(|e| self.op_err(e))? else {
            return Ok(true);
        };
        self.chain_out.add(&out);
        self.output.send_batch(out).map_err(|e| self.op_err(e))
    }

    fn snapshot(&self, source: &mut dyn Source) -> Result<Vec<u8>> {
        let position = source.snapshot()?;
        Ok(envelope(
            serde_json::json!({"watermark": self.marks.0, "sent": self.marks.1}),
            position,
        ))
    }

    /// The minimum watermark over the splits (but `except`) that delivered within the idle
    /// timeout (all of them without one); `None` when no split counts. A split that has shown
    /// no row yet holds it at `i64::MIN`.
    fn splits_min(&self, except: Option<usize>) -> Option<i64> {
        let active = |t: &Instant| self.idle_timeout.is_none_or(|d| t.elapsed() < d);
        self.splits
            .iter()
            .enumerate()
            .filter(|(i, (_, t))| Some(*i) != except && active(t))
            .map(|(_, (w, _))| *w)
            .min()
    }

    fn send_watermark(&mut self, w: i64) {
        self.marks.1 = w;
        self.watermark.set(w.max(0) as u64);
        self.output.broadcast(Message::Watermark(w));
    }

    /// Takes a checkpoint if one was triggered since the last; `Some(stop)` when it did.
    fn on_trigger(&mut self, source: &mut dyn Source, last: &mut u64) -> Result<Option<bool>> {
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
        cp.save(barrier.id, state, started.elapsed());
        self.output.broadcast(Message::Barrier(barrier));
        if let Some(late) = &self.late {
            late.broadcast(Message::Barrier(barrier));
        }
        Ok(Some(barrier.stop))
    }

    fn pump(&mut self) -> Result<()> {
        let mut source = self.create()?;
        if let Some((_, state)) = self.checkpoint.as_ref().and_then(|c| c.restored()) {
            let (header, position) = open_envelope(state)?;
            source.restore(position)?;
            self.marks = (
                header["watermark"].as_i64().unwrap_or(i64::MIN),
                header["sent"].as_i64().unwrap_or(i64::MIN),
            );
            if self.marks.1 > i64::MIN {
                let w = self.marks.1;
                self.send_watermark(w);
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
                    let split = source.split_of_last_batch();
                    if let Some(s) = split {
                        // Splits can be added while running (Kafka partition discovery): a
                        // new one holds time back until it delivers or goes idle, as in Flink.
                        let n = source.splits().max(1);
                        if self.splits.len() < n {
                            self.splits.resize(n, (i64::MIN, Instant::now()));
                        }
                        if let Some(entry) = self.splits.get_mut(s) {
                            entry.1 = Instant::now();
                        }
                    }
                    let split = split.filter(|s| *s < self.splits.len());
                    // The batch moves only its own split: the others' minimum is fixed meanwhile.
                    let others = split.map(|s| self.splits_min(Some(s)).unwrap_or(i64::MAX));
                    if let Some(WatermarkSpec::EventTime { chain, .. }) = &self.branch.watermark {
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
                            let (watermark, sent) = self.marks;
                            if times.is_valid(j) && times.value(j) <= watermark && watermark > sent
                            {
                                if !self.forward(batch.slice(start, j - start))? {
                                    return Ok(());
                                }
                                start = j;
                                self.send_watermark(watermark);
                            }
                            if marks.is_valid(j) {
                                match (split, others) {
                                    (Some(s), Some(others)) => {
                                        let own = &mut self.splits[s].0;
                                        *own = (*own).max(marks.value(j));
                                        self.marks.0 = self.marks.0.max((*own).min(others));
                                    }
                                    _ => self.marks.0 = self.marks.0.max(marks.value(j)),
                                }
                            }
                        }
                    }
                    if !self.forward(batch.slice(start, rows - start))? {
                        return Ok(()); // the consumers are gone: the job is failing elsewhere
                    }
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        self.marks.0 = now_millis() - 1;
                    }
                    if self.marks.0 > self.marks.1 {
                        let w = self.marks.0;
                        self.send_watermark(w);
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
                    if !self.splits.is_empty()
                        && matches!(self.branch.watermark, Some(WatermarkSpec::EventTime { .. }))
                    {
                        let w = self.splits_min(None).unwrap_or(i64::MIN);
                        if w > self.marks.0 {
                            self.marks.0 = w;
                        }
                        if self.marks.0 > self.marks.1 {
                            let w = self.marks.0;
                            self.send_watermark(w);
                        }
                    }
                    // Processing time passes while nothing arrives.
                    if matches!(self.branch.watermark, Some(WatermarkSpec::ProcessingTime)) {
                        let now = now_millis() - 1;
                        if now > self.marks.1 {
                            self.marks.0 = now;
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
enum NullRowtime {
    /// Fail the job, as Flink's watermark assigner does (the default).
    Fail,
    /// Drop the row and count it in `flowline_null_rowtime_rows_total`.
    Drop,
}

impl NullRowtime {
    const OPTION: &'static str = "table.exec.source.null-rowtime";

    fn from_config(config: &std::collections::BTreeMap<String, String>) -> Result<Self> {
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
    fn route_null_rowtimes(&mut self, batch: &RecordBatch, kept: &BooleanArray) -> Result<()> {
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
    fn null_rowtime(&self, times: &TimestampMillisecondArray) -> Result<BooleanArray> {
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

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The watermark expression and the time attribute of each row, in ms.
fn watermark_columns(
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

#[derive(Clone, Copy, PartialEq)]
enum InputState {
    Active,
    Idle,
    Ended,
}

/// How often an operator's state size is published between watermarks.
const STATE_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

struct OperatorTask {
    name: String,
    operator: Box<dyn Operator>,
    chain: flowline_operators::StatelessChain,
    rx: mpsc::Receiver<Envelope>,
    /// Per producer: its watermark and state, and which of the operator's inputs it feeds.
    inputs: Vec<(i64, InputState)>,
    input_of: Vec<usize>,
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
    aligner: Aligner,
    checkpoint: Option<TaskCheckpoint>,
    restoring: Option<checkpoint::RestoreClock>,
    /// A stop barrier passed: exit without flushing or sending `End`.
    stopped: bool,
    /// When the state-size gauges were last set.
    published: Instant,
}

impl OperatorTask {
    #[allow(clippy::too_many_arguments)]
    fn new(
        node: &OperatorNode,
        operator: Box<dyn Operator>,
        name: String,
        subtask: usize,
        rx: mpsc::Receiver<Envelope>,
        input_of: Vec<usize>,
        output: Output,
        late: Option<Output>,
        checkpoint: Option<TaskCheckpoint>,
        ctx: &Ctx,
    ) -> Self {
        let st = subtask.to_string();
        let labels = [("operator", name.as_str()), ("subtask", st.as_str())];
        let m = ctx.metrics;
        Self {
            operator,
            chain: node.chain.clone(),
            rx,
            inputs: vec![(i64::MIN, InputState::Active); input_of.len()],
            watermark: i64::MIN,
            idle_sent: false,
            output,
            late,
            late_schema: ctx.late_schema.clone(),
            rows_in: Counters::new(
                m,
                "flowline_operator_rows_in_total",
                "flowline_operator_batches_in_total",
                &labels,
            ),
            rows_out: Counters::new(
                m,
                "flowline_operator_rows_out_total",
                "flowline_operator_batches_out_total",
                &labels,
            ),
            late_rows: m.counter(
                "flowline_late_rows_total",
                "rows dropped because their window had fired",
                &labels,
            ),
            late_seen: 0,
            state_bytes: m.gauge(
                "flowline_operator_state_bytes",
                "approximate bytes of operator state held in memory",
                &labels,
            ),
            open_windows: m.gauge(
                "flowline_operator_open_windows",
                "windows, sessions, groups or partitions held",
                &labels,
            ),
            watermark_gauge: m.gauge(
                "flowline_operator_watermark_ms",
                "operator input watermark (ms since epoch)",
                &labels,
            ),
            aligner: Aligner::new(
                input_of.len(),
                checkpoint.as_ref().is_none_or(|c| c.exactly_once),
            ),
            checkpoint,
            restoring: ctx.restoring.clone().inspect(|r| r.enlist()),
            stopped: false,
            published: Instant::now(),
            input_of,
            name,
        }
    }

    fn err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator {
            context: format!("operator {}", self.name),
            source,
        }
    }

    fn run(mut self) -> Result<()> {
        let res = self.pump();
        if !self.stopped {
            self.output.broadcast(Message::End);
            if let Some(late) = &mut self.late {
                late.broadcast(Message::End);
            }
        }
        res
    }

    fn restore(&mut self) -> Result<()> {
        let Some((_, state)) = self.checkpoint.as_ref().and_then(|c| c.restored()) else {
            return Ok(());
        };
        let (header, payload) = open_envelope(state)?;
        self.operator.restore(payload).map_err(|e| self.err(e))?;
        for (input, w) in self
            .inputs
            .iter_mut()
            .zip(header["inputs"].as_array().into_iter().flatten())
        {
            input.0 = w.as_i64().unwrap_or(i64::MIN);
        }
        let w = header["watermark"].as_i64().unwrap_or(i64::MIN);
        if w > i64::MIN {
            // Windows up to `w` fired before the snapshot: this only sets the operator's clock.
            self.watermark = w;
            let out = self.operator.on_watermark(w).map_err(|e| self.err(e))?;
            self.emit(out)?;
            self.output.broadcast(Message::Watermark(self.forwarded(w)));
        }
        self.publish_state();
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier) -> Result<()> {
        let Some(cp) = &self.checkpoint else {
            return Ok(());
        };
        let started = Instant::now();
        let payload = self.operator.snapshot().map_err(|e| self.err(e))?;
        let inputs: Vec<i64> = self.inputs.iter().map(|(w, _)| *w).collect();
        let state = envelope(
            serde_json::json!({"watermark": self.watermark, "inputs": inputs}),
            payload,
        );
        cp.save(barrier.id, state, started.elapsed());
        self.output.broadcast(Message::Barrier(barrier));
        if let Some(late) = &self.late {
            late.broadcast(Message::Barrier(barrier));
        }
        self.stopped = barrier.stop;
        Ok(())
    }

    fn pump(&mut self) -> Result<()> {
        let mut ended = 0;
        self.restore()?;
        if let Some(r) = self.restoring.take() {
            r.done();
        }
        if self.inputs.is_empty() {
            return self.finish();
        }
        let mut steps = Vec::new();
        loop {
            let env = match self.aligner.next_pending() {
                Some(e) => e,
                None => match self.rx.blocking_recv() {
                    Some(e) => e,
                    // Every producer gone without End: an upstream task failed, or a stop
                    // barrier passed; stop without flushing.
                    None => return Ok(()),
                },
            };
            self.aligner.accept(env, &mut steps);
            for step in steps.drain(..) {
                let Envelope { from, msg } = match step {
                    Step::Deliver(e) => e,
                    Step::Aligned(b) => {
                        self.on_barrier(b)?;
                        if self.stopped {
                            return Ok(());
                        }
                        continue;
                    }
                    Step::Decline(id) => {
                        if let Some(cp) = &self.checkpoint {
                            cp.decline(
                                id,
                                format!(
                                    "operator {}: barrier alignment buffered more than its limit",
                                    self.name
                                ),
                            );
                        }
                        continue;
                    }
                };
                match msg {
                    Message::Batch(batch) => {
                        self.inputs[from].1 = InputState::Active;
                        self.rows_in.add(&batch);
                        let out = self
                            .operator
                            .on_batch(self.input_of[from], batch)
                            .map_err(|e| self.err(e))?;
                        if !self.emit(out)? {
                            return Ok(());
                        }
                        self.route_late()?;
                        // Operators without event time (aggregations, joins, TopN) grow their
                        // state on rows alone: publish its size now and then (it can take a
                        // walk over the state).
                        if self.published.elapsed() >= STATE_PUBLISH_INTERVAL {
                            self.publish_state();
                        }
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
        }
    }

    fn finish(&mut self) -> Result<()> {
        let out = self.operator.on_end().map_err(|e| self.err(e))?;
        self.emit(out)?;
        self.route_late()?;
        self.publish_state();
        if let Some(cp) = &self.checkpoint {
            // Everything is emitted: later checkpoints record this operator as empty.
            let state = envelope(
                serde_json::json!({"watermark": i64::MIN, "inputs": []}),
                Vec::new(),
            );
            drop(cp.finished(state));
        }
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
        self.output
            .broadcast(Message::Watermark(self.forwarded(min)));
        Ok(true)
    }

    /// The watermark sent downstream for input watermark `w`: held back by the operator's delay
    /// (the end of input, `i64::MAX`, passes unchanged).
    fn forwarded(&self, w: i64) -> i64 {
        if w == i64::MAX {
            w
        } else {
            w.saturating_sub(self.operator.watermark_delay())
        }
    }

    fn publish_state(&mut self) {
        self.published = Instant::now();
        self.state_bytes.set(self.operator.state_bytes() as u64);
        self.open_windows.set(self.operator.open_windows() as u64);
    }

    fn emit(&mut self, batches: Vec<RecordBatch>) -> Result<bool> {
        for b in batches {
            let Some(out) = self.chain.apply(b).map_err(|e| self.err(e))? else {
                continue;
            };
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
                let b = conform_batch(&b, schema).map_err(|e| RuntimeError::Operator {
                    context: format!("late rows of {}", self.name),
                    source: e.into(),
                })?;
                late.send_batch(b).map_err(|e| RuntimeError::Operator {
                    context: format!("late rows of {}", self.name),
                    source: e,
                })?;
            }
        }
        Ok(())
    }
}

struct SinkTask {
    sink: Box<dyn Sink>,
    rx: mpsc::Receiver<Envelope>,
    producers: usize,
    counters: Counters,
    checkpoint: Option<TaskCheckpoint>,
    stop: StopSignal,
    name: String,
}

impl SinkTask {
    async fn run(mut self) -> Result<()> {
        if let Some(cp) = &self.checkpoint {
            // Publish what the restored checkpoint covers; remove what none does.
            let (id, committables) = match cp.restored() {
                Some((id, state)) => (id, open_envelope(state)?.1.to_vec()),
                None => (cp.restored_id(), Vec::new()),
            };
            tokio::task::block_in_place(|| self.sink.restore(id, &committables))?;
        }
        let res = self.pump().await;
        if res.is_err() {
            self.stop.abort();
        }
        res
    }

    /// Flushes for checkpoint `id` and hands the committables to the checkpoint.
    fn pre_commit(&mut self, id: u64) -> Result<Vec<u8>> {
        let committables = tokio::task::block_in_place(|| self.sink.pre_commit(id))?;
        Ok(envelope(serde_json::json!({}), committables))
    }

    /// Waits until checkpoint `id` (or a later one) is complete, then commits; false if the
    /// job was aborted first.
    async fn commit_when_complete(
        &mut self,
        mut completed: tokio::sync::watch::Receiver<u64>,
        id: u64,
    ) -> Result<bool> {
        loop {
            let done = *completed.borrow_and_update();
            if done >= id {
                tokio::task::block_in_place(|| self.sink.commit(done))?;
                return Ok(true);
            }
            if self.stop.is_aborted() {
                return Ok(false);
            }
            let _ = tokio::time::timeout(STOP_CHECK_INTERVAL, completed.changed()).await;
        }
    }

    async fn pump(&mut self) -> Result<()> {
        let mut ended = 0;
        let mut marks = SinkWatermarks::new(self.producers);
        let mut last_barrier = self.checkpoint.as_ref().map_or(0, |c| c.restored_id());
        if self.producers == 0 {
            return self.finish(last_barrier).await;
        }
        let mut aligner = Aligner::new(
            self.producers,
            self.checkpoint.as_ref().is_none_or(|c| c.exactly_once),
        );
        let mut timer = self.sink.timer_interval().map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut completed = self.checkpoint.as_ref().map(|c| c.completed.clone());
        let mut steps = Vec::new();
        loop {
            let env = match aligner.next_pending() {
                Some(e) => Some(e),
                None => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = async { timer.as_mut().expect("guarded").tick().await }, if timer.is_some() => {
                        tokio::task::block_in_place(|| self.sink.on_timer())?;
                        continue;
                    }
                    _ = async { completed.as_mut().expect("guarded").changed().await }, if completed.is_some() => {
                        let done = *completed.as_mut().expect("guarded").borrow_and_update();
                        tokio::task::block_in_place(|| self.sink.commit(done))?;
                        continue;
                    }
                },
            };
            // Every sender gone without End: an upstream task failed; drop the sink unfinished.
            let Some(env) = env else { return Ok(()) };
            aligner.accept(env, &mut steps);
            for step in std::mem::take(&mut steps) {
                match step {
                    Step::Aligned(b) => {
                        last_barrier = b.id;
                        if let Some(cp) = self.checkpoint.clone() {
                            let started = Instant::now();
                            let state = self.pre_commit(b.id)?;
                            cp.save(b.id, state, started.elapsed());
                            if b.stop {
                                self.commit_when_complete(cp.completed.clone(), b.id)
                                    .await?;
                                return Ok(());
                            }
                        }
                    }
                    Step::Decline(id) => {
                        if let Some(cp) = &self.checkpoint {
                            cp.decline(
                                id,
                                format!(
                                    "sink {}: barrier alignment buffered more than its limit",
                                    self.name
                                ),
                            );
                        }
                    }
                    Step::Deliver(Envelope {
                        msg: Message::Batch(batch),
                        ..
                    }) => {
                        self.counters.add(&batch);
                        tokio::task::block_in_place(|| self.sink.write(batch))?;
                    }
                    Step::Deliver(Envelope {
                        msg: Message::End,
                        from,
                    }) => {
                        ended += 1;
                        marks.set(from, i64::MAX);
                        if ended == self.producers {
                            tokio::task::block_in_place(|| self.sink.on_watermark(i64::MAX))?;
                            return self.finish(last_barrier).await;
                        }
                    }
                    Step::Deliver(Envelope {
                        msg: Message::Watermark(w),
                        from,
                    }) => {
                        if let Some(min) = marks.set(from, w) {
                            tokio::task::block_in_place(|| self.sink.on_watermark(min))?;
                        }
                    }
                    Step::Deliver(_) => {}
                }
            }
        }
    }

    /// The input is complete. Without checkpoints: finish (publish). With them: pre-commit the
    /// rest, and publish once a checkpoint that records it is complete.
    async fn finish(&mut self, last_barrier: u64) -> Result<()> {
        let Some(cp) = self.checkpoint.clone() else {
            return Ok(tokio::task::block_in_place(|| self.sink.finish())?);
        };
        let epoch = last_barrier + 1;
        let state = self.pre_commit(epoch)?;
        let done = cp.finished(state);
        let id = tokio::select! {
            id = done => id.ok(),
            _ = async { while !self.stop.is_aborted() { tokio::time::sleep(STOP_CHECK_INTERVAL).await } } => None,
        };
        // Checkpoint `id` records this finished state, with everything pre-committed as `epoch`.
        // It may be the checkpoint of the last barrier itself (`id` < `epoch`): the finish can
        // reach the coordinator before that barrier's acknowledgement, which a thread sends.
        if let Some(id) = id {
            tokio::task::block_in_place(|| self.sink.commit(id.max(epoch)))?;
        }
        Ok(())
    }
}

/// A sink's input watermark: the minimum over its producers (an ended one counts as +infinity).
struct SinkWatermarks {
    marks: Vec<i64>,
    min: i64,
}

impl SinkWatermarks {
    fn new(producers: usize) -> Self {
        Self {
            marks: vec![i64::MIN; producers],
            min: i64::MIN,
        }
    }

    /// Records producer `from`'s watermark; the new minimum when it advanced.
    fn set(&mut self, from: usize, w: i64) -> Option<i64> {
        let m = self.marks.get_mut(from)?;
        *m = (*m).max(w);
        let min = self.marks.iter().copied().min().unwrap_or(i64::MIN);
        (min > self.min).then(|| {
            self.min = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_rows_are_shaped_by_name() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        let input = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Int64, true),
            Field::new("a", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            input,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("c", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
        ]));
        let out = conform_batch(&batch, &target).unwrap();
        assert_eq!(out.num_columns(), 3);
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(out.column(2).data_type(), &DataType::Int32);
    }
}
