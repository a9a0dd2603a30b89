//! Exact rate limiting for async Rust with the Generic Cell Rate Algorithm (GCRA).
//!
//! `tower-freqlimit` is the Rust successor of the Python library `aiofreqlimit`:
//! `limit` events per `period` per key, with a `burst`, where a call over the limit
//! **waits for its slot** (or, if you ask, is rejected at once or after a bounded
//! wait, consuming nothing).
//!
//! * [`FreqLimitParams`]: the limit (`FreqLimitParams::per_second(10).with_burst(5)`).
//! * [`gcra`]: the algorithm, pure integer-nanosecond functions.
//! * [`backends`]: where per-key state lives ([`FreqLimitBackend`]);
//!   [`backends::memory::InMemoryBackend`] is the embedded default.
//! * [`FreqLimit`]: await a slot for a key.
//! * [`FreqLimitLayer`]: the Tower middleware, for servers (axum, tonic, hyper)
//!   and clients.
//! * [`clock`]: where the time comes from (Tokio's clock, or the TSC).
//! * [`key`] (feature `http`): ready key extractors for HTTP requests: the
//!   client IP behind trusted proxies, IPv6 prefixes, a header, the route.
//!
//! # The model
//!
//! Each key has a theoretical arrival time (TAT): when its next event would be
//! due if events came exactly every `T = period / limit`. An event at `now` waits
//! `max(0, TAT - tau - now)`, where `tau = (burst - 1) * T` is how far ahead of
//! schedule a key may run, and pushes the TAT to `max(now, TAT) + T`.
//!
//! With one event per second and a burst of 3, five events asked for at t = 0 run
//! at 0, 0, 0, 1 s and 2 s; a sixth asked for at 10 s runs at once, the bucket
//! having refilled.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
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
//!     limiter.acquire(&"chat:42").await?;
//!     ran_at.push(start.elapsed().as_secs());
//! }
//! assert_eq!(ran_at, [0, 0, 0, 1, 2]);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod clock;
mod error;
pub mod gcra;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod key;
pub mod layer;
mod limiter;
mod params;

pub use backends::FreqLimitBackend;
pub use error::{BackendError, BackendErrorKind, FreqLimitError, Rejection};
pub use gcra::{Admission, Reserve};
pub use layer::{FreqLimitLayer, FreqLimitService};
pub use limiter::FreqLimit;
pub use params::{FreqLimitParams, ParamsError};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
