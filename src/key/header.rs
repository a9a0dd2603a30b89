//! [`HeaderKey`]: a header's value (API key, user id) as the key.

use http::Request;
use http::header::{HeaderName, InvalidHeaderName};

use crate::error::KeyNotFound;
use crate::layer::{ExtractKey, KeyLookup};

/// Keys each request by the value of one header: an API key, a user or tenant
/// id set by an authenticating proxy.
///
/// * The first field of that name is read, as `HeaderMap::get` (and so most
///   handlers) reads it.
/// * An absent or empty header is no key: the layer's
///   [`MissingKey`](crate::layer::MissingKey) setting decides (refuse, pool in
///   the global bucket, or let through). Refused, it is the client's
///   omission ([`KeyNotFound::client_omitted`]): `400 Bad Request` over HTTP,
///   never a `5xx`. To let such requests on to an authentication layer that
///   answers `401`, use `MissingKey::Allow`.
/// * The key is a `String` of at most [`max_len`](Self::max_len) bytes (256 by
///   default): a longer value is cut there, so a client cannot make the
///   limiter hold megabytes per key. Bytes that are not UTF-8 become U+FFFD.
///   Two values that differ only past the cut, or only in such bytes, share a
///   bucket.
///
/// A client chooses its header values: one that may send any API key gets a
/// bucket per key it invents. Key by a header only once it is authenticated
/// (the layer inside your authentication), or combine it with a bound
/// ([`max_keys`](crate::backends::memory::InMemoryBackendBuilder::max_keys)).
///
/// ```
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::key::HeaderKey;
/// use tower_freqlimit::layer::{FreqLimitLayer, MissingKey};
/// use tower_freqlimit::FreqLimitParams;
///
/// let api_key = HeaderKey::named("x-api-key")?;
/// let req = http::Request::builder().header("x-api-key", "k-123").body(())?;
/// assert_eq!(api_key.key(&req).as_deref(), Some("k-123"));
///
/// let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::<String>::new())
///     .key(api_key)
///     .on_missing_key(MissingKey::Global); // anonymous calls share one bucket
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
    max_len: usize,
}

impl HeaderKey {
    /// The default [`max_len`](Self::max_len).
    pub const DEFAULT_MAX_LEN: usize = 256;

    /// Keys by the header `name`.
    ///
    /// ```
    /// use http::header::AUTHORIZATION;
    /// use tower_freqlimit::key::HeaderKey;
    ///
    /// let by_token = HeaderKey::new(AUTHORIZATION);
    /// # let _ = by_token;
    /// ```
    #[must_use]
    pub fn new(name: HeaderName) -> Self {
        Self {
            name,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// Keys by the header `name`, given as text.
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`] if `name` is not a valid header name.
    ///
    /// ```
    /// use tower_freqlimit::key::HeaderKey;
    ///
    /// assert!(HeaderKey::named("X-User-Id").is_ok());
    /// assert!(HeaderKey::named("not a header").is_err());
    /// ```
    pub fn named(name: &str) -> Result<Self, InvalidHeaderName> {
        Ok(Self::new(HeaderName::from_bytes(name.as_bytes())?))
    }

    /// Keeps at most `bytes` bytes of the value (default 256).
    ///
    /// ```
    /// use tower_freqlimit::key::HeaderKey;
    ///
    /// let short = HeaderKey::named("x-user")?.max_len(4);
    /// let req = http::Request::builder().header("x-user", "abcdefgh").body(())?;
    /// assert_eq!(short.key(&req).as_deref(), Some("abcd"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// The header read.
    #[must_use]
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The key for `req`; `None` when the header is absent or empty.
    #[must_use]
    pub fn key<B>(&self, req: &Request<B>) -> Option<String> {
        let value = req.headers().get(&self.name)?.as_bytes();
        if value.is_empty() {
            return None;
        }
        let kept = &value[..value.len().min(self.max_len)];
        Some(String::from_utf8_lossy(kept).into_owned())
    }
}

/// The client sent no value for the header: its omission, a `400` over HTTP.
const NO_HEADER: KeyNotFound = KeyNotFound::client_omitted(
    "the request has no value for the header this API is rate limited by",
);

impl<B> ExtractKey<Request<B>, String> for HeaderKey {
    fn extract_key(&self, req: &Request<B>) -> KeyLookup<String> {
        match self.key(req) {
            Some(key) => KeyLookup::Key(key),
            None => KeyLookup::NotFound(NO_HEADER),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(values: &[&[u8]]) -> Request<()> {
        let mut req = Request::new(());
        for value in values {
            req.headers_mut()
                .append("x-api-key", HeaderValue::from_bytes(value).unwrap());
        }
        req
    }

    #[test]
    fn header_values_as_keys() {
        let key = HeaderKey::named("X-Api-Key").unwrap();
        let long = vec![b'a'; 1000];
        let cases: &[(&[&[u8]], Option<&str>)] = &[
            (&[], None),
            (&[b""], None),
            (&[b"k1"], Some("k1")),
            (&[b"k1", b"k2"], Some("k1")),
            (&[b"caf\xc3\xa9"], Some("caf\u{e9}")),
            (&[b"\xff\xfe"], Some("\u{fffd}\u{fffd}")),
            (&[&long], Some(&"a".repeat(256))),
        ];
        for (values, expected) in cases {
            assert_eq!(key.key(&req(values)).as_deref(), *expected, "{values:?}");
        }
        // A cut in the middle of a UTF-8 sequence leaves a replacement character.
        let cut = HeaderKey::named("x-api-key").unwrap().max_len(4);
        assert_eq!(
            cut.key(&req(&[b"caf\xc3\xa9"])).as_deref(),
            Some("caf\u{fffd}")
        );
        assert_eq!(
            key.extract_key(&req(&[])),
            KeyLookup::NotFound(NO_HEADER),
            "absent header"
        );
    }
}
