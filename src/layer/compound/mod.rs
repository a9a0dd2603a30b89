//! The Tower middleware for compound limits: [`CompoundLimitLayer`] wraps a
//! [`Service`](tower_service::Service) in a [`CompoundLimitService`] that
//! reserves one slot in several limits at once (per chat, per group, global;
//! a [`CompoundLimit`]) before forwarding each request.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::layer::compound::CompoundLimitLayer;
//! use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams};
//!
//! #[derive(Clone, PartialEq, Eq, Hash)]
//! enum Scope {
//!     User(u32),
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let limits = CompoundLimit::new(InMemoryBackend::<Scope>::new())
//!     .limit("per-user", FreqLimitParams::per_second(1))
//!     .limit("global", FreqLimitParams::per_second(100).with_burst(100));
//! // Requests are (user id, payload): one key per limit, in order; `None` is
//! // the global bucket.
//! let layer = CompoundLimitLayer::new(limits, |req: &(u32, &'static str)| {
//!     Ok([Some(Scope::User(req.0)), None])
//! })
//! .no_wait();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: (u32, &'static str)| async move { Ok::<_, Infallible>(req.1.len()) }));
//!
//! assert_eq!(svc.ready().await.unwrap().call((1, "hello")).await.unwrap(), 5);
//! let refused = svc.ready().await.unwrap().call((1, "again")).await.unwrap_err();
//! let Some(FreqLimitError::Rejected(rejection)) = refused.downcast_ref::<FreqLimitError>() else {
//!     panic!("user 1's second request in the same second");
//! };
//! assert_eq!(rejection.limit(), 0); // "per-user" refused
//! # }
//! ```

mod future;
mod params;
mod refusal;
mod service;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::policy::UnitCost;
use super::refusal::RefuseWithError;
use super::service::CloneInner;
use crate::backends::compound::CompoundBackend;
use crate::compound::CompoundLimit;
use crate::error::KeyNotFound;

pub use future::CompoundResponseFuture;
pub use params::{CompoundParamsFor, LimitParams};
pub use refusal::OnCompoundRefusal;
pub use service::CompoundLimitService;

/// Applies a [`CompoundLimit`] (several limits, one all-or-nothing decision)
/// to every request of the wrapped service.
///
/// * **Keys.** [`new`](Self::new) takes the compound and a closure
///   `Fn(&Req) -> Result<[Option<Key>; N], KeyNotFound>`: one key per limit,
///   in the order of the compound's [`limit`](CompoundLimit::limit) calls
///   (`None`: the backend's global bucket), in an array on the stack. An
///   `Err` refuses the request with
///   [`FreqLimitError::KeyNotFound`](crate::FreqLimitError::KeyNotFound)
///   (`400` or `500` over HTTP, as the [`KeyNotFound`] says).
/// * **Waiting.** By default a request waits until every limit admits it
///   (the waits overlap: it runs at the latest of the limits' instants), then
///   is forwarded. [`max_wait`](Self::max_wait) bounds the wait,
///   [`no_wait`](Self::no_wait) rejects at once; a rejected request consumes
///   nothing in any limit. A request dropped while it waits gives its slot
///   back in every limit.
/// * **Tiers.** [`params_for`](Self::params_for) gives a request params of
///   its own in some limits (a paid user's per-user limit), the others
///   keeping theirs.
/// * **Cost.** [`cost_for`](Self::cost_for) gives a request a weight, the
///   same in every limit.
/// * **Refusals** are errors by default ([`RefuseWithError`]);
///   [`on_refusal`](Self::on_refusal) takes any [`OnCompoundRefusal`]:
///   [`RefuseWith`](super::RefuseWith), or `HttpResponses` (feature `http`:
///   `429` with `Retry-After` and `RateLimit` headers naming each limit).
///
/// The layer and its services are `Clone` and share one compound.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::layer::compound::CompoundLimitLayer;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams, KeyNotFound};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// enum Scope { Chat(i64), Group(i64) }
/// struct Send { chat: Option<i64>, group: i64, messages: u32 }
///
/// let limits = CompoundLimit::new(InMemoryBackend::<Scope>::new())
///     .limit("per-chat", FreqLimitParams::per_second(1))
///     .limit("per-group", FreqLimitParams::per_minute(20).with_burst(3))
///     .limit("global", FreqLimitParams::per_second(30));
/// let layer = CompoundLimitLayer::new(limits, |req: &Send| {
///     let chat = req.chat.ok_or(KeyNotFound::client_omitted("no chat id"))?;
///     Ok([Some(Scope::Chat(chat)), Some(Scope::Group(req.group)), None])
/// })
/// .cost_for(|req: &Send| req.messages)
/// .max_wait(Duration::from_secs(5));
/// # let _ = layer;
/// ```
#[must_use]
pub struct CompoundLimitLayer<B, KF, PF = LimitParams, CF = UnitCost, H = RefuseWithError> {
    config: Arc<Config<B, KF, PF, CF, H>>,
}

