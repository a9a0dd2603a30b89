//! The key extractors (`src/key`): table-driven cases of every proxy-header
//! form, the extractors in real servers, and property tests of the proxy walk
//! against the model shared with `fuzz/`.

#[path = "../support/mod.rs"]
mod support;

mod extractors;
mod proxy_walk;
mod trusted_networks;
