//! The holes of the in-memory backend's keys ([`gcra::holes`]): a side table
//! beside the TATs, so that the map of TATs keeps its `AtomicU64` values and a
//! key without holes pays nothing for them.
//!
//! * **The request path** reads one relaxed atomic (is there any keyed hole?
//!   does the global bucket have one?) and looks holes up only when it says
//!   so. A key with holes is decided under its entry's lock in the side table
//!   (a shard of a `DashMap`; the global bucket's under a mutex of its own).
//! * **Appends stay lock-free.** A TAT is *raised* by a compare-and-swap
//!   anywhere, with or without the lock; it is *lowered*, and holes change,
//!   only under the key's hole lock. So a caller that did not see a new hole
//!   appends at the TAT, which is always safe (it merely leaves the hole for
//!   the next caller), and two callers never take one hole.
//! * **Lock order**: a key's TAT shard (read) before its hole shard, never the
//!   other way round. A compound (`compound.rs`) locks TATs themselves, then
//!   takes hole locks one at a time; so whoever holds a hole lock and finds
//!   the TAT locked lets go of the hole lock before it waits ([`Locked`]).
//! * **Stale holes.** Holes lie below their key's TAT. When a key leaves the
//!   table (swept once drained, or evicted by `max_keys`) its holes may stay
//!   behind until the next sweep; a new key of that name drops them before it
//!   is inserted, so they never serve the new key.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::compound;
use crate::backends::BorrowedKey;
use crate::decision::{RefundToken, Reserve};
use crate::gcra::compound::Charge;
use crate::gcra::holes::{GiveBack, Hole, Holes, Spot};
use crate::params::FreqLimitParams;

/// The holes of every key that has some, and of the global bucket.
pub(super) struct HoleTable<K> {
    keyed: DashMap<K, Holes, foldhash::fast::RandomState>,
    /// Entries in `keyed` (an entry may be empty for a moment, until removed).
    keys_with_holes: AtomicUsize,
    global: Mutex<Holes>,
    /// Whether `global` holds a hole; written under its lock.
    global_has_holes: AtomicBool,
}

impl<K> Default for HoleTable<K>
where
    K: Hash + Eq,
{
    fn default() -> Self {
        Self {
            keyed: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            keys_with_holes: AtomicUsize::new(0),
            global: Mutex::new(Holes::new()),
            global_has_holes: AtomicBool::new(false),
        }
    }
}

impl<K> HoleTable<K> {
    /// Whether some key may have holes: the one load a known key's call pays.
    #[inline(always)]
    pub(super) fn any_keyed(&self) -> bool {
        self.keys_with_holes.load(Ordering::Relaxed) != 0
    }

    /// Whether the global bucket may have holes.
    #[inline(always)]
    pub(super) fn any_global(&self) -> bool {
        self.global_has_holes.load(Ordering::Relaxed)
    }

