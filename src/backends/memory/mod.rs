//! The embedded backend: per-key TATs in a sharded concurrent map.

mod backend;
mod bound;
mod builder;
mod compound;
mod grouped;
mod groups;
mod hold;
mod holes;
mod step;
mod sweeper;
mod when_full;

pub use builder::InMemoryBackendBuilder;
pub use groups::ip_group;
pub use when_full::WhenFull;

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::task::AbortHandle;

use self::bound::Bound;
use self::holes::HoleTable;
use self::step::{decided_at, update};
use super::{BorrowedKey, NoKey};
use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
use crate::gcra;
use crate::params::FreqLimitParams;

/// Rate-limit state kept in this process: one `u64` TAT per key.
///
/// * **Atomic per key.** TATs sit in a [`DashMap`] as atomics: a call on a known key
///   takes the shard's *read* lock and updates the TAT with a compare-and-swap, so
///   calls on one key never block each other and never lose an update. No lock is
///   held across an `.await` (there is none: [`reserve`] answers at once).
/// * **Time is passed in.** TATs are nanoseconds on the [`Timestamp`] scale of
///   the `now` the caller passes; [`FreqLimit`](crate::FreqLimit) and the layer
///   read it from the backend's [`clock`](InMemoryBackendBuilder::clock), which
///   the sweeper reads too: the time-stamp counter, or Tokio's clock with the
///   `test-util` feature, so a test with `tokio::time::pause()` is exact to the
///   nanosecond.
/// * **Lossless eviction.** A key is dropped only once its TAT has passed (plus
///   [`idle_ttl`](InMemoryBackendBuilder::idle_ttl)): its state is then exactly that
///   of a new key, so dropping it never lets an extra call through. Keys are swept
///   by a background task every
///   [`sweeper_interval`](InMemoryBackendBuilder::sweeper_interval) (60 s by
///   default), never by a scan on the request path. The task starts on the first
///   reservation for a key made inside a Tokio runtime, holds only a weak reference, and is
///   stopped when the last clone of the backend is dropped.
/// * **Keys** are any `Hash + Eq + Clone + Send + Sync + 'static` type; the key
///   `None` is one global bucket, distinct from every key.
/// * **Every abandoned slot comes back.** A waiter that gives up
///   ([`refund`](crate::FreqLimitBackend::refund)) gives its span back whatever was
///   reserved after it: the key's last span lowers its TAT, an earlier one
///   becomes a hole that the next reservations take first
///   ([`gcra::holes`], at most 64 per key). Holes sit in a side table that a
///   call reads only when a relaxed counter says some key (or the global
///   bucket) has one: otherwise it costs one atomic load. A refund of a
///   reservation made before [`clear_now`](Self::clear_now), or before its key
///   was evicted under `max_keys`, may free a slot of the new state: do not
///   clear under waiters you will drop.
/// * **Bounded, if you ask.** [`max_keys`](InMemoryBackendBuilder::max_keys)
///   caps the number of keys held, exactly, whatever the traffic (a flood of
///   unique keys included). A new key that finds the table full first drops
///   drained keys (losslessly); if none has drained, [`WhenFull`] decides:
///   refuse the new key (the default) or evict the key closest to draining.
///   Known keys pay nothing for the bound. Keys are grouped (IP addresses by
///   network by default, see [`group_by`](InMemoryBackendBuilder::group_by))
///   and a group holds at most its share of the table, so one network's flood
///   cannot lock others out. Without `max_keys` the table grows with the
///   number of keys active within a sweep period.
///
/// Clones share the same state.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = InMemoryBackend::<String>::builder()
///     .idle_ttl(Duration::from_secs(30))
///     .sweeper_interval(Duration::from_secs(10))
///     .build();
/// let limiter = FreqLimit::new(FreqLimitParams::per_second(5), backend.clone());
/// limiter.acquire(&"user:1".to_string()).await.unwrap();
/// limiter.acquire(None).await.unwrap(); // the global bucket
/// assert_eq!(backend.len(), 1);
/// # }
/// ```
///
/// [`reserve`]: crate::FreqLimitBackend::reserve
pub struct InMemoryBackend<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    tats: DashMap<K, AtomicU64, foldhash::fast::RandomState>,
    global: AtomicU64,
    /// Spans given back by cancelled reservations that were not their key's
    /// last (see `holes.rs`).
    holes: HoleTable<K>,
    bound: Option<Bound<K>>,
    idle_ttl: u64,
    sweeper_interval: Option<Duration>,
    sweeper_started: AtomicBool,
    sweeper: Mutex<Option<AbortHandle>>,
    /// The time base of the TATs: the sweeper reads it, and limiters built on
    /// the backend read it.
    clock: Clock,
}

impl<K> Drop for Inner<K> {
    fn drop(&mut self) {
        let sweeper = self
            .sweeper
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = sweeper.take() {
            task.abort();
        }
    }
}

