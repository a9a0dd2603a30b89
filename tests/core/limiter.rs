//! `FreqLimit` over the in-memory backend: exact timing on a paused clock,
//! concurrency, the sweeper, and parameter errors.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams, ParamsError, Reserve};

use crate::support::concurrent::wake_times;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn acquire_wakes_at_its_slot_without_drift() {
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(3).with_burst(2),
        InMemoryBackend::new(),
    );
    let start = Instant::now();
    let mut woke = Vec::new();
    for _ in 0..6 {
        limiter.acquire(&"k").await.unwrap();
        woke.push(start.elapsed());
    }
    // Slots are k * T - tau with T = 333 333 334 ns; Tokio's timer fires on the
    // first millisecond at or after a deadline, never before it.
    let t = Duration::from_nanos(333_333_334);
    let slots = [Duration::ZERO, Duration::ZERO, t, 2 * t, 3 * t, 4 * t];
    let expected: Vec<_> = slots
        .iter()
        .map(|s| s.as_nanos().div_ceil(1_000_000) as u64)
        .map(Duration::from_millis)
        .collect();
    assert_eq!(woke, expected);
    assert_eq!(expected[2..], [334 * MS, 667 * MS, 1001 * MS, 1334 * MS]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_wake_in_slot_order() {
    let limiter = Arc::new(FreqLimit::new(
        FreqLimitParams::per_second(2),
        InMemoryBackend::<u8>::new(),
    ));
    let results = wake_times(5, || {
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(&1).await.unwrap() }
    })
    .await;
    let expected: Vec<_> = (0..5).map(|i| (500 * MS * i, 500 * MS * i)).collect();
    assert_eq!(results, expected);
}

#[tokio::test(start_paused = true)]
async fn bounded_wait_rejects_without_consuming() {
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u8>::new());
    limiter.acquire(&1).await.unwrap();
    tokio::time::advance(200 * MS).await;
    let err = limiter.acquire_within(&1, 300 * MS).await.unwrap_err();
    let FreqLimitError::Rejected(rejection) = err else {
        panic!("expected a rejection, got {err:?}");
    };
    // The slot is 800 ms away; 300 ms of patience leaves 500 ms to wait before retrying.
    assert_eq!(rejection.retry_after(), 500 * MS);
    assert_eq!(rejection.reset_after(), 800 * MS);
    // Nothing was consumed: a waiting call still gets the slot at 1 s.
    let start = Instant::now();
    let admission = limiter.acquire(&1).await.unwrap();
    assert_eq!(admission.delay(), 800 * MS);
    assert_eq!(start.elapsed(), 800 * MS);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_matches_the_hand_worked_case() {
    // limit=1, period=1 s, burst=3 at t=0: 0, 0, 0, then 1 s and 2 s away.
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(1).with_burst(3),
        InMemoryBackend::<u8>::new(),
    );
    for remaining in [2, 1, 0] {
        assert_eq!(
            limiter.try_acquire(&9).await.unwrap().remaining(),
            remaining
        );
    }
    let err = limiter.try_acquire(&9).await.unwrap_err();
    assert!(
        matches!(err, FreqLimitError::Rejected(r) if r.retry_after() == Duration::from_secs(1))
    );
    assert_eq!(
        limiter.acquire(&9).await.unwrap().delay(),
        Duration::from_secs(1)
    );
    assert_eq!(
        limiter
            .acquire_with(&9, Reserve::new())
            .await
            .unwrap()
            .delay(),
        Duration::from_secs(1), // the clock moved 1 s while the previous call waited
    );
}

