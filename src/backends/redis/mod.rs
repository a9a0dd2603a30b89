//! One limit shared by every process and host: GCRA state in Redis (feature
//! `redis`).
//!
//! [`RedisBackend`] keeps each key's TAT in Redis, Valkey or a Redis Cluster and
//! runs the GCRA step there, atomically, in one Lua script call per reservation,
//! so replicas behind a load balancer share one limit exactly as the threads of
//! one process share the in-memory backend's.
//!
//! * **Same semantics as [`InMemoryBackend`](super::memory::InMemoryBackend)**:
//!   waiting, bounded waits whose rejection consumes nothing, cost,
//!   `remaining`/`reset_after`, refunds of cancelled waits (a compare-and-swap in
//!   Lua), the global bucket `None`.
//! * **The server's clock** (`TIME`, by default): hosts with skewed clocks agree.
//!   Time is integer microseconds; `T` is rounded *up* to the microsecond (see
//!   [below](#time-and-rounding)).
//! * **One key per script call** (`KEYS[1]`, never built inside Lua), so it works
//!   unchanged on a Redis Cluster; keys expire (`PX`) exactly when their TAT has
//!   passed, so Redis holds nothing for idle keys and forgets no debt.
//! * **A failure policy** ([`FailurePolicy`]): a per-call timeout, then either a
//!   typed error (fail-closed, the default; `503` in HTTP) or the call let through
//!   and reported through `tracing` (fail-open). Calls whose outcome is unknown
//!   are never retried.
//! * **A negative cache**: a key rejected by Redis is remembered locally until
//!   its debt is due, so a flood from one client over its limit costs one round
//!   trip per retry window instead of one per request.
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
//! over the nodes; a prefix containing a hash tag (`{limits}`) would put every key
//! on one node.
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
//! [`is_fail_open`](crate::Admission::is_fail_open) (fail-open). The connection
//! reconnects by itself in the background once Redis is back.
//!
//! Run Redis with `maxmemory-policy noeviction`: an evicted key is a forgotten
//! debt, a burst the limit should not have allowed. Out of memory, the script's
//! write fails and the call is a [`BackendErrorKind::Full`] error.
//!
//! [`BackendErrorKind::Full`]: crate::BackendErrorKind::Full

mod cache;
mod conn;
mod script;

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Notify;

use super::{BorrowedKey, FreqLimitBackend};
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::params::FreqLimitParams;

use cache::NegativeCache;
use conn::{Arg, Conn, classify};
use script::{Decision, MAX_MICROS, Micros, REFUND_LUA, RESERVE_LUA, Script};

/// The default per-call deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The default number of negative-cache slots.
const DEFAULT_NEGATIVE_CACHE: usize = 4096;
/// The default key prefix.
const DEFAULT_PREFIX: &str = "freqlimit";
/// How long keys outlive their TAT with [`RedisClock::LimiterTimestamp`].
const LIMITER_CLOCK_TTL_SLACK_MS: u64 = 10 * 60 * 1000;

/// How a key is written into a Redis key name.
///
/// The encoding must be one-to-one for the type: two different keys must never
/// write the same bytes. The provided implementations are: strings (`str`,
/// `String`, `Box<str>`, `Arc<str>`) and byte strings (`[u8]`, `Vec<u8>`) as their
/// bytes; integers in decimal; `bool` as `true`/`false`; IP and socket addresses
/// in their canonical text (`192.0.2.1`, `2001:db8::1`, `[::1]:80`). Keys of
/// different types under one prefix may meet (`"7"` and `7u32`): give each limit
/// its own prefix.
///
/// ```
/// use tower_freqlimit::backends::redis::RedisKey;
///
/// /// A tenant and a user: `tenant/user`, and `/` cannot occur in a tenant id.
/// struct UserKey { tenant: u32, user: String }
///
/// impl RedisKey for UserKey {
///     fn write_redis_key(&self, out: &mut Vec<u8>) {
///         self.tenant.write_redis_key(out);
///         out.push(b'/');
///         self.user.write_redis_key(out);
///     }
/// }
///
/// let mut out = Vec::new();
/// UserKey { tenant: 7, user: "ann".into() }.write_redis_key(&mut out);
/// assert_eq!(out, b"7/ann");
/// ```
pub trait RedisKey {
    /// Appends this key's bytes to `out`.
    fn write_redis_key(&self, out: &mut Vec<u8>);
}

