//! Calls racing for one key.

use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::Admission;

/// Starts `n` tasks at once, each awaiting a future made by `acquire`; for
/// each, the delay it was given and how long after the start it woke, sorted.
pub async fn wake_times<F, Fut>(n: usize, acquire: F) -> Vec<(Duration, Duration)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Admission> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let admission = acquire();
            tokio::spawn(async move {
                let admission = admission.await;
                (admission.delay(), start.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results.sort();
    results
}
