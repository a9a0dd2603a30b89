//! [`CompoundLimit`]: several limits (per chat, per group, global), one
//! decision.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::compound::{CompoundAdmission, CompoundBackend, Part};
use crate::clock::Clock;
use crate::decision::Reserve;
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::compound::MAX_LIMITS;
use crate::params::FreqLimitParams;

/// Several limits that decide each call together: a chat API's one message
/// per second per chat, twenty per minute per group and thirty per second
/// for the whole bot, as one reservation.
///
/// Stacking limiters (or layers) decides the limits one after the other:
/// the first is charged even when the second refuses, the waits add up
/// instead of overlapping, and a call given up between the two leaves a slot
/// taken. A compound decides them at once
/// ([`gcra::compound`](crate::gcra::compound)):
///
/// * **Reject or bounded wait: all or nothing.** A refusal consumes nothing
///   in any limit; its [`Rejection`](crate::Rejection) names the limit that
///   refused ([`limit`](crate::Rejection::limit)) and its `retry_after` is
///   when every limit would admit the call.
/// * **Wait**: the call runs at the earliest instant every limit admits it,
///   and each limit is charged at that instant (never earlier), so the waits
///   overlap.
/// * **Cancellation**: a waiting call dropped gives its slot back in every
///   limit.
///
/// Each call passes one key per limit, in the order of the
/// [`limit`](Self::limit) calls: `None` is the backend's global bucket. The
/// limits share the backend (and its key type), so two limits must never
/// name the same key: give each its own (an enum with a variant per limit,
/// or a prefix), or the call fails with an error that says which two.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// enum Scope {
///     Chat(u64),
///     Group(u64),
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
/// let limits = CompoundLimit::new(InMemoryBackend::<Scope>::new())
///     .limit("per-chat", FreqLimitParams::per_second(1))
///     .limit("per-group", FreqLimitParams::per_minute(20).with_burst(3))
///     .limit("global", FreqLimitParams::per_second(30));
///
/// let (chat, group) = (Scope::Chat(42), Scope::Group(7));
/// let first = limits.acquire(&[Some(&chat), Some(&group), None]).await?;
/// assert!(first.delay().is_zero());
/// // The chat's one per second decides the next message's wait.
/// let second = limits.acquire(&[Some(&chat), Some(&group), None]).await?;
/// assert_eq!(second.delay(), Duration::from_secs(1));
/// assert_eq!(limits.name(second.decided_by()), Some("per-chat"));
/// # Ok(())
/// # }
/// ```
///
/// # Tiers
///
/// Compounds on clones of one backend share its buckets, so a tier (a paid
/// user's higher per-user limit under the same global limit) is a compound
/// of its own; the Tower layer picks one per request with
/// [`params_for`](crate::CompoundLimitLayer::params_for).
///
/// ```
/// # use tower_freqlimit::backends::memory::InMemoryBackend;
/// # use tower_freqlimit::{CompoundLimit, FreqLimitParams};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let backend = InMemoryBackend::<u64>::new();
/// let global = FreqLimitParams::per_minute(100).with_burst(100);
/// let free = CompoundLimit::new(backend.clone())
///     .limit("per-user", FreqLimitParams::per_second(1))
///     .limit("global", global);
/// let paid = CompoundLimit::new(backend)
///     .limit("per-user", FreqLimitParams::per_second(10).with_burst(10))
///     .limit("global", global);
/// free.try_acquire(&[Some(&1), None]).await.unwrap();
/// paid.try_acquire(&[Some(&2), None]).await.unwrap();
/// // Both calls count in the one global bucket.
/// assert_eq!(free.status(&[Some(&3), None]).await.unwrap().parts()[1].remaining(), 98);
/// # }
/// ```
pub struct CompoundLimit<B> {
    backend: B,
    names: Arc<[Cow<'static, str>]>,
    // Apart from the names, so that a request decided with the compound's own
    // params can hand them on as one slice.
    params: Arc<[FreqLimitParams]>,
    clock: Clock,
}

impl<B: Clone> Clone for CompoundLimit<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            names: Arc::clone(&self.names),
            params: Arc::clone(&self.params),
            clock: self.clock.clone(),
        }
    }
}

impl<B> fmt::Debug for CompoundLimit<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits: Vec<_> = self.names.iter().zip(self.params.iter()).collect();
        f.debug_struct("CompoundLimit")
            .field("limits", &limits)
            .finish_non_exhaustive()
    }
}

