//! [`FreqLimitService`]: reserve a slot, wait for it, then forward.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::Config;
use super::future::{Finish, ResponseFuture, SingleTicket, refuse};
use super::policy::{CostOf, ExtractKey, KeyLookup, MissingKey, ParamsFor, Policy};
use super::refusal::OnRefusal;
use super::waiting::{Start, Waiting};
use crate::backends::FreqLimitBackend;
use crate::decision::Reserve;
use crate::error::FreqLimitError;

/// The inner service of a rate-limit layer is `Clone`: a request that waits for
/// its slot, or whose backend answers asynchronously (Redis), is forwarded to a
/// clone made ready after the wait (as tower's `Oneshot` does), so that the
/// instance made ready by `poll_ready` stays ready for the next request.
/// Implemented for every `Clone` type; it exists to say so in compile errors.
///
/// A service that is not `Clone` can be made so with `tower::buffer::Buffer`.
///
/// ```
/// use tower_freqlimit::layer::CloneInner;
///
/// fn needs_clone_inner<S: CloneInner>(_: &S) {}
/// needs_clone_inner(&tower::service_fn(|req: u32| async move { Ok::<_, ()>(req) }));
/// ```
#[diagnostic::on_unimplemented(
    message = "the service `{Self}` behind a rate-limit layer must be `Clone`",
    label = "not `Clone`",
    note = "a request that waits for its slot, or whose backend answers asynchronously (Redis), is forwarded to a clone of the inner service made ready after the wait, as tower's `Oneshot` does",
    note = "axum and tonic services are `Clone`; wrap another service in `tower::buffer::Buffer` to make it so"
)]
pub trait CloneInner: Clone {}

#[diagnostic::do_not_recommend]
impl<S: Clone> CloneInner for S {}

/// The service made by [`FreqLimitLayer`](super::FreqLimitLayer): each request
/// reserves a slot, waits for it if it must, and only then is forwarded.
///
/// # Readiness
///
/// `poll_ready` is the inner service's `poll_ready`: backpressure from below (a
/// `ConcurrencyLimit`, a `Buffer`) reaches the caller as it would without the
/// limiter. `call` then decides the request:
///
/// * admitted with no delay: the inner service, made ready by this `poll_ready`,
///   is called at once;
/// * refused: answered through the layer's [`OnRefusal`]; the inner service is
///   not called and stays ready for the next request;
/// * admitted with a delay: the request takes a *clone* of the inner service and
///   sleeps; after the wait its response future polls the clone's `poll_ready`,
///   then calls it, as
///   [`Oneshot`](https://docs.rs/tower/latest/tower/util/struct.Oneshot.html)
///   does. The instance made ready here stays ready for the next request.
///
/// So the inner service is only ever called after `poll_ready` returned `Ready`
/// on that same instance, and a request sleeping for its slot holds none of the
/// inner service's readiness (a `ConcurrencyLimit` permit, a `Buffer` slot).
///
/// The inner service must be `Clone` ([`CloneInner`]), as axum and tonic
/// services are, even when the layer only rejects: with an asynchronous
/// backend (Redis) the decision arrives after `call` has returned, and the
/// request is then forwarded to a clone.
///
/// # Errors
///
/// Refusals (rejections, impossible costs, missing keys, backend failures) and
/// inner errors, from `poll_ready` or from the response, go through the layer's
/// [`OnRefusal`]; nothing here panics on a request.
pub struct FreqLimitService<S, B, P, H> {
    inner: S,
    config: Arc<Config<B, P, H>>,
}

impl<S, B, P, H> FreqLimitService<S, B, P, H> {
    pub(crate) fn new(inner: S, config: Arc<Config<B, P, H>>) -> Self {
        Self { inner, config }
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Arc<Config<B, P, H>> {
        &self.config
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, B, P, H> Clone for FreqLimitService<S, B, P, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, B: fmt::Debug, P, H> fmt::Debug for FreqLimitService<S, B, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreqLimitService")
            .field("inner", &self.inner)
            .field("params", &self.config.params)
            .field("backend", &self.config.backend)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, K, PF, CF, H> Service<Req> for FreqLimitService<S, B, Policy<K, PF, CF>, H>
where
    S: Service<Req> + CloneInner,
    B: FreqLimitBackend,
    K: ExtractKey<Req, B::Key>,
    PF: ParamsFor<Req>,
    CF: CostOf<Req>,
    H: OnRefusal<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = H::Error;
    type Future = ResponseFuture<S, Req, B, Policy<K, PF, CF>, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| self.config.on_refusal.inner_error(err))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = &*self.config;
        let params = config.policy.params.params_for(&req, &config.params);
        let key = match config.policy.key.extract_key(&req) {
            KeyLookup::Key(key) => Some(key),
            KeyLookup::Global => None,
            KeyLookup::NotFound(missing) => match config.missing_key {
                MissingKey::Global => None,
                MissingKey::Allow => {
                    config.reporter.unlimited();
                    let finish = Finish::new(config.on_refusal.clone(), None, params);
                    return ResponseFuture::forwarded(self.inner.call(req), finish);
                }
                MissingKey::Refuse => {
                    let refusal = FreqLimitError::KeyNotFound(missing);
                    return ResponseFuture::answered(refuse(config, refusal, &params));
                }
            },
        };

        let cost = config.policy.cost.cost_of(&req);
        let mut request = Reserve::new().cost(cost);
        if let Some(max_wait) = config.max_wait {
            request = request.max_wait(max_wait);
        }
        // An impossible cost is refused without asking the backend.
        if let Some(refusal) = request.impossible_under(&params) {
            return ResponseFuture::answered(refuse(config, refusal.into(), &params));
        }

        let now = config.clock.now();
        let start = match config
            .backend
            .reserve_sync(key.as_ref(), now, &params, request)
        {
            Some(Ok(admission)) if admission.delay().is_zero() => {
                config.reporter.admitted(&admission);
                let finish = Finish::new(config.on_refusal.clone(), Some(admission), params);
                return ResponseFuture::forwarded(self.inner.call(req), finish);
            }
            Some(Ok(admission)) => {
                config.reporter.admitted(&admission);
                Start::Sleeping(admission)
            }
            Some(Err(refusal)) => {
                return ResponseFuture::answered(refuse(config, refusal, &params));
            }
            None => Start::Reserving(config.backend.reserve(key.as_ref(), now, &params, request)),
        };
        let pending = (self.inner.clone(), req);
        let ticket = SingleTicket::new(self.config.clone(), key, params);
        let waiting = Waiting::new(start, now, pending, ticket);
        ResponseFuture::waiting(waiting)
    }
}
