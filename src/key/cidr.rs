//! [`Cidr`]: an IP network, for the list of trusted proxies.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), as used for
/// [`ClientIp::behind_proxies`](super::ClientIp::behind_proxies).
///
/// Parsing is strict, so that a typo in a list of trusted proxies is an error
/// rather than a different network:
///
/// * an address alone is a single host (`/32` or `/128`);
/// * the prefix length is decimal, at most 32 for IPv4 and 128 for IPv6;
/// * host bits must be zero (`10.0.0.1/8` is refused: did you mean
///   `10.0.0.0/8`, or the host `10.0.0.1/32`?);
/// * an IPv4-mapped IPv6 network with a prefix of 96 or more
///   (`::ffff:10.0.0.0/104`) is the IPv4 network it maps (`10.0.0.0/8`), since
///   addresses are compared after IPv4-mapped IPv6 is taken as IPv4.
///
/// ```
/// use std::net::IpAddr;
/// use tower_freqlimit::key::Cidr;
///
/// let private: Cidr = "10.0.0.0/8".parse()?;
/// assert!(private.contains("10.1.2.3".parse::<IpAddr>()?));
/// assert!(!private.contains("11.0.0.1".parse::<IpAddr>()?));
/// // An IPv4 client seen through a dual-stack socket is still 10.x.
/// assert!(private.contains("::ffff:10.1.2.3".parse::<IpAddr>()?));
///
/// let host: Cidr = "2001:db8::7".parse()?;
/// assert_eq!(host.to_string(), "2001:db8::7/128");
///
/// let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid CIDR "10.0.0.1/8": host bits are set (the network is 10.0.0.0/8; a single host is 10.0.0.1/32)"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network of `addr` with the first `prefix_len` bits fixed.
    ///
    /// # Errors
    ///
    /// [`CidrError`] if the prefix is longer than the address or host bits
    /// are set.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use tower_freqlimit::key::Cidr;
    ///
    /// let net = Cidr::new(Ipv4Addr::new(192, 168, 0, 0).into(), 16)?;
    /// assert_eq!(net.to_string(), "192.168.0.0/16");
    /// assert!(Cidr::new(Ipv4Addr::new(192, 168, 0, 0).into(), 33).is_err());
    /// # Ok::<(), tower_freqlimit::key::CidrError>(())
    /// ```
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        let input = || format!("{addr}/{prefix_len}");
        Self::checked(addr, prefix_len, input)
    }

    fn checked(
        addr: IpAddr,
        prefix_len: u8,
        input: impl FnOnce() -> String,
    ) -> Result<Self, CidrError> {
        // An IPv4-mapped network is the IPv4 network it maps.
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if (96..=128).contains(&prefix_len) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(CidrError {
                input: input(),
                kind: CidrErrorKind::PrefixTooLong { prefix_len, max },
            });
        }
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(CidrError {
                input: input(),
                kind: CidrErrorKind::HostBitsSet {
                    network: Self {
                        addr: network,
                        prefix_len,
                    },
                    host: addr,
                },
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The network address (host bits zero).
    #[must_use]
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that are fixed.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The shortest IPv4 prefix [`ClientIp::behind_proxies`] trusts: a `/8`
    /// is the largest block ever allocated to one organisation.
    ///
    /// [`ClientIp::behind_proxies`]: super::ClientIp::behind_proxies
    pub const MIN_TRUSTED_PREFIX_V4: u8 = 8;

    /// The shortest IPv6 prefix [`ClientIp::behind_proxies`] trusts outside
    /// private space (`fc00::/7`, `fe80::/10`, which any prefix may name): a
    /// `/32` is one provider's allocation; anything broader spans many
    /// networks that clients connect from.
    ///
    /// [`ClientIp::behind_proxies`]: super::ClientIp::behind_proxies
    pub const MIN_TRUSTED_PREFIX_V6: u8 = 32;

    /// Whether trusting this network as proxies would trust clients too:
    /// shorter than [`MIN_TRUSTED_PREFIX_V4`](Self::MIN_TRUSTED_PREFIX_V4) or
    /// [`MIN_TRUSTED_PREFIX_V6`](Self::MIN_TRUSTED_PREFIX_V6) (`0.0.0.0/0`,
    /// `::/0`, and `::ffff:0:0/96`, which is all of IPv4), unless it lies
    /// within IPv6 private space.
    ///
    /// ```
    /// use tower_freqlimit::key::Cidr;
    ///
    /// let broad = |net: &str| net.parse::<Cidr>().unwrap().is_too_broad_to_trust();
    /// assert!(broad("0.0.0.0/0") && broad("::/0") && broad("::ffff:0:0/96") && broad("2000::/3"));
    /// assert!(!broad("10.0.0.0/8") && !broad("2001:db8::/32") && !broad("fd00::/8"));
    /// ```
    #[must_use]
    pub fn is_too_broad_to_trust(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.prefix_len < Self::MIN_TRUSTED_PREFIX_V4,
            IpAddr::V6(addr) => {
                // Unique-local and link-local networks are private whatever their size.
                let private = (self.prefix_len >= 7 && addr.segments()[0] & 0xfe00 == 0xfc00)
                    || (self.prefix_len >= 10 && addr.segments()[0] & 0xffc0 == 0xfe80);
                self.prefix_len < Self::MIN_TRUSTED_PREFIX_V6 && !private
            }
        }
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are taken as the IPv4 address they map.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = || truncated(s);
        let trimmed = s.trim();
        let (addr, prefix_len) = match trimmed.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (trimmed, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError {
            input: input(),
            kind: CidrErrorKind::Address,
        })?;
        let prefix_len = match prefix_len {
            None => max_prefix_len(addr),
            Some(len) => {
                // Decimal digits only: no sign, no spaces, no leading `+`.
                let digits_only = !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit());
                match len.parse::<u8>() {
                    Ok(len) if digits_only => len,
                    _ => {
                        return Err(CidrError {
                            input: input(),
                            kind: CidrErrorKind::PrefixLen,
                        });
                    }
                }
            }
        };
        Self::checked(addr, prefix_len, input)
    }
}

