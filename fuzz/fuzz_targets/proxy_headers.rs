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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use tower_freqlimit::key::ProxyHeader;

#[allow(dead_code)]
#[path = "../../tests/support/proxy_model.rs"]
mod proxy_model;

use proxy_model::{check_walk, client_ip, header_map, trusted};

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (header, client_element) = match data[0] % 3 {
        0 => (
            ProxyHeader::XForwardedFor,
            "203.0.113.7:4711, [2001:db8:ffff::3]:443",
        ),
        1 => (
            ProxyHeader::Forwarded,
            "for=\"203.0.113.7:4711\";proto=https, for=\"[2001:db8:ffff::3]\"",
        ),
        _ => (ProxyHeader::XRealIp, "203.0.113.7, 10.0.0.3"),
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
    let client_ip = client_ip(header);

    let values: Vec<&[u8]> = data[17..].split(|&b| b == b'\n').collect();
    let headers = header_map(header, &values);
    let got = client_ip.resolve(peer, &headers);
    if let Err(broken) = check_walk(header, peer, &headers, got) {
        panic!("{broken}");
    }

    // Forged bytes on the left change nothing.
    if trusted(peer) {
        let mut forged = values[0].to_vec();
        forged.extend_from_slice(b", ");
        forged.extend_from_slice(client_element.as_bytes());
        let headers = header_map(header, &[forged]);
        if !headers.is_empty() {
            let client: IpAddr = "203.0.113.7".parse().unwrap();
            assert_eq!(client_ip.resolve(peer, &headers), client, "{headers:?}");
        }
    }
});
