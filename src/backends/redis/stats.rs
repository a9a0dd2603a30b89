//! What a [`RedisBackend`](super::RedisBackend) did: the public [`RedisStats`]
//! and the shared counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what a [`RedisBackend`](super::RedisBackend) did, for monitoring
/// and benchmarks ([`RedisBackend::stats`](super::RedisBackend::stats)).
///
/// ```
/// use tower_freqlimit::backends::redis::RedisStats;
///
/// let stats = RedisStats::default();
/// assert_eq!(stats.script_calls, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Script calls sent to Redis for reservations: single ones, batches
    /// and leases (refunds are counted apart).
    pub script_calls: u64,
    /// Reservations rejected from the negative cache, without a round trip.
    pub cache_rejections: u64,
    /// Commands sent again after `NOSCRIPT`, `MOVED`/`ASK`, a busy cluster or a
    /// refused connection.
    pub retries: u64,
    /// Reservations that failed (timeout, connection, unexpected reply), whatever
    /// the policy did with them.
    pub failures: u64,
    /// Of those, the calls let through by [`FailurePolicy::Open`](super::FailurePolicy::Open).
    pub fail_open_admissions: u64,
    /// Refunds sent to Redis.
    pub refunds_sent: u64,
    /// Whether the backend holds Redis for unreachable right now: a call found
    /// the connection refused or lost, and no background probe has reached
    /// the server since. Calls meanwhile fail at once (as the
    /// [`FailurePolicy`](super::FailurePolicy) says), without waiting for a
    /// reconnection.
    pub circuit_open: bool,
    /// How many times the circuit opened.
    pub circuit_openings: u64,
    /// Calls answered by the open circuit, without trying Redis (counted in
    /// `failures` too).
    pub circuit_rejections: u64,
    /// Script calls that decided several reservations of one key queued in
    /// this process ([`batching`](super::RedisBackendBuilder::batching)).
    pub batches: u64,
    /// Reservations decided in those batches.
    pub batched: u64,
    /// Leases taken ([`leases`](super::RedisBackendBuilder::leases)): script
    /// calls that took slots (a call that found the key leased too far ahead
    /// took none and is not counted here).
    pub leases: u64,
    /// Slots those leases took.
    pub leased_slots: u64,
    /// Leased slots handed to a request.
    pub slots_used: u64,
    /// Leased slots whose interval passed with no request here to use them.
    pub slots_lost: u64,
    /// Leased slots given back to Redis before they fell due, for every
    /// process to take.
    pub slots_returned: u64,
}

/// The live counters, shared by a backend's clones.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) script_calls: AtomicU64,
    pub(super) cache_rejections: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) fail_open_admissions: AtomicU64,
    pub(super) refunds_sent: AtomicU64,
    pub(super) circuit_openings: AtomicU64,
    pub(super) circuit_rejections: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) batched: AtomicU64,
    pub(super) leases: AtomicU64,
    pub(super) leased_slots: AtomicU64,
    pub(super) slots_used: AtomicU64,
    pub(super) slots_lost: AtomicU64,
    pub(super) slots_returned: AtomicU64,
}

impl Counters {
    /// The counters as they are now, and the circuit's state.
    pub(super) fn snapshot(&self, circuit_open: bool) -> RedisStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            script_calls: get(&self.script_calls),
            cache_rejections: get(&self.cache_rejections),
            retries: get(&self.retries),
            failures: get(&self.failures),
            fail_open_admissions: get(&self.fail_open_admissions),
            refunds_sent: get(&self.refunds_sent),
            circuit_open,
            circuit_openings: get(&self.circuit_openings),
            circuit_rejections: get(&self.circuit_rejections),
            batches: get(&self.batches),
            batched: get(&self.batched),
            leases: get(&self.leases),
            leased_slots: get(&self.leased_slots),
            slots_used: get(&self.slots_used),
            slots_lost: get(&self.slots_lost),
            slots_returned: get(&self.slots_returned),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
