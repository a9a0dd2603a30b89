//! The Generic Cell Rate Algorithm, as pure functions over integer nanoseconds.
//!
//! Nothing here reads a clock, locks or allocates: a backend loads a key's
//! theoretical arrival time (TAT), calls [`reserve`] with the current time, and
//! stores the new TAT it returns, atomically. Keeping the arithmetic here, apart
//! from where TATs are stored, is what lets every backend share one definition
//! and lets the tests check it to the nanosecond.
//!
//! Times are nanoseconds on the backend's own monotonic scale (any fixed origin
//! will do). A stored TAT at or before `now` means the same as no TAT at all: the
//! key's bucket is full. That is why a backend may drop such a key without
//! changing any later decision.
//!
//! # Example
//!
//! ```
//! use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
//!
//! // 1 per second, 3 at once: three calls at t = 0 pass, the next two wait.
//! let params = FreqLimitParams::per_second(1).with_burst(3);
//! let mut tat = None;
//! let mut delays = Vec::new();
//! for _ in 0..5 {
//!     let reserved = gcra::reserve(tat, 0, &params, &Reserve::new()).unwrap();
//!     tat = reserved.new_tat;
//!     delays.push(reserved.admission.delay().as_secs());
//! }
//! assert_eq!(delays, [0, 0, 0, 1, 2]);
//! ```

use std::time::Duration;

use crate::error::{FreqLimitError, Rejection};
use crate::params::FreqLimitParams;

/// One step of `aiofreqlimit`'s `gcra_step`: what [`step`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The key's theoretical arrival time after this event.
    pub new_tat: u64,
    /// How long the event must wait, from `now`, to conform.
    pub delay: u64,
}

/// The reference GCRA step in virtual-scheduling form, exactly as `aiofreqlimit`
/// defines it: a new key starts with `tat = now`, then
/// `delay = max(0, tat - tau - now)` and `new_tat = max(now, tat) + T`.
///
/// It always reserves. [`reserve`] adds cost, bounded waits and the figures that
/// rate-limit headers need, and agrees with this function for cost 1 without a
/// bound.
///
/// ```
/// use tower_freqlimit::{gcra, FreqLimitParams};
///
/// let params = FreqLimitParams::per_second(2); // T = 0.5 s
/// let first = gcra::step(None, 0, &params);
/// assert_eq!(first, gcra::Step { new_tat: 500_000_000, delay: 0 });
/// let second = gcra::step(Some(first.new_tat), 0, &params);
/// assert_eq!(second, gcra::Step { new_tat: 1_000_000_000, delay: 500_000_000 });
/// ```
#[must_use]
pub fn step(tat: Option<u64>, now: u64, params: &FreqLimitParams) -> Step {
    let tat = tat.unwrap_or(now);
    Step {
        delay: tat.saturating_sub(params.tau_nanos()).saturating_sub(now),
        new_tat: tat.max(now).saturating_add(params.interval_nanos()),
    }
}

/// What a caller asks of a backend: a cost and how long it is willing to wait.
///
/// The default is one unit, waiting as long as it takes (`aiofreqlimit`'s
/// behaviour).
///
/// * **Cost** `n` is exactly `n` unit reservations made at the same instant; the
///   call waits as long as the last of them. Cost 0 reserves nothing and only
///   reports the bucket's state.
/// * **Bounded wait**: with [`max_wait`](Self::max_wait), a call that would have
///   to wait longer is rejected and consumes nothing. `max_wait(Duration::ZERO)`
///   is reject-only, like `governor`.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::Reserve;
///
/// let ask = Reserve::new().cost(3).max_wait(Duration::from_millis(250));
/// assert_eq!(ask.cost, 3);
/// assert_eq!(ask.max_wait, Some(Duration::from_millis(250)));
/// assert_eq!(Reserve::new().no_wait().max_wait, Some(Duration::ZERO));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reserve {
    /// The units asked for: a call of cost `n` is `n` unit calls at one
    /// instant. Cost 0 asks for nothing and is always admitted at once.
    pub cost: u32,
    /// The longest acceptable wait; `None` waits as long as needed.
    pub max_wait: Option<Duration>,
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

impl Reserve {
    /// One unit, waiting as long as needed.
    #[must_use]
    #[inline]
    pub const fn new() -> Self {
        Self {
            cost: 1,
            max_wait: None,
        }
    }

    /// Reserve `cost` units at once (a weighted call).
    #[must_use]
    #[inline]
    pub const fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// Reject instead of waiting longer than `max_wait`.
    #[must_use]
    #[inline]
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Reject instead of waiting at all (`max_wait(Duration::ZERO)`).
    #[must_use]
    #[inline]
    pub const fn no_wait(self) -> Self {
        self.max_wait(Duration::ZERO)
    }

