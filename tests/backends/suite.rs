//! One behavioural suite, written once, run against every backend: the
//! in-memory backend and (feature `redis`) the Redis backend on a real
//! `redis-server`.
//!
//! Times are explicit timestamps, so the expectations are exact: the Redis
//! backend runs with `RedisClock::LimiterTimestamp` (the script uses the `now` passed in,
//! in microseconds), and every interval here is a whole number of microseconds,
//! where the Redis backend's decisions equal the in-memory backend's.

use std::time::Duration;

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{Admission, FreqLimitError, FreqLimitParams, Reserve};

const MS: Duration = Duration::from_millis(1);
/// An arbitrary origin, far from zero.
const T0: Timestamp = Timestamp::from_nanos(1_000_000_000_000_000);

/// A backend under test.
trait Subject: FreqLimitBackend<Key = String> {
    /// Waits until refunds sent so far have taken effect.
    async fn settle(&self) {}
}

impl Subject for tower_freqlimit::backends::memory::InMemoryBackend<String> {}

#[cfg(feature = "redis")]
impl Subject for tower_freqlimit::backends::redis::RedisBackend<String> {
    async fn settle(&self) {
        self.refunds_settled().await;
    }
}

async fn ask<B: Subject>(
    b: &B,
    key: Option<&str>,
    at: Duration,
    params: &FreqLimitParams,
    request: Reserve,
) -> Result<Admission, FreqLimitError> {
    let key = key.map(str::to_owned);
    b.reserve(key.as_ref(), T0 + at, params, request).await
}

fn admitted(result: Result<Admission, FreqLimitError>) -> Admission {
    result.unwrap()
}

