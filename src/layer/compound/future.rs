//! [`CompoundResponseFuture`]: the life of one request under a compound.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::Config;
use super::params::Tier;
use super::refusal::OnCompoundRefusal;
use crate::backends::compound::{CompoundAdmission, CompoundBackend};
use crate::clock::{Clock, Timestamp};
use crate::error::FreqLimitError;
use crate::gcra::compound::MAX_LIMITS;

/// How a waiting request starts.
pub(super) enum Start<R> {
    /// For `R`, the backend's asynchronous answer.
    Reserving(R),
    /// For the slot of an admission made on the spot.
    Sleeping(CompoundAdmission),
}

/// The layer's config, the request's admission (kept only for a handler that
/// describes it, or to give it back), and whether it is still waiting for
/// its slots: they are given back ([`CompoundBackend::refund_compound`]) if
/// the request is dropped then.
pub(super) struct Slot<B: CompoundBackend, KF, PF, CF, H> {
    config: Arc<Config<B, KF, PF, CF, H>>,
    keys: [Option<B::Key>; MAX_LIMITS],
    admission: Option<CompoundAdmission>,
    waiting: bool,
}

impl<B: CompoundBackend, KF, PF, CF, H> Slot<B, KF, PF, CF, H> {
    /// Nothing held (a request answered or forwarded at once).
    pub(super) fn new(config: &Arc<Config<B, KF, PF, CF, H>>) -> Self {
        Self::with_keys(config, std::array::from_fn(|_| None))
    }

    /// The slots of `keys` (one per limit, in order), nothing to give back yet.
    pub(super) fn with_keys(
        config: &Arc<Config<B, KF, PF, CF, H>>,
        keys: [Option<B::Key>; MAX_LIMITS],
    ) -> Self {
        Self {
            config: Arc::clone(config),
            keys,
            admission: None,
            waiting: false,
        }
    }
}

impl<B: CompoundBackend, KF, PF, CF, H> Drop for Slot<B, KF, PF, CF, H> {
    fn drop(&mut self) {
        if let (true, Some(admission)) = (self.waiting, &self.admission) {
            let keys: [Option<&B::Key>; MAX_LIMITS] =
                std::array::from_fn(|i| self.keys[i].as_ref());
            let len = self.config.limits.len().min(MAX_LIMITS);
            self.config
                .limits
                .backend()
                .refund_compound(&keys[..len], admission);
        }
    }
}

