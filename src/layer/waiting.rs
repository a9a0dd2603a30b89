//! [`Waiting`]: the slow path of a limited request, kept apart from the
//! response future's two hot paths (forwarded, answered) and boxed once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::Config;
use super::future::{finish, refuse};
use super::refusal::OnRefusal;
use crate::backends::{FreqLimitBackend, RefundOnDrop};
use crate::clock::{Clock, Timestamp};
use crate::decision::Admission;
use crate::params::FreqLimitParams;

/// How a request starts to wait.
pub(crate) enum Start<R> {
    /// For `R`, the backend's asynchronous answer.
    Reserving(R),
    /// For the slot of an admission made on the spot.
    Sleeping(Admission),
}

pin_project! {
    /// A request that waits: for an asynchronous backend's answer, for its slot,
    /// or for the inner service's readiness. Lives in a `Box` (see
    /// [`ResponseFuture`](super::ResponseFuture)).
    pub(crate) struct Waiting<S, Req, B, P, H>
    where
        S: Service<Req>,
        B: FreqLimitBackend,
    {
        #[pin]
        state: State<S::Future, B::ReserveFuture>,
        pending: Option<(S, Req)>,
        params: FreqLimitParams,
        // For the headers of the response, once the request is admitted.
        admission: Option<Admission>,
        // Gives the slot back if the request is dropped while it sleeps.
        slot: RefundOnDrop<Arc<Config<B, P, H>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Reserving { #[pin] reserve: R, now: Timestamp },
        Sleeping { #[pin] sleep: Sleep, deadline: Timestamp },
        Ready,
        Calling { #[pin] call: F },
        Done,
    }
}

impl<F, R> State<F, R> {
    fn sleeping(admission: &Admission, now: Timestamp, clock: &Clock) -> Self {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            delay_ms = admission.delay().as_secs_f64() * 1e3,
            "rate limit: request delayed"
        );
        let deadline = now + admission.delay();
        State::Sleeping {
            sleep: tokio::time::sleep_until(clock.wake_at(deadline)),
            deadline,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            State::Reserving { .. } => "reserving",
            State::Sleeping { .. } => "sleeping",
            State::Ready => "ready",
            State::Calling { .. } => "calling",
            State::Done => "done",
        }
    }
}

impl<S, Req, B, P, H> Waiting<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
{
    /// A request that starts waiting at `now` (out of line: the slow path).
    #[inline(never)]
    pub(crate) fn new(
        start: Start<B::ReserveFuture>,
        now: Timestamp,
        pending: (S, Req),
        key: Option<B::Key>,
        config: Arc<Config<B, P, H>>,
        params: FreqLimitParams,
    ) -> Self {
        let (state, admission) = match start {
            Start::Reserving(reserve) => (State::Reserving { reserve, now }, None),
            Start::Sleeping(admission) => (
                State::sleeping(&admission, now, &config.clock),
                Some(admission),
            ),
        };
        let mut slot = RefundOnDrop::new(config, key);
        if let Some(admission) = admission {
            slot.waiting(admission);
        }
        Self {
            state,
            pending: Some(pending),
            params,
            admission,
            slot,
        }
    }

    /// Where the request is, for `Debug`.
    pub(crate) fn state_name(&self) -> &'static str {
        self.state.name()
    }
}

impl<S, Req, B, P, H> Future for Waiting<S, Req, B, P, H>
where
    S: Service<Req>,
    B: FreqLimitBackend,
    H: OnRefusal<S::Response, S::Error>,
{
    type Output = Result<S::Response, H::Error>;

    // Kept out of `ResponseFuture::poll`, whose hot arm (forwarded) then
    // needs no big stack frame.
    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let config = &**this.slot.holder();
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, now } => match ready!(reserve.poll(cx)) {
                    Ok(admission) => {
                        config.reporter.admitted(&admission);
                        *this.admission = Some(admission);
                        if admission.delay().is_zero() {
                            this.state.set(State::Ready);
                        } else {
                            let sleeping = State::sleeping(&admission, *now, &config.clock);
                            this.state.set(sleeping);
                            this.slot.waiting(admission);
                        }
                    }
                    Err(refusal) => {
                        this.state.set(State::Done);
                        return Poll::Ready(refuse(config, refusal, this.params));
                    }
                },
                StateProj::Sleeping {
                    mut sleep,
                    deadline,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    // Tokio's timer and a counter clock drift apart a little
                    // over a long wait: go only once the slot's own clock
                    // says so.
                    if config.clock.now() < *deadline {
                        sleep.reset(config.clock.wake_at(*deadline));
                        continue;
                    }
                    this.slot.used();
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
                            return Poll::Ready(Err(config.on_refusal.inner_error(err)));
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
                    let admission = this.admission.as_ref();
                    return Poll::Ready(finish(&config.on_refusal, admission, this.params, result));
                }
                StateProj::Done => panic!("ResponseFuture polled after it completed"),
            }
        }
    }
}
