//! Learning from the server: how long a response asks the client to hold off.
//!
//! A client paced below a remote API's limit can still meet a `429`: the limit
//! is tighter than configured, shared with other clients, or changed. A
//! [`Learner`] reads what the response says, and the limiter then pushes that
//! key's schedule back ([`FreqLimit::hold`](crate::FreqLimit::hold)), so no
//! request for the key goes out before the server's reset.
//!
//! What is read, the longest hold winning when several say something:
//!
//! | response | hold |
//! |---|---|
//! | `429` or `503` with `Retry-After: 30` | 30 s |
//! | `429` or `503` with `Retry-After: <HTTP date>` | until that date (nothing if it is past) |
//! | `RateLimit: "default";r=0;t=30` (IETF draft; any item with `r=0`) | 30 s |
//! | `RateLimit-Remaining: 0` + `RateLimit-Reset: 30` (earlier drafts) | 30 s |
//! | `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset: 30` | 30 s |
//! | `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset: 1767225600` | until that Unix time |
//! | `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset-After: 2.5` | 2.5 s |
//! | anything else, through [`Learner::custom`] | what the closure says |
//!
//! A reset of `10^9` or more is taken as a Unix time in seconds (GitHub, Twitter),
//! below as seconds from now (anything else would be a date before 2001).
//! Every hold is clamped to [`Learner::max_hold`] (one day by default), so a
//! server cannot stop a client for longer by accident or malice. Values that
//! do not parse are ignored: nothing here panics or fails.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, StatusCode};
//! use tower_freqlimit::learn::{HoldSource, Learner};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "30".parse()?);
//! let hold = Learner::new()
//!     .hold(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now())
//!     .unwrap();
//! assert_eq!(hold.duration(), Duration::from_secs(30));
//! assert_eq!(hold.source(), HoldSource::RetryAfter);
//!
//! // A 200 with a Retry-After asks nothing.
//! assert_eq!(Learner::new().hold(StatusCode::OK, &headers, SystemTime::now()), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod layer;

pub use layer::{LearnFuture, LearnLayer, LearnService, Learning};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, RETRY_AFTER};

/// Where a [`Hold`] was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldSource {
    /// `Retry-After` on a `429` or `503`.
    RetryAfter,
    /// The IETF `RateLimit` field (`r=0;t=...`), or the earlier drafts'
    /// `RateLimit-Remaining` / `RateLimit-Reset`.
    RateLimit,
    /// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` or
    /// `X-RateLimit-Reset-After`.
    XRateLimit,
    /// The closure given to [`Learner::custom`].
    Custom,
}

/// What a response asked: no request for its key within
/// [`duration`](Self::duration) from when it was read.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use tower_freqlimit::learn::Learner;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""default";r=0;t=12"#.parse()?);
/// let hold = Learner::new().hold(StatusCode::OK, &headers, SystemTime::now()).unwrap();
/// assert_eq!(hold.duration(), Duration::from_secs(12));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hold {
    duration: Duration,
    source: HoldSource,
}

impl Hold {
    /// How long to hold the key off, already clamped to
    /// [`Learner::max_hold`].
    #[must_use]
    pub const fn duration(&self) -> Duration {
        self.duration
    }

    /// Which field said so.
    #[must_use]
    pub const fn source(&self) -> HoldSource {
        self.source
    }
}

type CustomFn = dyn Fn(StatusCode, &HeaderMap) -> Option<Duration> + Send + Sync;

/// Reads how long a response asks the client to hold off (see the
/// [module](self) for the fields read).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, StatusCode};
/// use tower_freqlimit::learn::{HoldSource, Learner};
///
/// // A chat API that puts its wait in a header of its own, in milliseconds.
/// let learner = Learner::new()
///     .max_hold(Duration::from_secs(600))
///     .custom(|status, headers| {
///         let ms = headers.get("x-wait-ms")?.to_str().ok()?.parse().ok()?;
///         (status == StatusCode::TOO_MANY_REQUESTS).then(|| Duration::from_millis(ms))
///     });
/// let mut headers = HeaderMap::new();
/// headers.insert("x-wait-ms", "1500".parse()?);
/// let hold = learner.hold(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now()).unwrap();
/// assert_eq!((hold.duration(), hold.source()), (Duration::from_millis(1500), HoldSource::Custom));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Learner {
    max_hold: Duration,
    custom: Option<Arc<CustomFn>>,
}

impl fmt::Debug for Learner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Learner")
            .field("max_hold", &self.max_hold)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl Default for Learner {
    fn default() -> Self {
        Self::new()
    }
}

/// `RateLimit-Remaining` and `RateLimit-Reset`, from the IETF drafts before
/// the single `RateLimit` field.
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RATELIMIT_RESET_AFTER: HeaderName = HeaderName::from_static("x-ratelimit-reset-after");

/// Resets at or above this are Unix times, below it seconds from now.
const UNIX_TIME_FROM: f64 = 1e9;

