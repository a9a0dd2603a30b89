//! [`CompoundResponseFuture`]: the life of one request under a compound.
//! Its waiting path is the single layer's [`Waiting`], with a
//! [`CompoundTicket`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower_service::Service;

use super::Config;
use super::params::Tier;
use super::refusal::OnCompoundRefusal;
use crate::backends::compound::{CompoundAdmission, CompoundBackend};
use crate::clock::Clock;
use crate::error::FreqLimitError;
use crate::gcra::compound::MAX_LIMITS;
use crate::layer::future::Kind;
use crate::layer::waiting::{Ticket, Waiting};

/// A compound's [`Ticket`]: the layer's config, the request's keys (to give
/// its slots back), its tier and its admission.
pub(super) struct CompoundTicket<B: CompoundBackend, KF, PF, CF, H> {
    config: Arc<Config<B, KF, PF, CF, H>>,
    keys: [Option<B::Key>; MAX_LIMITS],
    tier: Tier,
    admission: Option<CompoundAdmission>,
    // The admission's slots are still to come: give them back if dropped.
    waiting: bool,
}

impl<B: CompoundBackend, KF, PF, CF, H> CompoundTicket<B, KF, PF, CF, H> {
    /// A request for `keys` (one per limit, in order) under `tier`.
    pub(super) fn new(
        config: Arc<Config<B, KF, PF, CF, H>>,
        keys: [Option<B::Key>; MAX_LIMITS],
        tier: Tier,
    ) -> Self {
        Self {
            config,
            keys,
            tier,
            admission: None,
            waiting: false,
        }
    }
}

impl<B: CompoundBackend, KF, PF, CF, H> Drop for CompoundTicket<B, KF, PF, CF, H> {
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

impl<B, KF, PF, CF, H, Res, E> Ticket<Res, E> for CompoundTicket<B, KF, PF, CF, H>
where
    B: CompoundBackend,
    H: OnCompoundRefusal<Res, E>,
{
    type Admission = CompoundAdmission;
    type Reserve = B::CompoundFuture;
    type Error = H::Error;

    fn clock(&self) -> &Clock {
        self.config.limits.clock()
    }

    fn delay(admission: &CompoundAdmission) -> Duration {
        admission.delay()
    }

    fn reserved(&mut self, _: &CompoundAdmission) {}

    fn hold(&mut self, admission: CompoundAdmission, waiting: bool) {
        self.admission = Some(admission);
        self.waiting = waiting;
    }

    fn slot_reached(&mut self) {
        self.waiting = false;
    }

    fn refused(&self, refusal: FreqLimitError) -> Result<Res, H::Error> {
        refuse(&self.config, refusal, &self.tier, None)
    }

    fn finish(&self, result: Result<Res, E>) -> Result<Res, H::Error> {
        finish(&self.config, self.admission.as_ref(), &self.tier, result)
    }
}

/// What a request forwarded in `call` needs once its response is there: the
/// layer's config, and, for a handler that describes admitted responses
/// ([`OnCompoundRefusal::DESCRIBES_STATE`]), its admission and tier.
pub(super) struct CompoundFinish<B, KF, PF, CF, H> {
    config: Arc<Config<B, KF, PF, CF, H>>,
    admission: Option<CompoundAdmission>,
    tier: Tier,
}

impl<B, KF, PF, CF, H> CompoundFinish<B, KF, PF, CF, H> {
    /// For a request admitted with `admission` under `tier`; both are kept
    /// only if the handler reads them (copying them is a good part of a
    /// request's cost).
    pub(super) fn new<Res, E>(
        config: &Arc<Config<B, KF, PF, CF, H>>,
        admission: CompoundAdmission,
        tier: Tier,
    ) -> Self
    where
        H: OnCompoundRefusal<Res, E>,
    {
        let (admission, tier) = if H::DESCRIBES_STATE {
            (Some(admission), tier)
        } else {
            (None, Tier::OWN)
        };
        Self {
            config: Arc::clone(config),
            admission,
            tier,
        }
    }
}

/// The inner service's response (through
/// [`OnCompoundRefusal::admitted`]), or its error, as the layer's.
fn finish<Res, E, B, KF, PF, CF, H>(
    config: &Config<B, KF, PF, CF, H>,
    admission: Option<&CompoundAdmission>,
    tier: &Tier,
    result: Result<Res, E>,
) -> Result<Res, H::Error>
where
    B: CompoundBackend,
    H: OnCompoundRefusal<Res, E>,
{
    let on_refusal = &config.on_refusal;
    match result {
        Ok(response) => Ok(match admission {
            Some(admission) if H::DESCRIBES_STATE => {
                let limits = &config.limits;
                on_refusal.admitted(response, admission, limits, tier.params(limits))
            }
            _ => response,
        }),
        Err(err) => Err(on_refusal.inner_error(err)),
    }
}

/// The boxed waiting state of a compound request.
type Waits<S, Req, B, KF, PF, CF, H> = Pin<Box<Waiting<S, Req, CompoundTicket<B, KF, PF, CF, H>>>>;

pin_project! {
    /// The response future of
    /// [`CompoundLimitService`](super::CompoundLimitService).
    ///
    /// `call` decides most requests on the spot (in memory), and the future
    /// is one of:
    ///
    /// * **Forwarded**: admitted with no delay; the inner service made ready
    ///   by `poll_ready` has been called. Each poll polls the inner response
    ///   future; its response goes through [`OnCompoundRefusal::admitted`]
    ///   (where HTTP headers are added).
    /// * **Answered**: refused in `call`; the first poll returns the layer's
    ///   [`OnCompoundRefusal`] answer.
    /// * **Waiting**: the request sleeps for its slot, or the backend answers
    ///   asynchronously (Redis). Its state moves to the heap, once, so that
    ///   the two paths above stay small and allocation-free. It goes through
    ///   these steps, one or more per poll:
    ///   1. **Reserving** (asynchronous backends only): polls the backend's
    ///      compound reservation; a refusal ends here.
    ///   2. **Sleeping**: waits on the compound's clock until the slot. If
    ///      the future is dropped here, the slot is given back in every limit.
    ///   3. **Ready**: polls `poll_ready` of its own clone of the inner
    ///      service, taken in `call`, then calls it.
    ///   4. **Calling**: as *Forwarded*.
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
        kind: Kind<
            S::Future,
            Result<S::Response, H::Error>,
            Waits<S, Req, B, KF, PF, CF, H>,
            CompoundFinish<B, KF, PF, CF, H>,
        >,
    }
}