/// What a layer and its services share.
#[derive(Clone)]
pub(crate) struct Config<B, KF, PF, CF, H> {
    pub(crate) limits: CompoundLimit<B>,
    pub(crate) keys: KF,
    pub(crate) params: PF,
    pub(crate) cost: CF,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) on_refusal: H,
}

impl<B, KF, PF, CF, H> Clone for CompoundLimitLayer<B, KF, PF, CF, H> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<B, KF, PF, CF, H> fmt::Debug for CompoundLimitLayer<B, KF, PF, CF, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompoundLimitLayer")
            .field("limits", &self.config.limits)
            .field("max_wait", &self.config.max_wait)
            .finish_non_exhaustive()
    }
}

impl<B: CompoundBackend, KF> CompoundLimitLayer<B, KF> {
    /// A layer that decides each request with `limits`, keyed by `keys`: one
    /// key per limit, in the limits' order (`None`: the global bucket). The
    /// request **waits** for its slot (see [`max_wait`](Self::max_wait)), each
    /// request costs 1, and refusals are errors.
    ///
    /// # Panics
    ///
    /// When `keys` returns an array of another length than the number of
    /// limits: a mistake in the setup, caught here rather than on every
    /// request.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(5))
    ///     .limit("global", FreqLimitParams::per_second(100));
    /// // Requests are user ids.
    /// let layer = CompoundLimitLayer::new(limits, |user: &u64| Ok([Some(*user), None]));
    /// assert_eq!(layer.limits().len(), 2);
    /// ```
    pub fn new<Req, const N: usize>(limits: CompoundLimit<B>, keys: KF) -> Self
    where
        KF: Fn(&Req) -> Result<[Option<B::Key>; N], KeyNotFound>,
    {
        assert_eq!(
            N,
            limits.len(),
            "the key function returns {N} keys for a compound of {} limits (one key per limit, in order)",
            limits.len()
        );
        Self {
            config: Arc::new(Config {
                limits,
                keys,
                params: LimitParams,
                cost: UnitCost,
                max_wait: None,
                on_refusal: RefuseWithError,
            }),
        }
    }
}

