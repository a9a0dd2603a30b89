//! One hot key shared by a fleet: three OS processes call one key at ten
//! times its limit, then at half of it, through Redis; once with one script
//! call per request (`plain`), once with [`batching`], once with
//! [`leases`]. Each process records when it admitted each request, on its
//! own monotonic clock mapped to the server's `TIME` by an offset it
//! measures at start.
//!
//! ```sh
//! redis-server --port 6379 --save "" &        # or any Redis / Valkey
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example lease_fleet
//! ```
//!
//! For each mode it prints, for the high-demand phase: Redis calls per
//! admitted request (script calls and refunds, all processes), admitted over
//! the limit's capacity (`burst + phase / T`), and the window excess: the
//! largest `admitted - (burst + w/T)` over every window `w` of the merged
//! admission times (the leases' stated bound is 1; exact GCRA's is 0); then
//! the latency of a request at low demand. The last line is the leases'.
//!
//! An admission lies between when its request asked and when it was let
//! through (a round trip apart when Redis decided; the same instant for a
//! leased slot): a window counts the admissions that surely lie in it, so
//! that the round trip's jitter is not read as excess. The offsets'
//! uncertainty is printed too.
//!
//! [`batching`]: tower_freqlimit::backends::redis::RedisBackendBuilder::batching
//! [`leases`]: tower_freqlimit::backends::redis::RedisBackendBuilder::leases

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower_freqlimit::backends::redis::{Leases, RedisBackend, RedisStats};
use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams};

/// The shared limit: 200 per second (T = 5 ms), 10 at once.
const PARAMS: FreqLimitParams = FreqLimitParams::per_second(200).with_burst(10);
const PROCESSES: usize = 3;
const HIGH: Duration = Duration::from_secs(4);
const LOW: Duration = Duration::from_millis(1500);
const MODES: [&str; 3] = ["plain", "batching", "lease"];

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&url, &args[2], &args[3], args[4].parse()?).await;
    }
    let mut redis = connect(&url).await?;
    println!(
        "{PROCESSES} processes on one key limited to 200/s (burst 10), {} s at 10x, {} s at 0.5x, through {url}",
        HIGH.as_secs_f64(),
        LOW.as_secs_f64()
    );
    for mode in MODES {
        run(&url, &mut redis, mode).await?;
    }
    Ok(())
}

