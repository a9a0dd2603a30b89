//! The cost of a new key in the in-memory backend: unbounded, under
//! `max_keys` without groups (as before groups existed), and under `max_keys`
//! with the default grouping of `IpAddr` keys by network; and the cost of a
//! known key in a bounded, grouped table beside an unbounded one.
//!
//! Keys are IPv6 `/64`s as `ClientIp` makes them. Every timed call of the
//! new-key lines inserts a key never seen before into a table built for the
//! sample (untimed), sized so that it never fills: the table's growth is in
//! every line alike. The time is passed in (no clock read), and the params
//! (10^9 per second, burst 10^9) never refuse.
//!
//! * `new_key/unbounded`, `new_key/max_keys` (`without_groups`),
//!   `new_key/grouped_one_per_48` (each key in a /48 of its own: one group
//!   entry per key, the worst case), `new_key/grouped_64_per_48`;
//! * `overflow/one_48_beyond_share`: keys of one /48 beyond its share,
//!   decided on its overflow bucket (the flood's path);
//! * `known_key/unbounded_100k`, `known_key/grouped_100k`: 100 000 held keys,
//!   round-robin.
//!
//! `cargo bench --bench new_keys`; a summary of medians (ns per call) follows
//! criterion's output, as in the other benches.
//!
//! Instructions instead of time (they do not move with the machine's load):
//! `NEW_KEYS_COUNT=group/line NEW_KEYS_COUNT_N=20000` runs that line once, for
//! N calls, inside `measured_calls`, and nothing else; count it with
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_calls*'`
//! and divide by N (the table is built outside it; the new-key lines build
//! their table inside, so the figure includes its allocation, amortised).

mod support;

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use support::{Line, Mode, medians, mode, run_criterion, sampling};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimitParams, Reserve};

const PARAMS: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);

const KNOWN: u64 = 100_000;

fn now() -> Timestamp {
    Timestamp::from_nanos(1_000_000_000_000)
}

/// The `i`-th /64: in a /48 of its own, or 64 to a /48.
fn key(i: u64, per_48: u64) -> IpAddr {
    let (net, sub) = (u128::from(i / per_48), u128::from(i % per_48));
    IpAddr::V6(Ipv6Addr::from_bits(
        (0x2 << 124) | (net << 80) | (sub << 64),
    ))
}

#[inline(always)]
fn call(backend: &InMemoryBackend<IpAddr>, key: &IpAddr) -> bool {
    black_box(backend.reserve_now(Some(key), now(), &PARAMS, Reserve::new())).is_ok()
}

/// A line inserting `n` new keys into a table from `build(n)`.
fn new_keys(name: &'static str, per_48: u64, build: fn(usize) -> InMemoryBackend<IpAddr>) -> Line {
    Line {
        name,
        run: Box::new(move |n| {
            let backend = build(usize::try_from(n).unwrap() + 1);
            let keys: Vec<IpAddr> = (0..n).map(|i| key(i, per_48)).collect();
            let start = Instant::now();
            for key in &keys {
                assert!(call(&backend, key));
            }
            let took = start.elapsed();
            assert_eq!(backend.len() as u64 + backend.overflow_buckets() as u64, n);
            took
        }),
    }
}

fn unbounded(_: usize) -> InMemoryBackend<IpAddr> {
    InMemoryBackend::builder().without_sweeper().build()
}

fn bounded(max_keys: usize) -> InMemoryBackend<IpAddr> {
    InMemoryBackend::builder()
        .max_keys(max_keys)
        .without_groups()
        .without_sweeper()
        .build()
}

fn grouped(max_keys: usize) -> InMemoryBackend<IpAddr> {
    // Group share large enough for 64 keys a /48.
    InMemoryBackend::builder()
        .max_keys(max_keys.max(64 * 32))
        .without_sweeper()
        .build()
}

/// Keys of one /48 beyond its share (64): all but the first 64 go to its
/// overflow bucket. (A /48 has 65 536 /64s: past those, the next /48 takes
/// over, and its first 64 keys get entries.)
fn overflow() -> Line {
    Line {
        name: "one_48_beyond_share",
        run: Box::new(|n| {
            let backend = InMemoryBackend::<IpAddr>::builder()
                .max_keys(1 << 20)
                .group_share(64)
                .without_sweeper()
                .build();
            let keys: Vec<IpAddr> = (0..n + 64).map(|i| key(i, 65_536)).collect();
            for key in &keys[..64] {
                assert!(call(&backend, key));
            }
            let start = Instant::now();
            for key in &keys[64..] {
                assert!(call(&backend, key));
            }
            let took = start.elapsed();
            assert_eq!(backend.len() as u64, 64 * (n + 64).div_ceil(65_536));
            took
        }),
    }
}

fn known_keys(name: &'static str, backend: InMemoryBackend<IpAddr>) -> Line {
    let keys: Vec<IpAddr> = (0..KNOWN).map(|i| key(i, 1)).collect();
    for key in &keys {
        assert!(call(&backend, key));
    }
    assert_eq!(backend.len() as u64, KNOWN);
    let mut at = 0usize;
    Line {
        name,
        run: Box::new(move |n| {
            let start = Instant::now();
            for _ in 0..n {
                at = if at + 1 == keys.len() { 0 } else { at + 1 };
                assert!(call(&backend, &keys[at]));
            }
            start.elapsed()
        }),
    }
}

#[inline(never)]
fn measured_calls(line: &mut Line, n: u64) -> Duration {
    (line.run)(n)
}

fn main() {
    let mode = mode();
    let mut groups = vec![
        (
            "new_key",
            vec![
                new_keys("unbounded", 1, unbounded),
                new_keys("max_keys", 1, bounded),
                new_keys("grouped_one_per_48", 1, grouped),
                new_keys("grouped_64_per_48", 64, grouped),
            ],
        ),
        ("overflow", vec![overflow()]),
        (
            "known_key",
            vec![
                known_keys("unbounded_100k", unbounded(0)),
                known_keys("grouped_100k", grouped(2 * KNOWN as usize)),
            ],
        ),
    ];
    if let Ok(wanted) = std::env::var("NEW_KEYS_COUNT") {
        let n = std::env::var("NEW_KEYS_COUNT_N").map_or(20_000, |n| n.parse().unwrap());
        for (group, lines) in &mut groups {
            for line in lines.iter_mut() {
                if format!("{group}/{}", line.name) == wanted {
                    black_box(measured_calls(line, n));
                    return;
                }
            }
        }
        panic!("no line {wanted}");
    }
    run_criterion(groups.iter_mut().map(|(name, lines)| (*name, lines)));
    if mode == Mode::List {
        return;
    }
    let (samples, target) = sampling(mode);
    println!();
    println!("Summary: median ns per call of {samples} samples of ~{target:?}, lines taking turns");
    for (group, lines) in &mut groups {
        let m = medians(lines, samples, target, 1_000, 5_000_000);
        for (line, ns) in lines.iter().zip(m) {
            println!(
                "{:<40} | {ns:>9.1} ns | {:>6.2} M/s",
                format!("{group}/{}", line.name),
                1e3 / ns
            );
        }
    }
}