impl<S, Req, B, KF, PF, CF, H> CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
where
    S: Service<Req>,
    B: CompoundBackend,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    /// The request was answered in `call`.
    pub(super) fn answered(answer: Result<S::Response, H::Error>) -> Self {
        Self {
            kind: Kind::Answered {
                answer: Some(answer),
            },
        }
    }

    /// The request was admitted with no delay and the inner service called.
    pub(super) fn forwarded(call: S::Future, finish: CompoundFinish<B, KF, PF, CF, H>) -> Self {
        Self {
            kind: Kind::Forwarded { call, finish },
        }
    }

    /// The request waits (for the backend, or for its slot).
    #[inline(never)]
    pub(super) fn waiting(waiting: Waiting<S, Req, CompoundTicket<B, KF, PF, CF, H>>) -> Self {
        Self {
            kind: Kind::Waiting {
                waiting: Box::pin(waiting),
            },
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
        self.project().kind.poll_case(cx, |done, result| {
            finish(&done.config, done.admission.as_ref(), &done.tier, result)
        })
    }
}

/// The layer's answer to a refusal of a request decided with `tier`, with a
/// tracing event for it; `state`: every limit's state at the refusal, when
/// the backend could read it on the spot.
pub(super) fn refuse<Res, E, B, KF, PF, CF, H>(
    config: &Config<B, KF, PF, CF, H>,
    refusal: FreqLimitError,
    tier: &Tier,
    state: Option<&CompoundAdmission>,
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
    let params = tier.params(limits);
    match state {
        Some(state) => config
            .on_refusal
            .refused_with_state(refusal, limits, params, state),
        None => config.on_refusal.refused(refusal, limits, params),
    }
}

impl<S, Req, B, KF, PF, CF, H> fmt::Debug for CompoundResponseFuture<S, Req, B, KF, PF, CF, H>
where
    S: Service<Req>,
    B: CompoundBackend,
    H: OnCompoundRefusal<S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.kind.state_name(|waiting| waiting.state_name());
        f.debug_struct("CompoundResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
