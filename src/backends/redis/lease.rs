//! Leases: slots of one hot key taken from Redis in one call and handed out
//! in this process ([`Leases`], the settings; [`Lease`], one batch of slots
//! and the rule for using them; [`Demand`], when to lease). Pure: times are
//! passed in, nothing here talks to Redis.

use std::time::Duration;

use crate::decision::{Admission, RefundToken};

/// Opt-in leases for keys this process calls far more often than the limit
/// allows ([`RedisBackendBuilder::leases`](super::RedisBackendBuilder::leases)).
///
/// While a key's demand in this process is at least
/// [`min_demand`](Self::min_demand) requests per interval `T`, the backend
/// takes `n` of the key's future slots from Redis in one script call (a
/// *lease*: `n` covers [`length`](Self::length) of the key's time, at most
/// [`max_slots`](Self::max_slots)) and hands them out locally, without a
/// round trip. Slot `i` falls due when a unit call taking it would have been
/// admitted (`c_i`, on the server's clock), and serves one request that
/// arrives within its own interval `[c_i, c_i + T)`; a caller that may wait
/// gets the next slot and waits for `c_i` exactly. A slot nobody used in its
/// interval is lost. When demand falls below half of `min_demand`, or on
/// [`release_leases`](super::RedisBackend::release_leases), the slots not yet
/// used go back to Redis (as refunds do), for every process to take.
///
/// The bound: in any window `w`, all processes together admit at most
/// `burst + w/T + 1` calls (the `+ 1` is the slack of using a slot anywhere in
/// its interval; the clock offset to the server is measured on each lease
/// call and a slot is only used where it surely lies in its interval). The
/// [guide](crate::guide::redis#hot-keys-batches-and-leases) derives it and
/// says when to choose leases over [batching](super::RedisBackendBuilder::batching).
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::redis::{Leases, RedisBackend};
///
/// let builder = RedisBackend::<String>::builder().leases(
///     Leases::new()
///         .length(Duration::from_millis(250))
///         .min_demand(4),
/// );
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Leases {
    pub(super) length: Duration,
    pub(super) max_slots: u32,
    pub(super) min_demand: u32,
    pub(super) window: Duration,
    pub(super) horizon: Duration,
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

impl Leases {
    /// The defaults: leases of 500 ms of the key's time, at most 1024 slots,
    /// from 2 requests per interval, demand measured over 25 ms, no lease
    /// whose first slot is more than 2 s away.
    ///
    /// ```
    /// use tower_freqlimit::backends::redis::Leases;
    /// assert_eq!(Leases::new(), Leases::default());
    /// ```
    pub const fn new() -> Self {
        Self {
            length: Duration::from_millis(500),
            max_slots: 1024,
            min_demand: 2,
            window: Duration::from_millis(25),
            horizon: Duration::from_secs(2),
        }
    }

    /// How much of the key's time one lease covers (default 500 ms; at least
    /// two slots). Longer: fewer calls to Redis, coarser sharing between
    /// processes (each holds `length` of the key's slots at a time).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().length(Duration::from_secs(1));
    /// # let _ = leases;
    /// ```
    pub const fn length(mut self, length: Duration) -> Self {
        self.length = length;
        self
    }

    /// The most slots one lease takes (default 1024, at least 2).
    ///
    /// ```
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().max_slots(64);
    /// # let _ = leases;
    /// ```
    pub const fn max_slots(mut self, max_slots: u32) -> Self {
        self.max_slots = if max_slots < 2 { 2 } else { max_slots };
        self
    }

    /// The demand, in requests per interval `T` of this process for one key,
    /// from which it leases (default 2, at least 1; leasing stops below half
    /// of it). Below 2, a leased slot often sees no request in its interval
    /// and is lost: capacity the other processes could have used.
    ///
    /// ```
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().min_demand(3);
    /// # let _ = leases;
    /// ```
    pub const fn min_demand(mut self, requests_per_interval: u32) -> Self {
        self.min_demand = if requests_per_interval < 1 {
            1
        } else {
            requests_per_interval
        };
        self
    }

    /// How long demand is counted over before it is judged (default 25 ms;
    /// at least four intervals `T`). A key turns hot as soon as its count
    /// reaches `min_demand` per interval of the whole window, before the
    /// window ends.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().window(Duration::from_millis(50));
    /// # let _ = leases;
    /// ```
    pub const fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The furthest ahead a lease may start (default 2 s): when other
    /// processes' leases already reach further, the call takes nothing and
    /// this process asks again when they have run down to it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().horizon(Duration::from_secs(5));
    /// # let _ = leases;
    /// ```
    pub const fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// The slots one lease asks for at interval `interval` µs.
    pub(super) fn slots(&self, interval: u64) -> u32 {
        let n = crate::nanos::from_duration(self.length) / 1_000 / interval.max(1);
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .clamp(2, self.max_slots)
    }

    /// The demand window, in nanoseconds, at interval `interval` µs.
    pub(super) fn window_nanos(&self, interval: u64) -> u64 {
        crate::nanos::from_duration(self.window).max(interval.saturating_mul(4_000))
    }
}

/// How many requests a key sees here, per interval `T`, judged once a window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Demand {
    since: u64,
    count: u64,
    hot: bool,
}

impl Demand {
    pub(super) const fn new(now: u64) -> Self {
        Self {
            since: now,
            count: 0,
            hot: false,
        }
    }

