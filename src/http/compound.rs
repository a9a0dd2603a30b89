//! The headers and responses of compound limits
//! ([`CompoundLimitLayer`](crate::CompoundLimitLayer)): one item per limit,
//! named with the limit's name.

use http::header::HeaderValue;
use http::{Response, StatusCode};

use super::{
    HttpResponses, RATELIMIT, RATELIMIT_POLICY, refusal_response, whole_seconds_up, window_secs,
};
use crate::error::FreqLimitError;
use crate::params::FreqLimitParams;

/// An sf-string for the name of limit `index` (`limit-<index>` if the name
/// is not printable ASCII, which an sf-string cannot carry).
fn limit_name(name: Option<&str>, index: usize) -> std::borrow::Cow<'_, sfv::StringRef> {
    match name.map(sfv::StringRef::from_str) {
        Some(Ok(name)) => std::borrow::Cow::Borrowed(name),
        _ => std::borrow::Cow::Owned(
            sfv::String::from_string(format!("limit-{index}"))
                .unwrap_or_else(|_| sfv::StringRef::constant("limit").to_owned()),
        ),
    }
}

/// An sf-integer, saturated at the largest one.
fn sf_integer(n: u64) -> sfv::Integer {
    sfv::Integer::try_from(n).unwrap_or(sfv::Integer::MAX)
}

/// A list of named items, each with two integer parameters, as a header
/// value.
fn named_items<'a>(
    items: impl Iterator<Item = (std::borrow::Cow<'a, sfv::StringRef>, u64, u64)>,
    first: &sfv::KeyRef,
    second: &sfv::KeyRef,
) -> Option<HeaderValue> {
    let mut list = sfv::ListSerializer::new();
    for (name, x, y) in items {
        _ = list
            .bare_item(&*name)
            .parameter(first, sf_integer(x))
            .parameter(second, sf_integer(y));
    }
    list.finish()
        .and_then(|value| HeaderValue::try_from(value).ok())
}

const Q: &sfv::KeyRef = sfv::KeyRef::constant("q");
const W: &sfv::KeyRef = sfv::KeyRef::constant("w");
const R: &sfv::KeyRef = sfv::KeyRef::constant("r");
const T: &sfv::KeyRef = sfv::KeyRef::constant("t");

/// The `RateLimit-Policy` value for a compound: one item per limit, named
/// with the limit's name, each as [`policy_header`](super::policy_header) describes one limit.
/// `None` for a compound without limits.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::compound_policy_header;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
///     .limit("per-chat", FreqLimitParams::per_second(1))
///     .limit("global", FreqLimitParams::per_second(30).with_burst(30));
/// assert_eq!(
///     compound_policy_header(&limits).unwrap(),
///     r#""per-chat";q=1;w=1, "global";q=30;w=1"#
/// );
/// ```
#[must_use]
pub fn compound_policy_header<K: crate::backends::compound::CompoundBackend>(
    limits: &crate::CompoundLimit<K>,
) -> Option<HeaderValue> {
    policy_under(limits, limits.all_params())
}

/// [`compound_policy_header`] under `params` (one per limit, in order), the
/// params a request was decided with.
fn policy_under<K: crate::backends::compound::CompoundBackend>(
    limits: &crate::CompoundLimit<K>,
    params: &[FreqLimitParams],
) -> Option<HeaderValue> {
    let items = params.iter().enumerate().map(|(i, params)| {
        (
            limit_name(limits.name(i), i),
            u64::from(params.burst()),
            window_secs(params),
        )
    });
    named_items(items, Q, W)
}

