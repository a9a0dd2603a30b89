//! Compound limits on Redis (issue 14): one script call decides every limit
//! as `gcra::compound::reserve_all` does (proptest against it, to the
//! microsecond, explicit times), with the cases of the in-memory backend run
//! on both backends side by side: all or nothing, overlapping waits, a limit
//! charged at the common instant, status, costs above the burst, refunds of a
//! cancelled wait, keys shared with single limits, corrupt values, holes
//! kept, one round trip, and the failure policy.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundAdmission, CompoundBackend, Part};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend, RedisClock};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::compound::{Limit, reserve_all};
use tower_freqlimit::{
    BackendErrorKind, CompoundLimit, FreqLimit, FreqLimitError, FreqLimitParams, Reserve,
};

use super::{builder, proptest_on_a_server};
use crate::support::redis_server::RedisServer;

/// An instant in whole microseconds (ns), far from 0.
const T0: u64 = 1_000_000_000_000_000;
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

async fn exact_backend(server: &RedisServer) -> RedisBackend<String> {
    builder()
        .clock(RedisClock::LimiterTimestamp)
        .timeout(Duration::from_secs(5))
        .without_negative_cache()
        .connect(&server.url())
        .await
        .expect("connect to the test server")
}

/// A Redis backend on the caller's clock and an in-memory one, given the same
/// calls.
struct Both {
    server: RedisServer,
    redis: RedisBackend<String>,
    memory: InMemoryBackend<String>,
}

impl Both {
    async fn start() -> Option<Self> {
        let server = RedisServer::start()?;
        let redis = exact_backend(&server).await;
        Some(Self {
            server,
            redis,
            memory: InMemoryBackend::<String>::builder()
                .without_sweeper()
                .build(),
        })
    }

    /// One compound at `at` ns on both backends: the answers must be equal
    /// (refund tokens included, Redis's in microseconds). Redis's answer.
    async fn call(
        &self,
        limits: &[(Option<&str>, FreqLimitParams)],
        at: u64,
        request: Reserve,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        self.call_both(limits, at, request)
            .await
            .map(|(redis, _)| redis)
    }

    /// [`call`](Self::call), with the answers of Redis and of memory.
    async fn call_both(
        &self,
        limits: &[(Option<&str>, FreqLimitParams)],
        at: u64,
        request: Reserve,
    ) -> Result<(CompoundAdmission, CompoundAdmission), FreqLimitError> {
        let keys: Vec<Option<String>> = limits.iter().map(|(k, _)| k.map(str::to_owned)).collect();
        let parts: Vec<Part<'_, String>> = keys
            .iter()
            .zip(limits)
            .map(|(key, (_, params))| Part::new(key.as_ref(), params))
            .collect();
        let now = Timestamp::from_nanos(at);
        let want = self.memory.reserve_compound(&parts, now, request).await;
        let got = self.redis.reserve_compound(&parts, now, request).await;
        assert_eq!(got, want, "{limits:?} at {at}, {request:?}");
        if let (Ok(got), Ok(want)) = (&got, &want) {
            assert_eq!(got.decided_by(), want.decided_by());
            for (g, w) in got.parts().iter().zip(want.parts()) {
                let (g, w) = (g.refund_token(), w.refund_token());
                assert_eq!(
                    (g.start * 1_000, g.end.map(|e| e * 1_000)),
                    (w.start, w.end)
                );
            }
        }
        Ok((got?, want?))
    }

    fn name(&self, key: Option<&str>) -> String {
        String::from_utf8(self.redis.redis_key(key)).unwrap()
    }

    /// The key's value as the server holds it (`$-1` for none).
    fn value(&self, key: Option<&str>) -> String {
        self.server.cmd(&["GET", &self.name(key)])
    }

    /// The stored TAT, in ns from `T0`.
    fn tat(&self, key: Option<&str>) -> u64 {
        let value = self.value(key);
        let tat: u64 = value.split(' ').next().unwrap().parse().unwrap();
        tat * 1_000 - T0
    }
}

