//! The Tower middleware: [`FreqLimitLayer`] wraps any [`Service`] in a
//! [`FreqLimitService`] that waits for (or rejects on) a rate-limit slot before
//! forwarding each request.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::{FreqLimitError, FreqLimitParams};
//! use tower_freqlimit::layer::FreqLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // Requests are (user id, payload); each user may send 2 per second, rejected beyond.
//! let layer = FreqLimitLayer::new(FreqLimitParams::per_second(2), InMemoryBackend::<u32>::new())
//!     .key(|req: &(u32, &'static str)| Some(req.0))
//!     .max_wait(Duration::ZERO);
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: (u32, &'static str)| async move { Ok::<_, Infallible>(req.1.len()) }));
//!
//! assert_eq!(svc.ready().await.unwrap().call((1, "hello")).await.unwrap(), 5);
//! let refused = svc.ready().await.unwrap().call((1, "again")).await.unwrap_err();
//! assert!(matches!(refused.downcast_ref::<FreqLimitError>(), Some(FreqLimitError::Rejected(_))));
//! // Another user has a bucket of its own.
//! assert!(svc.ready().await.unwrap().call((2, "hi")).await.is_ok());
//! # }
//! ```
//!
//! [`Service`]: tower_service::Service

pub mod compound;
mod future;
mod policy;
mod refusal;
mod service;
mod waiting;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::backends::{FreqLimitBackend, HoldsBackend};
use crate::clock::Clock;
use crate::metrics::Reporter;
use crate::params::FreqLimitParams;

pub use future::ResponseFuture;
pub use policy::{
    CostOf, ExtractKey, Global, KeyLookup, LayerParams, MissingKey, ParamsFor, Policy, UnitCost,
};
pub use refusal::{BoxError, OnRefusal, RefuseWith, RefuseWithError};
pub use service::{CloneInner, FreqLimitService};

/// Applies a rate limit to every request of the wrapped service.
///
/// Built like a sentence:
///
/// ```
/// # use std::time::Duration;
/// # use tower_freqlimit::backends::memory::InMemoryBackend;
/// # use tower_freqlimit::FreqLimitParams;
/// # use tower_freqlimit::layer::{FreqLimitLayer, MissingKey};
/// # struct Req { user: Option<u64>, paid: bool, batch: u32 }
/// const FREE: FreqLimitParams = FreqLimitParams::per_minute(60);
/// const PAID: FreqLimitParams = FreqLimitParams::per_second(50).with_burst(10);
///
/// let layer = FreqLimitLayer::new(FREE, InMemoryBackend::<u64>::new())
///     .key(|req: &Req| req.user)                       // one bucket per user
///     .on_missing_key(MissingKey::Global)              // anonymous users share one
///     .params_for(|req: &Req| if req.paid { PAID } else { FREE })
///     .cost_for(|req: &Req| req.batch)                 // a batch of n costs n
///     .max_wait(Duration::from_millis(250));           // wait a little, then reject
/// # let _ = layer;
/// ```
///
/// * **Keys.** Without [`key`](Self::key), all requests share one global bucket.
///   A key extractor that finds no key triggers the [`MissingKey`] setting
///   (default: refuse).
/// * **Waiting.** By default a request waits for its slot, then is forwarded (as
///   `aiofreqlimit` does). [`max_wait`](Self::max_wait) bounds the wait;
///   `max_wait(Duration::ZERO)` rejects at once. A rejected request consumes
///   nothing.
/// * **Refusals** are errors by default ([`RefuseWithError`]); see [`OnRefusal`]
///   for responses instead (`429` over HTTP with the `http` feature).
///
/// The layer and its services are `Clone` and share one backend, as axum and
/// tonic require.
///
/// # Stacking and timing
///
/// Layers stack: `ServiceBuilder::new().layer(per_group).layer(per_chat)` admits
/// only what both allow. Each layer's limit holds at the moment it hands the
/// request on, so the innermost layer is the one that holds exactly at send time;
/// after an inner layer's extra wait, two requests may leave an outer layer's
/// bucket closer together than its interval (never beyond its burst tolerance).
/// Slots follow the GCRA schedule, not the previous wake-up: a timer that fires a
/// millisecond late shortens the gap to the next request by as much. Where a
/// remote API counts strictly, give it a margin (a slightly lower limit).
#[must_use]
pub struct FreqLimitLayer<B, P = Policy, H = RefuseWithError> {
    // Shared with every service the layer makes. axum clones a route's layers
    // and applies them on every request to a `Router` used as a service without
    // `with_state`, so cloning the layer and `layer` must be an `Arc` clone,
    // not a copy of the config and an allocation.
    config: Arc<Config<B, P, H>>,
}

impl<B, P, H> FreqLimitLayer<B, P, H> {
    /// What this layer's services share, for a layer that works beside it
    /// (`learn::LearnLayer`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn config(&self) -> Arc<Config<B, P, H>> {
        Arc::clone(&self.config)
    }
}

