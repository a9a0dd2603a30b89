//! The future of a reservation: an answer at once, or one script call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::decision::Admission;
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};

/// The future of [`RedisBackend`](super::RedisBackend)'s reservations: one
/// script call (or an answer from the negative cache, at once).
#[must_use = "futures do nothing unless polled"]
pub struct RedisReserveFuture {
    state: FutureState,
}

type BoxedReserve = Pin<Box<dyn Future<Output = Result<Admission, FreqLimitError>> + Send>>;

enum FutureState {
    Ready(Option<Result<Admission, FreqLimitError>>),
    Pending(BoxedReserve),
}

impl fmt::Debug for RedisReserveFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReserveFuture")
            .field(
                "state",
                &match self.state {
                    FutureState::Ready(_) => "ready",
                    FutureState::Pending(_) => "pending",
                },
            )
            .finish()
    }
}

impl Future for RedisReserveFuture {
    type Output = Result<Admission, FreqLimitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutureState::Pending(fut) => fut.as_mut().poll(cx),
            FutureState::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(FreqLimitError::Backend(BackendError::new(
                    BackendErrorKind::Other,
                    "RedisReserveFuture polled after completion",
                )))
            })),
        }
    }
}

impl RedisReserveFuture {
    /// A future that yields `result` at once (an answer from the negative cache).
    pub(super) fn ready(result: Result<Admission, FreqLimitError>) -> Self {
        Self {
            state: FutureState::Ready(Some(result)),
        }
    }

    /// A future that yields what `fut` does (a call to Redis).
    pub(super) fn pending(
        fut: impl Future<Output = Result<Admission, FreqLimitError>> + Send + 'static,
    ) -> Self {
        Self {
            state: FutureState::Pending(Box::pin(fut)),
        }
    }
}
