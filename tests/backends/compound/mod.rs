//! Compound reservations on the in-memory backend
//! (`src/backends/memory/compound.rs`, `src/gcra/compound.rs`):
//!
//! * against a sequential model written from the rules (the call
//!   runs at `t = max` of each limit's earliest conforming time, every
//!   limit charged at `t`, all or nothing), with single calls, holes and
//!   cancellations mixed in: every decision, refund tokens included;
//! * never more than `burst + w / T` units in any window `w`, per key;
//! * threads racing on overlapping compounds (and single calls) admit
//!   exactly what a sequential schedule admits;
//! * the cases a user meets: a non-binding limit charged at `t`, a refusal
//!   consuming nothing, errors for bad keys.

mod model;

use std::sync::Arc;
use std::time::Duration;

use tower_freqlimit::backends::compound::{CompoundAdmission, Part};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{BackendErrorKind, CompoundLimit, FreqLimitError, FreqLimitParams, Reserve};

use self::model::{Made, S, assert_within_the_bound};
use crate::refund::T0;
/// A limit that would admit the call sooner is charged at the call's instant
/// `t`, not at `now`: charged at `now`, it would let a single call in at
/// `t` too, two calls at one instant on a burst of one.
#[test]
fn a_limit_that_does_not_decide_is_charged_when_the_call_runs() {
    let backend = InMemoryBackend::<&str>::builder().without_sweeper().build();
    let (free, owed) = (
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(1),
    );
    let at = |ns| Timestamp::from_nanos(T0 + ns);
    // "owed" is owed 10 s; "free" is full.
    backend
        .reserve_now(Some(&"owed"), at(0), &owed, Reserve::new().cost(10))
        .unwrap();
    let parts = [
        Part::new(Some(&"free"), &free),
        Part::new(Some(&"owed"), &owed),
    ];
    let compound = backend
        .reserve_compound_now(&parts, at(0), Reserve::new())
        .unwrap();
    assert_eq!(compound.delay(), Duration::from_secs(10));
    assert_eq!(compound.decided_by(), 1);
    // "free" alone at 1 s: admitted at once, in the gap the compound left
    // before its slot at 10 s.
    let single = backend
        .reserve_now(Some(&"free"), at(S), &free, Reserve::new())
        .unwrap();
    assert!(single.delay().is_zero());
    // The gap serves one call a second up to the compound's slot.
    for second in 2..10 {
        let a = backend.reserve_now(
            Some(&"free"),
            at(second * S),
            &free,
            Reserve::new().no_wait(),
        );
        assert!(a.is_ok(), "at {second} s: {a:?}");
    }
    // At 10 s the compound runs: another call on "free" then waits a period.
    let next = backend
        .reserve_now(Some(&"free"), at(10 * S), &free, Reserve::new())
        .unwrap();
    assert_eq!(next.delay(), Duration::from_secs(1));
}

/// A refusal takes nothing from any limit, and says which limit refused and
/// when every limit will admit the call.
#[test]
fn a_refusal_consumes_nothing_in_any_limit() {
    let backend = InMemoryBackend::<&str>::builder().without_sweeper().build();
    let (chat, global) = (
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(10).with_burst(10),
    );
    let now = Timestamp::from_nanos(T0);
    let parts = [Part::new(Some(&"chat"), &chat), Part::new(None, &global)];
    backend
        .reserve_compound_now(&parts, now, Reserve::new())
        .unwrap();
    let before = backend
        .reserve_compound_now(&parts, now, Reserve::new().cost(0))
        .unwrap();
    let Err(FreqLimitError::Rejected(refused)) = backend.reserve_compound_now(
        &parts,
        now,
        Reserve::new().max_wait(Duration::from_millis(200)),
    ) else {
        panic!("the chat owes a second");
    };
    assert_eq!(refused.limit(), 0);
    assert_eq!(refused.retry_after(), Duration::from_millis(800));
    let after = backend
        .reserve_compound_now(&parts, now, Reserve::new().cost(0))
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(after.parts()[1].remaining(), 9);
    // A cost the chat can never admit without waiting: refused first, whatever the global says.
    let err = backend
        .reserve_compound_now(&parts, now, Reserve::new().cost(2).no_wait())
        .unwrap_err();
    assert_eq!(
        err,
        FreqLimitError::CostExceedsCapacity {
            cost: 2,
            max_cost: 1
        }
    );
}

