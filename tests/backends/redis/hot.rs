//! Hot keys on a real server: a batch decides each caller as the same calls
//! made one by one would; several backends on one key, with batching and
//! leases on and off, at high and low demand, keep the window bound on their
//! merged admission times (`burst + w/T`, plus one event with leases in
//! reject mode); an OS process that dies holding a lease loses at most its
//! leased slots.
//!
//! Times are the callers' (`RedisClock::LimiterTimestamp`), so each run is a
//! schedule in logical time, whatever the machine's load.

use tower_freqlimit::backends::redis::{Leases, RedisStats};

use super::*;

/// How the backends of a run treat the hot key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Plain,
    Batching,
    Leases,
}

/// A backend on the callers' clock in `mode`, sharing `prefix`.
pub(super) async fn fleet_backend(url: &str, prefix: &str, mode: Mode) -> RedisBackend<String> {
    let b = RedisBackend::<String>::builder()
        .prefix(prefix)
        .clock(RedisClock::LimiterTimestamp)
        .timeout(Duration::from_secs(5));
    let b = match mode {
        Mode::Plain => b,
        Mode::Batching => b.batching(),
        Mode::Leases => b.leases(Leases::new().length(Duration::from_millis(200))),
    };
    b.connect(url).await.expect("connect to the test server")
}

/// One admission: when it starts (ns) and the span it took (µs).
pub(super) type Admitted = (u64, u64);

