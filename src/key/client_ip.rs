//! [`ClientIp`]: the client's address as a key, from the peer or from the
//! headers of trusted proxies.

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, Request};

use super::cidr::{Cidr, CidrError, mask};
use super::peer::{PeerFn, peer_addr};
use super::proxy::{self, ProxyHeader, Trusted};
use crate::error::KeyNotFound;
use crate::layer::{ExtractKey, KeyLookup};

/// Keys each request by its client's IP address: the peer's, or, behind
/// trusted reverse proxies, the one their headers name. IPv6 clients are
/// grouped by prefix (`/64` by default), IPv4-mapped IPv6 is taken as IPv4.
///
/// The key is an [`IpAddr`] (17 bytes, no allocation): the client's address
/// with its host bits cleared beyond the prefix, so `2001:db8:1:2:a:b:c:d`
/// is keyed as `2001:db8:1:2::` under `/64`.
///
/// # Which address is the client
///
/// * [`ClientIp::peer()`]: the peer's address, headers ignored. Use it when
///   clients connect to the server directly.
/// * [`ClientIp::behind_proxies(networks)`](Self::behind_proxies): when the
///   peer is in one of the trusted `networks`, the proxy header
///   (`X-Forwarded-For` by default, see [`header`](Self::header)) is walked
///   **from the right**: the rightmost address that is not a trusted proxy is
///   the client. A peer that is not trusted is the client, whatever its
///   headers say. The leftmost entry of `X-Forwarded-For` is never believed
///   for what it is: whatever the client sent, to which each proxy appended.
///
/// The walk also ends, and the client is then **the last trusted address it
/// reached** (the peer itself if it stopped at once), when:
///
/// * an element is unusable: `unknown`, an obfuscated `_identifier`, a
///   `Forwarded` element without `for=`, anything that is not an IP address
///   (the walk never skips past it to an address further left, which the
///   client could have written);
/// * the header is exhausted, every hop in it trusted (the client is then the
///   leftmost trusted one);
/// * it has read 4 096 bytes or 32 elements from the right end (longer chains
///   of trusted proxies are not supported; a long header written by a client
///   is to the left of its own address and is never read).
///
/// So a malformed or absent header falls back to the peer (or the trusted
/// proxy that handed it on), and a request never fails for its headers.
///
/// # Example
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_freqlimit::key::{ClientIp, ProxyHeader};
///
/// // Behind a load balancer in 10.0.0.0/8 that appends to X-Forwarded-For.
/// let client_ip = ClientIp::behind_proxies(["10.0.0.0/8".parse()?])?.prefix_v6(56);
///
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.3") // 6.6.6.6: forged by the client
///     .body(())?;
/// req.extensions_mut().insert("10.0.0.2:40000".parse::<SocketAddr>()?); // the balancer
/// assert_eq!(client_ip.key(&req), Some("203.0.113.7".parse::<IpAddr>()?));
///
/// // IPv6 clients count per /56.
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "2001:db8:aa:bb:1:2:3:4")
///     .body(())?;
/// req.extensions_mut().insert("10.0.0.2:40000".parse::<SocketAddr>()?);
/// assert_eq!(client_ip.key(&req), Some("2001:db8:aa::".parse::<IpAddr>()?));
///
/// // Straight from the internet: the peer, whatever it claims.
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "10.0.0.9")
///     .body(())?;
/// req.extensions_mut().insert("198.51.100.4:5555".parse::<SocketAddr>()?);
/// assert_eq!(client_ip.key(&req), Some("198.51.100.4".parse::<IpAddr>()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// In a layer:
///
/// ```
/// use std::net::IpAddr;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::key::ClientIp;
/// use tower_freqlimit::layer::FreqLimitLayer;
/// use tower_freqlimit::FreqLimitParams;
///
/// let backend = InMemoryBackend::<IpAddr>::builder().max_keys(100_000).build();
/// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), backend)
///     .key(ClientIp::try_behind_proxies(["10.0.0.0/8", "fd00::/8"])?)
///     .http_responses();
/// # let _ = layer;
/// # Ok::<(), tower_freqlimit::key::CidrError>(())
/// ```
#[derive(Clone)]
pub struct ClientIp {
    trusted: Trusted,
    /// The headers to read, in precedence order; the first present is walked.
    headers: [Option<ProxyHeader>; 3],
    prefix_v4: u8,
    prefix_v6: u8,
    peer: PeerFn,
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .field(
                "headers",
                &self.headers.iter().flatten().collect::<Vec<_>>(),
            )
            .field("prefix_v4", &self.prefix_v4)
            .field("prefix_v6", &self.prefix_v6)
            .finish_non_exhaustive()
    }
}

