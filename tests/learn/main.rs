//! Learning from the server (`src/learn`, `src/reqwest.rs`): the header
//! parsers on every form and on arbitrary bytes, `FreqLimit::hold` and the
//! backends' `hold`, the learning layer on a client, and the reqwest
//! middleware against real local servers.
#![cfg(feature = "http")]

#[path = "../support/mod.rs"]
mod support;

mod hold;
mod layer;
mod parsers;
#[cfg(all(feature = "reqwest", feature = "redis"))]
mod redis;
#[cfg(feature = "reqwest")]
mod reqwest_middleware;
