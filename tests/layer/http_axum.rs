//! The layer in a real axum application.
//!
//! Most tests start an axum server on a loopback port, served with
//! `ConnectInfo<SocketAddr>`, and call it with a real hyper client: keys, the
//! global bucket, the exact `429` headers, headers on admitted responses,
//! missing keys, the pacing of a route that waits, and the slot given back when
//! a waiting client hangs up. A real socket needs the real clock, so those
//! tests use limits with a refill interval of a minute or more (nothing refills
//! while they run, and counts and headers are exact) or assert lower bounds
//! only.
//!
//! The last tests call the axum `Router` directly (`ServiceExt::oneshot`) on a
//! paused clock, where timings are exact to the millisecond: pacing at exactly
//! `T`, `Retry-After` rounding, a bounded wait, an impossible cost.
#![cfg(feature = "http")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::http::HttpResponses;
use tower_freqlimit::layer::{FreqLimitLayer, MissingKey, Policy};
use tower_freqlimit::{FreqLimitParams, Reserve};

use crate::support::http::{HttpClient, Reply, client, serve, serve_without_connect_info};

/// One per minute on average, five at once: `T` = 60 s, so on a real clock
/// nothing refills during a test and every count and header is exact.
const HOURLY: FreqLimitParams = FreqLimitParams::per_hour(60).with_burst(5);
/// Its `RateLimit-Policy`: a bucket of 5 that refills in 5 × 60 s.
const HOURLY_POLICY: &str = r#""default";q=5;w=300"#;

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Keys, handlers, server and client
// ---------------------------------------------------------------------------

/// The key of most tests: the `x-api-key` header (every test client comes from
/// 127.0.0.1, so the IP cannot tell them apart).
fn api_key(req: &Request<Body>) -> Option<String> {
    let value = req.headers().get("x-api-key")?.to_str().ok()?;
    Some(value.to_owned())
}

/// [`api_key`] as a function pointer, so that its layer has a type to name.
type ApiKey = fn(&Request<Body>) -> Option<String>;

type ApiKeyLayer = FreqLimitLayer<InMemoryBackend<String>, Policy<ApiKey>, HttpResponses>;

/// The layer of most tests: [`HOURLY`] on `backend`, keyed by [`api_key`],
/// reject-only, refusing with `429`s.
fn by_api_key(backend: InMemoryBackend<String>) -> ApiKeyLayer {
    FreqLimitLayer::new(HOURLY, backend)
        .key(api_key as ApiKey)
        .max_wait(Duration::ZERO)
        .http_responses()
}

/// Serves `GET /`, answered `ok`, behind `layer`.
async fn serve_root(layer: ApiKeyLayer) -> SocketAddr {
    serve(Router::new().route("/", get(ok).layer(layer))).await
}

/// The peer's IP, from `ConnectInfo`, as a production server keys it.
fn client_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

async fn ok() -> &'static str {
    "ok"
}

/// `GET http://{addr}{path}`, with `x-api-key: {key}` when given.
async fn get_from(client: &HttpClient, addr: SocketAddr, path: &str, key: Option<&str>) -> Reply {
    crate::support::http::get(client, addr, path, key.map(|key| ("x-api-key", key))).await
}

/// The statuses of `n` requests made one after the other.
async fn statuses(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_from(client, addr, path, key).await.status.as_u16());
    }
    out
}

/// `a` times `200` then `b` times `429`.
fn ok_then_429(a: usize, b: usize) -> Vec<u16> {
    let mut out = vec![200; a];
    out.extend(std::iter::repeat_n(429, b));
    out
}

// ---------------------------------------------------------------------------
// Real server, real client
// ---------------------------------------------------------------------------

/// Each API key has a bucket of its own: exhausting one leaves the others whole.
#[tokio::test]
async fn keys_are_isolated_from_each_other() {
    let addr = serve_root(by_api_key(InMemoryBackend::new())).await;
    let client = client();

    assert_eq!(
        statuses(&client, addr, "/", Some("alice"), 7).await,
        ok_then_429(5, 2)
    );
    // Bob is untouched by Alice's exhaustion, and exhausting Bob does not
    // refill Alice.
    assert_eq!(
        statuses(&client, addr, "/", Some("bob"), 6).await,
        ok_then_429(5, 1)
    );
    assert_eq!(statuses(&client, addr, "/", Some("alice"), 1).await, [429]);
    assert_eq!(statuses(&client, addr, "/", Some("carol"), 1).await, [200]);
}

