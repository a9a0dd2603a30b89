//! [`ResponseFuture`]: the life of one limited request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::Config;
use super::refusal::OnRefusal;
use crate::backends::FreqLimitBackend;
use crate::clock::Timestamp;
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
    ///    refunds and nobody reserved after it).
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
        B::Key: Sized,
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

    fn finish<Res, E>(&self, result: Result<Res, E>) -> Result<Res, H::Error>
    where
        H: OnRefusal<Res, E>,
    {
        match result {
            Ok(response) => {
                let admission = self.admission.as_ref();
                Ok(self.on_refusal.admitted(response, admission, &self.params))
            }
            Err(err) => Err(self.on_refusal.inner_error(err)),
        }
    }
}

impl<S, Req, B, P, H> ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    B::Key: Sized,
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

    /// The request waits for a reservation the backend answers asynchronously.
    #[inline(never)]
    pub(crate) fn reserving(
        reserve: B::ReserveFuture,
        now: Timestamp,
        pending: (S, Req),
        key: Option<B::Key>,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        let state = State::Reserving { reserve, now };
        Self::waiting(Waiting::new(state, pending, key, None, config, params))
    }

    /// The request was admitted with a delay: it sleeps until `now + delay`.
    #[cold]
    #[inline(never)]
    pub(crate) fn sleeping(
        admission: Admission,
        now: Timestamp,
        pending: (S, Req),
        key: Option<B::Key>,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        let state = State::sleeping(&admission, now);
        let mut waiting = Waiting::new(state, pending, key, Some(admission), config, params);
        waiting.slot.waiting = true;
        Self::waiting(waiting)
    }

    fn waiting(waiting: Waiting<S, Req, B, P, H>) -> Self {
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
    B::Key: Sized,
    H: OnRefusal<S::Response, S::Error>,
{
    type Output = Result<S::Response, H::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            // A second poll after `Ready` goes to the inner future, whose
            // contract it is.
            KindProj::Forwarded { call, finish } => {
                Poll::Ready(finish.finish(ready!(call.poll(cx))))
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

pin_project! {
    /// A request that waits: for an asynchronous backend's answer, for its slot,
    /// or for the inner service's readiness. Lives in a `Box` (see
    /// [`ResponseFuture`]).
    struct Waiting<S, Req, B, P, H>
    where
        S: Service<Req>,
        B: FreqLimitBackend,
        B::Key: Sized,
    {
        #[pin]
        state: State<S::Future, B::ReserveFuture>,
        pending: Option<(S, Req)>,
        params: FreqLimitParams,
        slot: Slot<B, P, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Reserving { #[pin] reserve: R, now: Timestamp },
        Sleeping { #[pin] sleep: Sleep },
        Ready,
        Calling { #[pin] call: F },
        Done,
    }
}

impl<F, R> State<F, R> {
    fn sleeping(admission: &Admission, now: Timestamp) -> Self {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            delay_ms = admission.delay().as_secs_f64() * 1e3,
            "rate limit: request delayed"
        );
        State::Sleeping {
            sleep: tokio::time::sleep_until((now + admission.delay()).to_instant()),
        }
    }
}

/// A request's reservation; gives the slot back if dropped while waiting for it.
struct Slot<B, P, H>
where
    B: FreqLimitBackend,
    B::Key: Sized,
{
    config: Arc<Config<B, P, H>>,
    key: Option<B::Key>,
    admission: Option<Admission>,
    waiting: bool,
}

impl<B, P, H> Drop for Slot<B, P, H>
where
    B: FreqLimitBackend,
    B::Key: Sized,
{
    fn drop(&mut self) {
        if self.waiting {
            if let Some(admission) = &self.admission {
                self.config.backend.refund(self.key.as_ref(), admission);
            }
        }
    }
}

impl<S, Req, B, P, H> Waiting<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    B::Key: Sized,
{
    fn new(
        state: State<S::Future, B::ReserveFuture>,
        pending: (S, Req),
        key: Option<B::Key>,
        admission: Option<Admission>,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        Self {
            state,
            pending: Some(pending),
            params,
            slot: Slot {
                config,
                key,
                admission,
                waiting: false,
            },
        }
    }
}

impl<S, Req, B, P, H> Future for Waiting<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    B::Key: Sized,
    H: OnRefusal<S::Response, S::Error>,
{
    type Output = Result<S::Response, H::Error>;

    // Kept out of `ResponseFuture::poll`, whose hot arm (forwarded) then
    // needs no big stack frame.
    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, now } => match ready!(reserve.poll(cx)) {
                    Ok(admission) => {
                        this.slot.config.reporter.admitted(&admission);
                        this.slot.admission = Some(admission);
                        if admission.delay().is_zero() {
                            this.state.set(State::Ready);
                        } else {
                            this.slot.waiting = true;
                            let sleeping = State::sleeping(&admission, *now);
                            this.state.set(sleeping);
                        }
                    }
                    Err(refusal) => {
                        this.state.set(State::Done);
                        return Poll::Ready(refuse(&this.slot.config, refusal, this.params));
                    }
                },
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.slot.waiting = false;
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let readiness = match this.pending.as_mut() {
                        Some((inner, _)) => inner.poll_ready(cx),
                        None => panic!("ResponseFuture polled after it completed"),
                    };
                    match readiness {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(err)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.slot.config.on_refusal.inner_error(err)));
                        }
                        Poll::Ready(Ok(())) => {
                            if let Some((mut inner, request)) = this.pending.take() {
                                let call = inner.call(request);
                                this.state.set(State::Calling { call });
                            }
                        }
                    }
                }
                StateProj::Calling { call } => {
                    let result = ready!(call.poll(cx));
                    this.state.set(State::Done);
                    let on_refusal = &this.slot.config.on_refusal;
                    return Poll::Ready(match result {
                        Ok(response) => Ok(on_refusal.admitted(
                            response,
                            this.slot.admission.as_ref(),
                            this.params,
                        )),
                        Err(err) => Err(on_refusal.inner_error(err)),
                    });
                }
                StateProj::Done => panic!("ResponseFuture polled after it completed"),
            }
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
    B::Key: Sized,
    H: OnRefusal<S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Forwarded { .. } => "forwarded",
            Kind::Answered { .. } => "answered",
            Kind::Waiting { waiting } => match waiting.state {
                State::Reserving { .. } => "reserving",
                State::Sleeping { .. } => "sleeping",
                State::Ready => "ready",
                State::Calling { .. } => "calling",
                State::Done => "done",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
