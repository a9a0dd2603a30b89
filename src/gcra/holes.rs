//! Holes: the spans of a key's TAT axis given back by cancelled reservations
//! that were not the last on their key, so that every abandoned slot comes
//! back, not only the last one.
//!
//! A reservation of cost `c` takes the span `[x, x + cT)` of its key's TAT
//! axis; its units conform from `x + (c-1)T - tau` on. Plain GCRA only appends
//! at the TAT, so a refund could only lower the TAT, and only while nothing was
//! reserved after it: ten waiters on a shared bucket that hang up first to
//! last gave back one slot. Here:
//!
//! * a refund of the key's **last** span lowers the TAT to the span's start,
//!   then absorbs the holes that end there (so refunds in any order restore
//!   the TAT exactly);
//! * a refund of an **earlier** span records it as a hole (merged with
//!   adjacent holes); at most [`MAX_HOLES`] per key, beyond which the shortest
//!   is forgotten (its slots stay used, as they did before holes existed);
//! * a reservation takes the **earliest hole its cost fits in** (from
//!   `x = max(hole start, now)`, to `x + cT <= hole end`) before the TAT, and
//!   is decided exactly as [`reserve`](super::reserve) decides one appended at
//!   a TAT of `x`. The part of the hole before `x` has passed and is dropped.
//!
//! # Why the limit still holds
//!
//! Every admitted unit owns a slot `[x, x + T)` that no other live unit owns
//! (a hole is a span no live reservation holds), and is admitted at a time `a`
//! with `x - tau <= a <= x` (for costs up to `burst`: `a` is `now` or
//! `x_last - tau`, and `x >= now`). So the units admitted within any window
//! `[t1, t2]` own disjoint slots starting in `[t1, t2 + tau]`: at most
//! `(t2 - t1 + tau) / T + 1 = burst + w / T` of them, the bound of plain GCRA.
//! `tests/backends/refund.rs` checks it on random histories.
//!
//! Everything here is pure (time is passed in, nothing is stored): the
//! in-memory backend keeps a [`Holes`] beside a key's TAT only once it has
//! one, and the Redis backend's scripts carry the same rules in Lua.
//!
//! # Example
//!
//! ```
//! use tower_freqlimit::gcra::holes::{GiveBack, Holes};
//! use tower_freqlimit::{FreqLimitParams, Reserve};
//!
//! let params = FreqLimitParams::per_second(1); // T = 1 s
//! let s = 1_000_000_000;
//! let mut holes = Holes::new();
//! let mut tat = None;
//! // Three waiters at t = 0: slots at 0 s, 1 s, 2 s.
//! let mut made = Vec::new();
//! for _ in 0..3 {
//!     let reserved = holes.reserve(tat, 0, &params, &Reserve::new()).unwrap();
//!     tat = reserved.new_tat.or(tat);
//!     made.push(reserved.admission.refund_token());
//! }
//! // The second gives up: its slot is a hole, the TAT stays at 3 s.
//! assert_eq!(holes.give_back(tat.unwrap(), made[1]), GiveBack::Hole);
//! // The next caller takes that slot (1 s) instead of waiting for 3 s.
//! let next = holes.reserve(tat, 0, &params, &Reserve::new()).unwrap();
//! assert_eq!(next.admission.delay().as_secs(), 1);
//! assert_eq!(next.new_tat, None);
//! // The last one gives up: the TAT goes back to 2 s.
//! assert_eq!(holes.give_back(tat.unwrap(), made[2]), GiveBack::Lowered(2 * s));
//! ```

use super::compound::Charge;
use super::{Refusal, Reserved, delay_from};
use crate::decision::{Admission, RefundToken, Reserve};
use crate::params::FreqLimitParams;

/// The most holes a key keeps. Beyond it the shortest hole is forgotten: its
/// slots stay used, as every abandoned slot but the last did before holes.
/// The Redis scripts use the same number. 64, not fewer: besides refunds,
/// every compound call charged on a shared key later than its TAT leaves a
/// gap ([`compound`](super::compound)), and the chat bot's 60 waiting
/// messages lost capacity on the global bucket with 16.
pub const MAX_HOLES: usize = 64;

/// A span `[start, end)` of a key's TAT axis that no live reservation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hole {
    /// The first instant of the span.
    pub start: u64,
    /// The instant after its last.
    pub end: u64,
}

/// The holes of one key: sorted, disjoint, never adjacent, all below the
/// key's TAT, at most [`MAX_HOLES`]. See the [module docs](self).
///
/// ```
/// use tower_freqlimit::gcra::holes::Holes;
///
/// let holes = Holes::new();
/// assert!(holes.is_empty());
/// assert_eq!(holes.as_slice(), &[]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holes {
    spans: Vec<Hole>,
}

