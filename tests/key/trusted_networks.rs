//! Trusted proxy networks a server cannot take by accident (issue 13): a
//! network that holds clients (`0.0.0.0/0`, `::/0`, all of IPv4 as
//! `::ffff:0:0/96`, anything broader than the documented minimum) is refused
//! unless the opt-in with the plain name is called, because trusting it lets
//! every client write its own key.
#![cfg(feature = "axum")]

use std::net::IpAddr;

use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::key::{Cidr, ClientIp};
use tower_freqlimit::layer::FreqLimitLayer;

use crate::support::http::{client, get as http_get, ok_app, serve};

const CATCH_ALL: [&str; 8] = [
    "0.0.0.0/0",
    "::/0",
    "::ffff:0:0/96", // all of IPv4, written as IPv6
    "0.0.0.0/1",
    "8.0.0.0/7",
    "2000::/3", // all of the global unicast space
    "2001::/31",
    "::ffff:0.0.0.0/100", // 0.0.0.0/4
];

const PROXY_NETWORKS: [&str; 10] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "203.0.113.0/24",
    "127.0.0.1",
    "::1",
    "2001:db8::/32",
    "2606:4700::/32",
    "fd00::/8",
    "fc00::/7", // unique-local space, private whatever its size
    "fe80::/10",
];

#[test]
fn networks_holding_clients_are_refused_with_the_opt_in_named() {
    for net in CATCH_ALL {
        let err = ClientIp::try_behind_proxies(["10.0.0.0/8", net]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("too broad to trust"), "{net}: {text}");
        assert!(
            text.contains("behind_proxies_allowing_broad"),
            "{net}: {text}"
        );
        let parsed: Cidr = net.parse().unwrap();
        assert!(parsed.is_too_broad_to_trust(), "{net}");
        assert!(ClientIp::behind_proxies([parsed]).is_err(), "{net}");
    }
    assert_eq!(
        ClientIp::try_behind_proxies(["::ffff:0:0/96"])
            .unwrap_err()
            .input(),
        "0.0.0.0/0"
    );
}

#[test]
fn proxy_networks_are_accepted() {
    for net in PROXY_NETWORKS {
        let parsed: Cidr = net.parse().unwrap();
        assert!(!parsed.is_too_broad_to_trust(), "{net}");
        assert!(ClientIp::try_behind_proxies([net]).is_ok(), "{net}");
    }
    // The minimums are exactly the documented prefixes.
    assert!(!"3.0.0.0/8".parse::<Cidr>().unwrap().is_too_broad_to_trust());
    assert!("2.0.0.0/7".parse::<Cidr>().unwrap().is_too_broad_to_trust());
    assert!("fc00::/6".parse::<Cidr>().unwrap().is_too_broad_to_trust());
    assert!("fe80::/9".parse::<Cidr>().unwrap().is_too_broad_to_trust());
    assert_eq!(
        (Cidr::MIN_TRUSTED_PREFIX_V4, Cidr::MIN_TRUSTED_PREFIX_V6),
        (8, 32)
    );
}

/// What the check protects against, on a real server: with a catch-all
/// trusted on purpose, a loopback client that writes a new `X-Forwarded-For`
/// on each request gets a new bucket each time. With the checked
/// constructor, the same configuration never starts.
#[tokio::test]
async fn a_catch_all_trusted_on_purpose_lets_each_client_write_its_key() {
    assert!(ClientIp::try_behind_proxies(["0.0.0.0/0"]).is_err());

    let everyone: Cidr = "0.0.0.0/0".parse().unwrap();
    let backend = InMemoryBackend::<IpAddr>::new();
    let layer = FreqLimitLayer::server(FreqLimitParams::per_hour(1), backend.clone())
        .key(ClientIp::behind_proxies_allowing_broad([everyone]));
    let addr = serve(ok_app().layer(layer)).await;
    let client = client();
    for n in 1..=5 {
        let forged = format!("198.51.100.{n}");
        let reply = http_get(&client, addr, "/", [("x-forwarded-for", forged.as_str())]).await;
        assert_eq!(reply.status, 200, "forged client {n}");
    }
    assert_eq!(backend.len(), 5, "five buckets minted by one client");

    // Trusting only the real proxy (here, none: the client is the peer), the
    // forged header is ignored and the second request is refused.
    let backend = InMemoryBackend::<IpAddr>::new();
    let layer = FreqLimitLayer::server(FreqLimitParams::per_hour(1), backend.clone())
        .key(ClientIp::try_behind_proxies(["10.0.0.0/8"]).unwrap());
    let addr = serve(ok_app().layer(layer)).await;
    let statuses = [
        http_get(&client, addr, "/", [("x-forwarded-for", "198.51.100.1")])
            .await
            .status,
        http_get(&client, addr, "/", [("x-forwarded-for", "198.51.100.2")])
            .await
            .status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 429]);
    assert_eq!(backend.len(), 1);
}
