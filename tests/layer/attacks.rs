//! What a client might try to get around the limit, against a real axum
//! server on loopback: a cost driven to 0. (Issue 13; the other probes live
//! beside what they attack: trusted networks in `tests/key`, key floods and
//! abandoned waiters in `tests/backends`.)
#![cfg(feature = "http")]

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimit, FreqLimitLayer, FreqLimitParams};

use crate::support::http::{client, get as http_get, serve};

/// A per-hour limit: nothing refills while the test runs on the real clock.
const HOURLY: FreqLimitParams = FreqLimitParams::per_hour(60).with_burst(2);

/// The request's cost is its `x-items` header, as a batch endpoint would
/// count it; a client controls it, down to 0.
fn items(req: &Request<Body>) -> u32 {
    req.headers()
        .get("x-items")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

/// A request whose cost is 0 passes only when a unit request would: once
/// the client is over its limit, an empty batch is a `429` too (it was a
/// `200`, 5 times out of 5, before cost 0 became a status check).
#[tokio::test]
async fn a_zero_cost_never_gets_past_the_limit() {
    let backend = InMemoryBackend::global();
    let layer = FreqLimitLayer::server(HOURLY, backend.clone()).cost_for(items);
    let addr = serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(layer),
    )
    .await;
    let client = client();
    let send = |n: &'static str| http_get(&client, addr, "/", [("x-items", n)]);

    // Under the limit, an empty batch passes and consumes nothing.
    assert_eq!(send("0").await.status, 200);
    assert_eq!(send("0").await.status, 200);
    assert_eq!(send("2").await.status, 200);
    // Over it: every unit request and every empty batch is refused, with the
    // unit request's Retry-After.
    let unit = send("1").await;
    assert_eq!(unit.status, 429);
    for _ in 0..5 {
        let empty = send("0").await;
        assert_eq!(empty.status, 429);
        assert_eq!(empty.header("retry-after"), unit.header("retry-after"));
    }
    // The refusals consumed nothing either.
    let limiter = FreqLimit::new(HOURLY, backend);
    let status = limiter.status(None).await.unwrap();
    assert_eq!(status.remaining(), 0);
    // Both slots taken, none given to the refusals: the bucket is full in 2 T.
    assert!(
        status.reset_after() > std::time::Duration::from_secs(119),
        "{status:?}"
    );
}
