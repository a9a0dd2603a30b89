//! Several limits, one decision: the GCRA step over a *compound* of limits
//! (per chat, per group and global at once), pure like [`reserve`](super::reserve).
//!
//! A compound call of cost `n` runs at the earliest instant `t` at which every
//! limit admits it, and every limit is charged *at `t`*: its `n` cells start
//! at `max(tat, t - lead)`, where `lead = max(0, (n - 1)T - tau)` is how far
//! before `t` a cost larger than the burst may start (the same allowance a
//! single limit gives such a cost). So:
//!
//! * waits overlap: `t = max` over the limits of each one's earliest
//!   conforming time, not their sum;
//! * no limit is charged early: a limit that would have admitted the call
//!   sooner is charged as if the call had arrived at `t` (charging it at `now`
//!   would let another caller of that limit in at `t` too);
//! * all or nothing: a refusal (a wait over `max_wait`, or a cost one of the
//!   limits can never admit) changes no limit, and its `retry_after` is when
//!   every limit would admit the same call;
//! * a compound of one limit is exactly [`reserve`](super::reserve).
//!
//! ```
//! use tower_freqlimit::gcra::compound::{reserve_all, Charge, Limit};
//! use tower_freqlimit::gcra::holes::Hole;
//! use tower_freqlimit::{FreqLimitParams, Reserve};
//!
//! const S: u64 = 1_000_000_000;
//! let per_chat = FreqLimitParams::per_second(1); // one per second
//! let global = FreqLimitParams::per_second(2).with_burst(2);
//! // The chat is owed 1 s, the global bucket is full.
//! let limits = [Limit::new(Some(S), &per_chat), Limit::new(None, &global)];
//! let decided = reserve_all(&limits, 0, &Reserve::new()).unwrap();
//! assert_eq!(decided.delay(), S); // waits for the chat
//! assert_eq!(decided.decided_by(), 0);
//! // Both are charged at t = 1 s: the global bucket from 1 s, not from 0,
//! // and its first second stays free for other callers (a hole).
//! assert_eq!(decided.charges()[0].new_tat(), Some(2 * S));
//! assert_eq!(
//!     decided.charges()[1],
//!     Charge::Tail { gap: Some(Hole { start: 0, end: S }), new_tat: S + S / 2 },
//! );
//! ```

use std::fmt;
use std::time::Duration;

mod tails;
mod with_holes;

pub(crate) use self::tails::{Tails, decide_at_tails};
use self::with_holes::reserve_with_holes;
use super::Refusal;
use super::holes::Hole;
use crate::decision::{Admission, RefundToken, Rejection, Reserve, remaining_after};
use crate::params::FreqLimitParams;

/// The most limits one compound decides together.
///
/// Each compound's state is kept in fixed arrays of this length, so that
/// deciding one allocates nothing.
pub const MAX_LIMITS: usize = 4;

/// The largest TAT a compound stores: one below `u64::MAX`, which the
/// in-memory backend uses as the mark of a key locked by a compound.
pub(crate) const MAX_TAT: u64 = u64::MAX - 1;

/// One limit of a compound: its key's stored TAT (`None` for a new key), its
/// holes (see [`holes`](super::holes)) and its params.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    /// The key's stored TAT, `None` for a key never seen.
    pub tat: Option<u64>,
    /// The key's holes, sorted, all below the TAT (those ended by `now` are
    /// skipped).
    pub holes: &'a [Hole],
    /// The limit's params.
    pub params: &'a FreqLimitParams,
}

impl<'a> Limit<'a> {
    /// A limit whose key stores `tat` and has no hole, under `params`.
    ///
    /// ```
    /// use tower_freqlimit::gcra::compound::Limit;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// let params = FreqLimitParams::per_second(1);
    /// assert_eq!(Limit::new(None, &params).tat, None);
    /// ```
    #[must_use]
    pub const fn new(tat: Option<u64>, params: &'a FreqLimitParams) -> Self {
        Self {
            tat,
            holes: &[],
            params,
        }
    }

    /// The same limit, with the key's holes.
    ///
    /// ```
    /// use tower_freqlimit::gcra::compound::Limit;
    /// use tower_freqlimit::gcra::holes::Hole;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// let params = FreqLimitParams::per_second(1);
    /// let holes = [Hole { start: 0, end: 1_000_000_000 }];
    /// assert_eq!(Limit::new(Some(5_000_000_000), &params).with_holes(&holes).holes.len(), 1);
    /// ```
    #[must_use]
    pub const fn with_holes(mut self, holes: &'a [Hole]) -> Self {
        self.holes = holes;
        self
    }
}

