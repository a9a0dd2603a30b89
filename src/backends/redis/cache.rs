//! The negative cache: rejected keys remembered locally until their debt is due.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use crate::decision::Rejection;

use super::script::Micros;

/// Remembers, per key, bounds of the key's TAT learnt from a rejection, on the
/// caller's time scale in microseconds.
///
/// A key's TAT only grows (a refund can lower it, which makes a cached
/// rejection stricter than needed until it expires, never laxer), so while a
/// request would be rejected even at the lower bound it would be rejected by
/// the server too: answering it here never admits anything, it only saves a
/// round trip. The rejection's figures count to the upper bound instead: a
/// caller that waits its `retry_after` must find the debt paid, and the lower
/// bound falls short of the TAT by however late the server ran the call.
///
/// Direct-mapped: a fixed array of slots indexed by the key's hash, one small
/// mutex each. A new rejection overwrites whatever its slot held, so the size is
/// bounded without any scan, and a collision only costs a round trip.
pub(super) struct NegativeCache {
    slots: Box<[Mutex<Option<Entry>>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
}

struct Entry {
    key: Box<[u8]>,
    tat: TatBounds,
}

/// Where a key's TAT lies, on the caller's scale in microseconds: at least
/// `at_least` now, and at most `at_most` when it was last seen (a later
/// admission elsewhere can move it on; nothing else can).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TatBounds {
    at_least: u64,
    at_most: u64,
}

impl TatBounds {
    /// A TAT between `at_least` and `at_most` (taken as `at_least` if below).
    pub(super) fn new(at_least: u64, at_most: u64) -> Self {
        Self {
            at_least,
            at_most: at_most.max(at_least),
        }
    }

    /// Both observations at once. The larger upper bound, not the newest:
    /// replies are handled in whatever order their tasks are polled, so the
    /// one handled last may have run first on the server, before a TAT the
    /// other one saw.
    fn merge(self, other: Self) -> Self {
        Self::new(
            self.at_least.max(other.at_least),
            self.at_most.max(other.at_most),
        )
    }
}