#[tokio::test(start_paused = true)]
async fn impossible_cost_is_refused_before_the_backend() {
    let backend = InMemoryBackend::<u8>::new();
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(1).with_burst(3),
        backend.clone(),
    );
    let err = limiter
        .acquire_with(&1, Reserve::new().cost(4).no_wait())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        FreqLimitError::CostExceedsCapacity {
            cost: 4,
            max_cost: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "cost 4 can never be admitted: at most 3 fits within the allowed wait"
    );
    assert!(backend.is_empty(), "the backend was not asked");
    // Waiting 1 s makes room for one more.
    let err = limiter
        .acquire_with(&1, Reserve::new().cost(5).max_wait(Duration::from_secs(1)))
        .await;
    assert_eq!(
        err.unwrap_err(),
        FreqLimitError::CostExceedsCapacity {
            cost: 5,
            max_cost: 4
        }
    );
    let ok = limiter
        .acquire_with(&1, Reserve::new().cost(4).max_wait(Duration::from_secs(1)))
        .await;
    assert_eq!(ok.unwrap().delay(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_global_bucket_is_not_a_key() {
    let backend = InMemoryBackend::<u8>::new();
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), backend.clone());
    limiter.try_acquire(None).await.unwrap();
    assert!(limiter.try_acquire(None).await.is_err());
    limiter.try_acquire(&0).await.unwrap();
    assert_eq!(backend.len(), 1);
    limiter.clear().await.unwrap();
    limiter.try_acquire(None).await.unwrap();
    limiter.try_acquire(&0).await.unwrap();
}

/// Many threads hammering one key at one instant get exactly the schedule of the
/// same calls made one by one: no slot lost, none given twice.
#[test]
fn threads_on_one_key_lose_no_update() {
    // Enough calls that threads overlap even when the machine is busy and each
    // thread would otherwise finish within one time slice.
    const THREADS: usize = 4;
    const CALLS: usize = 100_000;
    let params = FreqLimitParams::per_second(1_000).with_burst(7);
    let backend = InMemoryBackend::<u64>::builder().without_sweeper().build();
    let now = Timestamp::now() + Duration::from_secs(1);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let backend = backend.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                (0..CALLS)
                    .map(|_| {
                        backend
                            .reserve_now(Some(&42), now, &params, Reserve::new())
                            .unwrap()
                            .delay()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut concurrent: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    concurrent.sort();

    let sequential_backend = InMemoryBackend::<u64>::builder().without_sweeper().build();
    let now = Timestamp::now() + Duration::from_secs(1);
    let sequential: Vec<_> = (0..THREADS * CALLS)
        .map(|_| {
            sequential_backend
                .reserve_now(Some(&42), now, &params, Reserve::new())
                .unwrap()
                .delay()
        })
        .collect();
    assert_eq!(concurrent, sequential);
}

/// The same through `FreqLimit` on a multi-threaded runtime with many keys: each
/// key's reject-only admissions at one instant are exactly its burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_many_keys_admit_exactly_the_burst() {
    let limiter = FreqLimit::new(
        FreqLimitParams::per_hour(1).with_burst(5),
        InMemoryBackend::<u32>::new(),
    );
    let tasks: Vec<_> = (0..400u32)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move { (i % 10, limiter.try_acquire(&(i % 10)).await.is_ok()) })
        })
        .collect();
    let mut admitted = [0; 10];
    for task in tasks {
        let (key, ok) = task.await.unwrap();
        admitted[key as usize] += usize::from(ok);
    }
    assert_eq!(admitted, [5; 10]);
}

#[tokio::test(start_paused = true)]
async fn sweeper_drops_only_drained_keys() {
    let backend = InMemoryBackend::<u32>::builder()
        .sweeper_interval(Duration::from_secs(1))
        .idle_ttl(500 * MS)
        .build();
    let limiter = FreqLimit::new(
        FreqLimitParams::per_second(1).with_burst(3),
        backend.clone(),
    );
    // Key 1 owes 3 s (TAT at 3 s), key 2 owes 1 s.
    for _ in 0..3 {
        limiter.try_acquire(&1).await.unwrap();
    }
    limiter.try_acquire(&2).await.unwrap();
    assert_eq!(backend.len(), 2);

    // Sweeps at 1 s and 2 s: key 2 drained at 1 s, idle long enough only at 2 s.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(backend.len(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(backend.len(), 1);
    // Key 1 is kept while it owes time: 0.9 s until its bucket is full.
    let peek = backend.reserve_now(
        Some(&1),
        Timestamp::now(),
        limiter.params(),
        Reserve::new().cost(0),
    );
    assert_eq!(peek.unwrap().reset_after(), 900 * MS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(backend.is_empty());
}

#[tokio::test(start_paused = true)]
async fn sweeper_stops_when_the_backend_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let backend = InMemoryBackend::<u32>::builder()
        .sweeper_interval(Duration::from_secs(1))
        .build();
    assert_eq!(metrics.num_alive_tasks(), 0);
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), backend);
    limiter.try_acquire(&1).await.unwrap();
    assert_eq!(
        metrics.num_alive_tasks(),
        1,
        "the first reservation starts the sweeper"
    );
    let clone = limiter.clone();
    drop(limiter);
    tokio::task::yield_now().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        1,
        "a clone still holds the backend"
    );
    drop(clone);
    tokio::task::yield_now().await;
    assert_eq!(metrics.num_alive_tasks(), 0);
}

