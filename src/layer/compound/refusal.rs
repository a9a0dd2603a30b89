//! What a compound layer's service returns when the limits say no.

use crate::backends::compound::{CompoundAdmission, CompoundBackend};
use crate::compound::CompoundLimit;
use crate::error::FreqLimitError;
use crate::layer::refusal::{BoxError, RefuseWith, RefuseWithError};
use crate::params::FreqLimitParams;

/// Turns a compound's refusals into the service's responses or errors: the
/// [`OnRefusal`](crate::layer::OnRefusal) of
/// [`CompoundLimitLayer`](super::CompoundLimitLayer), which passes the whole
/// compound (each limit's name) and the params the request was decided with
/// in each limit, instead of one limit's params.
///
/// Those `params` are the compound's own
/// ([`CompoundLimit::params`]) unless the layer's
/// [`params_for`](super::CompoundLimitLayer::params_for) gave the request
/// others (a tier): describe the request with `params`, not with the
/// compound's.
///
/// Implemented by the single layer's handlers:
///
/// * [`RefuseWithError`] (the default): a boxed [`FreqLimitError`]; a
///   rejection's [`limit`](crate::Rejection::limit) says which limit refused.
/// * [`RefuseWith`]: a closure makes a response from the [`FreqLimitError`].
/// * `HttpResponses` (feature `http`): `429` with `Retry-After`,
///   `RateLimit-Policy` listing every limit by name, and `RateLimit` listing
///   every limit's state when the backend can read it on the spot (in
///   memory), else naming the limit that refused.
///
/// Your own, for a protocol of yours:
///
/// ```
/// use tower_freqlimit::backends::compound::CompoundBackend;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::layer::compound::OnCompoundRefusal;
/// use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams};
///
/// /// Refusals are replies naming the limit that refused and its rate.
/// #[derive(Clone)]
/// struct Reply;
///
/// impl<E> OnCompoundRefusal<String, E> for Reply {
///     type Error = E;
///
///     fn refused<B: CompoundBackend>(
///         &self,
///         refusal: FreqLimitError,
///         limits: &CompoundLimit<B>,
///         params: &[FreqLimitParams],
///     ) -> Result<String, E> {
///         Ok(match refusal {
///             FreqLimitError::Rejected(r) => format!(
///                 "slow down ({}: {} a second)",
///                 limits.name(r.limit()).unwrap_or("?"),
///                 params.get(r.limit()).map_or(0, |p| p.limit()),
///             ),
///             other => format!("refused: {other}"),
///         })
///     }
///
///     fn inner_error(&self, error: E) -> E {
///         error
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new())
///     .limit("per-user", FreqLimitParams::per_second(1));
/// limits.try_acquire(&[Some(&1)]).await.unwrap();
/// let refusal = limits.try_acquire(&[Some(&1)]).await.unwrap_err();
/// let own = [FreqLimitParams::per_second(1)];
/// let reply: Result<String, ()> = Reply.refused(refusal, &limits, &own);
/// assert_eq!(reply.unwrap(), "slow down (per-user: 1 a second)");
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot answer a compound's refusals for a service whose responses are `{Res}` and errors `{E}`",
    label = "not a compound refusal handler for this service",
    note = "`HttpResponses` needs `http::Response<B>` responses with `B: From<&'static str>`; `RefuseWithError` needs errors that convert into `BoxError`; `RefuseWith(f)` needs `f: Fn(FreqLimitError) -> {Res}`"
)]
pub trait OnCompoundRefusal<Res, E> {
    /// The service's error type.
    type Error;

    /// Whether the handler describes the limits' state:
    /// [`admitted`](Self::admitted) reads its admission and params, and
    /// [`refused_with_state`](Self::refused_with_state) its state. A handler
    /// that does neither says `false`: then a forwarded request's future
    /// keeps no admission (a few hundred bytes not copied per request),
    /// `admitted` is not called, and a rejection is not followed by a
    /// reading of every limit. `true` unless said otherwise, so that a
    /// handler that describes responses cannot lose them by omission.
    const DESCRIBES_STATE: bool = true;