/// Requests from every backend on one key, `demand` requests per interval `T`
/// in all (spread evenly over the backends, staggered), from `start` ns for
/// `run` ns, each waiting at most `max_wait`. Requests of one millisecond are
/// made together, so that they queue behind each other. Returns the
/// admissions.
pub(super) async fn simulate(
    backends: &[RedisBackend<String>],
    params: &FreqLimitParams,
    start: u64,
    run: u64,
    demand: f64,
    max_wait: Option<Duration>,
) -> Vec<Admitted> {
    let t = params.interval_nanos();
    let n = backends.len();
    // Each backend's requests come every `gap` ns (whole µs).
    let gap = ((t as f64 * n as f64 / demand) as u64 / 1_000).max(1) * 1_000;
    let mut events: Vec<(u64, usize)> = Vec::new();
    for b in 0..n {
        let mut at = start + (gap / n as u64 / 1_000) * 1_000 * b as u64;
        while at < start + run {
            events.push((at, b));
            at += gap;
        }
    }
    events.sort_unstable();
    let request = match max_wait {
        Some(w) => Reserve::new().max_wait(w),
        None => Reserve::new(),
    };
    let mut admitted = Vec::new();
    for tick in events.chunk_by(|a, b| a.0 / 1_000_000 == b.0 / 1_000_000) {
        let futures: Vec<_> = tick
            .iter()
            .map(|&(at, b)| {
                let f =
                    backends[b].reserve(Some("hot"), Timestamp::from_nanos(at), params, request);
                (at, f)
            })
            .collect();
        for (at, f) in futures {
            match f.await {
                Ok(a) => admitted.push((at + a.delay().as_nanos() as u64, a.refund_token().start)),
                Err(FreqLimitError::Rejected(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    admitted
}

/// The largest `admitted - (burst + w/T)` over every window of `times` (ns).
pub(super) fn window_excess(times: &[u64], params: &FreqLimitParams) -> f64 {
    let mut times = times.to_vec();
    times.sort_unstable();
    let t = params.interval_nanos() as f64;
    let burst = f64::from(params.burst());
    let mut worst = f64::NEG_INFINITY;
    for i in 0..times.len() {
        for j in i..times.len() {
            let count = (j - i + 1) as f64;
            let w = (times[j] - times[i]) as f64;
            worst = worst.max(count - burst - w / t);
        }
    }
    worst
}

/// Each span taken once: no slot admitted twice, in any process.
pub(super) fn assert_distinct_spans(admitted: &[Admitted]) {
    let mut spans: Vec<u64> = admitted.iter().map(|a| a.1).collect();
    spans.sort_unstable();
    let before = spans.len();
    spans.dedup();
    assert_eq!(spans.len(), before, "a span was admitted twice");
}

fn total(stats: &[RedisStats], f: fn(&RedisStats) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

#[test]
fn a_batch_decides_each_caller_as_the_same_calls_one_by_one() {
    let Some((server, rt, config)) = proptest_on_a_server(48) else {
        return;
    };
    let url = server.url();
    let strategy = (1u64..=50_000, 1u32..=6).prop_flat_map(|(t, burst)| {
        (
            Just(t),
            Just(burst),
            steps(t, burst),
            prop::collection::vec(1usize..=6, 1..25),
        )
    });
    proptest!(config, |((interval_us, burst, steps, rounds) in strategy)| {
        let params = FreqLimitParams::new(1, Duration::from_micros(interval_us), burst);
        rt.block_on(async {
            let batched = builder()
                .clock(RedisClock::LimiterTimestamp)
                .without_negative_cache()
                .timeout(Duration::from_secs(5))
                .batching()
                .connect(&url)
                .await
                .unwrap();
            // The reference: gcra::reserve, one call after the other.
            let mut tat: Option<u64> = None;
            let mut now = 1_000_000_000_000_000u64;
            let mut expected = Vec::new();
            let mut times = Vec::new();
            for step in &steps {
                now += step.dt * 1_000;
                times.push(now);
                let r = gcra::reserve(tat, now, &params, &request(step));
                if let Ok(r) = &r && let Some(new_tat) = r.new_tat {
                    tat = Some(new_tat);
                }
                expected.push(r.map(|r| r.admission).map_err(FreqLimitError::from));
            }
            // The same calls in rounds made together: each round is one batch.
            let mut got = Vec::new();
            let mut at = 0;
            let mut sizes = rounds.iter().cycle();
            let mut batches = 0;
            while at < steps.len() {
                let size = (*sizes.next().unwrap()).min(steps.len() - at);
                batches += u64::from(size > 1);
                let futures: Vec<_> = (at..at + size)
                    .map(|i| {
                        batched.reserve(Some("k"), Timestamp::from_nanos(times[i]), &params, request(&steps[i]))
                    })
                    .collect();
                for f in futures {
                    got.push(f.await);
                }
                at += size;
            }
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(g, e, "call {i}: {:?}", steps[i]);
            }
            let stats = batched.stats();
            assert_eq!(stats.batches, batches);
            assert_eq!(stats.script_calls as usize, steps.len() - stats.batched as usize + batches as usize);
        });
    });
}

#[test]
fn several_backends_keep_the_window_bound_in_every_mode() {
    let Some((server, rt, config)) = proptest_on_a_server(24) else {
        return;
    };
    let url = server.url();
    let strategy = (
        1usize..=3,
        prop_oneof![Just(Mode::Plain), Just(Mode::Batching), Just(Mode::Leases)],
        prop_oneof![Just(0.5f64), Just(3.0), Just(10.0)],
        1u32..=5,
        prop_oneof![Just(None), Just(Some(0u64)), Just(Some(30_000))],
    );
    proptest!(config, |((n, mode, demand, burst, wait_us) in strategy)| {
        let params = FreqLimitParams::per_second(100).with_burst(burst);
        rt.block_on(async {
            let prefix = fresh_prefix();
            let mut backends = Vec::new();
            for _ in 0..n {
                backends.push(fleet_backend(&url, &prefix, mode).await);
            }
            let max_wait = wait_us.map(Duration::from_micros);
            let start = 1_000_000_000_000_000u64;
            let run = 1_500_000_000;
            let admitted = simulate(&backends, &params, start, run, demand, max_wait).await;
            assert_distinct_spans(&admitted);
            let times: Vec<u64> = admitted.iter().map(|a| a.0).collect();
            let excess = window_excess(&times, &params);
            // One event of slack: a slot used anywhere in its interval, which
            // only a leased reject-mode caller does.
            let slack = if mode == Mode::Leases && wait_us == Some(0) { 1.0 } else { 0.0 };
            prop_assert!(
                excess <= slack + 1e-9,
                "{mode:?}, {n} backends, demand {demand}, burst {burst}, wait {wait_us:?}: excess {excess}"
            );
            // A backend leases when its own demand is hot: two requests
            // per interval (`Leases::min_demand`'s default).
            let leasing = mode == Mode::Leases && demand / n as f64 >= 2.0;
            if demand >= 3.0 && wait_us == Some(0) && (leasing || burst >= 2) {
                // Over the limit, the key's capacity is used (the leases'
                // first window counts demand before any lease; without a
                // lease and with burst 1, requests that come between slots
                // let the schedule drift, GCRA's own loss: 113 of 151 with
                // two backends asking 1.5 times per interval each).
                let capacity = f64::from(burst) + run as f64 / params.interval_nanos() as f64;
                prop_assert!(
                    admitted.len() as f64 >= 0.85 * capacity,
                    "{mode:?}: {} admitted of {capacity}", admitted.len()
                );
            }
            for b in &backends {
                b.release_leases().await;
            }
            Ok(())
        })?;
    });
}

#[tokio::test]
async fn leases_cut_the_calls_of_a_hot_key_and_stop_when_demand_falls() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let params = FreqLimitParams::per_second(100).with_burst(5);
    let prefix = fresh_prefix();
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(fleet_backend(&server.url(), &prefix, Mode::Leases).await);
    }
    let start = 1_000_000_000_000_000u64;
    let run = 3_000_000_000;
    let no_wait = Some(Duration::ZERO);
    let high = simulate(&backends, &params, start, run, 10.0, no_wait).await;
    let stats: Vec<RedisStats> = backends.iter().map(RedisBackend::stats).collect();
    let calls = total(&stats, |s| s.script_calls + s.refunds_sent);
    let per_admitted = calls as f64 / high.len() as f64;
    println!(
        "10x: {} admitted, {calls} calls ({per_admitted:.3} per admitted), {stats:?}",
        high.len()
    );
    assert!(total(&stats, |s| s.leases) >= 3, "{stats:?}");
    // Most admissions came from leased slots.
    let used = total(&stats, |s| s.slots_used) as usize;
    assert!(
        used <= high.len() && used * 10 >= high.len() * 8,
        "{used} of {}",
        high.len()
    );
    assert!(per_admitted <= 0.25, "{per_admitted}");
    // Then a twentieth of that: the leases stop, what they held goes back.
    let low = simulate(&backends, &params, start + run, run, 0.5, no_wait).await;
    let after: Vec<RedisStats> = backends.iter().map(RedisBackend::stats).collect();
    // At most two more leases each (the one in use and the next), in the
    // first window, while the demand measured is still the high one. (How
    // many depends on when the background lease calls run, in real time.)
    let more = total(&after, |s| s.leases) - total(&stats, |s| s.leases);
    assert!(more <= 6, "{more} leases at low demand");
    assert!(total(&after, |s| s.slots_returned) > 0, "{after:?}");
    // At low demand almost nobody is refused (only while the leases taken
    // at high demand still cover the key).
    let requests = (run as f64 / params.interval_nanos() as f64 * 0.5) as usize;
    assert!(
        low.len() * 10 >= requests * 8,
        "{} of {requests}",
        low.len()
    );
    let mut all = high;
    all.extend(low);
    assert_distinct_spans(&all);
    let times: Vec<u64> = all.iter().map(|a| a.0).collect();
    assert!(window_excess(&times, &params) <= 1.0);
}

const DYING_ENV: &str = "FREQLIMIT_LEASE_DYING";

/// This test's name as the harness knows it, for `--exact` in the child.
fn dying_test() -> String {
    let (_crate, module) = module_path!().split_once("::").expect("a module");
    format!("{module}::a_process_that_dies_holding_a_lease_loses_only_its_slots")
}

const START: u64 = 1_000_000_000_000_000;
const CHILD_RUN: u64 = 300_000_000;

#[tokio::test]
async fn a_process_that_dies_holding_a_lease_loses_only_its_slots() {
    let params = FreqLimitParams::per_second(100).with_burst(5);
    // In the child: lease at ten times the limit for 300 ms, report, then
    // wait to be killed.
    if let Ok(spec) = std::env::var(DYING_ENV) {
        let (url, prefix) = spec.split_once(' ').unwrap();
        let b = fleet_backend(url, prefix, Mode::Leases).await;
        for (at, span) in simulate(
            std::slice::from_ref(&b),
            &params,
            START,
            CHILD_RUN,
            10.0,
            Some(Duration::ZERO),
        )
        .await
        {
            println!("ADMIT {at} {span}");
        }
        let s = b.stats();
        println!("HELD {}", s.leased_slots - s.slots_used - s.slots_lost);
        println!("READY");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let mut child = child_test(
        &dying_test(),
        &[(DYING_ENV, format!("{} {prefix}", server.url()))],
    );
    let stdout = child.stdout.take().unwrap();
    let (admitted, held) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let (mut admitted, mut held) = (Vec::new(), 0u64);
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "ADMIT" => admitted.push((f[1].parse().unwrap(), f[2].parse().unwrap())),
                "HELD" => held = f[1].parse().unwrap(),
                "READY" => break,
                _ => {}
            }
        }
        (admitted, held)
    })
    .await
    .unwrap();
    // Killed holding its lease: nothing is given back.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(held > 0, "the child held no slot when it died");
    assert!(!admitted.is_empty());

    // Two processes go on from there.
    let mut backends = Vec::new();
    for _ in 0..2 {
        backends.push(fleet_backend(&server.url(), &prefix, Mode::Leases).await);
    }
    let run = 1_500_000_000;
    let rest = simulate(
        &backends,
        &params,
        START + CHILD_RUN,
        run,
        10.0,
        Some(Duration::ZERO),
    )
    .await;
    let slots = run / params.interval_nanos();
    println!(
        "the child admitted {} and died holding {held}; the others admitted {} of {slots}",
        admitted.len(),
        rest.len()
    );
    // The others lose at most what the dead process held (and the calls
    // that measure their demand at first).
    assert!(
        rest.len() as u64 + held + 3 >= slots,
        "{} + {held} of {slots}",
        rest.len()
    );
    let mut all = admitted;
    all.extend(rest);
    assert_distinct_spans(&all);
    let times: Vec<u64> = all.iter().map(|a| a.0).collect();
    let excess = window_excess(&times, &params);
    assert!(excess <= 1.0, "excess {excess}");
}