#[test]
fn every_invalid_param_has_its_error() {
    let s = Duration::from_secs(1);
    let cases = [
        (
            FreqLimitParams::try_new(0, s, 1),
            ParamsError::LimitZero,
            "limit must be greater than 0",
        ),
        (
            FreqLimitParams::try_new(1, Duration::ZERO, 1),
            ParamsError::PeriodZero,
            "period must be greater than 0",
        ),
        (
            FreqLimitParams::try_new(1, s, 0),
            ParamsError::BurstZero,
            "burst must be greater than 0",
        ),
        (
            FreqLimitParams::try_new(3, Duration::from_nanos(2), 1),
            ParamsError::IntervalTooShort,
            "period / limit must be at least 1 nanosecond",
        ),
        (
            FreqLimitParams::try_new(1, Duration::from_secs(u64::MAX), 1),
            ParamsError::OutOfRange,
            "period / limit and (burst - 1) * period / limit must fit in u64 nanoseconds",
        ),
        (
            FreqLimitParams::try_new(1, Duration::from_secs(1 << 30), 100),
            ParamsError::OutOfRange,
            "period / limit and (burst - 1) * period / limit must fit in u64 nanoseconds",
        ),
        (
            FreqLimitParams::try_from_secs_f64(1, f64::NAN, 1),
            ParamsError::PeriodNotFinite,
            "period must be a finite number of seconds",
        ),
        (
            FreqLimitParams::try_from_secs_f64(1, f64::INFINITY, 1),
            ParamsError::PeriodNotFinite,
            "period must be a finite number of seconds",
        ),
        (
            FreqLimitParams::try_from_secs_f64(1, -1.0, 1),
            ParamsError::PeriodZero,
            "period must be greater than 0",
        ),
        (
            FreqLimitParams::try_from_secs_f64(1, 0.0, 1),
            ParamsError::PeriodZero,
            "period must be greater than 0",
        ),
        (
            FreqLimitParams::try_from_secs_f64(1, 1e30, 1),
            ParamsError::OutOfRange,
            "period / limit and (burst - 1) * period / limit must fit in u64 nanoseconds",
        ),
        (
            FreqLimitParams::per_second(1).try_with_burst(0),
            ParamsError::BurstZero,
            "burst must be greater than 0",
        ),
    ];
    for (result, error, message) in cases {
        assert_eq!(result, Err(error));
        assert_eq!(error.to_string(), message);
    }
    // The edges that are valid.
    assert_eq!(
        FreqLimitParams::try_new(2, Duration::from_nanos(2), 1)
            .unwrap()
            .interval_nanos(),
        1
    );
    assert_eq!(
        FreqLimitParams::try_from_secs_f64(3, 1.0, 1)
            .unwrap()
            .interval_nanos(),
        333_333_334
    );
}

#[test]
#[should_panic(expected = "limit must be greater than 0")]
fn new_panics_with_the_message() {
    let _ = FreqLimitParams::per_minute(0);
}

/// The sweep boundary, to the nanosecond: a key goes exactly when its TAT plus
/// `idle_ttl` is reached, not one nanosecond before.
#[test]
fn sweep_boundary_is_exact() {
    let params = FreqLimitParams::per_second(1).with_burst(2);
    for idle_ttl in [Duration::ZERO, Duration::from_nanos(1), 250 * MS] {
        let backend = InMemoryBackend::<u8>::builder()
            .idle_ttl(idle_ttl)
            .without_sweeper()
            .build();
        let t0 = Timestamp::now() + Duration::from_secs(1);
        backend
            .reserve_now(Some(&1), t0, &params, Reserve::new())
            .unwrap();
        backend
            .reserve_now(Some(&1), t0, &params, Reserve::new())
            .unwrap();
        // TAT = t0 + 2 s.
        let gone_at = t0 + Duration::from_secs(2) + idle_ttl;
        assert_eq!(backend.sweep(gone_at - Duration::from_nanos(1)), 0);
        assert_eq!(backend.len(), 1);
        assert_eq!(backend.sweep(gone_at), 1);
        assert!(backend.is_empty());
    }
}