/// Parts that are not a compound are refused with a message that says why.
#[test]
fn two_limits_on_one_key_or_a_wrong_key_count_are_errors() {
    let backend = InMemoryBackend::<&str>::new();
    let p = FreqLimitParams::per_second(1);
    let now = Timestamp::from_nanos(T0);
    let same = [
        Part::new(Some(&"a"), &p),
        Part::new(Some(&"b"), &p),
        Part::new(Some(&"a"), &p),
    ];
    let Err(FreqLimitError::Backend(err)) =
        backend.reserve_compound_now(&same, now, Reserve::new())
    else {
        panic!("two limits on key a");
    };
    assert_eq!(err.kind(), BackendErrorKind::Other);
    assert!(err.to_string().contains("limits 0 and 2"), "{err}");
    assert!(backend.is_empty(), "nothing stored");

    let limits = CompoundLimit::new(backend).limit("a", p).limit("b", p);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Err(FreqLimitError::Backend(err)) = runtime.block_on(limits.acquire(&[Some(&"x")])) else {
        panic!("one key for two limits");
    };
    assert!(
        err.to_string()
            .contains("1 keys for a compound of 2 limits"),
        "{err}"
    );
}

/// A waiting compound that is dropped gives its slot back in every limit.
#[tokio::test(start_paused = true)]
async fn a_dropped_wait_gives_every_limit_back() {
    let backend = InMemoryBackend::<&str>::builder()
        .clock(tower_freqlimit::clock::Clock::tokio())
        .build();
    let limits = CompoundLimit::new(backend)
        .limit("per-chat", FreqLimitParams::per_second(1))
        .limit("global", FreqLimitParams::per_second(10).with_burst(5));
    let keys = [Some(&"chat"), None];
    limits.acquire(&keys).await.unwrap();
    // The second call waits for the chat; it is given up after 100 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), limits.acquire(&keys)).await;
    assert!(gave_up.is_err());
    let after = limits.status(&keys).await.unwrap();
    assert_eq!(
        after.delay(),
        Duration::from_millis(900),
        "the chat is owed what it was before"
    );
    assert_eq!(
        after.parts()[1].remaining(),
        5,
        "the global bucket has refilled and nothing is held"
    );
    // And the next call waits only for the chat's first slot.
    let next = limits.acquire(&keys).await.unwrap();
    assert_eq!(next.delay(), Duration::from_millis(900));
}

