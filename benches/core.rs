//! The in-memory backend's hot path beside `governor` 0.10, in one binary.
//!
//! Every line but the diagnostic case (f) times one admission decision
//! *including a clock read*, because governor reads its own clock (`quanta`)
//! inside `check_key`/`check`; ours reads its default clock at the call site,
//! as `FreqLimit` does: the time-stamp counter through quanta, the default of
//! a normal build (set explicitly: benches build with `test-util`, whose
//! default is Tokio's clock, timed on extra `tokio_clock` lines). Both limiters are configured so that nothing
//! is ever refused (10^9 per second, a burst of 10^9), and a warm-up asserts
//! that, so both sides always take the "admitted, store the new TAT" path.
//!
//! Ours is timed on two lines: the real trait path,
//! `FreqLimitBackend::reserve(..)` returning a `Ready` future polled once with a
//! no-op waker, and the synchronous `InMemoryBackend::reserve_now`. Ours hashes
//! with foldhash, governor's keyed limiter with std's SipHash by default, so the
//! keyed cases also time governor on foldhash (`dashmap_with_hasher`).
//!
//! Cases, each a criterion group with ours and governor side by side:
//!
//! * `a_hot_key`: one `u64` key, called over and over. Also, as a diagnostic,
//!   ours built with `InMemoryBackend::new()` (with a sweeper) outside a runtime.
//! * `b_100k_keys`: 100 000 pre-populated `u64` keys, round-robin (a few MB of
//!   map: out of L2, in L3; every call looks up an existing key).
//! * `c_two_threads_one_key`: two OS threads hammering one key (CAS contention).
//! * `d_global`: ours with key `None` (one atomic, no map) beside governor's
//!   unkeyed `RateLimiter::direct` `check()`.
//! * `e_clock`: the clock reads alone, to attribute differences: tokio's
//!   `Instant::now()` (and std's), and our default clock's (the time-stamp
//!   counter), beside governor's `QuantaClock::now()`.
//! * `f_no_clock_diagnostic`: not like-for-like; both sides with the clock read
//!   taken out of the loop, and governor on foldhash like ours, to isolate the
//!   cost of the decision itself.
//!
//! After criterion has run, `main` takes its own quick median-of-N measurement of
//! every line (see [`medians`]) and prints
//! `case | ours ns/op | governor ns/op | ratio`; criterion does not hand its
//! estimates back to the program. Under `--test` (criterion's smoke mode, also
//! what `cargo test --benches` runs) every line runs a handful of iterations and
//! the table is computed from tiny samples, only to prove the code works; under
//! `--list` and `--profile-time` it is skipped. A name filter narrows criterion's
//! lines but not the summary, which always covers every case.

mod support;

use support::{Line, Mode, medians, mode, run_criterion, sampling};

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use governor::clock::{Clock as _, FakeRelativeClock, QuantaClock, QuantaInstant};
use governor::middleware::NoOpMiddleware;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::{Clock, Timestamp};
use tower_freqlimit::{FreqLimitBackend, FreqLimitParams, Reserve};

/// 10^9 per second (one nanosecond apart) with a burst of 10^9 (a second's
/// worth): no call in this benchmark comes close to being delayed.
const PARAMS: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);

const LOTS: NonZeroU32 = NonZeroU32::new(1_000_000_000).unwrap();

/// governor's equivalent of [`PARAMS`].
fn quota() -> Quota {
    Quota::per_second(LOTS).allow_burst(LOTS)
}

/// Keys in case (b).
const MANY_KEYS: u64 = 100_000;

/// Polls a future once with a no-op waker and returns its output. The in-memory
/// backend's future is `std::future::Ready`, so it is always ready at once.
#[inline(always)]
fn poll_once<F: Future>(fut: F) -> F::Output {
    let fut = pin!(fut);
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the in-memory backend answers at once"),
    }
}

