//! Issue 13, point 3: one IPv6 /48 rotating through its 65 536 /64s must not
//! lock first-time clients from other networks out of a bounded table. Time
//! is passed in as explicit `Timestamp`s: no clock is read.
// The flood keys clients as `ClientIp` does (IPv6 per /64), which needs `http`.
#![cfg(feature = "http")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::key::ClientIp;
use tower_freqlimit::{BackendErrorKind, FreqLimitError, FreqLimitParams, Reserve};

const MAX_KEYS: usize = 10_000;
/// An arbitrary origin far from 0.
const T0: u64 = 1_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// The flood: 400 requests a second from `2001:db8:aaaa::/48`, each from the
/// next of its 65 536 /64s, for 300 s; 240 first-time clients from other
/// networks (every other one IPv4) arrive evenly over the same 300 s, call once
/// on arrival and then once a second until admitted (a browser retrying a
/// `503`). The sweeper is modelled by a sweep every 60 s.
///
/// Returns every client's wait (arrival to admission; `None`: never admitted)
/// and the most entries the table held (keys plus the groups' overflow
/// buckets, which take slots of `max_keys` too).
fn flood(backend: &InMemoryBackend<IpAddr>, params: &FreqLimitParams) -> (Vec<Option<u64>>, usize) {
    let keys = ClientIp::peer();
    let step = SECOND / 400; // 2.5 ms
    let steps = 300 * 400;
    let arrival_every = steps / 240; // 500 steps: 1.25 s
    let mut waits: Vec<Option<u64>> = Vec::new();
    let mut pending: Vec<(usize, IpAddr, u64)> = Vec::new();
    let mut most_held = 0;
    let admitted = |key: &IpAddr, now: Timestamp| -> bool {
        match backend.reserve_now(Some(key), now, params, Reserve::new().no_wait()) {
            Ok(_) => true,
            Err(FreqLimitError::Rejected(_)) => false,
            Err(FreqLimitError::Backend(err)) if err.kind() == BackendErrorKind::Full => false,
            Err(other) => panic!("unexpected error for {key}: {other:?}"),
        }
    };
    for n in 0..steps {
        let at = n * step;
        let now = Timestamp::from_nanos(T0 + at);
        // The flood: the next /64 of the /48, a random-looking host part.
        let addr = Ipv6Addr::from_bits(
            (0x2001_0db8_aaaa_u128 << 80) | (u128::from(n % 65_536) << 64) | 0x1234,
        );
        admitted(&keys.mask(IpAddr::V6(addr)), now);
        if n % arrival_every == 0 {
            let i = waits.len() as u64;
            let client = if i.is_multiple_of(2) {
                // One per /16 and /24: 198.18.0.0/15 and 100.64.0.0/10 ranges.
                IpAddr::V4(Ipv4Addr::new(
                    100,
                    64 + (i / 2 % 64) as u8,
                    (i * 7 % 256) as u8,
                    9,
                ))
            } else {
                // One per /48 elsewhere in 2001:db8::/32.
                IpAddr::V6(Ipv6Addr::from_bits(
                    (0x2001_0db8_u128 << 96) | (u128::from(0x1000 + i) << 80) | 0x5678,
                ))
            };
            waits.push(None);
            pending.push((waits.len() - 1, keys.mask(client), at));
        }
        if n % 400 == 0 || n % arrival_every == 0 {
            pending.retain(|&(index, client, arrived)| {
                // Retries once a second after arrival (and the arrival itself).
                if !(at - arrived).is_multiple_of(SECOND) {
                    return true;
                }
                if admitted(&client, now) {
                    waits[index] = Some(at - arrived);
                    return false;
                }
                true
            });
        }
        if n % (60 * 400) == 0 {
            backend.sweep(now);
        }
        if n % 64 == 0 {
            most_held = most_held.max(backend.len() + backend.overflow_buckets());
        }
    }
    (
        waits,
        most_held.max(backend.len() + backend.overflow_buckets()),
    )
}

