//! An operator subtask: merges its inputs' watermarks, aligns barriers, feeds the operator and
//! routes its late rows.

use std::ops::Range;

use flowline_common::keygroups;
use flowline_state::table::{Run, TableRun};

use crate::*;

/// How often an operator's state size is published between watermarks.
pub(crate) const STATE_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct OperatorTask {
    pub(crate) name: String,
    pub(crate) operator: Box<dyn Operator>,
    pub(crate) chain: flowline_operators::StatelessChain,
    pub(crate) rx: mpsc::Receiver<Envelope>,
    /// The producers' watermarks and their merge (the operator's watermark).
    pub(crate) inputs: InputWatermarks,
    /// Per producer: which of the operator's inputs it feeds.
    pub(crate) input_of: Vec<usize>,
    pub(crate) idle_sent: bool,
    pub(crate) output: Output,
    pub(crate) late: Option<Output>,
    pub(crate) late_schema: Option<SchemaRef>,
    pub(crate) rows_in: Counters,
    pub(crate) rows_out: Counters,
    pub(crate) late_rows: Counter,
    pub(crate) late_seen: u64,
    pub(crate) state_bytes: Gauge,
    pub(crate) tables: TableGauges,
    /// Where its state tables spill (and restored runs are read into).
    pub(crate) state_dir: std::path::PathBuf,
    /// The key groups it serves.
    pub(crate) key_groups: Range<u16>,
    /// What it is, as `flowline explain` shows it (for messages).
    pub(crate) operator_description: String,
    pub(crate) open_windows: Gauge,
    pub(crate) watermark_gauge: Gauge,
    pub(crate) aligner: Aligner,
    pub(crate) checkpoint: Option<TaskCheckpoint>,
    pub(crate) restoring: Option<checkpoint::RestoreClock>,
    /// A stop barrier passed: exit without flushing or sending `End`.
    pub(crate) stopped: bool,
    /// When the state-size gauges were last set.
    pub(crate) published: Instant,
}

