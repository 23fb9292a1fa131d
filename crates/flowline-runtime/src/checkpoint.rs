//! Checkpoints: the coordinator and each task's handle on it (barrier alignment: align.rs).
//!
//! ```text
//!  coordinator ──trigger(n)──▶ sources: record position, send Barrier(n) downstream
//!  operator: Barrier(n) from every input (inputs that delivered it wait: alignment)
//!            ─▶ snapshot state ─▶ forward Barrier(n)
//!  sink:     aligned Barrier(n) ─▶ pre-commit (flush files to in-progress names)
//!  every task ──state──▶ store (a writer thread) ──ack──▶ coordinator
//!  coordinator: all acked ─▶ manifest n ─▶ completed = n ─▶ sinks commit (publish files)
//! ```
//!
//! A task whose input is exhausted reports `Finished` with its final state; later checkpoints
//! use that state for it, and a sink that finished learns from the reply which checkpoint made
//! its last files safe to publish. When every task has finished, a final checkpoint is taken
//! (its manifest says `finished`), so running a finished pipeline again does nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowline_common::{failpoint, Barrier, Counter, Gauge, MetricsRegistry};
use flowline_state::table::Run;
use flowline_state::{Checkpoints, Manifest, Restored, TaskEntry};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{RuntimeError, StopSignal};

/// How the job checkpoints (from `SET` options and the command line).
pub struct CheckpointConfig {
    pub interval: Duration,
    /// EXACTLY_ONCE aligns barriers; AT_LEAST_ONCE lets rows from inputs that delivered the
    /// barrier through before the snapshot (they may be processed again after a restore).
    pub exactly_once: bool,
    pub timeout: Duration,
    pub retained: usize,
    pub store: Checkpoints,
    pub job: String,
    /// The checkpoint to resume from.
    pub restored: Option<Restored>,
    /// When reading the checkpoints began: recovery time is measured from here.
    pub opened: Instant,
}

/// Counts down the operator tasks still rebuilding their state; the last one reports how long
/// recovery took (reading the checkpoint and rebuilding every operator) as `flowline_restore_ms`.
#[derive(Clone)]
pub(crate) struct RestoreClock {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    opened: Instant,
    id: u64,
    bytes: u64,
    runs: usize,
    gauge: Gauge,
}

impl RestoreClock {
    pub(crate) fn new(cfg: &CheckpointConfig, metrics: &MetricsRegistry) -> Option<Self> {
        let r = cfg.restored.as_ref()?;
        Some(Self {
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            opened: cfg.opened,
            id: r.manifest.id,
            bytes: r.states.values().map(|s| s.len() as u64).sum(),
            runs: r.manifest.tasks.values().map(|t| t.shared.len()).sum(),
            gauge: metrics.gauge(
                "flowline_restore_ms",
                "time to read the restored checkpoint and rebuild every operator's state",
                &[],
            ),
        })
    }

    /// One more task will call [`RestoreClock::done`]; all must enlist before any runs.
    pub(crate) fn enlist(&self) {
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn done(self) {
        if self
            .pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.report();
        }
    }

    /// For a job without operator tasks: nothing to wait for.
    pub(crate) fn report_if_idle(&self) {
        if self.pending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            self.report();
        }
    }

    fn report(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.gauge.set(ms.max(1));
        eprintln!(
            "flowline: restored checkpoint {} ({:.1} MB of task state, {} state-table runs) in {ms} ms",
            self.id,
            self.bytes as f64 / 1e6,
            self.runs
        );
    }
}

pub(crate) enum Report {
    Ack {
        id: u64,
        key: String,
        bytes: u64,
        /// Shared runs the state references (written now or by an earlier checkpoint).
        shared: Vec<String>,
        /// Bytes of the runs written now (not in `bytes`: the manifest's size is the file's).
        uploaded: u64,
        pause: Duration,
    },
    Decline {
        id: u64,
        key: String,
        reason: String,
    },
    Finished {
        key: String,
        state: Vec<u8>,
        /// State-table runs the final state refers to (uploaded already).
        shared: Vec<String>,
        reply: Option<oneshot::Sender<u64>>,
    },
}