/// Where [`Holes::place`] put a reservation: what to tell the caller and
/// store, and which hole (if any) [`Holes::take`] must cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Placement {
    /// The decision: `new_tat` is `Some` when the reservation is appended at
    /// the TAT (store it), `None` when it took a hole or nothing (cost 0).
    pub reserved: Reserved,
    hole: Option<usize>,
}

impl Placement {
    /// Whether the reservation took (part of) a hole.
    #[must_use]
    pub const fn in_hole(&self) -> bool {
        self.hole.is_some()
    }
}

/// What [`Holes::give_back`] did with a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveBack {
    /// The span was the key's last: store this TAT instead (the span's start,
    /// or lower when holes ended there and were absorbed).
    Lowered(u64),
    /// The span is a hole now; the TAT is unchanged.
    Hole,
    /// Nothing to give back: the span is empty, or it is not held any more
    /// (given back already, or the key's state was reset since).
    Nothing,
}

/// Where a reservation goes, before it is decided: at the TAT, or at a slot
/// in a hole. Small and `Copy`, and [`decide`](Spot::decide) is pure, so a
/// backend can pick the spot under its hole lock and rebuild the decision
/// outside the call that held it: a 48-byte decision returned by an
/// out-of-line call was copied through memory on every call of the inlined
/// fast path that shares its result (4 ns of a 20 ns global bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spot {
    /// Appended at this TAT (`None` for a new key).
    Tat(Option<u64>),
    /// In the hole at `index`, from `slot`, on a key that owed `owed`
    /// nanoseconds (its TAT minus now).
    Hole { index: usize, slot: u64, owed: u64 },
}

impl Spot {
    /// The decision at this spot, as [`reserve`](super::reserve) makes one
    /// appended at a TAT of `slot` (in a hole, `remaining` and `reset_after`
    /// are the TAT's: holes are not counted in them, the safe side).
    #[inline(always)]
    pub(crate) fn decide(
        self,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Reserved, Refusal> {
        let (slot, owed) = match self {
            Self::Tat(tat) => return super::reserve(tat, now, params, request),
            Self::Hole { slot, owed, .. } => (slot, owed),
        };
        let interval = params.interval_nanos();
        let need = u64::from(request.cost).saturating_mul(interval);
        let delay = delay_from(slot, owed, now, params, request)?;
        Ok(Reserved {
            new_tat: None,
            admission: Admission::from_parts(
                delay,
                owed,
                params.burst(),
                interval,
                RefundToken {
                    start: slot,
                    end: Some(slot.saturating_add(need)),
                },
            ),
        })
    }
}

impl Holes {
    /// No hole.
    #[must_use]
    pub const fn new() -> Self {
        Self { spans: Vec::new() }
    }

    /// Whether there is no hole.
    #[must_use]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The number of holes.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The holes, earliest first.
    #[must_use]
    pub fn as_slice(&self) -> &[Hole] {
        &self.spans
    }

    /// Forgets the holes that have ended by `now`: no reservation at or after
    /// `now` can use them, so forgetting them changes no decision.
    ///
    /// ```
    /// use tower_freqlimit::gcra::holes::{Hole, Holes};
    /// use tower_freqlimit::RefundToken;
    ///
    /// let mut holes = Holes::new();
    /// holes.give_back(100, RefundToken { start: 10, end: Some(20) });
    /// holes.forget_past(19);
    /// assert_eq!(holes.as_slice(), &[Hole { start: 10, end: 20 }]);
    /// holes.forget_past(20);
    /// assert!(holes.is_empty());
    /// ```
    pub fn forget_past(&mut self, now: u64) {
        // Sorted and disjoint: the ended ones are a prefix.
        let ended = self.spans.partition_point(|hole| hole.end <= now);
        if ended > 0 {
            self.spans.drain(..ended);
        }
    }

    /// Forgets every part of a hole below `floor`: a slot there would admit a
    /// call before `floor - tau`, which a hold
    /// ([`FreqLimitBackend::hold`](crate::FreqLimitBackend::hold)) forbids.
    ///
    /// ```
    /// use tower_freqlimit::gcra::holes::{Hole, Holes};
    /// use tower_freqlimit::RefundToken;
    ///
    /// let mut holes = Holes::new();
    /// holes.give_back(100, RefundToken { start: 10, end: Some(20) });
    /// holes.give_back(100, RefundToken { start: 30, end: Some(40) });
    /// holes.forget_below(35);
    /// assert_eq!(holes.as_slice(), &[Hole { start: 35, end: 40 }]);
    /// ```
    pub fn forget_below(&mut self, floor: u64) {
        self.forget_past(floor);
        if let Some(first) = self.spans.first_mut() {
            first.start = first.start.max(floor);
        }
    }

