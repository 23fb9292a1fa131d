//! Barrier alignment: which of a task's messages to process now and which to hold back while
//! a checkpoint's barrier has reached some of its inputs but not all.

use std::collections::VecDeque;

use flowline_common::{failpoint, Barrier, Message};

use crate::exchange::Envelope;

/// Barrier alignment over a task's producers. Messages go in as they arrive; what comes out,
/// in order, is the barriers that completed alignment and the messages to process. While a
/// checkpoint aligns (exactly-once), messages from producers that already delivered its barrier
/// are held back, so the snapshot holds exactly what came before the barrier on every input.
pub(crate) struct Aligner {
    exactly_once: bool,
    producers: usize,
    ended: Vec<bool>,
    aligning: Option<(Barrier, Vec<bool>)>,
    blocked: VecDeque<Envelope>,
    blocked_bytes: usize,
    pending: VecDeque<Envelope>,
    /// Barriers up to this id were declined here (alignment buffer full): drop them.
    declined: u64,
}

pub(crate) enum Step {
    Aligned(Barrier),
    Deliver(Envelope),
    /// Alignment was abandoned (the buffer is full): decline this checkpoint.
    Decline(u64),
}

impl Aligner {
    pub(crate) fn new(producers: usize, exactly_once: bool) -> Self {
        Self {
            exactly_once,
            producers,
            ended: vec![false; producers],
            aligning: None,
            blocked: VecDeque::new(),
            blocked_bytes: 0,
            pending: VecDeque::new(),
            declined: 0,
        }
    }

    /// A message released by an earlier alignment, to process before reading the channel.
    pub fn next_pending(&mut self) -> Option<Envelope> {
        self.pending.pop_front()
    }

    /// Takes one message; pushes what to do, in order, onto `out`.
    pub fn accept(&mut self, env: Envelope, out: &mut Vec<Step>) {
        let from = env.from;
        match &env.msg {
            Message::Barrier(b) => {
                let b = *b;
                if b.id <= self.declined {
                    return;
                }
                let needed = self.producers - self.ended.iter().filter(|e| **e).count();
                let (_, got) = self
                    .aligning
                    .get_or_insert_with(|| (b, vec![false; self.producers]));
                got[from] = true;
                if got.iter().filter(|g| **g).count() < needed {
                    failpoint::hit("checkpoint.alignment");
                    return;
                }
                self.release();
                out.push(Step::Aligned(b));
            }
            Message::End => {
                // A producer past the barrier ends after the rows it sent since: its End waits
                // behind them (delivered first, its rows would come after the input ended).
                if self.exactly_once && self.aligning.as_ref().is_some_and(|(_, got)| got[from]) {
                    self.blocked.push_back(env);
                    return;
                }
                self.ended[from] = true;
                let complete = match &self.aligning {
                    Some((_, got)) => {
                        let needed = (0..self.producers).filter(|i| !self.ended[*i]).count();
                        let have = (0..self.producers)
                            .filter(|i| !self.ended[*i] && got[*i])
                            .count();
                        have == needed
                    }
                    None => false,
                };
                if complete {
                    let (b, _) = self.aligning.clone().expect("aligning");
                    self.release();
                    out.push(Step::Aligned(b));
                }
                out.push(Step::Deliver(env));
            }
            _ => {
                let blocked =
                    self.exactly_once && self.aligning.as_ref().is_some_and(|(_, got)| got[from]);
                if !blocked {
                    out.push(Step::Deliver(env));
                    return;
                }
                if let Message::Batch(b) = &env.msg {
                    self.blocked_bytes += b.get_array_memory_size();
                }
                self.blocked.push_back(env);
                if self.blocked_bytes > flowline_common::limits::ALIGNMENT_BUFFER_MAX_BYTES {
                    let (b, _) = self.aligning.clone().expect("aligning");
                    self.declined = b.id;
                    self.release();
                    out.push(Step::Decline(b.id));
                }
            }
        }
    }

