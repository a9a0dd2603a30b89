// A `ClientIp` key (an `IpAddr`) on a backend of `String` keys.
use axum::{Router, routing::get};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::key::ClientIp;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

fn main() {
    let limit = FreqLimitLayer::server(FreqLimitParams::per_second(2), InMemoryBackend::<String>::new())
        .key(ClientIp::peer());
    let _app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
}