/// What an admitted compound takes from one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charge {
    /// Nothing (cost 0).
    Nothing,
    /// The span `[start, end)` out of the hole at `index`; the TAT stays.
    Hole {
        /// The hole's index in [`Limit::holes`].
        index: usize,
        /// Where the span starts.
        start: u64,
        /// Where it ends.
        end: u64,
    },
    /// Appended: the TAT becomes `new_tat`, and the span between the old TAT
    /// (or `now`) and where the cells start, if any, becomes a hole.
    Tail {
        /// The gap left before the cells, free for other callers.
        gap: Option<Hole>,
        /// The key's new TAT.
        new_tat: u64,
    },
}

impl Charge {
    /// The TAT the key stores after this charge, `None` if it is unchanged.
    ///
    /// ```
    /// use tower_freqlimit::gcra::compound::Charge;
    ///
    /// assert_eq!(Charge::Tail { gap: None, new_tat: 7 }.new_tat(), Some(7));
    /// assert_eq!(Charge::Nothing.new_tat(), None);
    /// ```
    #[must_use]
    pub const fn new_tat(&self) -> Option<u64> {
        match self {
            Self::Tail { new_tat, .. } => Some(*new_tat),
            Self::Nothing | Self::Hole { .. } => None,
        }
    }

    /// Whether the key's holes change.
    ///
    /// ```
    /// use tower_freqlimit::gcra::compound::Charge;
    ///
    /// assert!(!Charge::Tail { gap: None, new_tat: 7 }.changes_holes());
    /// ```
    #[must_use]
    pub const fn changes_holes(&self) -> bool {
        matches!(self, Self::Hole { .. } | Self::Tail { gap: Some(_), .. })
    }
}

/// Why [`reserve_all`] refused a call, and which limit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompoundRefusal {
    /// The index (in the compound) of the limit that refused: the one whose
    /// own wait (alone) is the longest, or the first that can never admit
    /// the cost.
    pub limit: usize,
    /// The refusal, as that limit alone would have put it, except that a
    /// rejection's `retry_after` counts until every limit admits the call.
    pub refusal: Refusal,
}

impl fmt::Display for CompoundRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit {} of the compound: {}", self.limit, self.refusal)
    }
}

impl std::error::Error for CompoundRefusal {}

/// An admitted compound call: its wait, and each limit's admission and new
/// TAT (in the order of the limits).
#[derive(Debug, Clone, Copy)]
pub struct CompoundReserved {
    delay: u64,
    decided_by: usize,
    len: usize,
    charges: [Charge; MAX_LIMITS],
    admissions: [Admission; MAX_LIMITS],
}

impl CompoundReserved {
    /// How long the call waits, from `now`: the same for every limit.
    #[must_use]
    pub const fn delay(&self) -> u64 {
        self.delay
    }

    /// The index of the limit the call waits for: the one whose own wait
    /// (alone) is the longest, the first of equals (0 when nothing waits).
    #[must_use]
    pub const fn decided_by(&self) -> usize {
        self.decided_by
    }

    /// What each limit takes: the state each key stores is its TAT and
    /// holes with this [`Charge`] applied ([`Charge::new_tat`],
    /// [`Holes::apply`](super::holes::Holes::apply)).
    #[must_use]
    pub fn charges(&self) -> &[Charge] {
        &self.charges[..self.len]
    }

    /// What each limit tells the caller: the common delay, and that limit's
    /// `remaining`, `reset_after` and refund token.
    #[must_use]
    pub fn admissions(&self) -> &[Admission] {
        &self.admissions[..self.len]
    }
}

/// An admission standing for "no limit here", to fill the unused places of
/// an array that `..len` slices (never read). All zeros, so that filling an
/// array of them is a few vector stores on the hot path.
pub(crate) const NONE: Admission = Admission::from_parts(
    0,
    0,
    0,
    0,
    RefundToken {
        start: 0,
        end: None,
    },
);

