//! A sink subtask: writes batches, aligns barriers for two-phase commits, and finishes on the
//! last `End`.

use crate::*;

pub(crate) struct SinkTask {
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) rx: mpsc::Receiver<Envelope>,
    pub(crate) producers: usize,
    pub(crate) counters: Counters,
    pub(crate) checkpoint: Option<TaskCheckpoint>,
    pub(crate) stop: StopSignal,
    pub(crate) name: String,
}

impl SinkTask {
    pub(crate) async fn run(mut self) -> Result<()> {
        if let Some(cp) = &self.checkpoint {
            // Publish what the restored checkpoint covers; remove what none does. At another
            // parallelism, each old subtask's commits are made by one new subtask.
            let id = cp.restored_id();
            let parts: Vec<&[u8]> = match (cp.restored(), cp.rescaled_share()) {
                (Some((_, state)), _) => vec![state],
                (None, Some(parts)) => parts,
                (None, None) => Vec::new(),
            };
            let mut committables = Vec::new();
            for state in parts {
                committables.push(open_envelope(state)?.1.to_vec());
            }
            if committables.is_empty() {
                committables.push(Vec::new());
            }
            for c in committables {
                tokio::task::block_in_place(|| self.sink.restore(id, &c))?;
            }
        }
        let res = self.pump().await;
        if res.is_err() {
            self.stop.abort();
        }
        res
    }

    /// Flushes for checkpoint `id` and hands the committables to the checkpoint.
    pub(crate) fn pre_commit(&mut self, id: u64) -> Result<Vec<u8>> {
        let committables = tokio::task::block_in_place(|| self.sink.pre_commit(id))?;
        Ok(envelope(serde_json::json!({}), committables))
    }

    /// Waits until checkpoint `id` (or a later one) is complete, then commits; false if the
    /// job was aborted first.
    pub(crate) async fn commit_when_complete(
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

    pub(crate) async fn pump(&mut self) -> Result<()> {
        let mut marks = InputWatermarks::new(self.producers);
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
                            cp.save(b.id, state, Vec::new(), started.elapsed());
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
                        from,
                    }) => {
                        marks.on_row(from);
                        self.counters.add(&batch);
                        tokio::task::block_in_place(|| self.sink.write(batch))?;
                    }
                    Step::Deliver(Envelope {
                        msg: Message::End,
                        from,
                    }) => {
                        let advanced = marks.on_end(from);
                        if marks.all_ended() {
                            tokio::task::block_in_place(|| self.sink.on_watermark(END_OF_TIME))?;
                            return self.finish(last_barrier).await;
                        }
                        if let Some(min) = advanced {
                            tokio::task::block_in_place(|| self.sink.on_watermark(min))?;
                        }
                    }
                    Step::Deliver(Envelope {
                        msg: msg @ (Message::Watermark(_) | Message::Idle),
                        from,
                    }) => {
                        let advanced = match msg {
                            Message::Watermark(w) => marks.on_watermark(from, w),
                            _ => marks.on_idle(from),
                        };
                        if let Some(min) = advanced {
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
    pub(crate) async fn finish(&mut self, last_barrier: u64) -> Result<()> {
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