impl NegativeCache {
    /// A cache of `capacity` slots (rounded up to a power of two, at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        let size = capacity.max(1).next_power_of_two();
        Self {
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            mask: size - 1,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Option<Entry>> {
        // The mask keeps the index in range; truncating the hash is intended.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.hasher.hash_one(key) as usize) & self.mask;
        self.slots[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rejection the server would give `key` at `now` (caller's scale,
    /// microseconds) for a request of these figures, if its remembered TAT
    /// already proves it; `None` when the server must be asked.
    pub(super) fn check(&self, key: &[u8], now: u64, m: &Micros) -> Option<Rejection> {
        let max_wait = m.max_wait?;
        // A cost that can never fit is the server's (or the limiter's) to report.
        if m.last.saturating_sub(m.tau) > max_wait {
            return None;
        }
        let mut slot = self.slot(key);
        let entry = slot.as_ref().filter(|e| &*e.key == key)?;
        let owed = entry.tat.at_least.saturating_sub(now);
        if owed == 0 {
            // The debt is paid: the entry can tell nothing any more.
            *slot = None;
            return None;
        }
        let delay = owed.saturating_add(m.last).saturating_sub(m.tau);
        if delay <= max_wait {
            return None;
        }
        let owed_at_most = entry.tat.at_most.saturating_sub(now);
        let delay_at_most = owed_at_most.saturating_add(m.last).saturating_sub(m.tau);
        Some(Rejection {
            retry_after: Duration::from_micros(delay_at_most - max_wait),
            remaining: m.remaining(owed_at_most),
            reset_after: Duration::from_micros(owed_at_most),
            limit: 0,
        })
    }

    /// Remembers that `key`'s TAT lies within `tat`.
    pub(super) fn remember(&self, key: &[u8], tat: TatBounds) {
        let mut slot = self.slot(key);
        match slot.as_mut() {
            Some(entry) if &*entry.key == key => entry.tat = entry.tat.merge(tat),
            _ => {
                *slot = Some(Entry {
                    key: key.into(),
                    tat,
                });
            }
        }
    }

    /// Moves `key`'s remembered TAT on to `tat` if `key` is remembered (an
    /// admission moved its TAT on), so the cache keeps telling what the server
    /// would.
    pub(super) fn refresh(&self, key: &[u8], tat: TatBounds) {
        let mut slot = self.slot(key);
        if let Some(entry) = slot.as_mut().filter(|e| &*e.key == key) {
            entry.tat = entry.tat.merge(tat);
        }
    }

    /// Forgets `key` (its TAT may have gone down: a refund).
    pub(super) fn forget(&self, key: &[u8]) {
        let mut slot = self.slot(key);
        if slot.as_ref().is_some_and(|e| &*e.key == key) {
            *slot = None;
        }
    }

    /// Forgets every key.
    pub(super) fn clear(&self) {
        for slot in &*self.slots {
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(max_wait: Option<u64>) -> Micros {
        // T = 100 µs, burst 3, cost 1.
        Micros {
            interval: 100,
            tau: 200,
            incr: 100,
            last: 0,
            max_wait,
        }
    }

    fn exact(tat: u64) -> TatBounds {
        TatBounds::new(tat, tat)
    }

    #[test]
    fn rejects_only_while_the_debt_proves_it() {
        let cache = NegativeCache::new(4);
        cache.remember(b"k", exact(1_000));
        // At 700 the key owes 300: a unit call waits 100, more than 0.
        let r = cache.check(b"k", 700, &micros(Some(0))).unwrap();
        assert_eq!(r.retry_after(), Duration::from_micros(100));
        assert_eq!(r.reset_after(), Duration::from_micros(300));
        assert_eq!(r.remaining(), 0);
        // Patience of 100 µs is enough: ask the server.
        assert!(cache.check(b"k", 700, &micros(Some(100))).is_none());
        // Waiting callers are never answered here.
        assert!(cache.check(b"k", 700, &micros(None)).is_none());
        // At 800 the debt is within tau: no proof any more.
        assert!(cache.check(b"k", 800, &micros(Some(0))).is_none());
        // Other keys are unknown.
        assert!(cache.check(b"j", 700, &micros(Some(0))).is_none());
    }

    #[test]
    fn bounded_and_forgetful() {
        let cache = NegativeCache::new(3);
        assert_eq!(cache.capacity(), 4);
        for i in 0..100u32 {
            cache.remember(&i.to_be_bytes(), exact(10_000));
        }
        let held = (0..100u32)
            .filter(|i| cache.check(&i.to_be_bytes(), 0, &micros(Some(0))).is_some())
            .count();
        assert!((1..=4).contains(&held), "{held}");
        cache.clear();
        assert!((0..100u32).all(|i| cache.check(&i.to_be_bytes(), 0, &micros(Some(0))).is_none()));
        cache.remember(b"k", exact(10_000));
        cache.forget(b"k");
        assert!(cache.check(b"k", 0, &micros(Some(0))).is_none());
    }

    /// `(retry_after, reset_after, remaining)` of the cached rejection, in µs.
    fn figures(cache: &NegativeCache, now: u64, max_wait: u64) -> Option<(u64, u64, u32)> {
        let r = cache.check(b"k", now, &micros(Some(max_wait)))?;
        Some((
            u64::try_from(r.retry_after().as_micros()).unwrap(),
            u64::try_from(r.reset_after().as_micros()).unwrap(),
            r.remaining(),
        ))
    }

    #[test]
    fn the_lower_bound_decides_and_the_figures_count_to_the_upper() {
        let cache = NegativeCache::new(4);
        // The server said "TAT 1 000 past my now", and its now lay between the
        // caller's asking (0) and the reply's arrival (40).
        cache.remember(b"k", TatBounds::new(1_000, 1_040));
        // At 700 a unit call waits 100 to 140: refused, told to come back
        // when it certainly fits (140), however late the server ran.
        assert_eq!(figures(&cache, 700, 0), Some((140, 340, 0)));
        // Whether to refuse is the lower bound's: a patience of 100 may be
        // enough, so the server must be asked.
        assert_eq!(figures(&cache, 700, 100), None);
        assert_eq!(figures(&cache, 700, 99), Some((41, 340, 0)));
        // At 800 the call may fit at once.
        assert_eq!(figures(&cache, 800, 0), None);
    }

    #[test]
    fn an_upper_bound_below_the_lower_one_is_the_lower_one() {
        assert_eq!(TatBounds::new(1_000, 900), exact(1_000));
        let cache = NegativeCache::new(4);
        cache.remember(b"k", TatBounds::new(1_000, 900));
        assert_eq!(figures(&cache, 700, 0), Some((100, 300, 0)));
    }

    #[test]
    fn observations_merge_to_the_largest_of_each_bound() {
        let cache = NegativeCache::new(4);
        cache.remember(b"k", TatBounds::new(1_000, 1_040));
        // A reply with a shorter round trip tightens the lower bound only.
        cache.remember(b"k", TatBounds::new(1_010, 1_020));
        assert_eq!(figures(&cache, 700, 0), Some((140, 340, 0)));
        assert_eq!(figures(&cache, 809, 0), Some((31, 231, 0)));
        assert_eq!(figures(&cache, 810, 0), None);
        // An admission moved the TAT on.
        cache.refresh(b"k", TatBounds::new(1_100, 1_150));
        assert_eq!(figures(&cache, 700, 0), Some((250, 450, 0)));
        // A reply handled after it but run before it on the server (an older
        // TAT) changes nothing: the upper bound is not the newest reply's.
        cache.refresh(b"k", TatBounds::new(1_000, 1_040));
        cache.remember(b"k", TatBounds::new(1_000, 1_040));
        assert_eq!(figures(&cache, 700, 0), Some((250, 450, 0)));
        // Refreshing a key that is not remembered remembers nothing.
        cache.refresh(b"j", exact(5_000));
        assert!(cache.check(b"j", 0, &micros(Some(0))).is_none());
    }
}
