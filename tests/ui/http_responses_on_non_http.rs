// `http_responses()` on a service whose responses are not `http::Response`.
use std::convert::Infallible;

use tower::{ServiceBuilder, service_fn};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

fn assert_service<S: tower::Service<u32>>(_: &S) {}

fn main() {
    let svc = ServiceBuilder::new()
        .layer(FreqLimitLayer::server(FreqLimitParams::per_second(1), InMemoryBackend::global()))
        .service(service_fn(|req: u32| async move { Ok::<String, Infallible>(req.to_string()) }));
    assert_service(&svc);
}