/// Keyed by `ConnectInfo`'s IP: the server's own bookkeeping shows the one key
/// `127.0.0.1`, with its bucket drained, and no other.
#[tokio::test]
async fn client_ip_from_connect_info_is_the_key() {
    let backend = InMemoryBackend::<IpAddr>::new();
    let layer = FreqLimitLayer::new(HOURLY, backend.clone())
        .key(client_ip)
        .max_wait(Duration::ZERO)
        .http_responses();
    let addr = serve(Router::new().route("/", get(ok).layer(layer))).await;

    // Two clients (two connections, two source ports) share the IP's bucket.
    let (first, second) = (client(), client());
    assert_eq!(statuses(&first, addr, "/", None, 3).await, [200; 3]);
    assert_eq!(statuses(&second, addr, "/", None, 3).await, [200, 200, 429]);

    assert_eq!(backend.len(), 1);
    let peek = |ip: IpAddr| {
        backend
            .reserve_now(Some(&ip), Timestamp::now(), &HOURLY, Reserve::new().cost(0))
            .unwrap()
            .remaining()
    };
    assert_eq!(peek(IpAddr::from(Ipv4Addr::LOCALHOST)), 0);
    assert_eq!(peek(IpAddr::from([192, 0, 2, 1])), 5);
}

/// Without `.key`, one bucket for everyone: every client, every API key and
/// every route under the layer share it.
#[tokio::test]
async fn without_a_key_every_request_shares_the_global_bucket() {
    let layer = FreqLimitLayer::new(HOURLY, InMemoryBackend::<String>::new())
        .max_wait(Duration::ZERO)
        .http_responses();
    let app = Router::new()
        .route("/a", get(ok))
        .route("/b", get(ok))
        .layer(layer);
    let addr = serve(app).await;
    let (one, two) = (client(), client());

    let mut seen = Vec::new();
    seen.push(get_from(&one, addr, "/a", Some("alice")).await.status);
    seen.push(get_from(&two, addr, "/b", Some("bob")).await.status);
    seen.push(get_from(&one, addr, "/b", None).await.status);
    seen.push(get_from(&two, addr, "/a", Some("carol")).await.status);
    seen.push(get_from(&one, addr, "/a", Some("dave")).await.status);
    assert_eq!(seen, [StatusCode::OK; 5]);

    for (client, path, key) in [
        (&one, "/a", Some("erin")),
        (&two, "/b", None),
        (&two, "/a", Some("alice")),
    ] {
        let reply = get_from(client, addr, path, key).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{path} {key:?}"
        );
        assert_eq!(reply.header("ratelimit"), Some(r#""default";r=0;t=300"#));
    }
}

/// `per_hour(60).with_burst(5)`, reject-only: of 20 immediate requests exactly
/// the first 5 pass; every refusal is a `429` with `Retry-After: 60` (the next
/// slot is one `T` away, a hair under 60 s, rounded up), the policy of a bucket
/// of 5 refilled in 300 s, and a bucket empty for a hair under 300 s.
///
/// (Exact as long as the 20 loopback requests take under a second.)
#[tokio::test]
async fn rejections_are_429_with_exact_headers() {
    let addr = serve_root(by_api_key(InMemoryBackend::new())).await;
    let client = client();

    let mut replies = Vec::new();
    for _ in 0..20 {
        replies.push(get_from(&client, addr, "/", Some("k")).await);
    }
    let codes: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(codes, ok_then_429(5, 15));

    for admitted in &replies[..5] {
        assert_eq!(admitted.body, "ok");
        // `http_responses()` adds nothing to admitted responses.
        assert_eq!(admitted.header("ratelimit"), None);
        assert_eq!(admitted.header("ratelimit-policy"), None);
        assert_eq!(admitted.header("retry-after"), None);
    }
    for refused in &replies[5..] {
        assert_eq!(refused.header("retry-after"), Some("60"));
        assert_eq!(refused.header("ratelimit-policy"), Some(HOURLY_POLICY));
        assert_eq!(refused.header("ratelimit"), Some(r#""default";r=0;t=300"#));
        assert_eq!(
            refused.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(refused.body, "Too Many Requests: see Retry-After\n");
    }
}

/// With `with_headers_on_success()`, each admitted response tells how many
/// calls are left (4, 3, 2, 1, 0) and when the bucket is full again (60 s per
/// call taken: 60, 120, ... 300 s, rounded up).
#[tokio::test]
async fn headers_on_success_count_down_the_burst() {
    let layer = by_api_key(InMemoryBackend::new())
        .on_refusal(HttpResponses::new().with_headers_on_success());
    let addr = serve_root(layer).await;
    let client = client();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let reply = get_from(&client, addr, "/", Some("k")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit-policy"), Some(HOURLY_POLICY));
        assert_eq!(reply.header("retry-after"), None);
        seen.push(reply.header("ratelimit").unwrap().to_owned());
    }
    assert_eq!(
        seen,
        [
            r#""default";r=4;t=60"#,
            r#""default";r=3;t=120"#,
            r#""default";r=2;t=180"#,
            r#""default";r=1;t=240"#,
            r#""default";r=0;t=300"#,
        ]
    );

    let refused = get_from(&client, addr, "/", Some("k")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(refused.header("ratelimit"), Some(r#""default";r=0;t=300"#));

    // A fresh key starts with a full bucket.
    let other = get_from(&client, addr, "/", Some("other")).await;
    assert_eq!(other.header("ratelimit"), Some(r#""default";r=4;t=60"#));
}

/// The default `MissingKey::Refuse`: a request without a key is refused,
/// consumes nothing, and carries no rate-limit headers. Whose fault it is sets
/// the status: a closure that found nothing is the server's (`500`), a
/// `HeaderKey` header the client left out is the client's (`400`), and a
/// server started without `ConnectInfo` whose layer keys on the IP gets a `500`
/// whose body says how to serve it.
#[tokio::test]
async fn missing_key_is_refused_by_whose_fault_it_is() {
    let backend = InMemoryBackend::<String>::new();
    let layer =
        by_api_key(backend.clone()).on_refusal(HttpResponses::new().with_headers_on_success());
    let addr = serve_root(layer).await;
    let client = client();

    for _ in 0..3 {
        let reply = get_from(&client, addr, "/", None).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            reply.body,
            tower_freqlimit::KeyNotFound::UNSPECIFIED.message()
        );
        assert_eq!(reply.header("retry-after"), None);
        assert_eq!(reply.header("ratelimit"), None);
        assert_eq!(reply.header("ratelimit-policy"), None);
    }
    // Nothing was consumed: not the global bucket, not any key.
    assert!(backend.is_empty());
    assert_eq!(
        statuses(&client, addr, "/", Some("k"), 6).await,
        ok_then_429(5, 1)
    );

    // The client's own key, left out: 400, never a 5xx.
    let backend = InMemoryBackend::<String>::new();
    let layer = FreqLimitLayer::server(HOURLY, backend.clone())
        .key(tower_freqlimit::key::HeaderKey::named("x-api-key").unwrap());
    let addr = serve(Router::new().route("/", get(ok).layer(layer))).await;
    for _ in 0..3 {
        let reply = get_from(&client, addr, "/", None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
        assert!(reply.body.contains("header"), "{reply:?}");
        assert_eq!(reply.header("retry-after"), None);
    }
    assert!(backend.is_empty());
    assert_eq!(
        statuses(&client, addr, "/", Some("k"), 6).await,
        ok_then_429(5, 1)
    );

    // Keyed on the IP, but served without `ConnectInfo`: the body says what to do.
    let layer = FreqLimitLayer::server(HOURLY, InMemoryBackend::new())
        .key(tower_freqlimit::key::ClientIp::peer());
    let addr = serve_without_connect_info(Router::new().route("/", get(ok).layer(layer))).await;
    for _ in 0..2 {
        let reply = get_from(&client, addr, "/", None).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            reply
                .body
                .contains("into_make_service_with_connect_info::<SocketAddr>()"),
            "{reply:?}"
        );
        // Without the `axum` feature, axum's `ConnectInfo` cannot be read at
        // all: the body names the feature too.
        assert_eq!(
            reply.body.contains("`axum` feature"),
            cfg!(not(feature = "axum")),
            "{reply:?}"
        );
    }
}

/// `MissingKey::Global`: requests without a key share the one global bucket,
/// apart from every keyed bucket.
#[tokio::test]
async fn missing_key_global_pools_keyless_requests() {
    let layer = by_api_key(InMemoryBackend::new()).on_missing_key(MissingKey::Global);
    let addr = serve_root(layer).await;
    let (one, two) = (client(), client());

    // Two keyless clients draw on the same bucket of 5.
    assert_eq!(statuses(&one, addr, "/", None, 3).await, [200; 3]);
    assert_eq!(statuses(&two, addr, "/", None, 3).await, [200, 200, 429]);
    let refused = get_from(&one, addr, "/", None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(refused.header("ratelimit-policy"), Some(HOURLY_POLICY));

    // A keyed request has its own bucket, and does not refill the global one.
    assert_eq!(
        statuses(&one, addr, "/", Some("k"), 6).await,
        ok_then_429(5, 1)
    );
    assert_eq!(statuses(&two, addr, "/", None, 1).await, [429]);
}

/// `MissingKey::Allow`: requests without a key pass unlimited (and, not being
/// limited, carry no `RateLimit` headers); keyed ones are limited as usual.
#[tokio::test]
async fn missing_key_allow_lets_keyless_requests_through_unlimited() {
    let backend = InMemoryBackend::<String>::new();
    let layer = by_api_key(backend.clone())
        .on_missing_key(MissingKey::Allow)
        .on_refusal(HttpResponses::new().with_headers_on_success());
    let addr = serve_root(layer).await;
    let client = client();

    for _ in 0..20 {
        let reply = get_from(&client, addr, "/", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ok");
        assert_eq!(reply.header("ratelimit"), None);
        assert_eq!(reply.header("ratelimit-policy"), None);
    }
    assert!(backend.is_empty());

    let keyed = get_from(&client, addr, "/", Some("k")).await;
    assert_eq!(keyed.header("ratelimit"), Some(r#""default";r=4;t=60"#));
    assert_eq!(
        statuses(&client, addr, "/", Some("k"), 5).await,
        ok_then_429(4, 1)
    );
    // Still unlimited once the keyed bucket is empty.
    assert_eq!(statuses(&client, addr, "/", None, 3).await, [200; 3]);
}

/// A route that waits: 5 concurrent requests on one key (20 per second, so
/// `T` = 50 ms) all succeed, the handler runs exactly 5 times, and the `i`-th
/// to be handled and the `i`-th to come back do so no earlier than `i * T`
/// after the requests were sent. Only lower bounds: a loaded machine can be
/// late, never early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_route_paces_concurrent_requests() {
    const T: Duration = Duration::from_millis(50);
    let handled = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let record = {
        let handled = Arc::clone(&handled);
        move || {
            let handled = Arc::clone(&handled);
            async move {
                handled.lock().unwrap().push(Instant::now());
                "ok"
            }
        }
    };
    let layer = FreqLimitLayer::new(
        FreqLimitParams::per_second(20),
        InMemoryBackend::<String>::new(),
    )
    .key(api_key)
    .http_responses();
    let addr = serve(Router::new().route("/wait", get(record).layer(layer))).await;
    let client = client();

    let start = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let client = client.clone();
        requests.spawn(async move {
            let reply = get_from(&client, addr, "/wait", Some("k")).await;
            (reply.status, Instant::now())
        });
    }
    let mut completed = Vec::new();
    while let Some(done) = requests.join_next().await {
        let (status, at) = done.unwrap();
        assert_eq!(status, StatusCode::OK);
        completed.push(at.duration_since(start));
    }
    completed.sort();

    let mut handled_at: Vec<Duration> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|at| at.duration_since(start))
        .collect();
    handled_at.sort();
    assert_eq!(handled_at.len(), 5);
    assert_eq!(completed.len(), 5);
    for (i, (handled, completed)) in handled_at.iter().zip(&completed).enumerate() {
        let slot = T * u32::try_from(i).unwrap();
        assert!(
            *handled >= slot,
            "handler call {i} at {handled:?}, before {slot:?}"
        );
        assert!(
            *completed >= slot,
            "response {i} at {completed:?}, before {slot:?}"
        );
    }
    // Generous: paced requests do come back (4 × 50 ms of waiting in all).
    assert!(completed[4] < Duration::from_secs(10), "{completed:?}");

    // Another key has its own bucket: its request is handled too (how soon is
    // checked exactly on the paused clock below).
    let reply = get_from(&client, addr, "/wait", Some("other")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(handled.lock().unwrap().len(), 6);
}

/// A client that hangs up while its request waits for a slot gives the slot
/// back: the server drops the request's future, which refunds its reservation.
/// Seen from outside as the `Retry-After` of a reject-only route on the same
/// bucket: 120 s while the waiter holds the next slot, 60 s once it is gone.
#[tokio::test]
async fn a_client_that_hangs_up_while_waiting_gives_its_slot_back() {
    let params = FreqLimitParams::per_minute(1);
    let backend = InMemoryBackend::<String>::new();
    let wait = FreqLimitLayer::new(params, backend.clone())
        .key(api_key)
        .http_responses();
    let now = FreqLimitLayer::new(params, backend.clone())
        .key(api_key)
        .max_wait(Duration::ZERO)
        .http_responses();
    let app = Router::new()
        .route("/wait", get(ok).layer(wait))
        .route("/now", get(ok).layer(now));
    let addr = serve(app).await;
    let client = client();

    assert_eq!(statuses(&client, addr, "/now", Some("k"), 1).await, [200]);
    assert_eq!(now_retry_after(&client, addr).await, "60");

    // A waiter takes the next slot (60 s away) ...
    let waiter = tokio::spawn({
        let client = client.clone();
        async move { get_from(&client, addr, "/wait", Some("k")).await }
    });
    let seen = poll_retry_after(&client, addr, "120").await;
    assert_eq!(seen, "120", "the waiter never reserved its slot");

    // ... and hangs up: its connection closes, the server drops the request.
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    let seen = poll_retry_after(&client, addr, "60").await;
    assert_eq!(seen, "60", "the slot was not given back");
}

/// The `Retry-After` of a refused `GET /now` as key `k`.
async fn now_retry_after(client: &HttpClient, addr: SocketAddr) -> String {
    let reply = get_from(client, addr, "/now", Some("k")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    reply.header("retry-after").unwrap().to_owned()
}

/// Asks [`now_retry_after`] until it is `expected` (a bounded poll on the real
/// clock); what it said last.
async fn poll_retry_after(client: &HttpClient, addr: SocketAddr, expected: &str) -> String {
    let mut seen = String::new();
    for _ in 0..500 {
        seen = now_retry_after(client, addr).await;
        if seen == expected {
            break;
        }
        tokio::time::sleep(10 * MS).await;
    }
    seen
}

// ---------------------------------------------------------------------------
// The Router on a paused clock: exact timings
// ---------------------------------------------------------------------------

/// A request as a real server would hand it over: from `ip`, with `key`.
fn request(path: &str, key: Option<&str>, ip: [u8; 4]) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let peer = SocketAddr::from((ip, 40_000));
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// Calls `app` once; the status and headers of its response.
async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap) {
    let response = app.clone().oneshot(req).await.unwrap();
    (response.status(), response.headers().clone())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// Waiting route, `per_second(10).with_burst(3)` (`T` = 100 ms) keyed by IP:
/// six requests at once from one IP are handled at exactly 0, 0, 0, 100, 200
/// and 300 ms, in the order they arrived; a request from another IP meanwhile
/// is handled at once.
#[tokio::test(start_paused = true)]
async fn paused_waiting_route_paces_at_exactly_t() {
    let handled = Arc::new(Mutex::new(Vec::<(String, Duration)>::new()));
    let start = Instant::now();
    let record = {
        let handled = Arc::clone(&handled);
        move |req: Request<Body>| {
            let handled = Arc::clone(&handled);
            async move {
                let id = req.headers()["x-id"].to_str().unwrap().to_owned();
                handled.lock().unwrap().push((id, start.elapsed()));
                "ok"
            }
        }
    };
    let layer = FreqLimitLayer::new(
        FreqLimitParams::per_second(10).with_burst(3),
        InMemoryBackend::<IpAddr>::new(),
    )
    .key(client_ip)
    .http_responses();
    let app = Router::new().route("/wait", get(record).layer(layer));

    let mut requests = Vec::new();
    let ids = ["a1", "a2", "a3", "a4", "a5", "a6", "b1"];
    for id in ids {
        let ip = if id.starts_with('a') {
            [10, 0, 0, 1]
        } else {
            [10, 0, 0, 2]
        };
        let mut req = request("/wait", None, ip);
        req.headers_mut().insert("x-id", id.parse().unwrap());
        let app = app.clone();
        requests.push(tokio::spawn(async move { call(&app, req).await.0 }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    let handled = handled.lock().unwrap().clone();
    let expected: Vec<(String, Duration)> = [
        ("a1", 0),
        ("a2", 0),
        ("a3", 0),
        ("b1", 0),
        ("a4", 100),
        ("a5", 200),
        ("a6", 300),
    ]
    .into_iter()
    .map(|(id, ms)| (id.to_owned(), ms * MS))
    .collect();
    assert_eq!(handled, expected);
}

/// `Retry-After` is rounded up to whole seconds and is never `0` while a
/// request is refused: with `T` = 2.5 s, the refusals 0 s, 2 s and 2.499 s
/// after the first call say 3, 1 and 1; at 2.5 s the call passes.
#[tokio::test(start_paused = true)]
async fn paused_retry_after_rounds_up_and_is_never_zero() {
    let params = FreqLimitParams::new(1, Duration::from_millis(2500), 1);
    let layer = FreqLimitLayer::new(params, InMemoryBackend::<String>::new())
        .key(api_key)
        .max_wait(Duration::ZERO)
        .http_responses();
    let app = Router::new().route("/", get(ok).layer(layer));

    assert_eq!(
        call(&app, request("/", Some("k"), [10, 0, 0, 1])).await.0,
        200
    );

    for (advance, retry_after) in [(0, "3"), (2000, "1"), (499, "1")] {
        tokio::time::advance(advance * MS).await;
        let (status, headers) = call(&app, request("/", Some("k"), [10, 0, 0, 1])).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&headers, "retry-after"), Some(retry_after));
        let ratelimit = format!(r#""default";r=0;t={retry_after}"#);
        assert_eq!(header(&headers, "ratelimit"), Some(ratelimit.as_str()));
        // The 2.5 s window is advertised as 3 s: the rate is understated.
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some(r#""default";q=1;w=3"#)
        );
    }
    tokio::time::advance(MS).await;
    assert_eq!(
        call(&app, request("/", Some("k"), [10, 0, 0, 1])).await.0,
        200
    );
}

/// A bounded wait: with `T` = 1 s and `max_wait` 1.5 s, of three requests at
/// once the second waits exactly 1 s and the third (which would wait 2 s) is
/// refused at once with `Retry-After: 1`: the 0.5 s after which it could wait
/// within its bound, rounded up (not the 2 s it would have had to wait).
#[tokio::test(start_paused = true)]
async fn paused_bounded_wait_admits_within_and_refuses_beyond() {
    let layer = FreqLimitLayer::new(
        FreqLimitParams::per_second(1),
        InMemoryBackend::<String>::new(),
    )
    .key(api_key)
    .max_wait(Duration::from_millis(1500))
    .http_responses();
    let app = Router::new().route("/", get(ok).layer(layer));
    let start = Instant::now();

    let mut requests = Vec::new();
    for _ in 0..3 {
        let app = app.clone();
        requests.push(tokio::spawn(async move {
            let (status, headers) = call(&app, request("/", Some("k"), [10, 0, 0, 1])).await;
            (status, headers, start.elapsed())
        }));
    }

    // Half a second later (the second still waiting), the same request is
    // admitted, waiting its full 1.5 s.
    tokio::time::sleep(500 * MS).await;
    let (status, _) = call(&app, request("/", Some("k"), [10, 0, 0, 1])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(start.elapsed(), 2000 * MS);

    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    assert_eq!(outcomes[0].0, StatusCode::OK);
    assert_eq!(outcomes[0].2, Duration::ZERO);
    assert_eq!(outcomes[1].0, StatusCode::OK);
    assert_eq!(outcomes[1].2, 1000 * MS);
    let (status, headers, at) = &outcomes[2];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(*at, Duration::ZERO);
    assert_eq!(header(headers, "retry-after"), Some("1"));
    assert_eq!(header(headers, "ratelimit"), Some(r#""default";r=0;t=2"#));
    assert_eq!(
        header(headers, "ratelimit-policy"),
        Some(r#""default";q=1;w=1"#)
    );
}

/// A cost that can never fit (above the burst in reject-only mode) is a `429`
/// with the policy but without `Retry-After`, and consumes nothing.
#[tokio::test(start_paused = true)]
async fn paused_impossible_cost_is_429_without_retry_after() {
    let layer = FreqLimitLayer::new(
        FreqLimitParams::per_second(10).with_burst(5),
        InMemoryBackend::<String>::new(),
    )
    .key(api_key)
    .cost_for(|req: &Request<Body>| -> u32 {
        req.headers()
            .get("x-cost")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1)
    })
    .max_wait(Duration::ZERO)
    .http_responses();
    let app = Router::new().route("/", get(ok).layer(layer));
    let with_cost = |cost: u32| {
        let mut req = request("/", Some("k"), [10, 0, 0, 1]);
        req.headers_mut().insert("x-cost", cost.into());
        req
    };

    let (status, headers) = call(&app, with_cost(6)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(header(&headers, "ratelimit"), None);
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some(r#""default";q=5;w=1"#)
    );

    // The whole burst is still there.
    assert_eq!(call(&app, with_cost(5)).await.0, StatusCode::OK);
    let (status, headers) = call(&app, with_cost(1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
}

/// `RateLimit: t` on a response that waited counts from when it goes out.
#[tokio::test(start_paused = true)]
async fn headers_on_a_waited_response_count_from_its_send_time() {
    use tower::ServiceExt;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .layer(
            tower_freqlimit::FreqLimitLayer::new(
                tower_freqlimit::FreqLimitParams::per_second(1),
                tower_freqlimit::backends::memory::InMemoryBackend::global(),
            )
            .on_refusal(tower_freqlimit::http::HttpResponses::new().with_headers_on_success()),
        );
    let get = || {
        http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let first = app.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.headers()["ratelimit"], r#""default";r=0;t=1"#);
    // The second waits 1 s; when it is answered the bucket is full again 1 s later.
    let start = tokio::time::Instant::now();
    let second = app.oneshot(get()).await.unwrap();
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(1));
    assert_eq!(second.headers()["ratelimit"], r#""default";r=0;t=1"#);
}

/// The response future over a boxed inner service (what axum's `Route` is) stays
/// within 128 bytes: the compiler moves such a value with a few vector moves,
/// a larger one with a `memcpy` call on every request (about 50 instructions
/// here, measured with `tools/layer_instructions.sh`). A new field in
/// `Admission` or the future's fast path shows up here first.
#[test]
fn response_future_over_a_boxed_service_fits_in_128_bytes() {
    use std::convert::Infallible;
    use tower::Layer;
    use tower::util::BoxCloneSyncService;

    type Boxed = BoxCloneSyncService<Request<Body>, axum::response::Response, Infallible>;
    fn future_size<S: tower::Service<Request<Body>>>(_: &S) -> usize {
        std::mem::size_of::<S::Future>()
    }
    let inner = Boxed::new(tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(axum::response::Response::new(Body::empty()))
    }));
    let service = FreqLimitLayer::new(FreqLimitParams::per_second(1), InMemoryBackend::new())
        .key(|req: &Request<Body>| req.extensions().get::<IpAddr>().copied())
        .http_responses()
        .layer(inner);
    assert!(
        future_size(&service) <= 128,
        "{} bytes",
        future_size(&service)
    );
}