const FLEET_ENV: &str = "FREQLIMIT_LEASE_FLEET";
/// 50 per second (T = 20 ms), 5 at once: what the OS processes share. A
/// long interval, so that a loaded machine's round trips (leases wait for
/// them to be under T / 4) and scheduling delays leave the leases usable.
const FLEET: FreqLimitParams = FreqLimitParams::per_second(50).with_burst(5);

fn fleet_test() -> String {
    let (_crate, module) = module_path!().split_once("::").expect("a module");
    format!("{module}::processes_leasing_on_the_servers_clock_keep_the_bound")
}

/// One process of the fleet: a leasing backend on the server's clock, two
/// tasks asking every millisecond (forty per interval) for `run`. Returns
/// `(asked, answered, admitted)` per request in wall-clock µs (the server's
/// `TIME` on loopback) and the backend's stats.
async fn lease_hammer(
    url: &str,
    prefix: &str,
    run: Duration,
) -> (Vec<(u64, u64, bool)>, RedisStats) {
    let b = RedisBackend::<String>::builder()
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
        .leases(Leases::new().length(Duration::from_millis(200)))
        .connect(url)
        .await
        .unwrap();
    let until = Instant::now() + run;
    let tick = Some(Duration::from_millis(1));
    let tasks: Vec<_> = (0..2)
        .map(|_| tokio::spawn(calls(b.clone(), "fleet", FLEET, until, tick)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let stats = b.stats();
    b.release_leases().await;
    (all, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_leasing_on_the_servers_clock_keep_the_bound() {
    let run = Duration::from_millis(1200);
    if let Ok(spec) = std::env::var(FLEET_ENV) {
        let (url, prefix) = spec.split_once(' ').unwrap();
        let (events, stats) = lease_hammer(url, prefix, run).await;
        for (asked, answered, admitted) in events {
            println!("EVENT {asked} {answered} {admitted}");
        }
        println!(
            "CALLS {} {}",
            stats.script_calls + stats.refunds_sent,
            stats.leases
        );
        return;
    }
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let children: Vec<_> = (0..2)
        .map(|_| {
            child_test(
                &fleet_test(),
                &[(FLEET_ENV, format!("{} {prefix}", server.url()))],
            )
        })
        .collect();
    let (mut events, stats) = lease_hammer(&server.url(), &prefix, run).await;
    let (mut calls, mut leases) = (stats.script_calls + stats.refunds_sent, vec![stats.leases]);
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "child failed: {}", out.status);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "EVENT" => {
                    events.push((f[1].parse().unwrap(), f[2].parse().unwrap(), f[3] == "true"));
                }
                "CALLS" => {
                    calls += f[1].parse::<u64>().unwrap();
                    leases.push(f[2].parse().unwrap());
                }
                _ => {}
            }
        }
    }
    let admitted: Vec<(u64, u64)> = events.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
    let t = FLEET.interval().as_micros() as f64;
    let burst = f64::from(FLEET.burst());
    // Every admission lies between its request and its answer: count, for
    // each window, those surely inside it.
    let mut excess = f64::NEG_INFINITY;
    for &(a, _) in &admitted {
        let mut ends: Vec<u64> = admitted.iter().filter(|x| x.0 >= a).map(|x| x.1).collect();
        ends.sort_unstable();
        for (n, &e) in ends.iter().enumerate() {
            excess = excess.max((n + 1) as f64 - burst - (e - a) as f64 / t);
        }
    }
    let capacity = burst + run.as_micros() as f64 / t;
    println!(
        "{} requests, {} admitted of {capacity}, {calls} Redis calls, leases per process {leases:?}, window excess {excess:.2}",
        events.len(),
        admitted.len()
    );
    // The bound, always. The rest is loose, for a loaded machine (where
    // round trips above T / 4 stop leasing, by design): how well leases use
    // a key's capacity, and at how few calls, is measured in logical time
    // above and by examples/lease_fleet.rs.
    assert!(excess <= 1.0, "window excess {excess}");
    assert!(leases.iter().all(|&n| n > 0), "{leases:?}");
    assert!(admitted.len() as f64 >= 0.6 * capacity);
}

