//! The clocks: the time-stamp counter (the default of a normal build) against
//! Tokio's clock, and one time base per backend for the decisions, the waits
//! and the sweeper.
//!
//! Two tests here read real time: they check the counter against the system's
//! monotonic clock, which no paused clock can stand in for. They assert
//! orderings and a drift bound, never how long anything took.

use std::time::Duration;

use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::{Clock, DRIFT_BOUND_PPM, Timestamp};
use tower_freqlimit::{FreqLimit, FreqLimitBackend, FreqLimitError, FreqLimitParams};

/// With `test-util` (every build of these tests has it), the default is
/// Tokio's clock, so `pause()` moves every limiter built without a clock.
#[tokio::test(start_paused = true)]
async fn the_default_clock_of_a_test_build_follows_pause() {
    let clock = Clock::new();
    assert!(!clock.is_fast());
    assert!(!InMemoryBackend::<u8>::new().clock().is_fast());
    let before = clock.now();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(clock.now(), before + Duration::from_secs(3600));
    assert_eq!(Timestamp::now(), clock.now());
}

/// The counter never goes back on one thread, and over a real 300 ms it
/// agrees with Tokio's clock (the system's monotonic clock, unpaused) to
/// within [`DRIFT_BOUND_PPM`] of the interval, plus the width of the paired
/// readings.
#[tokio::test]
async fn the_counter_is_monotonic_and_tracks_tokio_over_a_sleep() {
    let fast = Clock::fast();
    assert!(fast.is_fast());
    let mut last = fast.now();
    for _ in 0..100_000 {
        let now = fast.now();
        assert!(now >= last, "{now:?} < {last:?}");
        last = now;
    }
    let (fast0, tokio0, width0) = paired(&fast);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fast1, tokio1, width1) = paired(&fast);
    let on_fast = fast1.saturating_duration_since(fast0);
    let on_tokio = tokio1.saturating_duration_since(tokio0);
    assert!(on_tokio >= Duration::from_millis(300));
    let apart = on_fast.abs_diff(on_tokio);
    let bound = on_tokio * u32::try_from(DRIFT_BOUND_PPM).unwrap() / 1_000_000 + width0 + width1;
    assert!(
        apart <= bound,
        "counter {on_fast:?}, Tokio {on_tokio:?}: {apart:?} apart, bound {bound:?}"
    );
}

/// The counter's time and Tokio's at one instant: the counter read between
/// two reads of Tokio's clock, retried until they lie within 50 µs (a
/// preemption between the reads would measure the scheduler, not the
/// clocks). Returns both and the bracket's width.
fn paired(fast: &Clock) -> (Timestamp, Timestamp, Duration) {
    let tokio = Clock::tokio();
    for _ in 0..1_000 {
        let before = tokio.now();
        let counter = fast.now();
        let after = tokio.now();
        let width = after.saturating_duration_since(before);
        if width <= Duration::from_micros(50) {
            return (counter, before + width / 2, width);
        }
    }
    panic!("no two reads of Tokio's clock within 50 µs in 1000 tries");
}

/// Both clocks put an instant on one scale: in this young process the
/// counter and Tokio's clock agree to well under a millisecond.
#[test]
fn the_counter_and_tokio_share_a_scale() {
    let (counter, tokio, width) = paired(&Clock::fast());
    let apart = counter
        .max(tokio)
        .saturating_duration_since(counter.min(tokio));
    assert!(
        apart <= Duration::from_micros(500) + width,
        "{apart:?} apart"
    );
}

/// A wait decided on the counter is timed on Tokio's timer but ends on the
/// counter: a waiting call never starts before its slot on the counter.
#[tokio::test]
async fn a_wait_on_the_counter_never_ends_before_its_slot() {
    let backend = InMemoryBackend::<u8>::builder()
        .clock(Clock::fast())
        .build();
    let limiter = FreqLimit::new(FreqLimitParams::per_second(50), backend);
    let clock = limiter.clock().clone();
    assert!(clock.is_fast());
    // Each wait is 20 ms; a broken clock fails the test instead of hanging it.
    let acquire = || tokio::time::timeout(Duration::from_secs(5), limiter.acquire(&1));
    let first = acquire().await.expect("a 20 ms wait").unwrap();
    assert!(first.delay().is_zero());
    for n in 1..=5u32 {
        let asked = clock.now();
        let admission = acquire().await.expect("a 20 ms wait").unwrap();
        let slot = asked + admission.delay();
        assert!(clock.now() >= slot, "call {n} started before its slot");
        assert!(!admission.delay().is_zero());
    }
}

/// The sweeper reads the backend's clock, not the timer's: with a counter
/// clock and Tokio's clock paused and moved two hours on, the sweeper ticks
/// (on Tokio's timer) but finds the key still owing time on the counter, so
/// the key is kept and stays limited. When the sweeper read Tokio's time, it
/// dropped the key and the next call was admitted an hour early.
#[tokio::test(start_paused = true)]
async fn the_sweeper_reads_the_backends_clock() {
    let backend = InMemoryBackend::<u8>::builder()
        .clock(Clock::fast())
        .sweeper_interval(Duration::from_secs(1))
        .build();
    let limiter = FreqLimit::new(FreqLimitParams::per_hour(1), backend.clone());
    limiter.try_acquire(&1).await.unwrap();
    assert_eq!(backend.len(), 1);
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(3600)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(backend.len(), 1, "swept on the timer's time");
    let err = limiter.try_acquire(&1).await.unwrap_err();
    assert!(matches!(err, FreqLimitError::Rejected(_)), "{err:?}");
}

/// A counter deadline becomes Tokio's now plus what is left on the counter;
/// one already passed, Tokio's now.
#[tokio::test(start_paused = true)]
async fn a_counter_deadline_maps_to_what_is_left_from_tokios_now() {
    let clock = Clock::fast();
    let hour = Duration::from_secs(3600);
    let at = clock.wake_at(clock.now() + hour);
    let from_now = at - tokio::time::Instant::now();
    // Less than an hour by the counter reads in between (microseconds).
    assert!(
        from_now <= hour && from_now > hour - Duration::from_millis(1),
        "{from_now:?}"
    );
    let past = Timestamp::from_nanos(clock.now().as_nanos() - 1_000_000_000);
    assert_eq!(clock.wake_at(past), tokio::time::Instant::now());
    // A deadline past what an `Instant` can hold: far in the future, not
    // wrapped or in the past.
    let never = clock.wake_at(Timestamp::from_nanos(u64::MAX));
    assert!(never > tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
}
