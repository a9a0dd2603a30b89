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

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tower_freqlimit::key::{ClientIp, ProxyHeader};

const TRUSTED: [&str; 2] = ["10.0.0.0/8", "2001:db8:ffff::/48"];

fn client_ip(header: ProxyHeader) -> ClientIp {
    ClientIp::try_behind_proxies(TRUSTED)
        .unwrap()
        .header(header)
}

fn name(header: ProxyHeader) -> &'static str {
    match header {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
        _ => "x-real-ip",
    }
}

fn any_header() -> impl Strategy<Value = ProxyHeader> {
    prop_oneof![
        Just(ProxyHeader::XForwardedFor),
        Just(ProxyHeader::Forwarded),
        Just(ProxyHeader::XRealIp),
    ]
}

fn trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
    }
}

/// Every address that could be read out of `bytes`: each maximal run of
/// address characters, and each such run cut at its last `:` (an IPv4 address
/// with a port). What the parser returns from a header must be one of these.
fn written_addresses(bytes: &[u8]) -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    let is_addr_char = |b: &u8| b.is_ascii_hexdigit() || *b == b':' || *b == b'.';
    for run in bytes.split(|b| !is_addr_char(b)) {
        let Ok(text) = std::str::from_utf8(run) else {
            continue;
        };
        if let Ok(ip) = text.parse::<IpAddr>() {
            found.insert(ip.to_canonical());
        }
        if let Some((host, _port)) = text.rsplit_once(':') {
            if let Ok(ip) = host.parse::<Ipv4Addr>() {
                found.insert(IpAddr::V4(ip));
            }
        }
    }
    found
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

fn header_map(header: ProxyHeader, values: &[Vec<u8>]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        // Bytes a header value cannot hold (CR, LF, NUL...) never reach a
        // server: keep what HTTP can carry.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name(header), value);
        }
    }
    map
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
        let peer = peer.to_canonical();

        // Canonical: IPv4-mapped IPv6 is never returned.
        prop_assert_eq!(got, got.to_canonical());
        if !trusted(peer) {
            // An untrusted peer is its own client, whatever it sent.
            prop_assert_eq!(got, peer);
        } else if got != peer {
            // Otherwise: an address that is written in the header read.
            let mut written = HashSet::new();
            for value in headers.get_all(name(header)) {
                written.extend(written_addresses(value.as_bytes()));
            }
            prop_assert!(written.contains(&got), "{got} is not in {headers:?}");
        }
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

/// One element of a chain, as a proxy would write it.
#[derive(Debug, Clone)]
enum Hop {
    Addr(IpAddr, u8),
    Unusable(u8),
    Empty,
}

fn any_hop() -> impl Strategy<Value = Hop> {
    prop_oneof![
        6 => (any_peer(), any::<u8>()).prop_map(|(ip, style)| Hop::Addr(ip, style)),
        1 => any::<u8>().prop_map(Hop::Unusable),
        1 => Just(Hop::Empty),
    ]
}

/// `hop` written in `header`'s syntax, in one of several styles.
fn write_hop(header: ProxyHeader, hop: &Hop) -> String {
    let pad = |style: u8, s: String| match style % 3 {
        0 => s,
        1 => format!(" {s}"),
        _ => format!("\t{s} "),
    };
    match (header, hop) {
        (_, Hop::Empty) => String::new(),
        (ProxyHeader::Forwarded, Hop::Addr(ip, style)) => {
            let node = match (ip, style % 4) {
                (IpAddr::V4(v4), 0) => v4.to_string(),
                (IpAddr::V4(v4), 1) => format!("\"{v4}:{}\"", u16::from(*style) * 7),
                (IpAddr::V4(v4), _) => format!("\"{v4}\""),
                (IpAddr::V6(v6), 0) => format!("\"[{v6}]:_p{style}\""),
                (IpAddr::V6(v6), 1) => format!("\"[{v6}]:4711\""),
                (IpAddr::V6(v6), _) => format!("\"[{v6}]\""),
            };
            let name = if style % 5 == 0 { "For" } else { "for" };
            let element = match style % 3 {
                0 => format!("{name}={node}"),
                1 => format!("{name}={node};proto=https;by=\"[2001:db8::1]\""),
                _ => format!("host=\"a, b;c\\\"d\";{name}={node}"),
            };
            pad(*style / 3, element)
        }
        (_, Hop::Addr(ip, style)) => {
            let node = match (ip, style % 4) {
                (IpAddr::V4(v4), 1) => format!("{v4}:{}", u16::from(*style) * 257),
                (IpAddr::V4(v4), 2) => v4.to_ipv6_mapped().to_string(),
                (IpAddr::V4(v4), _) => v4.to_string(),
                (IpAddr::V6(v6), 1) => format!("[{v6}]:443"),
                (IpAddr::V6(v6), 2) => format!("[{v6}]"),
                (IpAddr::V6(v6), _) => v6.to_string(),
            };
            pad(*style / 4, node)
        }
        (ProxyHeader::Forwarded, Hop::Unusable(kind)) => match kind % 7 {
            0 => "for=unknown".into(),
            1 => "for=\"_hidden\"".into(),
            2 => "proto=https;by=10.0.0.1".into(),
            3 => "for=1.2.3.4;for=5.6.7.8".into(),
            4 => "for=\"garbage".into(),
            5 => "host=\"x, for=6.6.6.6;\"".into(),
            _ => "for=203.0.113.1\"".into(),
        },
        (_, Hop::Unusable(kind)) => match kind % 4 {
            0 => "unknown".into(),
            1 => "_hidden".into(),
            2 => "host.example".into(),
            _ => "1.2.3".into(),
        },
    }
}

/// The walk, on the hops themselves.
fn model(peer: IpAddr, hops: &[Hop]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer) {
        return peer;
    }
    let mut last_trusted = peer;
    for hop in hops.iter().rev() {
        match hop {
            Hop::Empty => {}
            Hop::Unusable(_) => return last_trusted,
            Hop::Addr(ip, _) => {
                let ip = ip.to_canonical();
                if !trusted(ip) {
                    return ip;
                }
                last_trusted = ip;
            }
        }
    }
    last_trusted
}

/// The hops written as header fields: comma-separated, cut into fields at
/// the given points.
fn write_chain(header: ProxyHeader, hops: &[Hop], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut fields = vec![Vec::new()];
    for (i, hop) in hops.iter().enumerate() {
        let field = fields.last_mut().unwrap();
        if !field.is_empty() || (i > 0 && !cuts.contains(&i)) {
            field.push(b',');
        }
        field.extend_from_slice(write_hop(header, hop).as_bytes());
        if cuts.contains(&(i + 1)) {
            fields.push(Vec::new());
        }
    }
    fields
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
