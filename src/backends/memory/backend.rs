//! [`FreqLimitBackend`] for [`InMemoryBackend`]: the synchronous calls of
//! the backend, answered at once (every future is ready on its first poll),
//! and the refund of an abandoned reservation.

use std::borrow::Borrow;
use std::future::{Future, Ready, ready};
use std::hash::Hash;
use std::time::Duration;

use super::InMemoryBackend;
use super::bound::Bound;
use crate::backends::{BorrowedKey, FreqLimitBackend};
use crate::clock::{Clock, Timestamp};
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, FreqLimitError};
use crate::gcra::holes::GiveBack;
use crate::params::FreqLimitParams;

impl<K> FreqLimitBackend for InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;
    type ReserveFuture = Ready<Result<Admission, FreqLimitError>>;

    #[inline]
    fn reserve<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Self::ReserveFuture
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        ready(self.reserve_now(key, now, params, request))
    }

    #[inline]
    fn reserve_sync(
        &self,
        key: Option<&K>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> Option<Result<Admission, FreqLimitError>> {
        Some(self.reserve_now(key, now, params, request))
    }

    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.clear_now();
        ready(Ok(()))
    }

    fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    fn hold<Q>(
        &self,
        key: Option<&Q>,
        now: Timestamp,
        hold: Duration,
        params: &FreqLimitParams,
    ) -> impl Future<Output = Result<bool, FreqLimitError>> + Send + 'static
    where
        K: Borrow<Q>,
        Q: BorrowedKey<K> + ?Sized,
    {
        ready(self.hold_now(key, now, hold, params))
    }

    /// Gives the reservation's span back, whatever came after it: the key's
    /// last span lowers its TAT, an earlier one becomes a hole that the next
    /// reservations take first (see [`gcra::holes`](crate::gcra::holes)). Returns whether
    /// anything was given back: `false` for a cost-0 admission, a span given
    /// back already, or a key swept or cleared since.
    ///
    /// Call it once per admission ([`FreqLimit`](crate::FreqLimit) and the
    /// layer do): a span given back twice after another caller took it would
    /// be given twice.
    fn refund(&self, key: Option<&K>, admission: &Admission) -> bool {
        let token = admission.refund_token();
        let Some(end) = token.end else {
            return false;
        };
        let inner = &*self.inner;
        let given = match key {
            None => inner.holes.refund_global(&inner.global, token),
            Some(key) => {
                let own = inner
                    .tats
                    .get(key)
                    .map(|tat| inner.holes.refund_keyed(&tat, key, token));
                match own {
                    Some(given @ (GiveBack::Hole | GiveBack::Lowered(_))) => given,
                    // Swept since (nothing left to give back), or decided on
                    // its group's overflow bucket (given back there if nothing
                    // was reserved on it since).
                    _ => {
                        return inner
                            .bound
                            .as_ref()
                            .and_then(Bound::groups)
                            .is_some_and(|groups| groups.refund(key, end, token.start));
                    }
                }
            }
        };
        match given {
            GiveBack::Nothing => false,
            GiveBack::Hole => true,
            GiveBack::Lowered(tat) => {
                if key.is_some()
                    && let Some(bound) = &inner.bound
                {
                    bound.lowered(tat);
                }
                true
            }
        }
    }
}