/// A caller that gives up while waiting hands its slot back, unless someone
/// reserved after it.
#[tokio::test(start_paused = true)]
async fn dropped_waiter_gives_its_slot_back() {
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u8>::new());
    limiter.acquire(&1).await.unwrap();
    // Waits 1 s for its slot, but the caller only allows 100 ms.
    let gave_up = tokio::time::timeout(100 * MS, limiter.acquire(&1)).await;
    assert!(gave_up.is_err());
    // The next caller gets the slot the first one abandoned: 900 ms from now.
    let next = limiter.acquire(&1).await.unwrap();
    assert_eq!(next.delay(), 900 * MS);

    // Two waiters: the first gives up after the second has reserved, so its slot
    // cannot be taken back without moving the second; nothing changes.
    {
        let first = limiter.acquire(&1);
        let mut first = std::pin::pin!(first);
        assert!(
            poll_once(first.as_mut()).await.is_none(),
            "the first waits 1 s"
        );
        let second = limiter.backend().reserve_now(
            Some(&1),
            Timestamp::now(),
            limiter.params(),
            Reserve::new(),
        );
        assert_eq!(second.unwrap().delay(), Duration::from_secs(2));
    } // the first waiter is dropped here
    let peek = limiter
        .acquire_with(&1, Reserve::new().cost(0))
        .await
        .unwrap();
    assert_eq!(
        peek.reset_after(),
        Duration::from_secs(3),
        "both reservations still stand"
    );
}

/// Polls a future once; `None` if it is still pending.
async fn poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut fut).poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// The fast clock reads real time (it does not follow a paused Tokio clock) and
/// decides exactly as the default one does.
#[tokio::test]
async fn fast_clock_limits_like_the_tokio_clock() {
    use tower_freqlimit::clock::Clock;
    let limiter = FreqLimit::new(
        FreqLimitParams::per_hour(1).with_burst(2),
        InMemoryBackend::<u8>::builder()
            .clock(Clock::fast())
            .build(),
    );
    assert!(limiter.try_acquire(&1).await.is_ok());
    assert!(limiter.try_acquire(&1).await.is_ok());
    let err = limiter.try_acquire(&1).await.unwrap_err();
    let FreqLimitError::Rejected(rejection) = err else {
        panic!("expected a rejection, got {err:?}");
    };
    // About an hour, less the few microseconds since the first call.
    assert!(rejection.retry_after() <= Duration::from_secs(3600));
    assert!(rejection.retry_after() > Duration::from_secs(3599));
    // (That both clocks share a scale is `clock::the_counter_and_tokio_share_a_scale`.)
}

/// Every form of key argument names the same bucket for the same key, and
/// `None` the global bucket apart from it: `&String`, `&str`, `Some(&String)`.
#[tokio::test(start_paused = true)]
async fn key_arguments_of_every_form_meet_on_one_bucket() {
    let limiter = FreqLimit::new(
        FreqLimitParams::per_hour(1),
        InMemoryBackend::<String>::new(),
    );
    let key = String::from("chat:42");
    limiter.try_acquire(Some(&key)).await.unwrap();
    // The global bucket is another bucket: still full.
    limiter.try_acquire(None).await.unwrap();
    for refused in [
        limiter.try_acquire(&key).await,
        limiter.try_acquire("chat:42").await,
        limiter.try_acquire(Some(&key)).await,
        limiter.try_acquire(None).await,
    ] {
        assert!(
            matches!(refused, Err(FreqLimitError::Rejected(_))),
            "{refused:?}"
        );
    }
    // Another key, borrowed: a full bucket of its own.
    limiter.try_acquire("chat:7").await.unwrap();
    assert_eq!(limiter.backend().len(), 2);
}
