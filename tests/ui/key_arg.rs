// A `&str` key for a limiter of `u64` keys.
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimit, FreqLimitParams};

async fn send(limiter: &FreqLimit<InMemoryBackend<u64>>) {
    let _ = limiter.acquire("chat:42").await;
}

fn main() {
    let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u64>::new());
    drop(send(&limiter));
}
