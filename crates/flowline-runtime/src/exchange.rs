//! Channels between subtasks: who sends to whom, and how rows are partitioned.
//!
//! An [`Inbox`] is the set of channels into one consumer's subtasks. Each producer subtask gets
//! an [`Output`] into it, with its own index at every consumer subtask it reaches:
//! - `Route::Forward`: producer subtask `i` → consumer subtask `i` (chains, sinks);
//! - `Route::Hash(keys)`: rows by the key group of the hash of `keys` (flowline_common::keygroups;
//!   all rows to subtask 0 when `keys` is empty);
//!   watermarks, idleness and `End` go to every consumer subtask.

use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExpr;
use flowline_common::limits::CHANNEL_CAPACITY_BATCHES;
use flowline_common::Message;
use tokio::sync::mpsc;

/// A message and the index of the producer that sent it (per consumer subtask).
pub struct Envelope {
    pub from: usize,
    pub msg: Message,
}

#[derive(Clone)]
pub enum Route {
    Forward,
    Hash(Vec<Arc<dyn PhysicalExpr>>),
}

struct InboxInner {
    txs: Vec<mpsc::Sender<Envelope>>,
    rxs: Vec<Option<mpsc::Receiver<Envelope>>>,
    producers: Vec<usize>,
}

/// The bounded channels into the subtasks of one consumer.
#[derive(Clone)]
pub struct Inbox(Arc<Mutex<InboxInner>>);

impl Inbox {
    pub fn new(subtasks: usize) -> Self {
        let (txs, rxs) = (0..subtasks)
            .map(|_| mpsc::channel(CHANNEL_CAPACITY_BATCHES))
            .map(|(t, r)| (t, Some(r)))
            .unzip();
        Inbox(Arc::new(Mutex::new(InboxInner {
            txs,
            rxs,
            producers: vec![0; subtasks],
        })))
    }

    /// Registers producer subtask `subtask` and returns its output into this inbox.
    pub fn output(&self, subtask: usize, route: Route) -> Output {
        let mut inner = self.0.lock().expect("inbox lock");
        let n = inner.txs.len();
        let reach: Vec<usize> = match &route {
            Route::Forward => vec![subtask % n],
            Route::Hash(_) => (0..n).collect(),
        };
        let targets = reach
            .into_iter()
            .map(|j| {
                let from = inner.producers[j];
                inner.producers[j] += 1;
                (inner.txs[j].clone(), from)
            })
            .collect();
        Output {
            targets,
            route,
            hashes: Vec::new(),
        }
    }

    /// Producers registered so far with subtask 0 (every hash-routed producer reaches it).
    pub fn producers(&self) -> usize {
        self.0.lock().expect("inbox lock").producers[0]
    }

    /// The receivers, each with its subtask index and producer count; the inbox keeps no sender.
    pub fn into_receivers(self) -> Vec<(usize, mpsc::Receiver<Envelope>, usize)> {
        let mut inner = self.0.lock().expect("inbox lock");
        inner.txs.clear();
        let producers = inner.producers.clone();
        inner
            .rxs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, r)| r.take().map(|r| (i, r, producers[i])))
            .collect()
    }
}

/// One producer subtask's side of an [`Inbox`].
pub struct Output {
    targets: Vec<(mpsc::Sender<Envelope>, usize)>,
    route: Route,
    hashes: Vec<u64>,
}

/// Every producer must partition alike, and as state tables file keys: one fixed seed.
use flowline_operators::keygroups::HASH_SEED;

impl Output {
    /// Sends rows on; false when the consumer is gone (the job is failing elsewhere).
    pub fn send_batch(&mut self, batch: RecordBatch) -> Result<bool> {
        let keys = match &self.route {
            Route::Hash(keys) if self.targets.len() > 1 && !keys.is_empty() => keys,
            _ => return Ok(self.send(0, batch)),
        };
        let rows = batch.num_rows();
        let arrays = keys
            .iter()
            .map(|k| k.evaluate(&batch).and_then(|v| v.into_array(rows)))
            .collect::<Result<Vec<_>>>()?;
        self.hashes.clear();
        self.hashes.resize(rows, 0);
        create_hashes(&arrays, &HASH_SEED, &mut self.hashes)?;
        // By key group, as Flink: a key's subtask is its key group's owner, so keyed state
        // checkpointed at one parallelism can be handed out by key group at another.
        let n = self.targets.len();
        let max = flowline_common::keygroups::DEFAULT_MAX_PARALLELISM;
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, h) in self.hashes.iter().enumerate() {
            let kg = flowline_common::keygroups::key_group(*h, max);
            parts[flowline_common::keygroups::subtask_of(kg, max, n)].push(i as u32);
        }
        for (t, idx) in parts.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let part = if idx.len() == rows {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(idx))?
            };
            if !self.send(t, part) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn send(&self, target: usize, batch: RecordBatch) -> bool {
        let (tx, from) = &self.targets[target];
        tx.blocking_send(Envelope {
            from: *from,
            msg: Message::Batch(batch),
        })
        .is_ok()
    }

    /// Sends a control message (watermark, idle, end) to every consumer subtask this output reaches.
    pub fn broadcast(&self, msg: Message) {
        for (tx, from) in &self.targets {
            let _ = tx.blocking_send(Envelope {
                from: *from,
                msg: msg.clone(),
            });
        }
    }
}
