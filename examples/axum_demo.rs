//! An axum server rate-limited per client IP, with a route that rejects and a
//! route that waits, and a demo client (the README's recipe is the smaller
//! `axum_per_ip`).
//!
//! Two routes, each with its own [`FreqLimitLayer`] keyed by the client's IP
//! address with [`ClientIp`]: the peer address from axum's
//! `ConnectInfo<SocketAddr>`, which the server puts in every request's
//! extensions when it is served with
//! `into_make_service_with_connect_info::<SocketAddr>()` (IPv6 clients are
//! keyed per /64). Each backend holds at most 100 000 clients (`max_keys`).
//! Behind a reverse proxy, key with
//! `ClientIp::try_behind_proxies(["10.0.0.0/8"])?` instead (your proxies'
//! networks), and the client is read from `X-Forwarded-For` (see the guide's
//! chapter on keys).
//!
//! * `GET /`: 10 requests per second per IP, 5 of them at once, **rejected**
//!   beyond that (`FreqLimitLayer::server`) with `429 Too Many Requests`, `Retry-After`
//!   (whole seconds, rounded up) and the IETF `RateLimit-Policy` / `RateLimit`
//!   headers. Admitted responses carry the `RateLimit` headers too.
//! * `GET /wait`: 2 requests per second per IP; a request over the limit
//!   **waits** for its slot instead of being rejected, so the responses come
//!   back paced 0.5 s apart.
//!
//! ```sh
//! cargo run --example axum_demo --features axum            # serve on 127.0.0.1:3000 (env PORT)
//! cargo run --example axum_demo --features axum -- --demo  # or DEMO=1: serve, call itself, exit
//! ```
//!
//! With `--demo` the example starts the server, sends 50 quick requests to `/`
//! from one client and prints how many were admitted and rejected, with the
//! headers of the first `429`; then it sends 5 requests at once to `/wait` and
//! prints when each came back. It takes about 2 seconds.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::http::HttpResponses;
use tower_freqlimit::key::ClientIp;
use tower_freqlimit::layer::FreqLimitLayer;

/// `GET /`: 10 per second per IP, 5 at once.
const API: FreqLimitParams = FreqLimitParams::per_second(10).with_burst(5);
/// `GET /wait`: 2 per second per IP, one at a time.
const PACED: FreqLimitParams = FreqLimitParams::per_second(2);

type BoxError = Box<dyn Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// At most this many clients are held per route; beyond, new clients get a
/// `503` until others drain (`WhenFull::RefuseNewKeys`, the default).
const MAX_CLIENTS: usize = 100_000;

/// The backend of one route: per-IP keys, bounded.
fn backend() -> InMemoryBackend<IpAddr> {
    InMemoryBackend::builder().max_keys(MAX_CLIENTS).build()
}

fn app() -> Router {
    // The rate-limit key: the peer's IP address. A request without
    // `ConnectInfo` (the server was not started with it) has no key and is
    // refused with a `500` by default, which makes the misconfiguration
    // visible instead of pooling every client together.
    let client_ip = ClientIp::peer();
    // Rejects at once beyond the limit; `RateLimit` headers on every response.
    let reject = FreqLimitLayer::server(API, backend())
        .key(client_ip.clone())
        .on_refusal(HttpResponses::new().with_headers_on_success());
    // Waits for the slot (`new` is the pacing layer); only backend failures and
    // missing keys would be refused.
    let pace = FreqLimitLayer::new(PACED, backend())
        .key(client_ip)
        .http_responses();

    Router::new()
        .route("/", get(hello).layer(reject))
        .route("/wait", get(hello).layer(pace))
}

async fn hello(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    format!("hello, {}\n", peer.ip())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 3000,
    };
    let demo = std::env::args().skip(1).any(|arg| arg == "--demo")
        || std::env::var("DEMO").is_ok_and(|v| v == "1");

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let server = axum::serve(
        listener,
        app().into_make_service_with_connect_info::<SocketAddr>(),
    );

    if !demo {
        println!("listening on http://{addr}");
        println!("try:");
        println!("  curl -i http://{addr}/");
        println!(
            "  for i in $(seq 10); do curl -s -o /dev/null -w '%{{http_code}}\\n' http://{addr}/; done"
        );
        println!(
            "  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{time_total}} s\\n' http://{addr}/wait & done; wait"
        );
        server.await?;
        return Ok(());
    }

    tokio::spawn(async move { server.await });
    println!("listening on http://{addr} (demo)\n");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    burst_then_reject(&client, addr).await?;
    paced_waits(&client, addr).await?;
    Ok(())
}

/// 50 requests to `/` as fast as one client sends them.
async fn burst_then_reject(client: &HttpClient, addr: SocketAddr) -> Result<(), BoxError> {
    let uri: Uri = format!("http://{addr}/").parse()?;
    let mut tally: BTreeMap<StatusCode, u32> = BTreeMap::new();
    let mut last_ok: Option<HeaderMap> = None;
    let mut first_429: Option<HeaderMap> = None;
    let start = Instant::now();
    for _ in 0..50 {
        let response = client.get(uri.clone()).await?;
        let status = response.status();
        let headers = response.headers().clone();
        // Read the body so the connection goes back to the pool.
        response.into_body().collect().await?;
        *tally.entry(status).or_default() += 1;
        if status == StatusCode::OK {
            last_ok = Some(headers);
        } else if status == StatusCode::TOO_MANY_REQUESTS && first_429.is_none() {
            first_429 = Some(headers);
        }
    }

    println!(
        "1. 50 requests to GET / in {:.3} s (10/s per IP, burst 5, rejected beyond):",
        start.elapsed().as_secs_f64()
    );
    for (status, count) in &tally {
        println!("   {status}: {count}");
    }
    let show = |headers: &HeaderMap, names: &[&str]| {
        for name in names {
            let value = headers.get(*name).and_then(|v| v.to_str().ok());
            println!("     {name}: {}", value.unwrap_or("(absent)"));
        }
    };
    if let Some(headers) = &last_ok {
        println!("   headers of the last 200:");
        show(headers, &["ratelimit", "ratelimit-policy"]);
    }
    match &first_429 {
        Some(headers) => {
            println!("   headers of the first 429:");
            show(headers, &["retry-after", "ratelimit", "ratelimit-policy"]);
        }
        None => println!("   no request was rejected"),
    }
    Ok(())
}

/// 5 requests to `/wait` at once; the limiter spaces them 0.5 s apart.
async fn paced_waits(client: &HttpClient, addr: SocketAddr) -> Result<(), BoxError> {
    let uri: Uri = format!("http://{addr}/wait").parse()?;
    println!("\n2. 5 requests at once to GET /wait (2/s per IP, waiting instead of rejecting):");
    let start = Instant::now();
    let mut requests = JoinSet::new();
    for n in 1..=5 {
        let (client, uri) = (client.clone(), uri.clone());
        requests.spawn(async move {
            let response = client.get(uri).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, BoxError>((n, status, start.elapsed()))
        });
    }
    // In the order they complete.
    while let Some(done) = requests.join_next().await {
        let (n, status, elapsed) = done??;
        println!(
            "   request {n}: {status} after {:.3} s",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}
