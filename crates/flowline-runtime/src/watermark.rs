//! Watermark merging, written once: a consumer (an operator or a sink subtask) follows each of
//! its producers' watermarks and advances to the minimum over those that count.
//!
//! ```text
//! producer state   counts as         becomes
//! Active           its watermark     Active on a row or a watermark from it
//! Idle             nothing           Idle on Message::Idle (a source with no rows for a while)
//! Ended            +infinity         Ended on Message::End (a bounded input is done)
//! ```
//!
//! The merged watermark never goes back. It does not move while every producer that has not
//! ended is idle; when the only producers that count have ended, it moves to the end (as Flink's
//! watermark valve: an idle channel is left out even then, so its later rows may be late).
//! Sources merge their splits (Kafka partitions) with the same type, one input per split; they
//! decide a split's idleness by time (`table.exec.source.idle-timeout`) in `source_task.rs`.

use flowline_common::{EventTimeMs, END_OF_TIME, NO_WATERMARK};

/// A producer's part in the merged watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputState {
    Active,
    Idle,
    Ended,
}

#[derive(Clone, Copy, Debug)]
struct Input {
    /// The highest watermark it sent (`NO_WATERMARK`: none yet).
    mark: EventTimeMs,
    state: InputState,
}

/// One consumer's producers' watermarks and their merge.
#[derive(Debug)]
pub(crate) struct InputWatermarks {
    inputs: Vec<Input>,
    merged: EventTimeMs,
}

const FRESH: Input = Input {
    mark: NO_WATERMARK,
    state: InputState::Active,
};

impl InputWatermarks {
    pub(crate) fn new(producers: usize) -> Self {
        Self {
            inputs: vec![FRESH; producers],
            merged: NO_WATERMARK,
        }
    }