    /// Wait as long as needed (the default).
    #[must_use]
    #[inline]
    pub const fn wait_forever(mut self) -> Self {
        self.max_wait = None;
        self
    }
}

/// An admitted call: how long it must wait, and the state of its bucket.
///
/// `remaining` and `reset_after` are what the IETF `RateLimit` header reports.
///
/// ```
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(10).with_burst(5);
/// let admission = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap().admission;
/// assert!(admission.delay().is_zero());
/// assert_eq!(admission.remaining(), 4);
/// assert_eq!(admission.reset_after().as_millis(), 100);
/// ```
///
/// Two admissions are equal when they tell the caller the same thing; the refund
/// token inside (see [`FreqLimitBackend::refund`]) is not compared.
///
/// [`FreqLimitBackend::refund`]: crate::FreqLimitBackend::refund
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    // Nanoseconds, not `Duration`s: half the size, and `remaining` is only divided
    // out when asked for (HTTP headers), not on every decision.
    delay: u64,
    reset_after: u64,
    tau: u64,
    interval: u64,
    // The refund token's parts, flattened: with the flags side by side the
    // admission takes 56 bytes, not 64, which keeps the layer's response future
    // within what the compiler moves without a `memcpy` call.
    tat_before: u64,
    tat_after: u64,
    stored: bool,
    // Let through without a decision because the backend failed (fail-open).
    fail_open: bool,
}

/// The key's TAT before and after a reservation, on the backend's scale: what a
/// backend needs to undo that reservation, and only if nothing came after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RefundToken {
    /// The stored TAT the reservation started from (0 for a new key: any TAT in
    /// the past means a full bucket).
    pub tat_before: u64,
    /// The TAT the reservation stored; `None` when it stored nothing (cost 0).
    pub tat_after: Option<u64>,
}

impl PartialEq for Admission {
    fn eq(&self, other: &Self) -> bool {
        self.delay == other.delay
            && self.reset_after == other.reset_after
            && self.remaining() == other.remaining()
            && self.fail_open == other.fail_open
    }
}

impl Eq for Admission {}

impl Admission {
    /// How long the call waits (or, once returned by [`FreqLimit::acquire`], waited)
    /// for its slot, measured from when it asked.
    ///
    /// [`FreqLimit::acquire`]: crate::FreqLimit::acquire
    #[must_use]
    #[inline]
    pub const fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay)
    }

    /// How many more unit calls would be admitted without waiting, right after
    /// this one.
    #[must_use]
    #[inline]
    pub const fn remaining(&self) -> u32 {
        remaining_after(self.reset_after, self.tau, self.interval)
    }

    /// How long until the bucket is full again (the key is then as good as new).
    #[must_use]
    #[inline]
    pub const fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// What a backend needs to give this reservation back.
    #[must_use]
    #[inline]
    pub const fn refund_token(&self) -> RefundToken {
        RefundToken {
            tat_before: self.tat_before,
            tat_after: if self.stored {
                Some(self.tat_after)
            } else {
                None
            },
        }
    }

    /// Whether the call was let through *without* a decision: a remote backend
    /// set to fail open could not be asked (see the Redis backend's
    /// `FailurePolicy`). Its figures are those of a new key's first call (no
    /// delay, `burst - 1` remaining), not the key's real state, and there is
    /// nothing to refund. Always `false` for decided calls.
    ///
    /// ```
    /// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
    ///
    /// let params = FreqLimitParams::per_second(1);
    /// let admission = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap().admission;
    /// assert!(!admission.is_fail_open());
    /// ```
    #[must_use]
    #[inline]
    pub const fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// An admission decided elsewhere (on a Redis server): every figure in
    /// nanoseconds, `tau` and `interval` as that backend rounded them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn from_parts(
        delay: u64,
        reset_after: u64,
        tau: u64,
        interval: u64,
        refund: RefundToken,
    ) -> Self {
        Self {
            delay,
            reset_after,
            tau,
            interval,
            tat_before: refund.tat_before,
            tat_after: match refund.tat_after {
                Some(tat) => tat,
                None => 0,
            },
            stored: refund.tat_after.is_some(),
            fail_open: false,
        }
    }

    /// The same admission with another delay (nanoseconds from when the call
    /// asked): a remote backend adds the round trip.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn with_delay(mut self, delay: u64) -> Self {
        self.delay = delay;
        self
    }

    /// A call let through undecided because the backend failed: the figures of
    /// a new key's first call, nothing to refund.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn fail_open(params: &FreqLimitParams) -> Self {
        Self {
            delay: 0,
            reset_after: params.interval_nanos(),
            tau: params.tau_nanos(),
            interval: params.interval_nanos(),
            tat_before: 0,
            tat_after: 0,
            stored: false,
            fail_open: true,
        }
    }
}

