//! Property tests of the algorithm's invariants, on the pure step and through the
//! in-memory backend.

use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::{self, Refusal};
use tower_freqlimit::nanos::from_duration as duration_to_nanos;
use tower_freqlimit::{FreqLimitParams, Reserve};

/// Params with intervals from 1 µs to 10 s and bursts up to 20.
fn params() -> impl Strategy<Value = FreqLimitParams> {
    (1u32..=100, 1u64..=10_000_000, 1u32..=20).prop_map(|(limit, period_us, burst)| {
        FreqLimitParams::new(
            limit,
            Duration::from_micros(period_us * u64::from(limit)),
            burst,
        )
    })
}

/// Gaps between calls, in units of the interval's tenths: many zeros (calls at
/// the same instant), small gaps, and now and then a long idle.
fn gaps(max_len: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(0u64),
            4 => 0u64..=10,
            2 => 0u64..=40,
            1 => 0u64..=1000,
        ],
        1..max_len,
    )
}

fn times(p: &FreqLimitParams, start: u64, gaps: &[u64]) -> Vec<u64> {
    let tenth = p.interval_nanos() / 10 + 1;
    gaps.iter()
        .scan(start, |now, g| {
            *now += g * tenth + g % 7; // the odd nanosecond keeps times off the grid
            Some(*now)
        })
        .collect()
}

/// `cost` unit calls at `now` from `tat`: the TAT after them and the last one's
/// delay.
fn unit_steps(tat: Option<u64>, now: u64, p: &FreqLimitParams, cost: u32) -> (Option<u64>, u64) {
    let mut tat = tat;
    let mut last_delay = 0;
    for _ in 0..cost {
        let s = gcra::step(tat, now, p);
        tat = Some(s.new_tat);
        last_delay = s.delay;
    }
    (tat, last_delay)
}

