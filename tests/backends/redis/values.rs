//! Values the backend did not write (issue 12): a key whose value is not
//! "tat start1 end1 ..." in whole microseconds up to 2^53, holes in order below
//! the TAT, is corrupt. Every script refuses it with a `Corrupt` error and
//! stores nothing; no negative-cache entry comes of it, so after a `DEL` the
//! key starts fresh in the same process.

use std::time::Duration;

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{Admission, BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve};

use super::builder;
use crate::support::redis_server::RedisServer;

/// Every number Lua's `tonumber` reads but the scripts never write, then
/// values of the wrong shape.
const CORRUPT: [&str; 16] = [
    "inf",
    "-inf",
    "nan",
    "1e300",
    "-5",
    "1.5",
    "0x10",
    "12abc",
    "9007199254740993",
    "100000000000000000000",
    "",
    "100 10",
    "100 50 40",
    "1000 10 20 15 30",
    "100 10 200",
    "100 10 inf",
];

const PARAMS: FreqLimitParams = FreqLimitParams::per_second(10);

async fn connect(server: &RedisServer, policy: FailurePolicy) -> RedisBackend<String> {
    builder()
        .failure_policy(policy)
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap()
}

/// What a call came to, in a word.
fn outcome<T: std::fmt::Debug>(result: &Result<T, FreqLimitError>) -> String {
    match result {
        Err(FreqLimitError::Backend(e)) if e.kind() == BackendErrorKind::Corrupt => {
            "corrupt".to_owned()
        }
        other => format!("{other:?}"),
    }
}

async fn reserve(
    b: &RedisBackend<String>,
    key: &str,
    r: Reserve,
) -> Result<Admission, FreqLimitError> {
    b.reserve(Some(key), Timestamp::now(), &PARAMS, r).await
}

/// The key's value and time to live, as the server holds them.
fn stored(server: &RedisServer, name: &str) -> (String, String) {
    (server.cmd(&["GET", name]), server.cmd(&["PTTL", name]))
}

#[tokio::test]
async fn corrupt_values_are_refused_kept_as_they_are_and_forgotten_after_del() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = connect(&server, FailurePolicy::Closed).await;
    // (value, what went wrong).
    let mut problems: Vec<(&str, String)> = Vec::new();
    for (i, value) in CORRUPT.into_iter().enumerate() {
        let key = format!("k{i}");
        let name = String::from_utf8(b.redis_key(Some(key.as_str()))).unwrap();
        let mut problem = |what: String| problems.push((value, what));
        // A reservation to give back once the value is corrupt.
        let admission = reserve(&b, &key, Reserve::new()).await.unwrap();
        server.cmd(&["SET", &name, value]);
        let untouched = (value.to_owned(), ":-1".to_owned());

        assert!(b.refund(Some(&key), &admission));
        b.refunds_settled().await;
        if stored(&server, &name) != untouched {
            problem(format!("the refund stored {:?}", stored(&server, &name)));
        }
        let waiting = reserve(&b, &key, Reserve::new()).await;
        if outcome(&waiting) != "corrupt" {
            problem(format!("a waiting call: {}", outcome(&waiting)));
        }
        let no_wait = reserve(&b, &key, Reserve::new().no_wait()).await;
        if outcome(&no_wait) != "corrupt" {
            problem(format!("a call that does not wait: {}", outcome(&no_wait)));
        }
        let held = b
            .hold(
                Some(key.as_str()),
                Timestamp::now(),
                Duration::from_secs(60),
                &PARAMS,
            )
            .await;
        if outcome(&held) != "corrupt" {
            problem(format!("a hold: {}", outcome(&held)));
        }
        if stored(&server, &name) != untouched {
            problem(format!("the calls stored {:?}", stored(&server, &name)));
        }

        // The repair: delete the key; the next call starts it fresh.
        server.cmd(&["DEL", &name]);
        let fresh = reserve(&b, &key, Reserve::new().no_wait()).await;
        if fresh.is_err() {
            problem(format!("after DEL: {}", outcome(&fresh)));
        }
    }
    for (value, what) in &problems {
        println!("{value:?}: {what}");
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn the_corrupt_error_says_what_it_is_and_fail_open_lets_the_call_through() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let closed = connect(&server, FailurePolicy::Closed).await;
    let open = connect(&server, FailurePolicy::Open).await;
    for b in [&closed, &open] {
        let name = String::from_utf8(b.redis_key(Some("k"))).unwrap();
        server.cmd(&["SET", &name, "1e300"]);
    }
    match reserve(&closed, "k", Reserve::new()).await {
        Err(FreqLimitError::Backend(e)) => {
            assert_eq!(e.kind(), BackendErrorKind::Corrupt, "{e}");
            let message = e.to_string();
            assert!(message.contains("corrupt value"), "{message}");
            assert!(message.contains("1e300"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        reserve(&open, "k", Reserve::new())
            .await
            .unwrap()
            .is_fail_open()
    );
    assert_eq!(closed.stats().failures, 1);
    assert_eq!(open.stats().fail_open_admissions, 1);
}

/// The bounds themselves are values the scripts write: 2^53 (saturated),
/// leading zeros, holes that touch.
#[tokio::test]
async fn values_at_the_bounds_are_read() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = connect(&server, FailurePolicy::Closed).await;
    let cases = [
        ("9007199254740992", false),
        ("0", true),
        ("0000000000000000000100", true),
        ("100 10 20 20 30", true),
        ("100 10 20 30 100", true),
    ];
    for (i, (value, admitted)) in cases.into_iter().enumerate() {
        let key = format!("b{i}");
        let name = String::from_utf8(b.redis_key(Some(key.as_str()))).unwrap();
        server.cmd(&["SET", &name, value]);
        let result = reserve(&b, &key, Reserve::new().no_wait()).await;
        match result {
            Ok(_) => assert!(admitted, "{value}"),
            Err(FreqLimitError::Rejected(_)) => assert!(!admitted, "{value}"),
            Err(other) => panic!("{value:?}: {other:?}"),
        }
    }
}
