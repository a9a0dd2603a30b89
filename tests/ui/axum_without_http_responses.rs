// `FreqLimitLayer::new` refuses with errors; an axum Router needs responses.
use axum::{Router, routing::get};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

fn main() {
    let limit = FreqLimitLayer::new(FreqLimitParams::per_second(2), InMemoryBackend::global()).no_wait();
    let _app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
}
