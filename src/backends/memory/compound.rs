//! Compound reservations in memory: every part's TAT locked, one decision
//! ([`gcra::compound::reserve_all`]), every TAT stored back.
//!
//! * **The lock is the TAT itself.** A compound swaps each part's TAT for
//!   [`LOCKED`] (`u64::MAX`, a value no TAT takes: they stop at
//!   [`MAX_TAT`]) by a compare-and-swap, decides, and stores the new TATs
//!   (or the old ones, on a refusal). Single calls on a locked key see
//!   `LOCKED` and wait the few nanoseconds the compound takes; everything
//!   that writes a TAT (`update`, the hole paths, holds, refunds) does.
//! * **No deadlock.** A compound only *tries*: a part already locked (by
//!   another compound) or a map shard being written makes it put back what
//!   it locked and start again, so a compound never waits while holding a
//!   lock. It holds each part's map entry (a shard read lock) until it has
//!   stored, so an entry cannot be swept or cleared under it.
//! * **New keys** are inserted as drained entries (TAT 0, the same state as
//!   no entry) before the attempt, through the bound if there is one.
//! * **Holes** count: a limit's earliest instant may be in a hole (a refund's,
//!   or a gap another compound left), and a limit charged later than its TAT
//!   leaves the gap as a hole, so one call waiting for its chat does not hold
//!   the global bucket up for everyone else. A compound copies each key's
//!   holes under that key's hole lock, one lock at a time, and applies its
//!   changes the same way; whoever holds a hole lock never waits for a
//!   locked TAT (`holes.rs`), so this cannot deadlock.

use std::future::{Ready, ready};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::mapref::one::Ref;
use dashmap::try_result::TryResult;

use super::InMemoryBackend;
use crate::backends::compound::{CompoundAdmission, CompoundBackend, Part, check_parts};
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::Refusal;
#[cfg(doc)]
use crate::gcra::compound::MAX_TAT;
use crate::gcra::compound::{
    Charge, CompoundRefusal, Decided, Limit, MAX_LIMITS, NONE, Tails, decide, decide_at_tails,
};
use crate::gcra::holes::{Hole, MAX_HOLES};

/// The TAT of a key a compound is deciding on.
pub(super) const LOCKED: u64 = u64::MAX;

/// Waits until the compound holding `tat` stores it back; its value then.
#[cold]
#[inline(never)]
pub(super) fn wait_unlocked(tat: &AtomicU64) -> u64 {
    let mut spins = 0_u32;
    loop {
        let current = tat.load(Ordering::Relaxed);
        if current != LOCKED {
            return current;
        }
        back_off(&mut spins);
    }
}

/// Spins a little, then yields: a compound holds its locks for tens of
/// nanoseconds, unless its thread is preempted.
fn back_off(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    *spins = spins.saturating_add(1);
}

