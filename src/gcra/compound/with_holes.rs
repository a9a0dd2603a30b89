//! A compound's decision when some limit has holes: each limit's instants
//! are its holes' (where the cost fits) and its tail's, the call runs at the
//! first instant all share, and each limit places its cells there.

use super::{Charge, CompoundRefusal, Decided, Limit, MAX_LIMITS, MAX_TAT, rejected};
use crate::decision::{Admission, RefundToken, Reserve};
use crate::gcra::holes::Hole;
use crate::nanos;
use crate::params::FreqLimitParams;

/// The shape of a cost on one limit, in nanoseconds of its TAT axis.
#[derive(Clone, Copy)]
struct Shape {
    /// `cost * T`: the span the cells take.
    need: u64,
    /// `(cost - 1) * T`: from the first cell to the last.
    last: u64,
    /// `tau`.
    tau: u64,
    /// `max(0, last - tau)`: how far before the call the first cell may be.
    lead: u64,
}

impl Shape {
    #[inline]
    fn new(params: &FreqLimitParams, cost: u32) -> Self {
        let interval = params.interval_nanos();
        let last = u64::from(cost.max(1) - 1).saturating_mul(interval);
        let tau = params.tau_nanos();
        Self {
            need: u64::from(cost.max(1)).saturating_mul(interval),
            last,
            tau,
            lead: last.saturating_sub(tau),
        }
    }

    /// The earliest instant a call whose cells start at `slot` conforms.
    #[inline]
    fn conforms(&self, slot: u64, now: u64) -> u64 {
        slot.saturating_add(self.last)
            .saturating_sub(self.tau)
            .max(now)
    }
}

/// The hole spans `limit` may place cells in: `(index, first slot, last
/// slot)`, where the cost fits.
fn rooms<'a>(
    limit: &'a Limit<'_>,
    now: u64,
    shape: Shape,
) -> impl Iterator<Item = (usize, u64, u64)> + 'a {
    limit
        .holes
        .iter()
        .enumerate()
        .filter_map(move |(index, hole)| {
            let first = hole.start.max(now);
            let last = hole.end.checked_sub(shape.need)?;
            (first <= last).then_some((index, first, last))
        })
}

/// The earliest instant from `from` on at which `limit` admits the call:
/// in the first hole whose instants reach it, else at the tail.
fn earliest(limit: &Limit<'_>, now: u64, shape: Shape, from: u64) -> u64 {
    for (_, first, last) in rooms(limit, now, shape) {
        let at = from.max(shape.conforms(first, now));
        if at <= last.saturating_add(shape.lead) {
            return at;
        }
    }
    let base = limit.tat.map_or(now, |tat| tat.max(now));
    from.max(shape.conforms(base, now))
}

/// Where `limit`'s cells go for a call at `t` (which [`earliest`] admits):
/// the earliest place whose cells start no earlier than `t - lead`.
fn place(limit: &Limit<'_>, now: u64, shape: Shape, t: u64) -> Charge {
    for (index, first, last) in rooms(limit, now, shape) {
        if shape.conforms(first, now) <= t && t <= last.saturating_add(shape.lead) {
            let start = first.max(t.saturating_sub(shape.lead));
            return Charge::Hole {
                index,
                start,
                end: start.saturating_add(shape.need),
            };
        }
    }
    tail(limit, now, shape, t)
}

/// Cells appended at `limit`'s TAT for a call at `t`: they start no earlier
/// than `t - lead`, and the gap before them, if any, becomes a hole.
#[inline]
fn tail(limit: &Limit<'_>, now: u64, shape: Shape, t: u64) -> Charge {
    let base = limit.tat.map_or(now, |tat| tat.max(now));
    let start = base.max(t.saturating_sub(shape.lead));
    Charge::Tail {
        gap: (start > base).then_some(Hole {
            start: base,
            end: start,
        }),
        new_tat: start.saturating_add(shape.need).min(MAX_TAT),
    }
}

/// [`decide`](super::decide) when some limit has holes (cost 1 or more).
#[inline(never)]
pub(super) fn reserve_with_holes(
    limits: &[Limit<'_>],
    now: u64,
    request: &Reserve,
    admissions: &mut [Admission; MAX_LIMITS],
    charges: &mut [Charge; MAX_LIMITS],
) -> Result<Decided, CompoundRefusal> {
    let mut shapes = [Shape::new(limits[0].params, 1); MAX_LIMITS];
    for (i, limit) in limits.iter().enumerate() {
        shapes[i] = Shape::new(limit.params, request.cost);
    }
    let (t, decided_by) = common_instant(limits, &shapes, now);
    let delay = t - now;
    if let Some(max_wait) = request.max_wait {
        let max_wait = nanos::from_duration(max_wait);
        if delay > max_wait {
            return Err(rejected(
                &limits[decided_by],
                decided_by,
                now,
                delay - max_wait,
            ));
        }
    }
    for (i, limit) in limits.iter().enumerate() {
        let (interval, burst) = (limit.params.interval_nanos(), limit.params.burst());
        let owed = limit.tat.map_or(0, |tat| tat.saturating_sub(now));
        let stored = limit.tat.unwrap_or(0);
        let charge = place(limit, now, shapes[i], t);
        let (token, after) = match charge {
            Charge::Nothing => (
                RefundToken {
                    start: stored,
                    end: None,
                },
                owed,
            ),
            Charge::Hole { start, end, .. } => (
                RefundToken {
                    start,
                    end: Some(end),
                },
                owed,
            ),
            // With no gap the span starts at the stored TAT, as for one
            // limit; after a gap (now a hole), where the cells do.
            Charge::Tail { gap, new_tat } => (
                RefundToken {
                    start: gap.map_or(stored, |gap| gap.end),
                    end: Some(new_tat),
                },
                new_tat - now,
            ),
        };
        charges[i] = charge;
        admissions[i] = Admission::from_parts(delay, after, burst, interval, token);
    }
    Ok(Decided {
        delay,
        decided_by,
        holes_change: true,
    })
}

/// The common instant when some limit has holes: the deciding limit is the
/// one whose own earliest instant is the latest (the first of equals), and
/// `t` rises from there until no limit raises it (a limit's instants may be
/// a hole's, then a gap, then its tail).
#[inline(never)]
fn common_instant(limits: &[Limit<'_>], shapes: &[Shape; MAX_LIMITS], now: u64) -> (u64, usize) {
    let mut t = now;
    let mut decided_by = 0;
    for (i, limit) in limits.iter().enumerate() {
        let at = earliest(limit, now, shapes[i], now);
        if at > t {
            (t, decided_by) = (at, i);
        }
    }
    loop {
        let mut raised = false;
        for (i, limit) in limits.iter().enumerate() {
            let at = earliest(limit, now, shapes[i], t);
            if at > t {
                (t, raised) = (at, true);
            }
        }
        if !raised {
            return (t, decided_by);
        }
    }
}