#[tokio::test]
async fn a_caller_queued_behind_a_slow_call_keeps_its_own_deadline() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let timeout = Duration::from_millis(600);
    let b = builder()
        .batching()
        .timeout(timeout)
        .without_negative_cache()
        .connect(&server.url())
        .await
        .unwrap();
    let p = FreqLimitParams::per_second(10);
    b.reserve(Some("warm"), Timestamp::now(), &p, Reserve::new())
        .await
        .unwrap();
    let sleeper = put_to_sleep(&server, 3).await;
    let started = Instant::now();
    // The first goes; the four others queue behind it.
    let mut calls = vec![tokio::spawn(b.reserve(
        Some("k"),
        Timestamp::now(),
        &p,
        Reserve::new(),
    ))];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.stats().script_calls, 2, "the first call is in flight");
    for _ in 0..4 {
        calls.push(tokio::spawn(b.reserve(
            Some("k"),
            Timestamp::now(),
            &p,
            Reserve::new(),
        )));
    }
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, FreqLimitError::Backend(e) if e.kind() == BackendErrorKind::Timeout),
            "{err:?}"
        );
    }
    // Each within its own timeout from when it asked, not the call ahead's
    // timeout and then its own (1.2 s).
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(&sleeper.join().unwrap(), b"+OK\r\n");
}

