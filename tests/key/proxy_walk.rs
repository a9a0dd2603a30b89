//! Property tests of the proxy-header parsers, run in CI (the `cargo fuzz`
//! target in `fuzz/` runs the same checks on far more inputs).
//!
//! * Arbitrary bytes in any of the three headers, from any peer: the result is
//!   the peer, or an address written in the headers; an untrusted peer is
//!   always its own client; the key is the result grouped by prefix.
//! * Well-formed chains written by trusted proxies, in every form they come in
//!   (ports, brackets, quotes, spaces, extra `Forwarded` parameters, several
//!   fields, unusable hops), against a model of the walk.
//! * Spoofing: arbitrary client-written bytes to the left of the client's
//!   address never change the result.
//!
//! The model (hops, how proxies write them, the walk) is
//! `tests/support/proxy_model.rs`, shared with the fuzz targets.
#![cfg(feature = "http")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use tower_freqlimit::key::ProxyHeader;

use crate::support::proxy_model::{
    Hop, check_walk, client_ip, header_map, model, name, trusted, write_chain,
};

fn any_header() -> impl Strategy<Value = ProxyHeader> {
    prop_oneof![
        Just(ProxyHeader::XForwardedFor),
        Just(ProxyHeader::Forwarded),
        Just(ProxyHeader::XRealIp),
    ]
}

/// A peer: a trusted proxy or not, IPv4, IPv6 or IPv4-mapped.
fn any_peer() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from_bits(bits))),
        any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 | (bits >> 8)))),
        any::<u32>().prop_map(|bits| IpAddr::V6(
            Ipv4Addr::from_bits(0x0a00_0000 | (bits >> 8)).to_ipv6_mapped()
        )),
        any::<u128>().prop_map(|bits| IpAddr::V6(Ipv6Addr::from_bits(bits))),
        any::<u128>().prop_map(|bits| {
            IpAddr::V6(Ipv6Addr::from_bits(
                (0x2001_0db8_ffff_u128 << 80) | (bits >> 48),
            ))
        }),
    ]
}

/// Header bytes: arbitrary, or built from pieces of real headers, so that
/// the interesting paths (addresses, quotes, brackets) are reached often.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        Just(b",".to_vec()),
        Just(b", ".to_vec()),
        Just(b";".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b":".to_vec()),
        Just(b"for=".to_vec()),
        Just(b"unknown".to_vec()),
        Just(b"_hidden".to_vec()),
        Just(b"10.0.0.3".to_vec()),
        Just(b"203.0.113.7".to_vec()),
        Just(b"2001:db8::7".to_vec()),
        Just(b"2001:db8:ffff::3".to_vec()),
        Just(b"::ffff:198.51.100.2".to_vec()),
        Just(b"443".to_vec()),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_give_the_peer_or_a_written_address(
        header in any_header(),
        peer in any_peer(),
        values in prop::collection::vec(header_bytes(), 0..4),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut values = values;
        values.push(noise);
        let headers = header_map(header, &values);
        let extractor = client_ip(header);
        let got = extractor.resolve(peer, &headers);
        // Canonical; an untrusted peer is its own client, whatever it sent;
        // otherwise the peer or an address written in the header read.
        check_walk(header, peer, &headers, got).map_err(TestCaseError::fail)?;
        let peer = peer.to_canonical();
        // The request's key is that address, IPv6 grouped per /64.
        let mut req = http::Request::new(());
        *req.headers_mut() = headers.clone();
        req.extensions_mut().insert(peer);
        let expected_key = match got {
            IpAddr::V4(_) => got,
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        };
        prop_assert_eq!(extractor.key(&req), Some(expected_key));
    }
}

fn any_hop() -> impl Strategy<Value = Hop> {
    prop_oneof![
        6 => (any_peer(), any::<u8>()).prop_map(|(ip, style)| Hop::Addr(ip, style)),
        1 => any::<u8>().prop_map(Hop::Unusable),
        1 => Just(Hop::Empty),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6_000))]

    #[test]
    fn well_formed_chains_agree_with_the_model(
        header in any_header(),
        peer in any_peer(),
        hops in prop::collection::vec(any_hop(), 0..24),
        cuts in prop::collection::vec(1usize..24, 0..3),
    ) {
        let fields = write_chain(header, &hops, &cuts);
        let headers = header_map(header, &fields);
        prop_assert_eq!(headers.get_all(name(header)).iter().count(), fields.len());
        let got = client_ip(header).resolve(peer, &headers);
        prop_assert_eq!(got, model(peer, &hops), "{:?}", headers);
    }

    #[test]
    fn client_written_bytes_left_of_the_client_change_nothing(
        header in any_header(),
        proxy in any_peer().prop_filter("a trusted proxy", |ip| trusted(*ip)),
        client in any_peer().prop_filter("an untrusted client", |ip| !trusted(*ip)),
        client_style in any::<u8>(),
        proxies in prop::collection::vec(
            (any_peer().prop_filter("trusted", |ip| trusted(*ip)), any::<u8>()),
            0..8,
        ),
        forged in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // What the client sent (any bytes HTTP can carry), then what each
        // trusted proxy appended: the client's address, then their own.
        let mut chain = vec![Hop::Addr(client, client_style)];
        chain.extend(proxies.iter().map(|(ip, style)| Hop::Addr(*ip, *style)));
        let appended = write_chain(header, &chain, &[]).concat();
        let mut value: Vec<u8> = forged
            .iter()
            .map(|&b| if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 { b } else { b'?' })
            .collect();
        value.extend_from_slice(b", ");
        value.extend_from_slice(&appended);
        let headers = header_map(header, &[value]);
        prop_assert_eq!(headers.len(), 1);
        prop_assert_eq!(client_ip(header).resolve(proxy, &headers), client.to_canonical());
    }
}
