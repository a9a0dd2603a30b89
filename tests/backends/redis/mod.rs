//! The Redis backend against real `redis-server`s started by the tests: the Lua
//! step against `gcra::reserve` (proptest), the rounding bound, the negative
//! cache, keys and expiry, failures (server stopped, restarted, script cache
//! flushed, slow, out of memory, bad data), several connections and several OS
//! processes on one key, and the Tower layer's `503`.
//!
//! Exact comparisons use `RedisClock::LimiterTimestamp` (explicit times, in whole
//! microseconds); the rest use the server's clock and assert counts, order and
//! generous bounds only.
#![cfg(feature = "redis")]

mod cluster;
mod compound;
mod compound_model;
mod faults;
mod hot;
mod negative_cache;
mod sentinel;
mod values;
mod refund;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::{
    FailurePolicy, RedisBackend, RedisBackendBuilder, RedisClock,
};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{
    Admission, BackendErrorKind, FreqLimit, FreqLimitError, FreqLimitParams, Reserve, gcra,
};

use crate::support::concurrent::wake_times;
use crate::support::redis_server::RedisServer;

const MS: Duration = Duration::from_millis(1);

static PREFIXES: AtomicUsize = AtomicUsize::new(0);

/// A prefix no other test in this process uses.
fn fresh_prefix() -> String {
    format!("t{}", PREFIXES.fetch_add(1, Ordering::Relaxed))
}

/// A builder with a prefix of its own.
fn builder() -> RedisBackendBuilder<String> {
    RedisBackend::<String>::builder().prefix(fresh_prefix())
}

async fn backend(server: &RedisServer) -> RedisBackend<String> {
    builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .expect("connect to the test server")
}

/// A backend whose scripts run at the caller's timestamps and never answer
/// from its negative cache: its decisions can be compared with the crate's
/// to the microsecond.
async fn exact_backend(server: &RedisServer) -> RedisBackend<String> {
    builder()
        .clock(tower_freqlimit::backends::redis::RedisClock::LimiterTimestamp)
        .timeout(Duration::from_secs(5))
        .without_negative_cache()
        .connect(&server.url())
        .await
        .expect("connect to the test server")
}

/// A fresh server and a backend on it, or `None` when `redis-server` is
/// missing and not required.
async fn started() -> Option<(RedisServer, RedisBackend<String>)> {
    let server = RedisServer::start()?;
    let b = backend(&server).await;
    Some((server, b))
}

// ---------------------------------------------------------------------------
// The Lua step is gcra::reserve, in microseconds
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Step {
    /// Microseconds since the previous call.
    dt: u64,
    cost: u32,
    /// Microseconds of patience; `None` waits forever.
    max_wait: Option<u64>,
}

fn steps(interval_us: u64, burst: u32) -> impl Strategy<Value = Vec<Step>> {
    let t = interval_us;
    prop::collection::vec(
        (
            prop_oneof![Just(0u64), 0..=3 * t],
            0..=burst + 2,
            prop_oneof![Just(None), Just(Some(0)), (0..=3 * t).prop_map(Some)],
        )
            .prop_map(|(dt, cost, max_wait)| Step { dt, cost, max_wait }),
        1..25,
    )
}

fn request(step: &Step) -> Reserve {
    let r = Reserve::new().cost(step.cost);
    match step.max_wait {
        Some(w) => r.max_wait(Duration::from_micros(w)),
        None => r,
    }
}

