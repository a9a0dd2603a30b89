//! Errors: a refused call, an impossible cost, a backend that failed.

use std::error::Error as StdError;
use std::fmt;

pub use crate::decision::Rejection;
use crate::gcra::Refusal;

/// Why a call was not admitted.
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u64>::new());
/// limiter.try_acquire(&7).await.unwrap();
/// match limiter.try_acquire(&7).await {
///     Err(FreqLimitError::Rejected(rejection)) => {
///         assert_eq!(rejection.retry_after().as_secs(), 1);
///     }
///     other => panic!("expected a rejection, got {other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreqLimitError {
    /// The call would have waited longer than its `max_wait`. Nothing was
    /// consumed; the same call made [`Rejection::retry_after`] later is admitted.
    Rejected(Rejection),
    /// The call's cost can never be admitted within its `max_wait`, even on a full
    /// bucket: retrying will not help. In reject-only mode, a cost above `burst`.
    CostExceedsCapacity {
        /// The cost asked for.
        cost: u32,
        /// The largest cost these params admit within the call's `max_wait`.
        max_cost: u32,
    },
    /// The backend could not decide (unreachable, timed out, full, ...).
    Backend(BackendError),
    /// The layer's key extractor found no key in the request and the layer is set
    /// to refuse such requests ([`MissingKey::Refuse`](crate::layer::MissingKey::Refuse)).
    /// [`KeyNotFound`] says why, and whether the client or the server's setup
    /// is at fault.
    KeyNotFound(KeyNotFound),
}

impl fmt::Display for FreqLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(rejection) => rejection.fmt(f),
            Self::CostExceedsCapacity { cost, max_cost } => Refusal::CostExceedsCapacity {
                cost: *cost,
                max_cost: *max_cost,
            }
            .fmt(f),
            Self::Backend(err) => err.fmt(f),
            Self::KeyNotFound(missing) => missing.fmt(f),
        }
    }
}

impl StdError for FreqLimitError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Backend(err) => Some(err),
            _ => None,
        }
    }
}

impl From<BackendError> for FreqLimitError {
    fn from(err: BackendError) -> Self {
        Self::Backend(err)
    }
}

impl From<KeyNotFound> for FreqLimitError {
    fn from(missing: KeyNotFound) -> Self {
        Self::KeyNotFound(missing)
    }
}

impl From<Refusal> for FreqLimitError {
    #[inline]
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Rejected(rejection) => Self::Rejected(rejection),
            Refusal::CostExceedsCapacity { cost, max_cost } => {
                Self::CostExceedsCapacity { cost, max_cost }
            }
        }
    }
}

impl From<Rejection> for FreqLimitError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

/// Why a request has no rate-limit key, and whose fault that is.
///
/// * [`server_setup`](Self::server_setup): the server did not record what the
///   extractor reads (no peer address: axum served without
///   `into_make_service_with_connect_info`, or the `axum` feature off). Over
///   HTTP a `500`, whose body is the message, so the fix is one look away.
/// * [`client_omitted`](Self::client_omitted): the client left out what the
///   key is made from (an API-key header). Over HTTP a `400 Bad Request`; to
///   let such requests on to an authentication layer instead (which answers
///   `401`), set [`MissingKey::Allow`](crate::layer::MissingKey::Allow).
///
/// The message is a fixed text (no allocation on the request path).
///
/// ```
/// use tower_freqlimit::{FreqLimitError, KeyNotFound};
///
/// const NO_TOKEN: KeyNotFound = KeyNotFound::client_omitted("the request has no API token");
/// assert!(NO_TOKEN.is_client_error());
/// assert_eq!(FreqLimitError::from(NO_TOKEN).to_string(), "the request has no API token");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyNotFound {
    client_error: bool,
    message: &'static str,
}

impl KeyNotFound {
    /// What a key extractor that says nothing more reports (a closure that
    /// returned `None`): a server-side fault, `500` over HTTP.
    pub const UNSPECIFIED: Self = Self::server_setup(
        "the request carries no rate-limit key: the layer's key extractor found none",
    );

