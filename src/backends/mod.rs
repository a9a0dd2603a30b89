//! Where TATs live: the [`FreqLimitBackend`] trait and its implementations.
//!
//! A backend stores one theoretical arrival time (TAT) per key and updates it
//! atomically with [`gcra::reserve`](crate::gcra::reserve); the arithmetic is the
//! same everywhere, only the storage differs.
//!
//! * [`memory::InMemoryBackend`]: one process, lock-free per key, the default.
//! * `redis::RedisBackend` (feature `redis`): one limit shared by processes and
//!   hosts through Redis, Valkey or a Redis Cluster.

pub mod compound;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
mod refund;

pub(crate) use refund::{HoldsBackend, RefundOnDrop};

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Timestamp};

use crate::decision::{Admission, Reserve, Status};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::params::FreqLimitParams;

/// A store of per-key GCRA state: the one seam between the limiter and where its
/// state lives.
///
/// [`reserve`](Self::reserve) must, atomically for `key`: load the key's TAT
/// (none for a new key), run [`gcra::reserve`](crate::gcra::reserve), and store the
/// new TAT it returns, storing nothing when it returns an error. Concurrent calls
/// on one key must behave as if made one after the other: no update lost, no slot
/// given twice.
///
/// The reservation future is a named associated type, `Send` and `'static` (no
/// boxing, and a Tower response future can hold it), so an in-process backend
/// can answer with [`std::future::Ready`].
///
/// # Example: a backend of one's own
///
/// ```
/// use std::borrow::Borrow;
/// use std::collections::HashMap;
/// use std::future::{ready, Future, Ready};
/// use std::sync::Mutex;
/// use tower_freqlimit::backends::{BorrowedKey, FreqLimitBackend};
/// use tower_freqlimit::clock::Timestamp;
/// use tower_freqlimit::{gcra, Admission, BackendError, FreqLimitError, FreqLimitParams, Reserve};
///
/// /// A deliberately simple backend: one mutex around a map (`None`: the global bucket).
/// struct MutexBackend {
///     tats: Mutex<HashMap<String, u64>>,
///     global: Mutex<Option<u64>>,
/// }
///
/// impl FreqLimitBackend for MutexBackend {
///     type Key = String;
///     type ReserveFuture = Ready<Result<Admission, FreqLimitError>>;
///
///     fn reserve<Q>(
///         &self,
///         key: Option<&Q>,
///         now: Timestamp,
///         params: &FreqLimitParams,
///         request: Reserve,
///     ) -> Self::ReserveFuture
///     where
///         String: Borrow<Q>,
///         Q: BorrowedKey<String> + ?Sized,
///     {
///         let now = now.as_nanos();
///         let Some(key) = key else {
///             let mut global = self.global.lock().unwrap();
///             let result = gcra::reserve(*global, now, params, &request).map(|r| {
///                 *global = r.new_tat.or(*global);
///                 r.admission
///             });
///             return ready(result.map_err(FreqLimitError::from));
///         };
///         let mut tats = self.tats.lock().unwrap();
///         let result = gcra::reserve(tats.get(key).copied(), now, params, &request).map(|r| {
///             if let Some(tat) = r.new_tat {
///                 tats.insert(key.to_key(), tat);
///             }
///             r.admission
///         });
///         ready(result.map_err(FreqLimitError::from))
///     }
///
///     fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
///         self.tats.lock().unwrap().clear();
///         *self.global.lock().unwrap() = None;
///         ready(Ok(()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limiter = tower_freqlimit::FreqLimit::new(
///     FreqLimitParams::per_second(1),
///     MutexBackend { tats: Mutex::default(), global: Mutex::default() },
/// );
/// assert!(limiter.try_acquire("chat:42").await.is_ok());
/// assert!(limiter.try_acquire("chat:42").await.is_err());
/// assert!(limiter.try_acquire(None).await.is_ok());
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a rate-limit backend",
    label = "not a `FreqLimitBackend`",
    note = "use `InMemoryBackend::new()` (keys of any `Hash + Eq + Clone` type), `InMemoryBackend::global()` (one global bucket), or `RedisBackend` (feature `redis`)"
)]
pub trait FreqLimitBackend: Send + Sync {
    /// The key type; `None` in [`reserve`](Self::reserve) names the one global
    /// bucket, which is distinct from every key. Lookups take the key or any
    /// form it [borrows](Borrow) as ([`BorrowedKey`]): `&str` for `String`.
    type Key: Hash + Eq + Clone + Send + Sync;

    /// What [`reserve`](Self::reserve) returns.
    type ReserveFuture: Future<Output = Result<Admission, FreqLimitError>> + Send + 'static;