/// What a layer and its services share.
#[derive(Clone)]
pub(crate) struct Config<B, P, H> {
    pub(crate) backend: B,
    pub(crate) params: FreqLimitParams,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) missing_key: MissingKey,
    pub(crate) policy: P,
    pub(crate) on_refusal: H,
    pub(crate) clock: Clock,
    pub(crate) reporter: Reporter,
}

/// A waiting request gives its slot back to the layer's backend.
impl<B: FreqLimitBackend, P, H> HoldsBackend for Config<B, P, H> {
    type Backend = B;

    fn backend(&self) -> &B {
        &self.backend
    }
}

impl<B, P, H> Clone for FreqLimitLayer<B, P, H> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<B: fmt::Debug, P, H> fmt::Debug for FreqLimitLayer<B, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreqLimitLayer")
            .field("name", &self.config.reporter.name())
            .field("params", &self.config.params)
            .field("backend", &self.config.backend)
            .field("max_wait", &self.config.max_wait)
            .field("missing_key", &self.config.missing_key)
            .finish_non_exhaustive()
    }
}

impl<B: FreqLimitBackend> FreqLimitLayer<B> {
    /// The pacing limiter, for clients and workers: every request goes through
    /// one global bucket of `backend` with `params` (until [`key`](Self::key)
    /// says otherwise) and **waits** for its slot; refusals (a backend failure,
    /// a missing key) are errors.
    ///
    /// A server protecting itself wants [`server`](Self::server) instead, which
    /// rejects at once with `429` responses.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// // An outbound client: at most 100 requests a second, queued beyond.
    /// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global());
    /// # let _ = layer;
    /// ```
    pub fn new(params: FreqLimitParams, backend: B) -> Self {
        Self::with_parts(params, backend, None, RefuseWithError)
    }
}

impl<B: FreqLimitBackend, H> FreqLimitLayer<B, Policy, H> {
    pub(crate) fn with_parts(
        params: FreqLimitParams,
        backend: B,
        max_wait: Option<Duration>,
        on_refusal: H,
    ) -> Self {
        Self {
            config: Arc::new(Config {
                clock: backend.clock(),
                backend,
                params,
                max_wait,
                missing_key: MissingKey::default(),
                policy: Policy::default(),
                on_refusal,
                reporter: Reporter::default(),
            }),
        }
    }
}

/// The builder methods need the parts to be `Clone`: a layer cloned before them
/// keeps its own config.
impl<B, K, PF, CF, H> FreqLimitLayer<B, Policy<K, PF, CF>, H>
where
    B: Clone,
    K: Clone,
    PF: Clone,
    CF: Clone,
    H: Clone,
{
    /// Puts each request in the bucket `key` returns; `None` means the request
    /// has no key, and [`on_missing_key`](Self::on_missing_key) decides.
    ///
    /// `key` is any [`ExtractKey`], usually a closure `Fn(&Req) -> Option<Key>`.
    pub fn key<K2>(self, key: K2) -> FreqLimitLayer<B, Policy<K2, PF, CF>, H> {
        self.map_config(
            |p| Policy {
                key,
                params: p.params,
                cost: p.cost,
            },
            |h| h,
        )
    }

    /// Gives each request its own params (tiers); the layer's params are the
    /// default that [`LayerParams`] returns.
    pub fn params_for<PF2>(self, params_for: PF2) -> FreqLimitLayer<B, Policy<K, PF2, CF>, H> {
        self.map_config(
            |p| Policy {
                key: p.key,
                params: params_for,
                cost: p.cost,
            },
            |h| h,
        )
    }

    /// Gives each request a cost (weight); cost `n` is `n` unit calls at once.
    ///
    /// A cost of 0 (an empty batch, a missing count) consumes nothing but is
    /// **not** free passage: it is admitted only when a unit call would be,
    /// waits as long as one would, and is refused (`429`) when one would be.
    /// So a client that can drive its cost to 0 gets no more than a status
    /// check past the limit.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// struct Batch { items: u32 }
    ///
    /// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global())
    ///     .cost_for(|batch: &Batch| batch.items); // 0 items: passes only if 1 item would
    /// # let _ = layer;
    /// ```
    pub fn cost_for<CF2>(self, cost_for: CF2) -> FreqLimitLayer<B, Policy<K, PF, CF2>, H> {
        self.map_config(
            |p| Policy {
                key: p.key,
                params: p.params,
                cost: cost_for,
            },
            |h| h,
        )
    }
}

