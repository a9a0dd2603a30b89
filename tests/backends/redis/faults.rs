//! The Redis backend while its server goes away and comes back: a circuit
//! that answers at once while the server is known to be down, probes in the
//! background, and a call that failed before it reached the server retried
//! once on a fresh connection.
//!
//! Real servers, real time: the tests assert states, counts and generous
//! bounds (a call that waits for reconnections takes ~100 ms; one answered by
//! the circuit, microseconds).

use std::time::{Duration, Instant};

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve};

use super::builder;
use crate::support::redis_server::RedisServer;

const MS: Duration = Duration::from_millis(1);

async fn call(backend: &RedisBackend<String>) -> Result<(), FreqLimitError> {
    let params = FreqLimitParams::per_second(1_000_000);
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

fn assert_unavailable(result: Result<(), FreqLimitError>, what: &str) {
    match result {
        Err(FreqLimitError::Backend(err)) => {
            assert_eq!(err.kind(), BackendErrorKind::Unavailable, "{what}: {err}");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// Waits (real time, up to 10 s) until the backend's circuit is `open`.
async fn until_circuit(backend: &RedisBackend<String>, open: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.stats().circuit_open != open {
        assert!(
            Instant::now() < deadline,
            "the circuit never became open={open}"
        );
        tokio::time::sleep(5 * MS).await;
    }
}

/// Issue 12 (A): with the server killed, every call waited through three
/// refused reconnections (~96 ms with a 1 s timeout). Once one call has
/// found the server down, the rest are answered at once, without a script
/// call, and the backend probes in the background until the server is back.
#[tokio::test]
async fn a_server_known_down_fails_calls_at_once_until_a_probe_finds_it_back() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // At any timeout: the calls after the first failure do not wait for it.
    for timeout in [Duration::from_millis(100), Duration::from_secs(1)] {
        let backend = builder()
            .timeout(timeout)
            .without_negative_cache()
            .connect(&server.url())
            .await
            .unwrap();
        call(&backend).await.unwrap();
        assert!(!backend.stats().circuit_open);

        server.stop();
        let first = Instant::now();
        assert_unavailable(call(&backend).await, "the call that finds the server down");
        let first = first.elapsed();
        let stats = backend.stats();
        assert!(stats.circuit_open);
        assert_eq!(stats.circuit_openings, 1);

        let started = Instant::now();
        for i in 0..50 {
            assert_unavailable(call(&backend).await, &format!("call {i} while down"));
        }
        let elapsed = started.elapsed();
        let after = backend.stats();
        assert_eq!(after.circuit_rejections, 50);
        assert_eq!(
            after.script_calls, stats.script_calls,
            "no call went to Redis"
        );
        // Generous: 50 calls through reconnections took 5 s.
        assert!(
            elapsed < Duration::from_millis(250),
            "50 calls took {elapsed:?}"
        );

        server.restart();
        let back = Instant::now();
        until_circuit(&backend, false).await;
        let closed = back.elapsed();
        call(&backend)
            .await
            .expect("the first call once the probe found the server");
        let stats = backend.stats();
        assert_eq!(stats.circuit_openings, 1);
        assert_eq!(stats.failures, 51);
        println!(
            "FIGURE redis down, timeout {timeout:?}: first failure {first:?}, then {:?} per call; \
             server back to circuit closed {closed:?} (no call)",
            elapsed / 50
        );
    }
}

/// Issue 12 (B): a backend that made no call while the server was down failed
/// its first call after the server came back ("broken pipe" on the stale
/// connection), although the command never reached the server. It is sent
/// again, once, on a fresh connection.
#[tokio::test]
async fn the_first_call_after_an_unnoticed_restart_succeeds() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let backend = builder()
        .timeout(Duration::from_secs(1))
        .without_negative_cache()
        .connect(&server.url())
        .await
        .unwrap();
    for round in 0..3 {
        call(&backend).await.unwrap();
        server.restart();
        tokio::time::sleep(300 * MS).await;
        call(&backend)
            .await
            .unwrap_or_else(|err| panic!("round {round}: first call after the restart: {err}"));
    }
    let stats = backend.stats();
    assert_eq!(stats.failures, 0);
    assert!(stats.retries >= 3, "{stats:?}");
}

/// A call whose outcome is unknown (the connection was lost after the script
/// was sent) is still never sent twice: with the server stopped mid-call
/// (`DEBUG SLEEP` holds the reply), the call fails and the key holds at most
/// the one reservation.
#[tokio::test]
async fn a_call_lost_after_it_was_sent_is_not_sent_again() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let backend = builder()
        .timeout(Duration::from_secs(5))
        .without_negative_cache()
        .connect(&server.url())
        .await
        .unwrap();
    call(&backend).await.unwrap();
    let before = backend.stats();
    // A command that stalls the server, then the call queued behind it, then
    // the server killed: the call's bytes were written, its reply never comes.
    let url = server.url();
    let stall = std::thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("2").query(&mut conn);
    });
    tokio::time::sleep(100 * MS).await;
    let pending = tokio::spawn({
        let backend = backend.clone();
        async move { call(&backend).await }
    });
    tokio::time::sleep(100 * MS).await;
    server.stop();
    let result = pending.await.unwrap();
    let _ = stall.join();
    assert!(result.is_err(), "{result:?}");
    let after = backend.stats();
    assert_eq!(after.script_calls, before.script_calls + 1);
    assert_eq!(
        after.retries, before.retries,
        "an unknown outcome is not retried"
    );
}