fn rejected(result: Result<Admission, FreqLimitError>) -> tower_freqlimit::Rejection {
    match result {
        Err(FreqLimitError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

mod cases {
    use super::*;

    pub async fn burst_then_pace<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(10).with_burst(3);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let a = admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await);
            seen.push((a.delay(), a.remaining(), a.reset_after()));
        }
        assert_eq!(
            seen,
            [
                (Duration::ZERO, 2, 100 * MS),
                (Duration::ZERO, 1, 200 * MS),
                (Duration::ZERO, 0, 300 * MS),
                (100 * MS, 0, 400 * MS),
                (200 * MS, 0, 500 * MS),
            ]
        );
    }

    pub async fn bounded_wait_rejects_without_consuming<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(1);
        admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await);
        let r = rejected(
            ask(
                &b,
                Some("k"),
                200 * MS,
                &p,
                Reserve::new().max_wait(300 * MS),
            )
            .await,
        );
        assert_eq!(r.retry_after(), 500 * MS);
        assert_eq!(r.reset_after(), 800 * MS);
        assert_eq!(r.remaining(), 0);
        // Nothing consumed: a waiting call still gets the slot at 1 s.
        let a = admitted(ask(&b, Some("k"), 200 * MS, &p, Reserve::new()).await);
        assert_eq!(a.delay(), 800 * MS);
    }

    pub async fn reject_only_then_retry_after<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(2);
        let no_wait = Reserve::new().no_wait();
        admitted(ask(&b, Some("k"), Duration::ZERO, &p, no_wait).await);
        let r = rejected(ask(&b, Some("k"), Duration::ZERO, &p, no_wait).await);
        assert_eq!(r.retry_after(), 500 * MS);
        rejected(ask(&b, Some("k"), 499 * MS, &p, no_wait).await);
        let a = admitted(ask(&b, Some("k"), r.retry_after(), &p, no_wait).await);
        assert_eq!(a.delay(), Duration::ZERO);
        assert_eq!(a.remaining(), 0);
    }

    pub async fn cost_and_peek<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(10).with_burst(10);
        let at = Duration::ZERO;
        let batch = admitted(ask(&b, Some("k"), at, &p, Reserve::new().cost(8).no_wait()).await);
        assert_eq!(batch.remaining(), 2);
        assert_eq!(batch.reset_after(), 800 * MS);
        let r = rejected(ask(&b, Some("k"), at, &p, Reserve::new().cost(3).no_wait()).await);
        assert_eq!(
            (r.retry_after(), r.remaining(), r.reset_after()),
            (100 * MS, 2, 800 * MS)
        );
        let two = admitted(ask(&b, Some("k"), at, &p, Reserve::new().cost(2).no_wait()).await);
        assert_eq!(two.remaining(), 0);
        // Cost 0 is a status check: it waits as a unit call would (100 ms)...
        let peek = admitted(ask(&b, Some("k"), at, &p, Reserve::new().cost(0)).await);
        assert_eq!(
            (peek.delay(), peek.remaining(), peek.reset_after()),
            (100 * MS, 0, 1000 * MS)
        );
        // ... and is refused when a unit call would be, twice over (the Redis
        // backend's second answer may come from its negative cache).
        for _ in 0..2 {
            let r = rejected(ask(&b, Some("k"), at, &p, Reserve::new().cost(0).no_wait()).await);
            assert_eq!(
                (r.retry_after(), r.remaining(), r.reset_after()),
                (100 * MS, 0, 1000 * MS)
            );
        }
        // The peeks consumed nothing; a cost that can never fit is its own error.
        assert_eq!(
            ask(&b, Some("k"), at, &p, Reserve::new().cost(11).no_wait()).await,
            Err(FreqLimitError::CostExceedsCapacity {
                cost: 11,
                max_cost: 10
            })
        );
        let waited = admitted(ask(&b, Some("k"), at, &p, Reserve::new().cost(2)).await);
        assert_eq!(waited.delay(), 200 * MS);
    }

    /// `status` reads a key without consuming anything, a new key included
    /// (which it does not store).
    pub async fn status_reads_without_consuming<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(10).with_burst(3);
        let status = |key: Option<&'static str>, at: Duration| {
            let key = key.map(str::to_owned);
            let b = &b;
            async move { b.status(key.as_ref(), T0 + at, &p).await.unwrap() }
        };
        let fresh = status(Some("k"), Duration::ZERO).await;
        assert_eq!(
            (fresh.remaining(), fresh.reset_after(), fresh.retry_after()),
            (3, Duration::ZERO, Duration::ZERO)
        );
        for _ in 0..3 {
            admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new().no_wait()).await);
        }
        for _ in 0..3 {
            let empty = status(Some("k"), Duration::ZERO).await;
            assert_eq!(
                (empty.remaining(), empty.reset_after(), empty.retry_after()),
                (0, 300 * MS, 100 * MS)
            );
        }
        let later = status(Some("k"), 150 * MS).await;
        assert_eq!((later.remaining(), later.reset_after()), (1, 150 * MS));
        // The next call sees what the status said: one unit at 150 ms, then none.
        admitted(ask(&b, Some("k"), 150 * MS, &p, Reserve::new().no_wait()).await);
        rejected(ask(&b, Some("k"), 150 * MS, &p, Reserve::new().no_wait()).await);
        // Another key and the global bucket are untouched.
        assert_eq!(status(Some("other"), Duration::ZERO).await.remaining(), 3);
        assert_eq!(status(None, Duration::ZERO).await.remaining(), 3);
    }

    pub async fn keys_are_independent_and_the_global_bucket_apart<B: Subject>(b: B) {
        let p = FreqLimitParams::per_minute(1);
        let no_wait = Reserve::new().no_wait();
        let at = Duration::ZERO;
        for key in [Some("None"), None, Some(""), Some("g"), Some("k:x")] {
            ask(&b, key, at, &p, no_wait)
                .await
                .unwrap_or_else(|e| panic!("first call on {key:?}: {e}"));
        }
        for key in [Some("None"), None, Some(""), Some("g"), Some("k:x")] {
            rejected(ask(&b, key, at, &p, no_wait).await);
        }
        admitted(ask(&b, Some("x"), at, &p, no_wait).await);
    }

    pub async fn refund_gives_back_any_slot<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(1);
        let at = Duration::ZERO;
        let key = Some("k".to_owned());
        let first = admitted(ask(&b, Some("k"), at, &p, Reserve::new()).await);
        let second = admitted(ask(&b, Some("k"), at, &p, Reserve::new()).await);
        assert_eq!(second.delay(), 1000 * MS);
        assert!(b.refund(key.as_ref(), &second));
        b.settle().await;
        // The slot at 1 s is free again.
        let again = admitted(ask(&b, Some("k"), at, &p, Reserve::new()).await);
        assert_eq!(again.delay(), 1000 * MS);
        // `first` is not the last reservation any more: its slot becomes a
        // hole, which the next call takes before the TAT.
        assert!(b.refund(key.as_ref(), &first));
        b.settle().await;
        let next = admitted(ask(&b, Some("k"), at, &p, Reserve::new()).await);
        assert_eq!(next.delay(), Duration::ZERO);
        let after = admitted(ask(&b, Some("k"), at, &p, Reserve::new()).await);
        assert_eq!(after.delay(), 2000 * MS);
        // Refunding the first reservation of a key empties it again.
        let other = admitted(ask(&b, Some("o"), at, &p, Reserve::new()).await);
        assert!(b.refund(Some(&"o".to_owned()), &other));
        b.settle().await;
        let fresh = admitted(ask(&b, Some("o"), at, &p, Reserve::new().no_wait()).await);
        assert_eq!(fresh.delay(), Duration::ZERO);
    }

    /// A hold (the paced server said "retry after"): nothing within it, then
    /// one call, then one every `T`; a shorter hold moves nothing; holes
    /// below the hold are forgotten (a slot there would admit a call within
    /// it); the global bucket and other keys are untouched.
    pub async fn hold_pushes_the_schedule_back<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(10).with_burst(3); // T = 100 ms, tau = 200 ms
        let hold = |key: Option<&'static str>, at: Duration, d: Duration| {
            let key = key.map(str::to_owned);
            let b = &b;
            async move { b.hold(key.as_ref(), T0 + at, d, &p).await.unwrap() }
        };
        assert!(hold(Some("k"), Duration::ZERO, 5000 * MS).await);
        assert!(!hold(Some("k"), Duration::ZERO, 3000 * MS).await);
        let r = rejected(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new().no_wait()).await);
        assert_eq!(r.retry_after(), 5000 * MS);
        let first = admitted(ask(&b, Some("k"), 5000 * MS, &p, Reserve::new().no_wait()).await);
        assert_eq!(first.delay(), Duration::ZERO);
        let next = admitted(ask(&b, Some("k"), 5000 * MS, &p, Reserve::new()).await);
        assert_eq!(next.delay(), 100 * MS);
        assert_eq!(
            admitted(
                ask(
                    &b,
                    Some("other"),
                    Duration::ZERO,
                    &p,
                    Reserve::new().no_wait()
                )
                .await
            )
            .delay(),
            Duration::ZERO
        );
        assert_eq!(
            admitted(ask(&b, None, Duration::ZERO, &p, Reserve::new().no_wait()).await).delay(),
            Duration::ZERO
        );

        // A hole given back before the hold is not used within it.
        let p1 = FreqLimitParams::per_second(1); // T = 1 s, burst 1
        let key = Some("h".to_owned());
        let a = admitted(ask(&b, Some("h"), Duration::ZERO, &p1, Reserve::new()).await);
        let second = admitted(ask(&b, Some("h"), Duration::ZERO, &p1, Reserve::new()).await);
        admitted(ask(&b, Some("h"), Duration::ZERO, &p1, Reserve::new()).await);
        assert_eq!((a.delay(), second.delay()), (Duration::ZERO, 1000 * MS));
        assert!(b.refund(key.as_ref(), &second)); // a hole at [1 s, 2 s)
        b.settle().await;
        // The TAT (3 s) is past the hold's end: it stays, but the part of the
        // hole below 1.5 s goes, and what is left of it is too short for a call.
        assert!(!b.hold(key.as_ref(), T0, 1500 * MS, &p1).await.unwrap());
        let after = admitted(ask(&b, Some("h"), Duration::ZERO, &p1, Reserve::new()).await);
        assert_eq!(
            after.delay(),
            3000 * MS,
            "the hole is below the hold: the call goes at the TAT"
        );
    }

    pub async fn clear_forgets_every_key<B: Subject>(b: B) {
        let p = FreqLimitParams::per_hour(1);
        let no_wait = Reserve::new().no_wait();
        let keys: Vec<String> = (0..50).map(|i| format!("user:{i}")).collect();
        for key in &keys {
            admitted(ask(&b, Some(key), Duration::ZERO, &p, no_wait).await);
        }
        admitted(ask(&b, None, Duration::ZERO, &p, no_wait).await);
        rejected(ask(&b, Some("user:7"), Duration::ZERO, &p, no_wait).await);
        b.clear().await.unwrap();
        for key in &keys {
            admitted(ask(&b, Some(key), Duration::ZERO, &p, no_wait).await);
        }
        admitted(ask(&b, None, Duration::ZERO, &p, no_wait).await);
    }

    pub async fn time_going_back_admits_no_burst<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(10).with_burst(3);
        let no_wait = Reserve::new().no_wait();
        let later = Duration::from_secs(10);
        for _ in 0..3 {
            admitted(ask(&b, Some("k"), later, &p, no_wait).await);
        }
        // The clock goes 10 s back: the debt looks larger, nothing passes.
        for _ in 0..3 {
            let r = rejected(ask(&b, Some("k"), Duration::ZERO, &p, no_wait).await);
            assert_eq!(r.retry_after(), later + 100 * MS);
            assert_eq!(r.reset_after(), later + 300 * MS);
        }
        // A waiting call is scheduled after the debt, not at once.
        let a = admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await);
        assert_eq!(a.delay(), later + 100 * MS);
    }

    pub async fn a_drained_key_is_as_good_as_new<B: Subject>(b: B) {
        let p = FreqLimitParams::per_second(2).with_burst(2);
        let new_key = admitted(
            ask(
                &b,
                Some("fresh"),
                Duration::from_secs(5),
                &p,
                Reserve::new(),
            )
            .await,
        );
        admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await);
        admitted(ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await);
        let later = admitted(ask(&b, Some("k"), Duration::from_secs(5), &p, Reserve::new()).await);
        assert_eq!(later, new_key);
    }

    pub async fn no_drift_over_many_slots<B: Subject>(b: B) {
        // 2 000 waiting calls at one instant: the last waits exactly 1999 T.
        let p = FreqLimitParams::per_second(1000);
        let mut last = None;
        for _ in 0..2_000 {
            last = Some(admitted(
                ask(&b, Some("k"), Duration::ZERO, &p, Reserve::new()).await,
            ));
        }
        let last = last.unwrap();
        assert_eq!(last.delay(), 1999 * MS);
        assert_eq!(last.reset_after(), 2000 * MS);
        // Half-way through the debt, 1000 slots are still owed.
        let peek = admitted(ask(&b, Some("k"), 1000 * MS, &p, Reserve::new().cost(0)).await);
        assert_eq!(peek.reset_after(), 1000 * MS);
    }
}