/// At most this much of a bad input is quoted in an error message.
fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

const fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with all but its first `prefix_len` bits zeroed (`prefix_len` at or
/// above the address's length keeps it whole).
#[inline]
pub(crate) fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask_v4(prefix_len))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask_v6(prefix_len))),
    }
}

#[inline]
pub(crate) const fn mask_v4(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        1..=31 => u32::MAX << (32 - prefix_len),
        _ => u32::MAX,
    }
}

#[inline]
pub(crate) const fn mask_v6(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        1..=127 => u128::MAX << (128 - prefix_len),
        _ => u128::MAX,
    }
}

/// A network that is not valid CIDR notation: what was given, and why.
///
/// ```
/// use tower_freqlimit::key::Cidr;
///
/// let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid CIDR "10.0.0.0/33": prefix length 33 is above 32, the maximum for this address"#
/// );
/// assert_eq!(err.input(), "10.0.0.0/33");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError {
    input: String,
    kind: CidrErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CidrErrorKind {
    Address,
    PrefixLen,
    PrefixTooLong { prefix_len: u8, max: u8 },
    HostBitsSet { network: Cidr, host: IpAddr },
    TooBroadToTrust { min: u8 },
}

impl CidrError {
    pub(crate) fn too_broad_to_trust(network: Cidr) -> Self {
        Self {
            input: network.to_string(),
            kind: CidrErrorKind::TooBroadToTrust {
                min: match network.addr {
                    IpAddr::V4(_) => Cidr::MIN_TRUSTED_PREFIX_V4,
                    IpAddr::V6(_) => Cidr::MIN_TRUSTED_PREFIX_V6,
                },
            },
        }
    }

