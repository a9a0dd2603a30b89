// The inner service must be `Clone`: a request that waits for its slot calls a clone.
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tower::Service;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};
use tower_layer::Layer;

struct NotClone;

impl Service<u32> for NotClone {
    type Response = u32;
    type Error = Infallible;
    type Future = Ready<Result<u32, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        ready(Ok(req))
    }
}

fn main() {
    let layer = FreqLimitLayer::new(FreqLimitParams::per_second(1), InMemoryBackend::global()).no_wait();
    let _svc = layer.layer(NotClone);
}
