//! `InMemoryBackend::max_keys`: the bound holds under floods of unique keys,
//! drained keys go first (losslessly), and each `WhenFull` policy does what it
//! says. Time is passed in as explicit `Timestamp`s: no clock is read.

use std::sync::Arc;
use std::time::Duration;

use tower_freqlimit::backends::memory::{InMemoryBackend, WhenFull};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve};

const FLOOD: u64 = 1_000_000;
const MAX_KEYS: usize = 10_000;

/// An arbitrary origin far from 0, so that `now - x` never saturates.
const T0: u64 = 1_000_000_000_000;

fn at(nanos: u64) -> Timestamp {
    Timestamp::from_nanos(T0 + nanos)
}

fn bounded(max_keys: usize, when_full: WhenFull) -> InMemoryBackend<u64> {
    InMemoryBackend::builder()
        .max_keys(max_keys)
        .when_full(when_full)
        .without_sweeper()
        .build()
}

/// What one call did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Rejected,
    Full,
}

fn call(
    backend: &InMemoryBackend<u64>,
    key: u64,
    now: Timestamp,
    params: &FreqLimitParams,
) -> Outcome {
    match backend.reserve_now(Some(&key), now, params, Reserve::new().no_wait()) {
        Ok(_) => Outcome::Admitted,
        Err(FreqLimitError::Rejected(_)) => Outcome::Rejected,
        Err(FreqLimitError::Backend(err)) if err.kind() == BackendErrorKind::Full => Outcome::Full,
        Err(other) => panic!("unexpected error for key {key}: {other:?}"),
    }
}

/// Whether `key` is held and still owes time at `now`: a no-wait call is
/// rejected (and stores nothing). A key that was dropped would be admitted as
/// a new one.
fn still_owes(
    backend: &InMemoryBackend<u64>,
    key: u64,
    now: Timestamp,
    params: &FreqLimitParams,
) -> bool {
    call(backend, key, now, params) == Outcome::Rejected
}

#[test]
fn refuse_new_keys_under_a_flood_keeps_the_bound_and_every_owing_key() {
    // One call per minute: nothing drains while the clock stands still.
    let params = FreqLimitParams::per_minute(1);
    let backend = bounded(MAX_KEYS, WhenFull::RefuseNewKeys);
    let now = at(0);
    let mut admitted = 0u64;
    let mut full = 0u64;
    for key in 0..FLOOD {
        match call(&backend, key, now, &params) {
            Outcome::Admitted => admitted += 1,
            Outcome::Full => full += 1,
            Outcome::Rejected => panic!("new key {key} rejected"),
        }
        if key % 50_000 == 0 {
            assert!(
                backend.len() <= MAX_KEYS,
                "len {} after key {key}",
                backend.len()
            );
        }
    }
    assert_eq!(admitted, MAX_KEYS as u64);
    assert_eq!(full, FLOOD - MAX_KEYS as u64);
    assert_eq!(backend.len(), MAX_KEYS);
    // The first 10 000 keys were admitted and none was dropped for the flood.
    for key in 0..MAX_KEYS as u64 {
        assert!(
            still_owes(&backend, key, now, &params),
            "key {key} was dropped"
        );
    }
    // A minute later they have drained; new keys take their places.
    let later = now + Duration::from_secs(60);
    for key in FLOOD..FLOOD + MAX_KEYS as u64 {
        assert_eq!(call(&backend, key, later, &params), Outcome::Admitted);
    }
    assert_eq!(backend.len(), MAX_KEYS);
    assert_eq!(call(&backend, 2 * FLOOD, later, &params), Outcome::Full);
}

#[test]
fn a_flood_whose_keys_drain_is_admitted_losslessly() {
    // T = 50 ms, one new key every 10 µs: about 5 000 keys owe time at any
    // moment, fewer than the bound, so drained keys always make room and the
    // refusing policy never has to refuse.
    let params = FreqLimitParams::per_second(20);
    let interval = params.interval();
    let backend = bounded(MAX_KEYS, WhenFull::RefuseNewKeys);
    let step = 10_000; // ns
    for key in 0..FLOOD {
        let now = at(key * step);
        assert_eq!(
            call(&backend, key, now, &params),
            Outcome::Admitted,
            "key {key}"
        );
        if key % 10_007 == 0 {
            assert!(backend.len() <= MAX_KEYS);
            // Every key that still owes time is held: check the most recent
            // ones (those inserted within the last interval).
            let owing = interval.as_nanos() as u64 / step;
            for older in key.saturating_sub(owing - 1)..key {
                assert!(
                    still_owes(&backend, older, now, &params),
                    "key {older} dropped at {key}"
                );
            }
        }
    }
    assert!(backend.len() <= MAX_KEYS);
}

