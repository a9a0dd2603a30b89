//! Issue 13, point 4: waiters that give up on a shared bucket give every slot
//! back, whatever the order they hang up in, so the next caller is told what
//! it was told before they came. On a paused clock, through `FreqLimit`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{Admission, FreqLimit, FreqLimitError, FreqLimitParams, Reserve};

/// The orders in which the ten waiters hang up.
pub const ORDERS: [(&str, [usize; 10]); 3] = [
    ("first to last", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("last to first", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ("interleaved", [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]),
];

/// 2 a minute: T = 30 s, one at a time.
const PARAMS: FreqLimitParams = FreqLimitParams::per_minute(2);
const T: Duration = Duration::from_secs(30);

/// Polls `fut` once: it must then be waiting (here: sleeping for its slot).
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) {
    std::future::poll_fn(|cx| {
        assert!(
            fut.as_mut().poll(cx).is_pending(),
            "the waiter did not wait"
        );
        Poll::Ready(())
    })
    .await;
}

fn retry_after(result: Result<Admission, FreqLimitError>) -> Duration {
    match result {
        Err(FreqLimitError::Rejected(r)) => r.retry_after(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn ten_abandoned_waiters_on_the_global_bucket_give_every_slot_back() {
    for (order_name, order) in ORDERS {
        let limiter = FreqLimit::new(PARAMS, InMemoryBackend::global());
        limiter.acquire(None).await.unwrap();
        let before = retry_after(limiter.try_acquire(None).await);
        assert_eq!(before, T);

        // Ten waiters: slots at 30 s, 60 s, ... 300 s.
        let mut waiters: Vec<Option<Pin<Box<_>>>> = Vec::new();
        for _ in 0..10 {
            let mut waiter = Box::pin(limiter.acquire(None));
            poll_once(waiter.as_mut()).await;
            waiters.push(Some(waiter));
        }
        assert_eq!(
            retry_after(limiter.try_acquire(None).await),
            11 * T,
            "{order_name}: the waiters hold their slots"
        );
        // They all hang up, in this order.
        for i in order {
            drop(waiters[i].take());
        }
        assert_eq!(
            retry_after(limiter.try_acquire(None).await),
            before,
            "{order_name}: Retry-After after the waiters left"
        );
        // A caller that waits gets the first slot, not the eleventh.
        let start = Instant::now();
        let next = limiter.acquire(None).await.unwrap();
        assert_eq!(next.delay(), T, "{order_name}");
        assert_eq!(start.elapsed(), T, "{order_name}");
    }
}

/// The same with costs: waiters of cost 1 to 3 on a key of burst 3, full.
#[tokio::test(start_paused = true)]
async fn abandoned_weighted_waiters_give_every_unit_back() {
    let params = FreqLimitParams::per_second(1).with_burst(3);
    for (order_name, order) in ORDERS {
        let limiter = FreqLimit::new(params, InMemoryBackend::<String>::new());
        limiter
            .acquire_with("shared", Reserve::new().cost(3))
            .await
            .unwrap();
        let two_now = Reserve::new().cost(2).no_wait();
        assert_eq!(
            retry_after(limiter.acquire_with("shared", two_now).await),
            Duration::from_secs(2)
        );
        let before = limiter
            .backend()
            .reserve_now(
                Some("shared"),
                tower_freqlimit::clock::Timestamp::now(),
                &params,
                Reserve::new().cost(0),
            )
            .unwrap();
        let mut waiters: Vec<Option<Pin<Box<_>>>> = Vec::new();
        for i in 0..10u32 {
            let mut waiter =
                Box::pin(limiter.acquire_with("shared", Reserve::new().cost(1 + i % 3)));
            poll_once(waiter.as_mut()).await;
            waiters.push(Some(waiter));
        }
        for i in order {
            drop(waiters[i].take());
        }
        let after = limiter
            .backend()
            .reserve_now(
                Some("shared"),
                tower_freqlimit::clock::Timestamp::now(),
                &params,
                Reserve::new().cost(0),
            )
            .unwrap();
        assert_eq!(after, before, "{order_name}");
        // Two units 2 s from now, exactly as before the waiters came.
        assert_eq!(
            retry_after(limiter.acquire_with("shared", two_now).await),
            Duration::from_secs(2),
            "{order_name}"
        );
    }
}