impl RedisKey for str {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl RedisKey for [u8] {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

macro_rules! deref_keys {
    ($($t:ty => $target:ty),* $(,)?) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                <$target as RedisKey>::write_redis_key(self, out);
            }
        }
    )*};
}

deref_keys!(String => str, Box<str> => str, Arc<str> => str, Vec<u8> => [u8]);

macro_rules! display_keys {
    ($($t:ty),* $(,)?) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                use std::io::Write as _;
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

display_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, IpAddr, Ipv4Addr,
    Ipv6Addr, SocketAddr,
);

impl<T: RedisKey + ?Sized> RedisKey for &T {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        (**self).write_redis_key(out);
    }
}

/// What a reservation does when Redis cannot decide it: unreachable, slower than
/// the [`timeout`](RedisBackendBuilder::timeout), or answering something
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
    /// Refuse the call with [`FreqLimitError::Backend`] (in HTTP, `503 Service
    /// Unavailable`). No call passes unchecked. The default.
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
    /// The `now` the limiter passes to [`FreqLimitBackend::reserve`] (a
    /// process-local [`Timestamp`]): exact and reproducible, for tests and for a
    /// single process only. Timestamps of different processes are on different
    /// scales, so processes sharing keys must not use it. Since these instants
    /// need not follow the server's clock, keys are kept ten minutes past their
    /// TAT (harmless: a drained key is as good as a new one).
    LimiterTimestamp,
}

/// Counters of what a [`RedisBackend`] did, for monitoring and benchmarks
/// ([`RedisBackend::stats`]).
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
    /// Reservations sent to Redis.
    pub script_calls: u64,
    /// Reservations rejected from the negative cache, without a round trip.
    pub cache_rejections: u64,
    /// Commands sent again after `NOSCRIPT`, `MOVED`/`ASK`, a busy cluster or a
    /// refused connection.
    pub retries: u64,
    /// Reservations that failed (timeout, connection, unexpected reply), whatever
    /// the policy did with them.
    pub failures: u64,
    /// Of those, the calls let through by [`FailurePolicy::Open`].
    pub fail_open_admissions: u64,
    /// Refunds sent to Redis.
    pub refunds_sent: u64,
}

#[derive(Default)]
struct Counters {
    script_calls: AtomicU64,
    cache_rejections: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    fail_open_admissions: AtomicU64,
    refunds_sent: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Rate-limit state in Redis, shared by every process that uses the same
/// server and prefix. See the [module docs](self) for the design.
///
/// `K` is the key type (any [`RedisKey`]: `str`, `String`, integers, IP
/// addresses, ...). `RedisBackend<str>` suits [`FreqLimit`](crate::FreqLimit)
/// with `&str` keys; the Tower layer owns its keys, so use a sized type there
/// (`String`, `IpAddr`, `u64`).
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

struct Inner {
    conn: Conn,
    prefix: Box<[u8]>,
    timeout: Duration,
    policy: FailurePolicy,
    clock: RedisClock,
    cache: Option<NegativeCache>,
    reserve: Script,
    refund: Script,
    counters: Counters,
    refunds_in_flight: AtomicUsize,
    refunds_done: Notify,
    /// When the last fail-open warning was logged (ms since `created`), and how
    /// many fail-open admissions it has not reported yet.
    warned_at: AtomicU64,
    unwarned: AtomicU64,
    created: std::time::Instant,
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
        RedisBackendBuilder {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            policy: FailurePolicy::Closed,
            clock: RedisClock::Server,
            negative_cache: DEFAULT_NEGATIVE_CACHE,
            _key: PhantomData,
        }
    }