    /// Counts a request at `now` (ns); at the end of a window, judges the
    /// rate: hot from `min` requests per interval (`interval` ns), cold again
    /// below `min / 2`. Returns whether the key is hot.
    pub(super) fn tick(&mut self, now: u64, window: u64, interval: u64, min: u32) -> bool {
        self.count += 1;
        let span = now.saturating_sub(self.since);
        if span >= window {
            // Requests per interval, in thousandths.
            let rate = u128::from(self.count) * u128::from(interval) * 1_000 / u128::from(span);
            let min = u128::from(min) * 1_000;
            self.hot = if self.hot {
                rate * 2 >= min
            } else {
                rate >= min
            };
            self.since = now;
            self.count = 0;
        } else if !self.hot
            && u128::from(self.count) * u128::from(interval) >= u128::from(min) * u128::from(window)
        {
            // The window's worth already: hot without waiting for its end.
            self.hot = true;
            self.since = now;
            self.count = 0;
        }
        self.hot
    }

    pub(super) const fn is_hot(&self) -> bool {
        self.hot
    }
}

/// One lease: `count` slots from `base` on the TAT axis (µs, the server's
/// clock), taken when the server's clock read `server_now`, which lay
/// between `early` and `late` on the caller's clock (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) base: u64,
    pub(super) count: u32,
    pub(super) interval: u64,
    pub(super) tau: u64,
    pub(super) burst: u32,
    pub(super) server_now: u64,
    pub(super) early: u64,
    pub(super) late: u64,
    /// The slots before it are used, handed out or lost.
    pub(super) next: u32,
}

/// What a lease does for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
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
        let start = self
            .base
            .saturating_add(self.interval.saturating_mul(u64::from(i)));
        start.saturating_sub(self.tau).max(self.server_now)
    }

    /// Where slot `i` surely lies in its interval on the caller's clock (ns):
    /// from the latest the due time can be to the earliest its end can be.
    /// Empty when the offset is less certain than `T`.
    pub(super) fn window(&self, i: u32) -> (u64, u64) {
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
    pub(super) fn take(&mut self, now: u64, max_wait: Option<u64>) -> Take {
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

    /// Slots not handed out yet.
    pub(super) const fn left(&self) -> u32 {
        self.count - self.next
    }

    /// Takes back every slot not handed out at `now`: the lost ones (whose
    /// interval has closed) and the span of the rest, to give back to Redis
    /// (`[start, end)` µs, and how many slots).
    pub(super) fn give_back(&mut self, now: u64) -> (u32, Option<(u64, u64, u32)>) {
        let mut lost = 0;
        while self.next < self.count && self.window(self.next).1 <= now {
            lost += 1;
            self.next += 1;
        }
        let rest = self.left();
        let span = (rest > 0).then(|| {
            let at = |i: u32| {
                self.base
                    .saturating_add(self.interval.saturating_mul(u64::from(i)))
            };
            (at(self.next), at(self.count), rest)
        });
        self.next = self.count;
        (lost, span)
    }

    /// The admission of slot `slot`, used after `delay` ns by a caller at `now`.
    pub(super) fn admission(&self, slot: u32, delay: u64, now: u64) -> Admission {
        let at = |i: u32| {
            self.base
                .saturating_add(self.interval.saturating_mul(u64::from(i)))
        };
        // Until the lease's last span has passed on the server's clock, at
        // the latest it can be here.
        let end = self
            .late
            .saturating_add((at(self.count) - self.server_now).saturating_mul(1_000));
        Admission::from_parts(
            delay,
            end.saturating_sub(now),
            self.burst,
            self.interval * 1_000,
            RefundToken {
                start: at(slot),
                end: Some(at(slot + 1)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn demand_turns_hot_at_min_and_cold_below_half() {
        let (window, interval) = (100 * MS, 10 * MS);
        let mut d = Demand::new(0);
        // 2 requests per interval: hot at the 20th, the window's worth.
        for i in 1..=19 {
            assert!(!d.tick(i * 5 * MS, window, interval, 2), "{i}");
        }
        assert!(d.tick(100 * MS, window, interval, 2));
        // 19 in a window: not hot.
        let mut slow = Demand::new(0);
        for i in 1..=19 {
            slow.tick(i * 5 * MS, window, interval, 2);
        }
        slow.tick(110 * MS, window, interval, 2);
        assert!(!slow.is_hot());
        // 10 in the next 100 ms: 1 per interval, half of min: still hot.
        for i in 1..=10 {
            d.tick(100 * MS + i * 10 * MS, window, interval, 2);
        }
        assert!(d.is_hot());
        // Then 5: cold.
        for i in 1..=5 {
            d.tick(200 * MS + i * 20 * MS, window, interval, 2);
        }
        assert!(!d.is_hot());
    }

    #[test]
    fn settings_size_the_lease() {
        let leases = Leases::new();
        // 500 ms at T = 10 ms.
        assert_eq!(leases.slots(10_000), 50);
        assert_eq!(leases.slots(1), 1024);
        assert_eq!(leases.length(Duration::ZERO).slots(10_000), 2);
        assert_eq!(leases.window_nanos(10_000), 40 * MS);
        assert_eq!(leases.window_nanos(5_000), 25 * MS);
        assert_eq!(leases.window_nanos(100_000), 400 * MS);
    }
}
