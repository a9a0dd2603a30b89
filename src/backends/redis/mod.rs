//! One limit shared by every process and host: GCRA state in Redis (feature
//! `redis`).
//!
//! [`RedisBackend`] keeps each key's TAT in Redis, Valkey, a Redis Cluster or a
//! primary found through Redis Sentinel
//! ([`connect_sentinel`](RedisBackendBuilder::connect_sentinel), which follows
//! failovers) and
//! runs the GCRA step there, atomically, in one Lua script call per reservation,
//! so replicas behind a load balancer share one limit exactly as the threads of
//! one process share the in-memory backend's.
//!
//! * **Same semantics as [`InMemoryBackend`](super::memory::InMemoryBackend)**:
//!   waiting, bounded waits whose rejection consumes nothing, cost,
//!   `remaining`/`reset_after`, refunds of cancelled waits (any slot, not only
//!   the last: the key's holes live in its own value, after the TAT, so one
//!   script call on one key still does it all), the global bucket `None`.
//! * **The server's clock** (`TIME`, by default): hosts with skewed clocks agree.
//!   Time is integer microseconds; `T` is rounded *up* to the microsecond (see
//!   [below](#time-and-rounding)).
//! * **One key per script call** (`KEYS[1]`, never built inside Lua), so it works
//!   unchanged on a Redis Cluster; keys expire (`PX`) exactly when their TAT has
//!   passed, so Redis holds nothing for idle keys and forgets no debt.
//!   ([Compound limits](#compound-limits) pass every limit's key to one call:
//!   on a cluster, their prefix needs a hash tag.)
//! * **A failure policy** ([`FailurePolicy`]): a per-call timeout, then either a
//!   typed error (fail-closed, the default; `503` in HTTP) or the call let through
//!   and reported through `tracing` (fail-open). Calls whose outcome is unknown
//!   are never retried; while Redis is known to be down, calls fail at once.
//! * **A negative cache**: a key rejected by Redis is remembered locally until
//!   its debt is due, so a flood from one client over its limit costs one round
//!   trip per retry window instead of one per request. Its rejections promise
//!   what the server's do: the same call made
//!   [`retry_after`](crate::Rejection::retry_after) later is admitted (with
//!   nothing else happening on the key).
//! * **Hot keys** (opt-in): [`batching`](RedisBackendBuilder::batching)
//!   decides the reservations of one key queued while a call for it is in
//!   flight in one script call, exactly as one by one;
//!   [`leases`](RedisBackendBuilder::leases) take slots of a key this process
//!   calls far over its limit in one call and hand them out locally, within
//!   `burst + w/T + 1` across all processes. The
//!   [guide](crate::guide::redis#hot-keys-batches-and-leases) says which to
//!   choose.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_freqlimit::backends::redis::RedisBackend;
//! use tower_freqlimit::{FreqLimit, FreqLimitParams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisBackend::<String>::builder()
//!     .prefix("myapp:ratelimit")
//!     .timeout(Duration::from_millis(50))
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//! let limiter = FreqLimit::new(FreqLimitParams::per_second(10).with_burst(5), backend);
//! // Every process running this shares user 42's ten calls per second.
//! limiter.acquire("user:42").await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Keys in Redis
//!
//! A key `k` is stored at `{prefix}:k:{k}` and the global bucket (`None`) at
//! `{prefix}:g` (the prefix is `freqlimit` unless set). The bytes of `k` come from
//! its [`RedisKey`] encoding, which is one-to-one for each key type (strings as
//! their UTF-8 bytes, integers in decimal, IP addresses in their canonical text),
//! and the `k:`/`g` tag keeps the global bucket apart from every key: the key
//! `"None"` is `freqlimit:k:None`, never the global bucket. Give each limit its
//! own prefix (two limits sharing a prefix share their TATs), and do not nest
//! prefixes (`app` and `app:k:x` could meet).
//!
//! On a cluster the slot of each key is that of its whole name, so keys spread
//! over the nodes; a prefix containing a hash tag (`{limits}`) puts every key
//! on one node, which [compound limits](#compound-limits) need.
//!
//! # Compound limits
//!
//! [`RedisBackend`] is a
//! [`CompoundBackend`](crate::backends::compound::CompoundBackend): one
//! `EVALSHA` decides every limit of a [`CompoundLimit`](crate::CompoundLimit)
//! (holes included, as in memory) and writes every key, or none on a
//! refusal. The keys are those of single limits. On a cluster the prefix
//! needs a hash tag (`{bot}:limits`), which `CompoundLimit::new` checks. The
//! [guide](crate::guide::redis#compound-limits) says more.
//!
//! # Time and rounding
//!
//! The script reads the server's `TIME` in microseconds. `T` is rounded up to
//! whole microseconds and `tau` is `(burst - 1)` of that `T`: the same burst at a
//! rate no higher than asked, so in any window `w` at most `burst + w / T` calls
//! pass, the in-memory backend's bound. When `T` is a whole number of
//! microseconds (`per_second(n)` for `n` dividing 10⁶, `per_minute`, `per_hour`
//! ...) decisions equal the in-memory backend's exactly. There is no floating
//! point: numbers stay integers below 2⁵³ (about 285 years), where they saturate.
//!
//! A caller that must wait is told its delay from when it asked: the server's
//! delay plus the round trip, so it never starts before its slot on the server's
//! clock.
//!
//! If the server's clock goes back (a failover to a replica whose clock is
//! behind), stored TATs look further ahead: calls are delayed more, never
//! admitted in a burst, and nothing panics. [`RedisClock::HostWallClock`] is for
//! servers that refuse `TIME` in scripts; it trusts the hosts' clocks to agree.
//!
//! # Failures
//!
//! Every call has a deadline ([`timeout`](RedisBackendBuilder::timeout), 100 ms by
//! default) covering connection, retries and reply. A call is retried only when
//! it certainly did not run: `NOSCRIPT` (the script cache was flushed: it is sent
//! again with `EVAL`), `MOVED`/`ASK` (followed), `TRYAGAIN`/`CLUSTERDOWN`/
//! `LOADING`, and a refused connection. A timeout after the command was sent, or
//! a connection lost after it, leaves the outcome unknown: it is reported, not
//! retried, since a retry could reserve twice. Then [`FailurePolicy`] decides:
//! a [`BackendError`] (fail-closed) or an admission marked
//! [`is_fail_open`](crate::Admission::is_fail_open) (fail-open).
//!
//! **While Redis is down**, calls fail at once: the first call to find the
//! connection refused or lost opens a circuit, the calls that follow fail
//! without being sent (as the policy says, in microseconds), and a background
//! `PING` every [`probe_interval`](RedisBackendBuilder::probe_interval) (50 ms)
//! closes it when the server answers. [`RedisStats::circuit_open`] shows the
//! state. The connection speaks RESP3 unless the URL sets `protocol=`, so a
//! lost connection is noticed and replaced in the background even by a
//! backend that makes no call meanwhile: the first call after Redis is back is
//! decided by Redis. A timeout does not open the circuit (a slow server still
//! decides).
//!
//! **The cost of an unknown outcome.** A call that times out after it was sent
//! may still run on the server later: a server paused for 2 s (a long `fork`, a
//! stalled disk, `DEBUG SLEEP`) runs every reservation queued meanwhile when it
//! resumes, and each takes its slot though its caller was told "failed". With
//! a `per_hour(60)` limit of burst 10, the calls of a 2 s pause took all ten
//! free slots while no caller was admitted. Keep the timeout above the server's
//! worst pauses, or choose fail-open, where such calls are let through anyway.
//!
//! Run Redis with `maxmemory-policy noeviction` (or no `maxmemory`): an evicted
//! key is a forgotten debt, a burst the limit should not have allowed (every
//! key has a TTL, so the `volatile-*` policies evict them too). `connect` checks
//! the policy and warns, or refuses the server when built with
//! [`refuse_evicting_server`](RedisBackendBuilder::refuse_evicting_server). Out
//! of memory, the script's write fails and the call is a
//! [`BackendErrorKind::Full`] error.
//!
//! # Corrupt values
//!
//! A key's value is its TAT and its holes in whole microseconds ("`tat start1
//! end1 ...`", each at most 2⁵³, the holes in order below the TAT). A key
//! holding anything else (`inf`, `1e300`, `-5`, `1.5`, `0x10`, `12abc`, a
//! number above 2⁵³, holes out of order: another program's write, a hand
//! edit) is corrupt: every script (reservation, refund, hold) refuses it,
//! stores nothing, and the call is a [`BackendErrorKind::Corrupt`] error
//! under the [`FailurePolicy`] (fail-closed: the error; fail-open: the call
//! let through), whose message says what is wrong with the value. No
//! negative-cache entry is made from it.
//!
//! The backend does not overwrite the value itself: it may belong to another
//! application sharing the prefix, and any TAT made up in its place could
//! admit a burst or lock the key out. To repair it, delete the key: the next
//! call starts it fresh, in every process.
//!
//! ```no_run
//! use tower_freqlimit::backends::redis::RedisBackend;
//! use tower_freqlimit::{BackendErrorKind, FreqLimit, FreqLimitError, FreqLimitParams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
//! let limiter = FreqLimit::new(FreqLimitParams::per_second(10), backend.clone());
//! if let Err(FreqLimitError::Backend(e)) = limiter.try_acquire("user:42").await {
//!     if e.kind() == BackendErrorKind::Corrupt {
//!         // After checking that no other program uses this key name:
//!         let name = backend.redis_key(Some("user:42"));
//!         eprintln!("{e}: DEL {}", String::from_utf8_lossy(&name));
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What happens when
//!
//! What callers see, how long it lasts and what it costs in quota, for each
//! fault (fail-closed; under fail-open, "fails" reads "is let through
//! undecided"). Figures measured on loopback by the tests named in
//! `BENCHMARKS.md` ("Redis faults").
//!
//! | the server is | callers see | for how long | quota |
//! |---|---|---|---|
//! | down (killed, refused) | the first call: `Unavailable` after one reconnection attempt (0.4 ms); the calls after it: `Unavailable` at once (0.4 µs per call, at any timeout) | until a probe reaches the server: 55 ms after it is back, without any call | nothing taken |
//! | slow (replies after the timeout) | `Timeout` at the deadline | while it is slow (the circuit stays closed: a slow server still decides) | a timed-out call may still run: its slot taken |
//! | paused (`SIGSTOP`, a long `fork`, `DEBUG SLEEP`) | `Timeout` at the deadline | the pause | every call queued meanwhile runs on resume: a 2 s pause took all ten free slots of a `per_hour(60)` burst-10 key, no caller admitted |
//! | restarted empty | as down, then decided | as down | every key starts full: one burst per key (keep persistence on to avoid it) |
//! | failed over (Sentinel) | `Unavailable` at once until the Sentinels name the new primary, then decided by it | `down-after-milliseconds` plus the election: 2.4 s with a 1 s `down-after` | the replicated state: only the old primary's last, unreplicated writes are lost (admitted again) |
//! | evicting (`maxmemory` + a policy) | nothing; a warning at connect, or a refused `connect` with `refuse_evicting_server` | | an evicted key starts full: up to one burst per eviction |
//! | flushed (`FLUSHALL`) | decided; the negative cache may refuse a key a little longer (never admits) | | every key starts full |
//! | script cache flushed | decided (the script is sent again with `EVAL`) | one extra round trip | nothing |
//! | holding a corrupt value | `Corrupt`, one round trip | until the key is deleted | nothing stored |
//!
//! [`BackendErrorKind::Full`]: crate::BackendErrorKind::Full
//! [`BackendErrorKind::Corrupt`]: crate::BackendErrorKind::Corrupt