impl Learner {
    /// The longest hold a response can ask for unless
    /// [`max_hold`](Self::max_hold) says otherwise: one day.
    pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);

    /// Reads the standard fields, holding at most
    /// [`DEFAULT_MAX_HOLD`](Self::DEFAULT_MAX_HOLD).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use http::{HeaderMap, StatusCode};
    /// use tower_freqlimit::learn::Learner;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-remaining", "0".parse()?);
    /// headers.insert("x-ratelimit-reset", "99999999".parse()?); // 3.2 years from now
    /// let hold = Learner::new().hold(StatusCode::OK, &headers, SystemTime::now()).unwrap();
    /// assert_eq!(hold.duration(), Learner::DEFAULT_MAX_HOLD);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_hold: Self::DEFAULT_MAX_HOLD,
            custom: None,
        }
    }

    /// Clamps every hold to `max` (a server asking for a week gets `max`).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::{HeaderMap, StatusCode};
    /// use tower_freqlimit::learn::Learner;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "604800".parse()?);
    /// let hold = Learner::new()
    ///     .max_hold(Duration::from_secs(60))
    ///     .hold(StatusCode::SERVICE_UNAVAILABLE, &headers, SystemTime::now())
    ///     .unwrap();
    /// assert_eq!(hold.duration(), Duration::from_secs(60));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = max;
        self
    }

    /// Also asks `custom` (for a server that says it some other way); its
    /// answer competes with the standard fields, the longest winning, and is
    /// clamped like them.
    #[must_use]
    pub fn custom<F>(mut self, custom: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> Option<Duration> + Send + Sync + 'static,
    {
        self.custom = Some(Arc::new(custom));
        self
    }

    /// How long the response (its `status` and `headers`, read at `now` on
    /// the wall clock, which HTTP dates and Unix times are compared with)
    /// asks to hold off; `None` when it asks nothing, or only for a time
    /// already past.
    #[must_use]
    pub fn hold(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Hold> {
        let limited =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        let found = [
            limited
                .then(|| retry_after(headers, now))
                .flatten()
                .map(|d| (d, HoldSource::RetryAfter)),
            ratelimit(headers).map(|d| (d, HoldSource::RateLimit)),
            legacy(headers, &RATELIMIT_REMAINING, &RATELIMIT_RESET, now)
                .map(|d| (d, HoldSource::RateLimit)),
            legacy(headers, &X_RATELIMIT_REMAINING, &X_RATELIMIT_RESET, now)
                .or_else(|| reset_after(headers))
                .map(|d| (d, HoldSource::XRateLimit)),
            self.custom
                .as_ref()
                .and_then(|custom| custom(status, headers))
                .map(|d| (d, HoldSource::Custom)),
        ];
        let (duration, source) = found
            .into_iter()
            .flatten()
            .filter(|(d, _)| !d.is_zero())
            .max_by_key(|(d, _)| *d)?;
        Some(Hold {
            duration: duration.min(self.max_hold),
            source,
        })
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = text(headers, &RETRY_AFTER)?;
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit saturate, as a long wait.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    httpdate::parse_http_date(value)
        .ok()?
        .duration_since(now)
        .ok()
}

/// The IETF `RateLimit` field: the longest `t` among items with `r=0`.
fn ratelimit(headers: &HeaderMap) -> Option<Duration> {
    let mut longest = None;
    for value in headers.get_all(&crate::http::RATELIMIT) {
        let Ok(list) = sfv::Parser::new(value.as_bytes()).parse_list::<sfv::List>() else {
            continue;
        };
        for entry in list {
            let sfv::ListEntry::Item(item) = entry else {
                continue;
            };
            let param = |name: &str| {
                item.params
                    .iter()
                    .find(|(key, _)| key.as_str() == name)
                    .and_then(|(_, value)| value.as_integer())
                    .map(i64::from)
            };
            if param("r") != Some(0) {
                continue;
            }
            let Some(t) = param("t").and_then(|t| u64::try_from(t).ok()) else {
                continue;
            };
            longest = longest.max(Some(Duration::from_secs(t)));
        }
    }
    longest
}

/// A pair of `*-Remaining: 0` and `*-Reset: <seconds or Unix time>`.
fn legacy(
    headers: &HeaderMap,
    remaining: &HeaderName,
    reset: &HeaderName,
    now: SystemTime,
) -> Option<Duration> {
    if seconds(text(headers, remaining)?)? != 0.0 {
        return None;
    }
    let reset = seconds(text(headers, reset)?)?;
    if reset >= UNIX_TIME_FROM {
        let at = UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(reset).ok()?)?;
        return at.duration_since(now).ok();
    }
    Duration::try_from_secs_f64(reset).ok()
}

/// `X-RateLimit-Reset-After` (seconds, fractions allowed) with
/// `X-RateLimit-Remaining: 0`.
fn reset_after(headers: &HeaderMap) -> Option<Duration> {
    if seconds(text(headers, &X_RATELIMIT_REMAINING)?)? != 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds(text(headers, &X_RATELIMIT_RESET_AFTER)?)?).ok()
}

/// A non-negative decimal number of seconds (`30`, `2.5`), finite.
fn seconds(value: &str) -> Option<f64> {
    // Digits and dots only (no sign, exponent, `inf` or `NaN`; what parses
    // of the rest is a number), and no novel: at most 32 bytes.
    if value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    value.parse().ok()
}
