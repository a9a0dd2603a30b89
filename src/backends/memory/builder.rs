//! [`InMemoryBackendBuilder`]: the settings of an [`InMemoryBackend`].

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::bound::Bound;
use super::groups::{self, Groups};
use super::holes::HoleTable;
use super::{InMemoryBackend, Inner, WhenFull};
use crate::clock::Clock;

/// The default sweep period of [`InMemoryBackend::new`].
const DEFAULT_SWEEPER_INTERVAL: Duration = Duration::from_secs(60);

/// Settings for an [`InMemoryBackend`], from [`InMemoryBackend::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
///
/// let backend = InMemoryBackend::<String>::builder()
///     .idle_ttl(Duration::from_secs(60))
///     .sweeper_interval(Duration::from_secs(15))
///     .build();
/// # let _ = backend;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct InMemoryBackendBuilder<K> {
    idle_ttl: Duration,
    sweeper_interval: Option<Duration>,
    max_keys: Option<usize>,
    when_full: WhenFull,
    group_by: GroupBy<K>,
    group_share: Option<usize>,
    clock: Clock,
}

/// How keys are grouped under `max_keys`.
#[derive(Debug)]
enum GroupBy<K> {
    /// By network for IP addresses; not at all for other key types.
    Default,
    By(fn(&K) -> u64),
    Off,
}

impl<K> Clone for GroupBy<K> {
    fn clone(&self) -> Self {
        match self {
            Self::Default => Self::Default,
            Self::By(group_of) => Self::By(*group_of),
            Self::Off => Self::Off,
        }
    }
}

