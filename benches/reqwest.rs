//! The reqwest middleware's added cost per request, beside reqwest alone,
//! against a local axum server on loopback: the same `GET /` through a plain
//! `reqwest::Client`, through `reqwest_middleware` with no middleware, and
//! through it with `FreqLimitMiddleware` (in memory, keyed by host and port, a
//! limit nothing reaches, learning on), interleaved in one criterion run (each
//! request is one `block_on` on a one-worker runtime, on all three sides).
//!
//! ```sh
//! cargo bench --features reqwest --bench reqwest
//! cargo bench --features reqwest --bench reqwest -- --test   # a quick smoke run
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use reqwest_middleware::ClientBuilder;
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::reqwest::FreqLimitMiddleware;

/// T = 1 µs, burst 10⁹: nothing is ever delayed.
const OPEN: FreqLimitParams =
    FreqLimitParams::new(1_000_000, Duration::from_secs(1), 1_000_000_000);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr: SocketAddr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let url = format!("http://{addr}/");
    let plain = reqwest::Client::new();
    let bare = ClientBuilder::new(reqwest::Client::new()).build();
    let limited = ClientBuilder::new(reqwest::Client::new())
        .with(FreqLimitMiddleware::new(OPEN, InMemoryBackend::new()))
        .build();

    let mut group = c.benchmark_group("reqwest GET / on loopback");
    group.bench_function("reqwest alone", |b| {
        b.iter(|| {
            rt.block_on(async { plain.get(&url).send().await.unwrap().bytes().await.unwrap() })
        });
    });
    group.bench_function("reqwest-middleware, no middleware", |b| {
        b.iter(|| {
            rt.block_on(async { bare.get(&url).send().await.unwrap().bytes().await.unwrap() })
        });
    });
    group.bench_function("reqwest-middleware + FreqLimitMiddleware", |b| {
        b.iter(|| {
            rt.block_on(async {
                limited
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
