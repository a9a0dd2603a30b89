//! [`InMemoryBackendBuilder`]: the settings of an [`InMemoryBackend`].

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::bound::Bound;
use super::holes::HoleTable;
use super::{InMemoryBackend, Inner, WhenFull};

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
    _key: std::marker::PhantomData<fn() -> K>,
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
            _key: std::marker::PhantomData,
        }
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
    /// ```
    /// use std::net::IpAddr;
    /// use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
    ///
    /// let backend = InMemoryBackend::<IpAddr>::builder()
    ///     .max_keys(100_000)
    ///     .when_full(WhenFull::RefuseNewKeys)
    ///     .build();
    /// assert_eq!(backend.max_keys(), Some(100_000));
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

    /// The backend.
    #[must_use]
    pub fn build(self) -> InMemoryBackend<K> {
        InMemoryBackend {
            inner: Arc::new(Inner {
                tats: DashMap::with_hasher(foldhash::fast::RandomState::default()),
                global: AtomicU64::new(0),
                holes: HoleTable::default(),
                bound: self
                    .max_keys
                    .map(|max_keys| Bound::new(max_keys, self.when_full)),
                idle_ttl: crate::nanos::from_duration(self.idle_ttl),
                sweeper_interval: self.sweeper_interval,
                sweeper_started: AtomicBool::new(false),
                sweeper: Mutex::new(None),
            }),
        }
    }
}