fn report(waits: &[Option<u64>]) -> (usize, u64) {
    let served = waits.iter().flatten().count();
    let worst = waits
        .iter()
        .map(|w| w.unwrap_or(u64::MAX))
        .max()
        .unwrap_or(0);
    (served, worst)
}

#[test]
fn a_prefix_flood_does_not_lock_other_networks_out() {
    // One call a minute per /64: every flood key owes time for a minute, so
    // the flood alone wants 24 000 slots.
    let params = FreqLimitParams::per_minute(1);
    let t = params.interval().as_nanos() as u64;
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(MAX_KEYS)
        .without_sweeper()
        .build();
    let (waits, most_held) = flood(&backend, &params);
    let (served, worst) = report(&waits);
    println!(
        "prefix flood: {served} of {} first-time clients served, worst wait {}, most keys held {most_held}",
        waits.len(),
        if worst == u64::MAX {
            "never".to_owned()
        } else {
            format!("{:?}", Duration::from_nanos(worst))
        },
    );
    assert_eq!(waits.len(), 240);
    assert!(most_held <= MAX_KEYS, "the table held {most_held} keys");
    for (i, wait) in waits.iter().enumerate() {
        assert!(
            wait.is_some_and(|w| w <= t),
            "client {i} waited {wait:?} ns (T = {t} ns); {served} of 240 served"
        );
    }
}

#[test]
fn without_groups_the_flood_locks_new_clients_out() {
    // The behaviour before groups, still there on request: the flood's keys
    // fill the table and most first-time clients are turned away.
    let params = FreqLimitParams::per_minute(1);
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(MAX_KEYS)
        .without_groups()
        .without_sweeper()
        .build();
    assert_eq!(backend.group_share(), None);
    let (waits, most_held) = flood(&backend, &params);
    let (served, _) = report(&waits);
    assert!(served < 240, "{served} served");
    assert!(most_held <= MAX_KEYS);
    assert_eq!(backend.overflow_buckets(), 0);
}

#[test]
fn the_flooding_network_holds_its_share_and_one_overflow_bucket() {
    let params = FreqLimitParams::per_minute(1);
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(MAX_KEYS)
        .without_sweeper()
        .build();
    let share = backend.group_share().unwrap();
    assert_eq!(share, MAX_KEYS / 32);
    let keys = ClientIp::peer();
    let now = Timestamp::from_nanos(T0);
    let mut admitted = 0;
    for n in 0..65_536u128 {
        let addr = Ipv6Addr::from_bits((0x2001_0db8_aaaa_u128 << 80) | (n << 64) | 1);
        let key = keys.mask(IpAddr::V6(addr));
        if backend
            .reserve_now(Some(&key), now, &params, Reserve::new().no_wait())
            .is_ok()
        {
            admitted += 1;
        }
    }
    // Its share of keys, each admitted once, and one more call admitted on the
    // overflow bucket; the rest rejected (429), not refused for a full table.
    assert_eq!(backend.len(), share);
    assert_eq!(backend.overflow_buckets(), 1);
    assert_eq!(admitted, share + 1);
}

