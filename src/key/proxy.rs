//! The proxy headers (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`), read from
//! the right, and the walk that finds the client in them.
//!
//! Nothing here allocates or panics, whatever the bytes: a header is a list of
//! elements, split from its right end (respecting `Forwarded`'s quoted
//! strings), each element is parsed on its own, and the walk stops at the
//! first element that is not a trusted proxy's address. Bytes to the left of
//! that element, which the client wrote, are never looked at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderValue;
use http::header::{FORWARDED, GetAll, HeaderName};

use super::cidr::{mask_v4, mask_v6};

/// A header that proxies use to pass the client's address on.
///
/// Trust only the header your own proxies set, and make sure they append to it
/// (or overwrite it): a header your proxies do not touch is written by the
/// client, and reads whatever the client likes.
///
/// | header | what a proxy writes | example |
/// |---|---|---|
/// | [`XForwardedFor`](Self::XForwardedFor) | appends its peer's address | `X-Forwarded-For: 203.0.113.7, 10.0.0.2` |
/// | [`Forwarded`](Self::Forwarded) ([RFC 7239](https://www.rfc-editor.org/rfc/rfc7239)) | appends an element with `for=` | `Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::2]:443"` |
/// | [`XRealIp`](Self::XRealIp) | sets its peer's address | `X-Real-IP: 203.0.113.7` |
///
/// ```
/// use tower_freqlimit::key::ProxyHeader;
///
/// assert_eq!(ProxyHeader::Forwarded.name(), "forwarded");
/// assert_eq!(ProxyHeader::XForwardedFor.name(), "x-forwarded-for");
/// assert_eq!(ProxyHeader::XRealIp.name(), "x-real-ip");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For`: a comma-separated list of addresses, each proxy
    /// appending the address it received the request from. Several
    /// `X-Forwarded-For` fields are one list, in order. Elements may carry a
    /// port (`203.0.113.7:41234`, `[2001:db8::7]:443`); IPv6 may be bare
    /// (`2001:db8::7`) or bracketed.
    XForwardedFor,
    /// `Forwarded` (RFC 7239): a comma-separated list of elements, each a
    /// `;`-separated list of `name=value` pairs, of which `for=` is the
    /// address. Values may be quoted (`for="[2001:db8::7]:443"`). An element
    /// with no `for`, or whose `for` is `unknown` or an obfuscated identifier
    /// (`_hidden`), names no address: an unusable hop.
    Forwarded,
    /// `X-Real-IP`: one address, set by the proxy (nginx's
    /// `proxy_set_header X-Real-IP $remote_addr`). Read like
    /// `X-Forwarded-For`, so several fields or a list are walked from the right.
    XRealIp,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl ProxyHeader {
    /// The header's name, lowercase.
    #[must_use]
    pub fn name(&self) -> HeaderName {
        match self {
            Self::XForwardedFor => X_FORWARDED_FOR,
            Self::Forwarded => FORWARDED,
            Self::XRealIp => X_REAL_IP,
        }
    }
}

/// At most this many list elements of a header are walked, from its right end.
pub(crate) const MAX_HOPS: usize = 32;
/// At most this many bytes of a header are read, from its right end.
pub(crate) const MAX_BYTES: usize = 4096;
/// A node (`for=` value, list element) longer than this is not an address.
const MAX_NODE: usize = 64;

/// The trusted proxies' networks, as masks ready to compare.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trusted {
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

