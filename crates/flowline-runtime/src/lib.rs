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

mod align;
mod build;
mod checkpoint;
mod exchange;
mod memory;
mod operator_task;
mod sink_task;
mod source_task;
mod watermark;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use flowline_common::{
    failpoint, Barrier, Counter, EventTimeMs, Gauge, Message, MetricsRegistry, END_OF_TIME,
    NO_WATERMARK,
};
use flowline_connectors::collect::CollectSink;
use flowline_connectors::{conform_batch, ConnectorError, Poll, Sink, Source, TaskContext};
use flowline_operators::{Operator, OperatorContext, StateEnv, TableRuns};
use flowline_planner::{
    Branch, JobGraph, Node, OperatorNode, SinkTarget, TableBinding, WatermarkSpec,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use align::{Aligner, Step};
use build::*;
pub use checkpoint::CheckpointConfig;
use checkpoint::{envelope, open_envelope, TaskCheckpoint, TaskRegistry};
use exchange::{Envelope, Inbox, Output, Route};
pub use flowline_connectors::job::JobShared;
pub use memory::memory_limit;
use operator_task::*;
use sink_task::*;
use source_task::*;
use watermark::InputWatermarks;

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

impl RuntimeError {
    /// Whose fault the error is.
    pub fn fault(&self) -> flowline_common::fault::Fault {
        use datafusion::error::DataFusionError as D;
        use flowline_common::fault::Fault;
        match self {
            RuntimeError::Connector(e) => e.fault(),
            RuntimeError::Operator { source, .. } => match source {
                D::Internal(_) => Fault::Internal,
                D::IoError(_) | D::ObjectStore(_) => Fault::External { retryable: false },
                // Expressions failing on the data (a cast, a division) and the like.
                _ => Fault::User,
            },
            RuntimeError::Config(_) => Fault::User,
            RuntimeError::Internal(_) => Fault::Internal,
        }
    }
}

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

/// Where a job keeps local state (write-ahead logs), how it checkpoints, and what its tasks
/// share with each other and with the HTTP server ([`JobShared`]: its HTTP tables and file
/// committers; give the server the same one).
#[derive(Default)]
pub struct JobState {
    pub dir: Option<std::path::PathBuf>,
    pub checkpoint: Option<CheckpointConfig>,
    pub shared: Arc<JobShared>,
}

/// The scratch directory of the job's state tables; a temporary one (a job without a state
/// directory) is removed when the job ends.
struct LocalState(std::path::PathBuf, bool);

impl Drop for LocalState {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The scratch directory state tables spill to, emptied: under the state directory, or a
/// temporary one for a job without.
fn local_state_dir(state_dir: Option<&std::path::Path>) -> Result<std::path::PathBuf> {
    let dir = match state_dir {
        Some(d) => d.join("local"),
        None => std::env::temp_dir().join(format!("flowline-state-{}", std::process::id())),
    };
    let io = |e: std::io::Error| {
        RuntimeError::Config(format!(
            "state tables' local directory {}: {e}",
            dir.display()
        ))
    };
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    std::fs::create_dir_all(&dir).map_err(io)?;
    Ok(dir)
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
            let (c, h) = checkpoint::coordinator(cfg, metrics, stop, graph.parallelism);
            (Some(c), Some(h))
        }
        None => (None, None),
    };
    let local_state = LocalState(local_state_dir(state.dir.as_deref())?, state.dir.is_none());
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
        local_state: local_state.0.clone(),
        state_budget: memory::subtask_budget(graph)?,
        shared: state.shared.clone(),
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
