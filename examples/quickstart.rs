//! The `aiofreqlimit` scenario on the in-memory backend: messages to a chat at one
//! per second, then a chat that allows a burst.
//!
//! Run with `cargo run --example quickstart`; it takes about 6 seconds.

use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams};

/// One message per chat per second, the limit a messaging API imposes.
const PER_CHAT: FreqLimitParams = FreqLimitParams::per_second(1);

#[tokio::main]
async fn main() -> Result<(), FreqLimitError> {
    let start = Instant::now();
    let stamp = |start: Instant| format!("{:>6.3} s", start.elapsed().as_secs_f64());

    println!("1. Five messages to chat 42, one per second:");
    let limiter = FreqLimit::new(PER_CHAT, InMemoryBackend::<&str>::new());
    for n in 1..=5 {
        let admission = limiter.acquire(&"chat:42").await?;
        println!(
            "   {}  message {n} sent (waited {:>5} ms)",
            stamp(start),
            admission.delay().as_millis()
        );
    }

    println!("\n2. Another chat is not held up by chat 42:");
    limiter.acquire(&"chat:7").await?;
    println!("   {}  chat 7: message sent at once", stamp(start));

    println!("\n3. Burst of 3 at one per second: three go at once, then the pace holds:");
    let burst = FreqLimit::new(PER_CHAT.with_burst(3), InMemoryBackend::<&str>::new());
    let phase = Instant::now();
    for n in 1..=5 {
        let admission = burst.acquire(&"chat:42").await?;
        println!(
            "   {}  message {n} sent (+{:.3} s, {} more would go at once)",
            stamp(start),
            phase.elapsed().as_secs_f64(),
            admission.remaining()
        );
    }

    println!("\n4. Reject instead of waiting (try_acquire):");
    match burst.try_acquire(&"chat:42").await {
        Ok(_) => println!("   admitted"),
        Err(FreqLimitError::Rejected(rejection)) => println!(
            "   {}  rejected: retry after {:.3} s; nothing was consumed",
            stamp(start),
            rejection.retry_after().as_secs_f64()
        ),
        Err(other) => return Err(other),
    }
    println!("\ndone in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
