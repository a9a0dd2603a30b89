//! [`WhenFull`]: what a bounded backend does with a new key when its table
//! is full, and the error it refuses with.

use std::error::Error as StdError;
use std::fmt;

/// What a bounded [`InMemoryBackend`](super::InMemoryBackend) does with a new key
/// when it already holds [`max_keys`](super::InMemoryBackendBuilder::max_keys)
/// keys and none of them has drained.
///
/// Drained keys (whose TAT has passed) always go first, whatever the policy:
/// their state is that of a new key, so dropping them costs nothing.
///
/// | policy | a flood of new keys | known keys | the limit |
/// |---|---|---|---|
/// | [`RefuseNewKeys`](Self::RefuseNewKeys) (default) | refused (`503` over HTTP) until keys drain | unaffected | exact |
/// | [`EvictClosestToDraining`](Self::EvictClosestToDraining) | admitted | the least-owing ones are forgotten | may admit an evicted key's calls early |
///
/// ```
/// use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
/// use tower_freqlimit::clock::Timestamp;
/// use tower_freqlimit::{BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(1);
/// let now = Timestamp::from_nanos(1_000_000_000);
/// let refusing = InMemoryBackend::<u32>::builder().max_keys(2).without_sweeper().build();
/// refusing.reserve_now(Some(&1), now, &params, Reserve::new()).unwrap();
/// refusing.reserve_now(Some(&2), now, &params, Reserve::new()).unwrap();
/// match refusing.reserve_now(Some(&3), now, &params, Reserve::new()) {
///     Err(FreqLimitError::Backend(err)) => assert_eq!(err.kind(), BackendErrorKind::Full),
///     other => panic!("expected a full table, got {other:?}"),
/// }
///
/// let evicting = InMemoryBackend::<u32>::builder()
///     .max_keys(2)
///     .when_full(WhenFull::EvictClosestToDraining)
///     .without_sweeper()
///     .build();
/// for key in 1..=3 {
///     evicting.reserve_now(Some(&key), now, &params, Reserve::new()).unwrap();
/// }
/// assert_eq!(evicting.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WhenFull {
    /// Refuse the new key's call with
    /// [`FreqLimitError::Backend`](crate::FreqLimitError::Backend) of kind [`BackendErrorKind::Full`](crate::BackendErrorKind::Full)
    /// (`503 Service Unavailable` with the layer's HTTP responses). Nothing is
    /// stored for it.
    ///
    /// **Costs:** new clients are turned away while the table is full of keys
    /// that still owe time, which a flood of unique keys can arrange for as long
    /// as it lasts (plus one interval), unless the flood comes from one group
    /// (one network, for `IpAddr` keys: see
    /// [`group_by`](super::InMemoryBackendBuilder::group_by)), which holds at
    /// most its share of the table. Keys already held are never touched, so
    /// the limit stays exact: no call is ever admitted early. This is the
    /// default: a rate limiter's first promise is not to over-admit, and a
    /// refusal is visible (an error, a `503`), where an early admission is not.
    /// Size `max_keys` above your real working set (distinct keys active within
    /// one refill period) and the refusals only ever reach a flood.
    #[default]
    RefuseNewKeys,
    /// Forget the held key closest to draining (the smallest TAT, chosen from a
    /// batch found by the last scan) and admit the new key in its place.
    ///
    /// **Costs:** the evicted key still owed time (at most one refill of its
    /// bucket, `burst × T`, and usually much less, being the closest to
    /// draining); its next call is treated as a new key's, so it may be
    /// **admitted early**, by up to that owed time. New clients are never turned
    /// away. Under a flood, the flood's keys evict each other and the
    /// least-limited legitimate keys; heavily limited keys (a client hammering
    /// one key) are the last to go. The choice is approximate: candidates are
    /// the closest to draining *as of the last scan*.
    EvictClosestToDraining,
}

/// The error source of a refusal: which bound was hit.
#[derive(Debug)]
pub(super) struct KeyTableFull {
    pub(super) max_keys: usize,
}

impl fmt::Display for KeyTableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the in-memory backend holds its max_keys ({}) keys, none of them drained, \
             and refuses new keys (WhenFull::RefuseNewKeys)",
            self.max_keys
        )
    }
}

impl StdError for KeyTableFull {}
