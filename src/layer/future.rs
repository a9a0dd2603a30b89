//! [`ResponseFuture`]: the life of one limited request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower_service::Service;

use super::Config;
use super::refusal::OnRefusal;
use super::waiting::{Ticket, Waiting};
use crate::backends::{FreqLimitBackend, RefundOnDrop};
use crate::clock::Clock;
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
        kind: Kind<S::Future, Result<S::Response, H::Error>, Pin<Box<Waiting<S, Req, SingleTicket<B, P, H>>>>, Finish<H>>,
    }
}

pin_project! {
    /// A response future's three cases (this layer's and the compound
    /// layer's): `A` is what a forwarded request needs once its response is
    /// there, `W` the boxed [`Waiting`] state.
    #[project = KindProj]
    pub(crate) enum Kind<F, T, W, A> {
        Forwarded { #[pin] call: F, finish: A },
        Answered { answer: Option<T> },
        Waiting { waiting: W },
    }
}

impl<F: Future, T, W: Future<Output = T>, A> Kind<F, T, Pin<Box<W>>, A> {
    /// Polls whichever case the request is in; `finish` turns a forwarded
    /// request's inner result into the answer.
    #[inline]
    pub(crate) fn poll_case(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        finish: impl FnOnce(&A, F::Output) -> T,
    ) -> Poll<T> {
        match self.project() {
            // A second poll after `Ready` goes to the inner future, whose
            // contract it is.
            KindProj::Forwarded { call, finish: done } => {
                let result = ready!(call.poll(cx));
                Poll::Ready(finish(done, result))
            }
            KindProj::Answered { answer } => Poll::Ready(
                answer
                    .take()
                    .expect("response future polled after it completed"),
            ),
            KindProj::Waiting { waiting } => waiting.as_mut().poll(cx),
        }
    }
}

impl<F, T, W, A> Kind<F, T, W, A> {
    /// Where the request is, for `Debug`; `waiting` names a waiting state.
    pub(crate) fn state_name(&self, waiting: impl FnOnce(&W) -> &'static str) -> &'static str {
        match self {
            Kind::Forwarded { .. } => "forwarded",
            Kind::Answered { .. } => "answered",
            Kind::Waiting { waiting: w } => waiting(w),
        }
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
    pub(crate) fn waiting(waiting: Waiting<S, Req, SingleTicket<B, P, H>>) -> Self {
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
        self.project().kind.poll_case(cx, |done, result| {
            finish(
                &done.on_refusal,
                done.admission.as_ref(),
                &done.params,
                result,
            )
        })
    }
}

/// A single limit's [`Ticket`]: the layer's config with the slot to give
/// back, the request's params and its admission.
pub(crate) struct SingleTicket<B: FreqLimitBackend, P, H> {
    slot: RefundOnDrop<Arc<Config<B, P, H>>>,
    params: FreqLimitParams,
    admission: Option<Admission>,
}

impl<B: FreqLimitBackend, P, H> SingleTicket<B, P, H> {
    /// A request for `key` under `params`, nothing held yet.
    pub(crate) fn new(
        config: Arc<Config<B, P, H>>,
        key: Option<B::Key>,
        params: FreqLimitParams,
    ) -> Self {
        Self {
            slot: RefundOnDrop::new(config, key),
            params,
            admission: None,
        }
    }
}

impl<B, P, H, Res, E> Ticket<Res, E> for SingleTicket<B, P, H>
where
    B: FreqLimitBackend,
    H: OnRefusal<Res, E>,
{
    type Admission = Admission;
    type Reserve = B::ReserveFuture;
    type Error = H::Error;

    fn clock(&self) -> &Clock {
        &self.slot.holder().clock
    }

    fn delay(admission: &Admission) -> Duration {
        admission.delay()
    }

    fn reserved(&mut self, admission: &Admission) {
        self.slot.holder().reporter.admitted(admission);
    }

    fn hold(&mut self, admission: Admission, waiting: bool) {
        self.admission = Some(admission);
        if waiting {
            self.slot.waiting(admission);
        }
    }

    fn slot_reached(&mut self) {
        self.slot.used();
    }

    fn refused(&self, refusal: FreqLimitError) -> Result<Res, H::Error> {
        refuse(self.slot.holder(), refusal, &self.params)
    }

    fn finish(&self, result: Result<Res, E>) -> Result<Res, H::Error> {
        let on_refusal = &self.slot.holder().on_refusal;
        finish(on_refusal, self.admission.as_ref(), &self.params, result)
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
        let state = self.kind.state_name(|waiting| waiting.state_name());
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
