//! [`Waiting`]: the slow path of a limited request, kept apart from the
//! response futures' two hot paths (forwarded, answered) and boxed once.
//! One state machine for both layers: what differs between a single limit
//! and a compound (its admission, the slot to give back, how to answer) is
//! the request's [`Ticket`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::clock::{Clock, Timestamp};
use crate::error::FreqLimitError;

/// What a waiting request holds besides its state: its limiter's config,
/// its admission, the slot to give back if it is dropped while it sleeps,
/// and how to answer it. `Res` and `E` are the inner service's response and
/// error.
pub(crate) trait Ticket<Res, E> {
    /// The backend's answer (`Admission`, `CompoundAdmission`).
    type Admission: Copy;
    /// The backend's asynchronous reservation.
    type Reserve: Future<Output = Result<Self::Admission, FreqLimitError>>;
    /// The layer's error type.
    type Error;

    /// The clock the slot is on.
    fn clock(&self) -> &Clock;
    /// How long `admission` waits.
    fn delay(admission: &Self::Admission) -> Duration;
    /// An asynchronous backend admitted the request (metrics).
    fn reserved(&mut self, admission: &Self::Admission);
    /// Keeps `admission`; `waiting`: the request now sleeps for its slot,
    /// which is given back if the request is dropped before it comes.
    fn hold(&mut self, admission: Self::Admission, waiting: bool);
    /// The slot's time came: it is the request's now.
    fn slot_reached(&mut self);
    /// The answer to a refusal.
    fn refused(&self, refusal: FreqLimitError) -> Result<Res, Self::Error>;
    /// The inner service's response, or its error, as the layer's.
    fn finish(&self, result: Result<Res, E>) -> Result<Res, Self::Error>;
}

/// How a request starts to wait.
pub(crate) enum Start<R, A> {
    /// For `R`, the backend's asynchronous answer.
    Reserving(R),
    /// For the slot of an admission made on the spot.
    Sleeping(A),
}

pin_project! {
    /// A request that waits: for an asynchronous backend's answer, for its
    /// slot, or for the inner service's readiness. Lives in a `Box` (see
    /// [`ResponseFuture`](super::ResponseFuture)).
    pub(crate) struct Waiting<S, Req, T>
    where
        S: Service<Req>,
        T: Ticket<S::Response, S::Error>,
    {
        #[pin]
        state: State<S::Future, T::Reserve>,
        pending: Option<(S, Req)>,
        ticket: T,
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
    fn sleeping(delay: Duration, now: Timestamp, clock: &Clock) -> Self {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            delay_ms = delay.as_secs_f64() * 1e3,
            "rate limit: request delayed"
        );
        let deadline = now + delay;
        State::Sleeping {
            sleep: tokio::time::sleep_until(clock.wake_at(deadline)),
            deadline,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Reserving { .. } => "reserving",
            State::Sleeping { .. } => "sleeping",
            State::Ready => "ready",
            State::Calling { .. } => "calling",
            State::Done => "done",
        }
    }
}

impl<S, Req, T> Waiting<S, Req, T>
where
    S: Service<Req>,
    T: Ticket<S::Response, S::Error>,
{
    /// A request that starts at `start` (at `now`), with its own clone of
    /// the inner service and its request (`pending`).
    #[inline(never)]
    pub(crate) fn new(
        start: Start<T::Reserve, T::Admission>,
        now: Timestamp,
        pending: (S, Req),
        mut ticket: T,
    ) -> Self {
        let state = match start {
            Start::Reserving(reserve) => State::Reserving { reserve, now },
            Start::Sleeping(admission) => {
                ticket.hold(admission, true);
                State::sleeping(T::delay(&admission), now, ticket.clock())
            }
        };
        Self {
            state,
            pending: Some(pending),
            ticket,
        }
    }

    /// Where the request is, for `Debug`.
    pub(crate) fn state_name(&self) -> &'static str {
        self.state.name()
    }
}

impl<S, Req, T> Future for Waiting<S, Req, T>
where
    S: Service<Req>,
    T: Ticket<S::Response, S::Error>,
{
    type Output = Result<S::Response, T::Error>;

    // Kept out of the response futures' `poll`, whose hot arm (forwarded)
    // then needs no big stack frame.
    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, now } => match ready!(reserve.poll(cx)) {
                    Ok(admission) => {
                        this.ticket.reserved(&admission);
                        let delay = T::delay(&admission);
                        if delay.is_zero() {
                            this.ticket.hold(admission, false);
                            this.state.set(State::Ready);
                        } else {
                            let sleeping = State::sleeping(delay, *now, this.ticket.clock());
                            this.state.set(sleeping);
                            this.ticket.hold(admission, true);
                        }
                    }
                    Err(refusal) => {
                        this.state.set(State::Done);
                        return Poll::Ready(this.ticket.refused(refusal));
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
                    let clock = this.ticket.clock();
                    if clock.now() < *deadline {
                        sleep.reset(clock.wake_at(*deadline));
                        continue;
                    }
                    this.ticket.slot_reached();
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let readiness = match this.pending.as_mut() {
                        Some((inner, _)) => inner.poll_ready(cx),
                        None => panic!("response future polled after it completed"),
                    };
                    match readiness {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(err)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(this.ticket.finish(Err(err)));
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
                    return Poll::Ready(this.ticket.finish(result));
                }
                StateProj::Done => panic!("response future polled after it completed"),
            }
        }
    }
}
