//! `max_keys`: a hard bound on the keys an [`InMemoryBackend`](super::InMemoryBackend)
//! holds, and what happens when a new key finds the table full ([`WhenFull`]).
//!
//! # How room is made
//!
//! Nothing changes for a key already in the table: its call never touches the
//! bound. A *new* key takes a slot from a counter of held keys (one relaxed
//! compare-and-swap). When the counter is at `max_keys`, the call takes the
//! bound's mutex and makes room, cheapest and safest first:
//!
//! 1. **Lossless.** A drained key (`TAT <= now`) is in exactly the state of a
//!    new key, so dropping it changes no decision. The backend keeps a batch of
//!    *candidates*: the `max_keys / 16` keys (at least 1, at most 65 536) closest
//!    to draining, found by the last scan, closest first. A drained candidate
//!    goes and its slot is handed to the new key.
//! 2. **Rescan.** A scan of the whole table drops every drained key (whatever
//!    its `idle_ttl`: under pressure, drained keys go at once) and picks the next
//!    batch of candidates. It runs when a key outside the batch may have drained:
//!    the batch is used up and its last TAT has passed, or a key inserted since
//!    the last scan has drained and at least a batch's worth of new keys came
//!    since that scan. So a scan, which visits `max_keys` entries, is paid for
//!    by a batch of new keys: about 16 entries visited per new key, amortised
//!    (more above 1 048 576 keys, where the batch stops growing).
//! 3. **The policy**, when nothing drained could go: [`WhenFull`].
//!
//! With groups (the default for IP addresses, see [`groups`](super::groups)),
//! a new key first claims a place in its group; a group at its share sends
//! its new keys to its overflow bucket, which takes a slot here like a key.
//!
//! The bound is exact: the table never holds more than `max_keys` keys, even
//! with calls racing on many threads. It is not a bound on bytes: a key's size
//! is the key type's (an `IpAddr` is 17 bytes, a `String` its heap bytes too).
//! The global bucket is not counted.
//!
//! The one approximation is in step 2: a key inserted since the last scan that
//! has already drained may stay unseen for up to a batch of new keys, and those
//! get the policy meanwhile although one drained key could have gone. Step 1,
//! on the batch, is exact.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::groups::Groups;
use super::when_full::{KeyTableFull, WhenFull};
use crate::backends::BorrowedKey;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra;
use crate::params::FreqLimitParams;

pub(super) type Tats<K> = DashMap<K, AtomicU64, foldhash::fast::RandomState>;

/// The bound: a counter of held keys and the state of the room-making.
pub(super) struct Bound<K> {
    max_keys: usize,
    when_full: WhenFull,
    /// Keys in the table plus slots taken by inserts in flight; never above
    /// `max_keys`.
    held: AtomicUsize,
    /// The smallest TAT stored by an insert (or lowered by a refund) since the
    /// last scan: when it has passed, a key outside the candidates may be
    /// drained.
    inserted_min: AtomicU64,
    reclaim: Mutex<Reclaim<K>>,
    full: BackendError,
    /// A share of the table per group of keys, and the groups' overflow
    /// buckets (see [`groups`](super::groups)).
    groups: Option<Groups<K>>,
}

struct Reclaim<K> {
    /// `(TAT when scanned, key)`, the largest TAT first: `pop` gives the key
    /// closest to draining.
    candidates: Vec<(u64, K)>,
    /// Every key that the last scan kept and did not make a candidate had a TAT
    /// at or above this (`u64::MAX`: every key kept is a candidate).
    threshold: u64,
    /// Room-making calls since the last scan.
    since_scan: usize,
    /// The number of candidates a scan picks.
    batch: usize,
}

impl<K> fmt::Debug for Bound<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("max_keys", &self.max_keys)
            .field("when_full", &self.when_full)
            .finish_non_exhaustive()
    }
}

impl<K> Bound<K> {
    pub(super) fn new(max_keys: usize, when_full: WhenFull, groups: Option<Groups<K>>) -> Self {
        Self {
            max_keys,
            when_full,
            held: AtomicUsize::new(0),
            inserted_min: AtomicU64::new(u64::MAX),
            reclaim: Mutex::new(Reclaim {
                candidates: Vec::new(),
                // No scan yet: any key may have drained.
                threshold: 0,
                since_scan: 0,
                batch: (max_keys / 16).clamp(1, 65_536),
            }),
            // Made once: a refusal under a flood clones an `Arc`, no allocation.
            full: BackendError::new(BackendErrorKind::Full, KeyTableFull { max_keys }),
            groups,
        }
    }

