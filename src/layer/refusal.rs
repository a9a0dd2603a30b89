//! What the service returns when the limiter says no.

use crate::decision::Admission;
use crate::error::FreqLimitError;
use crate::params::FreqLimitParams;

/// The error type of services that return refusals as errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Turns the limiter's refusals into the service's responses or errors.
///
/// A refusal is a [`FreqLimitError`]: a rejection (over the limit with a bounded
/// wait), an impossible cost, a missing key, or a backend failure.
///
/// * [`RefuseWithError`] (the default): the service's error type is [`BoxError`]
///   and a refusal is a boxed [`FreqLimitError`], the Tower convention (handle it
///   with axum's `HandleErrorLayer`, or downcast it).
/// * [`RefuseWith`]: a closure makes a response; the inner service's error type
///   is kept (`Infallible` stays `Infallible`).
/// * `HttpResponses` (feature `http`): `429` with `Retry-After` and IETF
///   `RateLimit` headers.
/// * `GrpcStatus` (feature `tonic`): `RESOURCE_EXHAUSTED`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot answer refusals for a service whose responses are `{Res}` and errors `{E}`",
    label = "not a refusal handler for this service",
    note = "`http_responses()` (`HttpResponses`) needs `http::Response<B>` responses with `B: From<&'static str>`; `RefuseWithError` needs errors that convert into `BoxError`; `RefuseWith(f)` needs `f: Fn(FreqLimitError) -> {Res}`"
)]
pub trait OnRefusal<Res, E> {
    /// The service's error type.
    type Error;

    /// The response or error for a refused request.
    ///
    /// # Errors
    ///
    /// When the refusal is to be an error of the service.
    fn refused(
        &self,
        refusal: FreqLimitError,
        params: &FreqLimitParams,
    ) -> Result<Res, Self::Error>;

    /// Converts an error of the inner service.
    fn inner_error(&self, error: E) -> Self::Error;

    /// A hook on admitted responses (to add rate-limit headers); `None` when the
    /// request was not limited (a missing key under
    /// [`MissingKey::Allow`](super::MissingKey::Allow)).
    fn admitted(
        &self,
        response: Res,
        admission: Option<&Admission>,
        params: &FreqLimitParams,
    ) -> Res {
        let _ = (admission, params);
        response
    }
}

/// Refusals are errors: the service's error is a [`BoxError`] holding a
/// [`FreqLimitError`]. The default.
///
/// ```
/// use tower_freqlimit::layer::{OnRefusal, RefuseWithError};
/// use tower_freqlimit::{FreqLimitError, FreqLimitParams, KeyNotFound};
///
/// let params = FreqLimitParams::per_second(1);
/// let missing = FreqLimitError::KeyNotFound(KeyNotFound::UNSPECIFIED);
/// let result: Result<(), _> =
///     OnRefusal::<(), std::io::Error>::refused(&RefuseWithError, missing.clone(), &params);
/// let err = result.unwrap_err();
/// assert_eq!(err.downcast_ref::<FreqLimitError>(), Some(&missing));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseWithError;

#[diagnostic::do_not_recommend]
impl<Res, E> OnRefusal<Res, E> for RefuseWithError
where
    E: Into<BoxError>,
{
    type Error = BoxError;

    fn refused(&self, refusal: FreqLimitError, _: &FreqLimitParams) -> Result<Res, BoxError> {
        Err(Box::new(refusal))
    }

    fn inner_error(&self, error: E) -> BoxError {
        error.into()
    }
}

/// Refusals become responses made by a closure; inner errors pass through
/// unchanged.
///
/// ```
/// use tower_freqlimit::layer::{OnRefusal, RefuseWith};
/// use tower_freqlimit::{FreqLimitError, FreqLimitParams, KeyNotFound};
///
/// let handler = RefuseWith(|err: FreqLimitError| format!("no: {err}"));
/// let params = FreqLimitParams::per_second(1);
/// let missing = KeyNotFound::client_omitted("no API key");
/// let response: Result<String, std::convert::Infallible> =
///     handler.refused(FreqLimitError::KeyNotFound(missing), &params);
/// assert_eq!(response.unwrap(), "no: no API key");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RefuseWith<F>(pub F);

#[diagnostic::do_not_recommend]
impl<F, Res, E> OnRefusal<Res, E> for RefuseWith<F>
where
    F: Fn(FreqLimitError) -> Res,
{
    type Error = E;

    fn refused(&self, refusal: FreqLimitError, _: &FreqLimitParams) -> Result<Res, E> {
        Ok((self.0)(refusal))
    }

    fn inner_error(&self, error: E) -> E {
        error
    }
}