    /// The input that was refused (at most its first 64 bytes).
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR {:?}: ", self.input)?;
        match &self.kind {
            CidrErrorKind::Address => f.write_str("not an IPv4 or IPv6 address"),
            CidrErrorKind::PrefixLen => f.write_str("the prefix length is not a number of bits"),
            CidrErrorKind::PrefixTooLong { prefix_len, max } => write!(
                f,
                "prefix length {prefix_len} is above {max}, the maximum for this address"
            ),
            CidrErrorKind::HostBitsSet { network, host } => write!(
                f,
                "host bits are set (the network is {network}; a single host is {host}/{})",
                max_prefix_len(*host)
            ),
            CidrErrorKind::TooBroadToTrust { min } => write!(
                f,
                "too broad to trust as proxies: shorter than /{min}, it holds addresses \
                 clients connect from, and each could then write its own key; list your \
                 proxies' networks, or call ClientIp::behind_proxies_allowing_broad if \
                 only proxies can reach this server"
            ),
        }
    }
}

impl StdError for CidrError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_hosts() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7", "192.168.1.7/32"),
            (" 172.16.0.0/12 ", "172.16.0.0/12"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("fe80::1", "fe80::1/128"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:192.0.2.1", "192.0.2.1/32"),
        ];
        for (input, shown) in cases {
            let cidr: Cidr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(cidr.to_string(), shown, "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_cidr() {
        let cases = [
            ("", "not an IPv4 or IPv6 address"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.0/", "the prefix length is not a number of bits"),
            ("10.0.0.0/+8", "the prefix length is not a number of bits"),
            ("10.0.0.0/ 8", "the prefix length is not a number of bits"),
            ("10.0.0.0/8/8", "the prefix length is not a number of bits"),
            ("10.0.0.0/256", "the prefix length is not a number of bits"),
            (
                "10.0.0.0/33",
                "prefix length 33 is above 32, the maximum for this address",
            ),
            (
                "::/129",
                "prefix length 129 is above 128, the maximum for this address",
            ),
            (
                "10.0.0.1/8",
                "host bits are set (the network is 10.0.0.0/8; a single host is 10.0.0.1/32)",
            ),
            (
                "2001:db8::1/64",
                "host bits are set (the network is 2001:db8::/64; a single host is 2001:db8::1/128)",
            ),
            ("[::1]/128", "not an IPv4 or IPv6 address"),
            ("fe80::1%eth0/64", "not an IPv4 or IPv6 address"),
        ];
        for (input, why) in cases {
            let err = input.parse::<Cidr>().unwrap_err();
            assert_eq!(err.to_string(), format!("invalid CIDR {input:?}: {why}"));
        }
    }

    #[test]
    fn long_inputs_are_quoted_truncated() {
        let input = "x".repeat(1000);
        let err = input.parse::<Cidr>().unwrap_err();
        assert_eq!(err.input().len(), 64 + 3);
    }

    #[test]
    fn contains_by_prefix() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("9.255.255.255")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("::a00:1"))); // IPv4-compatible, not mapped
        let all_v4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all_v4.contains(ip("1.2.3.4")));
        assert!(!all_v4.contains(ip("2001:db8::1")));
        let v6: Cidr = "2001:db8:1::/48".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1:ffff::1")));
        assert!(!v6.contains(ip("2001:db8:2::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let host: Cidr = "2001:db8::7".parse().unwrap();
        assert!(host.contains(ip("2001:db8::7")));
        assert!(!host.contains(ip("2001:db8::8")));
    }

    #[test]
    fn masks() {
        assert_eq!(mask(ip("10.1.2.3"), 8), ip("10.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 32), ip("10.1.2.3"));
        assert_eq!(mask(ip("10.1.2.3"), 200), ip("10.1.2.3"));
        assert_eq!(mask(ip("2001:db8:a:b:c:d:e:f"), 64), ip("2001:db8:a:b::"));
        assert_eq!(mask(ip("2001:db8:a:b:c:d:e:f"), 56), ip("2001:db8:a::"));
        assert_eq!(
            mask(ip("2001:db8:a:b:c:d:e:f"), 128),
            ip("2001:db8:a:b:c:d:e:f")
        );
        assert_eq!(mask(ip("2001:db8:a:b:c:d:e:f"), 0), ip("::"));
    }
}