/// Decides one call over every limit in `limits` at once (see the module
/// docs). On success each key stores its [`charges`](CompoundReserved::charges)
/// entry applied, all of them atomically; on any error nothing is stored.
///
/// Holes count for costs of 1 or more: a limit's earliest instant may be in
/// a hole, and a call placed later than its key's TAT leaves the gap as a
/// hole for others, so waiting for one limit does not block the others.
/// Cost 0 is decided at the TAT, as for one limit.
///
/// # Errors
///
/// [`CompoundRefusal`]: [`Refusal::CostExceedsCapacity`] from the first limit
/// that can never admit the cost within `max_wait`, else
/// [`Refusal::Rejected`] when the common wait exceeds `max_wait`, from the
/// limit that set it.
///
/// # Panics
///
/// If `limits` is empty or longer than [`MAX_LIMITS`]: a limiter checks this
/// when it is built.
pub fn reserve_all(
    limits: &[Limit<'_>],
    now: u64,
    request: &Reserve,
) -> Result<CompoundReserved, CompoundRefusal> {
    let mut reserved = CompoundReserved {
        delay: 0,
        decided_by: 0,
        len: limits.len(),
        charges: [Charge::Nothing; MAX_LIMITS],
        admissions: [NONE; MAX_LIMITS],
    };
    assert!(
        !limits.is_empty() && limits.len() <= MAX_LIMITS,
        "a compound has 1 to {MAX_LIMITS} limits, not {}",
        limits.len()
    );
    for (limit, part) in limits.iter().enumerate() {
        if let Some(refusal) = request.impossible_under(part.params) {
            return Err(CompoundRefusal { limit, refusal });
        }
    }
    let decided = decide(
        limits,
        now,
        request,
        &mut reserved.admissions,
        &mut reserved.charges,
    )?;
    reserved.delay = decided.delay;
    reserved.decided_by = decided.decided_by;
    Ok(reserved)
}

/// [`reserve_all`] once its checks are made (1 to [`MAX_LIMITS`] limits,
/// no impossible cost), writing each limit's admission and charge into the
/// caller's arrays (the in-memory backend's, so that nothing is copied
/// twice); the common delay and the deciding limit.
#[inline]
pub(crate) fn decide(
    limits: &[Limit<'_>],
    now: u64,
    request: &Reserve,
    admissions: &mut [Admission; MAX_LIMITS],
    charges: &mut [Charge; MAX_LIMITS],
) -> Result<Decided, CompoundRefusal> {
    // A status check (cost 0) is decided at the TAT, as for one limit.
    if request.cost > 0 && limits.iter().any(|limit| !limit.holes.is_empty()) {
        return reserve_with_holes(limits, now, request, admissions, charges);
    }
    let mut tails = Tails::default();
    let decided = decide_at_tails(
        limits.len(),
        |i| (limits[i].tat, limits[i].params),
        now,
        request,
        admissions,
        &mut tails,
    )?;
    for (i, charge) in charges.iter_mut().enumerate().take(limits.len()) {
        *charge = tails.charge(i, request.cost);
    }
    Ok(decided)
}

/// What [`decide`] found, beside each limit's admission and charge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decided {
    /// The common delay.
    pub(crate) delay: u64,
    /// The deciding limit.
    pub(crate) decided_by: usize,
    /// Whether some charge changes its key's holes (a gap, a span taken
    /// out of a hole).
    pub(crate) holes_change: bool,
}

/// The refusal of a call that would wait `over` longer than allowed,
/// decided by `limit` (at `index`).
#[cold]
fn rejected(limit: &Limit<'_>, index: usize, now: u64, over: u64) -> CompoundRefusal {
    let owed = limit.tat.map_or(0, |tat| tat.saturating_sub(now));
    CompoundRefusal {
        limit: index,
        refusal: Refusal::Rejected(Rejection {
            retry_after: Duration::from_nanos(over),
            remaining: remaining_after(
                owed,
                limit.params.tau_nanos(),
                limit.params.interval_nanos(),
            ),
            reset_after: Duration::from_nanos(owed),
            // `MAX_LIMITS` fits in a byte.
            limit: index as u8,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A limit whose cells start where its tail already is leaves no gap
    /// (an empty hole would only take one of its key's places).
    #[test]
    fn no_gap_where_the_cells_start_at_the_tail() {
        let p = FreqLimitParams::per_second(1);
        // Both owe a second: the call runs at 1 s, each limit at its tail.
        let limits = [Limit::new(Some(S), &p), Limit::new(Some(S), &p)];
        let decided = reserve_all(&limits, 0, &Reserve::new()).unwrap();
        assert_eq!(decided.delay(), S);
        for charge in decided.charges() {
            assert_eq!(
                *charge,
                Charge::Tail {
                    gap: None,
                    new_tat: 2 * S
                }
            );
        }
        // One owes a second, the other nothing: the second's gap is [0, 1 s).
        let limits = [Limit::new(Some(S), &p), Limit::new(None, &p)];
        let decided = reserve_all(&limits, 0, &Reserve::new()).unwrap();
        assert_eq!(
            decided.charges()[1],
            Charge::Tail {
                gap: Some(Hole { start: 0, end: S }),
                new_tat: 2 * S
            }
        );
    }
}