impl<B: CompoundBackend> CompoundLimit<B> {
    /// A compound with no limit yet, on `backend`: add them with
    /// [`limit`](Self::limit).
    ///
    /// # Panics
    ///
    /// When the backend cannot decide compounds as it was built
    /// ([`CompoundBackend::check_compound`]), with its message;
    /// [`try_new`](Self::try_new) returns the error instead.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::CompoundLimit;
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<String>::new());
    /// assert_eq!(limits.len(), 0);
    /// ```
    #[must_use]
    pub fn new(backend: B) -> Self {
        match Self::try_new(backend) {
            Ok(limits) => limits,
            Err(err) => panic!("this backend cannot decide compound limits: {err}"),
        }
    }

    /// [`new`](Self::new), with the backend's refusal as an error.
    ///
    /// # Errors
    ///
    /// What [`CompoundBackend::check_compound`] says.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::CompoundLimit;
    ///
    /// assert!(CompoundLimit::try_new(InMemoryBackend::<String>::new()).is_ok());
    /// ```
    pub fn try_new(backend: B) -> Result<Self, BackendError> {
        backend.check_compound()?;
        Ok(Self {
            clock: backend.clock(),
            backend,
            names: Arc::new([]),
            params: Arc::new([]),
        })
    }

    /// Adds a limit, named for headers, metrics and messages (`"per-chat"`).
    /// Calls then pass its key in this position.
    ///
    /// # Panics
    ///
    /// When the compound has [`MAX_LIMITS`] (4) limits already, or one of
    /// this name: both are mistakes in the setup, not in a request.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<String>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(5))
    ///     .limit("global", FreqLimitParams::per_second(100));
    /// assert_eq!(limits.len(), 2);
    /// assert_eq!(limits.name(1), Some("global"));
    /// ```
    #[must_use]
    pub fn limit(mut self, name: impl Into<Cow<'static, str>>, params: FreqLimitParams) -> Self {
        let name = name.into();
        assert!(
            self.names.len() < MAX_LIMITS,
            "a compound has at most {MAX_LIMITS} limits; `{name}` would be one more"
        );
        assert!(
            self.names.iter().all(|other| *other != name),
            "the compound has a limit named `{name}` already"
        );
        let mut names = self.names.to_vec();
        names.push(name);
        self.names = names.into();
        let mut all = self.params.to_vec();
        all.push(params);
        self.params = all.into();
        self
    }

    /// The number of limits.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    /// let one = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("only", FreqLimitParams::per_second(1));
    /// assert_eq!(one.len(), 1);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether no limit was added (every call would then fail).
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::CompoundLimit;
    /// assert!(CompoundLimit::new(InMemoryBackend::<u8>::new()).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The name of the limit at `index`.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    /// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("global", FreqLimitParams::per_second(1));
    /// assert_eq!(limits.name(0), Some("global"));
    /// assert_eq!(limits.name(1), None);
    /// ```
    #[must_use]
    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(|name| &**name)
    }

    /// The params of the limit at `index`.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    /// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("global", FreqLimitParams::per_second(1));
    /// assert_eq!(limits.params(0), Some(&FreqLimitParams::per_second(1)));
    /// ```
    #[must_use]
    pub fn params(&self, index: usize) -> Option<&FreqLimitParams> {
        self.params.get(index)
    }

    /// Every limit's params, in order.
    pub(crate) fn all_params(&self) -> &[FreqLimitParams] {
        &self.params
    }

    /// The backend.
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::CompoundLimit;
    /// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new());
    /// assert!(limits.backend().is_empty());
    /// ```
    #[must_use]
    pub const fn backend(&self) -> &B {
        &self.backend
    }

    /// The clock the calls read and wait on (the backend's).
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::CompoundLimit;
    /// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new());
    /// let _now = limits.clock().now();
    /// ```
    #[must_use]
    pub const fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Waits until every limit admits one call for `keys` (one per limit, in
    /// order; `None`: the global bucket), then returns.
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with).
    pub async fn acquire(
        &self,
        keys: &[Option<&B::Key>],
    ) -> Result<CompoundAdmission, FreqLimitError> {
        self.acquire_with(keys, Reserve::new()).await
    }

    /// One call if every limit admits it now; consumes nothing otherwise.
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with).
    ///
    /// ```
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limits = CompoundLimit::new(InMemoryBackend::<&str>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(1))
    ///     .limit("global", FreqLimitParams::per_hour(1_000).with_burst(1_000));
    /// assert!(limits.try_acquire(&[Some(&"ann"), None]).await.is_ok());
    /// let Err(FreqLimitError::Rejected(refused)) = limits.try_acquire(&[Some(&"ann"), None]).await else {
    ///     panic!("ann's second call in the same second");
    /// };
    /// assert_eq!(refused.limit(), 0);
    /// // The refusal took nothing from the global limit.
    /// assert_eq!(limits.status(&[Some(&"bob"), None]).await.unwrap().parts()[1].remaining(), 999);
    /// # }
    /// ```
    pub async fn try_acquire(
        &self,
        keys: &[Option<&B::Key>],
    ) -> Result<CompoundAdmission, FreqLimitError> {
        self.acquire_with(keys, Reserve::new().no_wait()).await
    }

    /// Like [`acquire`](Self::acquire), refusing (and consuming nothing)
    /// when the wait would exceed `max_wait`.
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with).
    pub async fn acquire_within(
        &self,
        keys: &[Option<&B::Key>],
        max_wait: Duration,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        self.acquire_with(keys, Reserve::new().max_wait(max_wait))
            .await
    }

    /// Reserves `request` (a cost, a bound on the wait) in every limit at
    /// once, then waits for the slot. Dropped while it waits, it gives the
    /// slot back in every limit.
    ///
    /// # Errors
    ///
    /// * [`FreqLimitError::Rejected`] when the wait would exceed `max_wait`:
    ///   nothing is consumed, and the rejection names the limit that refused.
    /// * [`FreqLimitError::CostExceedsCapacity`] when a limit can never admit
    ///   the cost within `max_wait`.
    /// * [`FreqLimitError::Backend`] when the backend fails, or of kind
    ///   [`Other`](BackendErrorKind::Other) when `keys` does not have one key
    ///   per limit or two limits name the same key.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitParams, Reserve};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let limits = CompoundLimit::new(InMemoryBackend::<&str>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(2).with_burst(4))
    ///     .limit("global", FreqLimitParams::per_second(10).with_burst(10));
    /// // A batch of 4 passes at once; the next unit waits for the user's refill.
    /// limits.acquire_with(&[Some(&"ann"), None], Reserve::new().cost(4)).await?;
    /// let next = limits.acquire_with(&[Some(&"ann"), None], Reserve::new()).await?;
    /// assert_eq!(next.delay(), Duration::from_millis(500));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_with(
        &self,
        keys: &[Option<&B::Key>],
        request: Reserve,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        let parts = self.parts(keys)?;
        let now = self.clock.now();
        let admission = self
            .backend
            .reserve_compound(&parts[..keys.len()], now, request)
            .await?;
        if !admission.delay().is_zero() {
            let mut unused = RefundAllOnDrop {
                backend: &self.backend,
                keys: std::array::from_fn(|i| keys.get(i).copied().flatten().cloned()),
                len: keys.len(),
                waiting: Some(admission),
            };
            self.clock.sleep_until(now + admission.delay()).await;
            unused.waiting = None;
        }
        Ok(admission)
    }

    /// Each limit's state for `keys` now, consuming nothing: a cost-0 call
    /// that does not wait. Its `delay` is how long a unit call would wait.
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with), except rejections.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
    /// let limits = CompoundLimit::new(InMemoryBackend::<&str>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(1).with_burst(3))
    ///     .limit("global", FreqLimitParams::per_second(100).with_burst(100));
    /// limits.acquire(&[Some(&"ann"), None]).await?;
    /// let status = limits.status(&[Some(&"ann"), None]).await?;
    /// assert_eq!((status.parts()[0].remaining(), status.parts()[1].remaining()), (2, 99));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(
        &self,
        keys: &[Option<&B::Key>],
    ) -> Result<CompoundAdmission, FreqLimitError> {
        let parts = self.parts(keys)?;
        let now = self.clock.now();
        self.backend
            .reserve_compound(&parts[..keys.len()], now, Reserve::new().cost(0))
            .await
    }

    /// One part per limit for `keys`, or an error when the count is wrong.
    pub(crate) fn parts<'a>(
        &'a self,
        keys: &[Option<&'a B::Key>],
    ) -> Result<[Part<'a, B::Key>; MAX_LIMITS], FreqLimitError> {
        self.parts_with(keys, &self.params)
    }

    /// [`parts`](Self::parts) under `params` (one per limit, in order)
    /// instead of the limits' own: a request of a tier.
    pub(crate) fn parts_with<'a>(
        &self,
        keys: &[Option<&'a B::Key>],
        params: &'a [FreqLimitParams],
    ) -> Result<[Part<'a, B::Key>; MAX_LIMITS], FreqLimitError> {
        let n = self.params.len();
        let (Some(first), true) = (params.first(), keys.len() == n && params.len() == n) else {
            return Err(FreqLimitError::Backend(BackendError::new(
                BackendErrorKind::Other,
                format!(
                    "{} keys for a compound of {} limits (one key per limit, in order; None for the global bucket)",
                    keys.len(),
                    n
                ),
            )));
        };
        let mut parts = [Part::new(None, first); MAX_LIMITS];
        for (part, (key, params)) in parts.iter_mut().zip(keys.iter().zip(params)) {
            *part = Part::new(*key, params);
        }
        Ok(parts)
    }
}

/// A waiting compound's slots, given back in every limit if the wait is
/// dropped.
struct RefundAllOnDrop<'a, B: CompoundBackend> {
    backend: &'a B,
    keys: [Option<B::Key>; MAX_LIMITS],
    len: usize,
    waiting: Option<CompoundAdmission>,
}

impl<B: CompoundBackend> Drop for RefundAllOnDrop<'_, B> {
    fn drop(&mut self) {
        if let Some(admission) = self.waiting.take() {
            let keys: [Option<&B::Key>; MAX_LIMITS] =
                std::array::from_fn(|i| self.keys[i].as_ref());
            self.backend.refund_compound(&keys[..self.len], &admission);
        }
    }
}
