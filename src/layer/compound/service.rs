//! [`CompoundLimitService`]: reserve one slot in every limit, wait for it,
//! then forward.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::Config;
use super::future::{CompoundFinish, CompoundResponseFuture, CompoundTicket, refuse};
use super::params::{CompoundParamsFor, Tier};
use super::refusal::OnCompoundRefusal;
use crate::backends::compound::CompoundBackend;
use crate::decision::Reserve;
use crate::error::{FreqLimitError, KeyNotFound};
use crate::gcra::compound::MAX_LIMITS;
use crate::layer::policy::CostOf;
use crate::layer::service::CloneInner;
use crate::layer::waiting::{Start, Waiting};

/// The service made by [`CompoundLimitLayer`](super::CompoundLimitLayer):
/// each request reserves one slot in every limit of the compound at once,
/// waits for it if it must, and only then is forwarded.
///
/// Readiness works as in [`FreqLimitService`](crate::FreqLimitService):
/// `poll_ready` is the inner service's; a request admitted with no delay (the
/// in-memory backend decides inside `call`) is forwarded at once to the
/// instance made ready; a request that waits (or whose backend answers
/// asynchronously, as Redis does) takes a *clone* of the inner service and,
/// after its wait, polls the clone's `poll_ready` before calling it. A
/// refused request never reaches the inner service, which stays ready for
/// the next one. Nothing here panics on a request: refusals and inner errors
/// go through the layer's [`OnCompoundRefusal`].
///
/// ```
/// use std::convert::Infallible;
/// use tower::{Layer, Service, ServiceExt, service_fn};
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::layer::compound::CompoundLimitLayer;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
///     .limit("per-user", FreqLimitParams::per_second(1))
///     .limit("global", FreqLimitParams::per_second(10));
/// let layer = CompoundLimitLayer::new(limits, |user: &u64| Ok([Some(*user), None]));
/// let mut svc = layer.layer(service_fn(|user: u64| async move { Ok::<_, Infallible>(user) }));
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
/// assert_eq!(svc.get_ref().clone().oneshot(8).await.unwrap(), 8);
/// # }
/// ```
pub struct CompoundLimitService<S, B, KF, PF, CF, H> {
    inner: S,
    config: Arc<Config<B, KF, PF, CF, H>>,
}

impl<S, B, KF, PF, CF, H> CompoundLimitService<S, B, KF, PF, CF, H> {
    pub(crate) fn new(inner: S, config: Arc<Config<B, KF, PF, CF, H>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    ///
    /// ```
    /// # use tower::Layer;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};
    /// # let limits = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("global", FreqLimitParams::per_second(1));
    /// # let layer = CompoundLimitLayer::new(limits, |_: &()| Ok([None]));
    /// let svc = layer.layer(7_u32);
    /// assert_eq!(*svc.get_ref(), 7);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use tower::Layer;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};
    /// # let limits = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("global", FreqLimitParams::per_second(1));
    /// # let layer = CompoundLimitLayer::new(limits, |_: &()| Ok([None]));
    /// let mut svc = layer.layer(7_u32);
    /// *svc.get_mut() = 8;
    /// assert_eq!(*svc.get_ref(), 8);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    ///
    /// ```
    /// # use tower::Layer;
    /// # use tower_freqlimit::backends::memory::InMemoryBackend;
    /// # use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};
    /// # let limits = CompoundLimit::new(InMemoryBackend::<u8>::new()).limit("global", FreqLimitParams::per_second(1));
    /// # let layer = CompoundLimitLayer::new(limits, |_: &()| Ok([None]));
    /// let svc = layer.layer(7_u32);
    /// assert_eq!(svc.into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, B, KF, PF, CF, H> Clone for CompoundLimitService<S, B, KF, PF, CF, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, B, KF, PF, CF, H> fmt::Debug for CompoundLimitService<S, B, KF, PF, CF, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompoundLimitService")
            .field("inner", &self.inner)
            .field("limits", &self.config.limits)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, KF, PF, CF, H, const N: usize> Service<Req>
    for CompoundLimitService<S, B, KF, PF, CF, H>
where
    S: Service<Req> + CloneInner,
    B: CompoundBackend,
    KF: Fn(&Req) -> Result<[Option<B::Key>; N], KeyNotFound>,
    PF: CompoundParamsFor<Req, N>,
    CF: CostOf<Req>,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = H::Error;
    type Future = CompoundResponseFuture<S, Req, B, KF, PF, CF, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| self.config.on_refusal.inner_error(err))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = &*self.config;
        let limits = &config.limits;
        // The compound's own params unless the request's tier changes some:
        // then they decide, refuse and describe it everywhere below.
        let tier = Tier::new(limits, config.params.params_for(&req));
        let keys = match (config.keys)(&req) {
            Ok(keys) => keys,
            Err(missing) => {
                let refusal = FreqLimitError::KeyNotFound(missing);
                return CompoundResponseFuture::answered(refuse(config, refusal, &tier, None));
            }
        };
        let mut request = Reserve::new().cost(config.cost.cost_of(&req));
        if let Some(max_wait) = config.max_wait {
            request = request.max_wait(max_wait);
        }

        let refs: [Option<&B::Key>; N] = keys.each_ref().map(Option::as_ref);
        let parts = match limits.parts_with(&refs, tier.params(limits)) {
            Ok(parts) => parts,
            Err(refusal) => {
                return CompoundResponseFuture::answered(refuse(config, refusal, &tier, None));
            }
        };
        let backend = limits.backend();
        let now = limits.clock().now();
        let start = match backend.reserve_compound_sync(&parts[..N], now, request) {
            Some(Ok(admission)) if admission.delay().is_zero() => {
                let call = self.inner.call(req);
                let finish = CompoundFinish::new(&self.config, admission, tier);
                return CompoundResponseFuture::forwarded(call, finish);
            }
            Some(Ok(admission)) => Start::Sleeping(admission),
            Some(Err(refusal)) => {
                // A handler that describes the limits gets every limit's
                // state, read now (consuming nothing), not only the
                // refusing one's.
                let state = match refusal {
                    FreqLimitError::Rejected(_) if H::DESCRIBES_STATE => {
                        let status = Reserve::new().cost(0);
                        backend.reserve_compound_sync(&parts[..N], now, status)
                    }
                    _ => None,
                };
                let state = state.and_then(Result::ok);
                let answer = refuse(config, refusal, &tier, state.as_ref());
                return CompoundResponseFuture::answered(answer);
            }
            None => Start::Reserving(backend.reserve_compound(&parts[..N], now, request)),
        };
        // The keys go with the request, to give its slot back if it is
        // dropped while it waits (the admission holds each part's span, so
        // the refund needs no params); the tier, to answer it.
        let mut keys = keys.into_iter();
        let owned: [Option<B::Key>; MAX_LIMITS] = std::array::from_fn(|_| keys.next().flatten());
        let ticket = CompoundTicket::new(Arc::clone(&self.config), owned, tier);
        let pending = (self.inner.clone(), req);
        CompoundResponseFuture::waiting(Waiting::new(start, now, pending, ticket))
    }
}