impl<K> Clone for InMemoryBackend<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for InMemoryBackend<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryBackend")
            .field("keys", &self.inner.tats.len())
            .field("keys_with_holes", &self.inner.holes.keys())
            .field("max_keys", &self.inner.bound.as_ref().map(Bound::max_keys))
            .field("idle_ttl", &Duration::from_nanos(self.inner.idle_ttl))
            .field("sweeper_interval", &self.inner.sweeper_interval)
            .finish()
    }
}

impl<K> Default for InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryBackend<NoKey> {
    /// A backend with only the global bucket: for one limit over everything
    /// (a bot's 30 messages per second, a worker pool's API quota), with no
    /// key type to choose. Its limiter takes the key `None`; the key map stays
    /// empty and no sweeper runs.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimit, FreqLimitLayer, FreqLimitParams};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(30), InMemoryBackend::global());
    /// limiter.acquire(None).await?;
    ///
    /// // The same for a layer: every request shares one bucket.
    /// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(30), InMemoryBackend::global());
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn global() -> Self {
        Self::builder().without_sweeper().build()
    }
}

impl<K> InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A backend that drops drained keys in a sweep every 60 seconds.
    ///
    /// It may be made outside a runtime; the sweeper starts with the first
    /// reservation made inside one.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    ///
    /// let backend = InMemoryBackend::<u64>::new();
    /// assert!(backend.is_empty());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings beyond the defaults of [`new`](Self::new).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    ///
    /// let backend = InMemoryBackend::<u64>::builder()
    ///     .idle_ttl(Duration::from_secs(300))
    ///     .without_sweeper()
    ///     .build();
    /// # let _ = backend;
    /// ```
    pub fn builder() -> InMemoryBackendBuilder<K> {
        InMemoryBackendBuilder::new()
    }

    /// The number of keys held (the global bucket is not counted).
    ///
    /// It reads the map's shards one after another: while other threads insert
    /// and remove keys it may be off by the calls in flight (a key moving out
    /// of one shard as another goes into a second may be counted twice). The
    /// [`max_keys`](InMemoryBackendBuilder::max_keys) bound itself is exact.
    ///
    /// ```
    /// # use tower_freqlimit::clock::Timestamp;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimitParams, Reserve};
    /// let backend = InMemoryBackend::<u64>::new();
    /// let params = FreqLimitParams::per_second(1);
    /// backend.reserve_now(Some(&1), Timestamp::now(), &params, Reserve::new()).unwrap();
    /// assert_eq!(backend.len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.tats.len()
    }

    /// Whether no key is held.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// assert!(InMemoryBackend::<u64>::new().is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.tats.is_empty()
    }

    /// Forgets every key and resets the global bucket, at once.
    ///
    /// ```
    /// # use tower_freqlimit::clock::Timestamp;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimitParams, Reserve};
    /// let backend = InMemoryBackend::<u64>::new();
    /// let params = FreqLimitParams::per_second(1);
    /// backend.reserve_now(Some(&1), Timestamp::now(), &params, Reserve::new()).unwrap();
    /// backend.clear_now();
    /// assert!(backend.is_empty());
    /// ```
    pub fn clear_now(&self) {
        match &self.inner.bound {
            None => self.inner.tats.clear(),
            Some(bound) => bound.clear(&self.inner.tats),
        }
        self.inner.holes.clear(&self.inner.global);
    }

    /// The bound set with [`max_keys`](InMemoryBackendBuilder::max_keys), if any.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// assert_eq!(InMemoryBackend::<u64>::new().max_keys(), None);
    /// let bounded = InMemoryBackend::<u64>::builder().max_keys(10_000).build();
    /// assert_eq!(bounded.max_keys(), Some(10_000));
    /// ```
    #[must_use]
    pub fn max_keys(&self) -> Option<usize> {
        self.inner.bound.as_ref().map(Bound::max_keys)
    }

    /// The most keys of the table one group may hold (see
    /// [`group_by`](InMemoryBackendBuilder::group_by)); `None` when keys are
    /// not grouped (no `max_keys`, a key type with no default grouping, or
    /// [`without_groups`](InMemoryBackendBuilder::without_groups)).
    ///
    /// ```
    /// # use std::net::IpAddr;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// let by_network = InMemoryBackend::<IpAddr>::builder().max_keys(10_000).build();
    /// assert_eq!(by_network.group_share(), Some(312));
    /// assert_eq!(InMemoryBackend::<u64>::builder().max_keys(10_000).build().group_share(), None);
    /// ```
    #[must_use]
    pub fn group_share(&self) -> Option<usize> {
        let groups = self.inner.bound.as_ref()?.groups()?;
        Some(groups.share())
    }

    /// The groups' overflow buckets held: each takes a slot of `max_keys`, so
    /// `len() + overflow_buckets()` never exceeds `max_keys`.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// assert_eq!(InMemoryBackend::<u64>::new().overflow_buckets(), 0);
    /// ```
    #[must_use]
    pub fn overflow_buckets(&self) -> usize {
        self.inner
            .bound
            .as_ref()
            .and_then(Bound::groups)
            .map_or(0, groups::Groups::overflow_buckets)
    }

    /// What a full table does with a new key (see [`WhenFull`]); `None` when
    /// the backend is unbounded.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
    /// let bounded = InMemoryBackend::<u64>::builder().max_keys(10).build();
    /// assert_eq!(bounded.when_full(), Some(WhenFull::RefuseNewKeys));
    /// ```
    #[must_use]
    pub fn when_full(&self) -> Option<WhenFull> {
        self.inner.bound.as_ref().map(Bound::when_full)
    }

    /// Drops every key whose TAT is `idle_ttl` or more in the past at `now`, and
    /// returns how many went. This is what the sweeper runs; calling it by hand is
    /// for backends built [`without_sweeper`](InMemoryBackendBuilder::without_sweeper).
    ///
    /// It is lossless: a dropped key's state equals a new key's. It takes each
    /// shard's write lock in turn, briefly blocking calls on that shard.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::clock::Timestamp;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimitParams, Reserve};
    /// let backend = InMemoryBackend::<u64>::builder().without_sweeper().build();
    /// let params = FreqLimitParams::per_second(1);
    /// let t0 = Timestamp::now();
    /// backend.reserve_now(Some(&1), t0, &params, Reserve::new()).unwrap();
    /// assert_eq!(backend.sweep(t0), 0); // key 1 still owes a second
    /// assert_eq!(backend.sweep(t0 + Duration::from_secs(1)), 1);
    /// ```
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its effect; the count is a bonus"
    )]
    pub fn sweep(&self, now: Timestamp) -> usize {
        self.inner.sweep(now)
    }

    /// [`FreqLimitBackend::reserve`](crate::FreqLimitBackend::reserve) without the future: the in-memory backend
    /// decides at once.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Rejected`] and [`FreqLimitError::CostExceedsCapacity`] as
    /// [`gcra::reserve`] decides them. The backend itself fails only when it is
    /// bounded ([`max_keys`](InMemoryBackendBuilder::max_keys)) with
    /// [`WhenFull::RefuseNewKeys`], for a new key that finds the table full:
    /// [`FreqLimitError::Backend`] of kind
    /// [`Full`](crate::BackendErrorKind::Full).
    ///
    /// ```
    /// # use tower_freqlimit::clock::Timestamp;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimitParams, Reserve};
    /// let backend = InMemoryBackend::<&'static str>::new();
    /// let params = FreqLimitParams::per_second(2);
    /// let now = Timestamp::now();
    /// let first = backend.reserve_now(Some(&"a"), now, &params, Reserve::new()).unwrap();
    /// let second = backend.reserve_now(Some(&"a"), now, &params, Reserve::new()).unwrap();
    /// assert_eq!(first.delay().as_millis(), 0);
    /// assert_eq!(second.delay().as_millis(), 500);
    /// ```
    #[inline(always)]
    pub fn reserve_now<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        let inner = &*self.inner;
        let now = now.as_nanos();
        // The global bucket needs no sweeper (it is one atomic, never
        // dropped): only keys start it.
        let Some(key) = key else {
            // One relaxed load when the global bucket has no hole.
            if inner.holes.any_global() {
                let spot = inner
                    .holes
                    .reserve_global(&inner.global, now, params, &request);
                return decided_at(spot, now, params, &request);
            }
            return update(&inner.global, now, params, &request);
        };
        self.reserve_keyed(key, now, params, request)
    }

    /// [`reserve_now`](Self::reserve_now) for a key: apart, so that the
    /// global bucket's path does not pay for the map's stack frame.
    #[inline]
    fn reserve_keyed<Q>(
        &self,
        key: &Q,
        now: u64,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        if !self.inner.sweeper_started.load(Ordering::Relaxed) {
            self.start_sweeper();
        }
        let inner = &*self.inner;
        if let Some(tat) = inner.tats.get(key) {
            // One relaxed load when no key has a hole.
            if inner.holes.any_keyed() {
                let spot = inner.holes.reserve_keyed(&tat, key, now, params, &request);
                return decided_at(spot, now, params, &request);
            }
            return update(&tat, now, params, &request);
        }
        inner.holes.forget_for_new_key(key);
        if let Some(bound) = &inner.bound {
            return bound.insert(&inner.tats, key, now, params, &request);
        }
        // A new key: decide before inserting, so a refusal stores nothing.
        match inner.tats.entry(key.to_key()) {
            Entry::Occupied(tat) => update(tat.get(), now, params, &request),
            Entry::Vacant(slot) => {
                let reserved = gcra::reserve(None, now, params, &request)?;
                if let Some(new_tat) = reserved.new_tat {
                    slot.insert(AtomicU64::new(new_tat));
                }
                Ok(reserved.admission)
            }
        }
    }
}