    /// Reserves `request.cost` units for `key` at `now` under `params`.
    ///
    /// `key` is the key itself or a borrowed form of it (`&str` for a `String`
    /// key), as `HashMap::get` takes; a backend makes an owned key
    /// ([`BorrowedKey::to_key`]) only when it must store a new one.
    ///
    /// `now` is on the process-wide [`Timestamp`] scale; a backend with a clock
    /// of its own (a server's) may use that instead.
    ///
    /// Returns how long the caller must wait (it does not wait itself), or why the
    /// call was refused.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Rejected`] and [`FreqLimitError::CostExceedsCapacity`] as
    /// [`gcra::reserve`](crate::gcra::reserve) decides them (nothing is stored);
    /// [`FreqLimitError::Backend`] when the store fails.
    fn reserve<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Self::ReserveFuture
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized;

    /// Decides a reservation at once, without a future, when the backend can
    /// (its state is in this process); `None` means "ask [`reserve`](Self::reserve)".
    ///
    /// The Tower layer calls this first: an answer here lets it forward or refuse
    /// a request inside `call`, with a response future no bigger than the inner
    /// service's. When it returns `Some`, it must have done exactly what
    /// [`reserve`](Self::reserve) would have done. The default returns `None`, which
    /// is right for every remote backend.
    fn reserve_sync(
        &self,
        key: Option<&Self::Key>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Option<Result<Admission, FreqLimitError>> {
        let _ = (key, now, params, request);
        None
    }

    /// `key`'s state at `now` under `params`, consuming nothing: how many unit
    /// calls would pass at once, and when the bucket is full again.
    ///
    /// The default asks [`reserve`](Self::reserve) for a cost of 0 without a
    /// bound on the wait (decided as a unit call, storing nothing), so every
    /// backend that follows the trait's rules answers it; a new key is not
    /// stored.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Backend`] when the store fails, and also when a
    /// backend set to fail open could not ask its store: a status it did not
    /// read would be a guess.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::backends::FreqLimitBackend;
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let backend = InMemoryBackend::<String>::new();
    /// let params = FreqLimitParams::per_second(1).with_burst(5);
    /// let now = Timestamp::now();
    /// backend.reserve(Some("chat:42"), now, &params, Reserve::new().cost(2)).await?;
    /// let status = backend.status(Some("chat:42"), now, &params).await?;
    /// assert_eq!(status.remaining(), 3);
    /// assert_eq!(status.reset_after(), Duration::from_secs(2));
    /// // Asking again changes nothing.
    /// assert_eq!(backend.status(Some("chat:42"), now, &params).await?, status);
    /// # Ok(())
    /// # }
    /// ```
    fn status<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<Status, FreqLimitError>> + Send
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized,
    {
        let reserved = self.reserve(key, now, params, Reserve::new().cost(0));
        async move {
            let admission = reserved.await?;
            if admission.is_fail_open() {
                return Err(FreqLimitError::Backend(BackendError::new(
                    BackendErrorKind::Unavailable,
                    "the backend could not read the key's state (it failed open)",
                )));
            }
            Ok(Status::from(admission))
        }
    }

    /// Forgets every key (and resets the global bucket).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the store fails.
    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The clock of this backend's state: the time base that
    /// [`FreqLimit`](crate::FreqLimit) and [`FreqLimitLayer`](crate::FreqLimitLayer)
    /// read for each decision and time their waits on, and that the backend's
    /// own housekeeping (the in-memory sweeper) reads. One clock for all of
    /// them, so they never mix two time bases. The default is [`Clock::new`]:
    /// the time-stamp counter, or Tokio's clock with the `test-util` feature
    /// (see [`crate::clock`]).
    ///
    /// ```
    /// use tower_freqlimit::FreqLimitBackend;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Clock;
    ///
    /// assert_eq!(InMemoryBackend::<u32>::new().clock().is_fast(), Clock::new().is_fast());
    /// let tokio = InMemoryBackend::<u32>::builder().clock(Clock::tokio()).build();
    /// assert!(!tokio.clock().is_fast());
    /// ```
    fn clock(&self) -> Clock {
        Clock::new()
    }

    /// Pushes `key`'s schedule back: from `now`, no call for it is admitted
    /// within `hold`; after that, one call, then one every `T` (the burst
    /// refills as usual). What a limiter does when the server it paces
    /// requests to says "retry after `hold`" ([`crate::FreqLimit::hold`]).
    /// Atomic like [`reserve`](Self::reserve): the stored TAT becomes the later
    /// of itself and `now + hold + tau`, so a hold never shortens a debt.
    /// Returns whether the schedule moved.
    ///
    /// The future is `'static` (it owns what it needs), so a layer can keep
    /// it past the call that made it.
    ///
    /// Holes ([`gcra::holes`](crate::gcra::holes)) below the hold are
    /// forgotten. One gap remains: a wait reserved *before* the hold and
    /// abandoned *after* it gives its slot back as usual, and that slot may
    /// lie within the hold (at most one call per abandoned wait).
    ///
    /// The default refuses with a [`BackendError`] of kind
    /// [`Other`](BackendErrorKind::Other): a backend that cannot hold a key
    /// says so rather than ignoring the server.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Backend`] when the store fails (or, in memory, a new
    /// key finds a bounded table full).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::backends::FreqLimitBackend;
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let backend = InMemoryBackend::<String>::new();
    /// let params = FreqLimitParams::per_second(1);
    /// let now = Timestamp::now();
    /// assert!(backend.hold(Some("api"), now, Duration::from_secs(10), &params).await?);
    /// // A shorter hold moves nothing.
    /// assert!(!backend.hold(Some("api"), now, Duration::from_secs(3), &params).await?);
    /// assert_eq!(backend.status(Some("api"), now, &params).await?.retry_after(), Duration::from_secs(10));
    /// # Ok(())
    /// # }
    /// ```
    fn hold<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        hold: Duration,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<bool, FreqLimitError>> + Send + 'static
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized,
    {
        let _ = (key, now, hold, params);
        std::future::ready(Err(FreqLimitError::Backend(BackendError::new(
            BackendErrorKind::Other,
            "this backend cannot hold a key back (FreqLimitBackend::hold is not implemented)",
        ))))
    }

    /// Gives back the slot of a reservation whose caller went away before using
    /// it (a waiting request that was dropped), so it does not delay the next
    /// caller: the span of the key's TAT axis the reservation took
    /// ([`RefundToken`](crate::RefundToken), from
    /// [`Admission::refund_token`](crate::Admission::refund_token)) becomes
    /// free again, **whatever was reserved after it**. The key's last span
    /// lowers its TAT; an earlier one becomes a hole that later reservations
    /// take first (the rules of [`gcra::holes`](crate::gcra::holes)). Returns
    /// whether the slot was given back (for a remote backend: whether the
    /// refund was sent).
    ///
    /// It must be atomic with the key's reservations (no span given to two
    /// callers), and is called once per admission. It is called from `Drop`,
    /// so it must not block; a remote backend sends the refund in the
    /// background. The default does nothing: a backend without refunds keeps
    /// abandoned slots used.
    fn refund(&self, key: Option<&Self::Key>, admission: &Admission) -> bool {
        let _ = (key, admission);
        false
    }
}

/// A form a backend's key `K` can be looked up by: `K` itself, or what `K`
/// [borrows](Borrow) as (`str` for `String`, `[u8]` for `Vec<u8>`), exactly as
/// `HashMap::get` accepts. Implemented for every such type; there is nothing
/// to implement.
///
/// ```
/// use tower_freqlimit::backends::BorrowedKey;
///
/// // A `String` key looked up by `&str`: the owned key is made only to store a new key.
/// assert_eq!(BorrowedKey::<String>::to_key("chat:42"), String::from("chat:42"));
/// assert_eq!(BorrowedKey::<Vec<u8>>::to_key(&b"id"[..]), b"id".to_vec());
/// assert_eq!(BorrowedKey::<u64>::to_key(&7u64), 7);
/// ```
#[diagnostic::on_unimplemented(
    message = "a key of type `{K}` cannot be looked up by `{Self}`",
    label = "not a key of this limiter's backend",
    note = "a backend of `{K}` keys is looked up by `&{K}` or by what `{K}` borrows as (`&str` for `String`, `&[u8]` for `Vec<u8>`); `None` is the global bucket"
)]
pub trait BorrowedKey<K>: Hash + Eq {
    /// The owned key, made when a new key is stored.
    #[must_use]
    fn to_key(&self) -> K;
}