/// A task's handle on the checkpoint machinery.
#[derive(Clone)]
pub(crate) struct TaskCheckpoint {
    pub key: String,
    reports: mpsc::UnboundedSender<Report>,
    pub trigger: watch::Receiver<Option<Barrier>>,
    pub completed: watch::Receiver<u64>,
    store: Checkpoints,
    pub exactly_once: bool,
    restored: Option<Arc<RestoredStates>>,
    /// Shared runs this task knows the store holds (uploaded, or restored from).
    uploaded: Arc<Mutex<HashSet<String>>>,
}

/// The states a task restores from ([`TaskCheckpoint::restoring`]).
pub(crate) struct Restoring<'a> {
    /// Taken at another parallelism: `states` are every old subtask's.
    pub rescaled: bool,
    pub states: Vec<&'a [u8]>,
}

/// The checkpoint a job restores from.
struct RestoredStates {
    id: u64,
    /// Each task's state, by task key (`name#subtask`).
    states: BTreeMap<String, Vec<u8>>,
    /// Whether it was taken at another parallelism than this run's.
    rescaled: bool,
    /// This run's parallelism.
    parallelism: usize,
}

impl TaskCheckpoint {
    /// This task's state in the checkpoint the job resumes from: (checkpoint id, bytes). None
    /// when the checkpoint was taken at another parallelism: see [`TaskCheckpoint::rescaled`].
    pub fn restored(&self) -> Option<(u64, &[u8])> {
        let r = self.restored.as_ref().filter(|r| !r.rescaled)?;
        r.states.get(&self.key).map(|s| (r.id, s.as_slice()))
    }

    /// When the checkpoint was taken at another parallelism: the states of every subtask this
    /// task had then, in subtask order. Keyed state is handed out by key group from all of
    /// them; source splits and sink commits by their own rules.
    pub fn rescaled(&self) -> Option<Vec<(usize, &[u8])>> {
        let r = self.restored.as_ref().filter(|r| r.rescaled)?;
        let name = self.key.rsplit_once('#').map_or(&*self.key, |(n, _)| n);
        let mut parts: Vec<(usize, &[u8])> = r
            .states
            .iter()
            .filter_map(|(k, s)| {
                let (n, subtask) = k.rsplit_once('#')?;
                (n == name).then(|| Some((subtask.parse().ok()?, s.as_slice())))?
            })
            .collect();
        // In subtask order (the keys sort `#10` before `#2`).
        parts.sort_by_key(|(subtask, _)| *subtask);
        Some(parts)
    }