/// A backend with no background sweeper: the benchmark runs outside a Tokio
/// runtime, and this keeps `reserve_now` from looking for one on every call
/// (see the `new()` diagnostic line in case (a)).
fn backend() -> InMemoryBackend<u64> {
    InMemoryBackend::<u64>::builder().without_sweeper().build()
}

/// The default clock of a normal build: the time-stamp counter. (Benches
/// build with `test-util`, through the dev-dependencies, where `Clock::new()`
/// is Tokio's.)
fn default_clock() -> &'static Clock {
    static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(Clock::fast)
}

/// Ours through the trait: the clock read, `reserve` and one poll, as
/// `FreqLimit` and the layer make them.
#[inline(always)]
fn ours_trait(backend: &InMemoryBackend<u64>, key: Option<&u64>, clock: &Clock) -> bool {
    let admission = poll_once(FreqLimitBackend::reserve(
        backend,
        key,
        clock.now(),
        &PARAMS,
        Reserve::new(),
    ));
    black_box(admission).is_ok()
}

/// Ours through the synchronous method.
#[inline(always)]
fn ours_sync(backend: &InMemoryBackend<u64>, key: Option<&u64>, clock: &Clock) -> bool {
    black_box(backend.reserve_now(key, clock.now(), &PARAMS, Reserve::new())).is_ok()
}

#[inline(always)]
fn governor_keyed(limiter: &DefaultKeyedRateLimiter<u64>, key: &u64) -> bool {
    black_box(limiter.check_key(key)).is_ok()
}

/// Asserts that `call` is never refused (and, for ours, never delayed) before
/// it is timed.
fn warm_up(what: &str, calls: u64, mut call: impl FnMut(u64) -> bool) {
    for i in 0..calls {
        assert!(call(i), "{what}: call {i} was refused during warm-up");
    }
}

fn assert_ours_undelayed(backend: &InMemoryBackend<u64>, key: Option<&u64>) {
    for _ in 0..10_000 {
        let admission = backend
            .reserve_now(key, Timestamp::now(), &PARAMS, Reserve::new())
            .expect("never refused");
        assert!(
            admission.delay().is_zero(),
            "ours was delayed: {admission:?}"
        );
    }
}

/// Times `iters` sequential calls of `call(i)`.
#[inline(always)]
fn timed(iters: u64, mut call: impl FnMut(u64) -> bool) -> Duration {
    let start = StdInstant::now();
    for i in 0..iters {
        black_box(call(i));
    }
    start.elapsed()
}

