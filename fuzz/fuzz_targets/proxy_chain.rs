//! Proxy chains as trusted proxies write them, against a model of the walk
//! (the structured twin of `tests/key/proxy_walk.rs`'s model test; the model
//! is `tests/support/proxy_model.rs`, shared with it).
//!
//! Input: one byte for the header, a peer, then hops of 6 bytes each (kind,
//! style, 4 address bytes; IPv6 addresses are made from them), cut into up to
//! three fields. Every form a proxy writes (ports, brackets, quotes, extra
//! `Forwarded` parameters, spaces and tabs, unusable entries) is produced; the
//! walk must give exactly the model's client.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use tower_freqlimit::key::ProxyHeader;

#[allow(dead_code)]
#[path = "../../tests/support/proxy_model.rs"]
mod proxy_model;

use proxy_model::{Hop, client_ip, header_map, model, name, write_chain};

fn address(kind: u8, b: &[u8]) -> IpAddr {
    let v4 = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    match kind % 5 {
        0 => IpAddr::V4(v4),
        1 => IpAddr::V4(Ipv4Addr::new(10, b[1], b[2], b[3])),
        2 => IpAddr::V6(v4.to_ipv6_mapped()),
        3 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            u16::from(b[0]),
            u16::from(b[1]),
        )),
        _ => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(b[0]),
            u16::from(b[1]),
            0,
            0,
            u16::from(b[2]),
            u16::from(b[3]),
        )),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let header = match data[0] % 3 {
        0 => ProxyHeader::XForwardedFor,
        1 => ProxyHeader::Forwarded,
        _ => ProxyHeader::XRealIp,
    };
    let peer = address(data[1], &data[2..6]);
    // At most 24 hops: within the walk's 32-element limit.
    let hops: Vec<Hop> = data[8..]
        .chunks_exact(6)
        .take(24)
        .map(|c| match c[0] % 8 {
            0 => Hop::Unusable(c[1]),
            1 => Hop::Empty,
            kind => Hop::Addr(address(kind, &c[2..6]), c[1]),
        })
        .collect();
    // Up to three fields: a new one starts at each cut between two hops.
    let cuts: Vec<usize> = [data[6], data[7]]
        .into_iter()
        .map(|b| usize::from(b % 25))
        .filter(|&cut| cut > 0 && cut < hops.len())
        .collect();

    let fields = write_chain(header, &hops, &cuts);
    let headers = header_map(header, &fields);
    assert_eq!(headers.get_all(name(header)).iter().count(), fields.len());
    assert_eq!(
        client_ip(header).resolve(peer, &headers),
        model(peer, &hops),
        "{headers:?}"
    );
});