    /// The server's setup left out what the extractor reads: a `500`.
    #[must_use]
    pub const fn server_setup(message: &'static str) -> Self {
        Self {
            client_error: false,
            message,
        }
    }

    /// The client left out what its key is made from: a `400`.
    #[must_use]
    pub const fn client_omitted(message: &'static str) -> Self {
        Self {
            client_error: true,
            message,
        }
    }

    /// Whether the client is at fault (`400`) rather than the server (`500`).
    #[must_use]
    pub const fn is_client_error(&self) -> bool {
        self.client_error
    }

    /// What is missing and what to do about it.
    #[must_use]
    pub const fn message(&self) -> &'static str {
        self.message
    }
}

impl fmt::Display for KeyNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl StdError for KeyNotFound {}

/// What kind of failure a [`BackendError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The store could not be reached.
    Unavailable,
    /// The store did not answer in time; the reservation may or may not have been
    /// made, so it must not be retried blindly.
    Timeout,
    /// The store answered something unexpected.
    Protocol,
    /// The store is full and refuses new keys.
    Full,
    /// The key holds a value the backend did not write and will not read (a
    /// Redis key holding `inf`, `1e300`, `-5`, ...: someone else's write, or
    /// a hand edit). Nothing was stored and retrying will not help: delete the
    /// key (`DEL`) and the next call starts it fresh (see the Redis backend's
    /// module docs). The message says what is wrong with the value.
    ///
    /// ```
    /// use tower_freqlimit::{BackendError, BackendErrorKind, FreqLimitError};
    ///
    /// fn what_to_do(err: &FreqLimitError) -> &'static str {
    ///     match err {
    ///         FreqLimitError::Backend(e) if e.kind() == BackendErrorKind::Corrupt => {
    ///             "delete the key: the next call starts it fresh"
    ///         }
    ///         FreqLimitError::Backend(_) => "retry later",
    ///         _ => "not a backend failure",
    ///     }
    /// }
    ///
    /// let err = FreqLimitError::Backend(BackendError::from_kind(BackendErrorKind::Corrupt));
    /// assert_eq!(what_to_do(&err), "delete the key: the next call starts it fresh");
    /// assert_eq!(err.to_string(), "rate-limit backend holds a corrupt value");
    /// ```
    Corrupt,
    /// Anything else.
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "rate-limit backend unavailable",
            Self::Timeout => "rate-limit backend timed out",
            Self::Protocol => "rate-limit backend gave an unexpected answer",
            Self::Full => "rate-limit backend is full",
            Self::Corrupt => "rate-limit backend holds a corrupt value",
            Self::Other => "rate-limit backend failed",
        })
    }
}

/// A backend could not make a decision.
///
/// The kind says what to do about it (see [`BackendErrorKind`]); the source, when
/// there is one, says why.
///
/// ```
/// use std::io;
/// use tower_freqlimit::{BackendError, BackendErrorKind};
///
/// let err = BackendError::new(
///     BackendErrorKind::Unavailable,
///     io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"),
/// );
/// assert_eq!(err.kind(), BackendErrorKind::Unavailable);
/// assert_eq!(err.to_string(), "rate-limit backend unavailable: connection refused");
/// ```
#[derive(Debug, Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    // `Arc` so the error stays `Clone` (a service may hand it to several callers).
    source: Option<std::sync::Arc<dyn StdError + Send + Sync>>,
}

impl BackendError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: BackendErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: Some(std::sync::Arc::from(source.into())),
        }
    }

    /// An error of `kind` with nothing more to say.
    #[must_use]
    pub const fn from_kind(kind: BackendErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// What kind of failure this is.
    #[must_use]
    pub const fn kind(&self) -> BackendErrorKind {
        self.kind
    }
}

impl PartialEq for BackendError {
    /// Errors are equal when their kinds and messages are.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.to_string() == other.to_string()
    }
}

impl Eq for BackendError {}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.kind),
            None => self.kind.fmt(f),
        }
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}
