//! [`FreqLimit`]: await a slot for a key, outside of any Tower stack.

use std::borrow::Borrow;
use std::time::Duration;

use crate::backends::{BorrowedKey, FreqLimitBackend, RefundOnDrop};
use crate::clock::Clock;
use crate::decision::{Admission, Reserve, Status};
use crate::error::{BackendError, FreqLimitError};
use crate::metrics::Reporter;
use crate::params::FreqLimitParams;

/// A rate limiter: one [`FreqLimitParams`] applied per key over a
/// [`FreqLimitBackend`].
///
/// Each method reads the time once (from the backend's clock: with the
/// `test-util` feature Tokio's, so a paused test clock is followed exactly), asks the backend for a reservation, and, if
/// the call must wait, sleeps until its slot. This is `aiofreqlimit`'s
/// `async with limiter.resource(key)`.
///
/// | method | waits | when over the limit |
/// |---|---|---|
/// | [`acquire`](Self::acquire) | as long as needed | waits |
/// | [`acquire_within`](Self::acquire_within) | up to `max_wait` | [`FreqLimitError::Rejected`] |
/// | [`try_acquire`](Self::try_acquire) | never | [`FreqLimitError::Rejected`] |
/// | [`acquire_with`](Self::acquire_with) | as its [`Reserve`] says, with a cost | either |
///
/// A rejected call consumes nothing. The key `None` is one global bucket. A future
/// dropped while it sleeps for its slot (a timeout fired, the caller gave up) gives
/// the slot back if the backend [supports refunds](FreqLimitBackend::refund) (both
/// provided backends do), even when later reservations were made on the key: the
/// next caller takes it first. Waiters that all hang up leave the key as they
/// found it.
///
/// Decisions are exact to the nanosecond; the sleep is Tokio's, whose timer fires
/// on the first millisecond tick at or after the slot, never before it. Each slot
/// is computed from the key's TAT, not from when the previous sleep ended, so that
/// rounding never accumulates.
///
/// `FreqLimit` is `Clone` when its backend is ([`InMemoryBackend`] is); clones share
/// the state.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::new());
/// let start = Instant::now();
/// for _ in 0..3 {
///     limiter.acquire(&"chat:42").await.unwrap();
/// }
/// // The first call passed at once, the next two a second apart.
/// assert_eq!(start.elapsed(), Duration::from_secs(2));
/// # }
/// ```
///
/// [`InMemoryBackend`]: crate::backends::memory::InMemoryBackend
#[derive(Debug, Clone)]
pub struct FreqLimit<B> {
    params: FreqLimitParams,
    backend: B,
    clock: Clock,
    reporter: Reporter,
}

impl<B: FreqLimitBackend> FreqLimit<B> {
    /// A limiter applying `params` to every key of `backend`.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimit, FreqLimitParams};
    ///
    /// let limiter = FreqLimit::new(FreqLimitParams::per_minute(20), InMemoryBackend::<i64>::new());
    /// assert_eq!(limiter.params().limit(), 20);
    /// ```
    pub fn new(params: FreqLimitParams, backend: B) -> Self {
        Self {
            params,
            clock: backend.clock(),
            backend,
            reporter: Reporter::default(),
        }
    }