#[test]
fn evict_closest_to_draining_admits_the_flood_and_evicts_the_oldest() {
    // One call per minute; the clock moves 1 ns per key so every TAT differs
    // and "closest to draining" is the oldest key.
    let params = FreqLimitParams::per_minute(1);
    let backend = bounded(MAX_KEYS, WhenFull::EvictClosestToDraining);
    for key in 0..FLOOD {
        assert_eq!(
            call(&backend, key, at(key), &params),
            Outcome::Admitted,
            "key {key}"
        );
        if key % 50_000 == 0 {
            assert!(backend.len() <= MAX_KEYS);
        }
    }
    assert_eq!(backend.len(), MAX_KEYS);
    // The 10 000 most recent keys are the ones held: each still owes time.
    let now = at(FLOOD);
    for key in FLOOD - MAX_KEYS as u64..FLOOD {
        assert!(
            still_owes(&backend, key, now, &params),
            "recent key {key} was evicted"
        );
    }
    // The cost of this policy: an evicted key owed time, and its next call is
    // admitted early, as a new key's.
    assert_eq!(call(&backend, 0, now, &params), Outcome::Admitted);
}

#[test]
fn eviction_prefers_drained_keys_over_owing_ones() {
    // Key 0 has drained by `later`; keys 1..4 still owe time. A new key must
    // take key 0's place, not an owing key's, even under the evicting policy.
    let params = FreqLimitParams::per_second(1);
    let backend = bounded(4, WhenFull::EvictClosestToDraining);
    assert_eq!(call(&backend, 0, at(0), &params), Outcome::Admitted);
    let later = at(1_500_000_000);
    for key in 1..4 {
        assert_eq!(
            call(&backend, key, at(1_000_000_000), &params),
            Outcome::Admitted
        );
    }
    assert_eq!(call(&backend, 9, later, &params), Outcome::Admitted);
    for key in 1..4 {
        assert!(
            still_owes(&backend, key, later, &params),
            "owing key {key} evicted"
        );
    }
    assert_eq!(backend.len(), 4);
}

#[test]
fn refusing_keeps_known_keys_and_the_global_bucket_working() {
    let params = FreqLimitParams::per_second(1);
    let backend = bounded(2, WhenFull::RefuseNewKeys);
    let now = at(0);
    assert_eq!(call(&backend, 1, now, &params), Outcome::Admitted);
    assert_eq!(call(&backend, 2, now, &params), Outcome::Admitted);
    assert_eq!(call(&backend, 3, now, &params), Outcome::Full);
    // Known keys follow their schedule as before.
    assert_eq!(call(&backend, 1, now, &params), Outcome::Rejected);
    assert_eq!(
        call(&backend, 1, at(1_000_000_000), &params),
        Outcome::Admitted
    );
    // The global bucket is not a key and does not count.
    assert!(
        backend
            .reserve_now(None, now, &params, Reserve::new())
            .is_ok()
    );
    assert_eq!(backend.len(), 2);
}

/// A table of one key that refuses new keys, full: key 1 took its slot at
/// `at(0)`, at one call a second.
fn full_table_of_one() -> (FreqLimitParams, InMemoryBackend<u64>) {
    let params = FreqLimitParams::per_second(1);
    let backend = bounded(1, WhenFull::RefuseNewKeys);
    backend
        .reserve_now(Some(&1), at(0), &params, Reserve::new())
        .unwrap();
    (params, backend)
}

#[test]
fn the_refusal_is_a_clear_backend_error() {
    let (params, backend) = full_table_of_one();
    let err = backend
        .reserve_now(Some(&2), at(0), &params, Reserve::new())
        .unwrap_err();
    let FreqLimitError::Backend(err) = err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert_eq!(err.kind(), BackendErrorKind::Full);
    assert_eq!(
        err.to_string(),
        "rate-limit backend is full: the in-memory backend holds its max_keys (1) keys, \
         none of them drained, and refuses new keys (WhenFull::RefuseNewKeys)"
    );
    // A refused call stores nothing: waiting calls and rejections of new keys
    // never take a slot either.
    assert_eq!(backend.len(), 1);
}

#[test]
fn a_call_that_stores_nothing_needs_no_slot() {
    let (params, backend) = full_table_of_one();
    // Cost 0 stores nothing: admitted even though the table is full.
    assert!(
        backend
            .reserve_now(Some(&2), at(0), &params, Reserve::new().cost(0))
            .is_ok()
    );
    // An impossible cost is refused as such, not as a full table.
    assert!(matches!(
        backend.reserve_now(Some(&2), at(0), &params, Reserve::new().cost(2).no_wait()),
        Err(FreqLimitError::CostExceedsCapacity { .. })
    ));
    assert_eq!(backend.len(), 1);
}