/// The `RateLimit` value for an admitted compound, as of the end of its
/// wait: one item per limit, named, with its `remaining` calls and the
/// seconds until it is full again (`reset_after` less the wait, rounded up).
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::compound_state_header;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
/// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
///     .limit("per-chat", FreqLimitParams::per_second(1))
///     .limit("global", FreqLimitParams::per_second(30).with_burst(30));
/// let admission = limits.acquire(&[Some(&42), None]).await?;
/// assert_eq!(
///     compound_state_header(&limits, &admission).unwrap(),
///     r#""per-chat";r=0;t=1, "global";r=29;t=1"#
/// );
/// # Ok(())
/// # }
/// ```
#[must_use]
pub fn compound_state_header<K: crate::backends::compound::CompoundBackend>(
    limits: &crate::CompoundLimit<K>,
    admission: &crate::CompoundAdmission,
) -> Option<HeaderValue> {
    let items = admission.parts().iter().enumerate().map(|(i, part)| {
        let reset_after = part.reset_after().saturating_sub(part.delay());
        (
            limit_name(limits.name(i), i),
            u64::from(part.remaining()),
            whole_seconds_up(reset_after),
        )
    });
    named_items(items, R, T)
}

/// The response for a compound's refusal: [`refusal_response`]'s status and
/// body, with `RateLimit-Policy` listing every limit by name on a `429`
/// ([`compound_policy_header`]) and, on a rejection, `Retry-After` (rounded
/// up: when every limit admits the request) and `RateLimit` with the item of
/// the limit that refused ([`Rejection::limit`](crate::Rejection::limit)):
/// its `remaining` and `reset_after`. The other limits' state is not in a
/// refusal; [`HttpResponses`] lists every limit when the backend could read
/// them on the spot (in memory, see
/// [`OnCompoundRefusal::refused_with_state`](crate::layer::compound::OnCompoundRefusal::refused_with_state)).
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::compound_refusal_response;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
///     .limit("per-chat", FreqLimitParams::per_second(2))
///     .limit("global", FreqLimitParams::per_second(30).with_burst(30));
/// limits.try_acquire(&[Some(&42), None]).await.unwrap();
/// let refusal = limits.try_acquire(&[Some(&42), None]).await.unwrap_err();
/// let response = compound_refusal_response::<String, _>(&refusal, &limits);
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1"); // 0.5 s, rounded up
/// assert_eq!(response.headers()["ratelimit"], r#""per-chat";r=0;t=1"#);
/// # }
/// ```
pub fn compound_refusal_response<B, K>(
    refusal: &FreqLimitError,
    limits: &crate::CompoundLimit<K>,
) -> Response<B>
where
    B: From<&'static str>,
    K: crate::backends::compound::CompoundBackend,
{
    refusal_under(refusal, limits, limits.all_params(), None)
}

/// [`compound_refusal_response`] for a request decided under `params` (one
/// per limit, in order); with `state` (every limit's, read at the refusal),
/// `RateLimit` lists every limit.
fn refusal_under<B, K>(
    refusal: &FreqLimitError,
    limits: &crate::CompoundLimit<K>,
    params: &[FreqLimitParams],
    state: Option<&crate::CompoundAdmission>,
) -> Response<B>
where
    B: From<&'static str>,
    K: crate::backends::compound::CompoundBackend,
{
    let mut response = refusal_response(refusal, None);
    if response.status() != StatusCode::TOO_MANY_REQUESTS {
        return response;
    }
    let headers = response.headers_mut();
    if let Some(policy) = policy_under(limits, params) {
        headers.insert(RATELIMIT_POLICY, policy);
    }
    if let FreqLimitError::Rejected(rejection) = refusal {
        let items = match state {
            Some(state) => named_items(
                state.parts().iter().enumerate().map(|(i, part)| {
                    (
                        limit_name(limits.name(i), i),
                        u64::from(part.remaining()),
                        whole_seconds_up(part.reset_after()),
                    )
                }),
                R,
                T,
            ),
            None => {
                let i = rejection.limit();
                let item = std::iter::once((
                    limit_name(limits.name(i), i),
                    u64::from(rejection.remaining()),
                    whole_seconds_up(rejection.reset_after()),
                ));
                named_items(item, R, T)
            }
        };
        match items {
            Some(items) => headers.insert(RATELIMIT, items),
            None => headers.remove(RATELIMIT),
        };
    }
    response
}