    /// The response or error for a refused request (a rejection, an
    /// impossible cost, a missing key, a failed backend); `params` has one
    /// entry per limit of `limits`, in order: the params the request was
    /// decided with.
    ///
    /// # Errors
    ///
    /// When the refusal is to be an error of the service.
    fn refused<B: CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        limits: &CompoundLimit<B>,
        params: &[FreqLimitParams],
    ) -> Result<Res, Self::Error>;

    /// [`refused`](Self::refused), for a rejection when the backend could
    /// read every limit's state on the spot (in memory; not on Redis, where
    /// that would cost a `429` a second round trip): `state` is that
    /// reading, one part per limit with its `remaining` and `reset_after`
    /// (a cost-0 call: it consumed nothing, and its `delay` is how long a
    /// unit call waits). By default the state is left aside.
    ///
    /// # Errors
    ///
    /// As [`refused`](Self::refused).
    fn refused_with_state<B: CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        limits: &CompoundLimit<B>,
        params: &[FreqLimitParams],
        state: &CompoundAdmission,
    ) -> Result<Res, Self::Error> {
        let _ = state;
        self.refused(refusal, limits, params)
    }

    /// Converts an error of the inner service.
    fn inner_error(&self, error: E) -> Self::Error;

    /// A hook on admitted responses (to add rate-limit headers): the
    /// admission and `params` (as in [`refused`](Self::refused)) have one
    /// entry per limit, in order.
    fn admitted<B: CompoundBackend>(
        &self,
        response: Res,
        admission: &CompoundAdmission,
        limits: &CompoundLimit<B>,
        params: &[FreqLimitParams],
    ) -> Res {
        let _ = (admission, limits, params);
        response
    }
}

/// Refusals are boxed [`FreqLimitError`]s.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::layer::RefuseWithError;
/// use tower_freqlimit::layer::compound::OnCompoundRefusal;
/// use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams, KeyNotFound};
///
/// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new())
///     .limit("global", FreqLimitParams::per_second(1));
/// let missing = FreqLimitError::KeyNotFound(KeyNotFound::UNSPECIFIED);
/// let own = [FreqLimitParams::per_second(1)];
/// let result: Result<(), _> = OnCompoundRefusal::<(), std::io::Error>::refused(
///     &RefuseWithError,
///     missing.clone(),
///     &limits,
///     &own,
/// );
/// assert_eq!(result.unwrap_err().downcast_ref::<FreqLimitError>(), Some(&missing));
/// ```
#[diagnostic::do_not_recommend]
impl<Res, E> OnCompoundRefusal<Res, E> for RefuseWithError
where
    E: Into<BoxError>,
{
    type Error = BoxError;

    const DESCRIBES_STATE: bool = false;

    fn refused<B: CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        _: &CompoundLimit<B>,
        _: &[FreqLimitParams],
    ) -> Result<Res, BoxError> {
        Err(Box::new(refusal))
    }

    fn inner_error(&self, error: E) -> BoxError {
        error.into()
    }
}

/// Refusals become responses made by a closure; inner errors pass through.
///
/// ```
/// use std::convert::Infallible;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::layer::RefuseWith;
/// use tower_freqlimit::layer::compound::OnCompoundRefusal;
/// use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams, KeyNotFound};
///
/// let limits = CompoundLimit::new(InMemoryBackend::<u8>::new())
///     .limit("global", FreqLimitParams::per_second(1));
/// let handler = RefuseWith(|err: FreqLimitError| format!("no: {err}"));
/// let missing = FreqLimitError::KeyNotFound(KeyNotFound::client_omitted("no chat id"));
/// let own = [FreqLimitParams::per_second(1)];
/// let response: Result<String, Infallible> = handler.refused(missing, &limits, &own);
/// assert_eq!(response.unwrap(), "no: no chat id");
/// ```
#[diagnostic::do_not_recommend]
impl<F, Res, E> OnCompoundRefusal<Res, E> for RefuseWith<F>
where
    F: Fn(FreqLimitError) -> Res,
{
    type Error = E;

    const DESCRIBES_STATE: bool = false;

    fn refused<B: CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        _: &CompoundLimit<B>,
        _: &[FreqLimitParams],
    ) -> Result<Res, E> {
        Ok((self.0)(refusal))
    }

    fn inner_error(&self, error: E) -> E {
        error
    }
}