/// Runs `steps` on one key of each backend and on `gcra::reserve`, asserting
/// that every answer (and every refund token) agrees.
async fn agree(backends: &[RedisBackend<String>], params: FreqLimitParams, steps: &[Step]) {
    let mut tat: Option<u64> = None;
    let mut now = 1_000_000_000_000_000u64; // ns, a whole number of µs
    for (i, step) in steps.iter().enumerate() {
        now += step.dt * 1_000;
        let req = request(step);
        let expected = gcra::reserve(tat, now, &params, &req);
        for (b, backend) in backends.iter().enumerate() {
            let got = backend
                .reserve(Some("k"), Timestamp::from_nanos(now), &params, req)
                .await;
            assert_eq!(
                got,
                expected.map(|r| r.admission).map_err(FreqLimitError::from),
                "step {i}, backend {b}: {step:?}"
            );
            if let (Ok(got), Ok(want)) = (&got, &expected) {
                let (g, w) = (got.refund_token(), want.admission.refund_token());
                assert_eq!(g.start * 1_000, w.start, "step {i}");
                assert_eq!(g.end.map(|t| t * 1_000), w.end, "step {i}");
            }
        }
        if let Ok(r) = expected
            && let Some(new_tat) = r.new_tat
        {
            tat = Some(new_tat);
        }
    }
}

/// For a proptest of `cases` cases against a real server: the server, a
/// runtime to block on and the proptest configuration; `None` when
/// `redis-server` is missing and not required.
fn proptest_on_a_server(
    cases: u32,
) -> Option<(RedisServer, tokio::runtime::Runtime, ProptestConfig)> {
    let server = RedisServer::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    Some((server, rt, config))
}

#[test]
fn the_lua_step_agrees_with_gcra_reserve() {
    let Some((server, rt, config)) = proptest_on_a_server(96) else {
        return;
    };
    let url = server.url();
    let strategy = (1u64..=2_000_000, 1u32..=6)
        .prop_flat_map(|(t, burst)| (Just(t), Just(burst), steps(t, burst)));
    proptest!(config, |((interval_us, burst, steps) in strategy)| {
        let params = FreqLimitParams::new(1, Duration::from_micros(interval_us), burst);
        rt.block_on(async {
            let make = |cache: usize| {
                builder()
                    .clock(RedisClock::LimiterTimestamp)
                    .negative_cache(cache)
                    .timeout(Duration::from_secs(5))
                    .connect(&url)
            };
            // Without and with the negative cache: the cache must answer exactly
            // what the server would.
            let backends = [make(0).await.unwrap(), make(64).await.unwrap()];
            agree(&backends, params, &steps).await;
        });
    });
}

