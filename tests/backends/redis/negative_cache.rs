//! The negative cache's figures on the server's clock (the default): a caller
//! that retries exactly when a cached rejection said is admitted, also when the
//! server ran the rejecting call late (busy with another client), which is when
//! the caller's `now` and the server's differ most.

use std::io::{Read, Write};
use std::time::Duration;

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimitError, FreqLimitParams, Reserve};

use super::{MS, builder};
use crate::support::redis_server::RedisServer;

/// T = 100 ms, burst 1: after an admission the key owes 100 ms, long enough
/// that a call run 30 ms late is still refused and leaves a debt the cache
/// can prove.
const PARAMS: FreqLimitParams = FreqLimitParams::per_second(10);
const SERVER_BUSY: Duration = Duration::from_millis(30);

/// Keeps the server busy for `busy` (`DEBUG SLEEP`, on a connection of its
/// own); join the thread to know it is awake again.
fn put_to_sleep(server: &RedisServer, busy: Duration) -> std::thread::JoinHandle<()> {
    let port = server.port;
    let secs = format!("{:.3}", busy.as_secs_f64());
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cmd = format!(
            "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${}\r\n{secs}\r\n",
            secs.len()
        );
        s.write_all(cmd.as_bytes()).unwrap();
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    })
}

async fn call(b: &RedisBackend<String>) -> Result<(), Duration> {
    match b
        .reserve(
            Some("k"),
            Timestamp::now(),
            &PARAMS,
            Reserve::new().no_wait(),
        )
        .await
    {
        Ok(admission) => {
            assert!(admission.delay().is_zero(), "{admission:?}");
            Ok(())
        }
        Err(FreqLimitError::Rejected(r)) => Err(r.retry_after()),
        Err(other) => panic!("{other:?}"),
    }
}

/// Calls until admitted, waiting as told: the key then owes T again and the
/// cache holds nothing for it (an admission means its entry was paid).
async fn until_admitted(b: &RedisBackend<String>, mut outcome: Result<(), Duration>) {
    for _ in 0..20 {
        match outcome {
            Ok(()) => return,
            Err(wait) => tokio::time::sleep(wait).await,
        }
        outcome = call(b).await;
    }
    panic!("never admitted again");
}

#[tokio::test]
async fn a_retry_at_the_cached_retry_after_is_admitted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap();
    call(&b).await.unwrap();
    // (cycle, whether the server was busy, how much longer the key owed).
    let mut early = Vec::new();
    let (mut checked, mut skipped) = (0, 0);
    while checked < 50 {
        // A host so slow that the key's debt passes before the cache can
        // answer does not test the cache: such cycles start again, a bounded
        // number of times.
        assert!(skipped < 100, "{skipped} cycles skipped, {checked} checked");
        // Every other cycle the rejecting call waits behind another client's
        // command: its `now` is then long before the server's.
        let late = checked % 2 == 1;
        let sleeper = late.then(|| put_to_sleep(&server, SERVER_BUSY));
        if late {
            // Time for the DEBUG SLEEP to reach the server before the call.
            tokio::time::sleep(5 * MS).await;
        }
        let before = b.stats();
        // The key owes about T: the server refuses, the cache remembers.
        let refused = call(&b).await;
        if let Some(sleeper) = sleeper {
            sleeper.join().unwrap();
        }
        let after = b.stats();
        // Then the cache answers.
        let cached = call(&b).await;
        let from_the_server = after.script_calls == before.script_calls + 1;
        let from_the_cache = b.stats().cache_rejections == after.cache_rejections + 1;
        match cached {
            Err(retry_after) if refused.is_err() && from_the_server && from_the_cache => {
                checked += 1;
                tokio::time::sleep(retry_after).await;
                let retried = call(&b).await;
                if let Err(owed) = retried {
                    early.push((checked, late, owed));
                }
                until_admitted(&b, retried).await;
            }
            _ => {
                skipped += 1;
                until_admitted(&b, cached).await;
            }
        }
    }
    println!(
        "{} of 50 retries at the cached retry_after refused ({skipped} cycles skipped): {early:?}",
        early.len()
    );
    assert!(
        early.is_empty(),
        "retries at the cached retry_after refused (cycle, server busy, still owed): {early:?}"
    );
}

/// A hold is remembered the same way: the server counts it from its own now,
/// which may be well after the caller's.
#[tokio::test]
async fn a_retry_at_the_cached_retry_after_of_a_hold_is_admitted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap();
    let mut early = Vec::new();
    let (mut checked, mut skipped) = (0, 0);
    while checked < 5 {
        assert!(skipped < 20, "{skipped} cycles skipped, {checked} checked");
        let sleeper = put_to_sleep(&server, SERVER_BUSY);
        tokio::time::sleep(5 * MS).await;
        let moved = b
            .hold(Some("h"), Timestamp::now(), 100 * MS, &PARAMS)
            .await
            .unwrap();
        assert!(moved, "cycle {checked}");
        sleeper.join().unwrap();
        let before = b.stats().cache_rejections;
        let cached = b
            .reserve(
                Some("h"),
                Timestamp::now(),
                &PARAMS,
                Reserve::new().no_wait(),
            )
            .await;
        let retry_after = match cached {
            // (A host too slow for the cache to answer starts again.)
            Err(FreqLimitError::Rejected(r)) if b.stats().cache_rejections == before + 1 => {
                r.retry_after()
            }
            _ => {
                skipped += 1;
                tokio::time::sleep(2 * PARAMS.interval()).await;
                continue;
            }
        };
        checked += 1;
        tokio::time::sleep(retry_after).await;
        match b
            .reserve(
                Some("h"),
                Timestamp::now(),
                &PARAMS,
                Reserve::new().no_wait(),
            )
            .await
        {
            Ok(_) => {}
            Err(FreqLimitError::Rejected(r)) => {
                early.push((checked, r.retry_after()));
                tokio::time::sleep(r.retry_after()).await;
            }
            Err(other) => panic!("cycle {checked}: {other:?}"),
        }
        // The next hold starts from a paid debt.
        tokio::time::sleep(PARAMS.interval()).await;
    }
    assert!(
        early.is_empty(),
        "retries after a hold refused (cycle, still owed): {early:?}"
    );
}
