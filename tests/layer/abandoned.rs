//! Issue 13, point 4, through the Tower layer: ten requests waiting on the
//! global bucket are dropped (a client hung up) in several orders; the next
//! request is forwarded, and a reject-only layer on the same backend answers
//! `Retry-After`, exactly as before they came. On a paused clock.

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::layer::FreqLimitLayer;

const ORDERS: [(&str, [usize; 10]); 3] = [
    ("first to last", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("last to first", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ("interleaved", [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]),
];

/// 2 a minute: T = 30 s.
const PARAMS: FreqLimitParams = FreqLimitParams::per_minute(2);

/// The `Retry-After` a reject-only HTTP layer on `backend` answers now.
#[cfg(feature = "http")]
async fn retry_after(backend: &InMemoryBackend<tower_freqlimit::backends::NoKey>) -> String {
    let svc = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(PARAMS, backend.clone())
                .no_wait()
                .http_responses(),
        )
        .service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
    let response = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(response.status(), 429);
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[cfg(not(feature = "http"))]
async fn retry_after(backend: &InMemoryBackend<tower_freqlimit::backends::NoKey>) -> String {
    use tower_freqlimit::{FreqLimit, FreqLimitError};
    match FreqLimit::new(PARAMS, backend.clone())
        .try_acquire(None)
        .await
    {
        Err(FreqLimitError::Rejected(r)) => r.retry_after_secs().to_string(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn ten_dropped_waiting_requests_give_every_slot_back() {
    for (order_name, order) in ORDERS {
        let backend = InMemoryBackend::global();
        let mut svc = ServiceBuilder::new()
            .layer(FreqLimitLayer::new(PARAMS, backend.clone()))
            .service(service_fn(|id: u32| async move { Ok::<_, Infallible>(id) }));
        assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 0);
        let before = retry_after(&backend).await;
        assert_eq!(before, "30");

        // Ten requests reserve their slots (30 s ... 300 s) as they are called.
        let mut waiting: Vec<Option<_>> = Vec::new();
        for id in 1..=10 {
            waiting.push(Some(svc.ready().await.unwrap().call(id)));
        }
        assert_eq!(retry_after(&backend).await, "330", "{order_name}");
        for i in order {
            drop(waiting[i].take());
        }
        assert_eq!(retry_after(&backend).await, before, "{order_name}");

        // The next request is forwarded at 30 s, not 330 s.
        let start = Instant::now();
        let next = svc.ready().await.unwrap().call(11).await.unwrap();
        assert_eq!(next, 11);
        assert_eq!(start.elapsed(), Duration::from_secs(30), "{order_name}");
    }
}