#[test]
fn rounding_never_admits_more_than_the_nanosecond_limit() {
    // `T` in arbitrary nanoseconds is rounded up to whole microseconds on the
    // server. Calls at whole-microsecond times (the server's resolution): in any
    // window `w` the admitted calls never exceed `burst + w / T`, the in-memory
    // backend's guarantee for the exact `T`.
    let Some((server, rt, config)) = proptest_on_a_server(48) else {
        return;
    };
    let url = server.url();
    let strategy = (
        1_000u64..=50_000,
        1u32..=4,
        prop::collection::vec(0u64..=40, 20..120),
    );
    proptest!(config, |((interval_ns, burst, gaps) in strategy)| {
        let params = FreqLimitParams::new(1, Duration::from_nanos(interval_ns), burst);
        let admitted: Vec<u64> = rt.block_on(async {
            let b = builder()
                .clock(RedisClock::LimiterTimestamp)
                .connect(&url)
                .await
                .unwrap();
            let mut now = 1_000_000_000_000_000u64;
            let mut admitted = Vec::new();
            for gap in &gaps {
                now += gap * 1_000;
                let r = b
                    .reserve(Some("k"), Timestamp::from_nanos(now), &params, Reserve::new().no_wait())
                    .await;
                match r {
                    Ok(_) => admitted.push(now),
                    Err(FreqLimitError::Rejected(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            admitted
        });
        for (i, &start) in admitted.iter().enumerate() {
            for (j, &end) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                let bound = u64::from(burst) + (end - start) / interval_ns;
                prop_assert!(count <= bound, "{count} calls in {} ns (T = {interval_ns} ns, burst {burst})", end - start);
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Keys, expiry, waiting on the server's clock
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_expire_when_their_tat_has_passed_and_none_is_not_the_string_none() {
    let Some((server, b)) = started().await else {
        return;
    };
    let p = FreqLimitParams::per_second(20); // T = 50 ms
    let now = Timestamp::now();
    b.reserve(Some("None"), now, &p, Reserve::new())
        .await
        .unwrap();
    b.reserve(None::<&str>, now, &p, Reserve::new())
        .await
        .unwrap();
    let key = String::from_utf8(b.redis_key(Some("None"))).unwrap();
    let global = String::from_utf8(b.redis_key(None::<&str>)).unwrap();
    assert_ne!(key, global);
    assert!(key.ends_with(":k:None") && global.ends_with(":g"));
    assert_eq!(server.int(&["EXISTS", &key, &global]), 2);
    // Each expires with its TAT (50 ms away, rounded up to the next ms).
    for k in [&key, &global] {
        let ttl = server.int(&["PTTL", k]);
        assert!((1..=51).contains(&ttl), "PTTL {ttl}");
    }
    // Redis expires keys on its own (real) clock: poll, with a generous bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.int(&["EXISTS", &key, &global]) != 0 {
        assert!(Instant::now() < deadline, "the keys never expired");
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(server.int(&["DBSIZE"]), 0);
}

#[tokio::test]
async fn waiting_callers_get_distinct_slots_in_order_never_early() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limiter = Arc::new(FreqLimit::new(
        FreqLimitParams::per_second(20), // T = 50 ms
        backend(&server).await,
    ));
    let results = wake_times(5, || {
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire("k").await.unwrap() }
    })
    .await;
    for (i, (delay, woke)) in results.iter().enumerate() {
        let slot = 50 * MS * i as u32;
        // The server's slot plus the round trip; woken no earlier than that.
        assert!(
            *delay >= slot,
            "call {i}: delay {delay:?} before slot {slot:?}"
        );
        assert!(
            *delay < slot + Duration::from_secs(2),
            "call {i}: {delay:?}"
        );
        assert!(*woke >= slot, "call {i} woke at {woke:?}");
    }
}

#[tokio::test]
async fn clear_removes_this_prefix_only() {
    let Some((server, b)) = started().await else {
        return;
    };
    let p = FreqLimitParams::per_hour(1);
    for i in 0..2_500 {
        b.reserve(Some(&format!("u{i}")), Timestamp::now(), &p, Reserve::new())
            .await
            .unwrap();
    }
    b.reserve(None::<&str>, Timestamp::now(), &p, Reserve::new())
        .await
        .unwrap();
    server.cmd(&["SET", "someone-else", "1"]);
    assert_eq!(server.int(&["DBSIZE"]), 2_502);
    b.clear().await.unwrap();
    assert_eq!(server.int(&["DBSIZE"]), 1);
    assert_eq!(server.int(&["EXISTS", "someone-else"]), 1);
}

// ---------------------------------------------------------------------------
// The negative cache
// ---------------------------------------------------------------------------

/// Redis calls made for 1 000 rejected requests from one over-limit key.
async fn flood(server: &RedisServer, cache: usize) -> (u64, u64) {
    let b = builder()
        .negative_cache(cache)
        .connect(&server.url())
        .await
        .unwrap();
    let limiter = FreqLimit::new(FreqLimitParams::per_minute(1), b.clone());
    limiter.try_acquire("flooder").await.unwrap();
    let calls_before = server.script_calls();
    let mut rejected = 0;
    for _ in 0..1_000 {
        match limiter.try_acquire("flooder").await {
            Err(FreqLimitError::Rejected(r)) => {
                assert!(r.retry_after() > Duration::from_secs(50));
                rejected += 1;
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(rejected, 1_000);
    (
        server.script_calls() - calls_before,
        b.stats().cache_rejections,
    )
}

#[tokio::test]
async fn a_flood_costs_one_round_trip_per_retry_window_with_the_negative_cache() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (with_cache, answered_locally) = flood(&server, 1024).await;
    let (without_cache, _) = flood(&server, 0).await;
    println!(
        "Redis calls per 1000 rejected requests: {with_cache} with the negative cache, {without_cache} without"
    );
    assert_eq!(with_cache, 1);
    assert_eq!(answered_locally, 999);
    assert_eq!(without_cache, 1_000);
}

/// Through the Tower layer, the negative cache answers a flood synchronously
/// (`reserve_sync`, inside `call`): 429s with no round trip.
#[cfg(feature = "http")]
#[tokio::test]
async fn the_layer_answers_a_cached_flood_without_redis() {
    use axum::http::{Request, Response};
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_freqlimit::layer::FreqLimitLayer;

    let Some(server) = RedisServer::start() else {
        return;
    };
    let backend = builder().connect(&server.url()).await.unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(FreqLimitParams::per_minute(1), backend.clone())
                .key(|_: &Request<()>| Some("flooder".to_owned()))
                .max_wait(Duration::ZERO)
                .http_responses(),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
    let mut statuses = Vec::new();
    for _ in 0..500 {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses[1..].iter().all(|&s| s == 429), "{statuses:?}");
    let stats = backend.stats();
    // One call admitted, one rejected by Redis (which fills the cache), then
    // the cache answers the rest.
    assert_eq!(stats.script_calls, 2);
    assert_eq!(stats.cache_rejections, 498);

    // The synchronous answer the layer asks for first: a rejection for the
    // remembered key, "ask Redis" for any other.
    let params = FreqLimitParams::per_minute(1);
    let no_wait = Reserve::new().no_wait();
    let flooder = "flooder".to_owned();
    let cached = backend.reserve_sync(Some(&flooder), Timestamp::now(), &params, no_wait);
    assert!(
        matches!(cached, Some(Err(FreqLimitError::Rejected(_)))),
        "{cached:?}"
    );
    let other = "other".to_owned();
    let unknown = backend.reserve_sync(Some(&other), Timestamp::now(), &params, no_wait);
    assert!(unknown.is_none(), "{unknown:?}");
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

async fn with_policy(
    server: &RedisServer,
    policy: FailurePolicy,
    timeout: Duration,
) -> RedisBackend<String> {
    builder()
        .failure_policy(policy)
        .timeout(timeout)
        .without_negative_cache()
        .connect(&server.url())
        .await
        .unwrap()
}

/// Counts the backend's `tracing` events by level, per thread.
///
/// One global subscriber for the whole test binary, installed once: with a
/// per-test `set_default`, a callsite first reached by another test's thread
/// (no subscriber there) could have its interest cached as "never" and this
/// test would miss events (seen under load). The counts are thread-local, and a
/// current-thread test polls every call on its own thread.
struct Counting;

thread_local! {
    static WARNINGS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static DEBUGS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_events() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Counting).expect("no other global subscriber");
    });
    WARNINGS.with(|w| w.set(0));
    DEBUGS.with(|d| d.set(0));
}

impl tracing::Subscriber for Counting {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        if meta.target() == "tower_freqlimit::redis" {
            match *meta.level() {
                tracing::Level::WARN => WARNINGS.with(|w| w.set(w.get() + 1)),
                tracing::Level::DEBUG => DEBUGS.with(|d| d.set(d.get() + 1)),
                _ => {}
            }
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_stopped_server_fails_closed_or_open_within_the_timeout_then_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // A current-thread test: every call below runs on this thread.
    count_events();
    let timeout = 200 * MS;
    let closed = with_policy(&server, FailurePolicy::Closed, timeout).await;
    let open = with_policy(&server, FailurePolicy::Open, timeout).await;
    let p = FreqLimitParams::per_minute(1);
    let no_wait = Reserve::new().no_wait();
    for b in [&closed, &open] {
        b.reserve(Some("k"), Timestamp::now(), &p, no_wait)
            .await
            .unwrap();
    }

    server.stop();
    for round in 0..5 {
        let started = Instant::now();
        let err = closed
            .reserve(Some("k"), Timestamp::now(), &p, no_wait)
            .await
            .expect_err("fail-closed must refuse while Redis is down");
        let FreqLimitError::Backend(err) = err else {
            panic!("round {round}: expected a backend error, got {err:?}");
        };
        assert!(
            matches!(
                err.kind(),
                BackendErrorKind::Unavailable | BackendErrorKind::Timeout
            ),
            "round {round}: {err}"
        );
        let admitted = open
            .reserve(Some("k"), Timestamp::now(), &p, no_wait)
            .await
            .expect("fail-open lets the call through");
        assert!(admitted.is_fail_open());
        assert_eq!(admitted.delay(), Duration::ZERO);
        // Generous: the timeout is 200 ms; a hang would be far longer.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(closed.stats().failures, 5);
    assert_eq!(open.stats().fail_open_admissions, 5);
    // Said through tracing: an event per failed call, one warning for the burst.
    assert_eq!(DEBUGS.with(std::cell::Cell::get), 10);
    // (At most one a second; five calls bounded by a 200 ms timeout each span
    // two seconds at worst.)
    let warnings = WARNINGS.with(std::cell::Cell::get);
    assert!((1..=3).contains(&warnings), "{warnings} warnings");
    // The HTTP layer answers 503 for a fail-closed backend error.
    #[cfg(feature = "http")]
    {
        assert_eq!(http_status(&server.url(), FailurePolicy::Closed).await, 503);
        assert_eq!(http_status(&server.url(), FailurePolicy::Open).await, 200);
    }

    // Back on the same port, empty: both recover without being rebuilt.
    server.restart();
    for b in [&closed, &open] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match b.reserve(Some("k"), Timestamp::now(), &p, no_wait).await {
                Ok(a) if !a.is_fail_open() => break,
                _ if Instant::now() < deadline => tokio::time::sleep(20 * MS).await,
                other => panic!("no recovery after restart: {other:?}"),
            }
        }
        // And the limit holds again.
        assert!(matches!(
            b.reserve(Some("k"), Timestamp::now(), &p, no_wait).await,
            Err(FreqLimitError::Rejected(_))
        ));
    }
}

/// The status of one request through `FreqLimitLayer` with HTTP responses, on
/// a backend made lazily (it cannot connect while the server is down).
#[cfg(feature = "http")]
async fn http_status(url: &str, policy: FailurePolicy) -> u16 {
    use axum::http::{Request, Response};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_freqlimit::layer::FreqLimitLayer;

    let backend = builder()
        .failure_policy(policy)
        .timeout(200 * MS)
        .connect_lazy(url)
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(FreqLimitParams::per_second(1_000), backend)
                .key(|_: &Request<()>| Some("client".to_owned()))
                .max_wait(Duration::ZERO)
                .http_responses(),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        });
    let response = svc.oneshot(Request::new(())).await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_and_the_state_kept() {
    let Some((server, b)) = started().await else {
        return;
    };
    let p = FreqLimitParams::per_minute(1);
    let no_wait = Reserve::new().no_wait();
    b.reserve(Some("k"), Timestamp::now(), &p, no_wait)
        .await
        .unwrap();
    // The first call loaded the script (EVALSHA, NOSCRIPT, EVAL).
    assert_eq!(b.stats().retries, 1);
    assert_eq!(server.cmd(&["SCRIPT", "FLUSH"]), "+OK");
    // The debt survived the flush; the script came back by itself.
    assert!(matches!(
        b.reserve(Some("k"), Timestamp::now(), &p, no_wait).await,
        Err(FreqLimitError::Rejected(_))
    ));
    b.reserve(Some("other"), Timestamp::now(), &p, no_wait)
        .await
        .unwrap();
    // One more EVAL after the flush, then EVALSHA works again.
    assert_eq!(b.stats().retries, 2);
    assert_eq!(b.stats().script_calls, 3);
    assert_eq!(b.stats().failures, 0);
}

/// A call on key `k`, and how long it took.
async fn timed_call(
    b: &RedisBackend<String>,
    p: &FreqLimitParams,
) -> (Result<Admission, FreqLimitError>, Duration) {
    let started = Instant::now();
    let result = b
        .reserve(Some("k"), Timestamp::now(), p, Reserve::new())
        .await;
    (result, started.elapsed())
}

/// Puts `server` to sleep for `secs` seconds (`DEBUG SLEEP` from a thread of
/// its own) and returns once it sleeps; the thread answers the reply.
async fn put_to_sleep(server: &RedisServer, secs: u8) -> std::thread::JoinHandle<[u8; 5]> {
    let port = server.port;
    let sleeper = std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut s = std::io::BufWriter::new(s);
        use std::io::{Read, Write};
        let command = format!("*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n{secs}\r\n");
        s.write_all(command.as_bytes()).unwrap();
        s.flush().unwrap();
        let mut reply = [0u8; 5];
        s.get_mut().read_exact(&mut reply).unwrap();
        reply
    });
    tokio::time::sleep(200 * MS).await; // the server is asleep now
    sleeper
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout_and_the_call_is_not_retried() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let timeout = 100 * MS;
    let closed = with_policy(&server, FailurePolicy::Closed, timeout).await;
    let open = with_policy(&server, FailurePolicy::Open, timeout).await;
    let p = FreqLimitParams::per_minute(1);
    // Warm both connections (and the script cache) up.
    for b in [&closed, &open] {
        b.reserve(Some("warm"), Timestamp::now(), &p, Reserve::new())
            .await
            .unwrap();
    }
    let calls_before = server.script_calls();
    let retries_before = closed.stats().retries + open.stats().retries;

    let sleeper = put_to_sleep(&server, 2).await;

    let (err, elapsed_closed) = timed_call(&closed, &p).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, FreqLimitError::Backend(e) if e.kind() == BackendErrorKind::Timeout),
        "{err:?}"
    );
    let (admitted, elapsed_open) = timed_call(&open, &p).await;
    let admitted = admitted.unwrap();
    assert!(admitted.is_fail_open());
    // The server sleeps 2 s; the calls gave up long before.
    assert!(
        elapsed_closed < Duration::from_secs(1),
        "{elapsed_closed:?}"
    );
    assert!(elapsed_open < Duration::from_secs(1), "{elapsed_open:?}");

    assert_eq!(&sleeper.join().unwrap(), b"+OK\r\n");
    // Each timed-out call reached the server exactly once: never retried.
    tokio::time::sleep(100 * MS).await;
    assert_eq!(server.script_calls() - calls_before, 2);
    assert_eq!(
        closed.stats().retries + open.stats().retries,
        retries_before
    );
    // And the connection serves again.
    closed
        .reserve(Some("after"), Timestamp::now(), &p, Reserve::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn unexpected_data_is_corrupt_or_a_protocol_error_and_out_of_memory_is_full() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let closed = with_policy(&server, FailurePolicy::Closed, Duration::from_secs(5)).await;
    let open = with_policy(&server, FailurePolicy::Open, Duration::from_secs(5)).await;
    let p = FreqLimitParams::per_second(1);
    for b in [&closed, &open] {
        let garbage = String::from_utf8(b.redis_key(Some("garbage"))).unwrap();
        let list = String::from_utf8(b.redis_key(Some("list"))).unwrap();
        server.cmd(&["SET", &garbage, "not a number"]);
        server.cmd(&["RPUSH", &list, "x"]);
    }
    // A string the backend did not write is corrupt (see values.rs); another
    // type is an answer the backend does not expect.
    for (key, kind) in [
        ("garbage", BackendErrorKind::Corrupt),
        ("list", BackendErrorKind::Protocol),
    ] {
        match closed
            .reserve(Some(key), Timestamp::now(), &p, Reserve::new())
            .await
        {
            Err(FreqLimitError::Backend(e)) => assert_eq!(e.kind(), kind, "{e}"),
            other => panic!("{key}: {other:?}"),
        }
        assert!(
            open.reserve(Some(key), Timestamp::now(), &p, Reserve::new())
                .await
                .unwrap()
                .is_fail_open()
        );
    }
    // Out of memory with noeviction: the write is refused.
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    match closed
        .reserve(Some("new"), Timestamp::now(), &p, Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Full, "{e}"),
        other => panic!("{other:?}"),
    }
    server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    closed
        .reserve(Some("new"), Timestamp::now(), &p, Reserve::new())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Several connections and several processes on one key
// ---------------------------------------------------------------------------

/// The shared limit: 200 per second (T = 5 ms), 5 at once.
const SHARED: FreqLimitParams = FreqLimitParams::per_second(200).with_burst(5);
const HAMMER_ENV: &str = "FREQLIMIT_HAMMER_URL";

/// The hammer test's name as the test harness knows it (with its module path,
/// without the crate's name), for `--exact` in the child processes.
/// Every call happened on the server between its send and its reply (µs on
/// one clock). For any window `[a, e]`, the admitted calls certainly inside it
/// (sent at or after `a`, answered by `e`) number at most `burst + (e - a) / T`.
/// Returns the highest share of that bound a window reached.
fn assert_within_the_bound(admitted: &[(u64, u64)], params: &FreqLimitParams) -> f64 {
    let t = params.interval().as_micros() as u64;
    let burst = u64::from(params.burst());
    let mut worst = 0.0f64;
    for &(a, _) in admitted {
        let mut ends: Vec<u64> = admitted.iter().filter(|e| e.0 >= a).map(|e| e.1).collect();
        ends.sort_unstable();
        for (n, &e) in ends.iter().enumerate() {
            let count = n as u64 + 1;
            let bound = burst + (e - a) / t;
            assert!(
                count <= bound,
                "{count} admitted within [{a}, {e}] µs: the bound is {bound}"
            );
            worst = worst.max(count as f64 / bound as f64);
        }
    }
    worst
}

/// This test binary again, running only `test` (its name without the
/// crate's), with `env` set, its output piped: a child process of a test.
fn child_test(test: &str, env: &[(&str, String)]) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start a child test process")
}

fn hammer_test() -> String {
    let (_crate, module) = module_path!().split_once("::").expect("a module");
    format!("{module}::several_processes_and_connections_share_one_limit")
}

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Unit calls on `key` that may not wait, until `until`, one per `pace` (or
/// as fast as they come back, yielding between); `(asked, answered,
/// admitted)` per call, in wall-clock µs.
async fn calls(
    b: RedisBackend<String>,
    key: &'static str,
    params: FreqLimitParams,
    until: Instant,
    pace: Option<Duration>,
) -> Vec<(u64, u64, bool)> {
    let mut events = Vec::new();
    let mut tick = pace.map(tokio::time::interval);
    while Instant::now() < until {
        match &mut tick {
            Some(tick) => {
                tick.tick().await;
            }
            None => tokio::task::yield_now().await,
        }
        let sent = wall_micros();
        let r = b
            .reserve(
                Some(key),
                Timestamp::now(),
                &params,
                Reserve::new().no_wait(),
            )
            .await;
        let replied = wall_micros();
        match r {
            Ok(_) => events.push((sent, replied, true)),
            Err(FreqLimitError::Rejected(_)) => events.push((sent, replied, false)),
            Err(e) => panic!("{e}"),
        }
    }
    events
}

/// Hammers the shared key from `connections` connections, 4 tasks each, for
/// `run`; returns `(sent, replied, admitted)` per call, in wall-clock µs.
async fn hammer(
    url: &str,
    prefix: &str,
    connections: usize,
    cache: usize,
    run: Duration,
) -> Vec<(u64, u64, bool)> {
    let mut tasks = Vec::new();
    let until = Instant::now() + run;
    for _ in 0..connections {
        let b = RedisBackend::<String>::builder()
            .prefix(prefix)
            .negative_cache(cache)
            .timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .unwrap();
        for _ in 0..4 {
            // Let the others in; a rejected flood is the negative cache's
            // test, not this one's.
            tasks.push(tokio::spawn(calls(
                b.clone(),
                "shared",
                SHARED,
                until,
                None,
            )));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_and_connections_share_one_limit() {
    // In a child process (started below), only hammer and print the events.
    if let Ok(url) = std::env::var(HAMMER_ENV) {
        let cache: usize = std::env::var("FREQLIMIT_HAMMER_CACHE")
            .unwrap()
            .parse()
            .unwrap();
        for (sent, replied, admitted) in
            hammer(&url, "shared", 2, cache, Duration::from_millis(1500)).await
        {
            println!("EVENT {sent} {replied} {admitted}");
        }
        return;
    }
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two more OS processes, one with the negative cache and one without.
    let children: Vec<_> = [0usize, 1024]
        .into_iter()
        .map(|cache| {
            child_test(
                &hammer_test(),
                &[
                    (HAMMER_ENV, server.url()),
                    ("FREQLIMIT_HAMMER_CACHE", cache.to_string()),
                ],
            )
        })
        .collect();
    // Three connections here, meanwhile.
    let mut events = hammer(&server.url(), "shared", 3, 0, Duration::from_millis(1500)).await;
    let mut per_process = vec![events.iter().filter(|e| e.2).count()];
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "child failed: {}", out.status);
        let text = String::from_utf8(out.stdout).unwrap();
        let mut admitted = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("EVENT ")) {
            let f: Vec<&str> = line.split(' ').collect();
            let e = (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2] == "true");
            admitted += usize::from(e.2);
            events.push(e);
        }
        per_process.push(admitted);
    }
    let admitted: Vec<(u64, u64)> = events.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
    let rejected = events.len() - admitted.len();
    println!(
        "{} calls, {} admitted (per process {per_process:?}), {rejected} rejected",
        events.len(),
        admitted.len()
    );
    assert!(per_process.iter().all(|&n| n > 0), "{per_process:?}");
    assert!(rejected > 0, "the key was never over its limit");

    let worst = assert_within_the_bound(&admitted, &SHARED);
    println!("highest share of the bound reached in a window: {worst:.2}");
}

// ---------------------------------------------------------------------------
// The client-clock option
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_client_clock_option_stores_wall_clock_tats_and_limits_the_same() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = builder()
        .clock(RedisClock::HostWallClock)
        .connect(&server.url())
        .await
        .unwrap();
    let p = FreqLimitParams::per_minute(1);
    let no_wait = Reserve::new().no_wait();
    let before = wall_micros();
    b.reserve(Some("k"), Timestamp::now(), &p, no_wait)
        .await
        .unwrap();
    let after = wall_micros();
    match b.reserve(Some("k"), Timestamp::now(), &p, no_wait).await {
        Err(FreqLimitError::Rejected(r)) => {
            assert!(r.retry_after() > Duration::from_secs(55), "{r:?}");
            assert!(r.retry_after() <= Duration::from_secs(60), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    // The TAT is this host's wall clock plus T, in microseconds.
    let key = String::from_utf8(b.redis_key(Some("k"))).unwrap();
    let tat: u64 = server.cmd(&["GET", &key]).parse().unwrap();
    assert!(
        tat >= before + 60_000_000 && tat <= after + 60_000_000,
        "{tat}"
    );
}