    /// What this task restores from: its own state, or, when the checkpoint was taken at
    /// another parallelism (`rescaled`), every old subtask's in subtask order. `None`: nothing.
    pub fn restoring(&self) -> Option<Restoring<'_>> {
        if let Some((_, state)) = self.restored() {
            return Some(Restoring {
                rescaled: false,
                states: vec![state],
            });
        }
        let states: Vec<&[u8]> = self.rescaled()?.into_iter().map(|(_, s)| s).collect();
        (!states.is_empty()).then_some(Restoring {
            rescaled: true,
            states,
        })
    }

    /// [`TaskCheckpoint::rescaled`] shared out whole: old subtask `i`'s state goes to subtask
    /// `i mod parallelism` (a sink's commits, which must happen once).
    pub fn rescaled_share(&self) -> Option<Vec<&[u8]>> {
        let p = self.restored.as_ref()?.parallelism.max(1);
        let me: usize = self.key.rsplit_once('#')?.1.parse().ok()?;
        let parts = self.rescaled()?;
        Some(
            parts
                .into_iter()
                .filter(|(i, _)| i % p == me)
                .map(|(_, s)| s)
                .collect(),
        )
    }

    pub fn restored_id(&self) -> u64 {
        self.restored.as_ref().map_or(0, |r| r.id)
    }

    /// Writes the state and the state-table runs the store does not hold yet on a background
    /// thread, then acknowledges the checkpoint; `pause` is how long the task stopped
    /// processing to take it.
    pub fn save(&self, id: u64, state: Vec<u8>, runs: Vec<Arc<Run>>, pause: Duration) {
        let (store, reports, key) = (self.store.clone(), self.reports.clone(), self.key.clone());
        let uploaded = self.uploaded.clone();
        std::thread::spawn(move || {
            // A run may be listed twice (for two old subtasks' key groups, after a rescale).
            let mut shared: Vec<String> = runs.iter().map(|r| r.name()).collect();
            shared.sort_unstable();
            shared.dedup();
            let written = upload_runs(&store, &uploaded, &runs)
                .and_then(|run_bytes| Ok((store.put_task(id, &key, state)?, run_bytes)));
            let report = match written {
                Ok((bytes, uploaded)) => Report::Ack {
                    id,
                    key,
                    bytes,
                    shared,
                    uploaded,
                    pause,
                },
                Err(e) => Report::Decline {
                    id,
                    key,
                    reason: e.to_string(),
                },
            };
            let _ = reports.send(report);
        });
    }

    /// Reads the shared runs `names` into `dir` and opens them (the local files are removed
    /// at once: a run reads through its open handle).
    pub fn fetch_runs(
        &self,
        names: &[String],
        dir: &std::path::Path,
    ) -> crate::Result<Vec<Arc<Run>>> {
        let io = |e: std::io::Error| {
            RuntimeError::Config(format!("restoring state runs into {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut runs = Vec::with_capacity(names.len());
        for name in names {
            let data = self
                .store
                .get_shared(name)
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
            let path = dir.join(name);
            std::fs::write(&path, data).map_err(io)?;
            let run = Run::open(&path).map_err(io)?;
            std::fs::remove_file(&path).map_err(io)?;
            runs.push(Arc::new(run));
            self.uploaded
                .lock()
                .expect("uploaded lock")
                .insert(name.clone());
        }
        Ok(runs)
    }

    pub fn decline(&self, id: u64, reason: String) {
        let _ = self.reports.send(Report::Decline {
            id,
            key: self.key.clone(),
            reason,
        });
    }

    /// The task has finished; `state` stands for it in later checkpoints. The receiver yields
    /// the first checkpoint completed with it.
    pub fn finished(&self, state: Vec<u8>) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        let _ = self.reports.send(Report::Finished {
            key: self.key.clone(),
            state,
            shared: Vec::new(),
            reply: Some(tx),
        });
        rx
    }

    /// [`TaskCheckpoint::finished`] with a final state that refers to state-table runs (a
    /// materialized table's contents outlive its input): they are written to the store first.
    pub fn finished_with_runs(&self, state: Vec<u8>, runs: Vec<Arc<Run>>) -> crate::Result<()> {
        upload_runs(&self.store, &self.uploaded, &runs)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let mut shared: Vec<String> = runs.iter().map(|r| r.name()).collect();
        shared.sort_unstable();
        shared.dedup();
        let _ = self.reports.send(Report::Finished {
            key: self.key.clone(),
            state,
            shared,
            reply: None,
        });
        Ok(())
    }
}

/// Writes the runs the store does not hold yet; the bytes written.
fn upload_runs(
    store: &Checkpoints,
    uploaded: &Mutex<HashSet<String>>,
    runs: &[Arc<Run>],
) -> Result<u64, flowline_state::StateError> {
    let mut bytes = 0;
    for run in runs {
        let name = run.name();
        if uploaded.lock().expect("uploaded lock").contains(&name) {
            continue;
        }
        // A part at a time: a merged run can be the table's whole state.
        bytes +=
            store.put_shared_from(&name, run.bytes, &|offset, buf| run.read_at(offset, buf))?;
        uploaded.lock().expect("uploaded lock").insert(name);
    }
    Ok(bytes)
}

/// A task's state in a checkpoint: the operator's, source's or sink's own bytes, then the
/// runtime fields (watermarks) as JSON, then the JSON's length. The header trails so that a large
/// payload is extended in place, not copied, while the task is paused.
pub(crate) fn envelope(header: serde_json::Value, mut payload: Vec<u8>) -> Vec<u8> {
    let h = serde_json::to_vec(&header).expect("JSON values serialize");
    // Room for the store's frame (checksum and magic) too.
    payload.reserve_exact(h.len() + 4 + 8);
    payload.extend_from_slice(&h);
    payload.extend_from_slice(&(h.len() as u32).to_le_bytes());
    payload
}

pub(crate) fn open_envelope(bytes: &[u8]) -> crate::Result<(serde_json::Value, &[u8])> {
    let bad = || RuntimeError::Config("a task's checkpointed state is malformed".into());
    let end = bytes.len().checked_sub(4).ok_or_else(bad)?;
    let n = u32::from_le_bytes(bytes[end..].try_into().expect("4 bytes")) as usize;
    let start = end.checked_sub(n).ok_or_else(bad)?;
    let header = serde_json::from_slice(&bytes[start..end]).map_err(|_| bad())?;
    Ok((header, &bytes[..start]))
}

/// The tasks of a job as checkpoints know them: key → descriptor.
#[derive(Default)]
pub(crate) struct TaskRegistry {
    pub tasks: BTreeMap<String, String>,
}

impl TaskRegistry {
    /// Refuses a checkpoint taken by a different pipeline, saying what differs. One taken at
    /// another parallelism fits when the pipeline's tasks are the same but for their subtasks.
    pub fn check(&self, r: &Restored, parallelism: usize, location: &str) -> crate::Result<()> {
        let id = r.manifest.id;
        let fresh = "run with --fresh to discard the checkpoints and start over (output already committed stays)";
        // Compared by task name (without `#subtask`) when the parallelism changed.
        let by_name = |key: &String| -> String {
            match r.manifest.parallelism != parallelism {
                true => key.rsplit_once('#').map_or(&**key, |(n, _)| n).to_string(),
                false => key.clone(),
            }
        };
        let ours: BTreeMap<String, &String> =
            self.tasks.iter().map(|(k, d)| (by_name(k), d)).collect();
        let theirs: BTreeMap<String, &String> = r
            .manifest
            .tasks
            .iter()
            .map(|(k, e)| (by_name(k), &e.descriptor))
            .collect();
        let mut diffs = Vec::new();
        for (k, d) in &ours {
            match theirs.get(k) {
                None => diffs.push(format!("{k} ({d}) is new")),
                Some(e) if e != d => diffs.push(format!("{k} was {e} and is now {d}")),
                _ => {}
            }
        }
        for (k, e) in &theirs {
            if !ours.contains_key(k) {
                diffs.push(format!("{k} ({e}) is gone"));
            }
        }
        if diffs.is_empty() {
            return Ok(());
        }
        diffs.truncate(5);
        Err(RuntimeError::Config(format!(
            "the pipeline no longer matches its checkpoint {id} in {location}: {}; {fresh}",
            diffs.join("; ")
        )))
    }
}

struct InFlight {
    id: u64,
    stop: bool,
    started: Instant,
    acked: BTreeMap<String, u64>,
    /// Per acknowledged task: the shared runs its state references.
    shared: BTreeMap<String, Vec<String>>,
    /// Bytes of shared runs the tasks wrote for it.
    uploaded: u64,
    pause: Duration,
}

struct CoordinatorMetrics {
    completed: Counter,
    failed: Counter,
    duration: Gauge,
    bytes: Gauge,
    pause: Gauge,
    pause_max: Gauge,
}

pub(crate) struct Coordinator {
    tasks: BTreeMap<String, String>,
    parallelism: usize,
    interval: Duration,
    timeout: Duration,
    retained: usize,
    store: Checkpoints,
    job: String,
    finished: BTreeMap<String, Vec<u8>>,
    /// The state-table runs of finished tasks' final states.
    finished_shared: BTreeMap<String, Vec<String>>,
    /// Finished tasks waiting for a checkpoint that records their final state.
    waiters: Vec<(String, oneshot::Sender<u64>)>,
    inflight: Option<InFlight>,
    next_id: u64,
    next_due: Instant,
    trigger: watch::Sender<Option<Barrier>>,
    completed: watch::Sender<u64>,
    reports: mpsc::UnboundedReceiver<Report>,
    stop: StopSignal,
    /// A stop checkpoint completed, or the final one: nothing more to do.
    done: bool,
    metrics: CoordinatorMetrics,
}

/// Creates the coordinator and the factory of task handles.
pub(crate) fn coordinator(
    cfg: &CheckpointConfig,
    metrics: &MetricsRegistry,
    stop: &StopSignal,
    parallelism: usize,
) -> (Coordinator, impl Fn(String) -> TaskCheckpoint) {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let (trigger, trigger_rx) = watch::channel(None);
    let restored_id = cfg.restored.as_ref().map_or(0, |r| r.manifest.id);
    let (completed, completed_rx) = watch::channel(restored_id);
    let restored = cfg.restored.as_ref().map(|r| {
        Arc::new(RestoredStates {
            id: r.manifest.id,
            states: r.states.clone(),
            rescaled: r.manifest.parallelism != parallelism,
            parallelism,
        })
    });
    let (store, exactly_once) = (cfg.store.clone(), cfg.exactly_once);
    let handle = move |key: String| TaskCheckpoint {
        key,
        reports: reports_tx.clone(),
        trigger: trigger_rx.clone(),
        completed: completed_rx.clone(),
        store: store.clone(),
        exactly_once,
        restored: restored.clone(),
        uploaded: Default::default(),
    };
    let m = |name, help| metrics.gauge(name, help, &[]);
    let c = Coordinator {
        tasks: BTreeMap::new(),
        parallelism: 0,
        interval: cfg.interval,
        timeout: cfg.timeout,
        retained: cfg.retained,
        store: cfg.store.clone(),
        job: cfg.job.clone(),
        finished: BTreeMap::new(),
        finished_shared: BTreeMap::new(),
        waiters: Vec::new(),
        inflight: None,
        next_id: restored_id + 1,
        next_due: Instant::now() + cfg.interval,
        trigger,
        completed,
        reports,
        stop: stop.clone(),
        done: false,
        metrics: CoordinatorMetrics {
            completed: metrics.counter(
                "flowline_checkpoints_completed_total",
                "checkpoints completed",
                &[],
            ),
            failed: metrics.counter(
                "flowline_checkpoints_failed_total",
                "checkpoints that failed or timed out",
                &[],
            ),
            duration: m(
                "flowline_checkpoint_duration_ms",
                "trigger to manifest, last checkpoint",
            ),
            bytes: m(
                "flowline_checkpoint_bytes",
                "state bytes of the last checkpoint",
            ),
            pause: m(
                "flowline_checkpoint_pause_us",
                "longest time a task stopped processing to snapshot, last checkpoint",
            ),
            pause_max: m(
                "flowline_checkpoint_pause_max_us",
                "longest time a task stopped processing to snapshot, any checkpoint of this run",
            ),
        },
    };
    (c, handle)
}

impl Coordinator {
    pub fn set_tasks(&mut self, tasks: BTreeMap<String, String>, parallelism: usize) {
        self.tasks = tasks;
        self.parallelism = parallelism;
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(20).min(self.interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The job has ended and its final checkpoint (every task finished) is written.
            if self.done && self.tasks.keys().all(|k| self.finished.contains_key(k)) {
                return;
            }
            tokio::select! {
                r = self.reports.recv() => match r {
                    Some(r) => self.on_report(r).await,
                    None => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn on_tick(&mut self) {
        if let Some(f) = &self.inflight {
            if f.started.elapsed() > self.timeout {
                let id = f.id;
                self.fail(
                    id,
                    format!(
                        "not complete after {:?} (execution.checkpointing.timeout)",
                        self.timeout
                    ),
                );
            }
            return;
        }
        if self.done {
            return;
        }
        let all_finished = self.tasks.keys().all(|k| self.finished.contains_key(k));
        if self.stop.is_stopped() {
            self.start(true).await;
        } else if all_finished || Instant::now() >= self.next_due {
            self.start(false).await;
        }
    }

    async fn start(&mut self, stop: bool) {
        let id = self.next_id;
        self.next_id += 1;
        self.inflight = Some(InFlight {
            id,
            stop,
            started: Instant::now(),
            acked: BTreeMap::new(),
            shared: BTreeMap::new(),
            uploaded: 0,
            pause: Duration::ZERO,
        });
        let _ = self.trigger.send(Some(Barrier { id, stop }));
        self.check_complete().await;
    }

    fn fail(&mut self, id: u64, reason: String) {
        if self.inflight.as_ref().is_none_or(|f| f.id != id) {
            return;
        }
        let f = self.inflight.take().expect("checked");
        eprintln!("flowline: checkpoint {id} failed: {reason}");
        self.metrics.failed.inc();
        self.next_due = Instant::now() + self.interval;
        if f.stop {
            eprintln!("flowline: stopping without a final checkpoint; the next run resumes from the last complete one");
            self.stop.abort();
            self.done = true;
        }
    }

    async fn on_report(&mut self, r: Report) {
        match r {
            Report::Ack {
                id,
                key,
                bytes,
                shared,
                uploaded,
                pause,
            } => {
                if let Some(f) = self.inflight.as_mut().filter(|f| f.id == id) {
                    f.shared.insert(key.clone(), shared);
                    f.uploaded += uploaded;
                    f.acked.insert(key, bytes);
                    f.pause = f.pause.max(pause);
                    self.check_complete().await;
                }
            }
            Report::Decline { id, key, reason } => self.fail(id, format!("task {key}: {reason}")),
            Report::Finished {
                key,
                state,
                shared,
                reply,
            } => {
                self.finished.insert(key.clone(), state);
                self.finished_shared.insert(key.clone(), shared);
                self.waiters.extend(reply.map(|r| (key, r)));
                self.check_complete().await;
            }
        }
    }

    async fn check_complete(&mut self) {
        let Some(f) = &self.inflight else { return };
        if !self
            .tasks
            .keys()
            .all(|k| f.acked.contains_key(k) || self.finished.contains_key(k))
        {
            return;
        }
        let f = self.inflight.take().expect("checked");
        let id = f.id;
        match self.complete(&f).await {
            Ok(()) => {
                let _ = self.completed.send(id);
                // A task that acknowledged this checkpoint before it finished is recorded with
                // its acknowledged state here: it waits for the next one.
                let (ready, waiting): (Vec<_>, Vec<_>) = self
                    .waiters
                    .drain(..)
                    .partition(|(k, _)| !f.acked.contains_key(k));
                self.waiters = waiting;
                for (_, w) in ready {
                    let _ = w.send(id);
                }
                self.metrics.completed.inc();
                self.metrics
                    .duration
                    .set(f.started.elapsed().as_millis() as u64);
                self.metrics.pause.set(f.pause.as_micros() as u64);
                self.metrics
                    .pause_max
                    .set(self.metrics.pause_max.get().max(f.pause.as_micros() as u64));
                self.next_due = Instant::now() + self.interval;
                // The final checkpoint records every task by its finished state. One that saw a
                // task acknowledge and then finish is not it: the next tick takes another.
                if f.stop || self.all_final(&f) {
                    self.done = true;
                }
            }
            Err(e) => {
                self.inflight = Some(f);
                self.fail(id, e.to_string());
            }
        }
    }

    /// Every task is recorded in `f` by its finished state: the job is complete.
    fn all_final(&self, f: &InFlight) -> bool {
        self.tasks
            .keys()
            .all(|k| self.finished.contains_key(k) && !f.acked.contains_key(k))
    }

    /// Writes the finished tasks' states and then the manifest.
    async fn complete(&mut self, f: &InFlight) -> Result<(), flowline_state::StateError> {
        let id = f.id;
        let mut manifest = Manifest {
            id,
            job: self.job.clone(),
            finished: false,
            parallelism: self.parallelism,
            tasks: BTreeMap::new(),
        };
        let mut to_write = Vec::new();
        for (key, descriptor) in &self.tasks {
            let bytes = match f.acked.get(key) {
                Some(b) => *b,
                None => {
                    let state = self.finished.get(key).cloned().unwrap_or_default();
                    let n = state.len() as u64;
                    to_write.push((key.clone(), state));
                    n
                }
            };
            manifest.tasks.insert(
                key.clone(),
                TaskEntry {
                    descriptor: descriptor.clone(),
                    bytes,
                    shared: match f.acked.contains_key(key) {
                        true => f.shared.get(key).cloned().unwrap_or_default(),
                        false => self.finished_shared.get(key).cloned().unwrap_or_default(),
                    },
                },
            );
        }
        manifest.finished = self.all_final(f);
        let total: u64 = manifest.tasks.values().map(|t| t.bytes).sum::<u64>() + f.uploaded;
        let store = self.store.clone();
        let retained = self.retained;
        let res = tokio::task::spawn_blocking(move || {
            for (key, state) in to_write {
                store.put_task(id, &key, state)?;
            }
            failpoint::hit("checkpoint.after-state");
            store.put_manifest(&manifest)?;
            failpoint::hit("checkpoint.after-manifest");
            // The checkpoint is complete with its manifest: failing to remove old ones only
            // leaves them behind (retried at the next checkpoint).
            if let Err(e) = store.prune(id, retained) {
                eprintln!("flowline: warning: cannot remove old checkpoints: {e}");
            }
            Ok(())
        })
        .await;
        self.metrics.bytes.set(total);
        match res {
            Ok(r) => r,
            Err(e) => Err(flowline_state::StateError::Io {
                location: self.store.location(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

impl CheckpointConfig {
    /// From the job's `SET` options: `None` when `execution.checkpointing.interval` is unset or
    /// zero. Checkpoints go to `execution.checkpointing.dir` (a path or URL), else to
    /// `<state_dir>/checkpoints`. `fresh` discards existing checkpoints first.
    pub fn from_options(
        config: &BTreeMap<String, String>,
        state_dir: &std::path::Path,
        fresh: bool,
    ) -> crate::Result<Option<Self>> {
        let get = |k: &str| config.get(k).map(String::as_str);
        let duration = |k: &str| -> crate::Result<Option<Duration>> {
            get(k)
                .map(|v| {
                    flowline_common::options::parse_duration(v)
                        .map_err(|e| RuntimeError::Config(format!("invalid '{k}' = '{v}': {e}")))
                })
                .transpose()
        };
        let opened = Instant::now();
        let Some(interval) = duration("execution.checkpointing.interval")?.filter(|d| !d.is_zero())
        else {
            return Ok(None);
        };
        let exactly_once = match get("execution.checkpointing.mode").map(str::to_ascii_uppercase).as_deref() {
            None | Some("EXACTLY_ONCE") => true,
            Some("AT_LEAST_ONCE") => false,
            Some(other) => {
                return Err(RuntimeError::Config(format!("invalid 'execution.checkpointing.mode' = '{other}'; valid: EXACTLY_ONCE, AT_LEAST_ONCE")))
            }
        };
        let timeout = duration("execution.checkpointing.timeout")?.unwrap_or(
            Duration::from_millis(flowline_common::limits::CHECKPOINT_TIMEOUT_DEFAULT_MS),
        );
        let retained_key = [
            "execution.checkpointing.num-retained",
            "state.checkpoints.num-retained",
        ]
        .into_iter()
        .find(|k| config.contains_key(*k));
        let retained = match retained_key {
            Some(k) => get(k)
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    RuntimeError::Config(format!("invalid '{k}': expected a whole number >= 1"))
                })?,
            None => flowline_common::limits::CHECKPOINTS_RETAINED_DEFAULT,
        };
        let location = get("execution.checkpointing.dir")
            .or(get("state.checkpoints.dir"))
            .map(str::to_string)
            .unwrap_or_else(|| state_dir.join("checkpoints").to_string_lossy().into_owned());
        let store =
            Checkpoints::open(&location).map_err(|e| RuntimeError::Config(e.to_string()))?;
        if fresh {
            store
                .clear()
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
        }
        let job = store
            .job_id()
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let restored = store
            .latest()
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        if let Some(r) = &restored {
            for s in &r.skipped {
                eprintln!("flowline: warning: skipping a damaged checkpoint: {s}");
            }
        }
        Ok(Some(Self {
            interval,
            exactly_once,
            timeout,
            retained,
            store,
            job,
            restored,
            opened,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that acknowledged a checkpoint and then finished is recorded by that checkpoint
    /// with its acknowledged state, so it waits for the next one. When every task has finished
    /// by then, that next one must still be taken: the job used to hang here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_acked_and_then_finished_gets_a_final_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = BTreeMap::from([(
            "execution.checkpointing.interval".to_string(),
            "10ms".to_string(),
        )]);
        let cfg = CheckpointConfig::from_options(&config, dir.path(), false)
            .unwrap()
            .unwrap();
        let stop = StopSignal::new();
        let (mut c, handle) = coordinator(&cfg, &MetricsRegistry::new(), &stop, 1);
        let key = |k: &str| (k.to_string(), k.to_string());
        c.set_tasks(BTreeMap::from([key("a"), key("b")]), 1);
        let (a, b) = (handle("a".to_string()), handle("b".to_string()));
        let mut trigger = a.trigger.clone();
        let coordinator = tokio::spawn(c.run());
        let first = trigger
            .wait_for(Option::is_some)
            .await
            .unwrap()
            .expect("triggered");
        // `a` acknowledges, then finishes; `b` finishes last and so completes the checkpoint.
        a.save(first.id, b"acked".to_vec(), Vec::new(), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = a.finished(b"final".to_vec());
        drop(b.finished(Vec::new()));
        let id = tokio::time::timeout(Duration::from_secs(10), reply)
            .await
            .expect("the task that acked and finished got a later checkpoint")
            .unwrap();
        assert!(id > first.id);
        let latest = cfg.store.latest().unwrap().expect("a checkpoint");
        assert!(
            latest.manifest.finished,
            "the last checkpoint records the job as finished"
        );
        coordinator.abort();
    }
}
