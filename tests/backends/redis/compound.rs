//! Compound limits on Redis (issue 14): one script call decides every limit
//! as `gcra::compound::reserve_all` does, holes included (proptest against
//! it and `Holes::apply`, with single reservations and refunds mixed in, to
//! the microsecond, explicit times, every key's stored value compared), with
//! the cases of the in-memory backend run on both backends side by side: all
//! or nothing, overlapping waits, a limit charged at the common instant (its
//! gap a hole for single calls), a span taken in a hole, status, costs above
//! the burst, refunds of a cancelled wait, keys shared with single limits,
//! corrupt values, one round trip, and the failure policy.

use std::time::Duration;

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundAdmission, CompoundBackend, Part};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::backends::redis::{FailurePolicy, RedisBackend};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::holes::MAX_HOLES;
use tower_freqlimit::{
    Admission, BackendErrorKind, CompoundLimit, FreqLimit, FreqLimitError, FreqLimitParams,
    RefundToken, Reserve,
};

use super::compound_model::{in_nanos, parse};
use super::{builder, exact_backend};
use crate::support::redis_server::RedisServer;

/// An instant in whole microseconds (ns), far from 0.
pub(super) const T0: u64 = 1_000_000_000_000_000;
pub(super) const S: u64 = 1_000_000_000;
pub(super) const MS: u64 = 1_000_000;

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

    /// One single reservation at `at` ns on both backends: the answers must
    /// be equal (refund tokens included). The answers of Redis and memory.
    async fn single(
        &self,
        key: Option<&str>,
        params: &FreqLimitParams,
        at: u64,
        request: Reserve,
    ) -> Result<(Admission, Admission), FreqLimitError> {
        let now = Timestamp::from_nanos(at);
        let want = self.memory.reserve(key, now, params, request).await;
        let got = self.redis.reserve(key, now, params, request).await;
        assert_eq!(got, want, "{key:?} at {at}, {request:?}");
        if let (Ok(got), Ok(want)) = (&got, &want) {
            assert_eq!(in_nanos(got.refund_token()), want.refund_token());
        }
        Ok((got?, want?))
    }

    /// Cancels a single reservation on both backends.
    async fn refund(&self, key: Option<&str>, made: &(Admission, Admission)) {
        let key = key.map(str::to_owned);
        assert!(self.redis.refund(key.as_ref(), &made.0));
        assert!(self.memory.refund(key.as_ref(), &made.1));
        self.redis.refunds_settled().await;
    }

    /// The key's value in milliseconds from `T0`: "tat start1 end1 ..."
    /// (`$-1` for none).
    fn state(&self, key: Option<&str>) -> String {
        match parse(&self.value(key)) {
            None => "$-1".to_owned(),
            Some((tat, holes)) => std::iter::once(tat)
                .chain(holes.iter().flat_map(|h| [h.start, h.end]))
                .map(|v| ((v - T0) / MS).to_string())
                .collect::<Vec<_>>()
                .join(" "),
        }
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
    // The group, charged at 1 s, left [0.5 s, 1 s) free: a hole.
    assert_eq!(b.state(Some("group")), "1500 500 1000");
    // Later, the group alone decides: first in its hole, then at its TAT.
    let group_first = [(Some("group"), group), (Some("chat2"), CHAT)];
    let third = b.call(&group_first, T0, Reserve::new()).await.unwrap();
    assert_eq!(third.delay(), Duration::from_millis(500));
    assert_eq!(third.decided_by(), 0);
    assert_eq!(b.state(Some("group")), "1500");
    let group_first = [(Some("group"), group), (Some("chat3"), CHAT)];
    let fourth = b.call(&group_first, T0, Reserve::new()).await.unwrap();
    assert_eq!(fourth.delay(), Duration::from_millis(1_500));
    assert_eq!(fourth.decided_by(), 0);
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
    // Its burst before 1 s stays free for others (a hole): two single calls
    // at now pass at once; the next waits for the TAT, after the cell at 1 s.
    assert_eq!(b.state(None), "1500 0 1000");
    for _ in 0..2 {
        let (single, _) = b.single(None, &global, T0, Reserve::new()).await.unwrap();
        assert_eq!(single.delay(), Duration::ZERO);
    }
    assert_eq!(b.state(None), "1500");
    let (single, _) = b.single(None, &global, T0, Reserve::new()).await.unwrap();
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
    // The global bucket is charged at 1 s: the half second before is a hole,
    // which its refund (a span from the gap's end) must take back too.
    assert_eq!(b.state(None), "1500 500 1000");
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
    // The global bucket (a new key) was charged at 1 s after a gap from now:
    // its span, from the gap's end, and the gap (a hole) come back, so its
    // TAT is now, a full bucket.
    assert_eq!(b.state(None), "0");
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

/// A limit charged later than its TAT, because the call waits for another
/// limit, records the gap as a hole in its key's value: single calls on that
/// key use it at once, up to the compound's slot.
#[tokio::test]
async fn a_compound_waiting_for_one_limit_leaves_a_hole_in_the_others() {
    let Some(b) = Both::start().await else {
        return;
    };
    // "owed" is owed 10 s; "free" is full.
    b.single(Some("owed"), &CHAT, T0, Reserve::new().cost(10))
        .await
        .unwrap();
    let limits = [(Some("free"), CHAT), (Some("owed"), CHAT)];
    let compound = b.call(&limits, T0, Reserve::new()).await.unwrap();
    assert_eq!(compound.delay(), Duration::from_secs(10));
    assert_eq!(compound.decided_by(), 1);
    // "free" is charged at 10 s, and its first 10 s are a hole.
    assert_eq!(b.state(Some("free")), "11000 0 10000");
    assert_eq!(b.state(Some("owed")), "11000");
    let free = compound.parts()[0];
    assert_eq!(
        in_nanos(free.refund_token()),
        RefundToken {
            start: T0 + 10 * S,
            end: Some(T0 + 11 * S)
        }
    );
    assert_eq!(free.reset_after(), Duration::from_secs(11));
    // The key lives until its TAT, plus the caller's-clock slack (10 min).
    let ttl = b.server.int(&["PTTL", &b.name(Some("free"))]);
    assert!((605_000..=611_001).contains(&ttl), "PTTL {ttl}");
    // "free" alone at 1 s: admitted at once, in the hole.
    let (single, _) = b
        .single(Some("free"), &CHAT, T0 + S, Reserve::new())
        .await
        .unwrap();
    assert!(single.delay().is_zero());
    assert_eq!(b.state(Some("free")), "11000 2000 10000");
    // The hole serves one call a second up to the compound's slot.
    for second in 2..10 {
        let at = T0 + second * S;
        let a = b.single(Some("free"), &CHAT, at, Reserve::new().no_wait());
        assert!(a.await.is_ok(), "at {second} s");
    }
    assert_eq!(b.state(Some("free")), "11000");
    // At 10 s the compound runs: another call on "free" waits a period.
    let (next, _) = b
        .single(Some("free"), &CHAT, T0 + 10 * S, Reserve::new())
        .await
        .unwrap();
    assert_eq!(next.delay(), Duration::from_secs(1));
}

/// A compound takes its span in a hole of a key (a refund's) when that is
/// where the call can run: the TAT stays, the hole is split around the span.
#[tokio::test]
async fn a_compound_takes_its_span_in_a_hole() {
    let Some(b) = Both::start().await else {
        return;
    };
    // "k": five slots, 0 s to 5 s; the three in the middle given back.
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(
            b.single(Some("k"), &CHAT, T0, Reserve::new())
                .await
                .unwrap(),
        );
    }
    for m in &made[1..4] {
        b.refund(Some("k"), m).await;
    }
    assert_eq!(b.state(Some("k")), "5000 1000 4000");
    // "other" admits a unit call from 2 s on.
    b.single(Some("other"), &CHAT, T0, Reserve::new().cost(2))
        .await
        .unwrap();
    assert_eq!(b.state(Some("other")), "2000");

    // At 0.5 s, the compound runs at 2 s (for "other"): in "k" it takes
    // [2 s, 3 s) of the hole, whose parts before and after stay holes.
    let now = T0 + 500 * MS;
    let limits = [(Some("k"), CHAT), (Some("other"), CHAT)];
    let (compound, in_memory) = b.call_both(&limits, now, Reserve::new()).await.unwrap();
    assert_eq!(compound.delay(), Duration::from_millis(1_500));
    assert_eq!(compound.decided_by(), 1);
    assert_eq!(b.state(Some("k")), "5000 1000 2000 3000 4000");
    assert_eq!(b.state(Some("other")), "3000");
    let k = compound.parts()[0];
    assert_eq!(
        in_nanos(k.refund_token()),
        RefundToken {
            start: T0 + 2 * S,
            end: Some(T0 + 3 * S)
        }
    );
    // The TAT's figures: "k" still owes until 5 s.
    assert_eq!(k.reset_after(), Duration::from_millis(4_500));

    // Cancelled, it gives the span back: the hole is whole again.
    let keys = ["k".to_owned(), "other".to_owned()];
    let keys = [Some(&keys[0]), Some(&keys[1])];
    assert!(b.redis.refund_compound(&keys, &compound));
    assert!(b.memory.refund_compound(&keys, &in_memory));
    b.redis.refunds_settled().await;
    assert_eq!(b.state(Some("k")), "5000 1000 4000");
    assert_eq!(b.state(Some("other")), "2000");

    // Made again, the same; then single calls use what is left of the hole.
    let again = b.call(&limits, now, Reserve::new()).await.unwrap();
    assert_eq!(again, compound);
    assert_eq!(b.state(Some("k")), "5000 1000 2000 3000 4000");
    for (delay, state) in [(500, "5000 3000 4000"), (2_500, "5000"), (4_500, "6000")] {
        let (single, _) = b
            .single(Some("k"), &CHAT, now, Reserve::new())
            .await
            .unwrap();
        assert_eq!(single.delay(), Duration::from_millis(delay));
        assert_eq!(b.state(Some("k")), state);
    }
}