impl<B, KF, PF, CF, H> CompoundLimitLayer<B, KF, PF, CF, H>
where
    B: Clone,
    KF: Clone,
    PF: Clone,
    CF: Clone,
    H: Clone,
{
    /// Rebuilds the layer with another params hook, cost hook or refusal
    /// handler.
    fn map_config<PF2, CF2, H2>(
        self,
        params: impl FnOnce(PF) -> PF2,
        cost: impl FnOnce(CF) -> CF2,
        on_refusal: impl FnOnce(H) -> H2,
    ) -> CompoundLimitLayer<B, KF, PF2, CF2, H2> {
        // Moves the config out unless the layer was cloned.
        let config = Arc::unwrap_or_clone(self.config);
        CompoundLimitLayer {
            config: Arc::new(Config {
                limits: config.limits,
                keys: config.keys,
                params: params(config.params),
                cost: cost(config.cost),
                max_wait: config.max_wait,
                on_refusal: on_refusal(config.on_refusal),
            }),
        }
    }

    /// Gives each request params of its own in some limits (tiers), the
    /// others keeping their own; `params_for` is any [`CompoundParamsFor`],
    /// usually a closure `Fn(&Req) -> [Option<FreqLimitParams>; N]`: one
    /// entry per limit, in order, as many as the key function's keys (checked
    /// when this compiles), `None` for the limit's own params.
    ///
    /// The request is decided, refused (its `Rejection`'s figures), given
    /// back if dropped while it waits, and described in the HTTP headers
    /// (`RateLimit-Policy`) under its own params. The buckets are those of
    /// its keys, whatever its tier.
    ///
    /// ```
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::BoxError;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// struct Call { user: u64, paid: bool }
    ///
    /// const PAID: FreqLimitParams = FreqLimitParams::per_second(10).with_burst(10);
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(1)) // free users
    ///     .limit("global", FreqLimitParams::per_second(100).with_burst(100)); // everyone
    /// let layer = CompoundLimitLayer::new(limits, |call: &Call| Ok([Some(call.user), None]))
    ///     // Paid users: 10 a second each; the global limit stays.
    ///     .params_for(|call: &Call| [call.paid.then_some(PAID), None])
    ///     .no_wait();
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service(service_fn(|call: Call| async move { Ok::<_, BoxError>(call.user) }));
    ///
    /// for _ in 0..10 {
    ///     let paid = Call { user: 1, paid: true };
    ///     assert!(svc.ready().await.unwrap().call(paid).await.is_ok());
    /// }
    /// let free = || Call { user: 2, paid: false };
    /// assert!(svc.ready().await.unwrap().call(free()).await.is_ok());
    /// assert!(svc.ready().await.unwrap().call(free()).await.is_err()); // 1 a second
    /// # }
    /// ```
    pub fn params_for<Req, const N: usize, PF2>(
        self,
        params_for: PF2,
    ) -> CompoundLimitLayer<B, KF, PF2, CF, H>
    where
        B: CompoundBackend,
        KF: Fn(&Req) -> Result<[Option<B::Key>; N], KeyNotFound>,
        PF2: CompoundParamsFor<Req, N>,
    {
        self.map_config(|_| params_for, |c| c, |h| h)
    }

    /// Gives each request a cost (weight), charged in every limit: cost `n`
    /// is `n` unit calls at once. `cost_for` is any
    /// [`CostOf`](super::CostOf), usually a closure `Fn(&Req) -> u32`.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// struct Batch { user: u64, items: u32 }
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(5).with_burst(10))
    ///     .limit("global", FreqLimitParams::per_second(100).with_burst(100));
    /// let layer = CompoundLimitLayer::new(limits, |b: &Batch| Ok([Some(b.user), None]))
    ///     .cost_for(|b: &Batch| b.items);
    /// # let _ = layer;
    /// ```
    pub fn cost_for<CF2>(self, cost_for: CF2) -> CompoundLimitLayer<B, KF, PF, CF2, H> {
        self.map_config(|p| p, |_| cost_for, |h| h)
    }

    /// Turns refusals into responses or errors with `on_refusal` (see
    /// [`OnCompoundRefusal`]).
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::RefuseWith;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(5))
    ///     .limit("global", FreqLimitParams::per_second(100));
    /// let layer = CompoundLimitLayer::new(limits, |user: &u64| Ok([Some(*user), None]))
    ///     .on_refusal(RefuseWith(|err: FreqLimitError| format!("slow down: {err}")));
    /// # let _ = layer;
    /// ```
    pub fn on_refusal<H2>(self, on_refusal: H2) -> CompoundLimitLayer<B, KF, PF, CF, H2> {
        self.map_config(|p| p, |c| c, |_| on_refusal)
    }

    /// Changes the config in place unless the layer was cloned: services made
    /// before keep the config they were made with.
    fn edit(mut self, change: impl FnOnce(&mut Config<B, KF, PF, CF, H>)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Rejects a request (consuming nothing in any limit) instead of making
    /// it wait longer than `max_wait`; `Duration::ZERO` is
    /// [`no_wait`](Self::no_wait).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("per-user", FreqLimitParams::per_second(5));
    /// let layer = CompoundLimitLayer::new(limits, |user: &u64| Ok([Some(*user)]))
    ///     .max_wait(Duration::from_millis(250));
    /// # let _ = layer;
    /// ```
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.edit(|config| config.max_wait = Some(max_wait))
    }

    /// Rejects a request over any limit at once instead of making it wait.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("global", FreqLimitParams::per_second(5));
    /// let layer = CompoundLimitLayer::new(limits, |_: &u64| Ok([None])).no_wait();
    /// # let _ = layer;
    /// ```
    pub fn no_wait(self) -> Self {
        self.max_wait(Duration::ZERO)
    }

    /// Waits as long as a slot takes (the default).
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("global", FreqLimitParams::per_second(5));
    /// let layer = CompoundLimitLayer::new(limits, |_: &u64| Ok([None])).no_wait().wait_forever();
    /// # let _ = layer;
    /// ```
    pub fn wait_forever(self) -> Self {
        self.edit(|config| config.max_wait = None)
    }
}

impl<B, KF, PF, CF, H> CompoundLimitLayer<B, KF, PF, CF, H> {
    /// The compound the layer decides with.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::CompoundLimitLayer;
    /// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
    ///     .limit("global", FreqLimitParams::per_second(5));
    /// let layer = CompoundLimitLayer::new(limits, |_: &u64| Ok([None]));
    /// assert_eq!(layer.limits().name(0), Some("global"));
    /// ```
    #[must_use]
    pub fn limits(&self) -> &CompoundLimit<B> {
        &self.config.limits
    }
}

/// The inner service must be [`CloneInner`] (that is, `Clone`): a request
/// that waits is forwarded to a clone made ready after the wait.
impl<S: CloneInner, B, KF, PF, CF, H> Layer<S> for CompoundLimitLayer<B, KF, PF, CF, H> {
    type Service = CompoundLimitService<S, B, KF, PF, CF, H>;

    fn layer(&self, inner: S) -> Self::Service {
        CompoundLimitService::new(inner, Arc::clone(&self.config))
    }
}