/// 100 per second (`T` = 10 ms): what the round-trip tests lease.
const SLOW: FreqLimitParams = FreqLimitParams::per_second(100);

/// A leasing backend on `server`, its connection and scripts warmed up.
async fn warm_leasing(server: &RedisServer) -> RedisBackend<String> {
    let b = builder()
        .timeout(Duration::from_secs(5))
        .leases(Leases::new())
        .connect(&server.url())
        .await
        .unwrap();
    b.reserve(Some("warm"), Timestamp::now(), &SLOW, Reserve::new())
        .await
        .unwrap();
    b
}

/// Fifty calls on `k` that may not wait, all made before the key's driver
/// runs: hot at once (a window's worth), then answered.
async fn hot_burst(b: &RedisBackend<String>) {
    let calls: Vec<_> = (0..50)
        .map(|_| b.reserve(Some("k"), Timestamp::now(), &SLOW, Reserve::new().no_wait()))
        .collect();
    for call in calls {
        let _ = call.await;
    }
}

#[tokio::test]
async fn a_lease_whose_round_trip_leaves_no_sure_interval_is_given_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = warm_leasing(&server).await;
    // Every write waits 100 ms: the lease call's round trip is 20 times
    // T / 2 (5 ms), so no slot surely lies in its interval here.
    server.cmd(&["CLIENT", "PAUSE", "100", "WRITE"]);
    hot_burst(&b).await;
    let s = b.stats();
    assert_eq!(s.leases, 1, "{s:?}");
    assert!(s.leased_slots > 0);
    assert_eq!(s.slots_returned, s.leased_slots, "{s:?}");
    assert_eq!(s.slots_used, 0, "{s:?}");
}

