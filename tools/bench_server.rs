//! The axum hello-world server that `tools/http_load.sh` loads: with no limiter,
//! with `tower-freqlimit`'s layer, or with `tower_governor` 0.8, each keyed by
//! the peer IP address (axum's `ConnectInfo<SocketAddr>`).
//!
//! ```sh
//! cargo run --release --example bench_server -- MODE     # on 127.0.0.1:$PORT (default 3000)
//! ```
//!
//! `MODE` is one of:
//!
//! * `none`: no limiter;
//! * `ours`: `FreqLimitLayer` over `InMemoryBackend`, reject-only
//!   (`max_wait(Duration::ZERO)`), `429` responses (`.http_responses()`), with a
//!   quota nothing exceeds (10^9 per second, a burst of 10^9);
//! * `governor`: `tower_governor::GovernorLayer` (`PeerIpKeyExtractor`, no
//!   headers on admitted responses) with the same quota (one cell per
//!   nanosecond, a burst of 10^9);
//! * `ours-reject`, `governor-reject`: the same layers with one request per
//!   hour per IP, so every request after the first gets `429`;
//! * `ours-tokio`: `ours` on Tokio's clock (`clock_gettime`) instead of the
//!   time-stamp counter, the default of a normal build (`ours` sets it
//!   explicitly: examples build with the `test-util` feature).
//!
//! The server runs on a multi-threaded Tokio runtime (one worker per core) and
//! listens on the loopback interface only. `GET /` answers `Hello, World!`.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Clock;
use tower_freqlimit::layer::FreqLimitLayer;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

type BoxError = Box<dyn Error + Send + Sync>;
type GovLayer = GovernorLayer<PeerIpKeyExtractor, governor::middleware::NoOpMiddleware, Body>;

/// A quota nothing exceeds: 10^9 per second, a burst of 10^9.
const OPEN: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);
/// One request per hour: all but the first are rejected.
const TIGHT: FreqLimitParams = FreqLimitParams::per_hour(1);

const MODES: &str = "none | ours | governor | ours-reject | governor-reject | ours-tokio";

/// The rate-limit key: the peer's IP address.
fn peer_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

async fn hello() -> &'static str {
    "Hello, World!"
}

/// `tower_governor` with one cell per `period_ns` nanoseconds and `burst` at once.
fn governor(period_ns: u64, burst: u32) -> Result<GovLayer, BoxError> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(period_ns)
        .burst_size(burst)
        .finish()
        .ok_or("tower_governor: zero period or burst")?;
    Ok(GovernorLayer::new(config))
}

fn app(mode: &str) -> Result<Router, BoxError> {
    let hello = Router::new().route("/", get(hello));
    // Examples build with `test-util` (dev-dependencies), where the default
    // clock is Tokio's: `ours` names the default of a normal build.
    let ours_on = |params, clock| {
        FreqLimitLayer::new(
            params,
            InMemoryBackend::<IpAddr>::builder().clock(clock).build(),
        )
        .key(peer_ip)
        .max_wait(Duration::ZERO)
        .http_responses()
    };
    let ours = |params| ours_on(params, Clock::fast());
    Ok(match mode {
        "none" => hello,
        "ours" => hello.layer(ours(OPEN)),
        "ours-tokio" => hello.layer(ours_on(OPEN, Clock::tokio())),
        "governor" => hello.layer(governor(1, 1_000_000_000)?),
        "ours-reject" => hello.layer(ours(TIGHT)),
        "governor-reject" => hello.layer(governor(3_600_000_000_000, 1)?),
        other => return Err(format!("unknown mode {other:?}; expected {MODES}").into()),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let mode = std::env::args()
        .nth(1)
        .ok_or(format!("usage: bench_server MODE   (MODE: {MODES})"))?;
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let app = app(&mode)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    eprintln!(
        "bench_server: mode {mode}, listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