    /// Adds active inputs up to `producers` (splits found while running, such as new Kafka
    /// partitions): each holds time back until it sends a watermark or goes idle, as in Flink.
    pub(crate) fn grow(&mut self, producers: usize) {
        if self.inputs.len() < producers {
            self.inputs.resize(producers, FRESH);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// The merge over every producer but `except` (`None` when none of them counts): what a
    /// source holds fixed while it reads a batch of one split.
    pub(crate) fn min_except(&self, except: usize) -> Option<EventTimeMs> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .filter_map(|(_, i)| match i.state {
                InputState::Active => Some(i.mark),
                InputState::Ended => Some(END_OF_TIME),
                InputState::Idle => None,
            })
            .min()
    }

    /// Producer `from`'s watermark so far.
    pub(crate) fn mark(&self, from: usize) -> EventTimeMs {
        self.inputs.get(from).map_or(NO_WATERMARK, |i| i.mark)
    }

    /// Whether producer `from` is active (neither idle nor ended).
    pub(crate) fn is_active(&self, from: usize) -> bool {
        self.inputs
            .get(from)
            .is_some_and(|i| i.state == InputState::Active)
    }

    /// Whether there are no producers (a subtask no hash route reaches).
    pub(crate) fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// A row from producer `from`: it is active again.
    pub(crate) fn on_row(&mut self, from: usize) {
        if let Some(i) = self.inputs.get_mut(from) {
            if i.state == InputState::Idle {
                i.state = InputState::Active;
            }
        }
    }

    /// Producer `from`'s watermark; the new merged watermark when it advanced.
    pub(crate) fn on_watermark(&mut self, from: usize, w: EventTimeMs) -> Option<EventTimeMs> {
        let i = self.inputs.get_mut(from)?;
        i.mark = i.mark.max(w);
        if i.state == InputState::Idle {
            i.state = InputState::Active;
        }
        self.advance()
    }

    /// Producer `from` went idle; the new merged watermark when the others now allow one.
    pub(crate) fn on_idle(&mut self, from: usize) -> Option<EventTimeMs> {
        let i = self.inputs.get_mut(from)?;
        if i.state == InputState::Active {
            i.state = InputState::Idle;
        }
        self.advance()
    }

    /// Producer `from` ended; the new merged watermark when it advanced.
    pub(crate) fn on_end(&mut self, from: usize) -> Option<EventTimeMs> {
        self.inputs.get_mut(from)?.state = InputState::Ended;
        self.advance()
    }

    /// Whether every producer has ended.
    pub(crate) fn all_ended(&self) -> bool {
        self.inputs.iter().all(|i| i.state == InputState::Ended)
    }

    /// Whether no producer is active and at least one is idle: the consumer is idle too.
    pub(crate) fn idle(&self) -> bool {
        !self.inputs.iter().any(|i| i.state == InputState::Active)
            && self.inputs.iter().any(|i| i.state == InputState::Idle)
    }

    /// The merged watermark so far.
    pub(crate) fn merged(&self) -> EventTimeMs {
        self.merged
    }

    /// Each producer's watermark, for a checkpoint.
    pub(crate) fn marks(&self) -> Vec<EventTimeMs> {
        self.inputs.iter().map(|i| i.mark).collect()
    }

    /// Restores producers' watermarks and the merged one from a checkpoint.
    pub(crate) fn restore(
        &mut self,
        marks: impl IntoIterator<Item = EventTimeMs>,
        merged: EventTimeMs,
    ) {
        for (i, m) in self.inputs.iter_mut().zip(marks) {
            i.mark = m;
        }
        self.merged = self.merged.max(merged);
    }

    /// The minimum over the producers that count; `Some` when it moved the merged watermark.
    fn advance(&mut self) -> Option<EventTimeMs> {
        let min = self
            .inputs
            .iter()
            .filter_map(|i| match i.state {
                InputState::Active => Some(i.mark),
                InputState::Ended => Some(END_OF_TIME),
                InputState::Idle => None,
            })
            .min()?;
        (min > self.merged).then(|| {
            self.merged = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_of_active_inputs_leaves_idle_ones_out_and_ended_ones_behind() {
        let mut w = InputWatermarks::new(3);
        assert_eq!(w.on_watermark(0, 10), None, "the others have sent nothing");
        assert_eq!(w.on_watermark(1, 20), None);
        assert_eq!(w.on_watermark(2, 5), Some(5));
        assert_eq!(
            w.on_idle(2),
            Some(10),
            "an idle input no longer holds time back"
        );
        assert_eq!(w.on_end(0), Some(20), "an ended one never again");
        assert_eq!(
            w.on_watermark(2, 7),
            None,
            "back from idle, behind: no step back"
        );
        assert_eq!(w.merged(), 20);
        assert_eq!(w.on_end(1), None, "input 2 holds it at 7 < 20");
        assert_eq!(
            w.on_idle(2),
            Some(END_OF_TIME),
            "only ended inputs count: the end"
        );
        assert!(!w.all_ended());
        assert_eq!(w.on_end(2), None);
        assert!(w.all_ended());
    }

    #[test]
    fn all_idle_holds_time_and_makes_the_consumer_idle() {
        let mut w = InputWatermarks::new(2);
        w.on_watermark(0, 10);
        assert_eq!(w.on_watermark(1, 12), Some(10));
        assert!(!w.idle());
        assert_eq!(w.on_idle(0), Some(12));
        assert_eq!(w.on_idle(1), None, "nothing counts: time stays");
        assert!(w.idle());
        w.on_row(0);
        assert!(!w.idle(), "a row makes its input active again");
        assert_eq!(w.on_watermark(0, 15), Some(15));
    }

    #[test]
    fn a_grown_input_holds_time_until_it_sends_or_goes_idle() {
        let mut w = InputWatermarks::new(1);
        assert_eq!(w.on_watermark(0, 10), Some(10));
        w.grow(2);
        assert_eq!(
            w.on_watermark(0, 20),
            None,
            "the new split has sent nothing"
        );
        assert!(w.is_active(1));
        assert_eq!(w.on_idle(1), Some(20));
        assert!(!w.is_active(1));
        w.grow(1);
        assert_eq!(w.len(), 2, "never shrinks");
    }
}
