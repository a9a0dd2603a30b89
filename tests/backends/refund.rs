//! Refunds on a shared key (`src/backends/refund.rs` and the backends'
//! `refund`), as properties over any interleaving of reservations (random
//! costs and `max_wait`s) and cancellations of waiting ones:
//!
//! * never more than `burst + w / T` units admitted in any window `w`,
//!   counting each admitted unit at its admission time (`now + delay`);
//!   cancelled reservations are not admitted;
//! * cancelling every reservation made since a point (in any order) restores
//!   the key: the decisions that follow equal those on the state of that point.
//!
//! * the backend decides every call as the pure model does (a TAT and
//!   [`Holes`], stepped one call at a time), refund tokens included.
//!
//! Costs stay within `burst`: a cost above it waits for its last unit but is
//! admitted at one instant, so even plain GCRA counts more than `burst` units
//! at that instant.

use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::holes::{GiveBack, Holes};
use tower_freqlimit::{Admission, FreqLimitError, FreqLimitParams, Reserve};

/// An arbitrary origin, far from zero.
pub const T0: u64 = 1_000_000_000_000_000;

/// One step of a history.
#[derive(Debug, Clone)]
pub enum Op {
    /// Time moves on by `dt` nanoseconds, then a reservation.
    Reserve {
        dt: u64,
        cost: u32,
        max_wait: Option<u64>,
    },
    /// The `n`-th (modulo their number) reservation still waiting gives up.
    Cancel(usize),
}

pub fn request(cost: u32, max_wait: Option<u64>) -> Reserve {
    let r = Reserve::new().cost(cost);
    match max_wait {
        Some(w) => r.max_wait(Duration::from_nanos(w)),
        None => r,
    }
}

/// Histories for a bucket of interval `t` and `burst`: mostly reservations
/// that wait, with cancellations among them.
pub fn ops(t: u64, burst: u32, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    let reserve = (
        prop_oneof![3 => Just(0u64), 1 => 0..=2 * t],
        0..=burst,
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(0u64)),
            1 => (0..=4 * t).prop_map(Some)
        ],
    )
        .prop_map(|(dt, cost, max_wait)| Op::Reserve { dt, cost, max_wait });
    prop::collection::vec(
        prop_oneof![3 => reserve, 2 => any::<prop::sample::Index>().prop_map(|i| Op::Cancel(i.index(1 << 16)))],
        len,
    )
}

/// A reservation made in a history.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    pub admission: Admission,
    /// When its units are admitted (`now + delay`), in ns.
    pub at: u64,
    pub cost: u32,
    pub cancelled: bool,
}