impl OperatorTask {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: &OperatorNode,
        operator: Box<dyn Operator>,
        state_dir: std::path::PathBuf,
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
        let max = keygroups::DEFAULT_MAX_PARALLELISM;
        Self {
            key_groups: keygroups::key_groups_of(subtask, max, ctx.parallelism),
            operator_description: format!("{:?}", node.operator),
            operator,
            chain: node.chain.clone(),
            rx,
            inputs: InputWatermarks::new(input_of.len()),
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
            tables: TableGauges::new(m, &labels),
            state_dir,
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

    pub(crate) fn err(&self, source: datafusion::error::DataFusionError) -> RuntimeError {
        RuntimeError::Operator {
            context: format!("operator {}", self.name),
            source,
        }
    }

    pub(crate) fn run(mut self) -> Result<()> {
        let res = self.pump();
        if !self.stopped {
            self.output.broadcast(Message::End);
            if let Some(late) = &mut self.late {
                late.broadcast(Message::End);
            }
        }
        res
    }

    pub(crate) fn restore(&mut self) -> Result<()> {
        let Some(cp) = self.checkpoint.clone() else {
            return Ok(());
        };
        // Taken at this parallelism: this subtask's own state. At another: every old subtask's,
        // of which the state tables serve this subtask's key groups.
        let Some(checkpoint::Restoring {
            rescaled,
            states: parts,
        }) = cp.restoring()
        else {
            // The checkpoint holds nothing of this operator (it is new in the script): its
            // state as of that checkpoint is empty.
            if cp.restored_id() > 0 {
                self.operator.checkpointed(cp.restored_id());
            }
            return Ok(());
        };
        // Old subtask `i` of `parts.len()` owned these key groups: its tables speak for them.
        let old_parallelism = parts.len();
        let owner = |i: usize| match rescaled {
            true => {
                keygroups::key_groups_of(i, keygroups::DEFAULT_MAX_PARALLELISM, old_parallelism)
            }
            false => self.key_groups.clone(),
        };
        // Per table: (run name, key groups it speaks for), newest first per old subtask.
        let mut listed: std::collections::BTreeMap<String, Vec<(String, Range<u16>)>> =
            Default::default();
        let mut payloads = Vec::new();
        // The watermark: the least of the old subtasks' (each held its own keys' time).
        let mut w = if parts.is_empty() {
            NO_WATERMARK
        } else {
            END_OF_TIME
        };
        let mut marks: Option<Vec<i64>> = None;
        for (i, state) in parts.into_iter().enumerate() {
            let (header, payload) = open_envelope(state)?;
            let owned = owner(i);
            for (table, runs) in header["tables"].as_object().into_iter().flatten() {
                let list = listed.entry(table.clone()).or_default();
                for r in runs.as_array().into_iter().flatten() {
                    list.push(table_run(r, &owned)?);
                }
            }
            payloads.push(payload);
            w = w.min(header["watermark"].as_i64().unwrap_or(NO_WATERMARK));
            // Per producer: only meaningful when the producers are the same subtasks as then.
            if !rescaled {
                let m = header["inputs"].as_array().into_iter().flatten();
                marks = Some(m.map(|m| m.as_i64().unwrap_or(NO_WATERMARK)).collect());
            }
        }
        // State tables first: the operator's own bytes may refer to them. A run several old
        // subtasks listed is fetched once.
        let names: Vec<String> = {
            let mut n: Vec<String> = listed.values().flatten().map(|(n, _)| n.clone()).collect();
            n.sort_unstable();
            n.dedup();
            n
        };
        let fetched: std::collections::HashMap<String, Arc<Run>> = names
            .iter()
            .cloned()
            .zip(cp.fetch_runs(&names, &self.state_dir)?)
            .collect();
        let tables = listed
            .into_iter()
            .map(|(table, runs)| TableRuns {
                table,
                runs: runs
                    .into_iter()
                    .map(|(name, key_groups)| TableRun {
                        run: fetched[&name].clone(),
                        key_groups,
                    })
                    .collect(),
            })
            .collect();
        self.operator
            .restore_tables(tables)
            .map_err(|e| self.err(e))?;
        match rescaled {
            false => self.operator.restore(payloads[0]),
            true => self.operator.restore_rescaled(&payloads).map_err(|e| {
                datafusion::common::DataFusionError::Execution(format!(
                    "{} ({e}); run with -p {old_parallelism}, the parallelism the checkpoint was taken at, or with --fresh to start over",
                    self.operator_description
                ))
            }),
        }
        .map_err(|e| self.err(e))?;
        self.inputs.restore(marks.unwrap_or_default(), w);
        if w > NO_WATERMARK {
            // Windows up to `w` fired before the snapshot: this only sets the operator's clock.
            let out = self.operator.on_watermark(w).map_err(|e| self.err(e))?;
            self.emit_all(out)?;
            self.output.broadcast(Message::Watermark(self.forwarded(w)));
        }
        self.publish_state();
        Ok(())
    }

    pub(crate) fn on_barrier(&mut self, barrier: Barrier) -> Result<()> {
        let Some(cp) = &self.checkpoint else {
            return Ok(());
        };
        let started = Instant::now();
        let payload = self.operator.snapshot().map_err(|e| self.err(e))?;
        let tables = self.operator.snapshot_tables();
        self.operator.checkpointed(barrier.id);
        // Each run as [name, first key group, end]: the key groups it speaks for in this list.
        let (names, runs) = listed_runs(tables);
        let state = envelope(
            serde_json::json!({"watermark": self.inputs.merged(), "inputs": self.inputs.marks(), "tables": names}),
            payload,
        );
        cp.save(barrier.id, state, runs, started.elapsed());
        self.publish_state();
        self.output.broadcast(Message::Barrier(barrier));
        if let Some(late) = &self.late {
            late.broadcast(Message::Barrier(barrier));
        }
        self.stopped = barrier.stop;
        Ok(())
    }

    pub(crate) fn pump(&mut self) -> Result<()> {
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
                        self.inputs.on_row(from);
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
                        let merged = self.inputs.on_watermark(from, ts);
                        if !self.advance(merged)? {
                            return Ok(());
                        }
                    }
                    Message::Idle => {
                        let merged = self.inputs.on_idle(from);
                        if !self.advance(merged)? {
                            return Ok(());
                        }
                    }
                    Message::End => {
                        let merged = self.inputs.on_end(from);
                        if self.inputs.all_ended() {
                            return self.finish();
                        }
                        if !self.advance(merged)? {
                            return Ok(());
                        }
                    }
                    Message::Barrier(_) => {}
                }
            }
        }
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        let out = self.operator.on_end().map_err(|e| self.err(e))?;
        self.emit_all(out)?;
        self.route_late()?;
        self.publish_state();
        if let Some(cp) = self.checkpoint.clone() {
            if self.operator.keeps_state_when_finished() {
                // Its tables are a result in themselves (a materialized table): later
                // checkpoints keep them, so a restart serves them again.
                let payload = self.operator.snapshot().map_err(|e| self.err(e))?;
                let tables = self.operator.snapshot_tables();
                let (names, runs) = listed_runs(tables);
                let state = envelope(
                    serde_json::json!({"watermark": NO_WATERMARK, "inputs": [], "tables": names}),
                    payload,
                );
                return cp.finished_with_runs(state, runs);
            }
            // Everything is emitted: later checkpoints record this operator as empty.
            let state = envelope(
                serde_json::json!({"watermark": NO_WATERMARK, "inputs": []}),
                Vec::new(),
            );
            drop(cp.finished(state));
        }
        Ok(())
    }

    /// Acts on the merged watermark (`Some` when it advanced, see [`InputWatermarks`]): the
    /// operator fires what it completes, and the watermark goes downstream. Tells downstream when
    /// every input is idle. False if downstream is gone.
    pub(crate) fn advance(&mut self, merged: Option<i64>) -> Result<bool> {
        if self.inputs.idle() {
            if !self.idle_sent {
                // Idle until an input speaks again.
                self.idle_sent = true;
                self.output.broadcast(Message::Idle);
            }
        } else {
            self.idle_sent = false;
        }
        let Some(min) = merged else { return Ok(true) };
        let out = self.operator.on_watermark(min).map_err(|e| self.err(e))?;
        if !self.emit_all(out)? {
            return Ok(false);
        }
        self.watermark_gauge.set(min.max(0) as u64);
        self.publish_state();
        self.output
            .broadcast(Message::Watermark(self.forwarded(min)));
        Ok(true)
    }

    /// The watermark sent downstream for input watermark `w`: held back by the operator's delay
    /// (the end of input, `END_OF_TIME`, passes unchanged).
    pub(crate) fn forwarded(&self, w: i64) -> i64 {
        if w == END_OF_TIME {
            w
        } else {
            w.saturating_sub(self.operator.watermark_delay())
        }
    }

    pub(crate) fn publish_state(&mut self) {
        self.published = Instant::now();
        self.state_bytes.set(self.operator.state_bytes() as u64);
        self.open_windows.set(self.operator.open_windows() as u64);
        self.tables.set(&self.operator.table_stats());
    }

    /// Emits what a watermark or the end of input completed, and then what the operator still
    /// has pending of it, a part at a time (each sent before the next is made).
    fn emit_all(&mut self, batches: Vec<RecordBatch>) -> Result<bool> {
        if !self.emit(batches)? {
            return Ok(false);
        }
        while let Some(more) = self.operator.pending().map_err(|e| self.err(e))? {
            if !self.emit(more)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn emit(&mut self, batches: Vec<RecordBatch>) -> Result<bool> {
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

    pub(crate) fn route_late(&mut self) -> Result<()> {
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

/// An operator's state tables in `/metrics`.
pub(crate) struct TableGauges {
    disk: Gauge,
    spills: Gauge,
    compactions: Gauge,
    checkpoint: Gauge,
}

impl TableGauges {
    fn new(m: &MetricsRegistry, labels: &[(&str, &str)]) -> Self {
        Self {
            disk: m.gauge(
                "flowline_operator_state_disk_bytes",
                "bytes of operator state in spill runs on local disk",
                labels,
            ),
            spills: m.gauge(
                "flowline_operator_state_spills",
                "times the operator's state tables moved cold entries to disk (since start)",
                labels,
            ),
            compactions: m.gauge(
                "flowline_operator_state_compactions",
                "times the operator's state tables merged their runs (since start)",
                labels,
            ),
            checkpoint: m.gauge(
                "flowline_operator_state_checkpoint_bytes",
                "bytes the operator's state tables wrote for the last checkpoint (what changed)",
                labels,
            ),
        }
    }

    fn set(&self, s: &flowline_state::table::TableStats) {
        self.disk.set(s.disk_bytes);
        self.spills.set(s.spills);
        self.compactions.set(s.compactions);
        self.checkpoint.set(s.checkpoint_bytes);
    }
}

/// A run as a checkpoint's header lists it: `[name, first key group, end]`, or a bare name
/// (checkpoints before rescaling), which speaks for the key groups its subtask `owned`.
/// State tables' runs as a checkpoint lists them (per table, each run as [name, first key
/// group, end]: the key groups it speaks for in this list), and the runs themselves.
fn listed_runs(
    tables: Vec<TableRuns>,
) -> (serde_json::Map<String, serde_json::Value>, Vec<Arc<Run>>) {
    let names = tables
        .iter()
        .map(|t| {
            let runs = t
                .runs
                .iter()
                .map(|r| serde_json::json!([r.run.name(), r.key_groups.start, r.key_groups.end]));
            (t.table.clone(), runs.collect())
        })
        .collect();
    let runs = tables
        .into_iter()
        .flat_map(|t| t.runs.into_iter().map(|r| r.run))
        .collect();
    (names, runs)
}

fn table_run(r: &serde_json::Value, owned: &Range<u16>) -> Result<(String, Range<u16>)> {
    let bad = || RuntimeError::Config("a task's checkpointed state lists a malformed run".into());
    let (name, listed) = match r {
        serde_json::Value::String(n) => (n.clone(), owned.clone()),
        serde_json::Value::Array(a) => {
            let kg = |i: usize| a.get(i).and_then(|v| v.as_u64()).map(|v| v as u16);
            let name = a.first().and_then(|n| n.as_str()).ok_or_else(bad)?;
            (
                name.to_string(),
                kg(1).ok_or_else(bad)?..kg(2).ok_or_else(bad)?,
            )
        }
        _ => return Err(bad()),
    };
    let lo = listed.start.max(owned.start);
    let hi = listed.end.min(owned.end);
    Ok((name, lo..hi.max(lo)))
}