    /// The clock the limiter reads: its backend's
    /// ([`FreqLimitBackend::clock`]), so that decisions, waits and the
    /// backend's housekeeping share one time base. To choose another, give it
    /// to the backend (for example
    /// [`InMemoryBackendBuilder::clock`](crate::backends::memory::InMemoryBackendBuilder::clock)).
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Clock;
    /// use tower_freqlimit::{FreqLimit, FreqLimitParams};
    ///
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(1000), InMemoryBackend::<u64>::new());
    /// // The time-stamp counter, or Tokio's clock with the `test-util` feature.
    /// assert_eq!(limiter.clock().is_fast(), Clock::new().is_fast());
    /// ```
    pub const fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Names the limiter: the `limiter` label of its metrics (feature
    /// `metrics`, see [`crate::metrics`]). The default is `"default"`.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitParams};
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u8>::new())
    ///     .name("per-chat");
    /// assert!(format!("{limiter:?}").contains("per-chat"));
    /// ```
    #[must_use]
    pub fn name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.reporter = Reporter::named(name.into());
        self
    }

    /// The params applied to every key.
    pub const fn params(&self) -> &FreqLimitParams {
        &self.params
    }

    /// The backend holding the state.
    pub const fn backend(&self) -> &B {
        &self.backend
    }

    /// Waits for `key`'s next slot, however long that takes.
    ///
    /// Returns once the slot has come; [`Admission::delay`] tells how long that was.
    ///
    /// # Errors
    ///
    /// Only [`FreqLimitError::Backend`], when the backend fails.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(2), InMemoryBackend::new());
    /// limiter.acquire(&1u8).await.unwrap();
    /// let second = limiter.acquire(&1u8).await.unwrap();
    /// assert_eq!(second.delay().as_millis(), 500);
    /// # }
    /// ```
    pub async fn acquire<A>(&self, key: A) -> Result<Admission, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        self.acquire_with(key, Reserve::new()).await
    }

    /// Admits the call only if `key` has a slot free right now; never waits.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Rejected`] with the time to retry after, when the key is
    /// over its limit (nothing is consumed); [`FreqLimitError::Backend`] when the
    /// backend fails.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limiter = FreqLimit::new(
    ///     FreqLimitParams::per_second(1).with_burst(2),
    ///     InMemoryBackend::<u32>::new(),
    /// );
    /// assert!(limiter.try_acquire(&1).await.is_ok());
    /// assert!(limiter.try_acquire(&1).await.is_ok());
    /// assert!(limiter.try_acquire(&1).await.is_err());
    /// assert!(limiter.try_acquire(&2).await.is_ok()); // keys are independent
    /// # }
    /// ```
    pub async fn try_acquire<A>(&self, key: A) -> Result<Admission, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        self.acquire_with(key, Reserve::new().no_wait()).await
    }

    /// Waits for `key`'s next slot if it comes within `max_wait`; otherwise
    /// returns at once, having consumed nothing.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Rejected`] when the slot is further than `max_wait` away;
    /// [`FreqLimitError::Backend`] when the backend fails.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u32>::new());
    /// let patience = Duration::from_millis(1500);
    /// limiter.acquire_within(&1, patience).await.unwrap(); // at once
    /// limiter.acquire_within(&1, patience).await.unwrap(); // after 1 s
    /// // The next slot is 1 s away again: within patience.
    /// limiter.acquire_within(&1, patience).await.unwrap();
    /// let err = limiter.acquire_within(&1, Duration::from_millis(10)).await.unwrap_err();
    /// assert!(matches!(err, FreqLimitError::Rejected(_)));
    /// # }
    /// ```
    pub async fn acquire_within<A>(
        &self,
        key: A,
        max_wait: Duration,
    ) -> Result<Admission, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        self.acquire_with(key, Reserve::new().max_wait(max_wait))
            .await
    }

    /// The general form: reserve `request`'s cost for `key`, waiting as
    /// `request` allows.
    ///
    /// A cost that could never be admitted within `request`'s `max_wait` is refused
    /// before the backend is asked.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Rejected`], [`FreqLimitError::CostExceedsCapacity`] or
    /// [`FreqLimitError::Backend`].
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams, Reserve};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limiter = FreqLimit::new(
    ///     FreqLimitParams::per_second(10).with_burst(10),
    ///     InMemoryBackend::<&str>::new(),
    /// );
    /// // A batch of 8 costs 8 units; 2 remain.
    /// let batch = limiter.acquire_with(&"tenant", Reserve::new().cost(8).no_wait()).await.unwrap();
    /// assert_eq!(batch.remaining(), 2);
    /// // More than the burst can never pass without waiting.
    /// let err = limiter.acquire_with(&"tenant", Reserve::new().cost(11).no_wait()).await.unwrap_err();
    /// assert_eq!(err, FreqLimitError::CostExceedsCapacity { cost: 11, max_cost: 10 });
    /// # }
    /// ```
    pub async fn acquire_with<A>(
        &self,
        key: A,
        request: Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        self.acquire_under(key.lookup(), &self.params, request)
            .await
    }

    /// [`acquire_with`](Self::acquire_with) under `params` instead of the
    /// limiter's own: per-request params, as the layer and the reqwest
    /// middleware give them.
    pub(crate) async fn acquire_under<Q>(
        &self,
        key: Option<&Q>,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        B::Key: Borrow<Q>,
        Q: BorrowedKey<B::Key> + ?Sized,
    {
        if let Some(refusal) = request.impossible_under(params) {
            let refusal = FreqLimitError::from(refusal);
            self.reporter.refused(&refusal);
            return Err(refusal);
        }
        let now = self.clock.now();
        let reserved = self.backend.reserve(key, now, params, request).await;
        let admission = match reserved {
            Ok(admission) => {
                self.reporter.admitted(&admission);
                admission
            }
            Err(refusal) => {
                self.reporter.refused(&refusal);
                return Err(refusal);
            }
        };
        if !admission.delay().is_zero() {
            // An owned key only for a call that waits (it sleeps anyway), for
            // the refund if the wait is given up.
            let mut unused = RefundOnDrop::new(&self.backend, key.map(BorrowedKey::to_key));
            unused.waiting(admission);
            self.clock.sleep_until(now + admission.delay()).await;
            unused.used();
        }
        Ok(admission)
    }

    /// `key`'s state now, consuming nothing: the unit calls that would pass at
    /// once ([`Status::remaining`]), when the bucket is full again
    /// ([`Status::reset_after`]) and how long a unit call would wait
    /// ([`Status::retry_after`]). Not counted in the metrics: it admits
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Backend`] when the backend fails (see
    /// [`FreqLimitBackend::status`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimit, FreqLimitParams};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// tokio::time::pause();
    /// let limiter = FreqLimit::new(
    ///     FreqLimitParams::per_minute(6).with_burst(2),
    ///     InMemoryBackend::<String>::new(),
    /// );
    /// assert_eq!(limiter.status("chat:42").await?.remaining(), 2);
    /// limiter.try_acquire("chat:42").await?;
    /// limiter.try_acquire("chat:42").await?;
    /// let status = limiter.status("chat:42").await?;
    /// assert_eq!(status.remaining(), 0);
    /// assert_eq!(status.retry_after(), Duration::from_secs(10));
    /// assert_eq!(status.reset_after(), Duration::from_secs(20));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status<A>(&self, key: A) -> Result<Status, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        let now = self.clock.now();
        self.backend.status(key.lookup(), now, &self.params).await
    }

    /// Holds `key` back: no call for it is admitted within `hold` from now;
    /// then one, then one every `T`. For when the server being paced says to
    /// slow down (a `429` with `Retry-After`, a chat API's `retry_after`
    /// field): [`learn::Learner`](crate::learn::Learner) reads the standard
    /// headers. With a shared backend (Redis) every process holds the key at
    /// once. A hold never shortens what the key already owes. Returns whether
    /// the key's schedule moved.
    ///
    /// # Errors
    ///
    /// [`FreqLimitError::Backend`] when the backend fails or cannot hold keys
    /// (see [`FreqLimitBackend::hold`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimit, FreqLimitParams};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(30), InMemoryBackend::<i64>::new());
    /// let chat = -100_123_i64;
    /// // The API answered `{"ok": false, "parameters": {"retry_after": 5}}`.
    /// limiter.hold(&chat, Duration::from_secs(5)).await?;
    /// let start = tokio::time::Instant::now();
    /// limiter.acquire(&chat).await?;
    /// assert_eq!(start.elapsed(), Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn hold<A>(&self, key: A, hold: Duration) -> Result<bool, FreqLimitError>
    where
        A: KeyArg<B::Key>,
        B::Key: Borrow<A::Lookup>,
    {
        self.hold_under(key.lookup(), &self.params, hold).await
    }

    /// [`hold`](Self::hold) under per-request `params`.
    pub(crate) async fn hold_under<Q>(
        &self,
        key: Option<&Q>,
        params: &FreqLimitParams,
        hold: Duration,
    ) -> Result<bool, FreqLimitError>
    where
        B::Key: Borrow<Q>,
        Q: BorrowedKey<B::Key> + ?Sized,
    {
        let now = self.clock.now();
        self.backend.hold(key, now, hold, params).await
    }

    /// Forgets every key's state.
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the backend fails.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{FreqLimit, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limiter = FreqLimit::new(FreqLimitParams::per_hour(1), InMemoryBackend::<u8>::new());
    /// limiter.try_acquire(&0).await.unwrap();
    /// limiter.clear().await.unwrap();
    /// assert!(limiter.try_acquire(&0).await.is_ok());
    /// # }
    /// ```
    pub async fn clear(&self) -> Result<(), BackendError> {
        self.backend.clear().await
    }
}

/// A key as [`FreqLimit`]'s methods take it: `&key`, a borrowed form of the
/// backend's key (`"chat:42"` for `String` keys, `&b"id"[..]` for `Vec<u8>`:
/// no allocation to look a known key up), or `None` for the global bucket.
///
/// Implemented for `&Q` where the key borrows as `Q` ([`BorrowedKey`]), and for
/// `Option<&K>`; there is nothing to implement.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
/// let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<String>::new());
/// let owned = String::from("chat:42");
/// limiter.acquire("chat:1").await?; // &str for a String key
/// limiter.acquire(&owned).await?; // &String
/// limiter.acquire(Some(&owned)).await?; // Option<&String>
/// limiter.acquire(None).await?; // the global bucket
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a key of a limiter whose keys are `{K}`",
    label = "not a key of this limiter",
    note = "pass `&key` (a `&{K}`), what `{K}` borrows as (`&str` for `String`, `&[u8]` for `Vec<u8>`), or `None` for the global bucket"
)]
pub trait KeyArg<K> {
    /// The form the backend is asked with.
    type Lookup: BorrowedKey<K> + ?Sized;

    /// The key to look up; `None` is the global bucket.
    fn lookup(&self) -> Option<&Self::Lookup>;
}

#[diagnostic::do_not_recommend]
impl<K, Q> KeyArg<K> for &Q
where
    K: Borrow<Q>,
    Q: BorrowedKey<K> + ?Sized,
{
    type Lookup = Q;

    #[inline]
    fn lookup(&self) -> Option<&Q> {
        Some(*self)
    }
}

#[diagnostic::do_not_recommend]
impl<K> KeyArg<K> for Option<&K>
where
    K: BorrowedKey<K>,
{
    type Lookup = K;

    #[inline]
    fn lookup(&self) -> Option<&K> {
        *self
    }
}