#[diagnostic::do_not_recommend]
impl<K, Q> BorrowedKey<K> for Q
where
    K: Borrow<Q>,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    #[inline]
    fn to_key(&self) -> K {
        self.to_owned()
    }
}

/// The key of a backend that has only the global bucket
/// ([`InMemoryBackend::global`](memory::InMemoryBackend::global)): it has no
/// values, so the only key such a limiter takes is `None`.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
/// let limiter = FreqLimit::new(FreqLimitParams::per_second(30), InMemoryBackend::global());
/// limiter.acquire(None).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoKey {}

/// A shared backend is a backend.
impl<B: FreqLimitBackend + ?Sized> FreqLimitBackend for Arc<B> {
    type Key = B::Key;
    type ReserveFuture = B::ReserveFuture;

    fn reserve<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Self::ReserveFuture
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized,
    {
        (**self).reserve(key, now, params, request)
    }

    fn reserve_sync(
        &self,
        key: Option<&Self::Key>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Option<Result<Admission, FreqLimitError>> {
        (**self).reserve_sync(key, now, params, request)
    }

    fn status<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<Status, FreqLimitError>> + Send
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized,
    {
        (**self).status(key, now, params)
    }

    fn hold<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        hold: Duration,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<bool, FreqLimitError>> + Send + 'static
    where
        Self::Key: Borrow<Q>,
        Q: BorrowedKey<Self::Key> + ?Sized,
    {
        (**self).hold(key, now, hold, params)
    }

    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).clear()
    }

    fn clock(&self) -> Clock {
        (**self).clock()
    }

    fn refund(&self, key: Option<&Self::Key>, admission: &Admission) -> bool {
        (**self).refund(key, admission)
    }
}
