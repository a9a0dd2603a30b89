//! The peer's address: where the server recorded it in a request's
//! extensions ([`peer_addr`]), and the type of a function that reads it
//! elsewhere ([`PeerFn`]).

use std::net::{IpAddr, SocketAddr};

use http::Extensions;

/// Where the peer's address is read from: a function of the request's
/// extensions (see [`peer_addr`] for the default).
pub type PeerFn = fn(&Extensions) -> Option<IpAddr>;

/// The peer's address as the server recorded it in the request's extensions,
/// in this order:
///
/// 1. axum's `ConnectInfo<SocketAddr>` (with the `axum` feature), which
///    `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`
///    inserts, or its `MockConnectInfo<SocketAddr>` in tests;
/// 2. tonic's `TcpConnectInfo` (with the `tonic` feature), which a tonic
///    server inserts for every request on a plain TCP connection;
/// 3. a [`SocketAddr`], which a plain hyper server inserts itself (hyper does
///    not record the peer: see the [module docs](super) for the three lines);
/// 4. an [`IpAddr`].
///
/// `None` when none is there (a server started without them): the layer's
/// [`MissingKey`](crate::layer::MissingKey) setting then decides, and refuses
/// by default so that the misconfiguration shows.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_freqlimit::key::peer_addr;
///
/// let mut req = http::Request::new(());
/// assert_eq!(peer_addr(req.extensions()), None);
/// req.extensions_mut().insert("192.0.2.1:5000".parse::<SocketAddr>().unwrap());
/// assert_eq!(peer_addr(req.extensions()), Some("192.0.2.1".parse::<IpAddr>().unwrap()));
/// ```
#[must_use]
#[inline]
pub fn peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::connect_info::MockConnectInfo(addr)) =
        extensions.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr.ip());
    }
    if let Some(addr) = extensions.get::<SocketAddr>() {
        return Some(addr.ip());
    }
    extensions.get::<IpAddr>().copied()
}
