//! A [`reqwest_middleware`] middleware that paces outbound requests and learns
//! from the server's `429` (feature `reqwest`).
//!
//! [`FreqLimitMiddleware`] waits for each request's slot before sending it
//! (or refuses it, with [`max_wait`](FreqLimitMiddleware::max_wait)), keyed by
//! the URL's host and port unless told otherwise. When a response says to slow
//! down (`Retry-After` on a `429`/`503`, the `RateLimit` headers, see
//! [`learn`](crate::learn)), the key is held back until the server's reset, so
//! the next requests wait instead of meeting the same `429`. With a shared
//! backend (Redis), every process learns at once.
//!
//! The feature depends on `reqwest` and `reqwest-middleware` without their TLS
//! features: your own `reqwest` brings the TLS it chose.
//!
//! # Example
//!
//! ```no_run
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::reqwest::FreqLimitMiddleware;
//! use tower_freqlimit::FreqLimitParams;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(FreqLimitMiddleware::new(FreqLimitParams::per_second(5), InMemoryBackend::new()))
//!     .build();
//! // At most 5 requests a second to each host; a 429's Retry-After holds the host back.
//! let body = client.get("http://127.0.0.1:8080/items").send().await?.text().await?;
//! # let _ = body;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::reqwest::{Method, Request, Response, StatusCode};
use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use crate::backends::FreqLimitBackend;
use crate::decision::Reserve;
use crate::learn::Learner;
use crate::limiter::FreqLimit;
use crate::params::FreqLimitParams;

type KeyFn<K> = dyn Fn(&Request) -> Option<K> + Send + Sync;
type ParamsFn = dyn Fn(&Request) -> FreqLimitParams + Send + Sync;
type CostFn = dyn Fn(&Request) -> u32 + Send + Sync;

/// The default key: the URL's host and port (`api.example.com:443`), so each
/// server gets its own pace. `None` (the global bucket) for a URL without a
/// host.
///
/// ```
/// use tower_freqlimit::reqwest::host_and_port;
///
/// let req = reqwest::Request::new(reqwest::Method::GET, "https://api.example.com/v1/items".parse()?);
/// assert_eq!(host_and_port(&req).as_deref(), Some("api.example.com:443"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn host_and_port(req: &Request) -> Option<String> {
    let url = req.url();
    let host = url.host_str()?;
    Some(match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// Paces requests through a [`FreqLimit`]: see the [module](self).
///
/// By default a request waits as long as its slot needs, is keyed by
/// [`host_and_port`], learns from every response ([`Learner::new`]), and a
/// refused request is not retried.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::reqwest::FreqLimitMiddleware;
/// use tower_freqlimit::FreqLimitParams;
///
/// let middleware = FreqLimitMiddleware::new(FreqLimitParams::per_second(10), InMemoryBackend::new())
///     .key(|req: &reqwest::Request| req.headers().get("x-tenant")?.to_str().ok().map(String::from))
///     .max_wait(Duration::from_secs(2)) // refuse what would wait longer
///     .retry(2); // after a learned hold, up to 2 more attempts (GET, PUT, ... only)
/// # let _ = middleware;
/// ```
pub struct FreqLimitMiddleware<B: FreqLimitBackend> {
    limiter: FreqLimit<B>,
    key: Arc<KeyFn<B::Key>>,
    params: Option<Arc<ParamsFn>>,
    cost: Option<Arc<CostFn>>,
    max_wait: Option<Duration>,
    learner: Option<Learner>,
    retries: u32,
    any_method: bool,
}

impl<B: FreqLimitBackend> fmt::Debug for FreqLimitMiddleware<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreqLimitMiddleware")
            .field("params", self.limiter.params())
            .field("max_wait", &self.max_wait)
            .field("learner", &self.learner)
            .field("retries", &self.retries)
            .field("any_method", &self.any_method)
            .finish_non_exhaustive()
    }
}

impl<B> FreqLimitMiddleware<B>
where
    B: FreqLimitBackend<Key = String>,
{
    /// Paces requests to each host (and port) at `params`, with state in
    /// `backend`.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::reqwest::FreqLimitMiddleware;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(FreqLimitMiddleware::new(FreqLimitParams::per_minute(60), InMemoryBackend::new()))
    ///     .build();
    /// # let _ = client;
    /// ```
    #[must_use]
    pub fn new(params: FreqLimitParams, backend: B) -> Self {
        Self::keyed_by(params, backend, host_and_port)
    }
}

