//! HTTP: refusals as `429 Too Many Requests` with `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` headers
//! ([draft-ietf-httpapi-ratelimit-headers](https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/)).
//!
//! # The headers for a GCRA limit
//!
//! A GCRA limit is a bucket of `burst` calls that refills one call every `T`. It
//! is advertised as that: `RateLimit-Policy: "default";q=<burst>;w=<burst * T>`
//! (the window rounded up to whole seconds, at least 1, which understates the
//! rate rather than overstating it), and `RateLimit: "default";r=<remaining>;t=<reset>`
//! where `r` is how many calls would pass right now and `t` the seconds until
//! the bucket is full, rounded up.
//!
//! `Retry-After` is the rejection's `retry_after` rounded **up** to whole seconds:
//! a 0.5 s wait is `Retry-After: 1`, never `0`.

mod compound;

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::decision::Admission;
use crate::error::FreqLimitError;
use crate::layer::OnRefusal;
use crate::params::FreqLimitParams;

pub use compound::{compound_policy_header, compound_refusal_response, compound_state_header};

/// The `RateLimit-Policy` header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: what `Retry-After` and the `t` parameter carry.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::http::whole_seconds_up;
///
/// assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
/// assert_eq!(whole_seconds_up(Duration::from_secs(2)), 2);
/// assert_eq!(whole_seconds_up(Duration::from_nanos(2_000_000_001)), 3);
/// assert_eq!(whole_seconds_up(Duration::ZERO), 0);
/// ```
#[must_use]
pub fn whole_seconds_up(d: Duration) -> u64 {
    crate::nanos::ceil_secs(d)
}

/// The `RateLimit-Policy` value for `params`.
///
/// ```
/// use tower_freqlimit::FreqLimitParams;
/// use tower_freqlimit::http::policy_header;
///
/// let params = FreqLimitParams::per_second(10).with_burst(5);
/// assert_eq!(policy_header(&params), r#""default";q=5;w=1"#);
/// let params = FreqLimitParams::per_minute(20).with_burst(3);
/// assert_eq!(policy_header(&params), r#""default";q=3;w=9"#);
/// // 30 per second: the window is exactly 1 s (not 30 rounded-up intervals).
/// let params = FreqLimitParams::per_second(30).with_burst(30);
/// assert_eq!(policy_header(&params), r#""default";q=30;w=1"#);
/// ```
#[must_use]
pub fn policy_header(params: &FreqLimitParams) -> HeaderValue {
    header_value(
        "\"default\";q=",
        u64::from(params.burst()),
        ";w=",
        window_secs(params),
    )
}

/// A policy's window `w` in whole seconds, rounded up, at least 1: the time
/// the whole burst takes to refill, `burst x period / limit`. Computed from
/// the period, not as `burst` intervals: an interval is rounded up to the
/// nanosecond, so 30 per second would otherwise be a 2 s window.
fn window_secs(params: &FreqLimitParams) -> u64 {
    let per = u64::from(params.limit()).saturating_mul(1_000_000_000);
    let span = u64::try_from(params.period().as_nanos())
        .ok()
        .and_then(|period| period.checked_mul(u64::from(params.burst())));
    let secs = match span {
        Some(span) => span.div_ceil(per),
        // Past 584 years of nanoseconds: in 128 bits (a slower division).
        None => {
            let span = params.period().as_nanos() * u128::from(params.burst());
            u64::try_from(span.div_ceil(u128::from(per))).unwrap_or(u64::MAX)
        }
    };
    secs.max(1)
}

/// The `RateLimit` value: `remaining` calls now, full again after `reset_after`.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::http::state_header;
///
/// assert_eq!(state_header(0, Duration::from_millis(1500)), r#""default";r=0;t=2"#);
/// ```
#[must_use]
pub fn state_header(remaining: u32, reset_after: Duration) -> HeaderValue {
    header_value(
        "\"default\";r=",
        u64::from(remaining),
        ";t=",
        whole_seconds_up(reset_after),
    )
}

