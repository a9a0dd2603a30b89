//! [`LearnLayer`]: the Tower side of learning, for a [`FreqLimitLayer`] used
//! on a client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::{Layer, Stack};
use tower_service::Service;

use super::Learner;
use crate::backends::FreqLimitBackend;
use crate::error::FreqLimitError;
use crate::layer::{
    Config, CostOf, ExtractKey, FreqLimitLayer, KeyLookup, MissingKey, ParamsFor, Policy,
};
use crate::params::FreqLimitParams;

type HoldFuture = Pin<Box<dyn Future<Output = Result<bool, FreqLimitError>> + Send>>;

impl<B, K, PF, CF, H> FreqLimitLayer<B, Policy<K, PF, CF>, H> {
    /// This layer, and inside it a [`LearnLayer`] on the same backend, key and
    /// params: every response the inner service returns is read by
    /// `learner`, and a key the server says to slow down is held back (see
    /// [`FreqLimit::hold`](crate::FreqLimit::hold)). For a layer on an
    /// outbound client.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use http::{Request, Response, StatusCode};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::learn::Learner;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// // An upstream that always answers 429, retry after 10 s.
    /// let upstream = service_fn(|_: Request<()>| async {
    ///     Ok::<_, Infallible>(Response::builder().status(429).header("retry-after", "10").body(()).unwrap())
    /// });
    /// let client = ServiceBuilder::new()
    ///     .layer(FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global()).learning(Learner::new()))
    ///     .service(upstream);
    /// let start = tokio::time::Instant::now();
    /// let first = client.clone().oneshot(Request::new(())).await?;
    /// assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    /// client.oneshot(Request::new(())).await?; // waited for the server's 10 s
    /// assert_eq!(start.elapsed(), Duration::from_secs(10));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn learning(self, learner: Learner) -> Learning<B, Policy<K, PF, CF>, H> {
        let learn = LearnLayer {
            config: self.config(),
            learner,
        };
        Stack::new(learn, self)
    }
}

/// What [`FreqLimitLayer::learning`] returns: the limiting layer outside, the
/// [`LearnLayer`] inside.
pub type Learning<B, P, H> = Stack<LearnLayer<B, P, H>, FreqLimitLayer<B, P, H>>;

/// Reads every response of the wrapped service with a [`Learner`] and holds
/// back the keys the server says to slow down. Made by
/// [`FreqLimitLayer::learning`], which places it inside the limiting layer
/// (outside it would read the limiter's own refusals).
pub struct LearnLayer<B, P, H> {
    config: Arc<Config<B, P, H>>,
    learner: Learner,
}

impl<B, P, H> Clone for LearnLayer<B, P, H> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            learner: self.learner.clone(),
        }
    }
}

impl<B, P, H> fmt::Debug for LearnLayer<B, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnLayer")
            .field("learner", &self.learner)
            .finish_non_exhaustive()
    }
}

impl<S, B, P, H> Layer<S> for LearnLayer<B, P, H> {
    type Service = LearnService<S, B, P, H>;

    fn layer(&self, inner: S) -> Self::Service {
        LearnService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of a [`LearnLayer`].
pub struct LearnService<S, B, P, H> {
    inner: S,
    layer: LearnLayer<B, P, H>,
}

impl<S: Clone, B, P, H> Clone for LearnService<S, B, P, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, B, P, H> fmt::Debug for LearnService<S, B, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnService")
            .field("inner", &self.inner)
            .field("learner", &self.layer.learner)
            .finish_non_exhaustive()
    }
}