/// One `#[tokio::test]` per case for a backend made by `$make` (an async block).
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use tower_freqlimit::backends::memory::InMemoryBackend;
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(InMemoryBackend::<String>::new()).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis {
            use tower_freqlimit::backends::redis::{RedisBackend, RedisClock};
            use crate::support::redis_server::RedisServer;
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(server) = RedisServer::start() else { return };
                    let backend = RedisBackend::<String>::builder()
                        .clock(RedisClock::LimiterTimestamp)
                        .timeout(std::time::Duration::from_secs(5))
                        .connect(&server.url())
                        .await
                        .expect("connect to the test server");
                    super::cases::$case(backend.clone()).await;
                    // Every decision was made by Redis.
                    assert!(backend.stats().script_calls > 0);
                    assert_eq!(backend.stats().failures, 0);
                }
            )*
        }
    };
}

suite!(
    burst_then_pace,
    bounded_wait_rejects_without_consuming,
    reject_only_then_retry_after,
    cost_and_peek,
    status_reads_without_consuming,
    keys_are_independent_and_the_global_bucket_apart,
    refund_gives_back_any_slot,
    hold_pushes_the_schedule_back,
    clear_forgets_every_key,
    time_going_back_admits_no_burst,
    a_drained_key_is_as_good_as_new,
    no_drift_over_many_slots,
);
