//! Two limiters, as two replicas of a service would have, sharing one limit
//! through Redis: 2 calls per second on `chat:42`, each replica asking for 4.
//!
//! ```sh
//! redis-server --port 6379 --save "" &        # or any Redis / Valkey
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis_shared --features redis
//! ```
//!
//! Both replicas get slots from one schedule, half a second apart, whoever asks;
//! the in-memory backend would have given each its own 2 per second.

use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::{FreqLimit, FreqLimitParams};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let params = FreqLimitParams::per_second(2);
    let prefix = format!("freqlimit-example:{}", std::process::id());

    // Two backends, two connections: what two servers would have.
    let mut replicas = Vec::new();
    for name in ["replica A", "replica B"] {
        let backend = RedisBackend::<String>::builder()
            .prefix(prefix.clone())
            .timeout(Duration::from_millis(500))
            .connect(&url)
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        replicas.push((name, FreqLimit::new(params, backend)));
    }
    println!("2 calls per second on chat:42, shared by two replicas through {url}:");

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (name, limiter) in replicas {
        for call in 1..=4 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let admission = limiter.acquire("chat:42").await?;
                let at = start.elapsed();
                Ok::<_, tower_freqlimit::FreqLimitError>((at, name, call, admission.delay()))
            }));
        }
    }
    let mut slots = Vec::new();
    for task in tasks {
        slots.push(task.await??);
    }
    slots.sort_by_key(|slot| slot.0);
    for (at, name, call, waited) in slots {
        println!(
            "  {:>6.3} s  {name} call {call} (waited {:>4} ms)",
            at.as_secs_f64(),
            waited.as_millis()
        );
    }
    Ok(())
}