impl<S, B, K, PF, CF, H, ReqB, ResB> Service<Request<ReqB>>
    for LearnService<S, B, Policy<K, PF, CF>, H>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    B: FreqLimitBackend,
    K: ExtractKey<Request<ReqB>, B::Key>,
    PF: ParamsFor<Request<ReqB>>,
    CF: CostOf<Request<ReqB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = LearnFuture<S::Future, Response<ResB>, B, Policy<K, PF, CF>, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Takes the request's key and params as the limiting layer does (a key
    /// it would not limit is not learned for), then calls the inner service.
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let config = &*self.layer.config;
        let key = match config.policy.key.extract_key(&req) {
            KeyLookup::Key(key) => Some(Some(key)),
            KeyLookup::Global => Some(None),
            KeyLookup::NotFound(_) => (config.missing_key == MissingKey::Global).then_some(None),
        };
        let params = config.policy.params.params_for(&req, &config.params);
        LearnFuture {
            call: self.inner.call(req),
            learn: key.map(|key| Learn {
                key,
                params,
                layer: self.layer.clone(),
            }),
            held: None,
            response: None,
        }
    }
}

/// What a response is learned for.
struct Learn<K, B, P, H> {
    key: Option<K>,
    params: FreqLimitParams,
    layer: LearnLayer<B, P, H>,
}

pin_project! {
    /// The response future of a [`LearnService`]. Its polls:
    ///
    /// 1. poll the inner response future; an error is returned as is;
    /// 2. read the response with the [`Learner`]; if it asks for a hold,
    ///    start the backend's [`hold`](FreqLimitBackend::hold) (boxed: this
    ///    happens on the rare response that says to slow down);
    /// 3. poll the hold until it is done (a failed hold is ignored: the
    ///    response is there, and the pace goes on as configured), then return
    ///    the response.
    pub struct LearnFuture<F, R, B: FreqLimitBackend, P, H> {
        #[pin]
        call: F,
        learn: Option<Learn<B::Key, B, P, H>>,
        held: Option<HoldFuture>,
        response: Option<R>,
    }
}

impl<F, ResB, E, B, P, H> Future for LearnFuture<F, Response<ResB>, B, P, H>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    B: FreqLimitBackend,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(held) = this.held {
            // The outcome of a hold changes nothing for this response.
            let _ = ready!(held.as_mut().poll(cx));
            *this.held = None;
            let response = this
                .response
                .take()
                .expect("LearnFuture polled after it completed");
            return Poll::Ready(Ok(response));
        }
        let response = ready!(this.call.poll(cx))?;
        let Some(learn) = this.learn.take() else {
            return Poll::Ready(Ok(response));
        };
        let asked =
            learn
                .layer
                .learner
                .hold(response.status(), response.headers(), SystemTime::now());
        let Some(hold) = asked else {
            return Poll::Ready(Ok(response));
        };
        let config = &*learn.layer.config;
        let mut held: HoldFuture = Box::pin(config.backend.hold(
            learn.key.as_ref(),
            config.clock.now(),
            hold.duration(),
            &learn.params,
        ));
        if held.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(response));
        }
        *this.held = Some(held);
        *this.response = Some(response);
        Poll::Pending
    }
}

impl<F, R, B: FreqLimitBackend, P, H> fmt::Debug for LearnFuture<F, R, B, P, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LearnFuture")
            .field("holding", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::backends::memory::InMemoryBackend;

    /// The learning service is ready exactly when its inner service is, and
    /// each part shows what it learns with.
    #[test]
    fn readiness_passes_through_and_debug_names_the_parts() {
        let limit =
            FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global());
        let learn = LearnLayer {
            config: limit.config(),
            learner: Learner::new(),
        };
        assert!(
            format!("{learn:?}").starts_with("LearnLayer { learner: Learner {"),
            "{learn:?}"
        );
        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
        let mut service = learn.layer(mock);
        assert!(
            format!("{service:?}").starts_with("LearnService {"),
            "{service:?}"
        );
        let mut cx = Context::from_waker(Waker::noop());
        handle.allow(0);
        assert!(service.poll_ready(&mut cx).is_pending());
        handle.allow(1);
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = service.call(Request::new(()));
        assert_eq!(format!("{future:?}"), "LearnFuture { holding: false, .. }");
    }
}
