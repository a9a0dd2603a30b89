//! The two choices about Redis itself: what a call does when Redis cannot
//! decide ([`FailurePolicy`]) and whose clock the script uses ([`RedisClock`]).

/// What a reservation does when Redis cannot decide it: unreachable, slower than
/// the [`timeout`](super::RedisBackendBuilder::timeout), or answering something
/// unexpected.
///
/// ```
/// use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend};
///
/// let builder = RedisBackend::<String>::builder().failure_policy(FailurePolicy::Open);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse the call with
    /// [`FreqLimitError::Backend`](crate::FreqLimitError::Backend) (in HTTP,
    /// `503 Service Unavailable`). No call passes unchecked. The default.
    #[default]
    Closed,
    /// Let the call through at once, as if its key were new, and say so: an
    /// admission whose [`is_fail_open`](crate::Admission::is_fail_open) is
    /// `true`, a `tracing` debug event per call and a warning at most once a
    /// second with the number of calls let through since the last one (target
    /// `tower_freqlimit::redis`; keys are never logged). Availability over the
    /// limit: while Redis is down, nothing is limited.
    Open,
}

/// Whose clock the reservation script uses.
///
/// ```
/// use tower_freqlimit::backends::redis::{RedisBackend, RedisClock};
///
/// // For a server that refuses TIME in scripts, on hosts kept in sync (NTP).
/// let builder = RedisBackend::<String>::builder().clock(RedisClock::HostWallClock);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RedisClock {
    /// The server's `TIME`, read inside the script: every host agrees whatever
    /// its own clock says. The default.
    #[default]
    Server,
    /// This host's wall clock (microseconds since the Unix epoch), sent with each
    /// call, for servers that refuse `TIME` in scripts (old versions, some
    /// compatible servers and proxies). **Caveat:** hosts whose clocks disagree
    /// by `d` disagree on every key's debt by `d`: a host ahead admits early, up to
    /// `d / T` more calls than the limit, and one behind makes its callers wait
    /// longer. Keep the clocks synchronised (NTP) well below `T`.
    HostWallClock,
    /// The `now` the limiter passes to
    /// [`FreqLimitBackend::reserve`](crate::FreqLimitBackend::reserve) (a
    /// process-local [`Timestamp`](crate::clock::Timestamp)): exact and
    /// reproducible, for tests and for a single process only. Timestamps of
    /// different processes are on different scales, so processes sharing keys
    /// must not use it. Since these instants need not follow the server's
    /// clock, keys are kept ten minutes past their TAT (harmless: a drained key
    /// is as good as a new one).
    LimiterTimestamp,
}