async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection, Error> {
    let client = redis::Client::open(url)?;
    Ok(client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot reach Redis at {url} (set REDIS_URL): {e}"))?)
}

/// The server's clock against this process's: `server µs = offset + local µs
/// since origin`, within `± uncertainty` µs (half the best of 20 `TIME` round
/// trips).
#[derive(Clone, Copy)]
struct Offset {
    origin: Instant,
    offset: i64,
    uncertainty: u64,
}

impl Offset {
    async fn measure(redis: &mut redis::aio::MultiplexedConnection) -> Result<Self, Error> {
        let origin = Instant::now();
        let mut best = (u64::MAX, 0i64);
        for _ in 0..20 {
            let sent = origin.elapsed().as_micros() as i64;
            let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(redis).await?;
            let back = origin.elapsed().as_micros() as i64;
            let rtt = (back - sent) as u64;
            if rtt < best.0 {
                best = (rtt, secs * 1_000_000 + micros - (sent + back) / 2);
            }
        }
        Ok(Self {
            origin,
            offset: best.1,
            uncertainty: best.0.div_ceil(2),
        })
    }

    /// Now on the server's clock, in µs.
    fn server_now(&self) -> i64 {
        self.offset + self.origin.elapsed().as_micros() as i64
    }

    /// When the server's clock reads `at` µs, on this process's clock.
    fn local(&self, at: i64) -> Instant {
        self.origin + Duration::from_micros((at - self.offset).max(0) as u64)
    }
}

/// What one child reported.
#[derive(Default)]
struct Report {
    high: Vec<(i64, i64)>,
    calls_high: u64,
    stats: String,
    low_latency: Vec<u64>,
    uncertainty: u64,
    errors: u64,
}

async fn run(
    url: &str,
    redis: &mut redis::aio::MultiplexedConnection,
    mode: &str,
) -> Result<(), Error> {
    let prefix = format!("lease-fleet:{}:{mode}", std::process::id());
    // Start together, half a second from now on the server's clock.
    let start = Offset::measure(redis).await?.server_now() + 500_000;
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--child", mode, &prefix, &start.to_string()])
                .env("REDIS_URL", url)
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut reports = Vec::new();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        if !out.status.success() {
            return Err(format!("a {mode} process failed: {}", out.status).into());
        }
        let mut report = Report::default();
        for line in String::from_utf8(out.stdout)?.lines() {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            match tag {
                "A" => {
                    let (asked, at) = rest.split_once(' ').ok_or("a bad A line")?;
                    report.high.push((asked.parse()?, at.parse()?));
                }
                "C" => report.calls_high = rest.parse()?,
                "S" => report.stats = rest.to_owned(),
                "L" => report.low_latency.push(rest.parse()?),
                "U" => report.uncertainty = rest.parse()?,
                "E" => report.errors = rest.parse()?,
                _ => {}
            }
        }
        reports.push(report);
    }
    let times: Vec<(i64, i64)> = reports
        .iter()
        .flat_map(|r| r.high.iter().copied())
        .collect();
    let t = PARAMS.interval().as_micros() as f64;
    let burst = f64::from(PARAMS.burst());
    let capacity = burst + HIGH.as_micros() as f64 / t;
    let calls: u64 = reports.iter().map(|r| r.calls_high).sum();
    let mut latency: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.low_latency.iter().copied())
        .collect();
    latency.sort_unstable();
    let pick = |q: f64| {
        latency
            .get(((latency.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let shares: Vec<usize> = reports.iter().map(|r| r.high.len()).collect();
    let uncertainty = reports.iter().map(|r| r.uncertainty).max().unwrap_or(0);
    println!(
        "  {mode}: admitted per process {shares:?}; clock offsets known within ±{uncertainty} µs \
         (window excess ±{:.2}); at 0.5x a request took {} µs (median), {} µs (p99)",
        2.0 * uncertainty as f64 / t,
        pick(0.5),
        pick(0.99)
    );
    for (i, r) in reports.iter().enumerate() {
        println!("    process {i}: {}", r.stats);
    }
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        println!("  {mode}: {errors} calls failed (timeouts: is the machine loaded?)");
    }
    println!(
        "{mode}: redis calls per admitted {:.3}, admitted/capacity {:.3}, window excess {:.2}",
        calls as f64 / times.len().max(1) as f64,
        times.len() as f64 / capacity,
        window_excess(&times, t, burst)
    );
    Ok(())
}

/// The largest `admitted - (burst + w/T)` over every window `[a, e]` of the
/// admissions `(asked, admitted)` (µs) surely inside it.
fn window_excess(times: &[(i64, i64)], t: f64, burst: f64) -> f64 {
    let mut worst = f64::NEG_INFINITY;
    for &(a, _) in times {
        let mut ends: Vec<i64> = times.iter().filter(|x| x.0 >= a).map(|x| x.1).collect();
        ends.sort_unstable();
        for (n, &e) in ends.iter().enumerate() {
            worst = worst.max((n + 1) as f64 - burst - (e - a) as f64 / t);
        }
    }
    worst
}

/// One process of the fleet: `mode`'s backend, 10x then 0.5x the limit
/// (a third of it each), from the server's time `start` (µs).
async fn child(url: &str, mode: &str, prefix: &str, start: i64) -> Result<(), Error> {
    let mut redis = connect(url).await?;
    let clock = Offset::measure(&mut redis).await?;
    let builder = RedisBackend::<String>::builder()
        .prefix(prefix)
        .timeout(Duration::from_millis(500));
    let builder = match mode {
        "batching" => builder.batching(),
        "lease" => builder.leases(Leases::new()),
        _ => builder,
    };
    let backend = builder.connect(url).await?;
    let limiter = FreqLimit::new(PARAMS, backend.clone());
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let begin = clock.local(start);
    tokio::time::sleep_until(begin.into()).await;

    let per_process = |times: f64| PARAMS.interval().mul_f64(PROCESSES as f64 / times);
    let mut before = RedisStats::default();
    for (phase, length, gap) in [(0, HIGH, per_process(10.0)), (1, LOW, per_process(0.5))] {
        let end = Instant::now() + length;
        let mut tick = tokio::time::interval(gap);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        while Instant::now() < end {
            tick.tick().await;
            let (limiter, admitted, latencies, errors) = (
                limiter.clone(),
                Arc::clone(&admitted),
                Arc::clone(&latencies),
                Arc::clone(&errors),
            );
            tasks.push(tokio::spawn(async move {
                let asked = Instant::now();
                match limiter.try_acquire("hot").await {
                    Ok(_) => {
                        let at = Instant::now();
                        if phase == 0 {
                            let server = |i: Instant| {
                                clock.offset + i.duration_since(clock.origin).as_micros() as i64
                            };
                            admitted.lock().unwrap().push((server(asked), server(at)));
                        } else {
                            latencies
                                .lock()
                                .unwrap()
                                .push(at.duration_since(asked).as_micros() as u64);
                        }
                    }
                    Err(FreqLimitError::Rejected(_)) => {
                        if phase == 1 {
                            latencies
                                .lock()
                                .unwrap()
                                .push(asked.elapsed().as_micros() as u64);
                        }
                    }
                    // A failed call (a timeout on a loaded machine): counted.
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        if phase == 0 {
            before = backend.stats();
            println!("C {}", before.script_calls + before.refunds_sent);
        }
    }
    backend.release_leases().await;
    let s = backend.stats();
    println!(
        "S high: {} calls ({} batches of {}, {} leases of {} slots: {} used, {} lost); \
         then {} calls, {} slots returned",
        before.script_calls,
        before.batches,
        before.batched,
        before.leases,
        before.leased_slots,
        before.slots_used,
        before.slots_lost,
        s.script_calls - before.script_calls,
        s.slots_returned
    );
    println!("U {}", clock.uncertainty);
    println!("E {}", errors.load(Ordering::Relaxed));
    for (asked, at) in admitted.lock().unwrap().iter() {
        println!("A {asked} {at}");
    }
    for l in latencies.lock().unwrap().iter() {
        println!("L {l}");
    }
    Ok(())
}