    fn lock_global(&self) -> MutexGuard<'_, Holes> {
        // Nothing panics under the lock; the holes are consistent at every step.
        self.global.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The global bucket's reservation, holes first.
    #[inline(never)]
    pub(super) fn reserve_global(
        &self,
        tat: &AtomicU64,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Spot {
        loop {
            let mut holes = self.lock_global();
            let result = update_with_holes(tat, &mut holes, now, params, request);
            self.global_has_holes
                .store(!holes.is_empty(), Ordering::Relaxed);
            drop(holes);
            match result {
                Ok(spot) => return spot,
                Err(Locked) => compound::wait_unlocked(tat),
            };
        }
    }

    /// Holds the global bucket (see [`hold_keyed`](HoleTable::hold_keyed)).
    pub(super) fn hold_global(&self, tat: &AtomicU64, target: u64) -> bool {
        loop {
            let mut holes = self.lock_global();
            if let Ok(moved) = try_raise(tat, target) {
                holes.forget_below(target);
                self.global_has_holes
                    .store(!holes.is_empty(), Ordering::Relaxed);
                return moved;
            }
            drop(holes);
            compound::wait_unlocked(tat);
        }
    }

    /// Gives the global bucket's span back.
    pub(super) fn refund_global(&self, tat: &AtomicU64, token: RefundToken) -> GiveBack {
        loop {
            let mut holes = self.lock_global();
            let given = give_back(tat, &mut holes, token);
            self.global_has_holes
                .store(!holes.is_empty(), Ordering::Relaxed);
            drop(holes);
            match given {
                Ok(given) => return given,
                Err(Locked) => compound::wait_unlocked(tat),
            };
        }
    }
}

impl<K> HoleTable<K>
where
    K: Hash + Eq + Clone,
{
    /// A known key's reservation when some key has holes: holes first, if
    /// this key has any.
    #[inline(never)]
    pub(super) fn reserve_keyed<Q>(
        &self,
        tat: &AtomicU64,
        key: &Q,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Spot
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        loop {
            let result = match self.keyed.get_mut(key) {
                None => update_with_holes(tat, &mut Holes::new(), now, params, request),
                Some(mut holes) => {
                    let result = update_with_holes(tat, &mut holes, now, params, request);
                    let used_up = holes.is_empty();
                    drop(holes);
                    if used_up {
                        self.forget_used_up(key);
                    }
                    result
                }
            };
            match result {
                Ok(spot) => return spot,
                Err(Locked) => compound::wait_unlocked(tat),
            };
        }
    }

    /// Raises a known key's TAT to `target` and forgets its holes below it,
    /// under its hole lock (so no reservation takes such a hole meanwhile);
    /// `tat` is the key's TAT, whose shard the caller holds (read). Whether
    /// the TAT moved.
    pub(super) fn hold_keyed<Q>(&self, tat: &AtomicU64, key: &Q, target: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        loop {
            let Some(mut holes) = self.keyed.get_mut(key) else {
                return compound::raise(tat, target);
            };
            let Ok(moved) = try_raise(tat, target) else {
                drop(holes);
                compound::wait_unlocked(tat);
                continue;
            };
            holes.forget_below(target);
            let used_up = holes.is_empty();
            drop(holes);
            if used_up {
                self.forget_used_up(key);
            }
            return moved;
        }
    }

    /// A compound's copy of `key`'s holes (those ended by `now` forgotten)
    /// into `out`: how many. It waits for the key's hole lock, which is
    /// safe: whoever holds it never waits for a TAT a compound holds.
    pub(super) fn copy_keyed(&self, key: &K, now: u64, out: &mut [Hole]) -> usize {
        if !self.any_keyed() {
            return 0;
        }
        self.keyed
            .get_mut(key)
            .map_or(0, |mut holes| copy(&mut holes, now, out))
    }

    /// [`copy_keyed`](Self::copy_keyed) for the global bucket.
    pub(super) fn copy_global(&self, now: u64, out: &mut [Hole]) -> usize {
        if !self.any_global() {
            return 0;
        }
        let mut holes = self.lock_global();
        let copied = copy(&mut holes, now, out);
        self.global_has_holes
            .store(!holes.is_empty(), Ordering::Relaxed);
        copied
    }

    /// Applies a compound's charge to `key`'s holes (a span taken out of
    /// one, or a gap made one), under the key's hole lock.
    pub(super) fn apply_keyed(&self, key: &K, charge: &Charge, now: u64) {
        match self.keyed.entry(key.clone()) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().apply(charge, now);
                if entry.get().is_empty() {
                    entry.remove();
                    self.keys_with_holes.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Entry::Vacant(slot) => {
                let mut holes = Holes::new();
                holes.apply(charge, now);
                if !holes.is_empty() {
                    slot.insert(holes);
                    self.keys_with_holes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// [`apply_keyed`](Self::apply_keyed) for the global bucket.
    pub(super) fn apply_global(&self, charge: &Charge, now: u64) {
        let mut holes = self.lock_global();
        holes.apply(charge, now);
        self.global_has_holes
            .store(!holes.is_empty(), Ordering::Relaxed);
    }

    /// Drops a key's entry of holes once they are all used up (checked again
    /// under the entry's write lock: a refund may have added one since).
    fn forget_used_up<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self
            .keyed
            .remove_if(key, |_, holes| holes.is_empty())
            .is_some()
        {
            self.keys_with_holes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A new key: holes an earlier key of that name left behind are not its
    /// own (they could overlap its reservations).
    pub(super) fn forget_for_new_key<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        if self.any_keyed() && self.keyed.remove(key).is_some() {
            self.keys_with_holes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Gives `key`'s span back; `tat` is the key's TAT, whose shard the
    /// caller holds (read).
    pub(super) fn refund_keyed(&self, tat: &AtomicU64, key: &K, token: RefundToken) -> GiveBack {
        loop {
            match self.try_refund_keyed(tat, key, token) {
                Ok(given) => return given,
                Err(Locked) => compound::wait_unlocked(tat),
            };
        }
    }

    /// [`refund_keyed`](Self::refund_keyed) once, unless a compound holds the TAT.
    fn try_refund_keyed(
        &self,
        tat: &AtomicU64,
        key: &K,
        token: RefundToken,
    ) -> Result<GiveBack, Locked> {
        match self.keyed.entry(key.clone()) {
            Entry::Occupied(mut entry) => {
                let given = give_back(tat, entry.get_mut(), token);
                if entry.get().is_empty() {
                    entry.remove();
                    self.keys_with_holes.fetch_sub(1, Ordering::Relaxed);
                }
                given
            }
            Entry::Vacant(slot) => {
                let mut holes = Holes::new();
                let given = give_back(tat, &mut holes, token);
                if !holes.is_empty() {
                    slot.insert(holes);
                    self.keys_with_holes.fetch_add(1, Ordering::Relaxed);
                }
                given
            }
        }
    }

    /// Forgets the holes that ended by `now` (and the keys left without
    /// any); returns how many keys went.
    pub(super) fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        self.keyed.retain(|_, holes| {
            holes.forget_past(now);
            let keep = !holes.is_empty();
            removed += usize::from(!keep);
            keep
        });
        if removed > 0 {
            self.keys_with_holes.fetch_sub(removed, Ordering::Relaxed);
        }
        let mut global = self.lock_global();
        global.forget_past(now);
        self.global_has_holes
            .store(!global.is_empty(), Ordering::Relaxed);
        removed
    }

    /// Forgets every hole and resets the global TAT (under the global
    /// bucket's hole lock, so no refund lowers it meanwhile).
    pub(super) fn clear(&self, global_tat: &AtomicU64) {
        let mut removed = 0;
        self.keyed.retain(|_, _| {
            removed += 1;
            false
        });
        if removed > 0 {
            self.keys_with_holes.fetch_sub(removed, Ordering::Relaxed);
        }
        let mut global = self.lock_global();
        *global = Holes::new();
        global_tat.store(0, Ordering::Relaxed);
        self.global_has_holes.store(false, Ordering::Relaxed);
    }

    /// The number of keys with holes (the global bucket not counted).
    pub(super) fn keys(&self) -> usize {
        self.keys_with_holes.load(Ordering::Relaxed)
    }
}

/// One reservation on a key with holes, under its hole lock: the earliest
/// hole the cost fits in, else a compare-and-swap at the TAT (which others
/// may raise meanwhile, without the lock). [`Locked`] if a compound holds
/// the TAT: the caller lets go of the hole lock and waits. Returns the spot it was decided
/// at, taken if admitted, untouched if refused: [`Spot::decide`] there gives
/// the caller the same decision.
fn update_with_holes(
    tat: &AtomicU64,
    holes: &mut Holes,
    now: u64,
    params: &FreqLimitParams,
    request: &Reserve,
) -> Result<Spot, Locked> {
    holes.forget_past(now);
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        if current == compound::LOCKED {
            return Err(Locked);
        }
        // A stored 0 (the global bucket's start) is in the past: a full bucket.
        let spot = holes.spot(Some(current), now, params, request);
        let Ok(placement) = holes.place_at(spot, now, params, request) else {
            return Ok(spot);
        };
        let Some(new_tat) = placement.reserved.new_tat else {
            // A hole (changed only under this lock) or nothing (cost 0).
            holes.take(&placement);
            return Ok(spot);
        };
        match tat.compare_exchange_weak(current, new_tat, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(spot),
            Err(actual) => current = actual,
        }
    }
}

/// A refund under the key's hole lock: lowers the TAT by a compare-and-swap
/// (retried as a hole if a caller raised the TAT meanwhile), or records a
/// hole.
fn give_back(tat: &AtomicU64, holes: &mut Holes, token: RefundToken) -> Result<GiveBack, Locked> {
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        if current == compound::LOCKED {
            return Err(Locked);
        }
        let mut next = holes.clone();
        let given = next.give_back(current, token);
        match given {
            GiveBack::Nothing => return Ok(given),
            GiveBack::Hole => {
                *holes = next;
                return Ok(given);
            }
            GiveBack::Lowered(lowered) => {
                match tat.compare_exchange(current, lowered, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        *holes = next;
                        return Ok(given);
                    }
                    Err(actual) => current = actual,
                }
            }
        }
    }
}

/// Forgets `holes` ended by `now` and copies the rest into `out` (as many
/// as fit: a key keeps at most `MAX_HOLES`); how many.
fn copy(holes: &mut Holes, now: u64, out: &mut [Hole]) -> usize {
    holes.forget_past(now);
    let n = holes.len().min(out.len());
    out[..n].copy_from_slice(&holes.as_slice()[..n]);
    n
}

/// A compound holds the key's TAT: whoever holds the key's hole lock lets go
/// of it and waits (`compound::wait_unlocked`), because the compound may be
/// waiting for that hole lock.
pub(super) struct Locked;

/// `fetch_max` under a hole lock: whether the TAT moved, or [`Locked`].
fn try_raise(tat: &AtomicU64, target: u64) -> Result<bool, Locked> {
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        if current == compound::LOCKED {
            return Err(Locked);
        }
        if current >= target {
            return Ok(false);
        }
        match tat.compare_exchange_weak(current, target, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(true),
            Err(actual) => current = actual,
        }
    }
}