/// Refusals of a [`CompoundLimitLayer`](crate::CompoundLimitLayer) become
/// [`compound_refusal_response`]s; with
/// [`with_headers_on_success`](HttpResponses::with_headers_on_success),
/// admitted responses get `RateLimit-Policy` and `RateLimit` listing every
/// limit ([`compound_policy_header`], [`compound_state_header`]). Both
/// describe each limit with the params the request was decided with: a
/// request given params of its own
/// ([`params_for`](crate::CompoundLimitLayer::params_for), a tier) gets its
/// tier's `RateLimit-Policy`, not the compound's.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::HttpResponses;
/// use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};
///
/// let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
///     .limit("per-user", FreqLimitParams::per_second(5))
///     .limit("global", FreqLimitParams::per_second(100));
/// let layer = CompoundLimitLayer::new(limits, |user: &u64| Ok([Some(*user), None]))
///     .no_wait()
///     .on_refusal(HttpResponses::new().with_headers_on_success());
/// # let _ = layer;
/// ```
#[diagnostic::do_not_recommend]
impl<B, E> crate::layer::compound::OnCompoundRefusal<Response<B>, E> for HttpResponses
where
    B: From<&'static str>,
{
    type Error = E;

    fn refused<K: crate::backends::compound::CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        limits: &crate::CompoundLimit<K>,
        params: &[FreqLimitParams],
    ) -> Result<Response<B>, E> {
        Ok(refusal_under(&refusal, limits, params, None))
    }

    fn refused_with_state<K: crate::backends::compound::CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        limits: &crate::CompoundLimit<K>,
        params: &[FreqLimitParams],
        state: &crate::CompoundAdmission,
    ) -> Result<Response<B>, E> {
        Ok(refusal_under(&refusal, limits, params, Some(state)))
    }

    fn inner_error(&self, error: E) -> E {
        error
    }

    fn admitted<K: crate::backends::compound::CompoundBackend>(
        &self,
        mut response: Response<B>,
        admission: &crate::CompoundAdmission,
        limits: &crate::CompoundLimit<K>,
        params: &[FreqLimitParams],
    ) -> Response<B> {
        if self.headers_on_success {
            let headers = response.headers_mut();
            if let Some(policy) = policy_under(limits, params) {
                headers.insert(RATELIMIT_POLICY, policy);
            }
            if let Some(state) = compound_state_header(limits, admission) {
                headers.insert(RATELIMIT, state);
            }
        }
        response
    }
}

impl<B: Clone, KF: Clone, PF: Clone, CF: Clone>
    crate::CompoundLimitLayer<B, KF, PF, CF, crate::layer::RefuseWithError>
{
    /// Refusals become HTTP responses: `429` with `Retry-After` and
    /// `RateLimit` headers naming each limit (see [`HttpResponses`] and
    /// [`compound_refusal_response`]); the inner service's error type is
    /// kept, so an axum `Router` takes the layer as it is.
    ///
    /// ```
    /// use axum::{Router, extract::Request, routing::get};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams, KeyNotFound};
    ///
    /// let limits = CompoundLimit::new(InMemoryBackend::<String>::new())
    ///     .limit("per-key", FreqLimitParams::per_second(5))
    ///     .limit("global", FreqLimitParams::per_second(100).with_burst(20));
    /// let layer = CompoundLimitLayer::new(limits, |req: &Request| {
    ///     let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    ///     let key = key.ok_or(KeyNotFound::client_omitted("send your x-api-key header"))?;
    ///     Ok([Some(key.to_owned()), None])
    /// })
    /// .no_wait()
    /// .http_responses();
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(layer);
    /// # let _ = app;
    /// ```
    pub fn http_responses(self) -> crate::CompoundLimitLayer<B, KF, PF, CF, HttpResponses> {
        self.on_refusal(HttpResponses::new())
    }
}
