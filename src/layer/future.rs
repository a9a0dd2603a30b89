//! [`ResponseFuture`]: the life of one limited request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::Config;
use super::refusal::OnRefusal;
use super::waiting::Waiting;
use crate::backends::FreqLimitBackend;
use crate::decision::Admission;
use crate::error::FreqLimitError;
use crate::params::FreqLimitParams;

pin_project! {
    /// The response future of [`FreqLimitService`](super::FreqLimitService).
    ///
    /// `call` decides most requests on the spot, and the future is one of:
    ///
    /// * **Forwarded**: the request was admitted with no delay (or was not
    ///   limited) and the inner service has been called. Each poll polls the
    ///   inner response future; its response goes through
    ///   [`OnRefusal::admitted`] (where HTTP rate-limit headers are added).
    /// * **Answered**: the request was refused in `call` (over the limit, an
    ///   impossible cost, a missing key, a failed backend); the first poll returns
    ///   the layer's [`OnRefusal`] answer.
    /// * **Waiting**: the request must sleep for its slot, or the backend answers
    ///   asynchronously (Redis). Its state moves to the heap, once, so that the
    ///   two hot paths above stay small and allocation-free; see below.
    ///
    /// A waiting request goes through these steps, one or more per poll:
    ///
    /// 1. **Reserving** (asynchronous backends only): polls the backend's
    ///    reservation. A refusal ends here through the layer's [`OnRefusal`].
    /// 2. **Sleeping**: waits on a Tokio timer until the slot. If the future is
    ///    dropped here, the slot is given back to the backend (when it supports
    ///    refunds), even if others reserved after it.
    /// 3. **Ready**: polls `poll_ready` of its own clone of the inner service,
    ///    taken in `call`, then calls it. The inner service's readiness is thus
    ///    only taken once the wait is over.
    /// 4. **Calling**: polls the inner response future, as *Forwarded* does.
    ///
    /// # Panics
    ///
    /// When polled again after it returned `Ready` (or if the inner response
    /// future does so), as most futures do.
    pub struct ResponseFuture<S, Req, B, P, H>
    where
        S: Service<Req>,
        B: FreqLimitBackend,
        H: OnRefusal<S::Response, S::Error>,
    {
        #[pin]
        kind: Kind<S::Future, Result<S::Response, H::Error>, Pin<Box<Waiting<S, Req, B, P, H>>>, Finish<H>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T, W, A> {
        Forwarded { #[pin] call: F, finish: A },
        Answered { answer: Option<T> },
        Waiting { waiting: W },
    }
}

/// What a forwarded request needs once the inner response is there: the
/// layer's [`OnRefusal`] (a clone: handlers are small, and a clone costs less
/// than sharing the layer's `Arc` across threads), and the admission for
/// [`OnRefusal::admitted`] (`None` for a request that was not limited).
pub(crate) struct Finish<H> {
    on_refusal: H,
    admission: Option<Admission>,
    params: FreqLimitParams,
}

impl<H> Finish<H> {
    pub(crate) fn new(
        on_refusal: H,
        admission: Option<Admission>,
        params: FreqLimitParams,
    ) -> Self {
        Self {
            on_refusal,
            admission,
            params,
        }
    }
}

/// An inner result as the layer answers it: a response through
/// [`OnRefusal::admitted`] (headers), an error through
/// [`OnRefusal::inner_error`].
#[inline]
pub(crate) fn finish<Res, E, H>(
    on_refusal: &H,
    admission: Option<&Admission>,
    params: &FreqLimitParams,
    result: Result<Res, E>,
) -> Result<Res, H::Error>
where
    H: OnRefusal<Res, E>,
{
    match result {
        Ok(response) => Ok(on_refusal.admitted(response, admission, params)),
        Err(err) => Err(on_refusal.inner_error(err)),
    }
}

impl<S, Req, B, P, H> ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    H: OnRefusal<S::Response, S::Error>,
{
    /// The inner service has been called.
    pub(crate) fn forwarded(call: S::Future, finish: Finish<H>) -> Self {
        Self {
            kind: Kind::Forwarded { call, finish },
        }
    }

    /// The request was answered in `call`.
    pub(crate) fn answered(answer: Result<S::Response, H::Error>) -> Self {
        Self {
            kind: Kind::Answered {
                answer: Some(answer),
            },
        }
    }

    /// The request waits: for the backend's asynchronous answer, or for its
    /// slot. Boxed once, out of line, so that the two hot paths stay small.
    #[inline(never)]
    pub(crate) fn waiting(waiting: Waiting<S, Req, B, P, H>) -> Self {
        Self {
            kind: Kind::Waiting {
                waiting: Box::pin(waiting),
            },
        }
    }
}

impl<S, Req, B, P, H> Future for ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    H: OnRefusal<S::Response, S::Error>,
{
    type Output = Result<S::Response, H::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            // A second poll after `Ready` goes to the inner future, whose
            // contract it is.
            KindProj::Forwarded { call, finish: done } => {
                let result = ready!(call.poll(cx));
                let admission = done.admission.as_ref();
                Poll::Ready(finish(&done.on_refusal, admission, &done.params, result))
            }
            KindProj::Answered { answer } => Poll::Ready(
                answer
                    .take()
                    .expect("ResponseFuture polled after it completed"),
            ),
            KindProj::Waiting { waiting } => waiting.as_mut().poll(cx),
        }
    }
}

/// The layer's answer to a refusal, counted, with a tracing event for it.
pub(crate) fn refuse<Res, E, B, P, H>(
    config: &Config<B, P, H>,
    refusal: FreqLimitError,
    params: &FreqLimitParams,
) -> Result<Res, H::Error>
where
    H: OnRefusal<Res, E>,
{
    config.reporter.refused(&refusal);
    #[cfg(feature = "tracing")]
    match &refusal {
        FreqLimitError::Rejected(rejection) => tracing::debug!(
            limiter = config.reporter.name(),
            retry_after_ms = rejection.retry_after().as_secs_f64() * 1e3,
            "rate limit: request rejected"
        ),
        other => tracing::debug!(
            limiter = config.reporter.name(),
            error = %other,
            "rate limit: request refused"
        ),
    }
    config.on_refusal.refused(refusal, params)
}

impl<S, Req, B, P, H> fmt::Debug for ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    H: OnRefusal<S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Forwarded { .. } => "forwarded",
            Kind::Answered { .. } => "answered",
            Kind::Waiting { waiting } => waiting.state_name(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