    /// A backend with the default settings on the server at `url`
    /// (`redis://host:port/db`, `rediss://` for TLS if the `redis` crate was
    /// built with it), connected eagerly.
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`] if the URL is invalid or the server cannot
    /// be reached within the timeout.
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
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            script_calls: get(&c.script_calls),
            cache_rejections: get(&c.cache_rejections),
            retries: get(&c.retries),
            failures: get(&c.failures),
            fail_open_admissions: get(&c.fail_open_admissions),
            refunds_sent: get(&c.refunds_sent),
        }
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
        loop {
            let done = self.inner.refunds_done.notified();
            if self.inner.refunds_in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }
}

fn encode_key<K: RedisKey + ?Sized>(prefix: &[u8], key: Option<&K>) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 40);
    out.extend_from_slice(prefix);
    match key {
        None => out.extend_from_slice(b":g"),
        Some(key) => {
            out.extend_from_slice(b":k:");
            key.write_redis_key(&mut out);
        }
    }
    out
}

/// [`encode_key`] for a borrowed form of the key: the bytes are the owned
/// key's, so a lookup by `&str` and by `&String` meet on one Redis key.
fn encode_borrowed<K, Q>(prefix: &[u8], key: Option<&Q>) -> Vec<u8>
where
    K: RedisKey,
    Q: BorrowedKey<K> + ?Sized,
{
    encode_key(prefix, key.map(BorrowedKey::to_key).as_ref())
}

/// Settings for a [`RedisBackend`], from [`RedisBackend::builder`], ending in a
/// connection: [`connect`](Self::connect), [`connect_lazy`](Self::connect_lazy),
/// [`connect_cluster`](Self::connect_cluster), or one of your own
/// ([`with_connection_manager`](Self::with_connection_manager),
/// [`with_cluster_connection`](Self::with_cluster_connection)).
///
/// ```no_run
/// use std::time::Duration;
/// use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend, RedisClock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::BackendError> {
/// let backend = RedisBackend::<u64>::builder()
///     .prefix("billing:per-account")
///     .timeout(Duration::from_millis(30))
///     .failure_policy(FailurePolicy::Open)
///     .clock(RedisClock::Server)
///     .negative_cache(1 << 16)
///     .connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
///     .await?;
/// # let _ = backend;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RedisBackendBuilder<K = String> {
    prefix: String,
    timeout: Duration,
    policy: FailurePolicy,
    clock: RedisClock,
    negative_cache: usize,
    _key: PhantomData<fn(&K)>,
}

impl<K> fmt::Debug for RedisBackendBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("clock", &self.clock)
            .field("negative_cache", &self.negative_cache)
            .finish()
    }
}

impl<K> Clone for RedisBackendBuilder<K> {
    fn clone(&self) -> Self {
        Self {
            prefix: self.prefix.clone(),
            _key: PhantomData,
            ..*self
        }
    }
}

impl<K: RedisKey> RedisBackendBuilder<K> {
    /// The namespace of this limit's keys (default `freqlimit`): keys are
    /// `{prefix}:k:{key}` and `{prefix}:g`. One prefix per limit.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline of each call, covering connection, safe retries and the
    /// reply (default 100 ms). Past it the call fails as [`FailurePolicy`] says;
    /// its outcome is then unknown, so it is not retried. A zero timeout is taken
    /// as one millisecond.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// What to do when Redis cannot decide (default [`FailurePolicy::Closed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whose clock the script uses (default [`RedisClock::Server`]).
    pub fn clock(mut self, clock: RedisClock) -> Self {
        self.clock = clock;
        self
    }

    /// Remember rejected keys in a local cache of `capacity` slots (rounded up to
    /// a power of two; default 4096, about 40 bytes each plus the key). Zero
    /// turns it off.
    pub fn negative_cache(mut self, capacity: usize) -> Self {
        self.negative_cache = capacity;
        self
    }

    /// No negative cache: every reservation asks Redis.
    pub fn without_negative_cache(self) -> Self {
        self.negative_cache(0)
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        // Reconnect quickly, a couple of tries per attempt: while Redis is down
        // calls fail fast (refused), and each failed call starts a new attempt in
        // the background, so the connection comes back soon after Redis does.
        ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(5))
            .set_max_delay(Duration::from_millis(100))
            .set_number_of_retries(2)
            .set_connection_timeout(Some(self.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(None)
    }

    /// Connects to the server at `url` (`redis://[user:password@]host:port[/db]`)
    /// through a [`ConnectionManager`]: one multiplexed connection that pipelines
    /// concurrent calls and reconnects by itself.
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`] if the URL is invalid or the server does
    /// not answer a `PING` within the timeout (use
    /// [`connect_lazy`](Self::connect_lazy) to start while Redis is down).
    pub async fn connect(self, url: &str) -> Result<RedisBackend<K>, BackendError> {
        let timeout = self.timeout;
        let backend = self.connect_lazy(url)?;
        let mut conn = backend.inner.conn.clone();
        match tokio::time::timeout(
            timeout.max(Duration::from_secs(1)),
            conn.run(&redis::cmd("PING")),
        )
        .await
        {
            Ok(Ok(_)) => Ok(backend),
            Ok(Err(err)) => Err(BackendError::new(BackendErrorKind::Unavailable, err)),
            Err(elapsed) => Err(BackendError::new(BackendErrorKind::Unavailable, elapsed)),
        }
    }

    /// Like [`connect`](Self::connect), without waiting for the server: the
    /// connection is made by the first call (and each call until Redis answers
    /// fails as the [`FailurePolicy`] says). Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`] if the URL is invalid.
    pub fn connect_lazy(self, url: &str) -> Result<RedisBackend<K>, BackendError> {
        let unavailable = |err| BackendError::new(BackendErrorKind::Unavailable, err);
        let client = redis::Client::open(url).map_err(unavailable)?;
        let manager = ConnectionManager::new_lazy_with_config(client, self.manager_config())
            .map_err(unavailable)?;
        Ok(self.with_connection_manager(manager))
    }

