//! The Redis backend through Sentinel, across a failover: a primary, a
//! replica and a Sentinel started by the test; `SENTINEL FAILOVER` promotes
//! the replica, and the backend moves to it with the key's state.

use std::time::{Duration, Instant};

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimitError, FreqLimitParams, Reserve};

use super::builder;
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

/// Issue 12 (6): the backend follows the Sentinels' primary through a
/// failover, and the limit holds across it (the state is replicated).
#[tokio::test]
async fn a_failover_moves_the_backend_to_the_new_primary_with_its_state() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
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
