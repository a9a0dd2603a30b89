//! The Redis backend through Sentinel, across a failover: a primary, a
//! replica and a Sentinel started by the test; `SENTINEL FAILOVER` (or the
//! primary killed) promotes the replica, and the backend moves to it with the
//! key's state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimitError, FreqLimitParams, Reserve};

use super::{assert_within_the_bound, builder, wall_micros};
use crate::support::redis_server::RedisServer;

const MS: Duration = Duration::from_millis(1);

/// Polls `check` every 20 ms for up to 15 s (real time).
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(20 * MS).await;
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

/// The full reply of `INFO replication` on `server`.
fn replication(server: &RedisServer) -> String {
    server.command(&["INFO", "replication"]).unwrap_or_default()
}

async fn reserve(backend: &RedisBackend<String>) -> Result<(), FreqLimitError> {
    // Five calls an hour: the key's state, not time, decides in this test.
    let params = FreqLimitParams::per_hour(5).with_burst(5);
    backend
        .reserve(
            Some("k"),
            Timestamp::now(),
            &params,
            Reserve::new().no_wait(),
        )
        .await
        .map(|_| ())
}

/// A primary, a replica in sync with it, and a Sentinel that sees both.
async fn three_servers() -> Option<(RedisServer, RedisServer, RedisServer)> {
    let primary = RedisServer::start()?;
    let port = primary.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).unwrap();
    let sentinel = RedisServer::start_sentinel(primary.port);
    until("the replica in sync", || {
        field(&replication(&replica), "master_link_status") == Some("up")
    })
    .await;
    until("the Sentinel sees the replica", || {
        sentinel
            .command(&["SENTINEL", "REPLICAS", "mymaster"])
            .is_ok_and(|r| r != "*0")
    })
    .await;
    Some((primary, replica, sentinel))
}

/// Issue 12 (6): the backend follows the Sentinels' primary through a
/// failover, and the limit holds across it (the state is replicated).
#[tokio::test]
async fn a_failover_moves_the_backend_to_the_new_primary_with_its_state() {
    let Some((primary, replica, sentinel)) = three_servers().await else {
        return;
    };
    let backend = builder()
        .timeout(Duration::from_secs(2))
        .without_negative_cache()
        .connect_sentinel([sentinel.url()], "mymaster")
        .await
        .unwrap();
    for _ in 0..3 {
        reserve(&backend).await.unwrap();
    }
    // The three reservations reached the replica before it takes over.
    let written = field(&replication(&primary), "master_repl_offset")
        .unwrap()
        .to_owned();
    until("the replica caught up", || {
        field(&replication(&replica), "slave_repl_offset") == Some(written.as_str())
    })
    .await;

    assert_eq!(
        sentinel
            .command(&["SENTINEL", "FAILOVER", "mymaster"])
            .unwrap(),
        "+OK"
    );
    until("the replica promoted", || {
        field(&replication(&replica), "role") == Some("master")
    })
    .await;
    // And the old primary a replica (the Sentinel turns it a moment later;
    // until then both accept writes, and a backend that never moved would
    // still be served).
    until("the old primary demoted", || {
        field(&replication(&primary), "role") == Some("slave")
    })
    .await;

    // The first calls may fail while the roles change; then the backend is
    // on the new primary, which knows the three reservations: two left.
    let deadline = Instant::now() + Duration::from_secs(15);
    let admitted_after = loop {
        match reserve(&backend).await {
            Ok(()) => break 1,
            Err(FreqLimitError::Backend(_)) if Instant::now() < deadline => {
                tokio::time::sleep(50 * MS).await;
            }
            other => panic!("after the failover: {other:?}"),
        }
    };
    let mut admitted = admitted_after;
    while reserve(&backend).await.is_ok() {
        admitted += 1;
        assert!(
            admitted <= 2,
            "the new primary admitted more than the two left"
        );
    }
    assert_eq!(admitted, 2);
    assert!(matches!(
        reserve(&backend).await,
        Err(FreqLimitError::Rejected(_))
    ));
    // It was the replica that decided.
    let key = backend.redis_key(Some("k"));
    let key = String::from_utf8(key).unwrap();
    assert!(replica.command(&["EXISTS", &key]).unwrap() == ":1");
}

/// Issue 12 (6): the primary killed under a steady stream of calls. Calls fail
/// (at once, the circuit open) until the Sentinel has promoted the replica,
/// then resume on it, and no window of the whole run, before, across and
/// after the failover, admits more than `burst + w / T`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_fails_over_and_the_limit_holds() {
    let Some((mut primary, _replica, sentinel)) = three_servers().await else {
        return;
    };
    let backend = builder()
        .timeout(Duration::from_millis(200))
        .without_negative_cache()
        .connect_sentinel([sentinel.url()], "mymaster")
        .await
        .unwrap();
    let params = FreqLimitParams::per_second(20).with_burst(5);
    let killed = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (backend, killed) = (backend.clone(), Arc::clone(&killed));
        async move {
            let mut admitted = Vec::new();
            let (mut first_failure, mut resumed) = (None, None);
            let mut until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                let sent = wall_micros();
                let r = backend
                    .reserve(
                        Some("k"),
                        Timestamp::now(),
                        &params,
                        Reserve::new().no_wait(),
                    )
                    .await;
                let replied = wall_micros();
                match r {
                    Ok(_) => {
                        admitted.push((sent, replied));
                        if first_failure.is_some() && resumed.is_none() {
                            resumed = Some(Instant::now());
                            until = Instant::now() + Duration::from_secs(1);
                        }
                    }
                    Err(FreqLimitError::Rejected(_)) => {}
                    Err(FreqLimitError::Backend(_)) => {
                        assert!(killed.load(Ordering::Relaxed), "a failure before the kill");
                        first_failure.get_or_insert_with(Instant::now);
                    }
                    Err(other) => panic!("{other}"),
                }
                tokio::time::sleep(5 * MS).await;
            }
            (admitted, resumed)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    killed.store(true, Ordering::Relaxed);
    let kill = Instant::now();
    primary.stop();
    let (admitted, resumed) = caller.await.unwrap();
    let resumed = resumed.expect("calls never resumed after the primary was killed");
    let failover = resumed - kill;
    println!(
        "FIGURE sentinel failover (down-after 1 s): first success {failover:?} after the kill"
    );
    // Down-after 1 s, then the election and promotion: a few seconds.
    assert!(failover < Duration::from_secs(15), "{failover:?}");
    let worst = assert_within_the_bound(&admitted, &params);
    println!(
        "{} admitted; highest share of the bound in a window {worst:.2}",
        admitted.len()
    );
}
