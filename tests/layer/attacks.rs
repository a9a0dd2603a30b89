//! What a client might try to get around the limit, against a real axum
//! server on loopback: a cost driven to 0, and a flood of new keys from one
//! IPv6 network. (Issue 13; the other probes live beside what they attack:
//! trusted networks in `tests/key`, the simulated 300 s prefix flood and
//! abandoned waiters in `tests/backends`, `tests/core` and `tests/layer/abandoned.rs`.)
#![cfg(feature = "http")]

use axum::body::Body;
use axum::http::Request;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimit, FreqLimitLayer, FreqLimitParams};

use crate::support::http::{client, get as http_get, ok_app, serve};

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
    let addr = serve(ok_app().layer(layer)).await;
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

/// One IPv6 `/48` rotating `/64`s (written by a trusted proxy on loopback)
/// against a server bounded to 64 keys: its network holds only its share of
/// the table, so first-time clients from other networks are still served.
/// Without groups (the former behaviour) the flood fills the table and they
/// get `503`. (`ClientIp` reads the peer from axum's `ConnectInfo`.)
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_prefix_flood_cannot_lock_other_networks_out() {
    use std::net::IpAddr;
    use tower_freqlimit::backends::memory::InMemoryBackend;
    use tower_freqlimit::key::ClientIp;

    for grouped in [true, false] {
        let mut builder = InMemoryBackend::<IpAddr>::builder().max_keys(64);
        if !grouped {
            builder = builder.without_groups();
        }
        let backend = builder.build();
        let layer = FreqLimitLayer::server(HOURLY, backend.clone())
            .key(ClientIp::try_behind_proxies(["127.0.0.1"]).unwrap());
        let addr = serve(ok_app().layer(layer)).await;
        let client = client();
        let from = |ip: String| {
            let client = &client;
            async move {
                http_get(client, addr, "/", [("x-forwarded-for", ip.as_str())])
                    .await
                    .status
            }
        };
        for n in 0..200 {
            from(format!("2001:db8:bad:{n:x}::1")).await;
        }
        let mut others = Vec::new();
        for n in 0..20 {
            let ip = if n % 2 == 0 {
                format!("198.51.{n}.7")
            } else {
                format!("2001:db8:{n:x}::7")
            };
            others.push(from(ip).await.as_u16());
        }
        if grouped {
            assert_eq!(others, [200; 20]);
            assert!(backend.len() + backend.overflow_buckets() <= 64);
        } else {
            assert_eq!(others, [503; 20], "the former behaviour: locked out");
        }
    }
}
