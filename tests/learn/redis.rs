//! Learning shared through Redis: two clients (two backends on separate
//! connections, as two processes would have) on one `redis-server`; a `429`
//! seen by one holds the host for the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest_middleware::ClientBuilder;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::reqwest::FreqLimitMiddleware;
use tower_freqlimit::{FreqLimitError, FreqLimitParams};

use crate::support::http::serve;
use crate::support::redis_server::RedisServer;

#[tokio::test]
async fn a_429_seen_by_one_client_holds_the_host_for_the_other() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let app = Router::new().route(
        "/",
        get(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3600")]).into_response() }
        }),
    );
    let addr = serve(app).await;
    let client = |backend: RedisBackend| {
        ClientBuilder::new(reqwest::Client::new())
            .with(
                FreqLimitMiddleware::new(FreqLimitParams::per_second(100), backend)
                    .max_wait(Duration::ZERO),
            )
            .build()
    };
    let url = server.url();
    let connect = || {
        RedisBackend::<String>::builder()
            .prefix("learn")
            .connect(&url)
    };
    let (one, two) = (
        client(connect().await.unwrap()),
        client(connect().await.unwrap()),
    );

    let first = one.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    // The other client never saw that response, and still waits for the reset.
    let err = two.get(format!("http://{addr}/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = &err else {
        panic!("{err:?}")
    };
    let Some(FreqLimitError::Rejected(r)) = err.downcast_ref::<FreqLimitError>() else {
        panic!("{err:?}")
    };
    assert!(r.retry_after() > Duration::from_secs(3590), "{r:?}");
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "the second request was not sent"
    );
}

/// A hold primes this process's negative cache: the calls it refuses are
/// answered without a round trip.
#[tokio::test]
async fn a_hold_is_remembered_by_the_negative_cache() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let backend = RedisBackend::<String>::builder()
        .prefix("learn-cache")
        .connect(&server.url())
        .await
        .unwrap();
    let limiter = tower_freqlimit::FreqLimit::new(FreqLimitParams::per_second(10), backend.clone());
    assert!(limiter.hold("api", Duration::from_secs(60)).await.unwrap());
    let calls = backend.stats().script_calls;
    for _ in 0..3 {
        let err = limiter.try_acquire("api").await.unwrap_err();
        let FreqLimitError::Rejected(r) = err else {
            panic!("{err:?}")
        };
        assert!(r.retry_after() > Duration::from_secs(59), "{r:?}");
    }
    assert_eq!(backend.stats().script_calls, calls, "no round trip");
    assert_eq!(backend.stats().cache_rejections, 3);
}
