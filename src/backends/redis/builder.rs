//! The settings of a [`RedisBackend`] ([`RedisBackendBuilder`]) and the ways to
//! connect it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::RedisBackend;
use super::conn::Conn;
use super::eviction;
use super::inner::{Hot, Inner};
use super::key::RedisKey;
use super::lease::Leases;
use super::policy::{FailurePolicy, RedisClock};
use super::sentinel::SentinelConn;
use crate::error::{BackendError, BackendErrorKind};

/// The default per-call deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The default number of negative-cache slots.
const DEFAULT_NEGATIVE_CACHE: usize = 4096;
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// The default key prefix.
const DEFAULT_PREFIX: &str = "freqlimit";

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
    probe_interval: Duration,
    refuse_evicting: bool,
    batching: bool,
    leases: Option<Leases>,
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
            .field("probe_interval", &self.probe_interval)
            .field("refuse_evicting", &self.refuse_evicting)
            .field("batching", &self.batching)
            .field("leases", &self.leases)
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
    /// The default settings.
    pub(super) fn new() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            policy: FailurePolicy::Closed,
            clock: RedisClock::Server,
            negative_cache: DEFAULT_NEGATIVE_CACHE,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            refuse_evicting: false,
            batching: false,
            leases: None,
            _key: PhantomData,
        }
    }

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

    /// How often the backend probes Redis while it holds it for unreachable
    /// (default 50 ms; at least 1 ms). Once a call has found the connection
    /// refused or lost, the calls that follow fail at once, as the
    /// [`FailurePolicy`] says, instead of each waiting for a reconnection; a
    /// background `PING` every `interval` finds the server back, and the calls
    /// after it go to Redis again. [`RedisStats::circuit_open`] tells which
    /// state the backend is in.
    ///
    /// [`RedisStats::circuit_open`]: super::RedisStats::circuit_open
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::backends::redis::RedisBackend;
    ///
    /// let builder = RedisBackend::<String>::builder().probe_interval(Duration::from_millis(20));
    /// # drop(builder);
    /// ```
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Refuse to connect to a server that can evict keys (a `maxmemory` with
    /// a `maxmemory-policy` other than `noeviction`), instead of the default
    /// `tracing` warning. An evicted key forgets its debt: its next calls are
    /// admitted as a new key's, over the limit. Checked by
    /// [`connect`](Self::connect) and [`connect_cluster`](Self::connect_cluster)
    /// on every primary with `CONFIG GET maxmemory*`; a server that denies
    /// `CONFIG` (an ACL, a renamed command) cannot be checked and is accepted,
    /// with a debug event. [`connect_lazy`](Self::connect_lazy) checks in the
    /// background and can only warn.
    ///
    /// ```
    /// use tower_freqlimit::backends::redis::RedisBackend;
    ///
    /// let builder = RedisBackend::<String>::builder().refuse_evicting_server();
    /// # drop(builder);
    /// ```
    pub fn refuse_evicting_server(mut self) -> Self {
        self.refuse_evicting = true;
        self
    }

    /// Batch the reservations of one key made in this process while a call
    /// for it is in flight: they queue here, and when the reply comes, go to
    /// Redis in one script call that decides each in order, with its own
    /// cost, `max_wait` and figures, exactly as the same calls made back to
    /// back (an admitted caller gets its own slot; a refused one consumes
    /// nothing). Off by default.
    ///
    /// A key called once at a time sees no difference: nothing is in flight,
    /// its call goes at once. A hot key costs one script call per round trip
    /// instead of one per request, so one Redis node serves many more
    /// decisions for it; a queued caller waits for the call in flight before
    /// its own goes (up to two round trips instead of one).
    /// [`RedisStats::batches`](super::RedisStats::batches) counts them.
    ///
    /// ```
    /// use tower_freqlimit::backends::redis::RedisBackend;
    ///
    /// let builder = RedisBackend::<String>::builder().batching();
    /// # drop(builder);
    /// ```
    pub fn batching(mut self) -> Self {
        self.batching = true;
        self
    }

    /// Lease slots of keys this process calls far more often than the limit
    /// allows, and hand them out here without a round trip ([`Leases`]: the
    /// settings, the bound, when to choose them). Turns
    /// [`batching`](Self::batching) on too: requests a lease does not answer
    /// are batched.
    ///
    /// ```
    /// use tower_freqlimit::backends::redis::{Leases, RedisBackend};
    ///
    /// let builder = RedisBackend::<String>::builder().leases(Leases::new());
    /// # drop(builder);
    /// ```
    pub fn leases(mut self, leases: Leases) -> Self {
        self.batching = true;
        self.leases = Some(leases);
        self
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        // Reconnect quickly, two tries per attempt: the first call to find
        // Redis down waits for one attempt, then the circuit answers the
        // calls that follow while its probe starts the next attempts.
        ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(5))
            .set_max_delay(Duration::from_millis(100))
            .set_number_of_retries(1)
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
    /// [`connect_lazy`](Self::connect_lazy) to start while Redis is down);
    /// [`BackendErrorKind::Other`] if the server can evict keys and the builder
    /// was told to [refuse such a server](Self::refuse_evicting_server).
    pub async fn connect(self, url: &str) -> Result<RedisBackend<K>, BackendError> {
        let timeout = self.timeout;
        let refuse_evicting = self.refuse_evicting;
        let backend = self.connect_lazy_unchecked(url)?;
        let mut conn = backend.inner.conn.clone();
        match tokio::time::timeout(
            timeout.max(Duration::from_secs(1)),
            conn.run(&redis::cmd("PING")),
        )
        .await
        {
            Ok(Ok(_)) => {
                eviction::judge(&eviction::check(&mut conn).await, refuse_evicting)?;
                Ok(backend)
            }
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
        let backend = self.connect_lazy_unchecked(url)?;
        let mut conn = backend.inner.conn.clone();
        tokio::spawn(async move {
            // Warnings only: nobody is left to refuse to.
            let _ = eviction::judge(&eviction::check(&mut conn).await, false);
        });
        Ok(backend)
    }

    fn connect_lazy_unchecked(self, url: &str) -> Result<RedisBackend<K>, BackendError> {
        let unavailable = |err| BackendError::new(BackendErrorKind::Unavailable, err);
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(unavailable)?;
        // RESP3 unless the URL chooses: on RESP3 the connection manager hears
        // of a lost connection at once and reconnects in the background, so a
        // backend idle through an outage has no stale connection when Redis
        // is back. (On RESP2 its first call wrote to the dead socket, and
        // `redis` reports that as it reports a command lost in flight, which
        // must not be sent again.)
        let info = if url.contains("protocol=") {
            info
        } else {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info.set_redis_settings(settings)
        };
        let client = redis::Client::open(info).map_err(unavailable)?;
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
    /// [`BackendErrorKind::Unavailable`] if no node can be reached;
    /// [`BackendErrorKind::Other`] if a primary can evict keys and the builder
    /// was told to [refuse such a server](Self::refuse_evicting_server).
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
        let refuse_evicting = self.refuse_evicting;
        let backend = self.with_cluster_connection(conn);
        let mut conn = backend.inner.conn.clone();
        eviction::judge(&eviction::check(&mut conn).await, refuse_evicting)?;
        Ok(backend)
    }

    /// Connects through Redis Sentinel: asks the Sentinels at `sentinels`
    /// (URLs as for [`connect`](Self::connect)) for the primary named
    /// `primary` and connects to it. After a failover, the first call that
    /// finds the old primary gone or read-only asks the Sentinels again and
    /// moves to the new one (a `READONLY` write did not run, so it is sent
    /// again there; a call lost in flight is not). Replication is
    /// asynchronous: reservations the old primary made in the last moments
    /// before it failed may be missing on the new one, which then admits
    /// them again.
    ///
    /// # Errors
    ///
    /// [`BackendErrorKind::Unavailable`] if no Sentinel names a reachable
    /// primary within the timeout; [`BackendErrorKind::Other`] if the primary
    /// can evict keys and the builder was told to
    /// [refuse such a server](Self::refuse_evicting_server).
    ///
    /// ```no_run
    /// use tower_freqlimit::backends::redis::RedisBackend;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let backend = RedisBackend::<String>::builder()
    ///     .connect_sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")
    ///     .await?;
    /// # drop(backend);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_sentinel<I, S>(
        self,
        sentinels: I,
        primary: &str,
    ) -> Result<RedisBackend<K>, BackendError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let unavailable = |err| BackendError::new(BackendErrorKind::Unavailable, err);
        let sentinels: Vec<String> = sentinels
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        // RESP3 on the primary, for the reconnection in the background (see
        // `connect_lazy`).
        let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(
            redis::RedisConnectionInfo::default().set_protocol(redis::ProtocolVersion::RESP3),
        );
        let client = SentinelClient::build(
            sentinels,
            primary.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(unavailable)?;
        let wait = self.timeout.max(Duration::from_secs(1));
        let conn = tokio::time::timeout(wait, SentinelConn::new(client, self.manager_config()))
            .await
            .map_err(|elapsed| BackendError::new(BackendErrorKind::Unavailable, elapsed))?
            .map_err(unavailable)?;
        let refuse_evicting = self.refuse_evicting;
        let backend = self.build(Conn::Sentinel(Arc::new(conn)));
        let mut conn = backend.inner.conn.clone();
        match tokio::time::timeout(wait, conn.run(&redis::cmd("PING"))).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(unavailable(err)),
            Err(elapsed) => return Err(BackendError::new(BackendErrorKind::Unavailable, elapsed)),
        }
        eviction::judge(&eviction::check(&mut conn).await, refuse_evicting)?;
        Ok(backend)
    }

    /// Uses a [`ConnectionManager`] you configured (TLS, authentication, RESP3,
    /// ...). Turn its response timeout off or set it above this backend's
    /// timeout, which bounds each call anyway.
    #[must_use]
    pub fn with_connection_manager(self, manager: ConnectionManager) -> RedisBackend<K> {
        self.build(Conn::Single(manager))
    }

    /// Uses a cluster connection you configured. Build its client with
    /// `.retries(0)`: otherwise the cluster client resends a call whose
    /// connection broke after sending, which may reserve twice.
    #[must_use]
    pub fn with_cluster_connection(self, conn: ClusterConnection) -> RedisBackend<K> {
        self.build(Conn::Cluster(conn))
    }

    fn build(self, conn: Conn) -> RedisBackend<K> {
        RedisBackend {
            inner: Arc::new(Inner::new(
                conn,
                self.prefix,
                self.timeout,
                self.policy,
                self.clock,
                self.negative_cache,
                self.probe_interval,
                self.batching.then(|| Hot::new(self.leases)),
            )),
            _key: PhantomData,
        }
    }
}