fn rejection(result: Result<CompoundAdmission, FreqLimitError>) -> tower_freqlimit::Rejection {
    match result {
        Err(FreqLimitError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const CHAT: FreqLimitParams = FreqLimitParams::per_second(1);

#[tokio::test]
async fn a_refusal_stores_nothing_in_any_limit_and_names_the_limit_that_refused() {
    let Some(b) = Both::start().await else {
        return;
    };
    let global = FreqLimitParams::per_second(10).with_burst(10);
    let limits = [(Some("chat"), CHAT), (None, global)];
    b.call(&limits, T0, Reserve::new()).await.unwrap();
    let before = (b.value(Some("chat")), b.value(None));

    // The chat refuses: nothing taken from the global bucket either.
    let refused = rejection(b.call(&limits, T0, Reserve::new().no_wait()).await);
    assert_eq!(refused.limit(), 0);
    assert_eq!(refused.retry_after(), Duration::from_secs(1));
    assert_eq!(refused.reset_after(), Duration::from_secs(1));
    assert_eq!((b.value(Some("chat")), b.value(None)), before);

    // A global bucket drained by nine other chats refuses a new chat's call:
    // that chat's key is not even created.
    for i in 0..9 {
        let other = format!("other{i}");
        b.call(&[(Some(&other), CHAT), (None, global)], T0, Reserve::new())
            .await
            .unwrap();
    }
    let refused = rejection(
        b.call(
            &[(Some("new"), CHAT), (None, global)],
            T0,
            Reserve::new().max_wait(Duration::from_millis(40)),
        )
        .await,
    );
    assert_eq!(refused.limit(), 1);
    assert_eq!(refused.retry_after(), Duration::from_millis(60));
    assert_eq!(b.value(Some("new")), "$-1");
    assert_eq!(b.redis.stats().failures, 0);
}

#[tokio::test]
async fn waits_overlap_the_call_runs_at_the_longest() {
    let Some(b) = Both::start().await else {
        return;
    };
    let group = FreqLimitParams::per_second(2); // T = 500 ms
    let limits = [(Some("chat"), CHAT), (Some("group"), group)];
    b.call(&limits, T0, Reserve::new()).await.unwrap();
    // The chat owes 1 s, the group 0.5 s: the call waits 1 s, not 1.5 s.
    let second = b.call(&limits, T0, Reserve::new()).await.unwrap();
    assert_eq!(second.delay(), Duration::from_secs(1));
    assert_eq!(second.decided_by(), 0);
    // Each limit is charged at t = 1 s.
    assert_eq!(b.tat(Some("chat")), 2 * S);
    assert_eq!(b.tat(Some("group")), S + 500 * MS);
    // Later, the group alone decides.
    let group_first = [(Some("group"), group), (Some("chat2"), CHAT)];
    let third = b.call(&group_first, T0, Reserve::new()).await.unwrap();
    assert_eq!(third.delay(), Duration::from_millis(1_500));
    assert_eq!(third.decided_by(), 0);
}

#[tokio::test]
async fn a_limit_that_would_admit_sooner_is_charged_at_the_common_instant() {
    let Some(b) = Both::start().await else {
        return;
    };
    let global = FreqLimitParams::per_second(2).with_burst(2); // full
    b.call(&[(Some("chat"), CHAT)], T0, Reserve::new())
        .await
        .unwrap();
    let admitted = b
        .call(&[(Some("chat"), CHAT), (None, global)], T0, Reserve::new())
        .await
        .unwrap();
    assert_eq!(admitted.delay(), Duration::from_secs(1));
    // The global bucket's cell starts at t = 1 s, not at now: TAT 1.5 s.
    assert_eq!(b.tat(None), 1_500 * MS);
    assert_eq!(
        admitted.parts()[1].reset_after(),
        Duration::from_millis(1_500)
    );
    // So a single call on the global bucket at now waits until then too.
    let single = b
        .redis
        .reserve(
            None::<&str>,
            Timestamp::from_nanos(T0),
            &global,
            Reserve::new(),
        )
        .await
        .unwrap();
    assert_eq!(single.delay(), Duration::from_secs(1));
}

#[tokio::test]
async fn cost_zero_is_a_status_that_stores_nothing() {
    let Some(b) = Both::start().await else {
        return;
    };
    let chat = FreqLimitParams::per_second(1).with_burst(3);
    let global = FreqLimitParams::per_second(100).with_burst(100);
    let limits = [(Some("chat"), chat), (None, global)];
    b.call(&limits, T0, Reserve::new().cost(3)).await.unwrap();
    let before = (b.value(Some("chat")), b.value(None));
    let status = b.call(&limits, T0, Reserve::new().cost(0)).await.unwrap();
    assert_eq!(status.delay(), Duration::from_secs(1)); // a unit call's wait
    assert_eq!(status.decided_by(), 0);
    assert_eq!(
        (status.parts()[0].remaining(), status.parts()[1].remaining()),
        (0, 97)
    );
    assert!(
        status
            .parts()
            .iter()
            .all(|p| p.refund_token().end.is_none())
    );
    assert_eq!((b.value(Some("chat")), b.value(None)), before);
    // On new keys: nothing created.
    let fresh = [(Some("fresh"), chat), (Some("fresh2"), global)];
    let status = b.call(&fresh, T0, Reserve::new().cost(0)).await.unwrap();
    assert_eq!(status.parts()[0].remaining(), 3);
    assert_eq!(
        b.server
            .int(&["EXISTS", &b.name(Some("fresh")), &b.name(Some("fresh2"))]),
        0
    );
}

#[tokio::test]
async fn costs_above_a_burst_wait_or_are_refused_before_anything_is_stored() {
    let Some(b) = Both::start().await else {
        return;
    };
    let small = FreqLimitParams::per_second(1).with_burst(2);
    let big = FreqLimitParams::per_second(10).with_burst(10);
    let limits = [(Some("big"), big), (Some("small"), small)];
    // Cost 3 on a burst of 2: never within no_wait.
    match b.call(&limits, T0, Reserve::new().cost(3).no_wait()).await {
        Err(FreqLimitError::CostExceedsCapacity {
            cost: 3,
            max_cost: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.server.int(&["DBSIZE"]), 0);
    // Waiting for it: the last cell of the small limit at 1 s, and the big
    // limit charged at t = 1 s minus its own lead (none: 3 fit its burst).
    let admitted = b.call(&limits, T0, Reserve::new().cost(3)).await.unwrap();
    assert_eq!(admitted.delay(), Duration::from_secs(1));
    assert_eq!(admitted.decided_by(), 1);
    assert_eq!(b.tat(Some("small")), 3 * S);
    assert_eq!(b.tat(Some("big")), S + 300 * MS);

    // Where the server's whole microseconds admit less than the nanoseconds
    // (T = 333 333.3 ns rounded up, max_wait rounded down), the script
    // refuses the cost itself, naming the limit whose figures it used.
    let thirds = FreqLimitParams::per_second(3).with_burst(2);
    let wait = Duration::from_nanos(333_333_500);
    let parts_keys = [Some("x".to_owned()), Some("y".to_owned())];
    let parts = [
        Part::new(parts_keys[0].as_ref(), &big),
        Part::new(parts_keys[1].as_ref(), &thirds),
    ];
    let got = b
        .redis
        .reserve_compound(
            &parts,
            Timestamp::from_nanos(T0),
            Reserve::new().cost(3).max_wait(wait),
        )
        .await;
    match got {
        Err(FreqLimitError::CostExceedsCapacity {
            cost: 3,
            max_cost: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.server
            .int(&["EXISTS", &b.name(Some("x")), &b.name(Some("y"))]),
        0
    );
}

#[tokio::test]
async fn a_refund_gives_back_every_part_of_a_compound() {
    let Some(b) = Both::start().await else {
        return;
    };
    let global = FreqLimitParams::per_second(2).with_burst(2);
    let limits = [(Some("chat"), CHAT), (None, global)];
    b.call(&limits, T0, Reserve::new()).await.unwrap();
    let before = (b.value(Some("chat")), b.value(None));
    let (waiting, in_memory) = b.call_both(&limits, T0, Reserve::new()).await.unwrap();
    assert_eq!(waiting.delay(), Duration::from_secs(1));
    let chat = "chat".to_owned();
    assert!(b.redis.refund_compound(&[Some(&chat), None], &waiting));
    assert!(b.memory.refund_compound(&[Some(&chat), None], &in_memory));
    b.redis.refunds_settled().await;
    assert_eq!((b.value(Some("chat")), b.value(None)), before);
    // The same call gets the same slot again.
    let again = b.call(&limits, T0, Reserve::new()).await;
    assert_eq!(again.unwrap(), waiting);
}

#[tokio::test]
async fn a_dropped_wait_of_a_compound_limit_gives_every_slot_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The server's clock: as a real deployment.
    let backend = builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap();
    let limits = CompoundLimit::new(backend.clone())
        .limit("per-chat", FreqLimitParams::per_minute(1))
        .limit("per-group", FreqLimitParams::per_minute(2))
        .limit("global", FreqLimitParams::per_minute(30).with_burst(30));
    let (chat, group) = ("chat".to_owned(), "group".to_owned());
    let keys = [Some(&chat), Some(&group), None];
    limits.acquire(&keys).await.unwrap();
    let names: Vec<String> = [Some("chat"), Some("group"), None]
        .iter()
        .map(|k| String::from_utf8(backend.redis_key(*k)).unwrap())
        .collect();
    let values = || -> Vec<String> { names.iter().map(|n| server.cmd(&["GET", n])).collect() };
    let before = values();
    // The next call waits a minute for the chat: given up after 100 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), limits.acquire(&keys)).await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    backend.refunds_settled().await;
    assert_eq!(backend.stats().refunds_sent, 3);
    assert_eq!(values(), before);
    let status = limits.status(&keys).await.unwrap();
    assert_eq!(
        status
            .parts()
            .iter()
            .map(|p| p.remaining())
            .collect::<Vec<_>>(),
        [0, 0, 29]
    );
}

#[tokio::test]
async fn compound_and_single_reservations_share_a_key_and_its_refunds() {
    let Some(b) = Both::start().await else {
        return;
    };
    let now = Timestamp::from_nanos(T0);
    let chat = "chat".to_owned();
    // A single reservation takes the chat's slot: the compound waits for it.
    b.redis
        .reserve(Some("chat"), now, &CHAT, Reserve::new())
        .await
        .unwrap();
    b.memory
        .reserve(Some(&chat), now, &CHAT, Reserve::new())
        .await
        .unwrap();
    let global = FreqLimitParams::per_second(100).with_burst(100);
    let limits = [(Some("chat"), CHAT), (None, global)];
    let admitted = b.call(&limits, T0, Reserve::new()).await.unwrap();
    assert_eq!(admitted.delay(), Duration::from_secs(1));
    // And a single reservation sees the compound's slot taken.
    let after = b
        .redis
        .reserve(Some("chat"), now, &CHAT, Reserve::new())
        .await
        .unwrap();
    assert_eq!(after.delay(), Duration::from_secs(2));
    // One key for both: the chat's and the global bucket's, nothing else.
    assert_eq!(b.server.int(&["DBSIZE"]), 2);
    // The single reservation's last slot given back, then the compound's:
    // refund.lua takes both spans on the shared key.
    assert!(b.redis.refund(Some(&chat), &after));
    b.redis.refunds_settled().await;
    assert_eq!(b.tat(Some("chat")), 2 * S);
    assert!(b.redis.refund_compound(&[Some(&chat), None], &admitted));
    b.redis.refunds_settled().await;
    assert_eq!(b.tat(Some("chat")), S);
    // The global bucket's span started at 0 (a new key's): back to that.
    assert_eq!(b.value(None), "0");
}

#[tokio::test]
async fn a_compound_limit_and_a_freq_limit_on_one_backend_share_a_key() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The server's clock, as in a deployment.
    let backend = builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap();
    let per_chat = FreqLimitParams::per_minute(1);
    let single = FreqLimit::new(per_chat, backend.clone());
    let compound = CompoundLimit::new(backend.clone())
        .limit("per-chat", per_chat)
        .limit("global", FreqLimitParams::per_minute(100).with_burst(100));
    let (one, two) = ("one".to_owned(), "two".to_owned());

    single.try_acquire("one").await.unwrap();
    let refused = rejection(compound.try_acquire(&[Some(&one), None]).await);
    assert_eq!(refused.limit(), 0);
    assert!(
        refused.retry_after() > Duration::from_secs(55),
        "{refused:?}"
    );
    let status = compound.status(&[Some(&one), None]).await.unwrap();
    assert_eq!(status.parts()[1].remaining(), 100);

    compound.try_acquire(&[Some(&two), None]).await.unwrap();
    assert!(matches!(
        single.try_acquire("two").await,
        Err(FreqLimitError::Rejected(_))
    ));
    assert_eq!(server.int(&["DBSIZE"]), 3);
}

#[tokio::test]
async fn holes_of_a_key_are_kept_by_a_compound() {
    let Some(b) = Both::start().await else {
        return;
    };
    let now = Timestamp::from_nanos(T0);
    let params = FreqLimitParams::per_second(1);
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            b.redis
                .reserve(Some("k"), now, &params, Reserve::new())
                .await
                .unwrap(),
        );
    }
    // The middle one given back: a hole [1 s, 2 s) below the TAT 3 s.
    assert!(b.redis.refund(Some(&"k".to_owned()), &made[1]));
    b.redis.refunds_settled().await;
    let t0_us = T0 / 1_000;
    assert_eq!(
        b.value(Some("k")),
        format!(
            "{} {} {}",
            t0_us + 3_000_000,
            t0_us + 1_000_000,
            t0_us + 2_000_000
        )
    );
    // A compound appends at the TAT and keeps the hole.
    let parts_keys = [Some("k".to_owned())];
    let parts = [Part::new(parts_keys[0].as_ref(), &params)];
    let admitted = b
        .redis
        .reserve_compound(&parts, now, Reserve::new())
        .await
        .unwrap();
    assert_eq!(admitted.delay(), Duration::from_secs(3));
    assert_eq!(
        b.value(Some("k")),
        format!(
            "{} {} {}",
            t0_us + 4_000_000,
            t0_us + 1_000_000,
            t0_us + 2_000_000
        )
    );
    // And its TTL is that of its TAT (plus the caller's-clock slack).
    let ttl = b.server.int(&["PTTL", &b.name(Some("k"))]);
    assert!((600_000..=604_001).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn a_corrupt_value_in_one_limit_stores_nothing_in_any() {
    let Some(b) = Both::start().await else {
        return;
    };
    b.server.cmd(&["SET", &b.name(None), "1e300"]);
    let parts_keys = [Some("chat".to_owned()), None];
    let global = FreqLimitParams::per_second(10);
    let parts = [
        Part::new(parts_keys[0].as_ref(), &CHAT),
        Part::new(parts_keys[1].as_ref(), &global),
    ];
    match b
        .redis
        .reserve_compound(&parts, Timestamp::from_nanos(T0), Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => {
            assert_eq!(e.kind(), BackendErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("limit 1 of the compound"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.value(Some("chat")), "$-1");
    assert_eq!(b.value(None), "1e300");
}

#[tokio::test]
async fn one_compound_decision_is_one_round_trip() {
    let Some(b) = Both::start().await else {
        return;
    };
    let limits = [
        (Some("chat"), CHAT),
        (Some("group"), FreqLimitParams::per_minute(20)),
        (None, FreqLimitParams::per_second(25)),
    ];
    // The server's first sight of the script is EVALSHA (NOSCRIPT) then EVAL.
    b.call(&[(Some("warm-up"), CHAT)], T0, Reserve::new())
        .await
        .unwrap();
    let (calls, sent) = (b.server.script_calls(), b.redis.stats().script_calls);
    b.call(&limits, T0, Reserve::new()).await.unwrap();
    assert_eq!(b.server.script_calls() - calls, 1);
    assert_eq!(b.redis.stats().script_calls - sent, 1);
    rejection(b.call(&limits, T0, Reserve::new().no_wait()).await);
    assert_eq!(b.server.script_calls() - calls, 2);
    // Every key written by that one call.
    assert_eq!(b.server.int(&["DBSIZE"]), 4);
}

#[tokio::test]
async fn the_failure_policy_decides_a_compound_redis_cannot() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let connect = |policy| {
        builder()
            .failure_policy(policy)
            .timeout(Duration::from_secs(2))
            .connect(&url)
    };
    let closed = connect(FailurePolicy::Closed).await.unwrap();
    let open = connect(FailurePolicy::Open).await.unwrap();
    server.stop();
    let (chat, global) = (
        "chat".to_owned(),
        FreqLimitParams::per_second(10).with_burst(4),
    );
    let parts = [Part::new(Some(&chat), &CHAT), Part::new(None, &global)];
    match closed
        .reserve_compound(&parts, Timestamp::now(), Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Unavailable),
        other => panic!("{other:?}"),
    }
    let admitted = open
        .reserve_compound(&parts, Timestamp::now(), Reserve::new())
        .await
        .unwrap();
    assert!(admitted.delay().is_zero());
    assert!(admitted.parts().iter().all(|p| p.is_fail_open()));
    assert_eq!(admitted.parts()[1].remaining(), 3);
    assert!(!open.refund_compound(&[Some(&chat), None], &admitted));
    assert_eq!(
        (open.stats().failures, open.stats().fail_open_admissions),
        (1, 1)
    );
    // Parts that are not a compound are an error whatever the policy.
    let twice = [
        Part::new(Some(&chat), &CHAT),
        Part::new(Some(&chat), &global),
    ];
    match open
        .reserve_compound(&twice, Timestamp::now(), Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Other),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_compound_that_times_out_fails_as_the_policy_says() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let connect = |policy| {
        builder()
            .failure_policy(policy)
            .timeout(Duration::from_millis(100))
            .connect(&url)
    };
    let closed = connect(FailurePolicy::Closed).await.unwrap();
    let open = connect(FailurePolicy::Open).await.unwrap();
    let chat = "chat".to_owned();
    let parts = [Part::new(Some(&chat), &CHAT), Part::new(None, &CHAT)];
    // Load the script, then stall the server for longer than the timeout.
    closed
        .reserve_compound(&parts, Timestamp::now(), Reserve::new().cost(0))
        .await
        .unwrap();
    let stall = std::thread::spawn({
        let url = url.clone();
        move || {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_connection().unwrap();
            let _: redis::RedisResult<()> =
                redis::cmd("DEBUG").arg("SLEEP").arg("0.5").query(&mut conn);
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    match closed
        .reserve_compound(&parts, Timestamp::now(), Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Timeout),
        other => panic!("{other:?}"),
    }
    let admitted = open
        .reserve_compound(&parts, Timestamp::now(), Reserve::new())
        .await
        .unwrap();
    assert!(admitted.parts().iter().all(|p| p.is_fail_open()));
    stall.join().unwrap();
    assert_eq!(closed.stats().failures, 1);
    assert_eq!(open.stats().fail_open_admissions, 1);
}

#[tokio::test]
async fn the_negative_cache_learns_from_a_compound_for_single_calls() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The default negative cache, the server's clock.
    let backend = builder()
        .timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await
        .unwrap();
    let per_chat = FreqLimitParams::per_minute(1);
    let limits = CompoundLimit::new(backend.clone())
        .limit("per-chat", per_chat)
        .limit("global", FreqLimitParams::per_minute(100).with_burst(100));
    let chat = "chat".to_owned();
    limits.try_acquire(&[Some(&chat), None]).await.unwrap();
    // Asked of Redis each time: the cache does not answer compounds.
    for _ in 0..2 {
        assert_eq!(
            rejection(limits.try_acquire(&[Some(&chat), None]).await).limit(),
            0
        );
    }
    assert_eq!(backend.stats().script_calls, 3);
    assert_eq!(backend.stats().cache_rejections, 0);
    // A single call on the chat's key is refused by the cache.
    let single = FreqLimit::new(per_chat, backend.clone());
    let calls = server.script_calls();
    match single.try_acquire("chat").await {
        Err(FreqLimitError::Rejected(r)) => {
            assert!(r.retry_after() > Duration::from_secs(55), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(backend.stats().cache_rejections, 1);
    assert_eq!(server.script_calls(), calls);
}

// ---------------------------------------------------------------------------
// The script is reserve_all, in microseconds
// ---------------------------------------------------------------------------

/// One call of a history: which limits (a bit mask over the case's limits),
/// after how long, at what cost and patience.
#[derive(Debug, Clone)]
struct Call {
    mask: u8,
    dt_us: u64,
    cost: u32,
    max_wait_us: Option<u64>,
    /// A single reservation on the first limit of the mask instead.
    single: bool,
}

fn calls(limits: usize, t_max_us: u64) -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec(
        (
            1u8..(1 << limits),
            prop_oneof![Just(0u64), 0..=2 * t_max_us],
            0u32..=6,
            prop_oneof![Just(None), Just(Some(0)), (0..=3 * t_max_us).prop_map(Some)],
            prop::bool::weighted(0.15),
        )
            .prop_map(|(mask, dt_us, cost, max_wait_us, single)| Call {
                mask,
                dt_us,
                cost,
                max_wait_us,
                single,
            }),
        1..30,
    )
}

#[test]
fn the_compound_script_agrees_with_reserve_all() {
    let Some((server, rt, config)) = proptest_on_a_server(32) else {
        return;
    };
    // 1 to 4 limits, T in whole microseconds (1 to 200 ms), bursts 1 to 4;
    // the last limit is the global bucket or a key.
    let strategy = (
        prop::collection::vec((1u64..=200_000, 1u32..=4), 1..=4),
        any::<bool>(),
    )
        .prop_flat_map(|(limits, global)| {
            let t_max = limits.iter().map(|l| l.0).max().unwrap();
            let n = limits.len();
            (Just(limits), Just(global), calls(n, t_max))
        });
    proptest!(config, |((limits, global, calls) in strategy)| {
        let params: Vec<FreqLimitParams> = limits
            .iter()
            .map(|&(t, burst)| FreqLimitParams::new(1, Duration::from_micros(t), burst))
            .collect();
        let keys: Vec<Option<String>> = (0..limits.len())
            .map(|i| (!(global && i == limits.len() - 1)).then(|| format!("k{i}")))
            .collect();
        rt.block_on(async {
            let redis = exact_backend(&server).await;
            let mut tats: HashMap<usize, u64> = HashMap::new();
            let mut now = T0;
            for (step, call) in calls.iter().enumerate() {
                now += call.dt_us * 1_000;
                let mut request = Reserve::new().cost(call.cost);
                if let Some(w) = call.max_wait_us {
                    request = request.max_wait(Duration::from_micros(w));
                }
                let chosen: Vec<usize> = (0..limits.len()).filter(|i| call.mask & (1 << i) != 0).collect();
                let at = Timestamp::from_nanos(now);
                if call.single {
                    let i = chosen[0];
                    let want = tower_freqlimit::gcra::reserve(tats.get(&i).copied(), now, &params[i], &request);
                    let got = redis.reserve(keys[i].as_deref(), at, &params[i], request).await;
                    prop_assert_eq!(&got, &want.map(|r| r.admission).map_err(FreqLimitError::from), "step {}: {:?}", step, call);
                    if let Ok(r) = want && let Some(tat) = r.new_tat {
                        tats.insert(i, tat);
                    }
                    continue;
                }
                let model: Vec<Limit<'_>> = chosen.iter().map(|&i| Limit::new(tats.get(&i).copied(), &params[i])).collect();
                let want = reserve_all(&model, now, &request);
                let parts: Vec<Part<'_, String>> = chosen.iter().map(|&i| Part::new(keys[i].as_ref(), &params[i])).collect();
                let got = redis.reserve_compound(&parts, at, request).await;
                match (&got, &want) {
                    (Ok(got), Ok(want)) => {
                        prop_assert_eq!(got, &CompoundAdmission::from_reserved(want), "step {}: {:?}", step, call);
                        for (g, w) in got.parts().iter().zip(want.admissions()) {
                            let (g, w) = (g.refund_token(), w.refund_token());
                            prop_assert_eq!((g.start * 1_000, g.end.map(|e| e * 1_000)), (w.start, w.end), "step {}", step);
                        }
                        for (&i, charge) in chosen.iter().zip(want.charges()) {
                            if let Some(tat) = charge.new_tat() {
                                tats.insert(i, tat);
                            }
                        }
                    }
                    (Err(got), Err(want)) => {
                        // A rejection's equality includes the limit it names.
                        prop_assert_eq!(got, &FreqLimitError::from(want.refusal), "step {}: {:?}", step, call);
                    }
                    _ => prop_assert!(false, "step {}: {:?}: got {:?}, want {:?}", step, call, got, want),
                }
                // What the server holds is what the model holds.
                for (i, key) in keys.iter().enumerate() {
                    let name = String::from_utf8(redis.redis_key(key.as_deref())).unwrap();
                    let stored = server.cmd(&["GET", &name]);
                    let want = tats.get(&i).map_or("$-1".to_owned(), |t| (t / 1_000).to_string());
                    prop_assert_eq!(stored, want, "step {}, limit {}", step, i);
                }
            }
            Ok(())
        })?;
    });
}