/// Two threads, released together by a barrier, each make `iters` calls of
/// `call`; returns the wall time from the first thread's start to the last
/// thread's end (thread spawn and join are outside it).
///
/// Normalisation: criterion (and the summary) divide the returned time by
/// `iters`, so the figure reported is wall time per *round*, a round being one
/// call on each of the two threads at once. It is therefore directly comparable
/// with the single-thread cases as "time per call seen by a caller under
/// two-way contention"; the aggregate throughput is two calls per that time.
fn two_threads(iters: u64, call: impl Fn() -> bool + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(StdInstant, StdInstant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = StdInstant::now();
                    for _ in 0..iters {
                        black_box(call());
                    }
                    (start, StdInstant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("two spans");
    let end = spans.iter().map(|s| s.1).max().expect("two spans");
    end - start
}

/// governor's keyed dashmap limiter with our map's hasher (foldhash) instead of
/// std's SipHash, to separate the hasher from the rest.
type FoldKeyed =
    DefaultKeyedRateLimiter<u64, NoOpMiddleware<QuantaInstant>, foldhash::fast::RandomState>;

/// A row of the summary table: indices of an ours line and a governor line.
struct Row {
    label: &'static str,
    ours: usize,
    governor: usize,
}

struct Case {
    group: &'static str,
    lines: Vec<Line>,
    rows: Vec<Row>,
}

fn line(name: &'static str, run: impl FnMut(u64) -> Duration + 'static) -> Line {
    Line {
        name,
        run: Box::new(run),
    }
}

fn case_hot_key() -> Case {
    let clock = default_clock();
    let key = 42_u64;
    let ours = backend();
    assert_ours_undelayed(&ours, Some(&key));
    warm_up("ours hot key", 100_000, |_| {
        ours_trait(&ours, Some(&key), clock)
    });
    let ours2 = ours.clone();
    let ours_tokio = ours.clone();
    let tokio_clock: &'static Clock = Box::leak(Box::new(Clock::tokio()));

    // Diagnostic: `InMemoryBackend::new()` (with a sweeper) used outside a Tokio
    // runtime, where it cannot start the sweeper and so checks for a runtime on
    // every call.
    let ours_new = InMemoryBackend::<u64>::new();
    warm_up("ours new() hot key", 10_000, |_| {
        ours_sync(&ours_new, Some(&key), clock)
    });

    let gov = DefaultKeyedRateLimiter::<u64>::dashmap(quota());
    warm_up("governor hot key", 100_000, |_| governor_keyed(&gov, &key));
    let gov_fold: FoldKeyed =
        RateLimiter::dashmap_with_hasher(quota(), foldhash::fast::RandomState::default());
    warm_up("governor foldhash hot key", 100_000, |_| {
        governor_keyed_fold(&gov_fold, &key)
    });

    Case {
        group: "a_hot_key",
        lines: vec![
            line("ours/reserve_trait_poll", move |n| {
                timed(n, |_| ours_trait(&ours, Some(&key), clock))
            }),
            line("ours/reserve_now", move |n| {
                timed(n, |_| ours_sync(&ours2, Some(&key), clock))
            }),
            line("ours/reserve_now_new_outside_runtime", move |n| {
                timed(n, |_| ours_sync(&ours_new, Some(&key), clock))
            }),
            line("governor/check_key", move |n| {
                timed(n, |_| governor_keyed(&gov, &key))
            }),
            line("governor/check_key_foldhash", move |n| {
                timed(n, |_| governor_keyed_fold(&gov_fold, &key))
            }),
            line("ours/reserve_trait_poll_tokio_clock", move |n| {
                timed(n, |_| ours_trait(&ours_tokio, Some(&key), tokio_clock))
            }),
        ],
        rows: vec![
            Row {
                label: "a hot key: reserve (trait+poll) / check_key",
                ours: 0,
                governor: 3,
            },
            Row {
                label: "a hot key: reserve_now / check_key",
                ours: 1,
                governor: 3,
            },
            Row {
                label: "a hot key: reserve_now, new() no rt / check_key",
                ours: 2,
                governor: 3,
            },
            Row {
                label: "a hot key: reserve_now / check_key (foldhash)",
                ours: 1,
                governor: 4,
            },
            Row {
                label: "a hot key: reserve (trait+poll, Clock::tokio) / check_key",
                ours: 5,
                governor: 3,
            },
        ],
    }
}

#[inline(always)]
fn governor_keyed_fold(limiter: &FoldKeyed, key: &u64) -> bool {
    black_box(limiter.check_key(key)).is_ok()
}

fn case_many_keys() -> Case {
    let clock = default_clock();
    let ours = backend();
    for key in 0..MANY_KEYS {
        assert!(ours_sync(&ours, Some(&key), clock));
    }
    assert_eq!(ours.len() as u64, MANY_KEYS);
    warm_up("ours 100k keys", 2 * MANY_KEYS, |i| {
        ours_trait(&ours, Some(&(i % MANY_KEYS)), clock)
    });
    let ours2 = ours.clone();

    let gov = DefaultKeyedRateLimiter::<u64>::dashmap(quota());
    warm_up("governor 100k keys", 3 * MANY_KEYS, |i| {
        governor_keyed(&gov, &(i % MANY_KEYS))
    });
    assert_eq!(gov.len() as u64, MANY_KEYS);
    let gov_fold: FoldKeyed =
        RateLimiter::dashmap_with_hasher(quota(), foldhash::fast::RandomState::default());
    warm_up("governor foldhash 100k keys", 3 * MANY_KEYS, |i| {
        governor_keyed_fold(&gov_fold, &(i % MANY_KEYS))
    });

    let ours_tokio = ours.clone();
    let tokio_clock: &'static Clock = Box::leak(Box::new(Clock::tokio()));
    // Each line keeps its own position in the round, carried across samples.
    let (mut p0, mut p1, mut p2, mut p3, mut p4) = (0_u64, 0_u64, 0_u64, 0_u64, 0_u64);
    Case {
        group: "b_100k_keys",
        lines: vec![
            line("ours/reserve_trait_poll", move |n| {
                timed(n, |_| {
                    p0 = if p0 + 1 == MANY_KEYS { 0 } else { p0 + 1 };
                    ours_trait(&ours, Some(&p0), clock)
                })
            }),
            line("ours/reserve_now", move |n| {
                timed(n, |_| {
                    p1 = if p1 + 1 == MANY_KEYS { 0 } else { p1 + 1 };
                    ours_sync(&ours2, Some(&p1), clock)
                })
            }),
            line("governor/check_key", move |n| {
                timed(n, |_| {
                    p2 = if p2 + 1 == MANY_KEYS { 0 } else { p2 + 1 };
                    governor_keyed(&gov, &p2)
                })
            }),
            line("governor/check_key_foldhash", move |n| {
                timed(n, |_| {
                    p3 = if p3 + 1 == MANY_KEYS { 0 } else { p3 + 1 };
                    governor_keyed_fold(&gov_fold, &p3)
                })
            }),
            line("ours/reserve_trait_poll_tokio_clock", move |n| {
                timed(n, |_| {
                    p4 = if p4 + 1 == MANY_KEYS { 0 } else { p4 + 1 };
                    ours_trait(&ours_tokio, Some(&p4), tokio_clock)
                })
            }),
        ],
        rows: vec![
            Row {
                label: "b 100k keys: reserve (trait+poll) / check_key",
                ours: 0,
                governor: 2,
            },
            Row {
                label: "b 100k keys: reserve_now / check_key",
                ours: 1,
                governor: 2,
            },
            Row {
                label: "b 100k keys: reserve_now / check_key (foldhash)",
                ours: 1,
                governor: 3,
            },
            Row {
                label: "b 100k keys: reserve (trait+poll, Clock::tokio) / check_key",
                ours: 4,
                governor: 2,
            },
        ],
    }
}

fn case_two_threads() -> Case {
    let clock = default_clock();
    let key = 7_u64;
    let ours = backend();
    assert_ours_undelayed(&ours, Some(&key));
    // Both threads at once during warm-up too: contention must not refuse either.
    two_threads(50_000, || {
        let ok = ours_trait(&ours, Some(&key), clock);
        assert!(ok, "ours refused under contention");
        ok
    });
    let ours2 = ours.clone();
    let ours_tokio = ours.clone();
    let tokio_clock: &'static Clock = Box::leak(Box::new(Clock::tokio()));

    let gov = DefaultKeyedRateLimiter::<u64>::dashmap(quota());
    two_threads(50_000, || {
        let ok = governor_keyed(&gov, &key);
        assert!(ok, "governor refused under contention");
        ok
    });

    Case {
        group: "c_two_threads_one_key",
        lines: vec![
            line("ours/reserve_trait_poll", move |n| {
                two_threads(n, || ours_trait(&ours, Some(&key), clock))
            }),
            line("ours/reserve_now", move |n| {
                two_threads(n, || ours_sync(&ours2, Some(&key), clock))
            }),
            line("governor/check_key", move |n| {
                two_threads(n, || governor_keyed(&gov, &key))
            }),
            line("ours/reserve_trait_poll_tokio_clock", move |n| {
                two_threads(n, || ours_trait(&ours_tokio, Some(&key), tokio_clock))
            }),
        ],
        rows: vec![
            Row {
                label: "c 2 threads 1 key: reserve (trait+poll) / check_key",
                ours: 0,
                governor: 2,
            },
            Row {
                label: "c 2 threads 1 key: reserve_now / check_key",
                ours: 1,
                governor: 2,
            },
            Row {
                label: "c 2 threads 1 key: reserve (trait+poll, Clock::tokio) / check_key",
                ours: 3,
                governor: 2,
            },
        ],
    }
}

fn case_global() -> Case {
    let clock = default_clock();
    let ours = backend();
    assert_ours_undelayed(&ours, None);
    warm_up("ours global", 100_000, |_| ours_trait(&ours, None, clock));
    let ours2 = ours.clone();

    let gov: DefaultDirectRateLimiter = RateLimiter::direct(quota());
    warm_up("governor direct", 100_000, |_| {
        black_box(gov.check()).is_ok()
    });

    Case {
        group: "d_global",
        lines: vec![
            line("ours/reserve_trait_poll_none", move |n| {
                timed(n, |_| ours_trait(&ours, None, clock))
            }),
            line("ours/reserve_now_none", move |n| {
                timed(n, |_| ours_sync(&ours2, None, clock))
            }),
            line("governor/direct_check", move |n| {
                timed(n, |_| black_box(gov.check()).is_ok())
            }),
        ],
        rows: vec![
            Row {
                label: "d global: reserve(None) (trait+poll) / direct check",
                ours: 0,
                governor: 2,
            },
            Row {
                label: "d global: reserve_now(None) / direct check",
                ours: 1,
                governor: 2,
            },
        ],
    }
}

fn case_clock() -> Case {
    let quanta = QuantaClock::default();
    Case {
        group: "e_clock",
        lines: vec![
            line("tokio_instant_now", |n| {
                timed(n, |_| {
                    black_box(Instant::now());
                    true
                })
            }),
            line("std_instant_now", |n| {
                timed(n, |_| {
                    black_box(StdInstant::now());
                    true
                })
            }),
            line("governor_quanta_now", move |n| {
                timed(n, |_| {
                    black_box(quanta.now());
                    true
                })
            }),
            line("ours_default_clock_now", |n| {
                let clock = default_clock();
                timed(n, |_| {
                    black_box(clock.now());
                    true
                })
            }),
        ],
        rows: vec![
            Row {
                label: "e clock: ours, default (TSC) / quanta now",
                ours: 3,
                governor: 2,
            },
            Row {
                label: "e clock: tokio Instant::now / quanta now",
                ours: 0,
                governor: 2,
            },
            Row {
                label: "e clock: std Instant::now / quanta now",
                ours: 1,
                governor: 2,
            },
        ],
    }
}

/// Calls between two clock reads in case (f): at one nanosecond per call the
/// TAT runs at most 1 ms ahead in between, far inside the 1 s burst.
const CALLS_PER_CLOCK_READ: u64 = 1_000_000;

/// Ours' clock in case (f): an `Instant` read once per [`CALLS_PER_CLOCK_READ`]
/// calls.
struct CachedNow {
    now: Timestamp,
    calls: u64,
}

impl CachedNow {
    fn new() -> Self {
        Self {
            now: Timestamp::now(),
            calls: 0,
        }
    }

    #[inline(always)]
    fn get(&mut self) -> Timestamp {
        self.calls += 1;
        if self.calls == CALLS_PER_CLOCK_READ {
            self.calls = 0;
            self.now = Timestamp::now();
        }
        self.now
    }
}

/// governor's clock in case (f): a `FakeRelativeClock` (its `now()` is an atomic
/// load) advanced by [`CALLS_PER_CLOCK_READ`] ns once per as many calls, so it
/// keeps pace with the TATs (one nanosecond per call).
struct FakeTicker {
    clock: FakeRelativeClock,
    calls: u64,
}

impl FakeTicker {
    fn new() -> (Self, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            Self {
                clock: clock.clone(),
                calls: 0,
            },
            clock,
        )
    }

    #[inline(always)]
    fn tick(&mut self) {
        self.calls += 1;
        if self.calls == CALLS_PER_CLOCK_READ {
            self.calls = 0;
            self.clock
                .advance(Duration::from_nanos(CALLS_PER_CLOCK_READ));
        }
    }
}

/// Diagnostic, not a like-for-like line: both limiters with the clock read taken
/// out of the loop (see [`CachedNow`] and [`FakeTicker`]), and governor's keyed
/// limiter on foldhash like ours, to show the cost of the decision itself.
fn case_no_clock() -> Case {
    let key = 42_u64;
    let ours_hot = backend();
    let ours_global = backend();
    let ours_many = backend();
    let (mut now_hot, mut now_global, mut now_many) =
        (CachedNow::new(), CachedNow::new(), CachedNow::new());

    let (mut tick_hot, clock) = FakeTicker::new();
    let gov_hot = RateLimiter::dashmap_with_clock_and_hasher(
        quota(),
        clock,
        foldhash::fast::RandomState::default(),
    );
    let (mut tick_direct, clock) = FakeTicker::new();
    let gov_direct = RateLimiter::direct_with_clock(quota(), clock);
    let (mut tick_many, clock) = FakeTicker::new();
    let gov_many = RateLimiter::dashmap_with_clock_and_hasher(
        quota(),
        clock,
        foldhash::fast::RandomState::default(),
    );

    // Warm-up, which also fills the 100k-key maps: nothing refused, ours never
    // delayed.
    for i in 0..2 * CALLS_PER_CLOCK_READ {
        let k = i % MANY_KEYS;
        for (backend, now, key) in [
            (&ours_hot, &mut now_hot, Some(&key)),
            (&ours_global, &mut now_global, None),
            (&ours_many, &mut now_many, Some(&k)),
        ] {
            let admission = backend.reserve_now(key, now.get(), &PARAMS, Reserve::new());
            assert!(
                admission.is_ok_and(|a| a.delay().is_zero()),
                "ours (f) delayed or refused"
            );
        }
        tick_hot.tick();
        tick_direct.tick();
        tick_many.tick();
        assert!(gov_hot.check_key(&key).is_ok(), "governor (f) refused");
        assert!(gov_direct.check().is_ok(), "governor (f) refused");
        assert!(gov_many.check_key(&k).is_ok(), "governor (f) refused");
    }
    assert_eq!(ours_many.len() as u64, MANY_KEYS);
    assert_eq!(gov_many.len() as u64, MANY_KEYS);

    let (mut p_ours, mut p_gov) = (0_u64, 0_u64);
    Case {
        group: "f_no_clock_diagnostic",
        lines: vec![
            line("ours/reserve_now_key", move |n| {
                timed(n, |_| {
                    let now = now_hot.get();
                    black_box(ours_hot.reserve_now(Some(&key), now, &PARAMS, Reserve::new()))
                        .is_ok()
                })
            }),
            line("ours/reserve_now_none", move |n| {
                timed(n, |_| {
                    let now = now_global.get();
                    black_box(ours_global.reserve_now(None, now, &PARAMS, Reserve::new())).is_ok()
                })
            }),
            line("ours/reserve_now_100k_keys", move |n| {
                timed(n, |_| {
                    p_ours = if p_ours + 1 == MANY_KEYS {
                        0
                    } else {
                        p_ours + 1
                    };
                    let now = now_many.get();
                    black_box(ours_many.reserve_now(Some(&p_ours), now, &PARAMS, Reserve::new()))
                        .is_ok()
                })
            }),
            line("governor/check_key_fake_clock_foldhash", move |n| {
                timed(n, |_| {
                    tick_hot.tick();
                    black_box(gov_hot.check_key(&key)).is_ok()
                })
            }),
            line("governor/direct_check_fake_clock", move |n| {
                timed(n, |_| {
                    tick_direct.tick();
                    black_box(gov_direct.check()).is_ok()
                })
            }),
            line(
                "governor/check_key_100k_keys_fake_clock_foldhash",
                move |n| {
                    timed(n, |_| {
                        p_gov = if p_gov + 1 == MANY_KEYS { 0 } else { p_gov + 1 };
                        tick_many.tick();
                        black_box(gov_many.check_key(&p_gov)).is_ok()
                    })
                },
            ),
        ],
        rows: vec![
            Row {
                label: "f no clock (diag): hot key / check_key (foldhash)",
                ours: 0,
                governor: 3,
            },
            Row {
                label: "f no clock (diag): reserve_now(None) / direct check",
                ours: 1,
                governor: 4,
            },
            Row {
                label: "f no clock (diag): 100k keys / check_key (foldhash)",
                ours: 2,
                governor: 5,
            },
        ],
    }
}

fn summary(cases: &mut [Case], mode: Mode) {
    let (samples, target) = sampling(mode);
    println!();
    println!(
        "Summary: median of {samples} samples of ~{target:?} per line, lines taking turns, \
         each turn after one untimed sample (ns per call; case c: wall ns per round of one \
         call on each of 2 threads)"
    );
    if mode != Mode::Bench {
        println!("(--test mode: tiny samples, figures are not meaningful)");
    }
    println!(
        "{:<56} | {:>11} | {:>14} | {:>6}",
        "case", "ours ns/op", "governor ns/op", "ratio"
    );
    println!("{:-<56}-|-{:->11}-|-{:->14}-|-{:->6}", "", "", "", "");
    for case in cases.iter_mut() {
        let m = medians(&mut case.lines, samples, target, 10_000, 50_000_000);
        for row in &case.rows {
            let (ours, gov) = (m[row.ours], m[row.governor]);
            println!(
                "{:<56} | {:>11.2} | {:>14.2} | {:>6.2}",
                row.label,
                ours,
                gov,
                ours / gov
            );
        }
    }
    println!("(ratio = ours / governor median time; below 1 means ours is faster)");
}

/// `CORE_COUNT=group:line CORE_COUNT_N=n`: sets up only `group`, then makes
/// `n` calls of `line` in [`measured_calls`], for an instruction count under
/// `valgrind --tool=callgrind` (see `tools/core_instructions.sh`).
/// Instructions, unlike seconds, do not move with the machine's load.
fn count(wanted: &str) {
    let n: u64 = std::env::var("CORE_COUNT_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (group, line) = wanted.split_once(':').expect("CORE_COUNT=group:line");
    let mut case = match group {
        "a_hot_key" => case_hot_key(),
        "b_100k_keys" => case_many_keys(),
        "d_global" => case_global(),
        "e_clock" => case_clock(),
        "f_no_clock_diagnostic" => case_no_clock(),
        other => panic!("CORE_COUNT: no group {other}"),
    };
    let found = case.lines.iter_mut().find(|l| l.name == line);
    let found = found.unwrap_or_else(|| panic!("CORE_COUNT: no line {line} in {group}"));
    measured_calls(found, n);
}

/// The part of a [`count`] run that callgrind counts (`--toggle-collect`).
#[inline(never)]
fn measured_calls(line: &mut Line, n: u64) {
    (line.run)(n);
}

fn main() {
    if let Ok(wanted) = std::env::var("CORE_COUNT") {
        count(&wanted);
        return;
    }
    let mode = mode();
    let mut cases = vec![
        case_hot_key(),
        case_many_keys(),
        case_two_threads(),
        case_global(),
        case_clock(),
        case_no_clock(),
    ];
    run_criterion(cases.iter_mut().map(|case| (case.group, &mut case.lines)));
    if mode != Mode::List {
        summary(&mut cases, mode);
    }
}
