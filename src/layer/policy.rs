//! How the layer classifies a request: its bucket, its params, its cost.

use crate::error::KeyNotFound;
use crate::params::FreqLimitParams;

/// Which bucket a request goes to, as an [`ExtractKey`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup<K> {
    /// The request's own key.
    Key(K),
    /// The one global bucket.
    Global,
    /// The request carries no key; the layer's [`MissingKey`] setting decides,
    /// and [`KeyNotFound`] says why if it refuses.
    NotFound(KeyNotFound),
}

/// Maps a request to its bucket.
///
/// Implemented for closures `Fn(&Req) -> Option<K>` (`None`: no key found,
/// [`KeyNotFound::UNSPECIFIED`]), for [`Global`], and for the extractors of
/// the `key` module. Implement it yourself for an extractor with state, or to
/// say whose fault a missing key is ([`KeyNotFound::client_omitted`] answers
/// `400` over HTTP).
///
/// The key type `K` must be the backend's: [`ClientIp`](crate::key::ClientIp)
/// gives `IpAddr`, so it goes with `InMemoryBackend::<IpAddr>` (or
/// `InMemoryBackend::new()`, which infers it).
///
/// ```
/// use tower_freqlimit::layer::{ExtractKey, KeyLookup};
///
/// let by_user = |req: &(u64, &str)| Some(req.0);
/// assert_eq!(by_user.extract_key(&(7, "GET /")), KeyLookup::Key(7));
/// ```
///
/// With axum, a closure's request type is `axum::extract::Request`
/// (`http::Request<axum::body::Body>`):
///
/// ```
/// # #[cfg(feature = "http")] {
/// use axum::extract::Request;
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
///
/// #[derive(Clone)]
/// struct User { id: u64 }
///
/// let limit = FreqLimitLayer::server(FreqLimitParams::per_second(5), InMemoryBackend::new())
///     .key(|req: &Request| req.extensions().get::<User>().map(|user| user.id));
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(limit);
/// # let _ = app;
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot extract a rate-limit key of type `{K}` from a `{Req}`",
    label = "not a key extractor for these requests and this backend",
    note = "a key extractor is a closure `Fn(&{Req}) -> Option<{K}>` or an `ExtractKey` (`ClientIp` gives `IpAddr`, `HeaderKey` gives `String`, `RouteKey` gives `Route`); its key type must be the backend's key type"
)]
pub trait ExtractKey<Req, K> {
    /// The bucket for `req`.
    fn extract_key(&self, req: &Req) -> KeyLookup<K>;
}

// Not recommended in errors: a wrong extractor then reads as "cannot extract a
// key of type K", not as "expected a closure".
#[diagnostic::do_not_recommend]
impl<F, Req, K> ExtractKey<Req, K> for F
where
    F: Fn(&Req) -> Option<K>,
{
    fn extract_key(&self, req: &Req) -> KeyLookup<K> {
        match self(req) {
            Some(key) => KeyLookup::Key(key),
            None => KeyLookup::NotFound(KeyNotFound::UNSPECIFIED),
        }
    }
}

/// Every request goes to the one global bucket (the layer's default).
///
/// ```
/// use tower_freqlimit::layer::{ExtractKey, Global, KeyLookup};
///
/// assert_eq!(ExtractKey::<&str, u64>::extract_key(&Global, &"any"), KeyLookup::Global);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req, K> ExtractKey<Req, K> for Global {
    fn extract_key(&self, _: &Req) -> KeyLookup<K> {
        KeyLookup::Global
    }
}

/// What the layer does with a request whose key cannot be found (no peer
/// address, no API-key header).
///
/// The default is [`Refuse`](Self::Refuse): a missing key usually means a
/// misconfiguration (a server started without `ConnectInfo`, a proxy that strips
/// a header) or a client that left out its key, and pooling such requests
/// silently, or letting them through, would hide it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MissingKey {
    /// Refuse with [`FreqLimitError::KeyNotFound`](crate::FreqLimitError::KeyNotFound):
    /// over HTTP `400 Bad Request` when the client left its key out (a
    /// [`HeaderKey`](crate::key::HeaderKey) header), `500` with a body that says
    /// what to fix when the server's setup did (no peer address recorded).
    #[default]
    Refuse,
    /// Limit such requests together in the global bucket.
    Global,
    /// Let them through unlimited, to the next layer (an authentication layer
    /// that answers `401`, say).
    Allow,
}

/// Gives a request its own [`FreqLimitParams`] (tiers: free and paid API keys).
///
/// Implemented for closures `Fn(&Req) -> FreqLimitParams` and for [`LayerParams`].
///
/// ```
/// use tower_freqlimit::FreqLimitParams;
/// use tower_freqlimit::layer::ParamsFor;
///
/// const FREE: FreqLimitParams = FreqLimitParams::per_minute(60);
/// const PAID: FreqLimitParams = FreqLimitParams::per_second(100);
/// let tiers = |req: &bool| if *req { PAID } else { FREE };
/// assert_eq!(tiers.params_for(&true, &FREE), PAID);
/// ```
pub trait ParamsFor<Req> {
    /// The params for `req`; `default` is the layer's.
    fn params_for(&self, req: &Req, default: &FreqLimitParams) -> FreqLimitParams;
}

impl<F, Req> ParamsFor<Req> for F
where
    F: Fn(&Req) -> FreqLimitParams,
{
    fn params_for(&self, req: &Req, _: &FreqLimitParams) -> FreqLimitParams {
        self(req)
    }
}

/// Every request gets the layer's params (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerParams;

impl<Req> ParamsFor<Req> for LayerParams {
    fn params_for(&self, _: &Req, default: &FreqLimitParams) -> FreqLimitParams {
        *default
    }
}

/// Gives a request its cost (weight): cost `n` is `n` unit calls at once.
///
/// Implemented for closures `Fn(&Req) -> u32` and for [`UnitCost`].
///
/// ```
/// use tower_freqlimit::layer::CostOf;
///
/// let by_batch_size = |req: &Vec<u8>| req.len() as u32;
/// assert_eq!(by_batch_size.cost_of(&vec![1, 2, 3]), 3);
/// ```
pub trait CostOf<Req> {
    /// The cost of `req`.
    fn cost_of(&self, req: &Req) -> u32;
}

impl<F, Req> CostOf<Req> for F
where
    F: Fn(&Req) -> u32,
{
    fn cost_of(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// Every request costs 1 (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> CostOf<Req> for UnitCost {
    fn cost_of(&self, _: &Req) -> u32 {
        1
    }
}

/// The three classifiers of a layer, as one type parameter: the key extractor
/// `K`, the params hook `PF` ([`ParamsFor`]) and the cost hook `CF`
/// ([`CostOf`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<K = Global, PF = LayerParams, CF = UnitCost> {
    pub(crate) key: K,
    pub(crate) params: PF,
    pub(crate) cost: CF,
}