#[test]
fn max_keys_zero_holds_no_key() {
    let params = FreqLimitParams::per_second(1);
    for policy in [WhenFull::RefuseNewKeys, WhenFull::EvictClosestToDraining] {
        let backend = bounded(0, policy);
        assert_eq!(
            call(&backend, 1, at(0), &params),
            Outcome::Full,
            "{policy:?}"
        );
        assert!(backend.is_empty());
        assert!(
            backend
                .reserve_now(None, at(0), &params, Reserve::new())
                .is_ok()
        );
    }
}

#[test]
fn sweep_and_clear_give_their_slots_back() {
    let params = FreqLimitParams::per_second(1);
    let backend = bounded(100, WhenFull::RefuseNewKeys);
    for key in 0..100 {
        assert_eq!(call(&backend, key, at(0), &params), Outcome::Admitted);
    }
    assert_eq!(call(&backend, 100, at(0), &params), Outcome::Full);
    // The sweep drops all 100 drained keys and their slots are free again.
    assert_eq!(backend.sweep(at(1_000_000_000)), 100);
    let later = at(1_000_000_000);
    for key in 100..200 {
        assert_eq!(call(&backend, key, later, &params), Outcome::Admitted);
    }
    assert_eq!(call(&backend, 200, later, &params), Outcome::Full);
    backend.clear_now();
    assert!(backend.is_empty());
    for key in 200..300 {
        assert_eq!(call(&backend, key, later, &params), Outcome::Admitted);
    }
    assert_eq!(call(&backend, 300, later, &params), Outcome::Full);
    assert_eq!(backend.len(), 100);
}

#[test]
fn a_refunded_key_that_drained_makes_room() {
    // Key 9's second reservation is given back, which moves its TAT back to
    // 1 s, earlier than the 2 s the last scan recorded. At 1.5 s it has
    // drained, and a new key takes its place instead of being refused; key 0,
    // which owes time until 10 s, stays.
    let slow = FreqLimitParams::new(1, Duration::from_secs(10), 1);
    let params = FreqLimitParams::per_second(1);
    let backend = bounded(2, WhenFull::RefuseNewKeys);
    let now = at(0);
    assert_eq!(call(&backend, 0, now, &slow), Outcome::Admitted);
    assert_eq!(call(&backend, 9, now, &params), Outcome::Admitted);
    let waiting = backend
        .reserve_now(Some(&9), now, &params, Reserve::new())
        .unwrap();
    assert_eq!(waiting.delay(), Duration::from_secs(1));
    // Full: the scan finds nothing drained (key 9 at 2 s, key 0 at 10 s).
    assert_eq!(call(&backend, 5, now, &params), Outcome::Full);
    assert!(tower_freqlimit::FreqLimitBackend::refund(
        &backend,
        Some(&9),
        &waiting
    ));
    let later = at(1_500_000_000);
    assert_eq!(call(&backend, 5, later, &params), Outcome::Admitted);
    assert!(still_owes(&backend, 0, later, &slow));
    assert_eq!(backend.len(), 2);
}

#[test]
fn racing_threads_never_exceed_the_bound() {
    // Two threads insert disjoint unique keys at one frozen instant: exactly
    // `max_keys` calls in all are admitted, the rest refused.
    let params = FreqLimitParams::per_minute(1);
    let backend = Arc::new(bounded(1_000, WhenFull::RefuseNewKeys));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                let mut admitted = 0u32;
                for i in 0..20_000u64 {
                    let key = t * 1_000_000 + i;
                    if call(&backend, key, at(0), &params) == Outcome::Admitted {
                        admitted += 1;
                    }
                    assert!(backend.len() <= 1_000);
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, 1_000);
    assert_eq!(backend.len(), 1_000);

    // Same race under eviction: everything admitted, the bound holds. (No
    // `len()` inside the threads here: it reads the shards one after another,
    // so while a key moves out of one shard and another into a second shard it
    // may count both. The table itself never holds more than the bound.)
    let backend = Arc::new(bounded(1_000, WhenFull::EvictClosestToDraining));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let backend = Arc::clone(&backend);
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let key = t * 1_000_000 + i;
                    assert_eq!(call(&backend, key, at(i), &params), Outcome::Admitted);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(backend.len(), 1_000);
}

#[tokio::test]
async fn a_status_check_stores_no_key() {
    use tower_freqlimit::backends::FreqLimitBackend;
    let backend = InMemoryBackend::<u32>::new();
    let params = FreqLimitParams::per_second(1);
    let status = backend.status(Some(&7), at(0), &params).await.unwrap();
    assert_eq!(status.remaining(), 1);
    assert!(backend.is_empty());
}
