//! `FreqLimit::hold` and the in-memory backend's `hold`, on a paused clock.

use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{BackendErrorKind, FreqLimit, FreqLimitError, FreqLimitParams, Reserve};

const S: Duration = Duration::from_secs(1);

/// After a hold of `h`, the next call waits exactly `h`; then the key paces
/// at `T` again (no burst at the reset: the server just said we were over).
#[tokio::test(start_paused = true)]
async fn a_held_key_waits_exactly_then_paces() {
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(10).with_burst(5),
        InMemoryBackend::<String>::new(),
    );
    assert!(limiter.hold("api", 30 * S).await.unwrap());
    let start = Instant::now();
    limiter.acquire("api").await.unwrap();
    assert_eq!(start.elapsed(), 30 * S);
    let next = limiter.try_acquire("api").await.unwrap_err();
    let FreqLimitError::Rejected(r) = next else {
        panic!("{next:?}")
    };
    assert_eq!(r.retry_after(), Duration::from_millis(100));
    // Other keys and the global bucket are untouched.
    assert_eq!(limiter.status("other").await.unwrap().remaining(), 5);
    assert_eq!(limiter.status(None).await.unwrap().remaining(), 5);
}

/// A hold never shortens a debt: a shorter one moves nothing.
#[tokio::test(start_paused = true)]
async fn a_hold_never_shortens_what_is_owed() {
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u8>::new());
    assert!(limiter.hold(&1, 10 * S).await.unwrap());
    assert!(!limiter.hold(&1, 3 * S).await.unwrap());
    assert!(limiter.hold(&1, 12 * S).await.unwrap());
    assert!(
        !limiter.hold(&1, 12 * S).await.unwrap(),
        "the same hold again moves nothing"
    );
    assert_eq!(limiter.status(&1).await.unwrap().retry_after(), 12 * S);
    // A key that owes less than the hold is pushed to it.
    limiter.acquire(&2).await.unwrap();
    assert!(limiter.hold(&2, 5 * S).await.unwrap());
    assert_eq!(limiter.status(&2).await.unwrap().retry_after(), 5 * S);
    // Holding nothing stores nothing.
    let backend = limiter.backend();
    assert!(!limiter.hold(&3, Duration::ZERO).await.unwrap());
    assert_eq!(backend.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_global_bucket_is_held_too() {
    let limiter = FreqLimit::new(FreqLimitParams::per_second(30), InMemoryBackend::global());
    limiter.hold(None, 2 * S).await.unwrap();
    let start = Instant::now();
    limiter.acquire(None).await.unwrap();
    assert_eq!(start.elapsed(), 2 * S);
}

/// A new key on a full bounded table is refused as any new key is; a known
/// key is held whatever the table.
#[test]
fn a_bounded_table_holds_known_keys_and_refuses_new_ones_when_full() {
    let backend = InMemoryBackend::<u32>::builder()
        .max_keys(1)
        .without_sweeper()
        .build();
    let params = FreqLimitParams::per_second(1);
    let now = Timestamp::from_nanos(1_000_000_000);
    assert!(backend.hold_now(Some(&1), now, 5 * S, &params).unwrap());
    match backend.hold_now(Some(&2), now, 5 * S, &params) {
        Err(FreqLimitError::Backend(err)) => assert_eq!(err.kind(), BackendErrorKind::Full),
        other => panic!("{other:?}"),
    }
    assert!(backend.hold_now(Some(&1), now, 6 * S, &params).unwrap());
    let admitted = backend
        .reserve_now(Some(&1), now, &params, Reserve::new())
        .unwrap();
    assert_eq!(admitted.delay(), 6 * S);
}

/// A backend that does not implement `hold` says so.
#[tokio::test]
async fn a_backend_without_hold_refuses_it_plainly() {
    struct Plain(InMemoryBackend<u8>);
    impl FreqLimitBackend for Plain {
        type Key = u8;
        type ReserveFuture = <InMemoryBackend<u8> as FreqLimitBackend>::ReserveFuture;
        fn reserve<Q>(
            &self,
            key: Option<&Q>,
            now: Timestamp,
            params: &FreqLimitParams,
            request: Reserve,
        ) -> Self::ReserveFuture
        where
            u8: std::borrow::Borrow<Q>,
            Q: tower_freqlimit::backends::BorrowedKey<u8> + ?Sized,
        {
            self.0.reserve(key, now, params, request)
        }
        fn clear(&self) -> impl Future<Output = Result<(), tower_freqlimit::BackendError>> + Send {
            self.0.clear()
        }
    }
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(1),
        Plain(InMemoryBackend::new()),
    );
    let err = limiter.hold(&1, S).await.unwrap_err();
    let FreqLimitError::Backend(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), BackendErrorKind::Other);
    assert!(err.to_string().contains("hold"), "{err}");
}

/// With groups (`IpAddr` keys under `max_keys`), a key past its network's
/// share is decided on the group's overflow bucket: a hold on it holds that
/// bucket, which its siblings past the share share.
#[test]
fn a_hold_on_a_key_past_its_groups_share_holds_the_overflow_bucket() {
    use std::net::IpAddr;
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(32)
        .without_sweeper()
        .build();
    assert_eq!(backend.group_share(), Some(1));
    let params = FreqLimitParams::per_second(1);
    let now = Timestamp::from_nanos(1_000_000_000);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // The /48's one own entry, then a second /64 of it: past the share.
    backend
        .reserve_now(Some(&ip("2001:db8:1:1::")), now, &params, Reserve::new())
        .unwrap();
    assert!(
        backend
            .hold_now(Some(&ip("2001:db8:1:2::")), now, 9 * S, &params)
            .unwrap()
    );
    assert_eq!(backend.len(), 1);
    assert_eq!(backend.overflow_buckets(), 1);
    // A third /64 of that /48 waits for the hold; another network does not.
    let sibling = backend
        .reserve_now(Some(&ip("2001:db8:1:3::")), now, &params, Reserve::new())
        .unwrap();
    assert_eq!(sibling.delay(), 9 * S);
    let other = backend
        .reserve_now(Some(&ip("2001:db8:2::")), now, &params, Reserve::new())
        .unwrap();
    assert_eq!(other.delay(), Duration::ZERO);
}