/// Runs `ops` on `key` of `backend` from `*now`; returns every admitted
/// reservation (cancelled ones marked).
pub fn run<B>(
    backend: &B,
    key: Option<&String>,
    params: &FreqLimitParams,
    now: &mut u64,
    ops: &[Op],
) -> Vec<Made>
where
    B: FreqLimitBackend<
            Key = String,
            ReserveFuture = std::future::Ready<Result<Admission, FreqLimitError>>,
        >,
{
    let mut made: Vec<Made> = Vec::new();
    for op in ops {
        match *op {
            Op::Reserve { dt, cost, max_wait } => {
                *now += dt;
                let result = backend
                    .reserve(
                        key,
                        Timestamp::from_nanos(*now),
                        params,
                        request(cost, max_wait),
                    )
                    .into_inner();
                match result {
                    Ok(admission) if cost > 0 => made.push(Made {
                        admission,
                        at: *now + admission.delay().as_nanos() as u64,
                        cost,
                        cancelled: false,
                    }),
                    Ok(_) | Err(FreqLimitError::Rejected(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Cancel(n) => {
                let waiting: Vec<usize> = (0..made.len())
                    .filter(|&i| !made[i].cancelled && made[i].at > *now)
                    .collect();
                if !waiting.is_empty() {
                    let i = waiting[n % waiting.len()];
                    backend.refund(key, &made[i].admission);
                    made[i].cancelled = true;
                }
            }
        }
    }
    made
}

/// Asserts that the admitted units never exceed `burst + w / T` in any window.
pub fn assert_within_the_bound(
    made: &[Made],
    params: &FreqLimitParams,
) -> Result<(), TestCaseError> {
    let admitted = made
        .iter()
        .filter(|m| !m.cancelled)
        .map(|m| (m.at, u64::from(m.cost)))
        .collect();
    assert_units_within_the_bound(admitted, params, "the key")
}

/// Asserts that `admitted`, `(instant, units)` pairs of one key (`what`),
/// never exceed `burst + w / T` units in any window `w`.
pub fn assert_units_within_the_bound(
    mut admitted: Vec<(u64, u64)>,
    params: &FreqLimitParams,
    what: &str,
) -> Result<(), TestCaseError> {
    let t = params.interval_nanos();
    let burst = u64::from(params.burst());
    admitted.sort_unstable();
    for (i, &(start, _)) in admitted.iter().enumerate() {
        let mut units = 0;
        for &(end, cost) in &admitted[i..] {
            units += cost;
            let bound = burst + (end - start) / t;
            prop_assert!(
                units <= bound,
                "{what}: {units} units admitted within [{start}, {end}] (T = {t}, burst {burst}): the bound is {bound}"
            );
        }
    }
    Ok(())
}

/// The decisions a series of probes gets at `now` (each probe is kept).
pub fn probe<B>(
    backend: &B,
    key: Option<&String>,
    params: &FreqLimitParams,
    now: u64,
) -> Vec<Result<Admission, FreqLimitError>>
where
    B: FreqLimitBackend<
            Key = String,
            ReserveFuture = std::future::Ready<Result<Admission, FreqLimitError>>,
        >,
{
    let t = params.interval_nanos();
    let burst = params.burst();
    [
        request(0, None),
        request(1, Some(0)),
        request(burst, Some(0)),
        request(1, Some(t)),
        request(burst, Some(2 * t)),
        request(1, None),
        request(burst, None),
        request(1, Some(0)),
    ]
    .into_iter()
    .map(|r| {
        backend
            .reserve(key, Timestamp::from_nanos(now), params, r)
            .into_inner()
    })
    .collect()
}

fn params() -> impl Strategy<Value = FreqLimitParams> {
    (1u64..=100, 1u32..=4)
        .prop_map(|(t_ms, burst)| FreqLimitParams::new(1, Duration::from_millis(t_ms), burst))
}

fn key(global: bool) -> Option<String> {
    (!global).then(|| "shared".to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cancellations_never_admit_more_than_the_bound(
        (params, ops, global) in params().prop_flat_map(|p| (Just(p), ops(p.interval_nanos(), p.burst(), 1..60), any::<bool>()))
    ) {
        let backend = InMemoryBackend::<String>::builder().without_sweeper().build();
        let key = key(global);
        let mut now = T0;
        let made = run(&backend, key.as_ref(), &params, &mut now, &ops);
        assert_within_the_bound(&made, &params)?;
    }

    #[test]
    fn cancelling_every_later_reservation_restores_the_key(
        (params, before, after, order, global) in params().prop_flat_map(|p| (
            Just(p),
            ops(p.interval_nanos(), p.burst(), 0..6),
            prop::collection::vec((0..=p.burst(), prop_oneof![Just(None), Just(Some(0u64)), (0..=4 * p.interval_nanos()).prop_map(Some)]), 1..6),
            any::<prop::sample::Index>(),
            any::<bool>(),
        ))
    ) {
        let key = key(global);
        let untouched = InMemoryBackend::<String>::builder().without_sweeper().build();
        let visited = InMemoryBackend::<String>::builder().without_sweeper().build();
        let (mut now_a, mut now_b) = (T0, T0);
        run(&untouched, key.as_ref(), &params, &mut now_a, &before);
        run(&visited, key.as_ref(), &params, &mut now_b, &before);
        // Reservations at one instant on `visited`, then all given back in a
        // random order.
        let mut made: Vec<Admission> = Vec::new();
        for &(cost, max_wait) in &after {
            if let Ok(a) = visited
                .reserve(key.as_ref(), Timestamp::from_nanos(now_b), &params, request(cost, max_wait))
                .into_inner()
            {
                made.push(a);
            }
        }
        let n = made.len();
        let mut order_ix: Vec<usize> = (0..n).collect();
        // A permutation drawn from `order`.
        let mut seed = order.index(usize::MAX >> 1) as u64 | 1;
        for i in (1..n).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order_ix.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for i in order_ix {
            visited.refund(key.as_ref(), &made[i]);
        }
        prop_assert_eq!(
            probe(&visited, key.as_ref(), &params, now_b),
            probe(&untouched, key.as_ref(), &params, now_a)
        );
    }
}

/// The backend's state as the pure parts step it: a TAT (0, in the past, for
/// a bucket never used) and its holes.
#[derive(Default)]
struct Model {
    tat: u64,
    holes: Holes,
}

impl Model {
    fn reserve(
        &mut self,
        now: u64,
        params: &FreqLimitParams,
        r: &Reserve,
    ) -> Result<Admission, FreqLimitError> {
        self.holes.forget_past(now);
        let reserved = self.holes.reserve(Some(self.tat), now, params, r)?;
        if let Some(tat) = reserved.new_tat {
            self.tat = tat;
        }
        Ok(reserved.admission)
    }

    fn refund(&mut self, admission: &Admission) {
        if let GiveBack::Lowered(tat) = self.holes.give_back(self.tat, admission.refund_token()) {
            self.tat = tat;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The hole paths decide under a lock and rebuild the decision outside it
    /// (`gcra::holes::Spot`): what the caller gets, refusals and refund tokens
    /// included, is what the model's one step gives.
    #[test]
    fn the_backend_decides_as_the_model_with_holes(
        (params, ops, global) in params().prop_flat_map(|p| (Just(p), ops(p.interval_nanos(), p.burst(), 1..60), any::<bool>()))
    ) {
        let backend = InMemoryBackend::<String>::builder().without_sweeper().build();
        let key = key(global);
        let mut model = Model::default();
        let mut now = T0;
        let mut made: Vec<(Admission, u64)> = Vec::new();
        for op in &ops {
            match *op {
                Op::Reserve { dt, cost, max_wait } => {
                    now += dt;
                    let r = request(cost, max_wait);
                    let got = backend
                        .reserve(key.as_ref(), Timestamp::from_nanos(now), &params, r)
                        .into_inner();
                    let want = model.reserve(now, &params, &r);
                    prop_assert_eq!(&got, &want, "at {} ns, {:?}", now - T0, op);
                    if let Ok(a) = got {
                        prop_assert_eq!(a.refund_token(), want.unwrap().refund_token());
                        made.push((a, now + a.delay().as_nanos() as u64));
                    }
                }
                Op::Cancel(n) => {
                    let waiting: Vec<usize> = (0..made.len()).filter(|&i| made[i].1 > now).collect();
                    if !waiting.is_empty() {
                        let (a, _) = made.remove(waiting[n % waiting.len()]);
                        backend.refund(key.as_ref(), &a);
                        model.refund(&a);
                    }
                }
            }
        }
    }
}

/// A small deterministic generator for the threads below.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

/// The spans of `admissions`, sorted; asserts that no two overlap (a slot
/// given twice).
fn assert_disjoint(admissions: &[Admission]) {
    let mut spans: Vec<(u64, u64)> = admissions
        .iter()
        .map(|a| {
            let token = a.refund_token();
            (
                token.start,
                token.end.expect("a reservation that took a span"),
            )
        })
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two live reservations share a slot: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Threads reserving and giving back on one shared key at once (the global
/// bucket, then a key): every refund of a live reservation is taken, and no
/// two live reservations ever hold the same slot.
#[test]
fn concurrent_reservations_and_refunds_never_share_a_slot() {
    let params = FreqLimitParams::per_second(1_000).with_burst(2);
    for global in [true, false] {
        let backend = InMemoryBackend::<String>::builder()
            .without_sweeper()
            .build();
        let key = key(global);
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                let (backend, key) = (backend.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut seed = thread + 1;
                    let mut live: Vec<Admission> = Vec::new();
                    for i in 0..3_000u64 {
                        if next(&mut seed) % 5 < 2 && !live.is_empty() {
                            let n = next(&mut seed) as usize % live.len();
                            let a = live.swap_remove(n);
                            assert!(
                                backend.refund(key.as_ref(), &a),
                                "a live span not taken back"
                            );
                        } else {
                            let cost = 1 + (next(&mut seed) % 2) as u32;
                            // Callers' clocks a few nanoseconds apart.
                            let now = Timestamp::from_nanos(T0 + i % 7);
                            live.push(
                                backend
                                    .reserve_now(
                                        key.as_deref(),
                                        now,
                                        &params,
                                        Reserve::new().cost(cost),
                                    )
                                    .unwrap(),
                            );
                        }
                    }
                    live
                })
            })
            .collect();
        let live: Vec<Admission> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_disjoint(&live);
    }
}

/// Threads that each reserve a few waiting slots on one shared key and give
/// them all back, at once: the key ends as it began.
#[test]
fn concurrent_waiters_that_all_give_up_leave_the_key_as_it_was() {
    let params = FreqLimitParams::per_second(1_000).with_burst(2);
    let now = Timestamp::from_nanos(T0);
    for global in [true, false] {
        for round in 0..50u64 {
            let backend = InMemoryBackend::<String>::builder()
                .without_sweeper()
                .build();
            let key = key(global);
            backend
                .reserve_now(key.as_deref(), now, &params, Reserve::new().cost(2))
                .unwrap();
            let fresh = InMemoryBackend::<String>::builder()
                .without_sweeper()
                .build();
            fresh
                .reserve_now(key.as_deref(), now, &params, Reserve::new().cost(2))
                .unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4u64)
                .map(|thread| {
                    let (backend, key, barrier) = (backend.clone(), key.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let mut seed = round * 8 + thread + 1;
                        barrier.wait();
                        let mut mine: Vec<Admission> = (0..3)
                            .map(|_| {
                                let cost = 1 + (next(&mut seed) % 2) as u32;
                                backend
                                    .reserve_now(
                                        key.as_deref(),
                                        now,
                                        &params,
                                        Reserve::new().cost(cost),
                                    )
                                    .unwrap()
                            })
                            .collect();
                        while !mine.is_empty() {
                            let n = next(&mut seed) as usize % mine.len();
                            let a = mine.swap_remove(n);
                            assert!(backend.refund(key.as_ref(), &a));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(
                probe(&backend, key.as_ref(), &params, T0),
                probe(&fresh, key.as_ref(), &params, T0),
                "round {round}, global {global}"
            );
        }
    }
}