#[tokio::test]
async fn a_key_whose_calls_take_a_quarter_interval_or_more_is_not_leased() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = warm_leasing(&server).await;
    // One call on the key that takes 100 ms (T / 4 is 2.5 ms) ...
    server.cmd(&["CLIENT", "PAUSE", "100", "WRITE"]);
    b.reserve(Some("k"), Timestamp::now(), &SLOW, Reserve::new().no_wait())
        .await
        .unwrap();
    // ... then demand enough to lease: the key is batched instead.
    hot_burst(&b).await;
    let s = b.stats();
    assert_eq!(s.leases, 0, "{s:?}");
    assert!(s.batches >= 1, "{s:?}");
}

/// A leasing backend on the callers' clock, warmed up on `server`.
async fn warm_leasing_on_callers_clock(server: &RedisServer) -> RedisBackend<String> {
    let b = builder()
        .clock(RedisClock::LimiterTimestamp)
        .timeout(Duration::from_secs(5))
        .leases(Leases::new())
        .connect(&server.url())
        .await
        .unwrap();
    b.reserve(
        Some("warm"),
        Timestamp::from_nanos(1),
        &SLOW,
        Reserve::new(),
    )
    .await
    .unwrap();
    b
}

/// Fifty calls on `k` at `at` that may not wait (see [`hot_burst`]).
async fn hot_burst_at(b: &RedisBackend<String>, at: Timestamp) {
    let calls: Vec<_> = (0..50)
        .map(|_| b.reserve(Some("k"), at, &SLOW, Reserve::new().no_wait()))
        .collect();
    for call in calls {
        let _ = call.await;
    }
}

/// On `b` (on the callers' clock): a call on `k` at `at` that takes 100 ms
/// on the host's clock, and while it is in flight fifty more at `burst_at`
/// that may not wait (hot at once). Returns the stats.
async fn burst_behind_a_slow_call(
    server: &RedisServer,
    b: &RedisBackend<String>,
    at: Timestamp,
    burst_at: Timestamp,
) -> RedisStats {
    let calls = b.stats().script_calls;
    server.cmd(&["CLIENT", "PAUSE", "100", "WRITE"]);
    let first = b.reserve(Some("k"), at, &SLOW, Reserve::new().no_wait());
    let burst = async {
        while b.stats().script_calls == calls {
            tokio::task::yield_now().await;
        }
        hot_burst_at(b, burst_at).await;
    };
    let (first, ()) = tokio::join!(first, burst);
    first.unwrap();
    b.stats()
}

#[tokio::test]
async fn on_the_callers_clock_a_round_trip_is_the_time_the_callers_saw_pass() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let at = Timestamp::from_nanos(START);
    // No caller's time passes while the call takes 100 ms (a simulation, a
    // replay, a loaded test machine): slots leased then are as good as if
    // it had been instant, so the key is leased.
    let b = warm_leasing_on_callers_clock(&server).await;
    let s = burst_behind_a_slow_call(&server, &b, at, at).await;
    // (Its slots open from `at + T`: the first call took `at`'s.)
    assert_eq!(s.leases, 1, "{s:?}");
    assert_eq!(s.batches, 0, "{s:?}");
    // The callers' time moves on by 100 ms meanwhile (T / 4 is 2.5 ms): as
    // slow as on the server's clock, so the key is batched instead.
    let b = warm_leasing_on_callers_clock(&server).await;
    let s = burst_behind_a_slow_call(&server, &b, at, at + Duration::from_millis(100)).await;
    assert_eq!(s.leases, 0, "{s:?}");
    assert!(s.batches >= 1, "{s:?}");
}