/// Threads race on two compounds that share the global bucket, and on
/// single calls to it, in reject mode at one instant: the global bucket
/// admits exactly its burst, each chat no more than its own, and every
/// chat's state counts exactly its admissions (no lost update, no charge
/// from a call that was refused).
#[test]
fn racing_compounds_admit_what_a_sequential_schedule_does() {
    let backend = InMemoryBackend::<String>::builder()
        .without_sweeper()
        .build();
    let chat = FreqLimitParams::new(1, Duration::from_secs(1), 150);
    let global = FreqLimitParams::new(1, Duration::from_secs(1), 200);
    let now = Timestamp::from_nanos(T0);
    let chats = [String::from("c0"), String::from("c1")];
    let backend = Arc::new(backend);
    // Threads 0 and 1 on chat c0, thread 2 on c1, thread 3 single calls.
    let admitted: Vec<usize> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (backend, chats) = (&backend, &chats);
                s.spawn(move || {
                    (0..400)
                        .filter(|_| {
                            let r = Reserve::new().no_wait();
                            if w == 3 {
                                return backend
                                    .reserve_now(None::<&String>, now, &global, r)
                                    .is_ok();
                            }
                            let chat_key = &chats[usize::from(w == 2)];
                            let parts =
                                [Part::new(Some(chat_key), &chat), Part::new(None, &global)];
                            backend.reserve_compound_now(&parts, now, r).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(admitted.iter().sum::<usize>(), 200, "{admitted:?}");
    let status = |key: Option<&String>, params| {
        backend.reserve_now(key, now, params, Reserve::new().cost(0))
    };
    assert!(matches!(status(None, &global), Ok(a) if a.remaining() == 0));
    for (c, n) in [(0, admitted[0] + admitted[1]), (1, admitted[2])] {
        assert!(n <= 150);
        let left = status(Some(&chats[c]), &chat).unwrap().remaining() as usize;
        assert_eq!(left, 150 - n, "chat {c}: {n} admitted");
    }
}

/// The same race in wait mode: no slot given twice in any limit (the spans
/// each limit handed out are disjoint), and each limit within its bound.
#[test]
fn racing_waits_never_share_a_slot() {
    let backend = Arc::new(
        InMemoryBackend::<String>::builder()
            .without_sweeper()
            .build(),
    );
    let chat = FreqLimitParams::new(1, Duration::from_millis(10), 3);
    let global = FreqLimitParams::new(1, Duration::from_millis(4), 5);
    let now = Timestamp::from_nanos(T0);
    let chats = [String::from("c0"), String::from("c1")];
    let results: Vec<Vec<(usize, CompoundAdmission)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (backend, chats) = (&backend, &chats);
                s.spawn(move || {
                    (0..300)
                        .map(|_| {
                            let c = usize::from(w == 2);
                            let parts =
                                [Part::new(Some(&chats[c]), &chat), Part::new(None, &global)];
                            (
                                c,
                                backend
                                    .reserve_compound_now(&parts, now, Reserve::new())
                                    .unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: Vec<(usize, CompoundAdmission)> = results.into_iter().flatten().collect();
    let mut made = Vec::new();
    for (c, a) in &all {
        made.push(Made {
            parts: vec![(*c, a.parts()[0]), (3, a.parts()[1])],
            at: T0 + a.delay().as_nanos() as u64,
            cost: 1,
            cancelled: false,
        });
    }
    assert_within_the_bound(&made, &[chat, chat, chat, global]).unwrap();
    for (limit, interval) in [
        (0, chat.interval_nanos()),
        (1, chat.interval_nanos()),
        (3, global.interval_nanos()),
    ] {
        // The cell each call took, `[end - T, end)`: never one cell twice.
        let mut ends: Vec<u64> = made
            .iter()
            .flat_map(|m| m.parts.iter().filter(|(k, _)| *k == limit))
            .map(|(_, a)| a.refund_token().end.unwrap())
            .collect();
        ends.sort_unstable();
        for pair in ends.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval,
                "limit {limit}: cells ending at {pair:?} overlap"
            );
        }
    }
}

/// On a bounded table whose keys are grouped (IP addresses by network), a
/// compound inserts a new key while its group has room, and refuses with
/// `Full` (consuming nothing) once the group holds its share: a compound does
/// not decide on a group's overflow bucket.
#[test]
fn a_group_past_its_share_refuses_a_compound_s_new_key() {
    use std::net::IpAddr;
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(64)
        .without_sweeper()
        .build();
    assert_eq!(backend.group_share(), Some(2));
    let p = FreqLimitParams::per_second(1);
    let global = FreqLimitParams::per_second(1_000).with_burst(100);
    let now = Timestamp::from_nanos(T0);
    let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
    // The group 10.0.0.0/24 has room for two keys: a compound takes them.
    for last in [1, 2] {
        let key = ip(last);
        let parts = [Part::new(Some(&key), &p), Part::new(None, &global)];
        assert!(
            backend
                .reserve_compound_now(&parts, now, Reserve::new())
                .is_ok(),
            "10.0.0.{last}"
        );
    }
    assert_eq!(backend.len(), 2);
    let key = ip(3);
    let parts = [Part::new(Some(&key), &p), Part::new(None, &global)];
    let Err(FreqLimitError::Backend(err)) =
        backend.reserve_compound_now(&parts, now, Reserve::new())
    else {
        panic!("the group holds its share");
    };
    assert_eq!(err.kind(), BackendErrorKind::Full);
    // Nothing consumed in the global bucket: 98 of its 100 remain.
    let status = backend
        .reserve_now(None::<&IpAddr>, now, &global, Reserve::new().cost(0))
        .unwrap();
    assert_eq!(status.remaining(), 98);
}

/// Keys that only compounds ever touch are swept like any other: the first
/// compound starts the backend's sweeper.
#[tokio::test(start_paused = true)]
async fn compounds_start_the_sweeper() {
    let backend = InMemoryBackend::<&str>::builder()
        .clock(tower_freqlimit::clock::Clock::tokio())
        .sweeper_interval(Duration::from_secs(1))
        .idle_ttl(Duration::ZERO)
        .build();
    let limits = CompoundLimit::new(backend.clone())
        .limit("per-chat", FreqLimitParams::per_second(1))
        .limit("per-group", FreqLimitParams::per_second(1));
    limits
        .acquire(&[Some(&"chat"), Some(&"group")])
        .await
        .unwrap();
    assert_eq!(backend.len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backend.len(), 0, "both drained keys swept");
}

/// A compound of the global bucket alone holds no key: like a single call on
/// the global bucket, it starts no sweeper task (one keyed part does).
#[tokio::test(flavor = "current_thread")]
async fn only_keyed_compounds_start_the_sweeper() {
    let backend = InMemoryBackend::<&str>::builder()
        .sweeper_interval(Duration::from_secs(1))
        .build();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let global = FreqLimitParams::per_second(1);
    let parts = [Part::new(None, &global)];
    backend
        .reserve_compound_now(&parts, Timestamp::now(), Reserve::new())
        .unwrap();
    assert_eq!(tasks(), 0, "no sweeper for the global bucket");
    let parts = [Part::new(Some(&"chat"), &global), Part::new(None, &global)];
    backend
        .reserve_compound_now(&parts, Timestamp::now(), Reserve::new())
        .unwrap();
    assert_eq!(tasks(), 1, "the sweeper, for the keyed part");
}
