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
//! watermark valve: an idle channel is left out even then, so its later rows may be late). Sources merge their splits with the
//! same rule, but decide idleness by time (`table.exec.source.idle-timeout`) in `source_task.rs`.

/// A producer's part in the merged watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputState {
    Active,
    Idle,
    Ended,
}

#[derive(Clone, Copy, Debug)]
struct Input {
    /// The highest watermark it sent (`i64::MIN`: none yet).
    mark: i64,
    state: InputState,
}

/// One consumer's producers' watermarks and their merge.
#[derive(Debug)]
pub(crate) struct InputWatermarks {
    inputs: Vec<Input>,
    merged: i64,
}

impl InputWatermarks {
    pub(crate) fn new(producers: usize) -> Self {
        Self {
            inputs: vec![
                Input {
                    mark: i64::MIN,
                    state: InputState::Active,
                };
                producers
            ],
            merged: i64::MIN,
        }
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
    pub(crate) fn on_watermark(&mut self, from: usize, w: i64) -> Option<i64> {
        let i = self.inputs.get_mut(from)?;
        i.mark = i.mark.max(w);
        if i.state == InputState::Idle {
            i.state = InputState::Active;
        }
        self.advance()
    }

    /// Producer `from` went idle; the new merged watermark when the others now allow one.
    pub(crate) fn on_idle(&mut self, from: usize) -> Option<i64> {
        let i = self.inputs.get_mut(from)?;
        if i.state == InputState::Active {
            i.state = InputState::Idle;
        }
        self.advance()
    }

    /// Producer `from` ended; the new merged watermark when it advanced.
    pub(crate) fn on_end(&mut self, from: usize) -> Option<i64> {
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
    pub(crate) fn merged(&self) -> i64 {
        self.merged
    }

    /// Each producer's watermark, for a checkpoint.
    pub(crate) fn marks(&self) -> Vec<i64> {
        self.inputs.iter().map(|i| i.mark).collect()
    }

    /// Restores producers' watermarks and the merged one from a checkpoint.
    pub(crate) fn restore(&mut self, marks: impl IntoIterator<Item = i64>, merged: i64) {
        for (i, m) in self.inputs.iter_mut().zip(marks) {
            i.mark = m;
        }
        self.merged = self.merged.max(merged);
    }

    /// The minimum over the producers that count; `Some` when it moved the merged watermark.
    fn advance(&mut self) -> Option<i64> {
        let min = self
            .inputs
            .iter()
            .filter_map(|i| match i.state {
                InputState::Active => Some(i.mark),
                InputState::Ended => Some(i64::MAX),
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
            Some(i64::MAX),
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
}
