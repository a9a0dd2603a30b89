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
use crate::error::FreqLimitError;
use crate::gcra::Admission;
use crate::params::FreqLimitParams;

pin_project! {
    /// The response future of [`FreqLimitService`](super::FreqLimitService).
    ///
    /// Each poll advances one request through these steps:
    ///
    /// 1. **Reserving**: polls the backend's reservation. A refusal ends here
    ///    through the layer's [`OnRefusal`]; an admission with no delay goes
    ///    straight to step 3.
    /// 2. **Sleeping**: waits on a Tokio timer until the slot. If the future is
    ///    dropped here, the slot is given back to the backend (when it supports
    ///    refunds and nobody reserved after it).
    /// 3. **Ready**: polls the inner service's `poll_ready` (on the clone this
    ///    future owns), then calls it.
    /// 4. **Calling**: polls the inner response future and hands the response to
    ///    [`OnRefusal::admitted`] (where HTTP rate-limit headers are added).
    ///
    /// Nothing here allocates or reads the clock except when the request must
    /// sleep.
    pub struct ResponseFuture<S, Req, B, P, H>
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
        Refused { refusal: Option<FreqLimitError> },
        Reserving { #[pin] reserve: R, now: Timestamp },
        Sleeping { #[pin] sleep: Sleep },
        Ready,
        Calling { #[pin] call: F },
        Done,
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

impl<S, Req, B, P, H> ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    B::Key: Sized,
{
    pub(crate) fn reserving(
        reserve: B::ReserveFuture,
        now: Timestamp,
        key: Option<B::Key>,
        inner: S,
        request: Req,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        let state = State::Reserving { reserve, now };
        Self::new(state, Some((inner, request)), key, config, params)
    }

    pub(crate) fn refused(
        refusal: FreqLimitError,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        let state = State::Refused {
            refusal: Some(refusal),
        };
        Self::new(state, None, None, config, params)
    }

    pub(crate) fn unlimited(
        inner: S,
        request: Req,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        Self::new(State::Ready, Some((inner, request)), None, config, params)
    }

    fn new(
        state: State<S::Future, B::ReserveFuture>,
        pending: Option<(S, Req)>,
        key: Option<B::Key>,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        Self {
            state,
            pending,
            params,
            slot: Slot {
                config,
                key,
                admission: None,
                waiting: false,
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refused { refusal } => {
                    let refusal = refusal.take().unwrap_or(FreqLimitError::KeyNotFound);
                    this.state.set(State::Done);
                    return Poll::Ready(this.slot.config.on_refusal.refused(refusal, this.params));
                }
                StateProj::Reserving { reserve, now } => match ready!(reserve.poll(cx)) {
                    Ok(admission) => {
                        this.slot.admission = Some(admission);
                        if admission.delay().is_zero() {
                            this.state.set(State::Ready);
                        } else {
                            #[cfg(feature = "tracing")]
                            tracing::debug!(
                                delay_ms = admission.delay().as_secs_f64() * 1e3,
                                "rate limit: request delayed"
                            );
                            this.slot.waiting = true;
                            let until = (*now + admission.delay()).to_instant();
                            this.state.set(State::Sleeping {
                                sleep: tokio::time::sleep_until(until),
                            });
                        }
                    }
                    Err(refusal) => {
                        #[cfg(feature = "tracing")]
                        trace_refusal(&refusal);
                        this.state.set(State::Done);
                        return Poll::Ready(
                            this.slot.config.on_refusal.refused(refusal, this.params),
                        );
                    }
                },
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.slot.waiting = false;
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    // Only futures built refused lack the service and request,
                    // and they never reach this state; answering instead of
                    // panicking keeps even a broken invariant off the panic path.
                    let Some((mut inner, request)) = this.pending.take() else {
                        this.state.set(State::Done);
                        let refusal = FreqLimitError::KeyNotFound;
                        return Poll::Ready(
                            this.slot.config.on_refusal.refused(refusal, this.params),
                        );
                    };
                    match inner.poll_ready(cx) {
                        Poll::Pending => {
                            *this.pending = Some((inner, request));
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(err)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.slot.config.on_refusal.inner_error(err)));
                        }
                        Poll::Ready(Ok(())) => {
                            let call = inner.call(request);
                            this.state.set(State::Calling { call });
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

#[cfg(feature = "tracing")]
fn trace_refusal(refusal: &FreqLimitError) {
    match refusal {
        FreqLimitError::Rejected(rejection) => tracing::debug!(
            retry_after_ms = rejection.retry_after().as_secs_f64() * 1e3,
            "rate limit: request rejected"
        ),
        other => tracing::debug!(error = %other, "rate limit: request refused"),
    }
}

impl<S, Req, B, P, H> fmt::Debug for ResponseFuture<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    B::Key: Sized,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Refused { .. } => "refused",
            State::Reserving { .. } => "reserving",
            State::Sleeping { .. } => "sleeping",
            State::Ready => "ready",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
