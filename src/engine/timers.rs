//! Deadlines the engine asked for. Time is an input: the runtime asks [`Timers::next`] when to wake the
//! engine, and the engine pops what is due at the `now` it is given.

use std::collections::BTreeSet;

use super::{CallKey, Millis};

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The dialed party did not answer in time.
    RingTimeout,
    /// A transferer whose transfer succeeded did not hang up by itself.
    ReleaseTransferer,
    /// No digit came from party N for the inter-digit timeout: its feature code is complete.
    Digits(usize),
    /// The pause before a feature-code transfer calls its transferor back is over.
    RecallDelay,
    /// Channels found in no bridge at a re-sync have had their time to be claimed (adopt.rs); armed
    /// for no call.
    Strays,
}

#[derive(Debug, Default)]
pub struct Timers {
    due: BTreeSet<(Millis, CallKey, TimerKind)>,
}

impl Timers {
    pub fn arm(&mut self, at: Millis, call: CallKey, kind: TimerKind) {
        self.due.insert((at, call, kind));
    }

    pub fn cancel(&mut self, at: Millis, call: CallKey, kind: TimerKind) {
        self.due.remove(&(at, call, kind));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Millis> {
        self.due.first().map(|(at, _, _)| *at)
    }

    /// Removes and returns the first deadline that is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<(CallKey, TimerKind)> {
        match self.due.first() {
            Some(&(at, call, kind)) if at <= now => {
                self.due.pop_first();
                Some((call, kind))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut timers = Timers::default();
        timers.arm(300, CallKey(2), TimerKind::RingTimeout);
        timers.arm(100, CallKey(1), TimerKind::RingTimeout);
        assert_eq!(timers.next(), Some(100));
        assert_eq!(timers.pop_due(99), None);
        assert_eq!(
            timers.pop_due(100),
            Some((CallKey(1), TimerKind::RingTimeout))
        );
        timers.cancel(300, CallKey(2), TimerKind::RingTimeout);
        assert_eq!(timers.next(), None);
    }
}
