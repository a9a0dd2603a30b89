//! Learning from the server's `429`: a reqwest client paced faster than its
//! upstream allows, with and without learning.
//!
//! The upstream is a local axum server (on a free loopback port) limited by
//! this crate's own server layer to 50 requests per second with a burst of
//! 50, answering `429` with `Retry-After` and `RateLimit` headers beyond it.
//! The client is configured for 250 per second, too fast for it: its
//! configuration is wrong, as it is when an API's limit is tighter than
//! documented or shared with other clients. It sends 200 requests one after
//! the other, twice, to a fresh upstream each time (same limit, same pattern):
//!
//! * **without learning**, every request goes out at the client's pace, and
//!   each one past the upstream's limit meets a `429`;
//! * **with learning** (the default), the first `429` says "retry after 1 s";
//!   the client holds that host for 1 s, so the requests that follow wait
//!   instead of meeting the same `429`. At most one `429` per upstream reset.
//!
//! Run with `cargo run --example outbound_feedback --features reqwest`; it takes
//! about 5 seconds and ends with
//! `upstream 429s: <n> without learning, <m> with learning`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use reqwest_middleware::ClientBuilder;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::reqwest::FreqLimitMiddleware;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

const UPSTREAM: FreqLimitParams = FreqLimitParams::per_second(50).with_burst(50);
const CLIENT: FreqLimitParams = FreqLimitParams::per_second(250);
const REQUESTS: usize = 200;

/// A fresh upstream: `GET /` limited to [`UPSTREAM`] for everyone.
async fn upstream() -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(FreqLimitLayer::server(UPSTREAM, InMemoryBackend::global()));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Sends [`REQUESTS`] requests through the middleware; the number of `429`s.
async fn run(learning: bool) -> Result<usize, Box<dyn std::error::Error>> {
    let addr = upstream().await?;
    let mut middleware = FreqLimitMiddleware::new(CLIENT, InMemoryBackend::new());
    if !learning {
        middleware = middleware.without_learning();
    }
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    let started = Instant::now();
    let mut too_many = 0;
    let mut timeline = String::new();
    for _ in 0..REQUESTS {
        let status = client.get(format!("http://{addr}/")).send().await?.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            too_many += 1;
            timeline.push('x');
        } else {
            timeline.push('.');
        }
    }
    let label = if learning {
        "with learning"
    } else {
        "without learning"
    };
    println!(
        "{label:>16}: {too_many:>3} x 429 in {:.2} s  {}",
        started.elapsed().as_secs_f64(),
        compact(&timeline)
    );
    Ok(too_many)
}

/// The outcomes in order, 4 requests a character: `.` all admitted, `x` one
/// or more refused.
fn compact(timeline: &str) -> String {
    timeline
        .as_bytes()
        .chunks(4)
        .map(|c| if c.contains(&b'x') { 'x' } else { '.' })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "upstream allows {UPSTREAM}, the client is paced at {CLIENT}; {REQUESTS} requests each run"
    );
    let without = run(false).await?;
    let with = run(true).await?;
    println!("upstream 429s: {without} without learning, {with} with learning");
    Ok(())
}
