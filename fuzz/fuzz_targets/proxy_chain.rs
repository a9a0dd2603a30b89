//! Proxy chains as trusted proxies write them, against a model of the walk
//! (the structured twin of `tests/key_proptest.rs`'s model test).
//!
//! Input: one byte for the header, a peer, then hops of 6 bytes each (kind,
//! style, 4 address bytes; IPv6 addresses are made from them), cut into up to
//! three fields. Every form a proxy writes (ports, brackets, quotes, extra
//! `Forwarded` parameters, spaces and tabs, unusable entries) is produced; the
//! walk must give exactly the model's client.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_freqlimit::key::{ClientIp, ProxyHeader};

#[derive(Debug)]
enum Hop {
    Addr(IpAddr, u8),
    Unusable(u8),
    Empty,
}

fn trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
    }
}

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

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (header, name) = match data[0] % 3 {
        0 => (ProxyHeader::XForwardedFor, "x-forwarded-for"),
        1 => (ProxyHeader::Forwarded, "forwarded"),
        _ => (ProxyHeader::XRealIp, "x-real-ip"),
    };
    let peer = address(data[1], &data[2..6]);
    let cuts = [usize::from(data[6] % 25), usize::from(data[7] % 25)];
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

    let mut fields = vec![String::new()];
    for (i, hop) in hops.iter().enumerate() {
        let cut = i > 0 && cuts.contains(&i);
        if cut {
            fields.push(String::new());
        }
        let field = fields.last_mut().unwrap();
        if i > 0 && !cut {
            field.push(',');
        }
        field.push_str(&write_hop(header, hop));
    }
    let mut headers = HeaderMap::new();
    for field in &fields {
        headers.append(name, HeaderValue::from_str(field).unwrap());
    }
    let client_ip = ClientIp::try_behind_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
        .unwrap()
        .header(header);
    assert_eq!(
        client_ip.resolve(peer, &headers),
        model(peer, &hops),
        "{headers:?}"
    );
});
