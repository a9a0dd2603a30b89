//! Holds ([`FreqLimitBackend::hold`](crate::FreqLimitBackend::hold)): a
//! key's TAT raised to at least `now + hold + tau`, its holes below that
//! forgotten, and a new key stored (under the bound and its groups) to carry
//! the hold.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use dashmap::mapref::entry::Entry;

use super::bound::{Bound, Tats};
use super::{InMemoryBackend, compound};
use crate::backends::BorrowedKey;
use crate::clock::Timestamp;
use crate::error::FreqLimitError;
use crate::params::FreqLimitParams;

impl<K> InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// [`FreqLimitBackend::hold`](crate::FreqLimitBackend::hold) without the future: from `now`, nothing is
    /// admitted for `key` within `hold`; then one call, then one every `T`.
    /// Returns whether the key's schedule moved (it does not when the key
    /// already owed longer).
    ///
    /// # Errors
    ///
    /// Only for a new key on a bounded backend that finds its table full
    /// ([`WhenFull::RefuseNewKeys`](super::WhenFull::RefuseNewKeys)): [`FreqLimitError::Backend`] of kind
    /// [`Full`](crate::BackendErrorKind::Full).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// let backend = InMemoryBackend::<&str>::new();
    /// let params = FreqLimitParams::per_second(10).with_burst(5);
    /// let now = Timestamp::now();
    /// // The server said: retry after 30 s.
    /// assert!(backend.hold_now(Some(&"api.example.com"), now, Duration::from_secs(30), &params)?);
    /// let next = backend.reserve_now(Some(&"api.example.com"), now, &params, Reserve::new())?;
    /// assert_eq!(next.delay(), Duration::from_secs(30));
    /// # Ok::<(), tower_freqlimit::FreqLimitError>(())
    /// ```
    pub fn hold_now<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        hold: Duration,
        params: &FreqLimitParams,
    ) -> Result<bool, FreqLimitError>
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        let inner = &*self.inner;
        let now = now.as_nanos();
        // A unit call conforms once `tat - tau` has passed.
        let tat = now
            .saturating_add(crate::nanos::from_duration(hold))
            .saturating_add(params.tau_nanos())
            .min(crate::gcra::compound::MAX_TAT);
        let Some(key) = key else {
            return Ok(inner.holes.hold_global(&inner.global, tat));
        };
        if let Some(held) = inner.tats.get(key) {
            return Ok(if inner.holes.any_keyed() {
                inner.holes.hold_keyed(&held, key, tat)
            } else {
                compound::raise(&held, tat)
            });
        }
        if hold.is_zero() {
            return Ok(false);
        }
        // Holes an earlier key of that name left are not this key's.
        inner.holes.forget_for_new_key(key);
        if let Some(bound) = &inner.bound {
            return bound.insert_held(&inner.tats, key, now, tat);
        }
        let held = inner
            .tats
            .entry(key.to_key())
            .or_insert_with(|| AtomicU64::new(0));
        Ok(compound::raise(&held, tat))
    }
}

impl<K> Bound<K>
where
    K: Hash + Eq + Clone,
{
    /// The new-key path of [`InMemoryBackend::hold_now`](super::InMemoryBackend::hold_now):
    /// an entry for a key that must not be admitted before `tat - tau` (with
    /// groups, the group's overflow bucket for a key past its group's share).
    /// Whether the key's TAT moved.
    pub(super) fn insert_held<Q>(
        &self,
        tats: &Tats<K>,
        key: &Q,
        now: u64,
        tat: u64,
    ) -> Result<bool, FreqLimitError>
    where
        Q: BorrowedKey<K> + ?Sized,
    {
        if let Some(groups) = self.groups() {
            return self.insert_held_grouped(groups, tats, key.to_key(), now, tat);
        }
        self.store_held(tats, key.to_key(), now, tat)
            .map(|(moved, _)| moved)
    }

    /// Takes a slot and stores `key` with a TAT of at least `tat`: whether
    /// its TAT moved, and whether this call inserted it.
    pub(super) fn store_held(
        &self,
        tats: &Tats<K>,
        key: K,
        now: u64,
        tat: u64,
    ) -> Result<(bool, bool), FreqLimitError> {
        self.take_slot(tats, now)?;
        match tats.entry(key) {
            Entry::Occupied(held) => {
                self.give_slot_back();
                Ok((compound::raise(held.get(), tat), false))
            }
            Entry::Vacant(slot) => {
                slot.insert(AtomicU64::new(tat));
                self.inserted(tat);
                Ok((true, true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::backends::memory::WhenFull;

    /// A key another call inserted meanwhile is raised, never lowered, and
    /// gives its slot back.
    #[test]
    fn a_key_inserted_meanwhile_is_raised_not_replaced() {
        let tats: Tats<u32> = Tats::with_hasher(foldhash::fast::RandomState::default());
        let bound = Bound::new(2, WhenFull::RefuseNewKeys, None);
        assert_eq!(bound.store_held(&tats, 1, 0, 500).unwrap(), (true, true));
        assert_eq!(bound.store_held(&tats, 1, 0, 400).unwrap(), (false, false));
        assert_eq!(bound.store_held(&tats, 1, 0, 500).unwrap(), (false, false));
        assert_eq!(bound.store_held(&tats, 1, 0, 600).unwrap(), (true, false));
        assert_eq!(tats.get(&1).unwrap().load(Ordering::Relaxed), 600);
        // The slots given back leave room for exactly one more key.
        assert_eq!(bound.store_held(&tats, 2, 0, 700).unwrap(), (true, true));
        assert!(bound.store_held(&tats, 3, 0, 700).is_err());
    }
}