#[test]
fn racing_threads_keep_the_bound_and_the_group_counts() {
    // Two threads, each flooding a /48 of its own and both a shared one, at
    // one frozen instant; then everything drains and is swept. No claim may
    // leak: afterwards the shared /48 gets exactly its share again.
    let params = FreqLimitParams::per_second(1);
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(1_000)
        .group_share(100)
        .without_sweeper()
        .build();
    let net = |prefix: u128, n: u128| IpAddr::V6(Ipv6Addr::from_bits((prefix << 80) | (n << 64)));
    let now = Timestamp::from_nanos(T0);
    std::thread::scope(|scope| {
        for own in [0x2001_0db8_0001_u128, 0x2001_0db8_0002] {
            let backend = &backend;
            let params = &params;
            scope.spawn(move || {
                for n in 0..5_000u128 {
                    for key in [net(own, n), net(0x2001_0db8_00ff, n % 300)] {
                        let _ =
                            backend.reserve_now(Some(&key), now, params, Reserve::new().no_wait());
                    }
                }
            });
        }
    });
    assert_eq!(backend.len(), 300);
    assert_eq!(backend.overflow_buckets(), 3);
    let later = now + Duration::from_secs(2);
    assert_eq!(backend.sweep(later), 300);
    assert_eq!((backend.len(), backend.overflow_buckets()), (0, 0));
    for n in 0..300u128 {
        let key = net(0x2001_0db8_00ff, n);
        let _ = backend.reserve_now(Some(&key), later, &params, Reserve::new().no_wait());
    }
    assert_eq!((backend.len(), backend.overflow_buckets()), (100, 1));
}

#[test]
fn racing_calls_of_one_new_key_count_it_once_in_its_group() {
    // Four threads send the same 300 keys of one /48 (share 100) at one
    // frozen instant. Each key must be counted once in its group: when two
    // calls of one key both counted it, a third key saw the group full for a
    // moment and went to the overflow bucket for good (99 or 98 keys held in
    // about half of the rounds).
    let net = |n: u128| {
        IpAddr::V6(Ipv6Addr::from_bits(
            (0x2001_0db8_00ff_u128 << 80) | (n << 64),
        ))
    };
    let params = FreqLimitParams::per_second(1);
    let now = Timestamp::from_nanos(T0);
    for round in 0..50 {
        let backend = InMemoryBackend::<IpAddr>::builder()
            .max_keys(1_000)
            .group_share(100)
            .without_sweeper()
            .build();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (backend, params) = (&backend, &params);
                scope.spawn(move || {
                    for n in 0..3_000u128 {
                        let key = net(n % 300);
                        let _ =
                            backend.reserve_now(Some(&key), now, params, Reserve::new().no_wait());
                    }
                });
            }
        });
        assert_eq!(
            (backend.len(), backend.overflow_buckets()),
            (100, 1),
            "round {round}"
        );
    }
}

#[test]
fn a_wait_on_an_overflow_bucket_is_refunded() {
    use tower_freqlimit::FreqLimitBackend;
    // A share of one key: 10.0.0.1 has the entry, the others of 10.0.0.0/24
    // share the overflow bucket.
    let params = FreqLimitParams::per_second(1);
    let backend = InMemoryBackend::<IpAddr>::builder()
        .max_keys(10)
        .group_share(1)
        .without_sweeper()
        .build();
    let ip = |last: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
    let now = Timestamp::from_nanos(T0);
    let call = |last: u8| {
        backend
            .reserve_now(Some(&ip(last)), now, &params, Reserve::new())
            .unwrap()
    };
    assert_eq!(call(1).delay(), Duration::ZERO);
    let created = call(2);
    assert_eq!(created.delay(), Duration::ZERO);
    let waiting = call(3);
    assert_eq!(waiting.delay(), Duration::from_secs(1));
    // The waiter is dropped: its slot goes back, the next one takes it.
    assert!(backend.refund(Some(&ip(3)), &waiting));
    assert!(!backend.refund(Some(&ip(3)), &waiting));
    assert_eq!(call(4).delay(), Duration::from_secs(1));
    // Refunding the reservation that created the bucket keeps the bucket, as
    // drained, until the sweep: its slot is neither lost nor counted twice.
    let backend2 = InMemoryBackend::<IpAddr>::builder()
        .max_keys(10)
        .group_share(1)
        .without_sweeper()
        .build();
    backend2
        .reserve_now(Some(&ip(1)), now, &params, Reserve::new())
        .unwrap();
    let created = backend2
        .reserve_now(Some(&ip(2)), now, &params, Reserve::new())
        .unwrap();
    assert!(backend2.refund(Some(&ip(2)), &created));
    assert_eq!(backend2.overflow_buckets(), 1);
    let again = backend2
        .reserve_now(Some(&ip(5)), now, &params, Reserve::new())
        .unwrap();
    assert_eq!(again.delay(), Duration::ZERO);
    assert_eq!(backend2.overflow_buckets(), 1);
    assert_eq!(backend2.sweep(now + Duration::from_secs(1)), 1);
    assert_eq!((backend2.len(), backend2.overflow_buckets()), (0, 0));
}

