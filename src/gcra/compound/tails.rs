//! The step of a compound when no limit has a hole (or for a status check):
//! each limit's earliest instant is its tail's. The backends' hot path, kept
//! lean: plain numbers out ([`Tails`]), no [`Charge`] built unless a gap
//! becomes a hole.

use super::{Charge, CompoundRefusal, Decided, Limit, MAX_LIMITS, MAX_TAT, rejected};
use crate::decision::{Admission, RefundToken, Reserve};
use crate::gcra::holes::Hole;
use crate::nanos;
use crate::params::FreqLimitParams;

/// What [`decide_at_tails`] charges each limit, as plain numbers: the
/// backends' hot path stores `new_tats` and builds no [`Charge`] unless a
/// gap must become a hole.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tails {
    /// Where limit `i`'s tail was: its TAT, or now if that is later.
    pub(crate) bases: [u64; MAX_LIMITS],
    /// Where its cells start; after `bases[i]`, the gap between is a hole.
    pub(crate) starts: [u64; MAX_LIMITS],
    /// The TAT to store (the one found, for a status check).
    pub(crate) new_tats: [u64; MAX_LIMITS],
}

impl Tails {
    /// Limit `i`'s charge for a call of `cost`.
    pub(crate) fn charge(&self, i: usize, cost: u32) -> Charge {
        if cost == 0 {
            return Charge::Nothing;
        }
        let (base, start) = (self.bases[i], self.starts[i]);
        Charge::Tail {
            gap: (start > base).then_some(Hole {
                start: base,
                end: start,
            }),
            new_tat: self.new_tats[i],
        }
    }
}

/// [`decide`](super::decide) when no limit has a hole (or for cost 0):
/// each limit's earliest instant is its tail's.
#[inline]
pub(crate) fn decide_at_tails<'p>(
    len: usize,
    limit: impl Fn(usize) -> (Option<u64>, &'p FreqLimitParams),
    now: u64,
    request: &Reserve,
    admissions: &mut [Admission; MAX_LIMITS],
    tails: &mut Tails,
) -> Result<Decided, CompoundRefusal> {
    // Cost 1, by far the most common, is compiled on its own: its lead is 0
    // and most of the saturating arithmetic folds away.
    if request.cost == 1 {
        at_tails::<true>(len, limit, now, request, admissions, tails)
    } else {
        at_tails::<false>(len, limit, now, request, admissions, tails)
    }
}

/// [`decide_at_tails`], for cost 1 only when `UNIT`.
#[inline(always)]
fn at_tails<'p, const UNIT: bool>(
    len: usize,
    limit: impl Fn(usize) -> (Option<u64>, &'p FreqLimitParams),
    now: u64,
    request: &Reserve,
    admissions: &mut [Admission; MAX_LIMITS],
    tails: &mut Tails,
) -> Result<Decided, CompoundRefusal> {
    let cost = if UNIT { 1 } else { request.cost };
    let units = u64::from(cost.max(1));
    let bases = &mut tails.bases;
    let mut leads = [0_u64; MAX_LIMITS];
    let mut t = now;
    let mut decided_by = 0;
    for i in 0..len {
        let (tat, params) = limit(i);
        let (interval, tau) = (params.interval_nanos(), params.tau_nanos());
        let last = (units - 1).saturating_mul(interval);
        let base = tat.map_or(now, |tat| tat.max(now));
        let at = base.saturating_add(last).saturating_sub(tau).max(now);
        (bases[i], leads[i]) = (base, last.saturating_sub(tau));
        if at > t {
            (t, decided_by) = (at, i);
        }
    }
    let delay = t - now;
    if let Some(max_wait) = request.max_wait {
        let max_wait = nanos::from_duration(max_wait);
        if delay > max_wait {
            let (tat, params) = limit(decided_by);
            return Err(rejected(
                &Limit::new(tat, params),
                decided_by,
                now,
                delay - max_wait,
            ));
        }
    }
    let mut gaps = false;
    for i in 0..len {
        let (tat, params) = limit(i);
        let (interval, burst) = (params.interval_nanos(), params.burst());
        let stored = tat.unwrap_or(0);
        let base = tails.bases[i];
        if cost == 0 {
            (tails.starts[i], tails.new_tats[i]) = (base, stored);
            let token = RefundToken {
                start: stored,
                end: None,
            };
            admissions[i] = Admission::from_parts(delay, base - now, burst, interval, token);
            continue;
        }
        // Charged at `t`: the cells start no earlier than `t - lead`; the
        // gap before them, if any, becomes a hole.
        let start = base.max(t.saturating_sub(leads[i]));
        let new_tat = start
            .saturating_add(u64::from(cost).saturating_mul(interval))
            .min(MAX_TAT);
        gaps |= start > base;
        (tails.starts[i], tails.new_tats[i]) = (start, new_tat);
        let token = RefundToken {
            start: if start > base { start } else { stored },
            end: Some(new_tat),
        };
        admissions[i] = Admission::from_parts(delay, new_tat - now, burst, interval, token);
    }
    Ok(Decided {
        delay,
        decided_by,
        holes_change: gaps,
    })
}