impl ClientIp {
    /// The default IPv6 prefix: one `/64` is one subscriber's LAN, which a
    /// single host can fill with addresses at will.
    pub const DEFAULT_PREFIX_V6: u8 = 64;

    /// At most this many elements of a proxy header are walked, from the right.
    pub const MAX_HOPS: usize = proxy::MAX_HOPS;

    /// At most this many bytes of a proxy header are read, from the right.
    pub const MAX_HEADER_BYTES: usize = proxy::MAX_BYTES;

    /// The peer's address, and no header: for servers that clients reach
    /// directly.
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// let mut req = http::Request::builder()
    ///     .header("x-forwarded-for", "1.2.3.4")
    ///     .body(())?;
    /// req.extensions_mut().insert("198.51.100.4:5555".parse::<SocketAddr>()?);
    /// assert_eq!(ClientIp::peer().key(&req), Some("198.51.100.4".parse::<IpAddr>()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn peer() -> Self {
        Self {
            trusted: Trusted::default(),
            headers: [Some(ProxyHeader::XForwardedFor), None, None],
            prefix_v4: 32,
            prefix_v6: Self::DEFAULT_PREFIX_V6,
            peer: peer_addr,
        }
    }

    /// Behind reverse proxies in `networks`: their `X-Forwarded-For` is read
    /// (see [`header`](Self::header) for the others), and only from a peer in
    /// one of these networks.
    ///
    /// List every proxy that may connect to this server *and* every proxy
    /// further out whose appended address you trust (a CDN in front of your
    /// load balancer). Never list networks that clients can connect from.
    ///
    /// # Errors
    ///
    /// [`CidrError`] for a network too broad to be only proxies
    /// ([`Cidr::is_too_broad_to_trust`]: `0.0.0.0/0`, `::/0`, `::ffff:0:0/96`,
    /// an IPv4 prefix under `/8`, a public IPv6 prefix under `/32`). Trusting
    /// one lets every client in it write its own key, so one client gets as
    /// many buckets as it likes. [`behind_proxies_allowing_broad`] is the
    /// explicit opt-in.
    ///
    /// ```
    /// use tower_freqlimit::key::{Cidr, ClientIp};
    ///
    /// let networks: Vec<Cidr> = vec!["10.0.0.0/8".parse()?, "2001:db8:ffff::/48".parse()?];
    /// let client_ip = ClientIp::behind_proxies(networks)?;
    /// assert!(client_ip.trusts("10.1.2.3".parse()?));
    /// assert!(!client_ip.trusts("192.0.2.1".parse()?));
    ///
    /// let everyone: Cidr = "0.0.0.0/0".parse()?;
    /// assert!(ClientIp::behind_proxies([everyone]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`behind_proxies_allowing_broad`]: Self::behind_proxies_allowing_broad
    pub fn behind_proxies(networks: impl IntoIterator<Item = Cidr>) -> Result<Self, CidrError> {
        let networks: Vec<Cidr> = networks.into_iter().collect();
        if let Some(broad) = networks.iter().find(|net| net.is_too_broad_to_trust()) {
            return Err(CidrError::too_broad_to_trust(*broad));
        }
        Ok(Self::behind_proxies_allowing_broad(networks))
    }

    /// [`behind_proxies`](Self::behind_proxies) without the check on broad
    /// networks: `0.0.0.0/0` and `::/0` are trusted if listed.
    ///
    /// Only for a server that nothing but proxies can reach, whatever their
    /// address (a firewall or a private network decides who connects). With a
    /// client able to connect, every address it writes in the header becomes
    /// a key of its own.
    ///
    /// ```
    /// use tower_freqlimit::key::{Cidr, ClientIp};
    ///
    /// // Behind a firewall that only lets the load balancers in.
    /// let anywhere: Cidr = "0.0.0.0/0".parse()?;
    /// let client_ip = ClientIp::behind_proxies_allowing_broad([anywhere]);
    /// assert!(client_ip.trusts("192.0.2.1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn behind_proxies_allowing_broad(networks: impl IntoIterator<Item = Cidr>) -> Self {
        Self {
            trusted: Trusted::new(networks),
            ..Self::peer()
        }
    }

    /// [`behind_proxies`](Self::behind_proxies) with networks as text, as a
    /// configuration file has them.
    ///
    /// # Errors
    ///
    /// The first [`CidrError`]: an address that does not parse, a prefix too
    /// long, host bits set, a network too broad to trust.
    ///
    /// ```
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// assert!(ClientIp::try_behind_proxies(["10.0.0.0/8", "127.0.0.1"]).is_ok());
    /// let err = ClientIp::try_behind_proxies(["10.0.0.0/8", "10.0.0.0/33"]).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"invalid CIDR "10.0.0.0/33": prefix length 33 is above 32, the maximum for this address"#
    /// );
    /// let err = ClientIp::try_behind_proxies(["::ffff:0:0/96"]).unwrap_err();
    /// assert!(err.to_string().starts_with(r#"invalid CIDR "0.0.0.0/0": too broad to trust"#));
    /// ```
    pub fn try_behind_proxies<I, S>(networks: I) -> Result<Self, CidrError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let networks = networks
            .into_iter()
            .map(|net| net.as_ref().parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()?;
        Self::behind_proxies(networks)
    }

    /// Reads `header` only (the default is [`ProxyHeader::XForwardedFor`]).
    ///
    /// Pick the header your proxies set; any other is the client's to write.
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_freqlimit::key::{ClientIp, ProxyHeader};
    ///
    /// let client_ip = ClientIp::try_behind_proxies(["10.0.0.0/8"])?.header(ProxyHeader::Forwarded);
    /// let mut req = http::Request::builder()
    ///     .header("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)
    ///     .header("x-forwarded-for", "1.2.3.4") // not read
    ///     .body(())?;
    /// req.extensions_mut().insert("10.0.0.2:40000".parse::<SocketAddr>()?);
    /// assert_eq!(client_ip.client_ip(&req), Some("2001:db8::7".parse::<IpAddr>()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn header(mut self, header: ProxyHeader) -> Self {
        self.headers = [Some(header), None, None];
        self
    }

    /// Reads the first of `headers` (in this order) that the request has, and
    /// only that one. The order is the precedence: with
    /// `[Forwarded, XForwardedFor]`, a request with both is read from
    /// `Forwarded`.
    ///
    /// Only list several if **every** trusted proxy appends to **each** of
    /// them (or strips them): a header your proxies leave alone is the
    /// client's, and one with higher precedence lets the client choose its own
    /// address. Duplicates are ignored; an empty list reads no header (like
    /// [`peer`](Self::peer), but trusting the peer for nothing).
    ///
    /// ```
    /// use tower_freqlimit::key::{ClientIp, ProxyHeader};
    ///
    /// let client_ip = ClientIp::try_behind_proxies(["10.0.0.0/8"])?
    ///     .headers([ProxyHeader::Forwarded, ProxyHeader::XForwardedFor]);
    /// # let _ = client_ip;
    /// # Ok::<(), tower_freqlimit::key::CidrError>(())
    /// ```
    #[must_use]
    pub fn headers(mut self, headers: impl IntoIterator<Item = ProxyHeader>) -> Self {
        let mut list = [None; 3];
        let mut len = 0;
        for header in headers {
            if len < list.len() && !list[..len].contains(&Some(header)) {
                list[len] = Some(header);
                len += 1;
            }
        }
        self.headers = list;
        self
    }

    /// Groups IPv6 clients by their first `bits` bits (default 64; 56 or 48
    /// for networks that hand each subscriber a larger prefix; 128 for one
    /// bucket per address). Values above 128 are taken as 128.
    ///
    /// One host can use every address of its `/64` (and often of a `/56`), so
    /// keying IPv6 per address lets it mint buckets at will.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// let per_56 = ClientIp::peer().prefix_v6(56);
    /// let ip: IpAddr = "2001:db8:aa:bb:1:2:3:4".parse()?;
    /// assert_eq!(per_56.mask(ip), "2001:db8:aa::".parse::<IpAddr>()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn prefix_v6(mut self, bits: u8) -> Self {
        self.prefix_v6 = bits.min(128);
        self
    }

    /// Groups IPv4 clients by their first `bits` bits (default 32: one bucket
    /// per address). Values above 32 are taken as 32.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// let per_24 = ClientIp::peer().prefix_v4(24);
    /// assert_eq!(per_24.mask("192.0.2.77".parse()?), "192.0.2.0".parse::<IpAddr>()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn prefix_v4(mut self, bits: u8) -> Self {
        self.prefix_v4 = bits.min(32);
        self
    }

    /// Reads the peer's address with `peer` instead of [`peer_addr`]: for a
    /// server that records it under another type (tonic's `TcpConnectInfo`, a
    /// type of your own).
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// #[derive(Clone)]
    /// struct Conn { remote: IpAddr }
    ///
    /// let client_ip = ClientIp::peer().peer_from(|ext| ext.get::<Conn>().map(|c| c.remote));
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(Conn { remote: "192.0.2.9".parse()? });
    /// assert_eq!(client_ip.key(&req), Some("192.0.2.9".parse::<IpAddr>()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn peer_from(mut self, peer: PeerFn) -> Self {
        self.peer = peer;
        self
    }

    /// Whether `ip` is in a trusted proxy network.
    #[must_use]
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip.to_canonical())
    }

    /// The client's address, from a connection's `peer` and the request's
    /// `headers`, before grouping by prefix (IPv4-mapped IPv6 is already
    /// IPv4). For servers that are not built on `http::Request`.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use http::HeaderMap;
    /// use tower_freqlimit::key::ClientIp;
    ///
    /// let client_ip = ClientIp::try_behind_proxies(["10.0.0.0/8"])?;
    /// let mut headers = HeaderMap::new();
    /// headers.append("x-forwarded-for", "203.0.113.7, 10.0.0.3".parse()?);
    /// headers.append("x-forwarded-for", "10.0.0.4".parse()?); // one list with the first
    /// let peer: IpAddr = "::ffff:10.0.0.5".parse()?;
    /// assert_eq!(client_ip.resolve(peer, &headers), "203.0.113.7".parse::<IpAddr>()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !self.trusted.contains(peer) {
            return peer;
        }
        // The first of the headers read that the request has (absent
        // ones have no fields).
        for header in self.headers.iter().flatten() {
            let fields = headers.get_all(header.name());
            if fields.iter().next().is_some() {
                return proxy::walk(fields, *header, peer, &self.trusted);
            }
        }
        peer
    }

    /// The client's address for `req` (see [`resolve`](Self::resolve)); `None`
    /// when the request carries no peer address.
    #[must_use]
    #[inline]
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = (self.peer)(req.extensions())?;
        Some(self.resolve(peer, req.headers()))
    }

    /// The key of `ip`: IPv4-mapped IPv6 as IPv4, host bits beyond the prefix
    /// cleared.
    #[must_use]
    #[inline]
    pub fn mask(&self, ip: IpAddr) -> IpAddr {
        self.mask_canonical(ip.to_canonical())
    }

    #[inline]
    fn mask_canonical(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => mask(ip, self.prefix_v4),
            IpAddr::V6(_) => mask(ip, self.prefix_v6),
        }
    }

    /// The key for `req`: its client's address, grouped by prefix; `None` when
    /// the request carries no peer address.
    #[must_use]
    #[inline]
    pub fn key<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        // `client_ip` is canonical already.
        self.client_ip(req).map(|ip| self.mask_canonical(ip))
    }
}

/// No peer address in the request: the server's setup, a `500` whose body says
/// what to change.
#[cfg(feature = "axum")]
const NO_PEER: KeyNotFound = KeyNotFound::server_setup(
    "rate limiting by client IP: the request carries no peer address. \
     With axum, serve with `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`; \
     with hyper, insert the peer's `SocketAddr` into the request's extensions.",
);
#[cfg(not(feature = "axum"))]
const NO_PEER: KeyNotFound = KeyNotFound::server_setup(
    "rate limiting by client IP: the request carries no peer address. \
     With axum, enable tower-freqlimit's `axum` feature (which reads axum's `ConnectInfo`) \
     and serve with `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`; \
     with tonic, enable the `tonic` feature; with hyper, insert the peer's `SocketAddr` into the request's extensions.",
);

impl<B> ExtractKey<Request<B>, IpAddr> for ClientIp {
    #[inline]
    fn extract_key(&self, req: &Request<B>) -> KeyLookup<IpAddr> {
        match self.key(req) {
            Some(ip) => KeyLookup::Key(ip),
            None => KeyLookup::NotFound(NO_PEER),
        }
    }
}
