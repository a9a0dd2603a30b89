//! The proxy-header walk as a model: the hops trusted proxies write, how they
//! write them, and the client the walk must find. One copy, shared by the
//! property tests (`tests/key/proxy_walk.rs`) and the libFuzzer targets
//! (`fuzz/fuzz_targets/proxy_chain.rs`, `proxy_headers.rs`, which include this
//! file with `#[path]`): it needs only `std`, `http` and the crate's `key`
//! module.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue};
use tower_freqlimit::key::{ClientIp, ProxyHeader};

/// The proxies every test and fuzz target trusts.
pub const TRUSTED: [&str; 2] = ["10.0.0.0/8", "2001:db8:ffff::/48"];

/// Whether `ip` is in [`TRUSTED`] (IPv4-mapped addresses included).
pub fn trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
    }
}

/// `ClientIp` behind [`TRUSTED`], reading `header`.
pub fn client_ip(header: ProxyHeader) -> ClientIp {
    ClientIp::try_behind_proxies(TRUSTED)
        .unwrap()
        .header(header)
}

/// The header field `header` is read from.
pub fn name(header: ProxyHeader) -> &'static str {
    match header {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
        _ => "x-real-ip",
    }
}

/// Every address that could be read out of `bytes`: each maximal run of
/// address characters, and each such run cut at its last `:` (an IPv4 address
/// with a port). What the parser returns from a header must be one of these.
pub fn written_addresses(bytes: &[u8]) -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    let is_addr_char = |b: &u8| b.is_ascii_hexdigit() || *b == b':' || *b == b'.';
    for run in bytes.split(|b| !is_addr_char(b)) {
        let Ok(text) = std::str::from_utf8(run) else {
            continue;
        };
        if let Ok(ip) = text.parse::<IpAddr>() {
            found.insert(ip.to_canonical());
        }
        if let Some((host, _port)) = text.rsplit_once(':')
            && let Ok(ip) = host.parse::<Ipv4Addr>()
        {
            found.insert(IpAddr::V4(ip));
        }
    }
    found
}

/// Every address written in the `header` fields of `headers` (see
/// [`written_addresses`]).
pub fn written_in(header: ProxyHeader, headers: &HeaderMap) -> HashSet<IpAddr> {
    let mut written = HashSet::new();
    for value in headers.get_all(name(header)) {
        written.extend(written_addresses(value.as_bytes()));
    }
    written
}

/// Checks what the walk returned (`got`) for `peer` sending `headers`, read as
/// `header`: a canonical address (IPv4-mapped IPv6 is returned as IPv4); an
/// untrusted peer itself, whatever it sent; otherwise the peer or an address
/// written in the header read. `Err` says which rule `got` breaks.
pub fn check_walk(
    header: ProxyHeader,
    peer: IpAddr,
    headers: &HeaderMap,
    got: IpAddr,
) -> Result<(), String> {
    let peer = peer.to_canonical();
    if got != got.to_canonical() {
        return Err(format!("{got} is not canonical"));
    }
    if !trusted(peer) {
        if got != peer {
            return Err(format!("{got} is not the untrusted peer {peer}"));
        }
    } else if got != peer && !written_in(header, headers).contains(&got) {
        return Err(format!("{got} is not in {headers:?}"));
    }
    Ok(())
}

/// `values` as fields of `header`, in order. Bytes a header value cannot hold
/// (CR, LF, NUL...) never reach a server: a value holding them is left out.
pub fn header_map<V: AsRef<[u8]>>(header: ProxyHeader, values: &[V]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value.as_ref()) {
            map.append(name(header), value);
        }
    }
    map
}

/// One element of a chain, as a proxy would write it.
#[derive(Debug, Clone)]
pub enum Hop {
    Addr(IpAddr, u8),
    Unusable(u8),
    Empty,
}

/// `hop` written in `header`'s syntax, in one of several styles.
pub fn write_hop(header: ProxyHeader, hop: &Hop) -> String {
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

/// The walk, on the hops themselves: the client `ClientIp` must find when
/// `peer` sends `hops`.
pub fn model(peer: IpAddr, hops: &[Hop]) -> IpAddr {
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

/// The hops written as header fields: comma-separated, a new field starting at
/// each hop whose index is in `cuts` (a cut at `hops.len()` leaves an empty
/// last field).
pub fn write_chain(header: ProxyHeader, hops: &[Hop], cuts: &[usize]) -> Vec<Vec<u8>> {
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
