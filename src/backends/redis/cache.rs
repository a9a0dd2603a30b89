//! The negative cache: rejected keys remembered locally until their debt is due.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use crate::decision::Rejection;

use super::script::Micros;

/// Remembers, per key, a lower bound of the key's TAT learnt from a rejection,
/// on the caller's time scale in microseconds.
///
/// A key's TAT only grows (a refund can lower it, which makes a cached
/// rejection stricter than needed until it expires, never laxer), so while a
/// request would be rejected even at that lower bound it would be rejected by
/// the server too: answering it here never admits anything, it only saves a
/// round trip.
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
    /// The key's TAT is at least this (caller's scale, microseconds).
    tat_at_least: u64,
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
        let owed = entry.tat_at_least.saturating_sub(now);
        if owed == 0 {
            // The debt is paid: the entry can tell nothing any more.
            *slot = None;
            return None;
        }
        let delay = owed.saturating_add(m.last).saturating_sub(m.tau);
        if delay <= max_wait {
            return None;
        }
        Some(Rejection {
            retry_after: Duration::from_micros(delay - max_wait),
            remaining: m.remaining(owed),
            reset_after: Duration::from_micros(owed),
        })
    }

    /// Remembers that `key`'s TAT is at least `tat_at_least`.
    pub(super) fn remember(&self, key: &[u8], tat_at_least: u64) {
        let mut slot = self.slot(key);
        match slot.as_mut() {
            Some(entry) if &*entry.key == key => {
                entry.tat_at_least = entry.tat_at_least.max(tat_at_least);
            }
            _ => {
                *slot = Some(Entry {
                    key: key.into(),
                    tat_at_least,
                });
            }
        }
    }

    /// Raises `key`'s remembered TAT to `tat_at_least` if `key` is remembered (an
    /// admission moved its TAT on), so the cache keeps telling what the server
    /// would.
    pub(super) fn refresh(&self, key: &[u8], tat_at_least: u64) {
        let mut slot = self.slot(key);
        if let Some(entry) = slot.as_mut().filter(|e| &*e.key == key) {
            entry.tat_at_least = entry.tat_at_least.max(tat_at_least);
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

    #[test]
    fn rejects_only_while_the_debt_proves_it() {
        let cache = NegativeCache::new(4);
        cache.remember(b"k", 1_000);
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
            cache.remember(&i.to_be_bytes(), 10_000);
        }
        let held = (0..100u32)
            .filter(|i| cache.check(&i.to_be_bytes(), 0, &micros(Some(0))).is_some())
            .count();
        assert!((1..=4).contains(&held), "{held}");
        cache.clear();
        assert!((0..100u32).all(|i| cache.check(&i.to_be_bytes(), 0, &micros(Some(0))).is_none()));
        cache.remember(b"k", 10_000);
        cache.forget(b"k");
        assert!(cache.check(b"k", 0, &micros(Some(0))).is_none());
    }
}