fn nanos(d: Duration) -> u64 {
    duration_to_nanos(d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// aiofreqlimit's own invariants, for any state and time.
    #[test]
    fn step_invariants(p in params(), tat in prop::option::of(0u64..1 << 50), now in 0u64..1 << 50) {
        let s = gcra::step(tat, now, &p);
        prop_assert!(s.new_tat >= now + s.delay);
        prop_assert!(s.new_tat - (now + s.delay) <= p.interval_nanos() + p.tau_nanos());
        // And `reserve` (cost 1, unbounded) is exactly that step.
        let r = gcra::reserve(tat, now, &p, &Reserve::new()).unwrap();
        prop_assert_eq!(r.new_tat, Some(s.new_tat));
        prop_assert_eq!(nanos(r.admission.delay()), s.delay);
    }

    /// The delays follow the reference step over whole sequences, and the
    /// reported `remaining` is the number of further calls that pass at once.
    #[test]
    fn schedule_follows_reference_step(p in params(), g in gaps(200)) {
        let mut tat = None;
        for now in times(&p, 0, &g) {
            let reference = gcra::step(tat, now, &p);
            let r = gcra::reserve(tat, now, &p, &Reserve::new()).unwrap();
            prop_assert_eq!(nanos(r.admission.delay()), reference.delay);
            tat = r.new_tat;

            // `remaining` more unit calls at `now` pass without waiting, one more does not.
            let mut probe = tat;
            for _ in 0..r.admission.remaining() {
                let s = gcra::step(probe, now, &p);
                prop_assert_eq!(s.delay, 0);
                probe = Some(s.new_tat);
            }
            prop_assert!(gcra::step(probe, now, &p).delay > 0);
            prop_assert_eq!(nanos(r.admission.reset_after()), tat.unwrap() - now);
        }
    }

    /// In any window of length w, at most `burst + floor(w / T)` calls are
    /// scheduled, whatever the arrival pattern and whether calls wait or are
    /// rejected.
    #[test]
    fn window_never_exceeds_burst_plus_rate(
        p in params(),
        g in gaps(300),
        max_wait_tenths in prop::option::of(0u64..=30),
    ) {
        let request = match max_wait_tenths {
            Some(t) => Reserve::new().max_wait(Duration::from_nanos(t * p.interval_nanos() / 10)),
            None => Reserve::new(),
        };
        let mut tat = None;
        let mut scheduled = Vec::new();
        for now in times(&p, 1 << 40, &g) {
            match gcra::reserve(tat, now, &p, &request) {
                Ok(r) => {
                    tat = r.new_tat;
                    scheduled.push(now + nanos(r.admission.delay()));
                }
                Err(Refusal::Rejected(_)) => {}
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
        scheduled.sort_unstable();
        let t = p.interval_nanos();
        for i in 0..scheduled.len() {
            for j in i..scheduled.len() {
                let w = scheduled[j] - scheduled[i];
                let count = (j - i + 1) as u64;
                prop_assert!(
                    count <= u64::from(p.burst()) + w / t,
                    "{count} calls in a window of {w} ns (T = {t}, burst = {})", p.burst()
                );
            }
        }
    }

    /// A call of cost n is n unit calls at the same instant; its delay is the
    /// last one's. With a bound, it is admitted exactly when that delay fits.
    #[test]
    fn cost_n_is_n_unit_calls(
        p in params(),
        tat in prop::option::of(0u64..1 << 40),
        now in 0u64..1 << 40,
        cost in 1u32..=40,
        max_wait_tenths in prop::option::of(0u64..=100),
    ) {
        let (unit_tat, last_delay) = unit_steps(tat, now, &p, cost);
        let mut request = Reserve::new().cost(cost);
        if let Some(t) = max_wait_tenths {
            request = request.max_wait(Duration::from_nanos(t * p.interval_nanos() / 10));
        }
        match gcra::reserve(tat, now, &p, &request) {
            Ok(r) => {
                prop_assert_eq!(r.new_tat, unit_tat);
                prop_assert_eq!(nanos(r.admission.delay()), last_delay);
            }
            Err(Refusal::Rejected(rejection)) => {
                let max_wait = nanos(request.max_wait.unwrap());
                prop_assert!(last_delay > max_wait);
                // Retrying after `retry_after` is admitted, waiting exactly max_wait.
                let later = now + nanos(rejection.retry_after());
                let retry = gcra::reserve(tat, later, &p, &request).unwrap();
                prop_assert_eq!(nanos(retry.admission.delay()), max_wait);
            }
            Err(Refusal::CostExceedsCapacity { cost: c, max_cost }) => {
                prop_assert_eq!(c, cost);
                prop_assert!(cost > max_cost);
                // Not even a full bucket admits it.
                let max_wait = nanos(request.max_wait.unwrap());
                let (_, delay) = unit_steps(None, now, &p, cost);
                prop_assert!(delay > max_wait);
            }
        }
    }

    /// Cost 0 is a status check: admitted (with the same delay) exactly when a
    /// unit call would be, refused with the unit call's `retry_after` when it
    /// would not, and storing nothing either way. So no cost a client can
    /// drive to 0 gets past a limit a unit call would meet.
    #[test]
    fn cost_zero_is_decided_as_a_unit_call_and_stores_nothing(
        p in params(),
        tat in prop::option::of(0u64..1 << 40),
        now in 0u64..1 << 40,
        max_wait_tenths in prop::option::of(0u64..=30),
    ) {
        let mut unit = Reserve::new();
        if let Some(t) = max_wait_tenths {
            unit = unit.max_wait(Duration::from_nanos(t * p.interval_nanos() / 10));
        }
        let zero = unit.cost(0);
        match (gcra::reserve(tat, now, &p, &unit), gcra::reserve(tat, now, &p, &zero)) {
            (Ok(u), Ok(z)) => {
                prop_assert_eq!(z.new_tat, None);
                prop_assert_eq!(z.admission.delay(), u.admission.delay());
                prop_assert_eq!(nanos(z.admission.reset_after()), tat.map_or(0, |t| t.saturating_sub(now)));
            }
            (Err(Refusal::Rejected(u)), Err(Refusal::Rejected(z))) => {
                prop_assert_eq!(z.retry_after(), u.retry_after());
                prop_assert_eq!(z.reset_after(), u.reset_after());
            }
            (u, z) => prop_assert!(false, "unit {u:?} but cost 0 {z:?}"),
        }
    }

    /// A rejected call changes nothing: a backend that saw it answers every later
    /// call exactly as one that did not.
    #[test]
    fn rejection_never_changes_state(p in params(), g in gaps(120), reject_mask in any::<u128>()) {
        let seen = InMemoryBackend::<u8>::builder().without_sweeper().build();
        let unseen = InMemoryBackend::<u8>::builder().without_sweeper().build();
        for (i, now) in times(&p, 0, &g).into_iter().enumerate() {
            let at = Timestamp::from_nanos(now);
            if reject_mask >> (i % 128) & 1 == 1 {
                // Only `seen` gets this reject-only call.
                let probe = seen.reserve_now(Some(&1), at, &p, Reserve::new().no_wait());
                if probe.is_ok() {
                    // It was admitted after all: make `unseen` take the same slot.
                    unseen.reserve_now(Some(&1), at, &p, Reserve::new().no_wait()).unwrap();
                }
            } else {
                let a = seen.reserve_now(Some(&1), at, &p, Reserve::new());
                let b = unseen.reserve_now(Some(&1), at, &p, Reserve::new());
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Keys are independent: interleaving calls on several keys (and the global
    /// bucket) in one backend gives each the schedule it has alone.
    #[test]
    fn keys_are_independent(p in params(), calls in prop::collection::vec((0u8..4, 0u64..=20), 1..200)) {
        let shared = InMemoryBackend::<u8>::builder().without_sweeper().build();
        let alone: Vec<_> = (0..4).map(|_| InMemoryBackend::<u8>::builder().without_sweeper().build()).collect();
        let tenth = p.interval_nanos() / 10 + 1;
        let mut now = 0;
        for (key, gap) in calls {
            now += gap * tenth;
            let at = Timestamp::from_nanos(now);
            // Key 3 stands for the global bucket.
            let k = (key < 3).then_some(&key);
            let a = shared.reserve_now(k, at, &p, Reserve::new());
            let b = alone[usize::from(key)].reserve_now(k, at, &p, Reserve::new());
            prop_assert_eq!(a, b);
        }
    }

    /// Eviction is lossless: sweeping at any moment never changes a later decision.
    #[test]
    fn eviction_never_changes_a_later_decision(
        p in params(),
        calls in prop::collection::vec((0u8..8, 0u64..=30, any::<bool>()), 1..200),
        idle_ttl_tenths in 0u64..=20,
    ) {
        let idle_ttl = Duration::from_nanos(idle_ttl_tenths * p.interval_nanos() / 10);
        let swept = InMemoryBackend::<u8>::builder().idle_ttl(idle_ttl).without_sweeper().build();
        let kept = InMemoryBackend::<u8>::builder().without_sweeper().build();
        let tenth = p.interval_nanos() / 10 + 1;
        let mut now = 0;
        for (key, gap, sweep) in calls {
            now += gap * tenth;
            let at = Timestamp::from_nanos(now);
            if sweep {
                swept.sweep(at);
            }
            let request = if key % 2 == 0 { Reserve::new() } else { Reserve::new().no_wait() };
            let a = swept.reserve_now(Some(&key), at, &p, request);
            let b = kept.reserve_now(Some(&key), at, &p, request);
            prop_assert_eq!(a, b);
        }
        prop_assert!(swept.len() <= kept.len());
    }
}