    /// Decides a reservation on a key whose TAT is `tat` and whose holes these
    /// are, without changing anything: the earliest hole the cost fits in,
    /// else the TAT ([`reserve`](super::reserve)). Apply it with
    /// [`take`](Self::take) (and store `new_tat` if `Some`).
    ///
    /// `remaining` and `reset_after` are the TAT's (holes are not counted in
    /// them: the figures stay on the safe side).
    ///
    /// # Errors
    ///
    /// As [`reserve`](super::reserve): [`Refusal::Rejected`] when even the
    /// earliest slot is further than `max_wait` away (its `retry_after` from
    /// that slot), [`Refusal::CostExceedsCapacity`] when the cost never fits.
    pub fn place(
        &self,
        tat: Option<u64>,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Placement, Refusal> {
        self.place_at(self.spot(tat, now, params, request), now, params, request)
    }

    /// Where [`place`](Self::place) puts a reservation, before deciding it.
    pub(crate) fn spot(
        &self,
        tat: Option<u64>,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Spot {
        if request.cost > 0 {
            let need = u64::from(request.cost).saturating_mul(params.interval_nanos());
            for (index, hole) in self.spans.iter().enumerate() {
                let slot = hole.start.max(now);
                if hole.end <= now || slot.saturating_add(need) > hole.end {
                    continue;
                }
                // Holes lie below the TAT, so the TAT is ahead of `now` here.
                let owed = tat.map_or(0, |tat| tat.saturating_sub(now));
                return Spot::Hole { index, slot, owed };
            }
        }
        Spot::Tat(tat)
    }

    /// [`place`](Self::place) at a [`spot`](Self::spot) of these holes.
    pub(crate) fn place_at(
        &self,
        spot: Spot,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Placement, Refusal> {
        Ok(Placement {
            reserved: spot.decide(now, params, request)?,
            hole: match spot {
                Spot::Hole { index, .. } => Some(index),
                Spot::Tat(_) => None,
            },
        })
    }

    /// Cuts the span a [`place`](Self::place)d reservation took out of its
    /// hole (nothing for one appended at the TAT). The placement must come
    /// from these holes, unchanged since.
    pub fn take(&mut self, placement: &Placement) {
        let (Some(index), Some(end)) = (
            placement.hole,
            placement.reserved.admission.refund_token().end,
        ) else {
            return;
        };
        let Some(hole) = self.spans.get_mut(index) else {
            return;
        };
        // The span starts at the hole's start, or at `now` inside it: what lay
        // before has passed, so the hole keeps only what follows the span.
        if end < hole.end {
            hole.start = end;
        } else {
            self.spans.remove(index);
        }
    }

    /// [`place`](Self::place) and [`take`](Self::take) in one step.
    ///
    /// # Errors
    ///
    /// As [`place`](Self::place).
    pub fn reserve(
        &mut self,
        tat: Option<u64>,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Reserved, Refusal> {
        let placement = self.place(tat, now, params, request)?;
        self.take(&placement);
        Ok(placement.reserved)
    }

    /// Gives back the span `token` names on a key whose TAT is `tat`: the
    /// last span lowers the TAT (absorbing the holes that end where it
    /// lands), an earlier one becomes a hole. See [`GiveBack`].
    ///
    /// ```
    /// use tower_freqlimit::gcra::holes::{GiveBack, Hole, Holes};
    /// use tower_freqlimit::RefundToken;
    ///
    /// let span = |start, end| RefundToken { start, end: Some(end) };
    /// let mut holes = Holes::new();
    /// // Three spans 0..10, 10..20, 20..30 (TAT 30), given back first to last.
    /// assert_eq!(holes.give_back(30, span(0, 10)), GiveBack::Hole);
    /// assert_eq!(holes.give_back(30, span(10, 20)), GiveBack::Hole);
    /// assert_eq!(holes.as_slice(), &[Hole { start: 0, end: 20 }]);
    /// assert_eq!(holes.give_back(30, span(20, 30)), GiveBack::Lowered(0));
    /// assert!(holes.is_empty());
    /// // A span given back twice is given back once.
    /// assert_eq!(holes.give_back(0, span(20, 30)), GiveBack::Nothing);
    /// ```
    pub fn give_back(&mut self, tat: u64, token: RefundToken) -> GiveBack {
        let (start, Some(end)) = (token.start, token.end) else {
            return GiveBack::Nothing;
        };
        // Past the TAT: the TAT went below the span's end since, which only a
        // refund of this span (or a reset of the key) does.
        if start >= end || end > tat {
            return GiveBack::Nothing;
        }
        if end == tat {
            let mut tat = start;
            while let Some(last) = self.spans.last() {
                if last.end < tat {
                    break;
                }
                tat = tat.min(last.start);
                self.spans.pop();
            }
            return GiveBack::Lowered(tat);
        }
        // The first hole that ends after the span starts.
        let at = self.spans.partition_point(|hole| hole.end <= start);
        if self.spans.get(at).is_some_and(|hole| hole.start < end) {
            // It overlaps a hole: it was given back already.
            return GiveBack::Nothing;
        }
        let joins_before = at > 0 && self.spans[at - 1].end == start;
        let joins_after = self.spans.get(at).is_some_and(|hole| hole.start == end);
        match (joins_before, joins_after) {
            (true, true) => {
                self.spans[at - 1].end = self.spans[at].end;
                self.spans.remove(at);
            }
            (true, false) => self.spans[at - 1].end = end,
            (false, true) => self.spans[at].start = start,
            (false, false) => {
                self.spans.insert(at, Hole { start, end });
                if self.spans.len() > MAX_HOLES {
                    self.forget_shortest();
                }
            }
        }
        GiveBack::Hole
    }

    /// Applies a compound's [`Charge`] to these holes (the key's other
    /// state, its TAT, is the caller's): a span taken out of a hole (what
    /// remains on either side of it stays a hole, unless it has passed at
    /// `now`), or the gap a reservation appended after the TAT leaves, made
    /// a hole.
    ///
    /// ```
    /// use tower_freqlimit::gcra::compound::Charge;
    /// use tower_freqlimit::gcra::holes::{Hole, Holes};
    ///
    /// let mut holes = Holes::new();
    /// holes.apply(&Charge::Tail { gap: Some(Hole { start: 10, end: 40 }), new_tat: 50 }, 0);
    /// holes.apply(&Charge::Hole { index: 0, start: 20, end: 30 }, 0);
    /// assert_eq!(holes.as_slice(), &[Hole { start: 10, end: 20 }, Hole { start: 30, end: 40 }]);
    /// ```
    pub fn apply(&mut self, charge: &Charge, now: u64) {
        match *charge {
            Charge::Nothing | Charge::Tail { gap: None, .. } => {}
            Charge::Tail { gap: Some(gap), .. } => {
                // The gap lies after every hole (they are below the old TAT).
                match self.spans.last_mut() {
                    Some(last) if last.end >= gap.start => last.end = last.end.max(gap.end),
                    _ => self.spans.push(gap),
                }
                if self.spans.len() > MAX_HOLES {
                    self.forget_shortest();
                }
            }
            Charge::Hole { index, start, end } => {
                // Found by its span: holes that ended may have gone since the
                // index was read.
                let found = match self.spans.get(index) {
                    Some(hole) if hole.start <= start && end <= hole.end => Some(index),
                    _ => self
                        .spans
                        .iter()
                        .position(|hole| hole.start <= start && end <= hole.end),
                };
                let Some(index) = found else {
                    return;
                };
                let hole = self.spans[index];
                let before = Hole {
                    start: hole.start,
                    end: start,
                };
                let after = Hole {
                    start: end,
                    end: hole.end,
                };
                self.spans.remove(index);
                let mut at = index;
                if before.end > before.start.max(now) {
                    self.spans.insert(at, before);
                    at += 1;
                }
                if after.end > after.start {
                    self.spans.insert(at, after);
                }
                if self.spans.len() > MAX_HOLES {
                    self.forget_shortest();
                }
            }
        }
    }

    /// Forgets the shortest hole (the earliest of equals).
    fn forget_shortest(&mut self) {
        let shortest = self
            .spans
            .iter()
            .enumerate()
            .min_by_key(|(index, hole)| (hole.end - hole.start, *index))
            .map(|(index, _)| index);
        if let Some(index) = shortest {
            self.spans.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn span(start: u64, end: u64) -> RefundToken {
        RefundToken {
            start,
            end: Some(end),
        }
    }

    #[test]
    fn given_back_in_any_order_the_tat_comes_back() {
        let params = FreqLimitParams::per_second(1);
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let mut holes = Holes::new();
            let mut tat = Some(5 * S);
            let mut made = Vec::new();
            for _ in 0..4 {
                let r = holes.reserve(tat, 0, &params, &Reserve::new()).unwrap();
                tat = r.new_tat.or(tat);
                made.push(r.admission.refund_token());
            }
            assert_eq!(tat, Some(9 * S));
            for i in order {
                match holes.give_back(tat.unwrap(), made[i]) {
                    GiveBack::Lowered(t) => tat = Some(t),
                    GiveBack::Hole => {}
                    GiveBack::Nothing => panic!("{order:?}: {i} not given back"),
                }
            }
            assert_eq!(tat, Some(5 * S), "{order:?}");
            assert!(holes.is_empty(), "{order:?}");
        }
    }

    #[test]
    fn a_cost_takes_the_earliest_hole_it_fits_in() {
        let params = FreqLimitParams::per_second(1);
        let mut holes = Holes::new();
        let tat = 20 * S;
        holes.give_back(tat, span(2 * S, 3 * S));
        holes.give_back(tat, span(5 * S, 8 * S));
        let two = holes
            .reserve(Some(tat), 0, &params, &Reserve::new().cost(2))
            .unwrap();
        // The first hole is too short; the second fits, from its start.
        assert_eq!(two.admission.delay(), std::time::Duration::from_secs(6));
        assert_eq!(two.admission.refund_token(), span(5 * S, 7 * S));
        assert_eq!(
            holes.as_slice(),
            &[
                Hole {
                    start: 2 * S,
                    end: 3 * S
                },
                Hole {
                    start: 7 * S,
                    end: 8 * S
                }
            ]
        );
        // 1 ns into the last hole, a unit no longer fits there: the TAT is next.
        let late = holes
            .reserve(Some(tat), 7 * S + 1, &params, &Reserve::new())
            .unwrap();
        assert_eq!(late.new_tat, Some(tat + S));
        // At its start, it fits, and the hole is used up.
        let on_time = holes
            .reserve(Some(tat + S), 7 * S, &params, &Reserve::new())
            .unwrap();
        assert_eq!(on_time.admission.delay(), std::time::Duration::ZERO);
        assert_eq!(on_time.new_tat, None);
        assert_eq!(
            holes.as_slice(),
            &[Hole {
                start: 2 * S,
                end: 3 * S
            }]
        );
        // Inside a hole, the span starts at `now` and the hole keeps what follows.
        holes.give_back(tat + S, span(10 * S, 13 * S));
        let inside = holes
            .reserve(Some(tat + S), 10 * S + 5, &params, &Reserve::new())
            .unwrap();
        assert_eq!(
            inside.admission.refund_token(),
            span(10 * S + 5, 11 * S + 5)
        );
        assert_eq!(
            holes.as_slice()[1],
            Hole {
                start: 11 * S + 5,
                end: 13 * S
            }
        );
    }

    #[test]
    fn a_rejection_counts_from_the_earliest_hole() {
        let params = FreqLimitParams::per_second(1);
        let mut holes = Holes::new();
        holes.give_back(10 * S, span(3 * S, 4 * S));
        match holes.place(Some(10 * S), 0, &params, &Reserve::new().no_wait()) {
            Err(Refusal::Rejected(r)) => {
                assert_eq!(r.retry_after(), std::time::Duration::from_secs(3));
                assert_eq!(r.reset_after(), std::time::Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn at_most_max_holes_the_shortest_forgotten() {
        let mut holes = Holes::new();
        let tat = 1_000 * S;
        for i in 0..=MAX_HOLES as u64 {
            // Hole i is i + 1 ns long, apart from its neighbours.
            assert_eq!(
                holes.give_back(tat, span(10 * i * S, 10 * i * S + i + 1)),
                GiveBack::Hole
            );
        }
        assert_eq!(holes.len(), MAX_HOLES);
        assert_eq!(
            holes.as_slice()[0],
            Hole {
                start: 10 * S,
                end: 10 * S + 2
            }
        );
    }

    #[test]
    fn spans_not_held_are_not_given_back() {
        let mut holes = Holes::new();
        assert_eq!(holes.give_back(10, span(20, 30)), GiveBack::Nothing);
        assert_eq!(holes.give_back(10, span(5, 5)), GiveBack::Nothing);
        assert_eq!(
            holes.give_back(
                10,
                RefundToken {
                    start: 0,
                    end: None
                }
            ),
            GiveBack::Nothing
        );
        assert_eq!(holes.give_back(10, span(2, 6)), GiveBack::Hole);
        assert_eq!(holes.give_back(10, span(4, 5)), GiveBack::Nothing);
        assert_eq!(holes.give_back(10, span(0, 3)), GiveBack::Nothing);
        assert_eq!(holes.as_slice(), &[Hole { start: 2, end: 6 }]);
    }
}