mod backend;
mod builder;
mod cache;
mod circuit;
mod compound;
mod conn;
mod eviction;
mod future;
mod inner;
mod key;
mod lease;
mod policy;
mod script;
mod sentinel;
mod stats;

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::BackendError;

pub use builder::RedisBackendBuilder;
pub use future::{RedisCompoundFuture, RedisReserveFuture};
pub use key::RedisKey;
pub use lease::Leases;
pub use policy::{FailurePolicy, RedisClock};
pub use stats::RedisStats;

use cache::NegativeCache;
use conn::Conn;
use inner::Inner;
use key::encode_key;

/// Rate-limit state in Redis, shared by every process that uses the same
/// server and prefix. See the [module docs](self) for the design.
///
/// `K` is the key type (any [`RedisKey`]: `String` by default, integers, IP
/// addresses, ...); [`FreqLimit`](crate::FreqLimit) looks `String` keys up by
/// `&str`.
///
/// Clones share the connection, the negative cache and the counters.
///
/// # Example: a layer keyed by peer IP
///
/// ```no_run
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend};
/// use tower_freqlimit::layer::FreqLimitLayer;
/// use tower_freqlimit::FreqLimitParams;
///
/// # struct Req { peer: IpAddr }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
/// let backend = RedisBackend::<IpAddr>::builder()
///     .prefix("api:per-ip")
///     .failure_policy(FailurePolicy::Open)
///     .connect("redis://10.0.0.5:6379")
///     .await?;
/// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10).with_burst(20), backend)
///     .key(|req: &Req| Some(req.peer))
///     .max_wait(Duration::ZERO);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub struct RedisBackend<K = String> {
    inner: Arc<Inner>,
    _key: PhantomData<fn(&K)>,
}