/// Raises `tat` to at least `target` (what `fetch_max` does, waiting for a
/// compound instead of raising its lock); whether it moved.
pub(super) fn raise(tat: &AtomicU64, target: u64) -> bool {
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        if current == LOCKED {
            current = wait_unlocked(tat);
        }
        if current >= target {
            return false;
        }
        match tat.compare_exchange_weak(current, target, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Locks `tat`: its value, or `None` if a compound holds it.
#[inline]
fn try_lock(tat: &AtomicU64) -> Option<u64> {
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        if current == LOCKED {
            return None;
        }
        match tat.compare_exchange_weak(current, LOCKED, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(current),
            Err(actual) => current = actual,
        }
    }
}

/// How one attempt ended.
enum Attempt {
    /// The deciding limit's index (the admissions are in the caller's
    /// array), or the refusal.
    Decided(Result<usize, FreqLimitError>),
    /// The part of this index has no entry: insert one, try again.
    Missing(usize),
    /// Another compound, or a writer of a map shard, was in the way.
    Busy,
}

impl<K> InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// [`CompoundBackend::reserve_compound`]
    /// without the future: decided at once.
    ///
    /// # Errors
    ///
    /// As [`reserve_now`](Self::reserve_now), for the whole compound; a
    /// [`BackendError`] of kind [`Other`](BackendErrorKind::Other) for parts
    /// that are not a compound
    /// ([`check_parts`]), and of kind
    /// [`Full`](BackendErrorKind::Full) when a bounded table has no room for
    /// a new key (or the key's group is past its share: a compound does not
    /// decide on a group's overflow bucket).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::compound::Part;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// let backend = InMemoryBackend::<u32>::new();
    /// let (per_chat, global) = (FreqLimitParams::per_second(1), FreqLimitParams::per_second(2));
    /// let now = Timestamp::now();
    /// let first = [Part::new(Some(&1), &per_chat), Part::new(None, &global)];
    /// let second = [Part::new(Some(&2), &per_chat), Part::new(None, &global)];
    /// assert!(backend.reserve_compound_now(&first, now, Reserve::new()).unwrap().delay().is_zero());
    /// // Chat 2 is free, the global bucket makes it wait half a second.
    /// let admitted = backend.reserve_compound_now(&second, now, Reserve::new()).unwrap();
    /// assert_eq!(admitted.delay(), Duration::from_millis(500));
    /// assert_eq!(admitted.decided_by(), 1);
    /// ```
    pub fn reserve_compound_now(
        &self,
        parts: &[Part<'_, K>],
        now: Timestamp,
        request: Reserve,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        check_parts(parts)?;
        // Impossible costs are refused before anything is locked or read
        // (holes that ended are forgotten only by calls that go on).
        for (limit, part) in parts.iter().enumerate() {
            if let Some(refusal) = request.impossible_under(part.params) {
                return Err(compound_refusal(limit, refusal));
            }
        }
        if !self.inner.sweeper_started.load(Ordering::Relaxed)
            && parts.iter().any(|part| part.key.is_some())
        {
            self.start_sweeper();
        }
        let now = now.as_nanos();
        let mut admissions = [NONE; MAX_LIMITS];
        let first = self.attempt(parts, now, &request, &mut admissions);
        let decided = match first {
            Attempt::Decided(decided) => decided,
            other => self.try_again(other, parts, now, &request, &mut admissions),
        };
        decided.map(|decided_by| CompoundAdmission::from_array(decided_by, parts.len(), admissions))
    }

    /// After a first attempt that could not decide (`first`): inserts the
    /// missing keys, backs off while others hold the parts, and tries until
    /// a decision. Out of line, so that the first attempt's path stays short.
    #[cold]
    #[inline(never)]
    fn try_again(
        &self,
        first: Attempt,
        parts: &[Part<'_, K>],
        now: u64,
        request: &Reserve,
        admissions: &mut [Admission; MAX_LIMITS],
    ) -> Result<usize, FreqLimitError> {
        let mut spins = 0;
        let mut inserted = [false; MAX_LIMITS];
        let mut attempt = first;
        loop {
            match attempt {
                Attempt::Decided(decided) => return decided,
                Attempt::Missing(i) => {
                    // Inserted once already and gone again: swept meanwhile
                    // (try again), or sent to its group's overflow bucket.
                    if inserted[i]
                        && self
                            .inner
                            .bound
                            .as_ref()
                            .is_some_and(|b| b.groups().is_some())
                    {
                        return Err(FreqLimitError::Backend(BackendError::new(
                            BackendErrorKind::Full,
                            "a compound's key is past its group's share of the table (max_keys)",
                        )));
                    }
                    inserted[i] = true;
                    if let Some(key) = parts[i].key {
                        self.insert_drained(key, now)?;
                    }
                }
                Attempt::Busy => back_off(&mut spins),
            }
            attempt = self.attempt(parts, now, request, admissions);
        }
    }

    /// Inserts `key` with TAT 0 (a full bucket, the state of no entry).
    fn insert_drained(&self, key: &K, now: u64) -> Result<(), FreqLimitError> {
        let inner = &*self.inner;
        inner.holes.forget_for_new_key(key);
        match &inner.bound {
            Some(bound) => bound.insert_held(&inner.tats, key, now, 0).map(|_| ()),
            None => {
                inner
                    .tats
                    .entry(key.clone())
                    .or_insert_with(|| AtomicU64::new(0));
                Ok(())
            }
        }
    }

    /// One try: lock every part's TAT, decide (with the keys' holes),
    /// apply the holes' changes, store the TATs (which unlocks them).
    ///
    /// Compiled once per number of parts, so that its loops unroll and its
    /// arrays hold only what is used (a compound of 3: 860 instructions a
    /// decision before, 757 after; `tools/compound_instructions.sh`).
    #[inline]
    fn attempt(
        &self,
        parts: &[Part<'_, K>],
        now: u64,
        request: &Reserve,
        admissions: &mut [Admission; MAX_LIMITS],
    ) -> Attempt {
        if let Ok(parts) = <&[_; 3]>::try_from(parts) {
            self.attempt_n(parts, now, request, admissions)
        } else if let Ok(parts) = <&[_; 2]>::try_from(parts) {
            self.attempt_n(parts, now, request, admissions)
        } else if let Ok(parts) = <&[_; 4]>::try_from(parts) {
            self.attempt_n(parts, now, request, admissions)
        } else if let Ok(parts) = <&[_; 1]>::try_from(parts) {
            self.attempt_n(parts, now, request, admissions)
        } else {
            // Unreachable: `check_parts` let through 1 to `MAX_LIMITS`
            // parts. Were it reached, an error, never a made-up admission.
            Attempt::Decided(Err(FreqLimitError::Backend(BackendError::new(
                BackendErrorKind::Other,
                "a compound has 1 to 4 parts",
            ))))
        }
    }

    /// [`attempt`](Self::attempt) for `N` parts.
    #[inline(always)]
    fn attempt_n<const N: usize>(
        &self,
        parts: &[Part<'_, K>; N],
        now: u64,
        request: &Reserve,
        admissions: &mut [Admission; MAX_LIMITS],
    ) -> Attempt {
        let inner = &*self.inner;
        // The entries, held (each a shard read lock) until the TATs are stored.
        let mut entries: [Option<Ref<'_, K, AtomicU64>>; N] = std::array::from_fn(|_| None);
        for (i, part) in parts.iter().enumerate() {
            if let Some(key) = part.key {
                match inner.tats.try_get(key) {
                    TryResult::Present(entry) => entries[i] = Some(entry),
                    TryResult::Absent => return Attempt::Missing(i),
                    TryResult::Locked => return Attempt::Busy,
                }
            }
        }
        let mut tats = [&inner.global; N];
        for (tat, entry) in tats.iter_mut().zip(&entries) {
            if let Some(entry) = entry {
                *tat = entry;
            }
        }
        let tat = |i: usize| tats[i];
        let mut found = [0_u64; N];
        for i in 0..N {
            let Some(value) = try_lock(tat(i)) else {
                for (j, value) in found.iter().enumerate().take(i) {
                    tat(j).store(*value, Ordering::Relaxed);
                }
                return Attempt::Busy;
            };
            found[i] = value;
        }
        let any_holes = parts.iter().any(|part| match part.key {
            Some(_) => inner.holes.any_keyed(),
            None => inner.holes.any_global(),
        });
        // What to store in each TAT (which unlocks it), once decided.
        let mut stores = Tails::default();
        let decided = if any_holes {
            self.decide_with_holes(
                parts,
                &found,
                now,
                request,
                admissions,
                &mut stores.new_tats,
            )
        } else {
            // A stored 0 (a drained entry, the global bucket's start) is in
            // the past: the same as no TAT, refund token included.
            decide_at_tails(
                N,
                |i| (Some(found[i]), parts[i].params),
                now,
                request,
                admissions,
                &mut stores,
            )
            .inspect(|decided| {
                if decided.holes_change {
                    for (i, part) in parts.iter().enumerate() {
                        self.apply_holes(part.key, &stores.charge(i, request.cost), now);
                    }
                }
            })
        };
        let result = match decided {
            Ok(decided) => {
                for (i, new_tat) in stores.new_tats.iter().enumerate().take(N) {
                    tat(i).store(*new_tat, Ordering::Relaxed);
                }
                Ok(decided.decided_by)
            }
            Err(refused) => {
                for (i, value) in found.iter().enumerate() {
                    tat(i).store(*value, Ordering::Relaxed);
                }
                Err(compound_refusal(refused.limit, refused.refusal))
            }
        };
        Attempt::Decided(result)
    }

    /// Records `charge`'s changes to the holes of `key` (`None`: the global
    /// bucket's).
    fn apply_holes(&self, key: Option<&K>, charge: &Charge, now: u64) {
        if charge.changes_holes() {
            match key {
                Some(key) => self.inner.holes.apply_keyed(key, charge, now),
                None => self.inner.holes.apply_global(charge, now),
            }
        }
    }

    /// The decision when some part may have holes: each key's holes are
    /// copied (one hole lock at a time), then decided on.
    #[inline(never)]
    fn decide_with_holes(
        &self,
        parts: &[Part<'_, K>],
        found: &[u64],
        now: u64,
        request: &Reserve,
        admissions: &mut [Admission; MAX_LIMITS],
        stores: &mut [u64; MAX_LIMITS],
    ) -> Result<Decided, CompoundRefusal> {
        let holes = &self.inner.holes;
        let mut copies = [[Hole { start: 0, end: 0 }; MAX_HOLES]; MAX_LIMITS];
        let mut counts = [0; MAX_LIMITS];
        for (i, part) in parts.iter().enumerate() {
            counts[i] = match part.key {
                Some(key) => holes.copy_keyed(key, now, &mut copies[i]),
                None => holes.copy_global(now, &mut copies[i]),
            };
        }
        let mut limits = [Limit::new(None, parts[0].params); MAX_LIMITS];
        for (i, part) in parts.iter().enumerate() {
            limits[i] = Limit::new(Some(found[i]), part.params).with_holes(&copies[i][..counts[i]]);
        }
        let mut charges = [Charge::Nothing; MAX_LIMITS];
        let decided = decide(
            &limits[..parts.len()],
            now,
            request,
            admissions,
            &mut charges,
        )?;
        for (i, (charge, part)) in charges.iter().zip(parts).enumerate() {
            self.apply_holes(part.key, charge, now);
            stores[i] = charge.new_tat().unwrap_or(found[i]);
        }
        Ok(decided)
    }
}

/// A compound's refusal as the error a caller gets: the refusal of limit
/// `limit`, which a rejection names.
fn compound_refusal(limit: usize, refusal: Refusal) -> FreqLimitError {
    match refusal {
        Refusal::Rejected(mut rejection) => {
            // At most `MAX_LIMITS`, which fits in a byte.
            rejection.limit = limit as u8;
            FreqLimitError::Rejected(rejection)
        }
        other => FreqLimitError::from(other),
    }
}

impl<K> CompoundBackend for InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type CompoundFuture = Ready<Result<CompoundAdmission, FreqLimitError>>;

    #[inline]
    fn reserve_compound(
        &self,
        parts: &[Part<'_, K>],
        now: Timestamp,
        request: Reserve,
    ) -> Self::CompoundFuture {
        ready(self.reserve_compound_now(parts, now, request))
    }

    #[inline]
    fn reserve_compound_sync(
        &self,
        parts: &[Part<'_, K>],
        now: Timestamp,
        request: Reserve,
    ) -> Option<Result<CompoundAdmission, FreqLimitError>> {
        Some(self.reserve_compound_now(parts, now, request))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{LOCKED, raise, try_lock, wait_unlocked};

    /// A TAT a compound holds: the waiters get the value it stores, never
    /// the lock's mark (another thread plays the compound).
    #[test]
    fn waiters_get_the_value_the_compound_stores() {
        let tat = AtomicU64::new(7);
        assert_eq!(try_lock(&tat), Some(7));
        assert_eq!(try_lock(&tat), None, "held once");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| wait_unlocked(&tat));
            let raiser = s.spawn(|| raise(&tat, 50));
            tat.store(40, Ordering::Relaxed);
            // 40, or 50 if the raiser got there first; never the mark.
            let seen = waiter.join().unwrap();
            assert!(seen == 40 || seen == 50, "{seen}");
            assert!(
                raiser.join().unwrap(),
                "40 raised to 50, after the compound"
            );
        });
        assert_eq!(tat.load(Ordering::Relaxed), 50);
    }

    /// `raise` is `fetch_max` that says whether it moved.
    #[test]
    fn raise_moves_only_up() {
        let tat = AtomicU64::new(10);
        assert!(raise(&tat, 20));
        assert!(!raise(&tat, 20));
        assert!(!raise(&tat, 5));
        assert_eq!(tat.load(Ordering::Relaxed), 20);
        assert_ne!(tat.load(Ordering::Relaxed), LOCKED);
    }
}