/// A key keeps at most `MAX_HOLES` holes: a compound that splits a hole in
/// two, or leaves a gap, on a key that has that many forgets the shortest
/// (the earliest of equals), as a refund does.
#[tokio::test]
async fn a_compound_keeps_at_most_max_holes_the_shortest_forgotten() {
    let Some(b) = Both::start().await else {
        return;
    };
    // "k": slots 0 s to n + 6 s, n = 2 (MAX_HOLES - 1); given back: the odd
    // ones below n (MAX_HOLES - 1 holes of 1 s) and n + 1 s to n + 4 s (one
    // of 3 s).
    let n = 2 * (MAX_HOLES as u64 - 1);
    let mut made = Vec::new();
    for _ in 0..n + 6 {
        made.push(
            b.single(Some("k"), &CHAT, T0, Reserve::new())
                .await
                .unwrap(),
        );
    }
    for slot in (1..n).step_by(2).chain(n + 1..n + 4) {
        b.refund(Some("k"), &made[slot as usize]).await;
    }
    let odd = |from: u64| -> String {
        (from..n)
            .step_by(2)
            .map(|s| format!(" {} {}", s * 1_000, (s + 1) * 1_000))
            .collect()
    };
    let ms = |s: u64| s * 1_000;
    assert_eq!(
        b.state(Some("k")),
        format!("{}{} {} {}", ms(n + 6), odd(1), ms(n + 1), ms(n + 4))
    );
    // A compound that runs at n + 2 s (for "a") takes [n + 2 s, n + 3 s) out
    // of the 3 s hole: one hole too many, and [1 s, 2 s) is forgotten.
    b.single(Some("a"), &CHAT, T0, Reserve::new().cost(n as u32 + 2))
        .await
        .unwrap();
    let first = b
        .call(&[(Some("k"), CHAT), (Some("a"), CHAT)], T0, Reserve::new())
        .await
        .unwrap();
    assert_eq!(first.delay(), Duration::from_secs(n + 2));
    assert_eq!(
        b.state(Some("k")),
        format!(
            "{}{} {} {} {} {}",
            ms(n + 6),
            odd(3),
            ms(n + 1),
            ms(n + 2),
            ms(n + 3),
            ms(n + 4)
        )
    );
    // One that runs at n + 10 s (for "b") leaves the gap [n + 6 s, n + 10 s)
    // in "k": [3 s, 4 s) is forgotten.
    b.single(Some("b"), &CHAT, T0, Reserve::new().cost(n as u32 + 10))
        .await
        .unwrap();
    let second = b
        .call(&[(Some("k"), CHAT), (Some("b"), CHAT)], T0, Reserve::new())
        .await
        .unwrap();
    assert_eq!(second.delay(), Duration::from_secs(n + 10));
    assert_eq!(
        b.state(Some("k")),
        format!(
            "{}{} {} {} {} {} {} {}",
            ms(n + 11),
            odd(5),
            ms(n + 1),
            ms(n + 2),
            ms(n + 3),
            ms(n + 4),
            ms(n + 6),
            ms(n + 10)
        )
    );
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