    pub(super) fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub(super) fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// `n` keys left the table (a sweep).
    pub(super) fn removed(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The groups, if keys are grouped.
    pub(super) fn groups(&self) -> Option<&Groups<K>> {
        self.groups.as_ref()
    }

    /// `key` left the table: its group holds one key less. (Its slot is
    /// counted by the caller.)
    pub(super) fn forget(&self, key: &K) {
        if let Some(groups) = &self.groups {
            groups.release(groups.group_of(key));
        }
    }

    /// The sweep of the groups' overflow buckets; returns how many went.
    pub(super) fn sweep_groups(&self, now: u64, idle_ttl: u64) -> usize {
        let freed = self
            .groups
            .as_ref()
            .map_or(0, |groups| groups.sweep(now, idle_ttl));
        self.removed(freed);
        freed
    }

    /// Gives back a slot taken for an insert that stored nothing.
    pub(super) fn give_slot_back(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }

    /// An insert stored `tat`.
    pub(super) fn inserted(&self, tat: u64) {
        self.inserted_min.fetch_min(tat, Ordering::Relaxed);
    }

    /// A refund moved a key's TAT back to `tat`: it may drain sooner than the
    /// last scan saw.
    pub(super) fn lowered(&self, tat: u64) {
        self.inserted_min.fetch_min(tat, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Reclaim<K>> {
        // Nothing panics while the lock is held; if something did, the state is
        // still consistent (candidates are only hints).
        self.reclaim.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a new key if the table is not full.
    fn try_take_slot(&self) -> bool {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            if held >= self.max_keys {
                return false;
            }
            match self.held.compare_exchange_weak(
                held,
                held + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => held = actual,
            }
        }
    }
}

impl<K> Bound<K>
where
    K: Hash + Eq + Clone,
{
    /// The new-key path of a bounded backend: decide, take a slot (making room
    /// if the table is full), insert.
    pub(super) fn insert<Q>(
        &self,
        tats: &Tats<K>,
        key: &Q,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        Q: BorrowedKey<K> + ?Sized,
    {
        if let Some(groups) = &self.groups {
            return self.insert_grouped(groups, tats, key, now, params, request);
        }
        // Decide first: a refused call (or cost 0) stores nothing and needs no slot.
        let reserved = gcra::reserve(None, now, params, request)?;
        let Some(new_tat) = reserved.new_tat else {
            return Ok(reserved.admission);
        };
        self.take_slot(tats, now)?;
        match tats.entry(key.to_key()) {
            // Inserted by another call meanwhile: give the slot back, update it.
            Entry::Occupied(tat) => {
                self.held.fetch_sub(1, Ordering::Relaxed);
                super::update(tat.get(), now, params, request)
            }
            Entry::Vacant(slot) => {
                slot.insert(AtomicU64::new(new_tat));
                self.inserted_min.fetch_min(new_tat, Ordering::Relaxed);
                Ok(reserved.admission)
            }
        }
    }

    /// Takes a slot for a new entry, making room if the table is full, or
    /// refuses. On `Ok` the caller holds a slot (counted in `held`).
    pub(super) fn take_slot(&self, tats: &Tats<K>, now: u64) -> Result<(), FreqLimitError> {
        if self.try_take_slot() {
            return Ok(());
        }
        self.make_room(tats, now)
    }

    /// Frees one slot for the caller, or refuses. On `Ok` the caller holds a
    /// slot (counted in `held`).
    fn make_room(&self, tats: &Tats<K>, now: u64) -> Result<(), FreqLimitError> {
        let mut reclaim = self.lock();
        // Room may have been made while this call waited for the lock.
        if self.try_take_slot() {
            return Ok(());
        }
        reclaim.since_scan = reclaim.since_scan.saturating_add(1);

        // 1. Lossless: drained candidates, closest to draining first. A removed
        //    key's slot passes to the caller (`held` unchanged).
        while let Some((scanned_tat, _)) = reclaim.candidates.last() {
            if *scanned_tat > now {
                break;
            }
            let Some((_, key)) = reclaim.candidates.pop() else {
                break;
            };
            // A candidate hit since the scan owes time again: it stays.
            if let Some((key, _)) =
                tats.remove_if(&key, |_, tat| tat.load(Ordering::Relaxed) <= now)
            {
                self.forget(&key);
                return Ok(());
            }
        }

        // 2. A rescan, when a key outside the candidates may have drained, or
        //    when there is no candidate left to evict.
        let outside_drained = reclaim.candidates.is_empty() && now >= reclaim.threshold;
        let inserted_drained =
            reclaim.since_scan >= reclaim.batch && now >= self.inserted_min.load(Ordering::Relaxed);
        let evict_needs_candidates =
            reclaim.candidates.is_empty() && self.when_full == WhenFull::EvictClosestToDraining;
        if (outside_drained || inserted_drained || evict_needs_candidates)
            && self.rescan_took_slot(&mut reclaim, tats, now)
        {
            return Ok(());
        }

        // 3. The policy.
        match self.when_full {
            WhenFull::RefuseNewKeys => Err(FreqLimitError::Backend(self.full.clone())),
            WhenFull::EvictClosestToDraining => {
                // Candidates not hit since the scan (their TAT has not grown).
                while let Some((scanned_tat, key)) = reclaim.candidates.pop() {
                    if let Some((key, _)) =
                        tats.remove_if(&key, |_, tat| tat.load(Ordering::Relaxed) <= scanned_tat)
                    {
                        self.forget(&key);
                        return Ok(());
                    }
                }
                // Every candidate was hit or swept since: pick anew, and take the
                // closest whatever happens to it meanwhile.
                if self.rescan_took_slot(&mut reclaim, tats, now) {
                    return Ok(());
                }
                while let Some((_, key)) = reclaim.candidates.pop() {
                    if let Some((key, _)) = tats.remove(&key) {
                        self.forget(&key);
                        return Ok(());
                    }
                }
                // An empty table (`max_keys` 0, or every slot taken by inserts
                // in flight): there is nothing to evict.
                Err(FreqLimitError::Backend(self.full.clone()))
            }
        }
    }

    /// Scans the table: drops every drained key and picks the next batch of
    /// candidates. Returns whether it freed a slot, which then belongs to the
    /// caller.
    fn rescan_took_slot(&self, reclaim: &mut Reclaim<K>, tats: &Tats<K>, now: u64) -> bool {
        // Reset before the scan: an insert racing with it is then either seen
        // by the scan or recorded for the next one.
        self.inserted_min.store(u64::MAX, Ordering::Relaxed);
        let batch = reclaim.batch;
        let mut closest: BinaryHeap<ByTat<K>> = BinaryHeap::with_capacity(batch + 1);
        let mut freed = 0usize;
        tats.retain(|key, tat| {
            let tat = *tat.get_mut();
            if tat <= now {
                freed += 1;
                self.forget(key);
                return false;
            }
            if closest.len() < batch {
                closest.push(ByTat(tat, key.clone()));
            } else if let Some(mut furthest) = closest.peek_mut()
                && tat < furthest.0
            {
                *furthest = ByTat(tat, key.clone());
            }
            true
        });
        reclaim.threshold = if closest.len() < batch {
            u64::MAX
        } else {
            closest.peek().map_or(u64::MAX, |furthest| furthest.0)
        };
        reclaim.candidates.clear();
        // Ascending, then reversed: `pop` gives the smallest TAT.
        reclaim.candidates.extend(
            closest
                .into_sorted_vec()
                .into_iter()
                .rev()
                .map(|ByTat(tat, key)| (tat, key)),
        );
        reclaim.since_scan = 0;
        // Drained overflow buckets go too.
        if let Some(groups) = &self.groups {
            freed += groups.sweep(now, 0);
        }
        if freed == 0 {
            return false;
        }
        // One of the freed slots passes to the caller.
        self.held.fetch_sub(freed - 1, Ordering::Relaxed);
        true
    }

    /// Empties the table (`clear`), keeping the count exact under racing inserts.
    pub(super) fn clear(&self, tats: &Tats<K>) {
        let mut reclaim = self.lock();
        let mut removed = 0usize;
        tats.retain(|_, _| {
            removed += 1;
            false
        });
        if let Some(groups) = &self.groups {
            removed += groups.clear();
        }
        self.removed(removed);
        reclaim.candidates.clear();
        reclaim.threshold = 0;
        reclaim.since_scan = 0;
        self.inserted_min.store(u64::MAX, Ordering::Relaxed);
    }
}

/// A candidate ordered by its TAT alone (keys need not be `Ord`).
struct ByTat<K>(u64, K);

impl<K> PartialEq for ByTat<K> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K> Eq for ByTat<K> {}

impl<K> PartialOrd for ByTat<K> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for ByTat<K> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.cmp(&other.0)
    }
}