    /// Connects to a Redis Cluster through any of its `nodes` (URLs as for
    /// [`connect`](Self::connect)). The cluster client routes each call to the
    /// node of its key's slot, pipelines concurrent calls per node, and follows
    /// resharding; its own retries are off, so that a call whose outcome is unknown
    /// is never sent twice (`MOVED`/`ASK` are followed here).
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`] if no node can be reached.
    pub async fn connect_cluster<I, S>(self, nodes: I) -> Result<RedisBackend<K>, BackendError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let unavailable = |err| BackendError::new(BackendErrorKind::Unavailable, err);
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let client = redis::cluster::ClusterClient::builder(nodes)
            .retries(0)
            .connection_timeout(self.timeout.max(Duration::from_secs(1)))
            .build()
            .map_err(unavailable)?;
        let conn = tokio::time::timeout(
            self.timeout.max(Duration::from_secs(1)),
            client.get_async_connection(),
        )
        .await
        .map_err(|elapsed| BackendError::new(BackendErrorKind::Unavailable, elapsed))?
        .map_err(unavailable)?;
        Ok(self.with_cluster_connection(conn))
    }

    /// Uses a [`ConnectionManager`] you configured (TLS, authentication, RESP3,
    /// ...). Turn its response timeout off or set it above this backend's
    /// timeout, which bounds each call anyway.
    pub fn with_connection_manager(self, manager: ConnectionManager) -> RedisBackend<K> {
        self.build(Conn::Single(manager))
    }

    /// Uses a cluster connection you configured. Build its client with
    /// `.retries(0)`: otherwise the cluster client resends a call whose
    /// connection broke after sending, which may reserve twice.
    pub fn with_cluster_connection(self, conn: ClusterConnection) -> RedisBackend<K> {
        self.build(Conn::Cluster(conn))
    }

    fn build(self, conn: Conn) -> RedisBackend<K> {
        RedisBackend {
            inner: Arc::new(Inner {
                conn,
                prefix: self.prefix.into_bytes().into_boxed_slice(),
                timeout: self.timeout,
                policy: self.policy,
                clock: self.clock,
                cache: (self.negative_cache > 0).then(|| NegativeCache::new(self.negative_cache)),
                reserve: Script::new(RESERVE_LUA),
                refund: Script::new(REFUND_LUA),
                counters: Counters::default(),
                refunds_in_flight: AtomicUsize::new(0),
                refunds_done: Notify::new(),
                warned_at: AtomicU64::new(0),
                unwarned: AtomicU64::new(0),
                created: std::time::Instant::now(),
            }),
            _key: PhantomData,
        }
    }
}

/// Microseconds since the Unix epoch on this host's clock.
fn system_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .min(MAX_MICROS)
}

impl Inner {
    /// The time to send, or `None` for the server's `TIME`.
    fn now_arg(&self, now: Timestamp) -> Arg {
        match self.clock {
            RedisClock::Server => Arg::None,
            RedisClock::HostWallClock => Arg::Num(system_micros()),
            RedisClock::LimiterTimestamp => Arg::Num((now.as_nanos() / 1_000).min(MAX_MICROS)),
        }
    }

    /// Milliseconds to keep a key past its TAT: none on the server's or the
    /// hosts' clock, whose time runs with the server's expiry; ten minutes on the
    /// caller's, which may not (a test's chosen instants).
    fn ttl_slack_ms(&self) -> u64 {
        match self.clock {
            RedisClock::Server | RedisClock::HostWallClock => 0,
            RedisClock::LimiterTimestamp => LIMITER_CLOCK_TTL_SLACK_MS,
        }
    }

    async fn reserve(
        self: Arc<Self>,
        key: Vec<u8>,
        now: Timestamp,
        params: FreqLimitParams,
        request: Reserve,
        m: Micros,
        asked: std::time::Instant,
    ) -> Result<Admission, FreqLimitError> {
        let args = [
            Arg::Num(m.interval),
            Arg::Num(m.tau),
            Arg::Num(m.incr),
            Arg::Num(m.last),
            m.max_wait.map_or(Arg::None, Arg::Num),
            self.now_arg(now),
            Arg::Num(self.ttl_slack_ms()),
        ];
        bump(&self.counters.script_calls, 1);
        let mut conn = self.conn.clone();
        let mut retries = 0;
        let reply = tokio::time::timeout(
            self.timeout,
            conn.eval(&self.reserve, &key, &args, &mut retries),
        )
        .await;
        bump(&self.counters.retries, u64::from(retries));
        let decision = match reply {
            Ok(Ok(value)) => Decision::parse(&value),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!(
                    "no answer from Redis within {:?}; the reservation may or may not have been made",
                    self.timeout
                ),
            )),
        };
        let decision = match decision {
            Ok(decision) => decision,
            Err(err) => return self.failed(err, &params),
        };
        if let Some(cache) = &self.cache {
            // The TAT is at least `reset_after` past the server's now, which was
            // no earlier than `now` on the caller's clock.
            let sent = now.as_nanos() / 1_000;
            match decision {
                Decision::Rejected { reset_after, .. } => {
                    cache.remember(&key, sent.saturating_add(reset_after));
                }
                Decision::Admitted {
                    reset_after,
                    tat_after: Some(_),
                    ..
                } => cache.refresh(&key, sent.saturating_add(reset_after)),
                _ => {}
            }
        }
        let mut admission = decision.into_result(&m, &params, &request)?;
        if !admission.delay().is_zero() && self.clock != RedisClock::LimiterTimestamp {
            // The slot is `delay` after the server's now, which is at most the
            // reply's arrival: counting from `now` (when the caller asked), add
            // the round trip, so the caller never starts before its slot.
            let rtt = crate::nanos::from_duration(asked.elapsed());
            admission = admission
                .with_delay(crate::nanos::from_duration(admission.delay()).saturating_add(rtt));
        }
        Ok(admission)
    }

    fn failed(
        &self,
        err: BackendError,
        params: &FreqLimitParams,
    ) -> Result<Admission, FreqLimitError> {
        bump(&self.counters.failures, 1);
        match self.policy {
            FailurePolicy::Closed => {
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    kind = ?err.kind(),
                    error = %err,
                    "Redis could not decide a reservation; refusing the call (fail-closed)"
                );
                Err(FreqLimitError::Backend(err))
            }
            FailurePolicy::Open => {
                bump(&self.counters.fail_open_admissions, 1);
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    kind = ?err.kind(),
                    error = %err,
                    "Redis could not decide a reservation; letting the call through unchecked (fail-open)"
                );
                // A warning at most once a second, counting the calls since the
                // last one: an outage must be loud, not flood the logs.
                self.unwarned.fetch_add(1, Ordering::Relaxed);
                let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
                let last = self.warned_at.load(Ordering::Relaxed);
                if (last == 0 || now.saturating_sub(last) >= 1_000)
                    && self
                        .warned_at
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    let calls = self.unwarned.swap(0, Ordering::Relaxed);
                    tracing::warn!(
                        target: "tower_freqlimit::redis",
                        kind = ?err.kind(),
                        error = %err,
                        calls,
                        "Redis could not decide reservations; letting calls through unchecked (fail-open)"
                    );
                }
                Ok(Admission::fail_open(params))
            }
        }
    }

    async fn clear(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        let global = encode_key::<str>(&self.prefix, None);
        conn.run(redis::cmd("DEL").arg(&global))
            .await
            .map_err(classify)?;
        let mut pattern = Vec::with_capacity(self.prefix.len() + 4);
        for &byte in &*self.prefix {
            if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(byte);
        }
        pattern.extend_from_slice(b":k:*");
        for node in conn.scan_targets().await.map_err(classify)? {
            let mut cursor = 0u64;
            loop {
                let reply = conn
                    .on_node(
                        node.as_ref(),
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await
                    .map_err(classify)?;
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                    .map_err(|err| BackendError::new(BackendErrorKind::Protocol, err))?;
                // One key per DEL: cluster-safe.
                for key in keys {
                    conn.run(redis::cmd("DEL").arg(key))
                        .await
                        .map_err(classify)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }
}

/// The future of [`RedisBackend`]'s reservations: one script call (or an answer
/// from the negative cache, at once).
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
        let m = Micros::new(params, &request);
        if let Some(cache) = &self.inner.cache {
            if let Some(rejection) = cache.check(&key, now.as_nanos() / 1_000, &m) {
                bump(&self.inner.counters.cache_rejections, 1);
                return RedisReserveFuture {
                    state: FutureState::Ready(Some(Err(FreqLimitError::Rejected(rejection)))),
                };
            }
        }
        let inner = Arc::clone(&self.inner);
        let asked = std::time::Instant::now();
        RedisReserveFuture {
            state: FutureState::Pending(Box::pin(
                inner.reserve(key, now, *params, request, m, asked),
            )),
        }
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
        let cache = self.inner.cache.as_ref()?;
        let key = encode_key(&self.inner.prefix, key);
        let m = Micros::new(params, &request);
        let rejection = cache.check(&key, now.as_nanos() / 1_000, &m)?;
        bump(&self.inner.counters.cache_rejections, 1);
        Some(Err(FreqLimitError::Rejected(rejection)))
    }

    fn clear(&self) -> impl Future<Output = Result<(), BackendError>> + Send {
        let inner = Arc::clone(&self.inner);
        async move { inner.clear().await }
    }

    /// Sends the compare-and-swap in the background (a spawned task, bounded by
    /// the timeout) and returns `true` once it is on its way; `false` when there
    /// is nothing to give back or no Tokio runtime to send it from. Whether it
    /// took effect on the server is not waited for.
    fn refund(&self, key: Option<&K>, admission: &Admission) -> bool {
        let token = admission.refund_token();
        let Some(tat_after) = token.tat_after else {
            return false;
        };
        if admission.is_fail_open() {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let key = encode_key(&self.inner.prefix, key);
        if let Some(cache) = &self.inner.cache {
            cache.forget(&key);
        }
        // The server's time of the reservation: its TAT minus what it then owed.
        let reset_after = crate::nanos::from_duration(admission.reset_after()) / 1_000;
        let at = tat_after.saturating_sub(reset_after);
        let args = [
            Arg::Num(tat_after),
            Arg::Num(token.tat_before),
            Arg::Num(at),
            Arg::Num(self.inner.ttl_slack_ms()),
        ];
        let inner = Arc::clone(&self.inner);
        inner.refunds_in_flight.fetch_add(1, Ordering::AcqRel);
        bump(&inner.counters.refunds_sent, 1);
        runtime.spawn(async move {
            let mut conn = inner.conn.clone();
            let mut retries = 0;
            let sent = tokio::time::timeout(
                inner.timeout,
                conn.eval(&inner.refund, &key, &args, &mut retries),
            )
            .await;
            bump(&inner.counters.retries, u64::from(retries));
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    "a refund could not be sent to Redis; the slot stays used"
                );
            }
            if inner.refunds_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.refunds_done.notify_waiters();
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_keeps_the_global_bucket_apart() {
        let p = b"freqlimit";
        assert_eq!(encode_key::<str>(p, None), b"freqlimit:g");
        assert_eq!(encode_key(p, Some("None")), b"freqlimit:k:None");
        assert_eq!(encode_key(p, Some("")), b"freqlimit:k:");
        assert_eq!(encode_key(p, Some("g")), b"freqlimit:k:g");
        assert_eq!(encode_key(p, Some(&42u64)), b"freqlimit:k:42");
        assert_eq!(encode_key(p, Some(&-1i8)), b"freqlimit:k:-1");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(encode_key(p, Some(&ip)), b"freqlimit:k:2001:db8::1");
        assert_eq!(
            encode_key(p, Some(&b"\x00\xff"[..])),
            b"freqlimit:k:\x00\xff"
        );
    }
}
