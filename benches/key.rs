//! The `key` extractors and the bounded in-memory backend.
//!
//! * `extract/*`: one `extract_key` call on a prepared `http::Request` (the peer
//!   in its extensions, the headers parsed): the peer alone, through axum's
//!   `ConnectInfo`, an `X-Forwarded-For` chain behind trusted proxies (with and
//!   without a kilobyte of forged entries on its left), `Forwarded`, an IPv6
//!   peer grouped per /56, a header value, a path, and the README's former
//!   hand-written closure as a baseline.
//! * `max_keys/*`: one call with a key the backend has never seen: unbounded
//!   and bounded but not full (both tables growing from empty), and, on a table
//!   of 10 000 keys,
//!   full under each policy: refused, evicting, and making room losslessly
//!   (drained keys always there). The `known key` lines show the hot path with
//!   and without a bound.
//!
//! `cargo bench --bench key` (about a minute); `-- --test` runs each once.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::key::{ClientIp, HeaderKey, ProxyHeader, RouteKey};
use tower_freqlimit::layer::{ExtractKey, KeyLookup};
use tower_freqlimit::{FreqLimitParams, Reserve};

fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::get("/api/v1/users/42?page=2");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(()).unwrap();
    req.extensions_mut()
        .insert(SocketAddr::new(peer.parse().unwrap(), 40_000));
    req
}

fn bench_extract<K, E>(c: &mut Criterion, name: &str, extractor: &E, req: &Request<()>)
where
    E: ExtractKey<Request<()>, K>,
{
    assert!(
        matches!(extractor.extract_key(req), KeyLookup::Key(_)),
        "{name}: no key"
    );
    c.bench_function(name, |b| {
        b.iter(|| black_box(extractor.extract_key(black_box(req))));
    });
}

fn extractors(c: &mut Criterion) {
    let behind = ClientIp::try_behind_proxies(["10.0.0.0/8"]).unwrap();
    let peer = request("203.0.113.7", &[]);
    bench_extract(c, "extract/peer (SocketAddr)", &ClientIp::peer(), &peer);

    let mut connect_info = Request::new(());
    connect_info
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 7], 40_000))));
    bench_extract(
        c,
        "extract/peer (axum ConnectInfo)",
        &ClientIp::peer(),
        &connect_info,
    );
    let closure = |req: &Request<()>| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
    };
    bench_extract(
        c,
        "extract/baseline closure (ConnectInfo ip)",
        &closure,
        &connect_info,
    );

    bench_extract(
        c,
        "extract/untrusted peer with XFF (ignored)",
        &behind,
        &request("203.0.113.7", &[("x-forwarded-for", "198.51.100.1")]),
    );
    let xff = request(
        "10.0.0.2",
        &[("x-forwarded-for", "203.0.113.7, 10.0.0.3, 10.0.0.4")],
    );
    bench_extract(c, "extract/XFF, 3 hops (2 trusted)", &behind, &xff);
    let forged = format!("{}203.0.113.7, 10.0.0.3, 10.0.0.4", "6.6.6.6, ".repeat(128));
    let xff_forged = request("10.0.0.2", &[("x-forwarded-for", &forged)]);
    bench_extract(
        c,
        "extract/XFF, 3 hops after 1 KiB forged",
        &behind,
        &xff_forged,
    );
    let fwd = request(
        "10.0.0.2",
        &[(
            "forwarded",
            "for=203.0.113.7;proto=https, for=\"[2001:db8::3]:443\";by=10.0.0.2, for=10.0.0.3",
        )],
    );
    let behind_v6 = ClientIp::try_behind_proxies(["10.0.0.0/8", "2001:db8::/32"])
        .unwrap()
        .header(ProxyHeader::Forwarded);
    bench_extract(
        c,
        "extract/Forwarded, 3 elements (2 trusted)",
        &behind_v6,
        &fwd,
    );
    let v6 = request("2001:db8:aa:bb:1:2:3:4", &[]);
    bench_extract(
        c,
        "extract/IPv6 peer per /56",
        &ClientIp::peer().prefix_v6(56),
        &v6,
    );

    let api = request("203.0.113.7", &[("x-api-key", "k-0123456789abcdef")]);
    bench_extract(
        c,
        "extract/header value (String)",
        &HeaderKey::named("x-api-key").unwrap(),
        &api,
    );
    bench_extract(c, "extract/path (Route)", &RouteKey::path(), &peer);
}