impl<K> Clone for RedisBackend<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _key: PhantomData,
        }
    }
}

impl<K> fmt::Debug for RedisBackend<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("RedisBackend")
            .field(
                "server",
                &match inner.conn {
                    Conn::Single(_) => "standalone",
                    Conn::Cluster(_) => "cluster",
                    Conn::Sentinel(_) => "sentinel",
                },
            )
            .field("prefix", &String::from_utf8_lossy(&inner.prefix))
            .field("timeout", &inner.timeout)
            .field("policy", &inner.policy)
            .field("clock", &inner.clock)
            .field(
                "negative_cache",
                &inner.cache.as_ref().map(NegativeCache::capacity),
            )
            .finish_non_exhaustive()
    }
}

impl<K: RedisKey> RedisBackend<K> {
    /// Settings: prefix, timeout, failure policy, clock, negative cache; then a
    /// connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend};
    ///
    /// let builder = RedisBackend::<String>::builder()
    ///     .prefix("myapp:login")
    ///     .timeout(Duration::from_millis(20))
    ///     .failure_policy(FailurePolicy::Closed)
    ///     .negative_cache(10_000);
    /// # let _ = builder;
    /// ```
    pub fn builder() -> RedisBackendBuilder<K> {
        RedisBackendBuilder::new()
    }