impl<B: FreqLimitBackend> FreqLimitMiddleware<B> {
    /// Paces requests keyed by `key` (`None`: the global bucket), for a
    /// backend whose keys are not `String`s.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::reqwest::FreqLimitMiddleware;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// // One limit for everything this client sends.
    /// let global = FreqLimitMiddleware::keyed_by(
    ///     FreqLimitParams::per_second(30),
    ///     InMemoryBackend::global(),
    ///     |_: &reqwest::Request| None,
    /// );
    /// # let _ = global;
    /// ```
    #[must_use]
    pub fn keyed_by<F>(params: FreqLimitParams, backend: B, key: F) -> Self
    where
        F: Fn(&Request) -> Option<B::Key> + Send + Sync + 'static,
    {
        Self {
            limiter: FreqLimit::new(params, backend),
            key: Arc::new(key),
            params: None,
            cost: None,
            max_wait: None,
            learner: Some(Learner::new()),
            retries: 0,
            any_method: false,
        }
    }

    /// Keys requests with `key` instead (`None`: the global bucket).
    #[must_use]
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Request) -> Option<B::Key> + Send + Sync + 'static,
    {
        self.key = Arc::new(key);
        self
    }

    /// Gives each request its own params (an endpoint with a tighter limit).
    #[must_use]
    pub fn params_for<F>(mut self, params: F) -> Self
    where
        F: Fn(&Request) -> FreqLimitParams + Send + Sync + 'static,
    {
        self.params = Some(Arc::new(params));
        self
    }

    /// Gives each request a cost (a batch of `n` items costs `n`). A cost of
    /// 0 consumes nothing but waits as a unit request would.
    #[must_use]
    pub fn cost_for<F>(mut self, cost: F) -> Self
    where
        F: Fn(&Request) -> u32 + Send + Sync + 'static,
    {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Refuses (with a [`FreqLimitError`](crate::FreqLimitError) inside
    /// [`reqwest_middleware::Error::Middleware`]) a request that would wait
    /// longer than `max_wait`; `Duration::ZERO` never waits.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Reads the server's hints with `learner` (a clamp, a closure for a
    /// server's own field) instead of [`Learner::new`].
    #[must_use]
    pub fn learn(mut self, learner: Learner) -> Self {
        self.learner = Some(learner);
        self
    }

    /// Ignores what responses say: the configured pace only.
    #[must_use]
    pub fn without_learning(mut self) -> Self {
        self.learner = None;
        self
    }

    /// After a response that taught a hold (a `429` with `Retry-After`, say),
    /// sends the request again, up to `attempts` more times, once its slot
    /// comes. Off (0) by default. Only idempotent methods (`GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`, `PUT`, `DELETE`) and requests whose body can be
    /// cloned are retried, unless [`retry_any_method`](Self::retry_any_method).
    #[must_use]
    pub fn retry(mut self, attempts: u32) -> Self {
        self.retries = attempts;
        self
    }

    /// Retries `POST` and `PATCH` too: for APIs where a refused request is
    /// known not to have been acted on.
    #[must_use]
    pub fn retry_any_method(mut self) -> Self {
        self.any_method = true;
        self
    }

    /// Names the limiter in metrics and traces.
    #[must_use]
    pub fn name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.limiter = self.limiter.name(name);
        self
    }

    fn may_retry(&self, method: &Method) -> bool {
        self.any_method
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
    }

    async fn send(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let key = (self.key)(&req);
        let params = self
            .params
            .as_ref()
            .map_or(*self.limiter.params(), |params| params(&req));
        let mut ask = Reserve::new().cost(self.cost.as_ref().map_or(1, |cost| cost(&req)));
        if let Some(max_wait) = self.max_wait {
            ask = ask.max_wait(max_wait);
        }
        let mut retries_left = if self.may_retry(req.method()) {
            self.retries
        } else {
            0
        };
        loop {
            self.limiter
                .acquire_under(key.as_ref(), &params, ask)
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            let again = if retries_left > 0 {
                req.try_clone()
            } else {
                None
            };
            let response = next.clone().run(req, extensions).await?;
            let Some(learner) = &self.learner else {
                return Ok(response);
            };
            let Some(hold) = learner.hold(response.status(), response.headers(), SystemTime::now())
            else {
                return Ok(response);
            };
            // A failed hold (a backend down) must not fail a response that
            // arrived: the pace goes on as configured.
            let _ = self
                .limiter
                .hold_under(key.as_ref(), &params, hold.duration())
                .await;
            let refused = matches!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            match again {
                Some(again) if refused => {
                    retries_left -= 1;
                    req = again;
                }
                _ => return Ok(response),
            }
        }
    }
}

/// Each request waits for its slot (or is refused), is sent, and teaches
/// the limiter what its response says.
impl<B> Middleware for FreqLimitMiddleware<B>
where
    B: FreqLimitBackend + 'static,
{
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send(req, extensions, next))
    }
}