    /// Ends the alignment: held messages go before everything not yet processed.
    fn release(&mut self) {
        self.aligning = None;
        self.blocked_bytes = 0;
        let mut released = std::mem::take(&mut self.blocked);
        released.append(&mut self.pending);
        self.pending = released;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: usize, msg: Message) -> Envelope {
        Envelope { from, msg }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Aligned(b) => format!("aligned {}", b.id),
                Step::Deliver(e) => {
                    format!("{}:{:?}", e.from, std::mem::discriminant(&e.msg))
                        .split(':')
                        .next()
                        .unwrap()
                        .to_string()
                        + match e.msg {
                            Message::Watermark(w) => format!(" w{w}"),
                            Message::End => " end".to_string(),
                            _ => String::new(),
                        }
                        .as_str()
                }
                Step::Decline(id) => format!("decline {id}"),
            })
            .collect()
    }

    #[test]
    fn exactly_once_holds_back_inputs_past_the_barrier() {
        let mut a = Aligner::new(2, true);
        let mut out = Vec::new();
        let b1 = Barrier { id: 1, stop: false };
        a.accept(env(0, Message::Barrier(b1)), &mut out);
        a.accept(env(0, Message::Watermark(5)), &mut out); // held: producer 0 is past the barrier
        a.accept(env(1, Message::Watermark(3)), &mut out); // producer 1 is not
        assert_eq!(kinds(&out), vec!["1 w3"]);
        out.clear();
        a.accept(env(1, Message::Barrier(b1)), &mut out);
        assert_eq!(kinds(&out), vec!["aligned 1"]);
        let released = a.next_pending().unwrap();
        assert!(matches!(released.msg, Message::Watermark(5)));
        assert!(a.next_pending().is_none());
    }

    #[test]
    fn at_least_once_does_not_hold_back() {
        let mut a = Aligner::new(2, false);
        let mut out = Vec::new();
        let b1 = Barrier { id: 1, stop: false };
        a.accept(env(0, Message::Barrier(b1)), &mut out);
        a.accept(env(0, Message::Watermark(5)), &mut out);
        assert_eq!(kinds(&out), vec!["0 w5"]);
    }

    #[test]
    fn an_ended_input_completes_the_alignment() {
        let mut a = Aligner::new(2, true);
        let mut out = Vec::new();
        a.accept(
            env(0, Message::Barrier(Barrier { id: 4, stop: false })),
            &mut out,
        );
        a.accept(env(1, Message::End), &mut out);
        assert_eq!(kinds(&out), vec!["aligned 4", "1 end"]);
        out.clear();
        // Later barriers need only the live input.
        a.accept(
            env(0, Message::Barrier(Barrier { id: 5, stop: false })),
            &mut out,
        );
        assert_eq!(kinds(&out), vec!["aligned 5"]);
    }

    /// A producer that sent the barrier, then rows, then End: the End must not overtake the
    /// held rows (the consumer would end that input, fire its windows, and then get rows for
    /// them). Found by a window join losing its last window's rows at the end of input.
    #[test]
    fn an_end_after_the_barrier_waits_behind_the_held_rows() {
        let mut a = Aligner::new(2, true);
        let mut out = Vec::new();
        let b1 = Barrier { id: 1, stop: false };
        a.accept(env(0, Message::Barrier(b1)), &mut out);
        a.accept(env(0, Message::Watermark(7)), &mut out);
        a.accept(env(0, Message::End), &mut out);
        assert!(out.is_empty(), "held: {:?}", kinds(&out));
        a.accept(env(1, Message::Barrier(b1)), &mut out);
        assert_eq!(kinds(&out), vec!["aligned 1"]);
        out.clear();
        while let Some(e) = a.next_pending() {
            a.accept(e, &mut out);
        }
        assert_eq!(kinds(&out), vec!["0 w7", "0 end"]);
        out.clear();
        // The ended producer is not waited for by the next barrier.
        a.accept(
            env(1, Message::Barrier(Barrier { id: 2, stop: false })),
            &mut out,
        );
        assert_eq!(kinds(&out), vec!["aligned 2"]);
    }
}
