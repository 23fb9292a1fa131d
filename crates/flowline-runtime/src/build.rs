//! Graph → tasks: each node of each pipeline becomes `parallelism` subtasks wired by
//! bounded channels ([`Inbox`]es); sources and operators run on threads, sinks on tokio.

use crate::*;

pub(crate) type BlockingTask = Box<dyn FnOnce() -> Result<()> + Send>;
pub(crate) type AsyncTask = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Everything a task builder needs to know about the job.
pub(crate) struct Ctx<'a> {
    pub(crate) metrics: &'a MetricsRegistry,
    pub(crate) stop: &'a StopSignal,
    pub(crate) parallelism: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) null_rowtime: NullRowtime,
    /// Tasks built, started once the restored checkpoint (if any) is known to fit.
    pub(crate) blocking: Vec<BlockingTask>,
    pub(crate) futures: Vec<AsyncTask>,
    pub(crate) registry: TaskRegistry,
    pub(crate) checkpoint: Option<&'a (dyn Fn(String) -> TaskCheckpoint + Sync)>,
    pub(crate) job: Option<String>,
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// Scratch directory of state-table spill runs (emptied at start).
    pub(crate) local_state: std::path::PathBuf,
    /// Bytes of state each operator subtask's tables may hold in memory.
    pub(crate) state_budget: usize,
    pub(crate) shared: Arc<flowline_connectors::job::JobShared>,
    /// Late-row sink inboxes of the current pipeline (one per subtask), if it has one.
    pub(crate) late: Option<Inbox>,
    pub(crate) late_schema: Option<SchemaRef>,
    /// `p<index>.<sink table>`: prefixes task keys and metric labels.
    pub(crate) pipeline: String,
    pub(crate) operators: usize,
    pub(crate) sources: usize,
    pub(crate) restoring: Option<checkpoint::RestoreClock>,
}

impl Ctx<'_> {
    pub(crate) fn task_context(&self, table: &str, subtask: usize) -> TaskContext {
        TaskContext {
            table: table.to_string(),
            subtask,
            parallelism: self.parallelism,
            metrics: self.metrics.clone(),
            job: self.job.clone(),
            state_dir: self.state_dir.clone(),
            shared: self.shared.clone(),
        }
    }

    /// What subtask `subtask` of operator `name` gives its state tables: a spill directory, its
    /// share of the job's state memory, its key groups.
    pub(crate) fn state_env(&self, name: &str, subtask: usize) -> StateEnv {
        let max = flowline_common::keygroups::DEFAULT_MAX_PARALLELISM;
        StateEnv {
            dir: self
                .local_state
                .join(format!("{}-{subtask}", name.replace(['/', '#'], "_"))),
            budget: self.state_budget,
            max_parallelism: max,
            key_groups: flowline_common::keygroups::key_groups_of(subtask, max, self.parallelism),
        }
    }

    /// Registers a task for checkpoints; its handle when the job checkpoints.
    pub(crate) fn register(&mut self, key: String, descriptor: String) -> Option<TaskCheckpoint> {
        self.registry.tasks.insert(key.clone(), descriptor);
        self.checkpoint.map(|f| f(key))
    }
}

pub(crate) fn create_sink(b: &TableBinding, subtask: usize, ctx: &Ctx) -> Result<Box<dyn Sink>> {
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
pub(crate) fn spawn_node(node: &Node, target: &Inbox, route: Route, ctx: &mut Ctx) -> Result<()> {
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
                    marks: SourceMarks::new(),
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
                let state = ctx.state_env(&name, subtask);
                let state_dir = state.dir.clone();
                let checkpoint =
                    ctx.register(format!("{name}#{subtask}"), format!("{:?}", op.operator));
                let completed = checkpoint.as_ref().map(|cp| {
                    let rx = cp.completed.clone();
                    flowline_operators::materialize::CompletedCheckpoint(Arc::new(move || {
                        *rx.borrow()
                    }))
                });
                let operator = op
                    .operator
                    .create(&OperatorContext {
                        subtask,
                        keep_late: late.is_some(),
                        state,
                        completed,
                    })
                    .map_err(|source| RuntimeError::Operator {
                        context: format!("creating operator {name}"),
                        source,
                    })?;
                let task = OperatorTask::new(
                    op,
                    operator,
                    state_dir,
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
