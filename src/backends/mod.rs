//! Where TATs live: the [`FreqLimitBackend`] trait and its implementations.
//!
//! A backend stores one theoretical arrival time (TAT) per key and updates it
//! atomically with [`gcra::reserve`](crate::gcra::reserve); the arithmetic is the
//! same everywhere, only the storage differs.
//!
//! * [`memory::InMemoryBackend`]: one process, lock-free per key, the default.
//! * `redis::RedisBackend` (feature `redis`): one limit shared by processes and
//!   hosts through Redis, Valkey or a Redis Cluster.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::Future;
use std::sync::Arc;

use crate::clock::Timestamp;

use crate::error::{BackendError, FreqLimitError};
use crate::gcra::{Admission, Reserve};
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
/// use std::collections::HashMap;
/// use std::future::{ready, Future, Ready};
/// use std::sync::Mutex;
/// use tower_freqlimit::backends::FreqLimitBackend;
/// use tower_freqlimit::clock::Timestamp;
/// use tower_freqlimit::{gcra, Admission, BackendError, FreqLimitError, FreqLimitParams, Reserve};
///
/// /// A deliberately simple backend: one mutex around a map.
/// struct MutexBackend {
///     tats: Mutex<HashMap<Option<String>, u64>>,
/// }
///
/// impl FreqLimitBackend for MutexBackend {
///     type Key = String;
///     type ReserveFuture = Ready<Result<Admission, FreqLimitError>>;
///
///     fn reserve(
///         &self,
///         key: Option<&String>,
///         now: Timestamp,
///         params: &FreqLimitParams,
///         request: Reserve,
///     ) -> Self::ReserveFuture {
///         let now = now.as_nanos();
///         let mut tats = self.tats.lock().unwrap();
///         let key = key.cloned();
///         let result = gcra::reserve(tats.get(&key).copied(), now, params, &request).map(|r| {
///             if let Some(tat) = r.new_tat {
///                 tats.insert(key, tat);
///             }
///             r.admission
///         });
///         ready(result)
///     }
///
///     fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
///         self.tats.lock().unwrap().clear();
///         ready(Ok(()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limiter = tower_freqlimit::FreqLimit::new(
///     FreqLimitParams::per_second(1),
///     MutexBackend { tats: Mutex::default() },
/// );
/// assert!(limiter.try_acquire(&"chat:42".to_string()).await.is_ok());
/// assert!(limiter.try_acquire(&"chat:42".to_string()).await.is_err());
/// # }
/// ```
pub trait FreqLimitBackend: Send + Sync {
    /// The key type; `None` in [`reserve`](Self::reserve) names the one global
    /// bucket, which is distinct from every key.
    type Key: ?Sized + Send + Sync;

    /// What [`reserve`](Self::reserve) returns.
    type ReserveFuture: Future<Output = Result<Admission, FreqLimitError>> + Send + 'static;

    /// Reserves `request.cost` units for `key` at `now` under `params`.
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
    fn reserve(
        &self,
        key: Option<&Self::Key>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Self::ReserveFuture;

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

    /// Forgets every key (and resets the global bucket).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the store fails.
    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whether [`refund`](Self::refund) can give slots back. `false` unless the
    /// backend says otherwise.
    fn supports_refund(&self) -> bool {
        false
    }

    /// Gives back the slot of a reservation whose caller went away before using
    /// it (a waiting request that was dropped), so it does not delay the next
    /// caller. It must act only if no later reservation was made on `key` since:
    /// a compare-and-swap of the stored TAT from
    /// [`RefundToken::tat_after`](crate::gcra::RefundToken::tat_after) back to
    /// [`tat_before`](crate::gcra::RefundToken::tat_before). Returns whether the
    /// slot was given back.
    ///
    /// It is called from `Drop`, so it must not block; a remote backend sends the
    /// refund in the background. The default does nothing.
    fn refund(&self, key: Option<&Self::Key>, admission: &Admission) -> bool {
        let _ = (key, admission);
        false
    }
}

/// A shared backend is a backend.
impl<B: FreqLimitBackend + ?Sized> FreqLimitBackend for Arc<B> {
    type Key = B::Key;
    type ReserveFuture = B::ReserveFuture;

    fn reserve(
        &self,
        key: Option<&Self::Key>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Self::ReserveFuture {
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

    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).clear()
    }

    fn supports_refund(&self) -> bool {
        (**self).supports_refund()
    }

    fn refund(&self, key: Option<&Self::Key>, admission: &Admission) -> bool {
        (**self).refund(key, admission)
    }
}