mod known_key {
    //! A key's calls go through its own entry, its group's overflow bucket,
    //! refusals of a full table, sweeps and refunds; whatever the path, its
    //! admitted slots never exceed `burst + w / T` in any window of length `w`.

    use std::collections::HashMap;
    use std::time::Duration;

    use proptest::prelude::*;
    use tower_freqlimit::backends::memory::InMemoryBackend;
    use tower_freqlimit::clock::Timestamp;
    use tower_freqlimit::{FreqLimitBackend, FreqLimitError, FreqLimitParams, Reserve};

    #[derive(Debug, Clone)]
    enum Op {
        /// A call of `key` after `gap` tenths of T, waiting at most `wait`
        /// tenths of T (`None`: no bound); refunded at once if `refund`.
        Call {
            key: u32,
            gap: u64,
            wait: Option<u64>,
            refund: bool,
        },
        /// A sweep (idle TTL 0) after `gap` tenths of T.
        Sweep { gap: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..12, 0u64..15, prop::option::of(0u64..25), prop::bool::weighted(0.1))
                .prop_map(|(key, gap, wait, refund)| Op::Call { key, gap, wait, refund }),
            1 => (0u64..15).prop_map(|gap| Op::Sweep { gap }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_known_key_is_never_admitted_early(
            max_keys in 1usize..8,
            share in 1usize..4,
            burst in 1u32..4,
            ops in prop::collection::vec(op(), 1..300),
        ) {
            // T = 10 ms; keys in groups of four (0..3, 4..7, 8..11).
            let params = FreqLimitParams::new(100 * burst, Duration::from_secs(burst.into()), burst);
            let t = params.interval().as_nanos() as u64;
            let backend = InMemoryBackend::<u32>::builder()
                .max_keys(max_keys)
                .group_by(|key| u64::from(*key / 4))
                .group_share(share)
                .without_sweeper()
                .build();
            let mut now = 1_000_000_000_000u64;
            let mut slots: HashMap<u32, Vec<u64>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Sweep { gap } => {
                        now += gap * t / 10;
                        backend.sweep(Timestamp::from_nanos(now));
                    }
                    Op::Call { key, gap, wait, refund } => {
                        now += gap * t / 10;
                        let request = match wait {
                            Some(w) => Reserve::new().max_wait(Duration::from_nanos(w * t / 10)),
                            None => Reserve::new(),
                        };
                        match backend.reserve_now(Some(&key), Timestamp::from_nanos(now), &params, request) {
                            Ok(admission) => {
                                let given_back = refund && backend.refund(Some(&key), &admission);
                                if !given_back {
                                    let slot = now + admission.delay().as_nanos() as u64;
                                    slots.entry(key).or_default().push(slot);
                                }
                            }
                            Err(FreqLimitError::Rejected(_) | FreqLimitError::Backend(_)) => {}
                            Err(other) => prop_assert!(false, "unexpected {other:?}"),
                        }
                    }
                }
                prop_assert!(backend.len() + backend.overflow_buckets() <= max_keys);
            }
            for (key, mut slots) in slots {
                slots.sort_unstable();
                for i in 0..slots.len() {
                    for j in i..slots.len() {
                        let w = slots[j] - slots[i];
                        let count = (j - i + 1) as u64;
                        prop_assert!(
                            count <= u64::from(burst) + w / t,
                            "key {key}: {count} slots in a window of {w} ns (T = {t}, burst = {burst})"
                        );
                    }
                }
            }
        }
    }
}
