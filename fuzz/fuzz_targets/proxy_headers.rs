//! The proxy-header walk of `ClientIp`, on arbitrary bytes.
//!
//! Input: one byte choosing the header and the peer's kind, 16 bytes of peer
//! address, then header values separated by `\n` (a byte no header value can
//! hold). Checked on every input, beyond "no panic":
//!
//! * an untrusted peer is its own client;
//! * the client is the peer or an address written in the header read, and is
//!   canonical (IPv4-mapped IPv6 is returned as IPv4);
//! * the first value, used as bytes a client forged, followed by a well-formed
//!   client address and a trusted hop appended by proxies, gives that client:
//!   forged bytes to the left never change the result.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_freqlimit::key::{ClientIp, ProxyHeader};

fn trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
    }
}

/// Every address that could be read out of `bytes` (see tests/key_proptest.rs).
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

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (header, name, client_element) = match data[0] % 3 {
        0 => (
            ProxyHeader::XForwardedFor,
            "x-forwarded-for",
            "203.0.113.7:4711, [2001:db8:ffff::3]:443",
        ),
        1 => (
            ProxyHeader::Forwarded,
            "forwarded",
            "for=\"203.0.113.7:4711\";proto=https, for=\"[2001:db8:ffff::3]\"",
        ),
        _ => (ProxyHeader::XRealIp, "x-real-ip", "203.0.113.7, 10.0.0.3"),
    };
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&data[1..17]);
    let peer = match (data[0] / 3) % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(bits[0], bits[1], bits[2], bits[3])),
        1 => IpAddr::V4(Ipv4Addr::new(10, bits[1], bits[2], bits[3])),
        2 => IpAddr::V6(Ipv4Addr::new(10, bits[1], bits[2], bits[3]).to_ipv6_mapped()),
        _ => {
            let mut v6 = u128::from_be_bytes(bits);
            if bits[0] % 2 == 0 {
                v6 = (0x2001_0db8_ffff_u128 << 80) | (v6 >> 48);
            }
            IpAddr::V6(Ipv6Addr::from_bits(v6))
        }
    };
    let client_ip = ClientIp::try_behind_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
        .unwrap()
        .header(header);

    let mut headers = HeaderMap::new();
    let values: Vec<&[u8]> = data[17..].split(|&b| b == b'\n').collect();
    for value in &values {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let got = client_ip.resolve(peer, &headers);
    let canonical_peer = peer.to_canonical();
    assert_eq!(got, got.to_canonical());
    if !trusted(canonical_peer) {
        assert_eq!(got, canonical_peer);
    } else if got != canonical_peer {
        let mut written = HashSet::new();
        for value in headers.get_all(name) {
            written.extend(written_addresses(value.as_bytes()));
        }
        assert!(written.contains(&got), "{got} not written in {headers:?}");
    }

    // Forged bytes on the left change nothing.
    if trusted(canonical_peer) {
        let mut forged = values[0].to_vec();
        forged.extend_from_slice(b", ");
        forged.extend_from_slice(client_element.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&forged) {
            let mut headers = HeaderMap::new();
            headers.append(name, value);
            let client: IpAddr = "203.0.113.7".parse().unwrap();
            assert_eq!(client_ip.resolve(peer, &headers), client, "{headers:?}");
        }
    }
});