#[tokio::test]
async fn a_caller_queued_behind_a_lease_call_is_served_at_its_own_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = warm_leasing_on_callers_clock(&server).await;
    let at = Timestamp::from_nanos(START);
    let p = SLOW.with_burst(2);
    let t = p.interval_nanos();
    // Ten callers at `at` make the key hot (nine of cost 2, which leases do
    // not serve; one unit request, which gives the lease its figures): the
    // driver's first call is a lease, asked at `at` and held up 100 ms by
    // the server ...
    server.cmd(&["CLIENT", "PAUSE", "100", "WRITE"]);
    let mut first: Vec<_> = (0..9)
        .map(|_| b.reserve(Some("k"), at, &p, Reserve::new().cost(2).no_wait()))
        .collect();
    first.push(b.reserve(Some("k"), at, &p, Reserve::new().no_wait()));
    let calls = b.stats().script_calls;
    while b.stats().script_calls == calls {
        tokio::task::yield_now().await;
    }
    // ... while a caller that may not wait asks two and a half intervals
    // later (on the callers' clock).
    let asked = at + Duration::from_nanos(2 * t + t / 2);
    let late = b
        .reserve(Some("k"), asked, &p, Reserve::new().no_wait())
        .await;
    for call in first {
        let _ = call.await;
    }
    let s = b.stats();
    assert_eq!(s.leases, 1, "{s:?}");
    // The lease's first two slots open at `at` (burst 2): the unit request
    // took one. The late caller is served at its own time, from the slot
    // whose interval holds it (`[c, c + T)`, `c = max(at, span - tau)`),
    // not from the other one, closed since `at + T`.
    let span = late.expect("a slot open then").refund_token().start * 1_000;
    let c = span.saturating_sub(t).max(at.as_nanos());
    let asked = asked.as_nanos();
    assert!(
        c <= asked && asked < c + t,
        "the slot of span {span} is open from {c} to {}, used at {asked}",
        c + t
    );
}

#[tokio::test]
async fn a_lease_given_back_for_its_round_trip_leaves_the_lease_in_use() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // T = 100 ms: the first lease's round trip stays under T / 4 on a
    // loaded machine; 50 slots a lease, the next taken within the horizon.
    let p = FreqLimitParams::per_second(10);
    let leases = Leases::new()
        .length(Duration::from_secs(5))
        .horizon(Duration::from_secs(10));
    let b = builder()
        .timeout(Duration::from_secs(5))
        .leases(leases)
        .connect(&server.url())
        .await
        .unwrap();
    let call = |request: Reserve| b.reserve(Some("k"), Timestamp::now(), &p, request);
    let burst: Vec<_> = (0..50).map(|_| call(Reserve::new().no_wait())).collect();
    for c in burst {
        let _ = c.await;
    }
    let first = b.stats();
    assert_eq!(first.leases, 1, "{first:?}");
    // Writes wait 200 ms from here: the next lease call's round trip is
    // T / 2 or more, and that lease is given back.
    server.cmd(&["CLIENT", "PAUSE", "200", "WRITE"]);
    // Callers that may wait take the lease's slots (each the next one not
    // yet open) until it is down to a quarter and the next lease is asked.
    let asked = async {
        while b.stats().script_calls == first.script_calls {
            call(Reserve::new()).await.unwrap();
            tokio::task::yield_now().await;
        }
        while b.stats().leases < 2 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .expect("a second lease call, answered");
    let s = b.stats();
    // Only the new lease went back: the one in use was measured on its own
    // call, and what is left of it still serves here (given back too, it
    // would be a hole that passes unused unless some process calls Redis).
    assert_eq!(
        s.slots_returned,
        s.leased_slots - first.leased_slots,
        "{s:?}"
    );
    let next = call(Reserve::new()).await.unwrap();
    let after = b.stats();
    assert_eq!(after.slots_used, s.slots_used + 1, "{after:?}");
    assert_eq!(after.script_calls, s.script_calls, "{after:?}");
    assert!(next.delay() > Duration::ZERO);
}

/// Fifty calls on `k` at `at` that may not wait (see [`hot_burst`]): the
/// spans' starts (µs) of those admitted.
async fn hot_burst_spans(b: &RedisBackend<String>, at: Timestamp) -> Vec<u64> {
    let calls: Vec<_> = (0..50)
        .map(|_| b.reserve(Some("k"), at, &SLOW, Reserve::new().no_wait()))
        .collect();
    let mut admitted = Vec::new();
    for call in calls {
        if let Ok(admission) = call.await {
            admitted.push(admission.refund_token().start);
        }
    }
    admitted
}

/// A backend on the callers' clock with leases, on `prefix` of `server`.
async fn leasing_on(server: &RedisServer, prefix: &str) -> RedisBackend<String> {
    RedisBackend::<String>::builder()
        .prefix(prefix)
        .clock(RedisClock::LimiterTimestamp)
        .timeout(Duration::from_secs(5))
        .leases(Leases::new())
        .connect(&server.url())
        .await
        .unwrap()
}