impl<B, P, H> FreqLimitLayer<B, P, H>
where
    B: Clone,
    P: Clone,
    H: Clone,
{
    /// Rebuilds the layer with a new policy or refusal handler, keeping the rest.
    fn map_config<P2, H2>(
        self,
        policy: impl FnOnce(P) -> P2,
        on_refusal: impl FnOnce(H) -> H2,
    ) -> FreqLimitLayer<B, P2, H2> {
        // Moves the config out unless the layer was cloned.
        let config = Arc::unwrap_or_clone(self.config);
        FreqLimitLayer {
            config: Arc::new(Config {
                backend: config.backend,
                params: config.params,
                max_wait: config.max_wait,
                missing_key: config.missing_key,
                policy: policy(config.policy),
                on_refusal: on_refusal(config.on_refusal),
                clock: config.clock,
                reporter: config.reporter,
            }),
        }
    }

    /// Changes the config in place unless the layer was cloned: services made
    /// before keep the config they were made with.
    fn edit(mut self, change: impl FnOnce(&mut Config<B, P, H>)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Rejects a request instead of making it wait longer than `max_wait`;
    /// `Duration::ZERO` is [`no_wait`](Self::no_wait).
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.edit(|config| config.max_wait = Some(max_wait))
    }

    /// Rejects a request over the limit at once instead of making it wait
    /// (reject-only, like `governor`; what [`server`](Self::server) sets).
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::global())
    ///     .no_wait();
    /// # let _ = layer;
    /// ```
    pub fn no_wait(self) -> Self {
        self.max_wait(Duration::ZERO)
    }

    /// Waits as long as a slot takes (the default).
    pub fn wait_forever(self) -> Self {
        self.edit(|config| config.max_wait = None)
    }

    /// What to do with requests whose key cannot be found (default:
    /// [`MissingKey::Refuse`]).
    pub fn on_missing_key(self, missing_key: MissingKey) -> Self {
        self.edit(|config| config.missing_key = missing_key)
    }

    /// Turns refusals into responses or errors with `on_refusal` (see
    /// [`OnRefusal`]).
    pub fn on_refusal<H2>(self, on_refusal: H2) -> FreqLimitLayer<B, P, H2> {
        self.map_config(|p| p, |_| on_refusal)
    }

    /// Names the limiter: the `limiter` label of its metrics (feature
    /// `metrics`, see [`crate::metrics`]). The default is `"default"`.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::global())
    ///     .name("api");
    /// assert!(format!("{layer:?}").contains("api"));
    /// ```
    pub fn name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let reporter = Reporter::named(name.into());
        self.edit(|config| config.reporter = reporter)
    }
}

impl<B, P, H> FreqLimitLayer<B, P, H> {
    /// The default params.
    #[must_use]
    pub fn params(&self) -> &FreqLimitParams {
        &self.config.params
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &B {
        &self.config.backend
    }
}

/// The inner service must be [`CloneInner`] (that is, `Clone`), checked here so
/// that a service that is not says so where it is wrapped.
impl<S: CloneInner, B, P, H> Layer<S> for FreqLimitLayer<B, P, H> {
    type Service = FreqLimitService<S, B, P, H>;

    fn layer(&self, inner: S) -> Self::Service {
        FreqLimitService::new(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::memory::InMemoryBackend;

    #[derive(Clone)]
    struct Inner;

    fn layer() -> FreqLimitLayer<InMemoryBackend<u8>> {
        FreqLimitLayer::new(FreqLimitParams::per_second(1), InMemoryBackend::new())
    }

    #[test]
    fn services_of_one_layer_share_one_config() {
        let layer = layer();
        let (a, b) = (layer.layer(Inner), layer.layer(Inner));
        assert!(Arc::ptr_eq(a.config(), b.config()));
        // A clone of the layer hands out the same config too.
        assert!(Arc::ptr_eq(a.config(), layer.clone().layer(Inner).config()));
    }

    #[test]
    fn a_change_after_layer_reaches_only_later_services() {
        let layer = layer();
        let before = layer.layer(Inner);
        let layer = layer.max_wait(Duration::ZERO).name("after");
        let after = layer.layer(Inner);
        assert!(!Arc::ptr_eq(before.config(), after.config()));
        assert_eq!(before.config().max_wait, None);
        assert_eq!(after.config().max_wait, Some(Duration::ZERO));
        assert_eq!(before.config().reporter.name(), "default");
        assert_eq!(after.config().reporter.name(), "after");
        // Both still limit through the one backend.
        let params = FreqLimitParams::per_second(1);
        let now = crate::clock::Timestamp::from_nanos(1);
        let reserve = crate::decision::Reserve::new();
        assert!(
            before
                .config()
                .backend
                .reserve_now(Some(&7), now, &params, reserve)
                .is_ok()
        );
        assert_eq!(after.config().backend.len(), 1);
    }
}