/// The outcome of [`reserve`] for an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The TAT to store, or `None` when nothing changes (cost 0).
    pub new_tat: Option<u64>,
    /// What the caller is told.
    pub admission: Admission,
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX` (about 584 years).
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(tower_freqlimit::gcra::duration_to_nanos(Duration::from_millis(1)), 1_000_000);
/// assert_eq!(tower_freqlimit::gcra::duration_to_nanos(Duration::MAX), u64::MAX);
/// ```
#[must_use]
#[inline]
pub const fn duration_to_nanos(d: Duration) -> u64 {
    // u64 arithmetic: cheaper than going through `as_nanos()`'s u128.
    match d.as_secs().checked_mul(1_000_000_000) {
        Some(secs) => secs.saturating_add(d.subsec_nanos() as u64),
        None => u64::MAX,
    }
}

/// Unit calls that would pass right now without waiting, for a key that owes
/// `owed` nanoseconds (its TAT minus now).
#[inline]
const fn remaining_after(owed: u64, tau: u64, interval: u64) -> u32 {
    if owed > tau {
        0
    } else {
        // At most `burst`, which is a u32.
        ((tau - owed) / interval + 1) as u32
    }
}

impl Reserve {
    /// [`FreqLimitError::CostExceedsCapacity`] if no bucket state could ever admit
    /// this request under `params`, so callers can refuse it before asking a
    /// backend. Costs up to `burst` (the usual case) skip the division.
    #[inline]
    pub(crate) fn impossible_under(&self, params: &FreqLimitParams) -> Option<FreqLimitError> {
        if self.cost <= params.burst() {
            return None;
        }
        let max_cost = params.max_cost(self.max_wait);
        (self.cost > max_cost).then_some(FreqLimitError::CostExceedsCapacity {
            cost: self.cost,
            max_cost,
        })
    }
}