    /// A backend with the default settings on the server at `url`
    /// (`redis://host:port/db`, `rediss://` for TLS if the `redis` crate was
    /// built with it), connected eagerly.
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`](crate::BackendErrorKind::Unavailable) if the
    /// URL is invalid or the server cannot be reached within the timeout.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
    /// use tower_freqlimit::backends::redis::RedisBackend;
    /// let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
    /// # let _ = backend;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::builder().connect(url).await
    }

    /// What this backend has done so far (shared by its clones).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
    /// # use tower_freqlimit::backends::redis::RedisBackend;
    /// let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
    /// assert_eq!(backend.stats().script_calls, 0);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        self.inner.counters.snapshot(self.inner.circuit.is_open())
    }

    /// The Redis key name of `key` (`None`: the global bucket), as documented in
    /// the [module docs](self#keys-in-redis).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
    /// # use tower_freqlimit::backends::redis::RedisBackend;
    /// let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
    /// assert_eq!(backend.redis_key(Some("None")), b"freqlimit:k:None");
    /// assert_eq!(backend.redis_key(None::<&str>), b"freqlimit:g");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn redis_key<Q>(&self, key: Option<&Q>) -> Vec<u8>
    where
        K: Borrow<Q>,
        Q: RedisKey + ?Sized,
    {
        encode_key(&self.inner.prefix, key)
    }

    /// Waits until every refund sent so far has been answered (or timed out): for
    /// a graceful shutdown, and for tests.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
    /// # use tower_freqlimit::backends::redis::RedisBackend;
    /// let backend = RedisBackend::<String>::connect("redis://127.0.0.1:6379").await?;
    /// backend.refunds_settled().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn refunds_settled(&self) {
        self.inner.refunds_settled().await;
    }

    /// Gives every leased slot not handed out yet back to Redis, for every
    /// process to take, and waits for the refunds: for a graceful shutdown
    /// with [`leases`](RedisBackendBuilder::leases) on. (A process that
    /// stops without it loses the slots it held: at most two leases, two
    /// [`Leases::length`]s, per hot key.) Demand is judged afresh after it.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
    /// use tower_freqlimit::backends::redis::{Leases, RedisBackend};
    /// let backend = RedisBackend::<String>::builder()
    ///     .leases(Leases::new())
    ///     .connect("redis://127.0.0.1:6379")
    ///     .await?;
    /// // ... serve ...
    /// backend.release_leases().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release_leases(&self) {
        self.inner.release_leases().await;
    }
}
