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

use std::fmt;
use std::time::Duration;

use crate::decision::{Admission, RefundToken, Rejection, Reserve, remaining_after};
use crate::nanos;
use crate::params::FreqLimitParams;

pub mod compound;
pub mod holes;

/// Why [`reserve`] refused a call: the two answers the arithmetic can give.
/// Converted into [`FreqLimitError`](crate::FreqLimitError) at the edge, where
/// backend failures and missing keys join them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The call would wait longer than its `max_wait`; nothing is consumed.
    Rejected(Rejection),
    /// The cost can never be admitted within its `max_wait`, even on a full
    /// bucket.
    CostExceedsCapacity {
        /// The cost asked for.
        cost: u32,
        /// The largest cost the params admit within that `max_wait`.
        max_cost: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(rejection) => rejection.fmt(f),
            Self::CostExceedsCapacity { cost, max_cost } => write!(
                f,
                "cost {cost} can never be admitted: at most {max_cost} fits within the allowed wait"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

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

/// The outcome of [`reserve`] for an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The TAT to store, or `None` when nothing changes (cost 0).
    pub new_tat: Option<u64>,
    /// What the caller is told.
    pub admission: Admission,
}

impl Reserve {
    /// [`Refusal::CostExceedsCapacity`] if no bucket state could ever admit
    /// this request under `params`, so callers can refuse it before asking a
    /// backend. Costs up to `burst` (the usual case) skip the division.
    #[inline]
    pub(crate) fn impossible_under(&self, params: &FreqLimitParams) -> Option<Refusal> {
        if self.cost <= params.burst() {
            return None;
        }
        let max_cost = params.max_cost(self.max_wait);
        (self.cost > max_cost).then_some(Refusal::CostExceedsCapacity {
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
/// * [`Refusal::Rejected`] when the call would wait longer than
///   `request`'s `max_wait`; it carries the `retry_after` after which the same
///   call would be admitted.
/// * [`Refusal::CostExceedsCapacity`] when the cost could not be admitted
///   within `max_wait` even on a full bucket (in reject-only mode: a cost above
///   `burst`), so retrying is pointless.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(1);
/// let reject_only = Reserve::new().no_wait();
/// let first = gcra::reserve(None, 0, &params, &reject_only).unwrap();
/// match gcra::reserve(first.new_tat, 250_000_000, &params, &reject_only) {
///     Err(gcra::Refusal::Rejected(rejection)) => {
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
) -> Result<Reserved, Refusal> {
    let interval = params.interval_nanos();
    // A TAT in the past is a full bucket, the same as a new key.
    let base = tat.map_or(now, |tat| tat.max(now));
    // The span a refund gives back starts at the stored TAT, not at `base`:
    // what lies between them is in the past and was free before this call.
    let start = tat.unwrap_or(0);

    // Cost 0 is a status check: decided exactly as a unit call (it waits, or
    // is refused, when one would) but consuming nothing. Admitting it whatever
    // the state would give a client who can drive its cost to 0 (an empty
    // batch, a missing count) unlimited access. Decided on the same path as
    // every other cost: a call out of it would cost every request ~35
    // instructions of saved registers (`tools/layer_instructions.sh`).
    let decided = Reserve {
        cost: request.cost.max(1),
        ..*request
    };
    let delay = delay_from(base, base - now, now, params, &decided)?;
    if request.cost == 0 {
        return Ok(Reserved {
            new_tat: None,
            admission: Admission::from_parts(
                delay,
                base - now,
                params.burst(),
                interval,
                RefundToken { start, end: None },
            ),
        });
    }
    // Never `u64::MAX`: the in-memory backend marks a key a compound holds
    // with it (`compound::MAX_TAT`).
    let new_tat = base
        .saturating_add(u64::from(request.cost).saturating_mul(interval))
        .min(compound::MAX_TAT);
    Ok(Reserved {
        new_tat: Some(new_tat),
        admission: Admission::from_parts(
            delay,
            new_tat - now,
            params.burst(),
            interval,
            RefundToken {
                start,
                end: Some(new_tat),
            },
        ),
    })
}

/// The wait of `request` (cost 1 or more) whose units take the slots from
/// `slot` on (`slot >= now`): the key's tail in [`reserve`], or a hole in
/// [`holes`]. `owed` is the key's TAT minus `now` (0 if it has passed), the
/// figures of a rejection.
///
/// The last of `cost` units conforms at `slot + (cost-1)T - tau`; one
/// definition for both, so a call placed in a hole is decided exactly as one
/// appended at a TAT equal to that hole's start.
#[inline(always)]
pub(crate) fn delay_from(
    slot: u64,
    owed: u64,
    now: u64,
    params: &FreqLimitParams,
    request: &Reserve,
) -> Result<u64, Refusal> {
    let interval = params.interval_nanos();
    let tau = params.tau_nanos();
    let cost = u64::from(request.cost);
    let delay = unbounded_delay(slot, now, params, cost);

    if let Some(max_wait) = request.max_wait {
        let max_wait = nanos::from_duration(max_wait);
        if delay > max_wait {
            // Even a full bucket would make this cost wait longer than allowed.
            let best_case = ((cost - 1).saturating_mul(interval)).saturating_sub(tau);
            if best_case > max_wait {
                return Err(Refusal::CostExceedsCapacity {
                    cost: request.cost,
                    max_cost: params.max_cost(Some(Duration::from_nanos(max_wait))),
                });
            }
            return Err(Refusal::Rejected(Rejection {
                retry_after: Duration::from_nanos(delay - max_wait),
                remaining: remaining_after(owed, tau, interval),
                reset_after: Duration::from_nanos(owed),
                limit: 0,
            }));
        }
    }
    Ok(delay)
}

/// The wait of `cost` units (1 or more) whose cells start at `slot`, with no
/// bound: the last cell conforms at `slot + (cost-1)T - tau`.
#[inline(always)]
pub(crate) fn unbounded_delay(slot: u64, now: u64, params: &FreqLimitParams, cost: u64) -> u64 {
    let last_unit_tat = slot.saturating_add((cost - 1).saturating_mul(params.interval_nanos()));
    last_unit_tat
        .saturating_sub(params.tau_nanos())
        .saturating_sub(now)
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
                nanos::from_duration(r.admission.delay())
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
            Err(Refusal::Rejected(r)) => {
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
            Refusal::CostExceedsCapacity {
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
        assert_eq!(peek.admission.delay(), Duration::ZERO);
        assert_eq!(peek.admission.remaining(), 2);
        assert_eq!(peek.admission.reset_after(), Duration::from_secs(1));
    }

    #[test]
    fn cost_zero_is_refused_when_a_unit_call_would_be() {
        let p = FreqLimitParams::per_second(1).with_burst(2);
        let a = reserve(None, 0, &p, &Reserve::new()).unwrap();
        let b = reserve(a.new_tat, 0, &p, &Reserve::new()).unwrap();
        // The bucket is empty: a unit call would wait 1 s, so a status check does too.
        let reject_only = Reserve::new().cost(0).no_wait();
        match reserve(b.new_tat, 0, &p, &reject_only) {
            Err(Refusal::Rejected(r)) => {
                assert_eq!(r.retry_after, Duration::from_secs(1));
                assert_eq!(r.remaining, 0);
                assert_eq!(r.reset_after, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        let waiting = reserve(b.new_tat, 0, &p, &Reserve::new().cost(0)).unwrap();
        assert_eq!(waiting.admission.delay(), Duration::from_secs(1));
        assert_eq!(waiting.new_tat, None);
        // At retry_after it passes, still consuming nothing.
        let later = reserve(b.new_tat, 1_000 * MS, &p, &reject_only).unwrap();
        assert_eq!(later.new_tat, None);
        assert_eq!(later.admission.remaining(), 1);
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
        assert_eq!(r.new_tat, Some(u64::MAX - 1));
    }
}
