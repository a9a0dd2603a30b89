//! [`FreqLimitService`]: reserve a slot, wait for it, then forward.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::Config;
use super::future::ResponseFuture;
use super::policy::{CostOf, ExtractKey, KeyLookup, MissingKey, ParamsFor, Policy};
use super::refusal::OnRefusal;
use crate::backends::FreqLimitBackend;
use crate::error::FreqLimitError;
use crate::gcra::Reserve;

/// The service made by [`FreqLimitLayer`](super::FreqLimitLayer): each request
/// reserves a slot, waits for it, and only then is forwarded.
///
/// # Readiness
///
/// `poll_ready` is always ready: a request's slot is only known once its key is,
/// in `call`. The inner service is driven the way
/// [`Oneshot`](https://docs.rs/tower/latest/tower/util/struct.Oneshot.html) drives
/// it: `call` takes a clone of it, and the response future polls that clone's
/// `poll_ready` *after* the wait, then calls it. So the inner service is only ever
/// called after `poll_ready` returned `Ready` on that same instance, and its
/// readiness (a `ConcurrencyLimit` permit, a `Buffer` slot) is not held while a
/// request sleeps for its slot. The inner service must therefore be `Clone`, as
/// axum and tonic services are.
///
/// # Errors
///
/// Refusals (rejections, impossible costs, missing keys, backend failures) and
/// inner errors go through the layer's [`OnRefusal`]; nothing here panics on a
/// request.
pub struct FreqLimitService<S, B, P, H> {
    inner: S,
    config: Arc<Config<B, P, H>>,
}

impl<S, B, P, H> FreqLimitService<S, B, P, H> {
    pub(crate) fn new(inner: S, config: Arc<Config<B, P, H>>) -> Self {
        Self { inner, config }
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
    S: Service<Req> + Clone,
    B: FreqLimitBackend,
    B::Key: Sized,
    K: ExtractKey<Req, B::Key>,
    PF: ParamsFor<Req>,
    CF: CostOf<Req>,
    H: OnRefusal<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = H::Error;
    type Future = ResponseFuture<S, Req, B, Policy<K, PF, CF>, H>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = &*self.config;
        let params = config.policy.params.params_for(&req, &config.params);
        let key = match config.policy.key.extract_key(&req) {
            KeyLookup::Key(key) => Some(key),
            KeyLookup::Global => None,
            KeyLookup::NotFound => match config.missing_key {
                MissingKey::Global => None,
                MissingKey::Allow => {
                    return ResponseFuture::unlimited(
                        self.inner.clone(),
                        req,
                        self.config.clone(),
                        params,
                    );
                }
                MissingKey::Refuse => {
                    return ResponseFuture::refused(
                        FreqLimitError::KeyNotFound,
                        self.config.clone(),
                        params,
                    );
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
            return ResponseFuture::refused(refusal, self.config.clone(), params);
        }

        let now = config.clock.now();
        let reserve = config.backend.reserve(key.as_ref(), now, &params, request);
        ResponseFuture::reserving(
            reserve,
            now,
            key,
            self.inner.clone(),
            req,
            self.config.clone(),
            params,
        )
    }
}
