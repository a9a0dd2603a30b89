//! A backend that is always down.

use std::future::{Ready, ready};
use std::hash::Hash;
use std::marker::PhantomData;

use tower_freqlimit::backends::{BorrowedKey, FreqLimitBackend};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{
    Admission, BackendError, BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve,
};

/// A backend whose every reservation fails with the same backend error; its
/// keys are `K`s.
pub struct DownBackend<K> {
    error: BackendError,
    key: PhantomData<fn() -> K>,
}

impl<K> DownBackend<K> {
    /// Failing with `BackendErrorKind::Unavailable` and nothing more to say.
    pub fn unavailable() -> Self {
        Self::failing_with(BackendError::from_kind(BackendErrorKind::Unavailable))
    }

    /// Failing with `error`.
    pub fn failing_with(error: BackendError) -> Self {
        Self {
            error,
            key: PhantomData,
        }
    }
}

impl<K> Clone for DownBackend<K> {
    fn clone(&self) -> Self {
        Self::failing_with(self.error.clone())
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> FreqLimitBackend for DownBackend<K> {
    type Key = K;
    type ReserveFuture = Ready<Result<Admission, FreqLimitError>>;

    fn reserve<Q: BorrowedKey<K> + ?Sized>(
        &self,
        _: Option<&Q>,
        _: Timestamp,
        _: &FreqLimitParams,
        _: Reserve,
    ) -> Self::ReserveFuture
    where
        K: std::borrow::Borrow<Q>,
    {
        ready(Err(self.error.clone().into()))
    }

    async fn clear(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
