//! Refunds on Redis: abandoned waiters on the global bucket give every slot
//! back in any order (issue 13, point 4), and the scripts keep in step with
//! the in-memory backend through any history of reservations and
//! cancellations (proptest against a real server, explicit times).

use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{Admission, FreqLimitError, FreqLimitParams, Reserve};

use super::{exact_backend, proptest_on_a_server};
use crate::refund::{Op, T0, ops, request};
use crate::support::redis_server::RedisServer;

const ORDERS: [(&str, [usize; 10]); 3] = [
    ("first to last", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("last to first", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ("interleaved", [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]),
];

fn retry_after(result: Result<Admission, FreqLimitError>) -> Duration {
    match result {
        Err(FreqLimitError::Rejected(r)) => r.retry_after(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn ten_abandoned_waiters_on_the_global_bucket_give_every_slot_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 2 a minute: T = 30 s.
    let params = FreqLimitParams::per_minute(2);
    let t = Duration::from_secs(30);
    let now = Timestamp::from_nanos(T0);
    for (order_name, order) in ORDERS {
        let b = exact_backend(&server).await;
        let global = None::<&str>;
        b.reserve(global, now, &params, Reserve::new())
            .await
            .unwrap();
        let before = retry_after(
            b.reserve(global, now, &params, Reserve::new().no_wait())
                .await,
        );
        assert_eq!(before, t);
        let mut waiters = Vec::new();
        for i in 1..=10u32 {
            let a = b
                .reserve(global, now, &params, Reserve::new())
                .await
                .unwrap();
            assert_eq!(a.delay(), i * t);
            waiters.push(a);
        }
        for i in order {
            assert!(
                b.refund(None, &waiters[i]),
                "{order_name}: refund {i} not sent"
            );
            // One at a time, in this order, on the server.
            b.refunds_settled().await;
        }
        assert_eq!(
            retry_after(
                b.reserve(global, now, &params, Reserve::new().no_wait())
                    .await
            ),
            before,
            "{order_name}: Retry-After after the waiters left"
        );
        let next = b
            .reserve(global, now, &params, Reserve::new())
            .await
            .unwrap();
        assert_eq!(next.delay(), t, "{order_name}");
        assert_eq!(b.stats().failures, 0);
    }
}

/// Runs `ops` on both backends, asserting every answer and refund token equal
/// (Redis's in microseconds).
async fn agree(
    memory: &InMemoryBackend<String>,
    redis: &RedisBackend<String>,
    key: Option<&String>,
    params: &FreqLimitParams,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut now = T0;
    let mut made: Vec<(Admission, Admission, u64)> = Vec::new();
    let mut cancelled = vec![];
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Reserve { dt, cost, max_wait } => {
                now += dt;
                let at = Timestamp::from_nanos(now);
                let req = request(cost, max_wait);
                let want = memory.reserve(key, at, params, req).await;
                let got = redis.reserve(key, at, params, req).await;
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
                if let (Ok(got), Ok(want)) = (got, want) {
                    let (g, w) = (got.refund_token(), want.refund_token());
                    prop_assert_eq!(g.start * 1_000, w.start, "step {}", step);
                    prop_assert_eq!(g.end.map(|e| e * 1_000), w.end, "step {}", step);
                    if cost > 0 {
                        made.push((want, got, now + want.delay().as_nanos() as u64));
                        cancelled.push(false);
                    }
                }
            }
            Op::Cancel(n) => {
                let waiting: Vec<usize> = (0..made.len())
                    .filter(|&i| !cancelled[i] && made[i].2 > now)
                    .collect();
                if !waiting.is_empty() {
                    let i = waiting[n % waiting.len()];
                    memory.refund(key, &made[i].0);
                    redis.refund(key, &made[i].1);
                    redis.refunds_settled().await;
                    cancelled[i] = true;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_scripts_agree_with_the_memory_backend_through_cancellations() {
    let Some((server, rt, config)) = proptest_on_a_server(64) else {
        return;
    };
    // T in whole microseconds (1 to 50 ms): the two backends then decide alike.
    let strategy =
        (1u64..=50_000, 1u32..=4, any::<bool>()).prop_flat_map(|(t_us, burst, global)| {
            (
                Just(t_us),
                Just(burst),
                Just(global),
                ops(t_us * 1_000, burst, 1..50),
            )
        });
    proptest!(config, |((t_us, burst, global, ops) in strategy)| {
        let params = FreqLimitParams::new(1, Duration::from_micros(t_us), burst);
        // Waits in whole microseconds too (the server rounds max_wait down).
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Reserve { dt, cost, max_wait } => Op::Reserve {
                    dt: dt / 1_000 * 1_000,
                    cost,
                    max_wait: max_wait.map(|w| w / 1_000 * 1_000),
                },
                cancel => cancel,
            })
            .collect();
        let key = (!global).then(|| "shared".to_owned());
        rt.block_on(async {
            let memory = InMemoryBackend::<String>::builder().without_sweeper().build();
            let redis = exact_backend(&server).await;
            agree(&memory, &redis, key.as_ref(), &params, &ops).await
        })?;
    });
}
