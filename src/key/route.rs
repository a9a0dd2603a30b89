//! [`RouteKey`]: the matched route or the path as the key.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use http::Request;

use crate::error::KeyNotFound;
use crate::layer::{ExtractKey, KeyLookup};

/// A route as a key: a matched route template (`/users/{id}`) or a request
/// path. Compared, hashed and shown as its text.
///
/// A matched route shares axum's own string (no allocation per request); a
/// path is copied.
///
/// ```
/// use tower_freqlimit::key::RouteKey;
///
/// let req = http::Request::get("/users/42?x=1").body(())?;
/// let route = RouteKey::path().key(&req).unwrap();
/// assert_eq!(route.as_str(), "/users/42");
/// assert_eq!(route.to_string(), "/users/42");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Route(Repr);

#[derive(Clone)]
enum Repr {
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
    Path(Box<str>),
}

impl Route {
    /// The route's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            #[cfg(feature = "axum")]
            Repr::Matched(path) => path.as_str(),
            Repr::Path(path) => path,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Route {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Route {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Borrow<str> for Route {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys each request by its route: one bucket per endpoint, for a limit on an
/// expensive endpoint as a whole, or (in a tuple with
/// [`ClientIp`](super::ClientIp)) per client and endpoint.
///
/// * [`RouteKey::matched()`] (feature `axum`): the route template the request
///   matched, from axum's `MatchedPath` (`/users/{id}` for `/users/42`). The
///   key space is your routes: bounded. Absent (no key) when the layer runs
///   before routing (on the whole `Router` as `.layer(...)` applies to the
///   matched route, but not to the fallback or under `Router::nest_service`).
/// * [`RouteKey::path()`]: the request's path, as it came (no query, no
///   normalisation), cut at [`max_len`](Self::max_len) bytes (256 by default).
///   Every distinct path is a bucket, so a client can invent as many as it
///   likes: bound the backend
///   ([`max_keys`](crate::backends::memory::InMemoryBackendBuilder::max_keys)).
///
/// ```
/// use tower_freqlimit::key::RouteKey;
///
/// let req = http::Request::get("/search?q=rust").body(())?;
/// assert_eq!(RouteKey::path().key(&req).unwrap().as_str(), "/search");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RouteKey {
    source: Source,
    max_len: usize,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    #[cfg(feature = "axum")]
    Matched,
    Path,
}

impl RouteKey {
    /// The default [`max_len`](Self::max_len) of a path.
    pub const DEFAULT_MAX_LEN: usize = 256;

    /// The route template axum matched (`MatchedPath`).
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::key::{Route, RouteKey};
    /// use tower_freqlimit::layer::FreqLimitLayer;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// // At most 100 calls a second to each route, whatever the id.
    /// let per_route = FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::<Route>::new())
    ///     .key(RouteKey::matched())
    ///     .http_responses();
    /// let app: Router = Router::new()
    ///     .route("/users/{id}", get(|| async { "user" }))
    ///     .route_layer(per_route);
    /// # let _ = app;
    /// ```
    #[cfg(feature = "axum")]
    #[must_use]
    pub fn matched() -> Self {
        Self {
            source: Source::Matched,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// The request's path.
    #[must_use]
    pub fn path() -> Self {
        Self {
            source: Source::Path,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// Keeps at most `bytes` bytes of a path (default 256; a matched route is
    /// kept whole).
    ///
    /// ```
    /// use tower_freqlimit::key::RouteKey;
    ///
    /// let req = http::Request::get("/a/very/long/path").body(())?;
    /// assert_eq!(RouteKey::path().max_len(7).key(&req).unwrap().as_str(), "/a/very");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// The key for `req`; `None` if there is no matched route
    /// ([`matched`](Self::matched)).
    #[must_use]
    pub fn key<B>(&self, req: &Request<B>) -> Option<Route> {
        match self.source {
            #[cfg(feature = "axum")]
            Source::Matched => req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|path| Route(Repr::Matched(path.clone()))),
            Source::Path => {
                let path = req.uri().path();
                let mut end = path.len().min(self.max_len);
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                Some(Route(Repr::Path(path[..end].into())))
            }
        }
    }
}

impl<B> ExtractKey<Request<B>, Route> for RouteKey {
    fn extract_key(&self, req: &Request<B>) -> KeyLookup<Route> {
        match self.key(req) {
            Some(route) => KeyLookup::Key(route),
            None => KeyLookup::NotFound(KeyNotFound::server_setup(
                "the request carries no axum `MatchedPath`: put the rate-limit layer on the Router (`Router::layer`, or `route_layer`), not around it",
            )),
        }
    }
}