impl<K> InMemoryBackendBuilder<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// The defaults of [`InMemoryBackend::new`].
    pub(super) fn new() -> Self {
        Self {
            idle_ttl: Duration::ZERO,
            sweeper_interval: Some(DEFAULT_SWEEPER_INTERVAL),
            max_keys: None,
            when_full: WhenFull::default(),
            group_by: GroupBy::Default,
            group_share: None,
            clock: Clock::new(),
        }
    }

    /// The clock of the backend's state (default [`Clock::new`]): what
    /// limiters built on the backend read for their decisions and waits, and
    /// what the sweeper reads. See [`crate::clock`] for the choice.
    ///
    /// ```
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Clock;
    /// use tower_freqlimit::{FreqLimit, FreqLimitParams};
    ///
    /// // Tokio's clock in production too (`clock_gettime`; follows `pause()`).
    /// let backend = InMemoryBackend::<u64>::builder().clock(Clock::tokio()).build();
    /// let limiter = FreqLimit::new(FreqLimitParams::per_second(10), backend);
    /// assert!(!limiter.clock().is_fast());
    /// ```
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keep a key this long after its TAT has passed before dropping it (default:
    /// drop it at the first sweep after it drained). A longer TTL saves re-inserting
    /// keys that come back often; it never changes a decision.
    pub fn idle_ttl(mut self, idle_ttl: Duration) -> Self {
        self.idle_ttl = idle_ttl;
        self
    }

    /// Sweep drained keys this often (default 60 s). A zero interval is taken as
    /// one millisecond.
    pub fn sweeper_interval(mut self, every: Duration) -> Self {
        self.sweeper_interval = Some(every.max(Duration::from_millis(1)));
        self
    }

    /// Never sweep in the background; call [`InMemoryBackend::sweep`] yourself, or
    /// let keys accumulate.
    pub fn without_sweeper(mut self) -> Self {
        self.sweeper_interval = None;
        self
    }

    /// Hold at most `max_keys` keys (default: no bound). A new key that finds
    /// the table full first drops drained keys, which is lossless; if none has
    /// drained, [`when_full`](Self::when_full) decides. The bound is exact, even
    /// under concurrent calls, and costs nothing to keys already held; making
    /// room costs about 16 entries visited per new key when the table is full
    /// (see [`WhenFull`]). The global bucket does not count. `max_keys(0)` holds
    /// no key at all: every keyed call that would store a TAT is refused.
    ///
    /// Size it above the number of distinct keys active within one refill
    /// period (`burst × period / limit`) of your real traffic. Memory is then
    /// about `max_keys` entries of the map: for `IpAddr` keys, 40 to 80 bytes a
    /// key with the hash table's slack.
    ///
    /// **One network cannot fill it.** `IpAddr` keys are grouped by network
    /// (the IPv6 `/48`, the IPv4 `/24`) and a group holds at most
    /// [`group_share`](Self::group_share) keys, `max_keys / 32` by default;
    /// the keys it sends beyond that are decided together on one overflow
    /// bucket per group, which takes a slot of `max_keys` like a key (so keys
    /// plus overflow buckets never exceed `max_keys`). A flood of `/64`s from
    /// one `/48` then throttles that `/48`, and clients of other networks find
    /// room. No key is admitted early for it: see [`group_by`](Self::group_by)
    /// for other key types and the costs.
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv6Addr};
    /// use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// let backend = InMemoryBackend::<IpAddr>::builder()
    ///     .max_keys(10_000)
    ///     .when_full(WhenFull::RefuseNewKeys)
    ///     .build();
    /// assert_eq!(backend.max_keys(), Some(10_000));
    /// assert_eq!(backend.group_share(), Some(312));
    ///
    /// // 65 536 /64s of one /48 at once: 312 get an entry, the rest share one
    /// // overflow bucket (one more call admitted, the others rejected: 429).
    /// let params = FreqLimitParams::per_minute(1);
    /// let now = Timestamp::from_nanos(1_000_000_000);
    /// for n in 0..65_536u128 {
    ///     let flood = Ipv6Addr::from_bits((0x2001_0db8_0001_u128 << 80) | (n << 64));
    ///     let _ = backend.reserve_now(Some(&IpAddr::V6(flood)), now, &params, Reserve::new().no_wait());
    /// }
    /// assert_eq!((backend.len(), backend.overflow_buckets()), (312, 1));
    ///
    /// // A client from another network is admitted at once.
    /// let client: IpAddr = "203.0.113.7".parse()?;
    /// assert!(backend.reserve_now(Some(&client), now, &params, Reserve::new().no_wait()).is_ok());
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// What a full table does with a new key when nothing has drained (default
    /// [`WhenFull::RefuseNewKeys`]); only meaningful with
    /// [`max_keys`](Self::max_keys).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// Group keys with `group_of` under [`max_keys`](Self::max_keys): a group
    /// holds at most [`group_share`](Self::group_share) keys of the table, and
    /// its further keys are decided together on one *overflow bucket* (same
    /// params), so that one group flooding new keys cannot fill the table.
    ///
    /// * **No early admission.** A key decided on its group's overflow bucket
    ///   has its debt there; if it later gets an entry of its own (its group
    ///   fell under its share), that entry starts from the overflow bucket's
    ///   TAT, never from a fresh bucket. Overflow buckets are dropped only once
    ///   drained, like keys.
    /// * **Bounded.** An overflow bucket takes a slot of `max_keys`: keys plus
    ///   overflow buckets never exceed it ([`InMemoryBackend::overflow_buckets`]).
    /// * **Costs.** Known keys pay nothing (the group is computed only when a
    ///   key enters or leaves the table). A network with more active clients
    ///   than its share has its extra clients limited together, on one bucket.
    ///   An attacker holding many networks (an IPv6 `/32` is 65 536 `/48`s; a
    ///   botnet spans thousands) still fills the table: a group bounds what one
    ///   network holds, not how many networks one attacker holds.
    ///
    /// **The default** groups [`IpAddr`](std::net::IpAddr) keys (and
    /// `Ipv4Addr`, `Ipv6Addr`) by network, with
    /// [`ip_group`](super::ip_group): the IPv6 `/48`, the IPv4 `/24`. Other key
    /// types are not grouped unless given a function here. A known key never
    /// looks at its group: the function runs only when a key enters or leaves
    /// the table. Without `max_keys` there is nothing to share and groups are
    /// not used.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_freqlimit::backends::memory::{InMemoryBackend, ip_group};
    ///
    /// // Keys of (client address, route): group them by the client's network.
    /// let backend = InMemoryBackend::<(IpAddr, &'static str)>::builder()
    ///     .max_keys(10_000)
    ///     .group_by(|(ip, _route)| ip_group(*ip))
    ///     .build();
    /// assert_eq!(backend.group_share(), Some(312)); // 10 000 / 32
    /// ```
    pub fn group_by(mut self, group_of: fn(&K) -> u64) -> Self {
        self.group_by = GroupBy::By(group_of);
        self
    }

    /// At most `share` keys of the table per group (default: `max_keys / 32`,
    /// at least 1); see [`group_by`](Self::group_by). A smaller share takes
    /// more networks to fill the table, and limits together sooner the extra
    /// clients of one big network.
    pub fn group_share(mut self, share: usize) -> Self {
        self.group_share = Some(share);
        self
    }

    /// No groups, even for IP addresses: under `max_keys`, any key may take any
    /// free slot (the behaviour before groups; one network may then fill the
    /// table).
    pub fn without_groups(mut self) -> Self {
        self.group_by = GroupBy::Off;
        self
    }

    /// The backend.
    #[must_use]
    pub fn build(self) -> InMemoryBackend<K> {
        let group_of = match self.group_by {
            GroupBy::Default => groups::default_group_of::<K>(),
            GroupBy::By(group_of) => Some(group_of),
            GroupBy::Off => None,
        };
        InMemoryBackend {
            inner: Arc::new(Inner {
                tats: DashMap::with_hasher(foldhash::fast::RandomState::default()),
                global: AtomicU64::new(0),
                holes: HoleTable::default(),
                bound: self.max_keys.map(|max_keys| {
                    let share = self
                        .group_share
                        .unwrap_or(max_keys / groups::DEFAULT_SHARE_DIVISOR);
                    let groups = group_of.map(|group_of| Groups::new(group_of, share));
                    Bound::new(max_keys, self.when_full, groups)
                }),
                idle_ttl: crate::nanos::from_duration(self.idle_ttl),
                sweeper_interval: self.sweeper_interval,
                sweeper_started: AtomicBool::new(false),
                sweeper: Mutex::new(None),
                clock: self.clock,
            }),
        }
    }
}
