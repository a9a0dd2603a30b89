//! One lease: its slots, when each falls due and where it may be used.

use crate::decision::{Admission, RefundToken};

/// One lease: `count` slots from `base` on the TAT axis (µs, the server's
/// clock), taken when the server's clock read `server_now`, which lay
/// between `early` and `late` on the caller's clock (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::backends::redis) struct Lease {
    pub(in crate::backends::redis) base: u64,
    pub(in crate::backends::redis) count: u32,
    pub(in crate::backends::redis) interval: u64,
    pub(in crate::backends::redis) tau: u64,
    pub(in crate::backends::redis) burst: u32,
    pub(in crate::backends::redis) server_now: u64,
    pub(in crate::backends::redis) early: u64,
    pub(in crate::backends::redis) late: u64,
    /// The slots before it are used, handed out or lost.
    pub(in crate::backends::redis) next: u32,
}

/// What a lease does for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::backends::redis) enum Take {
    /// Slot `slot`, to be used after `delay` ns (0 in reject mode), and the
    /// slots found lost on the way.
    Slot { slot: u32, delay: u64, lost: u32 },
    /// The next slot opens too late for the caller's `max_wait`: refused,
    /// retry after `retry_after` ns.
    Refused { retry_after: u64, lost: u32 },
    /// No slot left (every one used, handed out or lost).
    Exhausted { lost: u32 },
}

impl Lease {
    /// When slot `i` falls due on the server's clock (µs): when a unit call
    /// taking its span would have been admitted.
    fn due(&self, i: u32) -> u64 {
        self.start(i).saturating_sub(self.tau).max(self.server_now)
    }

    /// Where slot `i`'s span starts on the TAT axis (µs); `start(count)` is
    /// where the lease ends.
    fn start(&self, i: u32) -> u64 {
        self.base
            .saturating_add(self.interval.saturating_mul(u64::from(i)))
    }

    /// Where slot `i` surely lies in its interval on the caller's clock (ns):
    /// from the latest the due time can be to the earliest its end can be.
    /// Empty when the offset is less certain than `T`.
    pub(in crate::backends::redis) fn window(&self, i: u32) -> (u64, u64) {
        let ahead = self.due(i) - self.server_now;
        let opens = self.late.saturating_add(ahead.saturating_mul(1_000));
        let closes = self
            .early
            .saturating_add(ahead.saturating_add(self.interval).saturating_mul(1_000));
        (opens, closes)
    }

    /// Hands out the next slot to a request at `now` (ns) that waits at most
    /// `max_wait` ns (`None`: forever). Slots whose interval has closed are
    /// lost on the way. A request that may not wait (`Some(0)`) takes the
    /// slot open now; one that may wait takes the next slot that has not
    /// opened yet and waits for it to open, so that it starts exactly when
    /// a unit call would have (a slot already open is lost to it: using it
    /// late is the one event of slack the bound allows reject mode).
    pub(in crate::backends::redis) fn take(&mut self, now: u64, max_wait: Option<u64>) -> Take {
        let mut lost = 0;
        let may_wait = max_wait != Some(0);
        while self.next < self.count {
            let (opens, closes) = self.window(self.next);
            if closes <= now || opens >= closes || (may_wait && opens < now) {
                lost += 1;
                self.next += 1;
                continue;
            }
            let delay = opens.saturating_sub(now);
            if let Some(max_wait) = max_wait
                && delay > max_wait
            {
                return Take::Refused {
                    retry_after: delay - max_wait,
                    lost,
                };
            }
            let slot = self.next;
            self.next += 1;
            return Take::Slot { slot, delay, lost };
        }
        Take::Exhausted { lost }
    }

    /// Where its last slot's span ends on the TAT axis (µs).
    pub(in crate::backends::redis) fn end(&self) -> u64 {
        self.start(self.count)
    }

    /// Slots not handed out yet.
    pub(in crate::backends::redis) const fn left(&self) -> u32 {
        self.count - self.next
    }

    /// Takes back every slot not handed out at `now`: the lost ones (whose
    /// interval has surely closed: at the latest its end can be here) and
    /// the span of the rest, to give back to Redis (`[start, end)` µs, and
    /// how many slots). A slot that may still be due goes back: a span given
    /// back in the past only becomes a hole that has ended.
    pub(in crate::backends::redis) fn give_back(
        &mut self,
        now: u64,
    ) -> (u32, Option<(u64, u64, u32)>) {
        let mut lost = 0;
        let surely_closed = |l: &Self, i: u32| {
            let ahead = l.due(i) - l.server_now;
            l.late
                .saturating_add(ahead.saturating_add(l.interval).saturating_mul(1_000))
                <= now
        };
        while self.next < self.count && surely_closed(self, self.next) {
            lost += 1;
            self.next += 1;
        }
        let rest = self.left();
        let span = (rest > 0).then(|| (self.start(self.next), self.start(self.count), rest));
        self.next = self.count;
        (lost, span)
    }

