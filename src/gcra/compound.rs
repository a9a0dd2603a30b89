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
//! use tower_freqlimit::gcra::compound::{reserve_all, Limit};
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
//! // Both are charged at t = 1 s: the global bucket from 1 s, not from 0.
//! assert_eq!(decided.new_tats(), &[Some(2 * S), Some(S + S / 2)]);
//! ```

use std::fmt;
use std::time::Duration;

use super::{Refusal, unbounded_delay};
use crate::decision::{Admission, RefundToken, Rejection, Reserve, remaining_after};
use crate::nanos;
use crate::params::FreqLimitParams;

/// The most limits one compound decides together.
///
/// Each compound's state is kept in fixed arrays of this length, so that
/// deciding one allocates nothing.
pub const MAX_LIMITS: usize = 8;

/// The largest TAT a compound stores: one below `u64::MAX`, which the
/// in-memory backend uses as the mark of a key locked by a compound.
pub(crate) const MAX_TAT: u64 = u64::MAX - 1;

/// One limit of a compound: its key's stored TAT (`None` for a new key) and
/// its params.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    /// The key's stored TAT, `None` for a key never seen.
    pub tat: Option<u64>,
    /// The limit's params.
    pub params: &'a FreqLimitParams,
}

impl<'a> Limit<'a> {
    /// A limit whose key stores `tat`, under `params`.
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
        Self { tat, params }
    }
}

/// Why [`reserve_all`] refused a call, and which limit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompoundRefusal {
    /// The index (in the compound) of the limit that refused: the one whose
    /// wait is the longest, or the first that can never admit the cost.
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
    new_tats: [Option<u64>; MAX_LIMITS],
    admissions: [Admission; MAX_LIMITS],
}

impl CompoundReserved {
    /// How long the call waits, from `now`: the same for every limit.
    #[must_use]
    pub const fn delay(&self) -> u64 {
        self.delay
    }

    /// The index of the limit the call waits for: the first of the longest
    /// waits (0 when nothing waits).
    #[must_use]
    pub const fn decided_by(&self) -> usize {
        self.decided_by
    }

    /// The TAT each limit stores (`None`: unchanged, for cost 0).
    #[must_use]
    pub fn new_tats(&self) -> &[Option<u64>] {
        &self.new_tats[..self.len]
    }

    /// What each limit tells the caller: the common delay, and that limit's
    /// `remaining`, `reset_after` and refund token.
    #[must_use]
    pub fn admissions(&self) -> &[Admission] {
        &self.admissions[..self.len]
    }
}

/// An admission standing for "no limit here", to fill the unused places.
const NONE: Admission = Admission::from_parts(
    0,
    0,
    1,
    1,
    RefundToken {
        start: 0,
        end: None,
    },
);

/// Decides one call over every limit in `limits` at once (see the module
/// docs). On success each limit stores its [`new_tats`](CompoundReserved::new_tats)
/// entry, all of them atomically; on any error nothing is stored.
///
/// # Errors
///
/// [`CompoundRefusal`]: [`Refusal::CostExceedsCapacity`] from the first limit
/// that can never admit the cost within `max_wait`, else
/// [`Refusal::Rejected`] when the common wait exceeds `max_wait`, from the
/// limit with the longest wait.
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
    // Cost 0 is decided as a unit call and consumes nothing, as for one limit.
    let decided = Reserve {
        cost: request.cost.max(1),
        max_wait: None,
    };
    let mut bases = [0_u64; MAX_LIMITS];
    let mut delay = 0;
    let mut decided_by = 0;
    for (i, part) in limits.iter().enumerate() {
        let base = part.tat.map_or(now, |tat| tat.max(now));
        bases[i] = base;
        // Unbounded: only the common wait is compared with `max_wait`.
        let wait = unbounded_delay(base, now, part.params, u64::from(decided.cost));
        if wait > delay {
            delay = wait;
            decided_by = i;
        }
    }
    if let Some(max_wait) = request.max_wait {
        let max_wait = nanos::from_duration(max_wait);
        if delay > max_wait {
            let part = limits[decided_by].params;
            let owed = bases[decided_by] - now;
            return Err(CompoundRefusal {
                limit: decided_by,
                refusal: Refusal::Rejected(Rejection {
                    retry_after: Duration::from_nanos(delay - max_wait),
                    remaining: remaining_after(owed, part.tau_nanos(), part.interval_nanos()),
                    reset_after: Duration::from_nanos(owed),
                    // `MAX_LIMITS` fits in a byte.
                    limit: decided_by as u8,
                }),
            });
        }
    }
    let t = now.saturating_add(delay);
    let cost = u64::from(decided.cost);
    let mut reserved = CompoundReserved {
        delay,
        decided_by,
        len: limits.len(),
        new_tats: [None; MAX_LIMITS],
        admissions: [NONE; MAX_LIMITS],
    };
    for (i, part) in limits.iter().enumerate() {
        let (interval, burst) = (part.params.interval_nanos(), part.params.burst());
        let start = part.tat.unwrap_or(0);
        if request.cost == 0 {
            let owed = bases[i] - now;
            reserved.admissions[i] = Admission::from_parts(
                delay,
                owed,
                burst,
                interval,
                RefundToken { start, end: None },
            );
            continue;
        }
        // How far before `t` this limit's cells may start: a cost above the
        // burst waits for its last cell, as it would alone.
        let lead = (cost - 1)
            .saturating_mul(interval)
            .saturating_sub(part.params.tau_nanos());
        let first_cell = bases[i].max(t.saturating_sub(lead));
        let new_tat = first_cell
            .saturating_add(u64::from(request.cost).saturating_mul(interval))
            .min(MAX_TAT);
        reserved.new_tats[i] = Some(new_tat);
        reserved.admissions[i] = Admission::from_parts(
            delay,
            new_tat - now,
            burst,
            interval,
            // From the stored TAT, as for one limit: what lies between it and
            // the first cell was free before this call.
            RefundToken {
                start,
                end: Some(new_tat),
            },
        );
    }
    Ok(reserved)
}