const MAX_KEYS: usize = 10_000;
const T0: u64 = 1_000_000_000_000;

fn ts(nanos: u64) -> Timestamp {
    Timestamp::from_nanos(T0 + nanos)
}

fn filled(when_full: Option<WhenFull>, params: &FreqLimitParams) -> InMemoryBackend<u64> {
    let mut builder = InMemoryBackend::builder().without_sweeper();
    if let Some(when_full) = when_full {
        builder = builder.max_keys(MAX_KEYS).when_full(when_full);
    }
    let backend = builder.build();
    for key in 0..MAX_KEYS as u64 {
        black_box(
            backend
                .reserve_now(Some(&key), ts(key), params, Reserve::new())
                .is_ok(),
        );
    }
    backend
}

/// New keys, `step` ns apart, from `next` on; returns the time taken.
fn insert_new(
    backend: &InMemoryBackend<u64>,
    params: &FreqLimitParams,
    next: &mut u64,
    step: u64,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let key = *next;
        *next += 1;
        black_box(
            backend
                .reserve_now(Some(&key), ts(key * step), params, Reserve::new().no_wait())
                .is_ok(),
        );
    }
    start.elapsed()
}

fn bounded_backend(c: &mut Criterion) {
    // Nothing drains while a bench runs: one call per hour per key.
    let hourly = FreqLimitParams::per_hour(1);
    let mut group = c.benchmark_group("max_keys");

    group.bench_function("new key, unbounded (table grows)", |b| {
        b.iter_custom(|iters| {
            let backend = InMemoryBackend::<u64>::builder().without_sweeper().build();
            let mut next = 0;
            insert_new(&backend, &hourly, &mut next, 1, iters)
        });
    });
    group.bench_function("new key, bounded, not full", |b| {
        b.iter_custom(|iters| {
            let backend = InMemoryBackend::<u64>::builder()
                .without_sweeper()
                .max_keys(usize::MAX)
                .build();
            let mut next = 0;
            insert_new(&backend, &hourly, &mut next, 1, iters)
        });
    });

    let refusing = filled(Some(WhenFull::RefuseNewKeys), &hourly);
    let mut next = MAX_KEYS as u64;
    group.bench_function("new key, full, RefuseNewKeys (refused)", |b| {
        b.iter_custom(|iters| insert_new(&refusing, &hourly, &mut next, 1, iters));
    });
    assert_eq!(refusing.len(), MAX_KEYS);

    let evicting = filled(Some(WhenFull::EvictClosestToDraining), &hourly);
    let mut next = MAX_KEYS as u64;
    group.bench_function("new key, full, EvictClosestToDraining", |b| {
        b.iter_custom(|iters| insert_new(&evicting, &hourly, &mut next, 1, iters));
    });
    assert_eq!(evicting.len(), MAX_KEYS);

    // T = 100 µs, a new key every 20 ns: 5 000 keys owe time, the rest of the
    // table has drained, so each new key takes a drained key's place.
    let fast = FreqLimitParams::new(1, Duration::from_micros(100), 1);
    let draining = InMemoryBackend::<u64>::builder()
        .without_sweeper()
        .max_keys(MAX_KEYS)
        .build();
    let mut next = 0;
    black_box(insert_new(
        &draining,
        &fast,
        &mut next,
        20,
        2 * MAX_KEYS as u64,
    ));
    group.bench_function("new key, full, drained keys make room (lossless)", |b| {
        b.iter_custom(|iters| insert_new(&draining, &fast, &mut next, 20, iters));
    });
    assert!(draining.len() <= MAX_KEYS);

    // The hot path: a known key, admitted (a quota nothing exceeds).
    let generous = FreqLimitParams::per_second(1_000_000_000);
    for (name, when_full) in [
        ("known key, unbounded", None),
        ("known key, bounded", Some(WhenFull::RefuseNewKeys)),
    ] {
        let backend = filled(when_full, &generous);
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let key = i % MAX_KEYS as u64;
                black_box(
                    backend
                        .reserve_now(
                            Some(&key),
                            ts(MAX_KEYS as u64 + i),
                            &generous,
                            Reserve::new(),
                        )
                        .is_ok(),
                )
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = extractors, bounded_backend
}
criterion_main!(benches);