    /// The admission of slot `slot`, used after `delay` ns by a caller at `now`.
    pub(in crate::backends::redis) fn admission(
        &self,
        slot: u32,
        delay: u64,
        now: u64,
    ) -> Admission {
        // Until the lease's last span has passed on the server's clock, at
        // the latest it can be here.
        let end = self
            .late
            .saturating_add((self.end() - self.server_now).saturating_mul(1_000));
        Admission::from_parts(
            delay,
            end.saturating_sub(now),
            self.burst,
            self.interval * 1_000,
            RefundToken {
                start: self.start(slot),
                end: Some(self.start(slot + 1)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// 4 slots of 10 ms, burst 2 (tau 10 ms), taken at server time 1000 µs
    /// on an empty key, the offset known exactly (server µs × 1000 = ns).
    fn lease() -> Lease {
        Lease {
            base: 1_000,
            count: 4,
            interval: 10_000,
            tau: 10_000,
            burst: 2,
            server_now: 1_000,
            early: 1_000_000,
            late: 1_000_000,
            next: 0,
        }
    }

    #[test]
    fn slots_fall_due_as_unit_calls_would_be_admitted() {
        let l = lease();
        // Two burst slots at once, then one every T.
        assert_eq!(l.window(0), (MS, 11 * MS));
        assert_eq!(l.window(1), (MS, 11 * MS));
        assert_eq!(l.window(2), (11 * MS, 21 * MS));
        assert_eq!(l.window(3), (21 * MS, 31 * MS));
        // An uncertain offset narrows the windows from both sides.
        let fuzzy = Lease {
            early: MS - 100_000,
            late: MS + 100_000,
            ..l
        };
        assert_eq!(fuzzy.window(2), (11 * MS + 100_000, 21 * MS - 100_000));
    }

    #[test]
    fn reject_mode_uses_a_slot_only_within_its_interval() {
        let mut l = lease();
        assert_eq!(
            l.take(MS, Some(0)),
            Take::Slot {
                slot: 0,
                delay: 0,
                lost: 0
            }
        );
        assert_eq!(
            l.take(MS, Some(0)),
            Take::Slot {
                slot: 1,
                delay: 0,
                lost: 0
            }
        );
        // Slot 2 opens at 11 ms.
        assert_eq!(
            l.take(5 * MS, Some(0)),
            Take::Refused {
                retry_after: 6 * MS,
                lost: 0
            }
        );
        // At 25 ms slot 2's interval has closed: lost; slot 3 is open.
        assert_eq!(
            l.take(25 * MS, Some(0)),
            Take::Slot {
                slot: 3,
                delay: 0,
                lost: 1
            }
        );
        assert_eq!(l.take(25 * MS, Some(0)), Take::Exhausted { lost: 0 });
    }

    #[test]
    fn waiting_callers_get_the_next_slots_at_their_exact_times() {
        let mut l = lease();
        // At 1 ms the burst slots open: a waiting caller takes one at once.
        assert_eq!(
            l.take(MS, None),
            Take::Slot {
                slot: 0,
                delay: 0,
                lost: 0
            }
        );
        // Slot 1 opened at 1 ms: at 2 ms a waiting caller leaves it and
        // waits for slot 2 (11 ms).
        assert_eq!(
            l.take(2 * MS, None),
            Take::Slot {
                slot: 2,
                delay: 9 * MS,
                lost: 1
            }
        );
        let mut l = lease();
        l.next = 2;
        assert_eq!(
            l.take(MS, None),
            Take::Slot {
                slot: 2,
                delay: 10 * MS,
                lost: 0
            }
        );
        assert_eq!(
            l.take(MS, Some(5 * MS)),
            Take::Refused {
                retry_after: 15 * MS,
                lost: 0
            }
        );
        assert_eq!(
            l.take(MS, Some(20 * MS)),
            Take::Slot {
                slot: 3,
                delay: 20 * MS,
                lost: 0
            }
        );
    }

    #[test]
    fn what_is_given_back_is_the_span_of_the_slots_not_handed_out() {
        let mut l = lease();
        l.next = 1;
        // At 12 ms, slot 1 (closed at 11 ms) is lost; slots 2 and 3 go back.
        assert_eq!(l.give_back(12 * MS), (1, Some((21_000, 41_000, 2))));
        assert_eq!(l.left(), 0);
        assert_eq!(l.give_back(12 * MS), (0, None));
        // Nothing left, long after: nothing lost either.
        assert_eq!(l.give_back(100 * MS), (0, None));
        // With the server's time known within 1..3 ms, slot 1 may still be
        // open at 12 ms (until 13 ms): it goes back too.
        let mut fuzzy = Lease {
            early: MS,
            late: 3 * MS,
            server_now: 1_000,
            next: 1,
            ..lease()
        };
        assert_eq!(fuzzy.give_back(12 * MS), (0, Some((11_000, 41_000, 3))));
    }

    #[test]
    fn an_admission_carries_its_slot_span() {
        let l = lease();
        let a = l.admission(2, 10 * MS, MS);
        assert_eq!(a.delay(), Duration::from_millis(10));
        assert_eq!(
            a.refund_token(),
            RefundToken {
                start: 21_000,
                end: Some(31_000)
            }
        );
        // The lease ends at 41 ms on the server: 40 ms after now.
        assert_eq!(a.reset_after(), Duration::from_millis(40));
        assert_eq!(a.remaining(), 0);
        // A one-slot lease of a burst-5 key leaves 4 at once.
        let small = Lease {
            count: 1,
            burst: 5,
            tau: 40_000,
            ..lease()
        };
        let a = small.admission(0, 0, MS);
        assert_eq!(a.reset_after(), Duration::from_millis(10));
        assert_eq!(a.remaining(), 4);
    }
}
