//! The futures of the backend's calls: an answer at once, or one script call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::backends::compound::CompoundAdmission;
use crate::decision::Admission;
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};

/// An answer known at once, or the call to Redis that will give it.
enum Answer<T> {
    Ready(Option<Result<T, FreqLimitError>>),
    Pending(Pin<Box<dyn Future<Output = Result<T, FreqLimitError>> + Send>>),
}

impl<T> Answer<T> {
    const fn state(&self) -> &'static str {
        match self {
            Self::Ready(_) => "ready",
            Self::Pending(_) => "pending",
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, name: &str) -> Poll<Result<T, FreqLimitError>> {
        match self {
            Self::Pending(fut) => fut.as_mut().poll(cx),
            Self::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(FreqLimitError::Backend(BackendError::new(
                    BackendErrorKind::Other,
                    format!("{name} polled after completion"),
                )))
            })),
        }
    }
}

/// The future of [`RedisBackend`](super::RedisBackend)'s reservations: one
/// script call (or an answer from the negative cache, at once).
#[must_use = "futures do nothing unless polled"]
pub struct RedisReserveFuture {
    state: Answer<Admission>,
}

impl fmt::Debug for RedisReserveFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReserveFuture")
            .field("state", &self.state.state())
            .finish()
    }
}

impl Future for RedisReserveFuture {
    type Output = Result<Admission, FreqLimitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.state.poll(cx, "RedisReserveFuture")
    }
}

impl RedisReserveFuture {
    /// A future that yields `result` at once (an answer from the negative cache).
    pub(super) fn ready(result: Result<Admission, FreqLimitError>) -> Self {
        Self {
            state: Answer::Ready(Some(result)),
        }
    }

    /// A future that yields what `fut` does (a call to Redis).
    pub(super) fn pending(
        fut: impl Future<Output = Result<Admission, FreqLimitError>> + Send + 'static,
    ) -> Self {
        Self {
            state: Answer::Pending(Box::pin(fut)),
        }
    }
}

/// The future of [`RedisBackend`](super::RedisBackend)'s compound
/// reservations
/// ([`reserve_compound`](crate::backends::compound::CompoundBackend::reserve_compound)):
/// one script call for every limit (or an error at once: parts that are not a
/// compound, keys in different cluster slots, an open circuit).
///
/// ```no_run
/// use tower_freqlimit::backends::compound::{CompoundBackend, Part};
/// use tower_freqlimit::backends::redis::{RedisBackend, RedisCompoundFuture};
/// use tower_freqlimit::clock::Timestamp;
/// use tower_freqlimit::{FreqLimitParams, Reserve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
/// let (per_user, global) = (FreqLimitParams::per_second(1), FreqLimitParams::per_second(100));
/// let user = "ann".to_owned();
/// let parts = [Part::new(Some(&user), &per_user), Part::new(None, &global)];
/// let future: RedisCompoundFuture = backend.reserve_compound(&parts, Timestamp::now(), Reserve::new());
/// let admitted = future.await?;
/// assert_eq!(admitted.parts().len(), 2);
/// # Ok(())
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct RedisCompoundFuture {
    state: Answer<CompoundAdmission>,
}

impl fmt::Debug for RedisCompoundFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCompoundFuture")
            .field("state", &self.state.state())
            .finish()
    }
}

impl Future for RedisCompoundFuture {
    type Output = Result<CompoundAdmission, FreqLimitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.state.poll(cx, "RedisCompoundFuture")
    }
}

impl RedisCompoundFuture {
    /// A future that yields `result` at once.
    pub(super) fn ready(result: Result<CompoundAdmission, FreqLimitError>) -> Self {
        Self {
            state: Answer::Ready(Some(result)),
        }
    }

    /// A future that yields what `fut` does (a call to Redis).
    pub(super) fn pending(
        fut: impl Future<Output = Result<CompoundAdmission, FreqLimitError>> + Send + 'static,
    ) -> Self {
        Self {
            state: Answer::Pending(Box::pin(fut)),
        }
    }
}