#[tokio::test]
async fn slots_given_back_between_leases_are_leased_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let (a, b, c) = (
        leasing_on(&server, &prefix).await,
        leasing_on(&server, &prefix).await,
        leasing_on(&server, &prefix).await,
    );
    let at = Timestamp::from_nanos(START);
    let t = SLOW.interval_nanos();
    let micros = |ns: u64| ns / 1_000;
    // A leases the key's first 50 slots (`[at, at + 50 T)`) and uses the
    // first, B leases the 50 after them; then A stops needing its lease and
    // gives the rest back (judged on the callers' clock: at `at`, none has
    // passed): a hole before B's lease.
    hot_burst_at(&a, at).await;
    hot_burst_at(&b, at).await;
    assert_eq!((a.stats().leases, b.stats().leases), (1, 1));
    a.release_leases().await;
    let s = a.stats();
    assert_eq!(
        (s.slots_used, s.slots_returned, s.slots_lost),
        (1, 49, 0),
        "{s:?}"
    );
    // C's demand turns hot five intervals later: its lease takes the hole
    // from there, and the slot open then is used at once. Appended after
    // B's lease instead, C would refuse every call until `at + 100 T`, and
    // the hole would pass unused (single calls take holes; leasing
    // processes make none).
    let later = at + Duration::from_nanos(5 * t);
    let admitted = hot_burst_spans(&c, later).await;
    let s = c.stats();
    assert_eq!((s.leases, s.script_calls), (1, 1), "{s:?}");
    assert_eq!(s.leased_slots, 45, "{s:?}");
    assert_eq!(admitted, [micros(later.as_nanos())], "{s:?}");
    // C gives back all but the slot it used: a hole again, before B's
    // lease. B's callers that may wait (at B's own time, still hot) take
    // B's slots until a quarter is left, and B asks for its next lease:
    // appended after its own (a hole before it would go to waste while B
    // uses its first), the hole left for A, whose demand turns hot an
    // interval later.
    c.release_leases().await;
    assert_eq!(c.stats().slots_returned, 44, "{:?}", c.stats());
    for _ in 0..38 {
        b.reserve(Some("k"), at, &SLOW, Reserve::new())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while b.stats().leases < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("B's second lease");
    assert_eq!(b.stats().leased_slots, 100, "{:?}", b.stats());
    let then = later + Duration::from_nanos(t);
    let admitted = hot_burst_spans(&a, then).await;
    assert_eq!(admitted, [micros(then.as_nanos())], "{:?}", a.stats());
    assert_eq!(a.stats().leased_slots, 50 + 44, "{:?}", a.stats());
}

#[tokio::test]
async fn released_leases_count_the_slots_passed_since_the_last_request_as_lost() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let b = warm_leasing(&server).await;
    hot_burst(&b).await;
    assert_eq!(b.stats().leases, 1, "{:?}", b.stats());
    // Ten intervals pass with no request here (on the server's clock, the
    // host's real time: what a paused Tokio clock cannot move) ...
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.release_leases().await;
    // ... and the release judges the slots at now (the last request's time
    // and the time since): those whose intervals closed meanwhile are lost,
    // the rest go back.
    let s = b.stats();
    assert!(s.slots_lost >= 5, "{s:?}");
    assert!(s.slots_returned > 0, "{s:?}");
    assert_eq!(
        s.slots_used + s.slots_lost + s.slots_returned,
        s.leased_slots,
        "{s:?}"
    );
}

#[tokio::test]
async fn no_lease_is_taken_past_the_horizon() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = fresh_prefix();
    let a = leasing_on(&server, &prefix).await;
    let b = leasing_on(&server, &prefix).await;
    let at = Timestamp::from_nanos(START);
    let t = SLOW.interval_nanos();
    // A leases the key's next 50 slots, to `at + 50 T` (500 ms).
    hot_burst_at(&a, at).await;
    assert_eq!(a.stats().leased_slots, 50, "{:?}", a.stats());
    // B's demand turns hot 2 s before A's lease runs out, minus an
    // interval: B's first slot would be further away than the horizon
    // (2 s), and B takes no lease ...
    let early =
        at + Duration::from_nanos(50 * t) - Duration::from_secs(2) - Duration::from_nanos(t);
    hot_burst_at(&b, early).await;
    assert_eq!(b.stats().leases, 0, "{:?}", b.stats());
    // ... while an interval later it does.
    let b = leasing_on(&server, &prefix).await;
    hot_burst_at(&b, early + Duration::from_nanos(t)).await;
    assert_eq!(b.stats().leases, 1, "{:?}", b.stats());
}
