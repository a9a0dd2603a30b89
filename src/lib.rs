//! Exact rate limiting for async Rust with the Generic Cell Rate Algorithm (GCRA):
//! `limit` events per `period` per key, with a `burst`, where a call over the
//! limit **waits for its slot**, or, if you ask, is rejected at once or after a
//! bounded wait, consuming nothing. Standalone ([`FreqLimit`]) or as Tower
//! middleware ([`FreqLimitLayer`]) for axum, tonic and hyper servers and
//! clients; in memory or shared by every process through Redis.
//! It is the Rust successor of the Python library `aiofreqlimit` and keeps its
//! vocabulary.
//!
//! # The model
//!
//! A limit ([`FreqLimitParams`]) gives two durations: the emission interval
//! `T = period / limit`, the spacing of events in the long run, and the
//! tolerance `tau = (burst - 1) * T`, how far ahead of that schedule a key may
//! run. Each key keeps one number, its theoretical arrival time (TAT): when its
//! next event would be due had events come exactly every `T`. An event at `now`
//! waits `delay = max(0, TAT - tau - now)` and moves the TAT to
//! `max(now, TAT) + T`. A new key starts with `TAT = now`. That is all the state
//! and all the arithmetic (pure integer-nanosecond functions in [`gcra`], no
//! clock inside), which is why the limiter is exact, a key costs a few dozen
//! bytes, and a shared store needs one atomic update per call.
//!
//! With one event per second and a burst of 3 (`T` = 1 s, `tau` = 2 s), six
//! calls on one key:
//!
//! | call at | TAT before | delay | runs at | TAT after |
//! |---|---|---|---|---|
//! | 0 s | (new) 0 s | 0 | 0 s | 1 s |
//! | 0 s | 1 s | 0 | 0 s | 2 s |
//! | 0 s | 2 s | 0 | 0 s | 3 s |
//! | 0 s | 3 s | 1 s | 1 s | 4 s |
//! | 0 s | 4 s | 2 s | 2 s | 5 s |
//! | 10 s | 5 s | 0 | 10 s | 11 s (the bucket refilled while idle) |
//!
//! ```
//! use tokio::time::Instant;
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::{FreqLimit, FreqLimitParams};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
//! const PER_CHAT: FreqLimitParams = FreqLimitParams::per_second(1).with_burst(3);
//! let limiter = FreqLimit::new(PER_CHAT, InMemoryBackend::new());
//!
//! let start = Instant::now();
//! let mut ran_at = Vec::new();
//! for _ in 0..5 {
//!     limiter.acquire("chat:42").await?;
//!     ran_at.push(start.elapsed().as_secs());
//! }
//! assert_eq!(ran_at, [0, 0, 0, 1, 2]);
//! # Ok(())
//! # }
//! ```
//!
//! # Wait or reject
//!
//! * **Wait** (the default; [`FreqLimit::acquire`], a layer without `max_wait`):
//!   for work that must happen, only not too fast: outbound calls to a rate
//!   limited API, messages to a chat. The call sleeps until its slot; a call
//!   dropped while it waits gives its slot back.
//! * **Reject** ([`FreqLimit::try_acquire`], `FreqLimitLayer::server`, `.no_wait()`):
//!   for servers protecting themselves: a `429` with `Retry-After` is cheaper
//!   than a queue of sleeping requests. A rejection consumes nothing.
//! * **Wait a little** ([`FreqLimit::acquire_within`], `.max_wait(d)`): smooths
//!   bursts up to `d` of waiting, rejects beyond.
//!
//! A [`Reserve`] gives a call a cost (a batch of `n` is `n` events at once) and
//! its own bound on waiting; every decision reports `remaining` and
//! `reset_after` ([`Admission`], [`Rejection`]).
//!
//! # Choosing a backend
//!
//! A [`FreqLimitBackend`] stores the TATs:
//!
//! * [`backends::memory::InMemoryBackend`] (the default): one process, a
//!   lock-free update per call, idle keys swept in the background (lossless: a
//!   key goes only once it owes nothing) and `max_keys` bounding the table
//!   against floods of new keys.
//! * `backends::redis::RedisBackend` (feature `redis`): one limit shared by
//!   every replica behind a load balancer. The GCRA step runs in a Lua script on
//!   the server's clock (one round trip, integer microseconds), keys expire once
//!   drained, Redis Cluster works, and a failure policy says what happens when
//!   Redis is down (fail closed: `503`; or fail open). Use it when the limit is
//!   a contract with someone else (an API quota, abuse protection across a
//!   fleet); keep limits that protect one process in memory.
//! * Your own: the trait is one `reserve` method (see its example).
//!
//! # In a Tower stack
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use axum::{Router, routing::get};
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::key::ClientIp;
//! use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
//!
//! // A server rejects at once with 429 + Retry-After + RateLimit headers...
//! let limit = FreqLimitLayer::server(FreqLimitParams::per_second(10).with_burst(5), InMemoryBackend::new())
//!     .key(ClientIp::peer()); // per client address (IPv6 per /64)
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
//!
//! // ...a client waits for its slot.
//! let pace = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::global());
//! # let _ = (app, pace);
//! # }
//! ```
//!
//! Serve axum with `into_make_service_with_connect_info::<SocketAddr>()` and
//! enable the `axum` feature, so that `key::ClientIp` finds the peer's
//! address (without it, every request is refused with a `500` that says so).
//!
//! The [`key`] module's extractors also read the client's address behind
//! trusted proxies, from the right, so that what a client writes in
//! `X-Forwarded-For` cannot pick its bucket.
//!
//! The [`guide`] has the rest: the algorithm, the layer in depth, keying
//! clients safely, Redis, the peers, the examples.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `http` | yes | `429`/`500`/`503` responses with `Retry-After` and the IETF `RateLimit` headers ([`http`]); the key extractors for `http::Request` |
//! | `axum` | | `IntoResponse` for [`FreqLimitError`], axum's `ConnectInfo` and `MatchedPath` in the key extractors |
//! | `tonic` | | `tonic::Status` (`RESOURCE_EXHAUSTED`) for refusals; tonic's `TcpConnectInfo` in the key extractors |
//! | `redis` | | the Redis backend |
//! | `serde` | | `FreqLimitParams` from config files (`{ limit = 20, period = "1m", burst = 3 }`); see [`config`] |
//! | `metrics` | | counters and a delay histogram through the `metrics` facade ([`metrics`]) |
//! | `tracing` | | debug events for delayed and refused requests (keys never logged) |
//! | `reqwest` | | a `reqwest-middleware` middleware that paces outbound requests per host and learns from `429`s ([`reqwest`]) |
//! | `test-util` | | for tests (under `[dev-dependencies]`): the default clock becomes Tokio's, which `tokio::time::pause()` controls |
//!
//! Time comes from the backend's clock ([`clock`]): the CPU's time-stamp
//! counter in a normal build, Tokio's clock with `test-util`, so that
//! `tokio::time::pause()` makes tests exact. One program, one time base:
//! Cargo builds `cargo test` with the dev-dependency's feature and
//! `cargo build` without it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

