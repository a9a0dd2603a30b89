//! Ready key extractors for `http::Request`, for the layer's
//! [`.key(...)`](crate::layer::FreqLimitLayer::key) (feature `http`).
//!
//! | extractor | key | for |
//! |---|---|---|
//! | [`ClientIp::peer()`] | [`IpAddr`](std::net::IpAddr) | clients that connect directly |
//! | [`ClientIp::behind_proxies(networks)`](ClientIp::behind_proxies) | [`IpAddr`](std::net::IpAddr) | clients behind your reverse proxies / load balancers / CDN |
//! | [`HeaderKey`] | `String` | an API key, a user id set by an authenticating proxy |
//! | [`RouteKey`] | [`Route`] | a route as a whole (`matched()` with `axum`) or each path |
//! | a tuple `(a, b)` of extractors | `(Ka, Kb)` | per client *and* route, and such |
//!
//! IP keys are IPv6 addresses grouped by prefix (`/64` by default) and
//! IPv4-mapped IPv6 taken as IPv4; the extractors neither allocate nor lock on
//! the request path.
//!
//! # Security: what to trust
//!
//! * **Directly exposed server:** [`ClientIp::peer()`]. Headers are ignored:
//!   any client can send `X-Forwarded-For: 1.2.3.4`.
//! * **Behind proxies:** list the networks of *your* proxies, nothing more, and
//!   read the one header they write (`X-Forwarded-For` by default;
//!   [`ClientIp::header`] for `Forwarded` or `X-Real-IP`). The header is walked
//!   from the right, past trusted proxies, to the first address that is not
//!   one: that is the client. Entries to its left were written by the client
//!   and are never read, so a forged leftmost entry (what
//!   `tower_governor`'s smart extractor reads) changes nothing. A request
//!   from a peer that is not a trusted proxy is keyed by the peer.
//! * **A trusted network that clients can reach** (a VPN range, a shared
//!   cloud range, `0.0.0.0/0`) lets those clients write their own address.
//!   Keep the list to your proxies' own addresses or subnets. The catch-alls
//!   are refused ([`ClientIp::behind_proxies`] returns a [`CidrError`]):
//!   `0.0.0.0/0`, `::/0`, `::ffff:0:0/96` (all of IPv4), IPv4 prefixes under
//!   `/8` and public IPv6 prefixes under `/32`
//!   ([`Cidr::is_too_broad_to_trust`]). A server that only proxies can reach
//!   says so with [`ClientIp::behind_proxies_allowing_broad`].
//! * **Unusable entries** (`unknown`, obfuscated `_names`, garbage) end the
//!   walk: the key is then the last trusted proxy reached, never an address
//!   further left. Oversized headers are read from the right end only (4 KiB,
//!   32 entries), and nothing in a header can make a request fail.
//! * **IPv6:** one subscriber usually has a `/64` or a `/56`; keyed per
//!   address, one host could mint a bucket per address.
//!   [`ClientIp::prefix_v6`] sets the grouping (`/64` by default).
//! * **Key space:** whatever the extractor, a client with many addresses (or
//!   many invented header values or paths) makes many keys. Bound the backend
//!   ([`max_keys`](crate::backends::memory::InMemoryBackendBuilder::max_keys)).
//!
//! # The peer address
//!
//! [`peer_addr`] reads axum's `ConnectInfo<SocketAddr>` (feature `axum`;
//! serve with `into_make_service_with_connect_info::<SocketAddr>()`), or a
//! `SocketAddr` or `IpAddr` in the request's extensions. A plain hyper server
//! does not record the peer: insert it per connection, as in this sketch.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::net::{IpAddr, SocketAddr};
//! use http::{Request, Response};
//! use hyper::body::Incoming;
//! use hyper_util::rt::TokioIo;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::key::ClientIp;
//! use tower_freqlimit::layer::FreqLimitLayer;
//! use tower_freqlimit::FreqLimitParams;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let limited = ServiceBuilder::new()
//!     .layer(
//!         FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::<IpAddr>::new())
//!             .key(ClientIp::peer())
//!             .http_responses(),
//!     )
//!     .service(service_fn(|_req: Request<Incoming>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     }));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     let limited = limited.clone();
//!     // The one line a plain hyper server needs: record the peer.
//!     let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
//!         req.extensions_mut().insert::<SocketAddr>(peer);
//!         limited.clone().oneshot(req)
//!     });
//!     tokio::spawn(
//!         hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
//!     );
//! }
//! # }
//! ```
//!
//! Other servers can pass their own reader to [`ClientIp::peer_from`], or call
//! [`ClientIp::resolve`] with the peer and the headers.

mod cidr;
mod client_ip;
mod peer;
mod header;
mod proxy;
mod route;

pub use cidr::{Cidr, CidrError};
pub use client_ip::ClientIp;
pub use header::HeaderKey;
pub use peer::{PeerFn, peer_addr};
pub use proxy::ProxyHeader;
pub use route::{Route, RouteKey};

use crate::layer::{ExtractKey, KeyLookup};

/// Two extractors as one: the key is the pair of their keys, so each
/// combination gets its own bucket (per client *and* route).
///
/// The request has a key when both find one; if either finds none, the
/// layer's [`MissingKey`](crate::layer::MissingKey) setting decides. If either
/// says [`Global`](crate::layer::Global) (and neither finds none), the request
/// goes to the global bucket.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_freqlimit::key::{ClientIp, Route, RouteKey};
/// use tower_freqlimit::layer::{ExtractKey, KeyLookup};
///
/// let per_client_and_path = (ClientIp::peer(), RouteKey::path());
/// let mut req = http::Request::get("/search").body(())?;
/// req.extensions_mut().insert("192.0.2.1:4000".parse::<SocketAddr>()?);
/// let KeyLookup::Key((ip, route)) = per_client_and_path.extract_key(&req) else {
///     panic!("no key");
/// };
/// assert_eq!(ip, "192.0.2.1".parse::<IpAddr>()?);
/// assert_eq!(route.as_str(), "/search");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<Req, A, B, KA, KB> ExtractKey<Req, (KA, KB)> for (A, B)
where
    A: ExtractKey<Req, KA>,
    B: ExtractKey<Req, KB>,
{
    fn extract_key(&self, req: &Req) -> KeyLookup<(KA, KB)> {
        match (self.0.extract_key(req), self.1.extract_key(req)) {
            (KeyLookup::Key(a), KeyLookup::Key(b)) => KeyLookup::Key((a, b)),
            (KeyLookup::NotFound(missing), _) | (_, KeyLookup::NotFound(missing)) => {
                KeyLookup::NotFound(missing)
            }
            _ => KeyLookup::Global,
        }
    }
}