pin_project! {
    /// The response future of
    /// [`CompoundLimitService`](super::CompoundLimitService).
    ///
    /// A request goes through these steps, one or more per poll:
    ///
    /// 1. **Reserving** (asynchronous backends only): polls the backend's
    ///    compound reservation; a refusal ends here through the layer's
    ///    [`OnCompoundRefusal`].
    /// 2. **Sleeping**: waits on the compound's clock until the slot. If the
    ///    future is dropped here, the slot is given back in every limit.
    /// 3. **Ready**: polls `poll_ready` of its own clone of the inner
    ///    service, taken in `call`, then calls it.
    /// 4. **Calling**: polls the inner response future; its response goes
    ///    through [`OnCompoundRefusal::admitted`] (where HTTP headers are
    ///    added).
    ///
    /// A request admitted with no delay inside `call` starts at *Calling*
    /// (the inner service made ready by `poll_ready` was called); one refused
    /// there is answered on the first poll.
    ///
    /// # Panics
    ///
    /// When polled again after it returned `Ready`, as most futures do.
    ///
    /// # Example
    ///
    /// Naming it, for a struct field or a boxed service:
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use tower::Service;
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::layer::compound::{
    ///     CompoundLimitService, CompoundResponseFuture, LimitParams,
    /// };
    /// use tower_freqlimit::layer::{RefuseWithError, UnitCost};
    ///
    /// type Keys = fn(&u64) -> Result<[Option<u64>; 2], tower_freqlimit::KeyNotFound>;
    /// type Inner = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, Infallible>>>;
    /// type Backend = InMemoryBackend<u64>;
    /// type Svc = CompoundLimitService<Inner, Backend, Keys, LimitParams, UnitCost, RefuseWithError>;
    /// type Fut =
    ///     CompoundResponseFuture<Inner, u64, Backend, Keys, LimitParams, UnitCost, RefuseWithError>;
    /// fn _same(f: <Svc as Service<u64>>::Future) -> Fut {
    ///     f
    /// }
    /// ```
    pub struct CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
    where
        S: Service<Req>,
        B: CompoundBackend,
        H: OnCompoundRefusal<S::Response, S::Error>,
    {
        #[pin]
        state: State<S::Future, B::CompoundFuture, Result<S::Response, H::Error>>,
        pending: Option<(S, Req)>,
        // The params the request is decided with, to answer it.
        tier: Tier,
        slot: Slot<B, KF, PF, CF, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R, T> {
        Answered { answer: Option<T> },
        Reserving { #[pin] reserve: R, now: Timestamp },
        Sleeping { #[pin] sleep: Sleep, deadline: Timestamp },
        Ready,
        Calling { #[pin] call: F },
        Done,
    }
}

impl<F, R, T> State<F, R, T> {
    fn sleeping(admission: &CompoundAdmission, now: Timestamp, clock: &Clock) -> Self {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            delay_ms = admission.delay().as_secs_f64() * 1e3,
            decided_by = admission.decided_by(),
            "rate limit: compound request delayed"
        );
        let deadline = now + admission.delay();
        State::Sleeping {
            sleep: tokio::time::sleep_until(clock.wake_at(deadline)),
            deadline,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Answered { .. } => "answered",
            State::Reserving { .. } => "reserving",
            State::Sleeping { .. } => "sleeping",
            State::Ready => "ready",
            State::Calling { .. } => "calling",
            State::Done => "done",
        }
    }
}

impl<S, Req, B, KF, PF, CF, H> CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
where
    S: Service<Req>,
    B: CompoundBackend,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    /// The request was answered in `call`.
    pub(super) fn answered(
        answer: Result<S::Response, H::Error>,
        slot: Slot<B, KF, PF, CF, H>,
    ) -> Self {
        Self {
            state: State::Answered {
                answer: Some(answer),
            },
            pending: None,
            tier: Tier::OWN,
            slot,
        }
    }

    /// The request was admitted with no delay and the inner service called.
    /// The admission and the tier are kept only if the handler describes
    /// admitted responses (copying them is a good part of a request's cost).
    pub(super) fn forwarded(
        call: S::Future,
        admission: CompoundAdmission,
        tier: Tier,
        mut slot: Slot<B, KF, PF, CF, H>,
    ) -> Self {
        let tier = if H::DESCRIBES_ADMITTED {
            slot.admission = Some(admission);
            tier
        } else {
            Tier::OWN
        };
        Self {
            state: State::Calling { call },
            pending: None,
            tier,
            slot,
        }
    }

    /// The request waits (for the backend, or for its slot) with its own
    /// clone of the inner service.
    pub(super) fn waiting(
        start: Start<B::CompoundFuture>,
        now: Timestamp,
        pending: (S, Req),
        tier: Tier,
        mut slot: Slot<B, KF, PF, CF, H>,
    ) -> Self {
        let state = match start {
            Start::Reserving(reserve) => State::Reserving { reserve, now },
            Start::Sleeping(admission) => {
                (slot.admission, slot.waiting) = (Some(admission), true);
                State::sleeping(&admission, now, slot.config.limits.clock())
            }
        };
        Self {
            state,
            pending: Some(pending),
            tier,
            slot,
        }
    }
}

impl<S, Req, B, KF, PF, CF, H> Future for CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
where
    S: Service<Req>,
    B: CompoundBackend,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    type Output = Result<S::Response, H::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let config = &*this.slot.config;
            match this.state.as_mut().project() {
                StateProj::Answered { answer } => {
                    let answer = answer
                        .take()
                        .expect("CompoundResponseFuture polled after it completed");
                    this.state.set(State::Done);
                    return Poll::Ready(answer);
                }
                StateProj::Reserving { reserve, now } => match ready!(reserve.poll(cx)) {
                    Ok(admission) => {
                        this.slot.admission = Some(admission);
                        if admission.delay().is_zero() {
                            this.state.set(State::Ready);
                        } else {
                            let now = *now;
                            let sleeping = State::sleeping(&admission, now, config.limits.clock());
                            this.state.set(sleeping);
                            this.slot.waiting = true;
                        }
                    }
                    Err(refusal) => {
                        this.state.set(State::Done);
                        return Poll::Ready(refuse(config, refusal, this.tier));
                    }
                },
                StateProj::Sleeping {
                    mut sleep,
                    deadline,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    // Tokio's timer and a counter clock drift apart a little
                    // over a long wait: go only once the compound's own
                    // clock says so.
                    let clock = config.limits.clock();
                    if clock.now() < *deadline {
                        sleep.reset(clock.wake_at(*deadline));
                        continue;
                    }
                    this.slot.waiting = false;
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let readiness = match this.pending.as_mut() {
                        Some((inner, _)) => inner.poll_ready(cx),
                        None => panic!("CompoundResponseFuture polled after it completed"),
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
                    let on_refusal = &config.on_refusal;
                    return Poll::Ready(match result {
                        Ok(response) => Ok(match this.slot.admission.as_ref() {
                            Some(admission) => {
                                let params = this.tier.params(&config.limits);
                                on_refusal.admitted(response, admission, &config.limits, params)
                            }
                            None => response,
                        }),
                        Err(err) => Err(on_refusal.inner_error(err)),
                    });
                }
                StateProj::Done => panic!("CompoundResponseFuture polled after it completed"),
            }
        }
    }
}

/// The layer's answer to a refusal of a request decided with `tier`, with a
/// tracing event for it.
pub(super) fn refuse<Res, E, B, KF, PF, CF, H>(
    config: &Config<B, KF, PF, CF, H>,
    refusal: FreqLimitError,
    tier: &Tier,
) -> Result<Res, H::Error>
where
    B: CompoundBackend,
    H: OnCompoundRefusal<Res, E>,
{
    #[cfg(feature = "tracing")]
    match &refusal {
        FreqLimitError::Rejected(rejection) => tracing::debug!(
            limit = config.limits.name(rejection.limit()),
            retry_after_ms = rejection.retry_after().as_secs_f64() * 1e3,
            "rate limit: compound request rejected"
        ),
        other => tracing::debug!(error = %other, "rate limit: compound request refused"),
    }
    let limits = &config.limits;
    config
        .on_refusal
        .refused(refusal, limits, tier.params(limits))
}

impl<S, Req, B, KF, PF, CF, H> fmt::Debug for CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
where
    S: Service<Req>,
    B: CompoundBackend,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompoundResponseFuture")
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}