// Modules by layer, the core first; each uses only modules listed before it
// (named in parentheses; `.ci/layers.py` checks it). ARCHITECTURE.md is the map.

// The core: values and arithmetic. No clock read, no I/O, no lock.
// Time as integer nanoseconds (a leaf).
pub mod nanos;
// FreqLimitParams: limit, period, burst (nanos).
mod params;
// Params from text and config files (params).
pub mod config;
// Reserve, Admission, Rejection: what every layer passes on (params, nanos).
mod decision;
// The GCRA step, pure (decision, params, nanos).
pub mod gcra;
// FreqLimitError: refusals, backend failures, missing keys (decision, gcra).
mod error;
// Where `now` comes from: Tokio's clock or the TSC (nanos).
pub mod clock;

// Storage: where TATs live, one atomic GCRA step per call (the core).
pub mod backends;

// Limiters: a backend, params and a clock put to work (backends, the core).
// Counters and a delay histogram (decision, error).
pub mod metrics;
// FreqLimit: await a slot.
mod limiter;

// CompoundLimit: several limits, one decision.
mod compound;
// The Tower middleware: layer, service, response future.
pub mod layer;

// Adapters: protocols on top of the layer.
// 429 responses and RateLimit headers.
#[cfg(feature = "http")]
pub mod http;
// Key extractors for http::Request: client IP, header, route.
#[cfg(feature = "http")]
pub mod key;

#[cfg(feature = "http")]
pub mod learn;

#[cfg(feature = "reqwest")]
pub mod reqwest;
// tonic::Status refusals.
#[cfg(feature = "tonic")]
pub mod grpc;

// Documentation only.
pub mod guide;

pub use backends::FreqLimitBackend;
pub use backends::compound::{CompoundAdmission, CompoundBackend};
pub use compound::CompoundLimit;
pub use config::ParseParamsError;
pub use decision::{Admission, RefundToken, Reserve, Status};
pub use error::{BackendError, BackendErrorKind, FreqLimitError, KeyNotFound, Rejection};
pub use layer::compound::CompoundLimitLayer;
pub use layer::{FreqLimitLayer, FreqLimitService};
pub use limiter::{FreqLimit, KeyArg};
pub use params::{FreqLimitParams, ParamsError};

/// The README's examples, compiled as doctests so they cannot rot (with the
/// default features, which the README's recipes assume).
#[cfg(all(doctest, feature = "http"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
