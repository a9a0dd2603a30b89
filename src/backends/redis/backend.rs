//! [`RedisBackend`] as a [`FreqLimitBackend`]: each call encodes its key and
//! hands it to the shared state (`inner.rs`).

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use super::key::{RedisKey, encode_borrowed, encode_key};
use super::script::Micros;
use super::{RedisBackend, RedisReserveFuture};
use crate::backends::{BorrowedKey, FreqLimitBackend};
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, FreqLimitError};
use crate::params::FreqLimitParams;

impl<K> FreqLimitBackend for RedisBackend<K>
where
    K: RedisKey + Hash + Eq + Clone + Send + Sync,
{
    type Key = K;
    type ReserveFuture = RedisReserveFuture;

    fn reserve<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> RedisReserveFuture
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        let key = encode_borrowed(&self.inner.prefix, key);
        self.inner.start_reserve(key, now, params, request)
    }

    /// A key that the negative cache remembers as over its limit is refused
    /// here, with no round trip and no future (the Tower layer then answers it
    /// inside `call`); everything else goes to Redis through
    /// [`reserve`](Self::reserve).
    fn reserve_sync(
        &self,
        key: Option<&K>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Option<Result<Admission, FreqLimitError>> {
        // Without a cache or leases there is nothing to look up: no key to
        // encode.
        if self.inner.cache.is_none() && !self.inner.leasing() {
            return None;
        }
        let key = encode_key(&self.inner.prefix, key);
        if let Some(answer) = self.inner.leased(&key, now, params, &request, false) {
            return Some(answer);
        }
        self.inner
            .cached_rejection(&key, now, &Micros::new(params, &request))
            .map(Err)
    }

    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        let inner = Arc::clone(&self.inner);
        async move { inner.clear().await }
    }

    /// One script call (`hold.lua`): every process sharing the server holds
    /// the key at once. The hold counts from the server's time (or the
    /// configured [`RedisClock`](super::RedisClock)); this process's negative cache remembers it.
    fn hold<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        hold: std::time::Duration,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<bool, FreqLimitError>> + Send + 'static
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        let key = encode_borrowed(&self.inner.prefix, key);
        let inner = Arc::clone(&self.inner);
        let params = *params;
        let asked = std::time::Instant::now();
        async move { inner.hold(key, now, hold, params, asked).await }
    }

    /// Sends the compare-and-swap in the background (a spawned task, bounded by
    /// the timeout) and returns `true` once it is on its way; `false` when there
    /// is nothing to give back or no Tokio runtime to send it from. Whether it
    /// took effect on the server is not waited for.
    fn refund(&self, key: Option<&K>, admission: &Admission) -> bool {
        self.inner.send_refund(key, admission)
    }
}
