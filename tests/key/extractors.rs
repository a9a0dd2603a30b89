//! The `key` extractors: table-driven cases of every proxy-header form
//! (several fields, spaces, ports, bracketed IPv6, obfuscated identifiers,
//! garbage, oversize values, spoofing with and without trusted proxies), IPv6
//! prefixes, and the extractors in real axum and hyper servers.
#![cfg(feature = "axum")]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tower::ServiceExt;
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
use tower_freqlimit::key::{ClientIp, HeaderKey, ProxyHeader, Route, RouteKey};
use tower_freqlimit::layer::{ExtractKey, FreqLimitLayer, KeyLookup, MissingKey};

use crate::support::http::{client, get as http_get, listen, serve};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const TRUSTED: [&str; 2] = ["10.0.0.0/8", "2001:db8:ffff::/48"];
const PROXY: &str = "10.0.0.2";
const OUTSIDER: &str = "198.51.100.4";

/// One case: a peer, header fields (name, raw value) in order, and the client
/// `ClientIp::behind_proxies(TRUSTED)` reading `header` must find.
struct Case {
    name: &'static str,
    peer: &'static str,
    fields: Vec<(&'static str, Vec<u8>)>,
    header: ProxyHeader,
    client: &'static str,
}

fn xff(name: &'static str, peer: &'static str, values: &[&str], client: &'static str) -> Case {
    fields(
        name,
        peer,
        "x-forwarded-for",
        values,
        ProxyHeader::XForwardedFor,
        client,
    )
}

fn fwd(name: &'static str, peer: &'static str, values: &[&str], client: &'static str) -> Case {
    fields(
        name,
        peer,
        "forwarded",
        values,
        ProxyHeader::Forwarded,
        client,
    )
}

fn real(name: &'static str, peer: &'static str, values: &[&str], client: &'static str) -> Case {
    fields(
        name,
        peer,
        "x-real-ip",
        values,
        ProxyHeader::XRealIp,
        client,
    )
}

fn fields(
    name: &'static str,
    peer: &'static str,
    field: &'static str,
    values: &[&str],
    header: ProxyHeader,
    client: &'static str,
) -> Case {
    Case {
        name,
        peer,
        fields: values
            .iter()
            .map(|v| (field, v.as_bytes().to_vec()))
            .collect(),
        header,
        client,
    }
}

fn raw(
    name: &'static str,
    field: &'static str,
    value: Vec<u8>,
    header: ProxyHeader,
    client: &'static str,
) -> Case {
    Case {
        name,
        peer: PROXY,
        fields: vec![(field, value)],
        header,
        client,
    }
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in &cases {
        let client_ip = ClientIp::try_behind_proxies(TRUSTED)
            .unwrap()
            .header(case.header);
        let mut headers = HeaderMap::new();
        for (field, value) in &case.fields {
            headers.append(*field, HeaderValue::from_bytes(value).unwrap());
        }
        let got = client_ip.resolve(ip(case.peer), &headers);
        if got != ip(case.client) {
            failures.push(format!("{}: got {got}, want {}", case.name, case.client));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn x_forwarded_for_forms() {
    let chain_40 = format!("203.0.113.7{}", ", 10.0.0.3".repeat(40));
    let junk_100k = format!("{}203.0.113.7, 10.0.0.3", "1.1.1.1, ".repeat(12_000));
    let long_element = format!("203.0.113.7, {}", "9".repeat(5_000));
    run(vec![
        xff("no header: the peer", PROXY, &[], PROXY),
        xff("one client", PROXY, &["203.0.113.7"], "203.0.113.7"),
        xff(
            "forged leftmost entry",
            PROXY,
            &["6.6.6.6, 203.0.113.7"],
            "203.0.113.7",
        ),
        xff(
            "trusted hops are skipped",
            PROXY,
            &["203.0.113.7, 10.0.0.3, 10.9.9.9"],
            "203.0.113.7",
        ),
        xff(
            "several fields are one list, in order",
            PROXY,
            &["6.6.6.6", "203.0.113.7, 10.0.0.3", "10.0.0.4"],
            "203.0.113.7",
        ),
        xff(
            "spaces and tabs",
            PROXY,
            &[" 203.0.113.7 ,\t10.0.0.3\t"],
            "203.0.113.7",
        ),
        xff(
            "no spaces",
            PROXY,
            &["6.6.6.6,203.0.113.7,10.0.0.3"],
            "203.0.113.7",
        ),
        xff(
            "ports",
            PROXY,
            &["203.0.113.7:5555, 10.0.0.3:80"],
            "203.0.113.7",
        ),
        xff(
            "bracketed IPv6 with a port",
            PROXY,
            &["[2001:db8::7]:443"],
            "2001:db8::7",
        ),
        xff(
            "bracketed IPv6",
            PROXY,
            &["[2001:db8::7], 10.0.0.3"],
            "2001:db8::7",
        ),
        xff(
            "bare IPv6",
            PROXY,
            &["2001:db8::7, 10.0.0.3"],
            "2001:db8::7",
        ),
        xff(
            "IPv4-mapped IPv6 is IPv4",
            PROXY,
            &["::ffff:203.0.113.7"],
            "203.0.113.7",
        ),
        xff(
            "IPv4-mapped trusted hop",
            PROXY,
            &["203.0.113.7, [::ffff:10.0.0.3]:80"],
            "203.0.113.7",
        ),
        xff(
            "IPv4-mapped peer is trusted",
            "::ffff:10.0.0.2",
            &["203.0.113.7"],
            "203.0.113.7",
        ),
        xff(
            "IPv6 proxy",
            "2001:db8:ffff::2",
            &["203.0.113.7"],
            "203.0.113.7",
        ),
        xff(
            "every hop trusted: the leftmost",
            PROXY,
            &["10.0.0.5, 10.0.0.3"],
            "10.0.0.5",
        ),
        xff(
            "unknown ends the walk at the last trusted",
            PROXY,
            &["203.0.113.7, unknown, 10.0.0.3"],
            "10.0.0.3",
        ),
        xff(
            "obfuscated ends the walk",
            PROXY,
            &["203.0.113.7, _hidden"],
            PROXY,
        ),
        xff(
            "garbage at the right end: the peer",
            PROXY,
            &["203.0.113.7, garbage"],
            PROXY,
        ),
        xff(
            "garbage left of the client is never read",
            PROXY,
            &["%%garbage\"[, 203.0.113.7"],
            "203.0.113.7",
        ),
        xff(
            "a host name is not an address",
            PROXY,
            &["client.example.com"],
            PROXY,
        ),
        xff(
            "a zone index is not usable",
            PROXY,
            &["fe80::1%eth0"],
            PROXY,
        ),
        xff(
            "leading zeros are not an address",
            PROXY,
            &["203.0.113.07"],
            PROXY,
        ),
        xff(
            "a bad port is not usable",
            PROXY,
            &["203.0.113.7:99999"],
            PROXY,
        ),
        xff(
            "empty elements are skipped",
            PROXY,
            &["203.0.113.7,, 10.0.0.3 ,"],
            "203.0.113.7",
        ),
        xff(
            "an empty field is skipped",
            PROXY,
            &["203.0.113.7", ""],
            "203.0.113.7",
        ),
        xff("only empty: the peer", PROXY, &["", " , "], PROXY),
        xff(
            "40 trusted hops: the walk stops at 32",
            PROXY,
            &[chain_40.as_str()],
            "10.0.0.3",
        ),
        xff(
            "100 KB of client junk on the left",
            PROXY,
            &[junk_100k.as_str()],
            "203.0.113.7",
        ),
        xff(
            "an element past 4 KiB: the peer",
            PROXY,
            &[long_element.as_str()],
            PROXY,
        ),
        xff(
            "spoofing without a trusted proxy: the peer",
            OUTSIDER,
            &["203.0.113.7"],
            OUTSIDER,
        ),
        xff(
            "claiming to be a proxy from outside: the peer",
            OUTSIDER,
            &["10.0.0.3"],
            OUTSIDER,
        ),
        xff(
            "claiming to be a proxy behind one: the client",
            PROXY,
            &["10.0.0.99, 203.0.113.7"],
            "203.0.113.7",
        ),
        // Documented: a client inside a trusted network writes its own address.
        xff(
            "a client inside a trusted network",
            "10.5.5.5",
            &["1.2.3.4"],
            "1.2.3.4",
        ),
    ]);
}

#[test]
fn x_forwarded_for_raw_bytes() {
    let xff = ProxyHeader::XForwardedFor;
    run(vec![
        raw(
            "non-UTF-8 at the right end",
            "x-forwarded-for",
            b"203.0.113.7, \xff\xfe".to_vec(),
            xff,
            PROXY,
        ),
        raw(
            "non-UTF-8 left of the client",
            "x-forwarded-for",
            b"\xff\xfe, 203.0.113.7".to_vec(),
            xff,
            "203.0.113.7",
        ),
        raw(
            "a tab-separated pair is one bad element",
            "x-forwarded-for",
            b"1.2.3.4\t5.6.7.8".to_vec(),
            xff,
            PROXY,
        ),
    ]);
}

#[test]
fn forwarded_forms() {
    run(vec![
        fwd("one element", PROXY, &["for=203.0.113.7"], "203.0.113.7"),
        fwd(
            "case-insensitive name",
            PROXY,
            &["For=203.0.113.7"],
            "203.0.113.7",
        ),
        fwd(
            "quoted with a port",
            PROXY,
            &["for=\"203.0.113.7:8080\""],
            "203.0.113.7",
        ),
        fwd(
            "bracketed IPv6 with a port",
            PROXY,
            &["for=\"[2001:db8:cafe::17]:4711\""],
            "2001:db8:cafe::17",
        ),
        fwd(
            "obfuscated port",
            PROXY,
            &["for=\"[2001:db8::17]:_p1\""],
            "2001:db8::17",
        ),
        fwd(
            "other parameters",
            PROXY,
            &[
                "for=6.6.6.6, for=203.0.113.7;proto=https;by=10.0.0.3, for=10.0.0.3;host=example.com",
            ],
            "203.0.113.7",
        ),
        fwd(
            "several fields",
            PROXY,
            &["for=6.6.6.6", "for=203.0.113.7, for=10.0.0.3"],
            "203.0.113.7",
        ),
        fwd(
            "commas and semicolons in quoted values",
            PROXY,
            &["for=6.6.6.6;host=\"a, for=1.1.1.1\", for=203.0.113.7;host=\"x;y, z\""],
            "203.0.113.7",
        ),
        fwd(
            "a client's unbalanced quote on the left",
            PROXY,
            &["for=\"6.6.6.6, for=203.0.113.7"],
            "203.0.113.7",
        ),
        // An unbalanced quote at the right end shifts where a split from the
        // right falls: the piece must not parse as the element before it.
        fwd(
            "an unbalanced quote at the right end (found by proptest)",
            PROXY,
            &["\tfor=\"0.0.0.0\";proto=https;by=\"[2001:db8::1]\" ,for=\"garbage"],
            PROXY,
        ),
        fwd(
            "an unbalanced quote pairing with a quoted comma",
            PROXY,
            &["for=203.0.113.9;host=\"a, for=6.6.6.6;\", for=\"garbage"],
            PROXY,
        ),
        fwd(
            "unknown at the right end: the peer",
            PROXY,
            &["for=203.0.113.7, for=unknown"],
            PROXY,
        ),
        fwd("quoted unknown", PROXY, &["for=\"unknown\""], PROXY),
        fwd(
            "obfuscated identifier ends the walk at the last trusted",
            PROXY,
            &["for=203.0.113.7, for=_hidden, for=10.0.0.3"],
            "10.0.0.3",
        ),
        fwd(
            "an element without for",
            PROXY,
            &["for=203.0.113.7, by=10.0.0.3;proto=http"],
            PROXY,
        ),
        fwd(
            "two for in one element",
            PROXY,
            &["for=203.0.113.7;for=6.6.6.6"],
            PROXY,
        ),
        fwd(
            "unquoted bracketed IPv6 (lenient)",
            PROXY,
            &["for=[2001:db8::7]"],
            "2001:db8::7",
        ),
        fwd(
            "a pair without a value",
            PROXY,
            &["for=203.0.113.7;secret"],
            PROXY,
        ),
        fwd("garbage", PROXY, &["}{!,;=="], PROXY),
        fwd(
            "every hop trusted",
            PROXY,
            &["for=10.0.0.7, for=10.0.0.3"],
            "10.0.0.7",
        ),
        fwd(
            "spoofing without a trusted proxy",
            OUTSIDER,
            &["for=203.0.113.7"],
            OUTSIDER,
        ),
        fwd(
            "X-Forwarded-For is not read when Forwarded is chosen",
            PROXY,
            &[],
            PROXY,
        ),
    ]);
}

#[test]
fn x_real_ip_forms() {
    run(vec![
        real("one address", PROXY, &["203.0.113.7"], "203.0.113.7"),
        real("with a port", PROXY, &["[2001:db8::7]:443"], "2001:db8::7"),
        real(
            "a client's field before the proxy's",
            PROXY,
            &["6.6.6.6", "203.0.113.7"],
            "203.0.113.7",
        ),
        real("garbage", PROXY, &["not-an-ip"], PROXY),
        real(
            "spoofing without a trusted proxy",
            OUTSIDER,
            &["203.0.113.7"],
            OUTSIDER,
        ),
    ]);
}

#[test]
fn only_the_chosen_headers_are_read_in_their_order() {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
    headers.insert("forwarded", HeaderValue::from_static("for=203.0.113.2"));
    headers.insert("x-real-ip", HeaderValue::from_static("203.0.113.3"));
    let base = ClientIp::try_behind_proxies(TRUSTED).unwrap();
    let peer = ip(PROXY);
    // The default reads X-Forwarded-For only.
    assert_eq!(base.resolve(peer, &headers), ip("203.0.113.1"));
    assert_eq!(
        base.clone()
            .header(ProxyHeader::Forwarded)
            .resolve(peer, &headers),
        ip("203.0.113.2")
    );
    assert_eq!(
        base.clone()
            .header(ProxyHeader::XRealIp)
            .resolve(peer, &headers),
        ip("203.0.113.3")
    );
    let both = base
        .clone()
        .headers([ProxyHeader::Forwarded, ProxyHeader::XForwardedFor]);
    assert_eq!(both.resolve(peer, &headers), ip("203.0.113.2"));
    // The first *present* header is read, even when it is unusable: a bad
    // Forwarded does not fall through to X-Forwarded-For.
    headers.insert("forwarded", HeaderValue::from_static("for=unknown"));
    assert_eq!(both.resolve(peer, &headers), peer);
    headers.remove("forwarded");
    assert_eq!(both.resolve(peer, &headers), ip("203.0.113.1"));
    // No header at all: the peer.
    assert_eq!(base.clone().headers([]).resolve(peer, &headers), peer);
    // `peer()` trusts nobody.
    assert_eq!(ClientIp::peer().resolve(peer, &headers), peer);
}

#[test]
fn keys_group_ipv6_by_prefix_and_map_ipv4() {
    let with_peer = |addr: &str| {
        let mut req = Request::new(());
        req.extensions_mut().insert(SocketAddr::new(ip(addr), 4000));
        req
    };
    // An address in 2001:db8:aa:bb::/64.
    let v6 = "2001:db8:aa:bb:1:2:3:4";
    let mapped = "::ffff:192.0.2.9";
    let cases = [
        (ClientIp::peer(), v6, "2001:db8:aa:bb::"),
        (
            ClientIp::peer(),
            "2001:db8:aa:bb:ffff::9",
            "2001:db8:aa:bb::",
        ),
        (ClientIp::peer().prefix_v6(56), v6, "2001:db8:aa::"),
        (ClientIp::peer().prefix_v6(48), v6, "2001:db8:aa::"),
        (ClientIp::peer().prefix_v6(128), v6, v6),
        (
            ClientIp::peer().prefix_v6(200),
            "2001:db8::1",
            "2001:db8::1",
        ),
        (ClientIp::peer().prefix_v6(0), "2001:db8::1", "::"),
        (ClientIp::peer(), mapped, "192.0.2.9"),
        (ClientIp::peer(), "192.0.2.9", "192.0.2.9"),
        (ClientIp::peer().prefix_v4(24), "192.0.2.9", "192.0.2.0"),
        (ClientIp::peer().prefix_v4(24), mapped, "192.0.2.0"),
    ];
    for (extractor, peer, key) in cases {
        assert_eq!(
            extractor.extract_key(&with_peer(peer)),
            KeyLookup::Key(ip(key)),
            "{extractor:?} {peer}"
        );
    }
    // No peer recorded: no key, the server's setup at fault, and the message
    // says how to record the peer.
    let KeyLookup::NotFound(missing) = ClientIp::peer().extract_key(&Request::new(())) else {
        panic!("a key without a peer");
    };
    assert!(!missing.is_client_error());
    assert!(
        missing
            .message()
            .contains("into_make_service_with_connect_info::<SocketAddr>()"),
        "{missing}"
    );
    // An `IpAddr` in the extensions is read as well.
    let mut req = Request::new(());
    req.extensions_mut().insert(ip("192.0.2.1"));
    assert_eq!(ClientIp::peer().key(&req), Some(ip("192.0.2.1")));
}

#[test]
fn tuples_combine_extractors() {
    let mut req = Request::get("/a").body(()).unwrap();
    req.extensions_mut()
        .insert(SocketAddr::new(ip("192.0.2.1"), 1));
    let pair = (ClientIp::peer(), RouteKey::path());
    let KeyLookup::Key((addr, route)) = pair.extract_key(&req) else {
        panic!("no key");
    };
    assert_eq!((addr, route.as_str()), (ip("192.0.2.1"), "/a"));
    // Either missing: no key.
    let with_api_key = (ClientIp::peer(), HeaderKey::named("x-api-key").unwrap());
    // The header is the client's to send: its omission is the client's error.
    let KeyLookup::NotFound(missing) = with_api_key.extract_key(&req) else {
        panic!("a key without the header");
    };
    assert!(missing.is_client_error(), "{missing}");
    let no_peer = Request::get("/a").body(()).unwrap();
    let KeyLookup::NotFound(missing) = pair.extract_key(&no_peer) else {
        panic!("a key without a peer");
    };
    assert!(!missing.is_client_error(), "{missing}");
    // Global in either: the global bucket.
    let global = (ClientIp::peer(), tower_freqlimit::layer::Global);
    assert_eq!(
        ExtractKey::<_, (IpAddr, IpAddr)>::extract_key(&global, &req),
        KeyLookup::Global
    );
}

// ---------------------------------------------------------------------------
// In servers
// ---------------------------------------------------------------------------

/// One a minute, five at once: nothing refills while a test runs.
const FIVE: FreqLimitParams = FreqLimitParams::per_hour(60).with_burst(5);

async fn status(app: &Router, req: Request<Body>) -> StatusCode {
    app.clone().oneshot(req).await.unwrap().status()
}

fn get_with(path: &str, xff: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.body(Body::empty()).unwrap()
}

/// `GET /` limited to [`FIVE`] on `backend`, reject-only, keyed by the client
/// behind proxies in 10.0.0.0/8, for requests from `peer` (axum's
/// `ConnectInfo`, mocked).
fn behind_proxies(backend: InMemoryBackend<IpAddr>, peer: [u8; 4]) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(
            FreqLimitLayer::new(FIVE, backend)
                .key(ClientIp::try_behind_proxies(["10.0.0.0/8"]).unwrap())
                .max_wait(Duration::ZERO)
                .http_responses(),
        )
        .layer(MockConnectInfo(SocketAddr::from((peer, 40_000))))
}

/// Behind a proxy at 10.0.0.2 (axum's `ConnectInfo`, mocked): clients are told
/// apart by `X-Forwarded-For`, and forging its leftmost entry gains nothing.
#[tokio::test(start_paused = true)]
async fn axum_behind_a_proxy_keys_by_the_forwarded_client() {
    let backend = InMemoryBackend::<IpAddr>::new();
    let app = behind_proxies(backend.clone(), [10, 0, 0, 2]);

    // One client forging a new leftmost entry on each request: still one bucket.
    let mut codes = Vec::new();
    for n in 0..7 {
        let forged = format!("6.6.6.{n}, 203.0.113.7");
        codes.push(status(&app, get_with("/", Some(&forged))).await.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
    // Another client has its own bucket.
    assert_eq!(
        status(&app, get_with("/", Some("203.0.113.8"))).await,
        StatusCode::OK
    );
    // No header: the proxy itself.
    assert_eq!(status(&app, get_with("/", None)).await, StatusCode::OK);
    assert_eq!(backend.len(), 3);
}

/// Straight from the internet (peer 198.51.100.4): the header is ignored.
#[tokio::test(start_paused = true)]
async fn axum_without_a_trusted_peer_ignores_the_header() {
    let app = behind_proxies(InMemoryBackend::new(), [198, 51, 100, 4]);
    let mut codes = Vec::new();
    for n in 0..7 {
        let spoofed = format!("203.0.113.{n}");
        codes.push(status(&app, get_with("/", Some(&spoofed))).await.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
}

/// `RouteKey::matched()`: `/users/1` and `/users/2` share the route's bucket.
#[tokio::test(start_paused = true)]
async fn axum_matched_route_is_one_bucket() {
    let backend = InMemoryBackend::<Route>::new();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/health", get(|| async { "ok" }))
        .route_layer(
            FreqLimitLayer::new(FIVE, backend.clone())
                .key(RouteKey::matched())
                .max_wait(Duration::ZERO)
                .http_responses(),
        );
    let mut codes = Vec::new();
    for id in 0..7 {
        codes.push(
            status(&app, get_with(&format!("/users/{id}"), None))
                .await
                .as_u16(),
        );
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        status(&app, get_with("/health", None)).await,
        StatusCode::OK
    );
    // Two routes, two keys, however many ids were asked for.
    assert_eq!(backend.len(), 2);
}

/// A full bounded table refuses new clients with `503`; known clients go on.
/// (Clients of three networks: two of one `/24` would be one group, whose
/// share of a table of 2 is one key.)
#[tokio::test(start_paused = true)]
async fn axum_full_table_refuses_new_clients_with_503() {
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(2)
        .when_full(WhenFull::RefuseNewKeys)
        .build();
    let app = behind_proxies(backend.clone(), [10, 0, 0, 2]);
    assert_eq!(
        status(&app, get_with("/", Some("203.0.113.1"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, get_with("/", Some("198.51.100.2"))).await,
        StatusCode::OK
    );
    let refused = app
        .clone()
        .oneshot(get_with("/", Some("192.0.2.3")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"rate-limit backend is full\n");
    assert_eq!(
        status(&app, get_with("/", Some("203.0.113.1"))).await,
        StatusCode::OK
    );
    assert_eq!(backend.len(), 2);
}

/// A real axum server with `ConnectInfo`: the peer (127.0.0.1) is the key.
#[tokio::test]
async fn axum_server_with_connect_info() {
    let backend = InMemoryBackend::<IpAddr>::new();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        FreqLimitLayer::new(FIVE, backend.clone())
            .key(ClientIp::peer())
            .max_wait(Duration::ZERO)
            .http_responses(),
    );
    let addr = serve(app).await;

    let client = client();
    let mut codes = Vec::new();
    for _ in 0..6 {
        // The header is ignored: nobody is trusted.
        let reply = http_get(&client, addr, "/", [("x-forwarded-for", "203.0.113.9")]).await;
        codes.push(reply.status.as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
    assert_eq!(backend.len(), 1);
}

/// A plain hyper server that records the peer as a `SocketAddr`, as the
/// `key` module docs show; without it, the request has no key (`500`).
#[tokio::test]
async fn plain_hyper_server_with_the_peer_in_extensions() {
    for record_peer in [true, false] {
        let backend = InMemoryBackend::<IpAddr>::new();
        let limited = tower::ServiceBuilder::new()
            .layer(
                FreqLimitLayer::new(FIVE, backend.clone())
                    .key(ClientIp::peer())
                    .on_missing_key(MissingKey::Refuse)
                    .max_wait(Duration::ZERO)
                    .http_responses(),
            )
            .service(tower::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(
                    "ok",
                ))))
            }));
        let (listener, addr) = listen().await;
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let limited = limited.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    if record_peer {
                        req.extensions_mut().insert::<SocketAddr>(peer);
                    }
                    limited.clone().oneshot(req)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let client = client();
        let mut codes = Vec::new();
        for _ in 0..6 {
            codes.push(http_get(&client, addr, "/", []).await.status.as_u16());
        }
        if record_peer {
            assert_eq!(codes, [200, 200, 200, 200, 200, 429]);
            assert_eq!(backend.len(), 1);
        } else {
            assert_eq!(codes, [500; 6]);
            assert!(backend.is_empty());
        }
    }
}