/// Decides one call: the GCRA step extended with cost, bounded wait and the
/// figures for rate-limit headers.
///
/// `tat` is the key's stored TAT (`None` for a new key), `now` the current time on
/// the same scale. On success the backend stores [`Reserved::new_tat`] if it is
/// `Some`; on any error it stores nothing.
///
/// # Errors
///
/// * [`FreqLimitError::Rejected`] when the call would wait longer than
///   `request`'s `max_wait`; it carries the `retry_after` after which the same
///   call would be admitted.
/// * [`FreqLimitError::CostExceedsCapacity`] when the cost could not be admitted
///   within `max_wait` even on a full bucket (in reject-only mode: a cost above
///   `burst`), so retrying is pointless.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{gcra, FreqLimitError, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(1);
/// let reject_only = Reserve::new().no_wait();
/// let first = gcra::reserve(None, 0, &params, &reject_only).unwrap();
/// match gcra::reserve(first.new_tat, 250_000_000, &params, &reject_only) {
///     Err(FreqLimitError::Rejected(rejection)) => {
///         assert_eq!(rejection.retry_after(), Duration::from_millis(750));
///     }
///     other => panic!("expected a rejection, got {other:?}"),
/// }
/// ```
#[inline]
pub fn reserve(
    tat: Option<u64>,
    now: u64,
    params: &FreqLimitParams,
    request: &Reserve,
) -> Result<Reserved, FreqLimitError> {
    let interval = params.interval_nanos();
    let tau = params.tau_nanos();
    // A TAT in the past is a full bucket, the same as a new key.
    let base = tat.map_or(now, |tat| tat.max(now));
    let cost = u64::from(request.cost);

    if cost == 0 {
        return Ok(Reserved {
            new_tat: None,
            admission: Admission {
                delay: 0,
                reset_after: base - now,
                tau,
                interval,
                tat_before: tat.unwrap_or(0),
                tat_after: 0,
                stored: false,
                fail_open: false,
            },
        });
    }

    // The last of `cost` unit reservations conforms at `base + (cost-1)T - tau`.
    let last_unit_tat = base.saturating_add((cost - 1).saturating_mul(interval));
    let delay = last_unit_tat.saturating_sub(tau).saturating_sub(now);

    if let Some(max_wait) = request.max_wait {
        let max_wait = duration_to_nanos(max_wait);
        if delay > max_wait {
            // Even a full bucket would make this cost wait longer than allowed.
            let best_case = ((cost - 1).saturating_mul(interval)).saturating_sub(tau);
            if best_case > max_wait {
                return Err(FreqLimitError::CostExceedsCapacity {
                    cost: request.cost,
                    max_cost: params.max_cost(Some(Duration::from_nanos(max_wait))),
                });
            }
            return Err(FreqLimitError::Rejected(Rejection {
                retry_after: Duration::from_nanos(delay - max_wait),
                remaining: remaining_after(base - now, tau, interval),
                reset_after: Duration::from_nanos(base - now),
            }));
        }
    }

    let new_tat = base.saturating_add(cost.saturating_mul(interval));
    Ok(Reserved {
        new_tat: Some(new_tat),
        admission: Admission {
            delay,
            reset_after: new_tat - now,
            tau,
            interval,
            tat_before: tat.unwrap_or(0),
            tat_after: new_tat,
            stored: true,
            fail_open: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn delays(params: &FreqLimitParams, calls_at: &[u64]) -> Vec<u64> {
        let mut tat = None;
        calls_at
            .iter()
            .map(|&now| {
                let r = reserve(tat, now, params, &Reserve::new()).unwrap();
                tat = r.new_tat;
                crate::gcra::duration_to_nanos(r.admission.delay())
            })
            .collect()
    }

    #[test]
    fn burst_three_at_one_per_second() {
        let p = FreqLimitParams::per_second(1).with_burst(3);
        assert_eq!(delays(&p, &[0; 5]), [0, 0, 0, S, 2 * S]);
    }

    #[test]
    fn two_per_second_without_burst() {
        let p = FreqLimitParams::per_second(2);
        let t0 = 10 * S;
        assert_eq!(
            delays(&p, &[t0, t0, t0 + 500 * MS, t0 + 1500 * MS]),
            [0, 500 * MS, 500 * MS, 0]
        );
    }

    #[test]
    fn two_per_second_burst_two() {
        let p = FreqLimitParams::per_second(2).with_burst(2);
        assert_eq!(delays(&p, &[0, 0, 0]), [0, 0, 500 * MS]);
    }

    #[test]
    fn reference_step_matches_reserve() {
        let p = FreqLimitParams::per_second(3).with_burst(2);
        let mut tat = None;
        for now in [0, 0, 0, 10, 400 * MS, 401 * MS, 3 * S] {
            let s = step(tat, now, &p);
            let r = reserve(tat, now, &p, &Reserve::new()).unwrap();
            assert_eq!(r.new_tat, Some(s.new_tat));
            assert_eq!(r.admission.delay(), Duration::from_nanos(s.delay));
            tat = Some(s.new_tat);
        }
    }

    #[test]
    fn rejection_reports_retry_after_and_keeps_nothing() {
        let p = FreqLimitParams::per_second(1).with_burst(2);
        let ask = Reserve::new().max_wait(Duration::from_millis(200));
        let a = reserve(None, 0, &p, &ask).unwrap();
        let b = reserve(a.new_tat, 0, &p, &ask).unwrap();
        assert_eq!(b.admission.remaining(), 0);
        // The third call would wait 1 s, 800 ms more than allowed.
        match reserve(b.new_tat, 0, &p, &ask) {
            Err(FreqLimitError::Rejected(r)) => {
                assert_eq!(r.retry_after, Duration::from_millis(800));
                assert_eq!(r.remaining, 0);
                assert_eq!(r.reset_after, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        // At exactly retry_after the same call passes, waiting max_wait.
        let c = reserve(b.new_tat, 800 * MS, &p, &ask).unwrap();
        assert_eq!(c.admission.delay(), Duration::from_millis(200));
    }

    #[test]
    fn cost_above_burst_is_impossible_in_reject_only_mode() {
        let p = FreqLimitParams::per_second(1).with_burst(3);
        let err = reserve(None, 0, &p, &Reserve::new().cost(4).no_wait()).unwrap_err();
        assert_eq!(
            err,
            FreqLimitError::CostExceedsCapacity {
                cost: 4,
                max_cost: 3
            }
        );
        // Cost exactly burst passes on a full bucket.
        assert!(reserve(None, 0, &p, &Reserve::new().cost(3).no_wait()).is_ok());
    }

    #[test]
    fn cost_zero_only_reports() {
        let p = FreqLimitParams::per_second(1).with_burst(3);
        let a = reserve(None, 0, &p, &Reserve::new()).unwrap();
        let peek = reserve(a.new_tat, 0, &p, &Reserve::new().cost(0)).unwrap();
        assert_eq!(peek.new_tat, None);
        assert_eq!(peek.admission.remaining(), 2);
        assert_eq!(peek.admission.reset_after(), Duration::from_secs(1));
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let p = FreqLimitParams::new(1, Duration::from_nanos(u64::MAX), 1);
        let r = reserve(
            Some(u64::MAX - 1),
            u64::MAX - 2,
            &p,
            &Reserve::new().cost(u32::MAX),
        )
        .unwrap();
        assert_eq!(r.new_tat, Some(u64::MAX));
    }
}