/// `{a}{x}{b}{y}` as a header value, formatted on the stack: these headers are
/// made on every rejection, where `format!` and its `String` showed up in
/// profiles of the 429 path.
fn header_value(a: &str, x: u64, b: &str, y: u64) -> HeaderValue {
    let mut buf = [0u8; 64];
    let mut len = 0;
    for part in [
        a.as_bytes(),
        digits(x, &mut [0; 20]),
        b.as_bytes(),
        digits(y, &mut [0; 20]),
    ] {
        buf[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("\"default\""))
}

/// The decimal digits of `n`, written at the end of `out`.
fn digits(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut start = out.len();
    loop {
        start -= 1;
        out[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &out[start..]
}

/// Adds `RateLimit-Policy` and `RateLimit` for an admitted request, as of the end
/// of its wait (when the response goes out): `t` is the admission's
/// `reset_after` less the time it waited.
///
/// ```
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
/// use tower_freqlimit::http::insert_admission_headers;
///
/// let params = FreqLimitParams::per_second(10).with_burst(5);
/// let admission = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap().admission;
/// let mut headers = http::HeaderMap::new();
/// insert_admission_headers(&mut headers, &params, &admission);
/// assert_eq!(headers["ratelimit"], r#""default";r=4;t=1"#);
/// ```
pub fn insert_admission_headers(
    headers: &mut HeaderMap,
    params: &FreqLimitParams,
    admission: &Admission,
) {
    headers.insert(RATELIMIT_POLICY, policy_header(params));
    let reset_after = admission.reset_after().saturating_sub(admission.delay());
    headers.insert(RATELIMIT, state_header(admission.remaining(), reset_after));
}

/// The response for a refusal:
///
/// | refusal | status | headers |
/// |---|---|---|
/// | [`FreqLimitError::Rejected`] | `429 Too Many Requests` | `Retry-After`, `RateLimit-Policy`, `RateLimit` |
/// | [`FreqLimitError::CostExceedsCapacity`] | `429 Too Many Requests` | `RateLimit-Policy` (no `Retry-After`: retrying cannot help) |
/// | [`FreqLimitError::KeyNotFound`], the client's omission ([`KeyNotFound::client_omitted`](crate::KeyNotFound::client_omitted)) | `400 Bad Request` | |
/// | [`FreqLimitError::KeyNotFound`], the server's setup ([`KeyNotFound::server_setup`](crate::KeyNotFound::server_setup)) | `500 Internal Server Error` | |
/// | [`FreqLimitError::Backend`] | `503 Service Unavailable` | |
///
/// (A backend of kind [`Full`](crate::BackendErrorKind::Full), a bounded
/// in-memory backend refusing a new key, or
/// [`Corrupt`](crate::BackendErrorKind::Corrupt), a Redis key holding a value
/// the backend cannot read, says so in its body.)
///
/// The body is a fixed one-line plain-text explanation (the figures are in the
/// headers); for a missing key, the [`KeyNotFound`](crate::KeyNotFound) message, which says what
/// to do. `params` gives the policy
/// header; pass `None` where it is not known.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{gcra, FreqLimitError, FreqLimitParams, Reserve};
/// use tower_freqlimit::http::refusal_response;
///
/// let params = FreqLimitParams::per_second(2);
/// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
/// let refusal = FreqLimitError::from(
///     gcra::reserve(first.new_tat, 0, &params, &Reserve::new().no_wait()).unwrap_err(),
/// );
/// let response = refusal_response::<String>(&refusal, Some(&params));
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1"); // 0.5 s, rounded up
/// assert_eq!(response.headers()["ratelimit"], r#""default";r=0;t=1"#);
/// ```
pub fn refusal_response<B: From<&'static str>>(
    refusal: &FreqLimitError,
    params: Option<&FreqLimitParams>,
) -> Response<B> {
    let status = match refusal {
        FreqLimitError::Rejected(_) | FreqLimitError::CostExceedsCapacity { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        FreqLimitError::KeyNotFound(missing) if missing.is_client_error() => {
            StatusCode::BAD_REQUEST
        }
        FreqLimitError::KeyNotFound(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FreqLimitError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    // Fixed texts: the figures are in the headers, and the 429 path must be cheap.
    let body = match refusal {
        FreqLimitError::Rejected(_) => "Too Many Requests: see Retry-After\n",
        FreqLimitError::CostExceedsCapacity { .. } => {
            "Too Many Requests: this request costs more than the limit ever admits at once\n"
        }
        FreqLimitError::KeyNotFound(missing) => missing.message(),
        FreqLimitError::Backend(err) if err.kind() == crate::BackendErrorKind::Full => {
            "rate-limit backend is full\n"
        }
        // Retrying will not help until someone deletes the key: say so.
        FreqLimitError::Backend(err) if err.kind() == crate::BackendErrorKind::Corrupt => {
            "rate-limit backend holds a corrupt value\n"
        }
        FreqLimitError::Backend(_) => "rate-limit backend unavailable\n",
    };
    let mut response = Response::new(B::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::TOO_MANY_REQUESTS
        && let Some(params) = params
    {
        headers.insert(RATELIMIT_POLICY, policy_header(params));
    }
    if let FreqLimitError::Rejected(rejection) = refusal {
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from(whole_seconds_up(rejection.retry_after())),
        );
        headers.insert(
            RATELIMIT,
            state_header(rejection.remaining(), rejection.reset_after()),
        );
    }
    response
}

/// Refusals become HTTP responses ([`refusal_response`]); the inner service's
/// error type is kept, so an axum service stays infallible. Optionally adds the
/// `RateLimit` headers to admitted responses too.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::FreqLimitParams;
/// use tower_freqlimit::http::HttpResponses;
/// use tower_freqlimit::layer::FreqLimitLayer;
///
/// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::global())
///     .on_refusal(HttpResponses::new().with_headers_on_success());
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpResponses {
    headers_on_success: bool,
}

impl HttpResponses {
    /// `429`/`500`/`503` responses for refusals, nothing added to admitted ones.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            headers_on_success: false,
        }
    }

    /// Also add `RateLimit-Policy` and `RateLimit` to admitted responses.
    #[must_use]
    pub const fn with_headers_on_success(mut self) -> Self {
        self.headers_on_success = true;
        self
    }
}

#[diagnostic::do_not_recommend]
impl<B, E> OnRefusal<Response<B>, E> for HttpResponses
where
    B: From<&'static str>,
{
    type Error = E;

    fn refused(&self, refusal: FreqLimitError, params: &FreqLimitParams) -> Result<Response<B>, E> {
        Ok(refusal_response(&refusal, Some(params)))
    }

    fn inner_error(&self, error: E) -> E {
        error
    }

    fn admitted(
        &self,
        mut response: Response<B>,
        admission: Option<&Admission>,
        params: &FreqLimitParams,
    ) -> Response<B> {
        if self.headers_on_success
            && let Some(admission) = admission
        {
            insert_admission_headers(response.headers_mut(), params, admission);
        }
        response
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for FreqLimitError {
    /// [`refusal_response`] without the policy header (the error does not know
    /// its params).
    fn into_response(self) -> axum_core::response::Response {
        refusal_response(&self, None)
    }
}

impl<B: crate::backends::FreqLimitBackend>
    crate::layer::FreqLimitLayer<B, crate::layer::Policy, HttpResponses>
{
    /// The server limiter: requests over the limit are **rejected at once**
    /// (nothing queues) with `429 Too Many Requests`, `Retry-After` and the
    /// IETF `RateLimit` headers ([`HttpResponses`]); one global bucket until
    /// [`key`](crate::layer::FreqLimitLayer::key) says otherwise. The inner
    /// service's error type is kept, so an axum `Router` takes it as it is.
    ///
    /// It is [`FreqLimitLayer::new`](crate::layer::FreqLimitLayer::new) (the
    /// pacing limiter, for clients) with
    /// [`no_wait`](crate::layer::FreqLimitLayer::no_wait) and
    /// [`http_responses`](crate::layer::FreqLimitLayer::http_responses).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{Router, routing::get};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::key::ClientIp;
    /// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
    ///
    /// # async fn serve() -> std::io::Result<()> {
    /// let limit = FreqLimitLayer::server(FreqLimitParams::per_second(2).with_burst(5), InMemoryBackend::new())
    ///     .key(ClientIp::peer());
    /// let app = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    /// # }
    /// ```
    pub fn server(params: FreqLimitParams, backend: B) -> Self {
        Self::with_parts(
            params,
            backend,
            Some(std::time::Duration::ZERO),
            HttpResponses::new(),
        )
    }
}

impl<B: Clone, P: Clone> crate::layer::FreqLimitLayer<B, P, crate::layer::RefuseWithError> {
    /// Refusals become HTTP responses: `429` with `Retry-After` and `RateLimit`
    /// headers (see [`HttpResponses`]).
    pub fn http_responses(self) -> crate::layer::FreqLimitLayer<B, P, HttpResponses> {
        self.on_refusal(HttpResponses::new())
    }
}

/// The type of [`FreqLimitLayer::server`](crate::FreqLimitLayer::server)`(params, backend)`
/// keyed by `K` (`.key(k)`): a layer that answers refusals with HTTP
/// responses. For naming it in a struct field or a function's return type.
///
/// ```
/// use std::net::IpAddr;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::ServerLayer;
/// use tower_freqlimit::key::ClientIp;
/// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
///
/// fn per_ip() -> ServerLayer<InMemoryBackend<IpAddr>, ClientIp> {
///     FreqLimitLayer::server(FreqLimitParams::per_second(10), InMemoryBackend::new())
///         .key(ClientIp::peer())
/// }
/// # let _ = per_ip();
/// ```
pub type ServerLayer<B, K = crate::layer::Global> =
    crate::layer::FreqLimitLayer<B, crate::layer::Policy<K>, HttpResponses>;

/// The service a [`ServerLayer`] makes around `S`.
pub type ServerService<S, B, K = crate::layer::Global> =
    crate::layer::FreqLimitService<S, B, crate::layer::Policy<K>, HttpResponses>;

/// The response future of a [`ServerService`] for requests of type `Req`: an
/// axum per-IP stack's is
/// `ServerFuture<axum::routing::Route, axum::extract::Request, InMemoryBackend<IpAddr>, ClientIp>`.
///
/// ```
/// use std::net::IpAddr;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::http::{ServerFuture, ServerService};
/// use tower_freqlimit::key::ClientIp;
///
/// type Inner = axum::routing::Route;
/// type Service = ServerService<Inner, InMemoryBackend<IpAddr>, ClientIp>;
/// type Future = ServerFuture<Inner, axum::extract::Request, InMemoryBackend<IpAddr>, ClientIp>;
/// fn _same(f: <Service as tower::Service<axum::extract::Request>>::Future) -> Future {
///     f
/// }
/// ```
pub type ServerFuture<S, Req, B, K = crate::layer::Global> =
    crate::layer::ResponseFuture<S, Req, B, crate::layer::Policy<K>, HttpResponses>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::window_secs;
    use crate::params::FreqLimitParams;

    /// `burst x period / limit`, rounded up, in 64 bits and past them.
    #[test]
    fn the_policy_window_is_the_burst_s_refill_time() {
        let window = |limit, secs, burst| {
            window_secs(&FreqLimitParams::new(
                limit,
                Duration::from_secs(secs),
                burst,
            ))
        };
        assert_eq!(window(30, 1, 30), 1);
        assert_eq!(window(20, 60, 3), 9);
        assert_eq!(window(7, 1, 1), 1, "at least 1");
        assert_eq!(window(3, 10, 2), 7, "6.67 s, rounded up");
        // 10^10 s x 10 is past 64 bits of nanoseconds: 10^9 per 10^10 s,
        // burst 10, refills in 100 s.
        assert_eq!(window(1_000_000_000, 10_000_000_000, 10), 100);
    }
}