impl Trusted {
    pub(crate) fn new(networks: impl IntoIterator<Item = super::Cidr>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in networks {
            match net.addr() {
                IpAddr::V4(addr) => {
                    let mask = mask_v4(net.prefix_len());
                    v4.push((addr.to_bits() & mask, mask));
                }
                IpAddr::V6(addr) => {
                    let mask = mask_v6(net.prefix_len());
                    v6.push((addr.to_bits() & mask, mask));
                }
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        Self {
            v4: v4.into(),
            v6: v6.into(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` (already canonical: IPv4-mapped taken as IPv4) is trusted.
    #[inline]
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let bits = v4.to_bits();
                self.v4.iter().any(|&(net, mask)| bits & mask == net)
            }
            IpAddr::V6(v6) => {
                let bits = v6.to_bits();
                self.v6.iter().any(|&(net, mask)| bits & mask == net)
            }
        }
    }
}

/// One list element, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// Blank: skipped, as HTTP list syntax allows.
    Empty,
    /// An address (canonical).
    Addr(IpAddr),
    /// Not an address: `unknown`, obfuscated, malformed, or past the limits.
    Unusable,
}

/// The client behind a trusted `peer` (canonical), from the `fields` of
/// `header`: walking from the right, the first address that is not trusted;
/// or, when the walk ends (an unusable hop, the start of the list, the
/// limits), the last trusted address it reached (the peer itself if none).
#[inline]
pub(crate) fn walk(
    fields: GetAll<'_, HeaderValue>,
    header: ProxyHeader,
    peer: IpAddr,
    trusted: &Trusted,
) -> IpAddr {
    let mut last_trusted = peer;
    let mut hops = 0usize;
    let mut budget = MAX_BYTES;
    for value in fields.iter().rev() {
        let mut rest = value.as_bytes();
        loop {
            let Some((element, before)) = split_last(rest, header, budget) else {
                return last_trusted;
            };
            // The element and its separator.
            budget -= rest.len() - before.map_or(0, <[u8]>::len);
            hops += 1;
            if hops > MAX_HOPS {
                return last_trusted;
            }
            match parse_element(element, header) {
                Hop::Empty => {}
                Hop::Unusable => return last_trusted,
                Hop::Addr(ip) if trusted.contains(ip) => last_trusted = ip,
                Hop::Addr(ip) => return ip,
            }
            match before {
                Some(before) => rest = before,
                None => break,
            }
        }
    }
    last_trusted
}

/// Splits `bytes` at its last list separator (a comma, outside quoted strings
/// for `Forwarded`): `(last element, what comes before the comma)`, `None`
/// before when there is no comma. `None` if the element does not end within
/// `budget` bytes.
fn split_last(bytes: &[u8], header: ProxyHeader, budget: usize) -> Option<(&[u8], Option<&[u8]>)> {
    let floor = bytes.len().saturating_sub(budget);
    let quoted = header == ProxyHeader::Forwarded;
    let mut in_quote = false;
    let mut i = bytes.len();
    while i > floor {
        i -= 1;
        match bytes[i] {
            b'"' if quoted && !escaped(&bytes[floor..i]) => in_quote = !in_quote,
            b',' if !in_quote => return Some((&bytes[i + 1..], Some(&bytes[..i]))),
            _ => {}
        }
    }
    // The whole value is one element, if it was all within the budget.
    (floor == 0).then_some((bytes, None))
}

/// Whether a quote preceded by `before` is escaped: an odd run of backslashes.
fn escaped(before: &[u8]) -> bool {
    before.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// Parses one list element of `header`.
pub(crate) fn parse_element(element: &[u8], header: ProxyHeader) -> Hop {
    let element = trim(element);
    if element.is_empty() {
        return Hop::Empty;
    }
    let node = match header {
        ProxyHeader::XForwardedFor | ProxyHeader::XRealIp => element,
        ProxyHeader::Forwarded => match forwarded_for(element) {
            Some(node) => node,
            None => return Hop::Unusable,
        },
    };
    match parse_node(node, header == ProxyHeader::Forwarded) {
        Some(ip) => Hop::Addr(ip.to_canonical()),
        None => Hop::Unusable,
    }
}

/// The `for=` value of a `Forwarded` element, unquoted; `None` if the element
/// is malformed, has no `for`, or has two.
///
/// The element must be well-formed as a whole, read from the left: `;`-separated
/// `name=value` pairs, each name a token and each value a token or one
/// complete quoted string. Elements are split from the right, and a malformed
/// one (an unbalanced quote) can shift where that split falls; checking the
/// whole element from the left makes such a piece unusable rather than a
/// different, well-formed-looking element.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    let mut rest = element;
    loop {
        let (pair, next) = split_pair(rest);
        let pair = trim(pair);
        if !pair.is_empty() {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let name = trim(&pair[..eq]);
            let value = trim(&pair[eq + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) || !valid_value(value) {
                return None;
            }
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    let value = found?;
    match value.strip_prefix(b"\"") {
        Some(quoted) => {
            let inner = quoted.strip_suffix(b"\"")?;
            // An address needs no escapes; a backslash inside is not one.
            if inner.contains(&b'\\') {
                return None;
            }
            Some(inner)
        }
        None => Some(value),
    }
}

/// A `Forwarded` value: a token (with `:`, `[` and `]` allowed, for unquoted
/// addresses that should have been quoted), or exactly one quoted string.
fn valid_value(value: &[u8]) -> bool {
    match value.split_first() {
        None => false,
        // The closing quote must end the value.
        Some((b'"', rest)) => closing_quote(rest) == Some(rest.len().wrapping_sub(1)),
        Some(_) => value
            .iter()
            .all(|&b| is_tchar(b) || matches!(b, b':' | b'[' | b']')),
    }
}

/// A token character (RFC 9110).
#[inline]
fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'0'..=b'9'
            | b'a'..=b'z'
            | b'A'..=b'Z'
            | b'!'
            | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

/// Splits a `Forwarded` element at its first `;` outside quoted strings.
fn split_pair(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match closing_quote(&bytes[i + 1..]) {
                Some(end) => i += end + 1,
                // An unbalanced quote takes the rest of the element.
                None => break,
            },
            b';' => return (&bytes[..i], Some(&bytes[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (bytes, None)
}

/// Where the quoted string whose opening quote came just before `rest` ends:
/// the index in `rest` of its closing quote (a backslash escapes the next
/// byte); `None` if it does not end. The one left-to-right reading of quoted
/// strings (`split_last` reads from the right, past `escaped`).
fn closing_quote(rest: &[u8]) -> Option<usize> {
    let mut escape = false;
    for (i, &b) in rest.iter().enumerate() {
        if escape {
            escape = false;
        } else if b == b'\\' {
            escape = true;
        } else if b == b'"' {
            return Some(i);
        }
    }
    None
}

/// An address with an optional port: `203.0.113.7`, `203.0.113.7:80`,
/// `2001:db8::7`, `[2001:db8::7]`, `[2001:db8::7]:443`; in `Forwarded`, the
/// port may be obfuscated (`_p1`). Anything else (`unknown`, `_hidden`, a host
/// name, a zone index) is `None`.
fn parse_node(node: &[u8], forwarded: bool) -> Option<IpAddr> {
    if node.len() > MAX_NODE {
        return None;
    }
    if let Some(bracketed) = node.strip_prefix(b"[") {
        let close = bracketed.iter().position(|&b| b == b']')?;
        let ip: Ipv6Addr = parse_ascii(&bracketed[..close])?;
        return match &bracketed[close + 1..] {
            [] => Some(IpAddr::V6(ip)),
            [b':', port @ ..] if valid_port(port, forwarded) => Some(IpAddr::V6(ip)),
            _ => None,
        };
    }
    if let Some(ip) = parse_ascii::<IpAddr>(node) {
        return Some(ip);
    }
    // IPv4 with a port (IPv6 with a port must be bracketed).
    let colon = node.iter().position(|&b| b == b':')?;
    let ip: Ipv4Addr = parse_ascii(&node[..colon])?;
    valid_port(&node[colon + 1..], forwarded).then_some(IpAddr::V4(ip))
}

fn valid_port(port: &[u8], forwarded: bool) -> bool {
    let decimal = (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && parse_ascii::<u16>(port).is_some();
    let obfuscated = forwarded
        && port.len() >= 2
        && port[0] == b'_'
        && port[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    decimal || obfuscated
}

fn parse_ascii<T: FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Hop {
        Hop::Addr(s.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_elements() {
        let cases: &[(&str, Hop)] = &[
            ("203.0.113.7", addr("203.0.113.7")),
            ("  203.0.113.7\t", addr("203.0.113.7")),
            ("203.0.113.7:41234", addr("203.0.113.7")),
            ("203.0.113.7:0", addr("203.0.113.7")),
            ("203.0.113.7:65536", Hop::Unusable),
            ("203.0.113.7:", Hop::Unusable),
            ("203.0.113.7:_p", Hop::Unusable),
            ("2001:db8::7", addr("2001:db8::7")),
            ("[2001:db8::7]", addr("2001:db8::7")),
            ("[2001:db8::7]:443", addr("2001:db8::7")),
            ("[2001:db8::7]443", Hop::Unusable),
            ("[203.0.113.7]", Hop::Unusable),
            ("::ffff:203.0.113.7", addr("203.0.113.7")),
            ("[::ffff:203.0.113.7]:80", addr("203.0.113.7")),
            ("fe80::1%eth0", Hop::Unusable),
            ("unknown", Hop::Unusable),
            ("_hidden", Hop::Unusable),
            ("example.com", Hop::Unusable),
            ("203.0.113.07", Hop::Unusable),
            ("0x7f.1", Hop::Unusable),
            ("203.0.113.7 203.0.113.8", Hop::Unusable),
            ("\"203.0.113.7\"", Hop::Unusable),
            ("", Hop::Empty),
            ("   ", Hop::Empty),
        ];
        for (element, expected) in cases {
            assert_eq!(
                parse_element(element.as_bytes(), ProxyHeader::XForwardedFor),
                *expected,
                "{element:?}"
            );
        }
        // Longer than any address: not one, without parsing it.
        let long = format!("1.2.3.4{}", "0".repeat(100));
        assert_eq!(
            parse_element(long.as_bytes(), ProxyHeader::XForwardedFor),
            Hop::Unusable
        );
        let padded = format!("[{}::1]", "0".repeat(70));
        assert_eq!(
            parse_element(padded.as_bytes(), ProxyHeader::XForwardedFor),
            Hop::Unusable
        );
        assert_eq!(
            parse_element(b"\xff\xfe", ProxyHeader::XForwardedFor),
            Hop::Unusable
        );
    }

    #[test]
    fn forwarded_elements() {
        let cases: &[(&str, Hop)] = &[
            ("for=203.0.113.7", addr("203.0.113.7")),
            ("For=203.0.113.7", addr("203.0.113.7")),
            ("for=\"203.0.113.7\"", addr("203.0.113.7")),
            ("for=\"203.0.113.7:8080\"", addr("203.0.113.7")),
            (
                "for=\"[2001:db8:cafe::17]:4711\"",
                addr("2001:db8:cafe::17"),
            ),
            ("for=\"[2001:db8:cafe::17]\"", addr("2001:db8:cafe::17")),
            ("for=\"[2001:db8::17]:_p1\"", addr("2001:db8::17")),
            (
                "for=203.0.113.7;proto=https;by=10.0.0.1",
                addr("203.0.113.7"),
            ),
            (
                "proto=https; for=203.0.113.7 ;by=10.0.0.1",
                addr("203.0.113.7"),
            ),
            ("host=\"a;b,c\";for=203.0.113.7", addr("203.0.113.7")),
            ("for=203.0.113.7;", addr("203.0.113.7")),
            ("for=unknown", Hop::Unusable),
            ("for=\"unknown\"", Hop::Unusable),
            ("for=_hidden", Hop::Unusable),
            ("for=\"_SEVKISEK\"", Hop::Unusable),
            ("by=10.0.0.1;proto=https", Hop::Unusable),
            ("for=203.0.113.7;for=198.51.100.1", Hop::Unusable),
            ("for=", Hop::Unusable),
            ("=203.0.113.7", Hop::Unusable),
            ("for203.0.113.7", Hop::Unusable),
            ("for=\"203.0.113.7", Hop::Unusable),
            ("for=\"203.0.\\113.7\"", Hop::Unusable),
            ("for=\"\"", Hop::Unusable),
            ("for=\"", Hop::Unusable),
            ("for=2001:db8::7", addr("2001:db8::7")),
            ("for=\"\\\"\"", Hop::Unusable),
            ("by=\"a\\\"b\";for=203.0.113.7", addr("203.0.113.7")),
            ("for=\"203.0.113.7\"x", Hop::Unusable),
            ("for=203.0.113.7 x", Hop::Unusable),
            ("for=\"203.0.113.7\";by=\"a\" ,for=\"x", Hop::Unusable),
            ("for=6.6.6.6;\", for=\"x", Hop::Unusable),
            ("f\"r=1.2.3.4", Hop::Unusable),
            ("", Hop::Empty),
        ];
        for (element, expected) in cases {
            assert_eq!(
                parse_element(element.as_bytes(), ProxyHeader::Forwarded),
                *expected,
                "{element:?}"
            );
        }
    }

    #[test]
    fn splits_from_the_right_respecting_quotes() {
        let fwd = ProxyHeader::Forwarded;
        let xff = ProxyHeader::XForwardedFor;
        assert_eq!(
            split_last(b"a, b", xff, MAX_BYTES),
            Some((&b" b"[..], Some(&b"a"[..])))
        );
        assert_eq!(split_last(b"a", xff, MAX_BYTES), Some((&b"a"[..], None)));
        assert_eq!(
            split_last(b"for=1.2.3.4, host=\"x,y\";for=5.6.7.8", fwd, MAX_BYTES),
            Some((&b" host=\"x,y\";for=5.6.7.8"[..], Some(&b"for=1.2.3.4"[..])))
        );
        // An escaped quote does not close the string; an escaped backslash does not escape.
        assert_eq!(
            split_last(b"a, x=\"p\\\",q\"", fwd, MAX_BYTES),
            Some((&b" x=\"p\\\",q\""[..], Some(&b"a"[..])))
        );
        assert_eq!(
            split_last(b"a, x=\"p\\\\\",q", fwd, MAX_BYTES),
            Some((&b"q"[..], Some(&b"a, x=\"p\\\\\""[..])))
        );
        // An unbalanced quote takes the rest of the value into one element.
        assert_eq!(
            split_last(b"a, x=\"b", fwd, MAX_BYTES),
            Some((&b"a, x=\"b"[..], None))
        );
        // Past the budget: no element.
        assert_eq!(split_last(b"aaaa", xff, 3), None);
        assert_eq!(
            split_last(b"a,bb", xff, 3),
            Some((&b"bb"[..], Some(&b"a"[..])))
        );
    }

    #[test]
    fn trims_spaces_and_tabs_only() {
        assert_eq!(trim(b" \t a b \t "), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
        assert_eq!(trim(b"\na\n"), b"\na\n");
    }
}
