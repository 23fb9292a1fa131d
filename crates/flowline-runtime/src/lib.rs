//! Executes a [`JobGraph`]: one task per source subtask (with its stateless chain fused in) and one
//! per sink subtask, joined by bounded channels of [`Message`]s.
//!
//! ```text
//!  source s (blocking thread) ──poll──▶ chain.apply ──Message──▶ [channel, cap 4] ──▶ sink s (tokio task)
//!  source s of a 2nd UNION input ─────────────────────────────────┘
//! ```
//!
//! Backpressure: a full channel blocks the source thread in `blocking_send`. A stop request
//! (Ctrl-C, SIGTERM) makes every source send `End`, so sinks finish and publish their files.
//! The first error stops the whole job and is returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use flowline_common::limits::CHANNEL_CAPACITY_BATCHES;
use flowline_common::{Counter, Message, MetricsRegistry};
use flowline_connectors::collect::CollectSink;
use flowline_connectors::{ConnectorError, Poll, Sink, Source, TaskContext};
use flowline_operators::StatelessChain;
use flowline_planner::{Branch, JobGraph, SinkTarget, TableBinding};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("{context}: {source}")]
    Operator { context: String, source: datafusion::error::DataFusionError },
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

/// Runs the job to completion (bounded inputs) or until `stop` is signalled.
pub async fn run_job(graph: &JobGraph, metrics: &MetricsRegistry, stop: &StopSignal) -> Result<JobOutput> {
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let mut collected = Vec::new();
    for (pi, pipeline) in graph.pipelines.iter().enumerate() {
        let out = Arc::new(Mutex::new(Vec::new()));
        collected.push(out.clone());
        let sink_name = match &pipeline.sink {
            SinkTarget::Table(b) => b.table.name.clone(),
            SinkTarget::Collect => format!("select_{pi}"),
        };
        for subtask in 0..graph.parallelism {
            let ctx = |table: &str| TaskContext {
                table: table.to_string(),
                subtask,
                parallelism: graph.parallelism,
                metrics: metrics.clone(),
            };
            let sink: Box<dyn Sink> = match &pipeline.sink {
                SinkTarget::Table(b) => {
                    let create = b.factory.sink.ok_or_else(|| RuntimeError::Internal(format!("{} has no sink", b.factory.name)))?;
                    create(&b.table, &b.options, &ctx(&b.table.name))?
                }
                SinkTarget::Collect => Box::new(CollectSink { batches: out.clone() }),
            };
            let (tx, rx) = mpsc::channel::<Message>(CHANNEL_CAPACITY_BATCHES);
            let st = subtask.to_string();
            let counters = Counters::new(metrics, "flowline_sink_rows_total", "flowline_sink_batches_total", &[("table", &sink_name), ("subtask", &st)]);
            tasks.spawn(sink_task(sink, rx, pipeline.branches.len(), counters));
            for (bi, branch) in pipeline.branches.iter().enumerate() {
                let op = format!("{sink_name}.chain{bi}");
                let chain_in = Counters::new(metrics, "flowline_operator_rows_in_total", "flowline_operator_batches_in_total", &[("operator", &op), ("subtask", &st)]);
                let chain_out = Counters::new(metrics, "flowline_operator_rows_out_total", "flowline_operator_batches_out_total", &[("operator", &op), ("subtask", &st)]);
                let source_counters = Counters::new(
                    metrics,
                    "flowline_source_rows_total",
                    "flowline_source_batches_total",
                    &[("table", &branch.source.table.name), ("subtask", &st)],
                );
                let task = SourceTask {
                    branch: branch.clone(),
                    ctx: ctx(&branch.source.table.name),
                    tx: tx.clone(),
                    stop: stop.clone(),
                    source_counters,
                    chain_in,
                    chain_out,
                    operator: op,
                };
                tasks.spawn_blocking(move || task.run());
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

struct SourceTask {
    branch: Branch,
    ctx: TaskContext,
    tx: mpsc::Sender<Message>,
    stop: StopSignal,
    source_counters: Counters,
    chain_in: Counters,
    chain_out: Counters,
    operator: String,
}

impl SourceTask {
    fn create(&self) -> Result<Box<dyn Source>> {
        let TableBinding { table, factory, options } = &self.branch.source;
        let create = factory.source.ok_or_else(|| RuntimeError::Internal(format!("{} has no source", factory.name)))?;
        Ok(create(table, options, &self.ctx, self.branch.projection.as_deref())?)
    }

    fn run(self) -> Result<()> {
        let res = self.pump();
        // Whatever happened, tell the sink this input is over (it may already be gone).
        let _ = self.tx.blocking_send(Message::End);
        res
    }

    fn pump(&self) -> Result<()> {
        let mut source = self.create()?;
        let chain: &StatelessChain = &self.branch.chain;
        while !self.stop.is_stopped() {
            match source.poll()? {
                Poll::Batch(batch) => {
                    self.source_counters.add(&batch);
                    self.chain_in.add(&batch);
                    let out = chain
                        .apply(batch)
                        .map_err(|source| RuntimeError::Operator { context: format!("operator {}", self.operator), source })?;
                    if let Some(out) = out {
                        self.chain_out.add(&out);
                        if self.tx.blocking_send(Message::Batch(out)).is_err() {
                            // The sink is gone: the job is failing elsewhere.
                            return Ok(());
                        }
                    }
                }
                Poll::Pending(wait) => std::thread::sleep(wait.min(STOP_CHECK_INTERVAL)),
                Poll::End => return Ok(()),
            }
        }
        Ok(())
    }
}

async fn sink_task(mut sink: Box<dyn Sink>, mut rx: mpsc::Receiver<Message>, inputs: usize, counters: Counters) -> Result<()> {
    let mut ended = 0;
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
        match msg {
            Some(Message::Batch(batch)) => {
                counters.add(&batch);
                tokio::task::block_in_place(|| sink.write(batch))?;
            }
            Some(Message::End) => {
                ended += 1;
                if ended == inputs {
                    tokio::task::block_in_place(|| sink.finish())?;
                    return Ok(());
                }
            }
            Some(Message::Watermark(_)) | Some(Message::Barrier(_)) => {}
            // Every sender gone without End: an upstream task failed; drop the sink unfinished.
            None => return Ok(()),
        }
    }
}