/// Issue 12 (E): a server that evicts keys forgets debts. The builder checks
/// the policy when it connects: refused when asked, accepted otherwise, and
/// accepted when the server will not say.
#[tokio::test]
async fn an_evicting_server_is_refused_when_asked() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    // The test server's defaults: no maxmemory, noeviction.
    builder()
        .refuse_evicting_server()
        .connect(&url)
        .await
        .unwrap();

    assert_eq!(
        server
            .command(&["CONFIG", "SET", "maxmemory", "100mb"])
            .unwrap(),
        "+OK"
    );
    builder()
        .refuse_evicting_server()
        .connect(&url)
        .await
        .unwrap();
    for policy in ["allkeys-lru", "volatile-ttl"] {
        assert_eq!(
            server
                .command(&["CONFIG", "SET", "maxmemory-policy", policy])
                .unwrap(),
            "+OK"
        );
        let err = builder()
            .refuse_evicting_server()
            .connect(&url)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Other);
        assert!(format!("{err} {err:?}").contains(policy), "{err:?}");
        // Without the request: connected (with a warning).
        builder().connect(&url).await.unwrap();
    }

    // A user who may not run CONFIG: the policy cannot be read, the server
    // is accepted.
    let acl = [
        "ACL", "SETUSER", "limiter", "on", ">pw", "~*", "&*", "+@all", "-config",
    ];
    assert_eq!(server.command(&acl).unwrap(), "+OK");
    let limited = format!("redis://limiter:pw@127.0.0.1:{}", server.port);
    let backend = builder()
        .refuse_evicting_server()
        .connect(&limited)
        .await
        .unwrap();
    call(&backend).await.unwrap();
}

/// Only a lost connection opens the circuit: a call the server refused (here
/// a key holding something else) fails alone, and the next call goes to Redis.
#[tokio::test]
async fn an_error_reply_does_not_open_the_circuit() {
    let Some((server, backend)) = super::started().await else {
        return;
    };
    let key = String::from_utf8(backend.redis_key(Some("k"))).unwrap();
    assert_eq!(server.command(&["SET", &key, "not a TAT"]).unwrap(), "+OK");
    let err = call(&backend).await.unwrap_err();
    assert!(matches!(err, FreqLimitError::Backend(_)), "{err:?}");
    assert!(!backend.stats().circuit_open);
    assert_eq!(server.command(&["DEL", &key]).unwrap(), ":1");
    call(&backend).await.unwrap();
    assert_eq!(backend.stats().circuit_openings, 0);
}
