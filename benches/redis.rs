//! Reservations per second through `RedisBackend` at concurrency 1, 16 and 64,
//! against the raw throughput of the same Lua script from `redis-benchmark` at
//! the same concurrency, interleaved in one run; then the flood case (Redis calls
//! and time per 1 000 rejected requests, with and without the negative cache);
//! then compound decisions (a chat, its group and the global bucket, one
//! `compound.lua` call each) beside the same three limits as three single
//! reservations in a row; then one hot key (below).
//!
//! ```sh
//! bash bench/redis_load.sh                       # the full run, release build
//! cargo bench --features redis --bench redis     # the same
//! cargo bench --features redis --bench redis -- --test   # a quick smoke run
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (no persistence),
//! unless `REDIS_BENCH_URL` names one (then `redis-benchmark` needs
//! `REDIS_BENCH_PORT` too). Settings: `ROUNDS` (default 3), `DURATION` (seconds) per
//! measurement (default 3).
//!
//! Both sides run the same script with the same arguments: a limit nothing
//! exceeds (`T` = 1 µs, burst 10⁹), on 10 000 keys picked at random, the server's
//! clock. Ours: `c` tasks on one current-thread Tokio runtime sharing one
//! backend (one multiplexed connection, concurrent calls pipelined).
//! `redis-benchmark`: `c` connections, one call in flight on each, one thread.
//! The server and the client share the machine's cores.
//!
//! One hot key: every call on one key that never refuses, from `c` tasks
//! (1 s per point), plain and with `batching()` (decisions per second, script
//! calls per decision); then a key limited to 2 000/s (burst 20), then to
//! 200/s (burst 10), in reject mode, called as fast as they can by 64 tasks
//! on each of 3 backends (one connection each, one runtime) for 2 s, plain,
//! with batching and with leases (which need `T` well above a round trip).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundBackend, Part};
use tower_freqlimit::backends::redis::{Leases, RedisBackend};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{FreqLimit, FreqLimitError, FreqLimitParams, Reserve};

const KEYS: u64 = 10_000;
/// T = 1 µs, burst 10⁹: nothing is ever rejected or delayed.
const OPEN: FreqLimitParams =
    FreqLimitParams::new(1_000_000, Duration::from_secs(1), 1_000_000_000);
/// The hot key of the fleet runs: T = 500 µs, 20 at once; and T = 5 ms, 10
/// at once (that of `examples/lease_fleet.rs`).
const HOT: [(&str, FreqLimitParams); 2] = [
    ("2000/s", FreqLimitParams::per_second(2_000).with_burst(20)),
    ("200/s", FreqLimitParams::per_second(200).with_burst(10)),
];

struct Server {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Self {
        let port = loop {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            if port != 6379 {
                break port;
            }
        };
        let dir =
            std::env::temp_dir().join(format!("tower-freqlimit-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let server = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while command(port, &["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command over a fresh connection; the first line (or bulk content).
fn command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end().to_owned();
    if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(&mut r, &mut body).ok()?;
        body.truncate(len);
        return Some(String::from_utf8_lossy(&body).into_owned());
    }
    Some(line)
}

fn script_calls(port: u16) -> u64 {
    let info = command(port, &["INFO", "commandstats"]).unwrap_or_default();
    ["cmdstat_evalsha:calls=", "cmdstat_eval:calls="]
        .iter()
        .filter_map(|tag| {
            let rest = &info[info.find(tag)? + tag.len()..];
            rest.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// What each call of [`ours`] decides.
#[derive(Clone, Copy, PartialEq)]
enum Decision {
    /// One reservation on a random key.
    Single,
    /// One compound: a random chat, its group (chat / 5), the global bucket.
    Compound,
    /// The same three limits as three reservations, one after the other.
    ThreeSingles,
    /// One reservation, always on the same key.
    HotKey,
}

/// Our decisions per second at `concurrency` for `run`, and script calls per
/// decision.
fn ours(
    url: &str,
    concurrency: usize,
    run: Duration,
    decision: Decision,
    batching: bool,
) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut builder = RedisBackend::<String>::builder()
            .prefix("bench")
            .timeout(Duration::from_secs(5));
        if batching {
            builder = builder.batching();
        }
        let backend = builder.connect(url).await.expect("connect");
        // Warm up: load the script, open the connection.
        backend
            .reserve(Some("warm"), Timestamp::now(), &OPEN, Reserve::new())
            .await
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for task in 0..concurrency as u64 {
            let (backend, done, stop) = (backend.clone(), done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = task.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut key = String::with_capacity(16);
                let mut group = String::with_capacity(16);
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    key.clear();
                    group.clear();
                    use std::fmt::Write as _;
                    let _ = write!(key, "k{:012}", rng % KEYS);
                    let _ = write!(group, "g{:012}", rng % KEYS / 5);
                    let now = Timestamp::now();
                    match decision {
                        Decision::Single => {
                            backend
                                .reserve(Some(&key), now, &OPEN, Reserve::new())
                                .await
                                .expect("reservation");
                        }
                        Decision::Compound => {
                            let parts = [
                                Part::new(Some(&key), &OPEN),
                                Part::new(Some(&group), &OPEN),
                                Part::new(None, &OPEN),
                            ];
                            backend
                                .reserve_compound(&parts, now, Reserve::new())
                                .await
                                .expect("compound");
                        }
                        Decision::HotKey => {
                            backend
                                .reserve(Some("hot"), now, &OPEN, Reserve::new())
                                .await
                                .expect("reservation");
                        }
                        Decision::ThreeSingles => {
                            for key in [Some(&key), Some(&group), None] {
                                backend
                                    .reserve(key, now, &OPEN, Reserve::new())
                                    .await
                                    .expect("reservation");
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let start = Instant::now();
        let (before, calls) = (done.load(Ordering::Relaxed), backend.stats().script_calls);
        tokio::time::sleep(run).await;
        let count = done.load(Ordering::Relaxed) - before;
        let calls = backend.stats().script_calls - calls;
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        (
            count as f64 / elapsed.as_secs_f64(),
            calls as f64 / count.max(1) as f64,
        )
    })
}

/// Three backends (one connection each, one prefix), 64 tasks each, calling
/// one key limited by `params` in reject mode as fast as they can for `run`:
/// admitted per second, Redis calls (script calls and refunds) per admitted,
/// decisions (admitted and rejected) per second, Redis calls per second, and
/// the share of leased slots lost.
fn fleet(url: &str, params: FreqLimitParams, mode: &str, round: usize, run: Duration) -> [f64; 5] {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut backends = Vec::new();
        for _ in 0..3 {
            let builder = RedisBackend::<String>::builder()
                .prefix(format!("fleet-{:?}-{mode}-{round}", params.interval()))
                .timeout(Duration::from_secs(5));
            let builder = match mode {
                "batching" => builder.batching(),
                "leases" => builder.leases(Leases::new()),
                _ => builder,
            };
            backends.push(builder.connect(url).await.expect("connect"));
        }
        let (admitted, rejected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let start = Instant::now();
        let end = start + run;
        let mut tasks = Vec::new();
        for backend in &backends {
            for _ in 0..64 {
                let (backend, admitted, rejected) =
                    (backend.clone(), admitted.clone(), rejected.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let request = Reserve::new().no_wait();
                        match backend
                            .reserve(Some("hot"), Timestamp::now(), &params, request)
                            .await
                        {
                            Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                            Err(FreqLimitError::Rejected(_)) => {
                                rejected.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => panic!("{e}"),
                        };
                        // A leased slot or a cached rejection is answered
                        // at once: let the other tasks run.
                        tokio::task::yield_now().await;
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (mut calls, mut leased, mut lost) = (0, 0, 0);
        for backend in &backends {
            backend.release_leases().await;
            let s = backend.stats();
            calls += s.script_calls + s.refunds_sent;
            (leased, lost) = (leased + s.leased_slots, lost + s.slots_lost);
        }
        let admitted = admitted.load(Ordering::Relaxed) as f64;
        let decisions = admitted + rejected.load(Ordering::Relaxed) as f64;
        [
            admitted / elapsed,
            calls as f64 / admitted.max(1.0),
            decisions / elapsed,
            calls as f64 / elapsed,
            lost as f64 / leased.max(1) as f64,
        ]
    })
}

/// `redis-benchmark`'s requests per second for the same script and arguments.
fn raw(port: u16, sha: &str, concurrency: usize, requests: u64) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &concurrency.to_string()])
        .args(["-n", &requests.to_string(), "-r", &KEYS.to_string(), "-q"])
        .args(["EVALSHA", sha, "1", "bench:k:k__rand_int__"])
        // T, tau, cost*T, (cost-1)*T, max_wait (none), now (server), slack
        .args(["1", "999999999", "1", "0", "", "", "0"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("requests per second"))?;
    let before = line.split(" requests per second").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Redis calls and microseconds per rejected request in a flood of 1 000 from
/// one over-limit key.
fn flood(url: &str, port: u16, cache: usize) -> (u64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = RedisBackend::<String>::builder()
            .prefix(format!("flood{cache}"))
            .negative_cache(cache)
            .connect(url)
            .await
            .unwrap();
        let limiter = FreqLimit::new(FreqLimitParams::per_minute(1), backend);
        limiter.try_acquire("flooder").await.unwrap();
        let before = script_calls(port);
        let start = Instant::now();
        for _ in 0..1_000 {
            assert!(limiter.try_acquire("flooder").await.is_err());
        }
        let per_call = start.elapsed().as_secs_f64() * 1e6 / 1_000.0;
        (script_calls(port) - before, per_call)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `-- --test` (or `cargo test --benches`)
    // asks for a quick smoke run.
    let smoke = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, seconds) = if smoke {
        (1, 0.2)
    } else {
        (env("ROUNDS", 3), env("DURATION", 3) as f64)
    };
    let run = Duration::from_secs_f64(seconds);

    let own;
    let (url, port) = match std::env::var("REDIS_BENCH_URL") {
        Ok(url) => (url, env("REDIS_BENCH_PORT", 6379) as u16),
        Err(_) => {
            own = Server::start();
            (format!("redis://127.0.0.1:{}", own.port), own.port)
        }
    };
    // The backend sends the prelude and the script as one.
    let script = concat!(
        include_str!("../src/backends/redis/prelude.lua"),
        include_str!("../src/backends/redis/reserve.lua")
    );
    let sha = command(port, &["SCRIPT", "LOAD", script]).expect("SCRIPT LOAD");
    let have_raw = Command::new("redis-benchmark")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();

    println!("# RedisBackend vs redis-benchmark, same Lua script (EVALSHA), server {url}");
    println!(
        "# {} rounds x {seconds} s per measurement, interleaved; medians; {} CPUs; {}",
        rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(
            &Command::new("redis-server")
                .arg("--version")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        )
        .trim()
    );
    println!(
        "concurrency | ours (reservations/s) | redis-benchmark raw script (req/s) | ours / raw"
    );
    for concurrency in [1usize, 16, 64] {
        let (mut us, mut them) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mine = ours(&url, concurrency, run, Decision::Single, false).0;
            us.push(mine);
            if have_raw {
                let requests = ((mine * seconds) as u64).max(2_000);
                if let Some(r) = raw(port, &sha, concurrency, requests) {
                    them.push(r);
                }
            }
        }
        let mine = median(us);
        if them.is_empty() {
            println!(
                "{concurrency:>11} | {mine:>21.0} | {:>34} | -",
                "(redis-benchmark missing)"
            );
        } else {
            let raw = median(them);
            println!(
                "{concurrency:>11} | {mine:>21.0} | {raw:>34.0} | {:>10.2}",
                mine / raw
            );
        }
    }

    println!();
    println!(
        "flood: 1 000 rejected requests from one key over its limit (per_minute(1), try_acquire)"
    );
    for (label, cache) in [("with the negative cache", 4096), ("without", 0)] {
        let (calls, micros) = flood(&url, port, cache);
        println!(
            "  {label:<24} {calls:>5} Redis calls per 1 000 rejected, {micros:>7.2} µs per rejected request"
        );
    }

    println!();
    println!(
        "compound of 3 (chat, group, global; one compound.lua call) vs the same limits as 3 reservations in a row, decisions/s"
    );
    println!("concurrency | compound of 3 | 3 single reservations | compound / 3 singles");
    for concurrency in [1usize, 16, 64] {
        let (mut compound, mut singles) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            compound.push(ours(&url, concurrency, run, Decision::Compound, false).0);
            singles.push(ours(&url, concurrency, run, Decision::ThreeSingles, false).0);
        }
        let (compound, singles) = (median(compound), median(singles));
        println!(
            "{concurrency:>11} | {compound:>13.0} | {singles:>21.0} | {:>20.2}",
            compound / singles
        );
    }

    println!();
    let hot_run = Duration::from_secs_f64(if smoke { 0.2 } else { 1.0 });
    let fleet_run = hot_run * 2;
    println!(
        "one hot key: every call on one key that never refuses, {rounds} x {hot_run:?}, medians"
    );
    println!(
        "concurrency | plain decisions/s | batching decisions/s | batching/plain | calls per decision with batching"
    );
    for concurrency in [1usize, 16, 64, 256] {
        let (mut plain, mut batched, mut calls) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            plain.push(ours(&url, concurrency, hot_run, Decision::HotKey, false).0);
            let (rate, per) = ours(&url, concurrency, hot_run, Decision::HotKey, true);
            batched.push(rate);
            calls.push(per);
        }
        let (plain, batched, calls) = (median(plain), median(batched), median(calls));
        println!(
            "{concurrency:>11} | {plain:>17.0} | {batched:>20.0} | {:>14.2} | {calls:>32.4}",
            batched / plain
        );
    }

    println!();
    println!(
        "one hot key, reject mode: 3 backends (one connection each) x 64 tasks as fast as they can, {rounds} x {fleet_run:?}, medians"
    );
    println!(
        "limit (burst) | mode     | admitted/s | Redis calls per admitted | decisions/s | Redis calls/s | leased slots lost"
    );
    for (limit, params) in HOT {
        let limit = format!("{limit} ({})", params.burst());
        for mode in ["plain", "batching", "leases"] {
            let mut columns: [Vec<f64>; 5] = Default::default();
            for round in 0..rounds as usize {
                let figures = fleet(&url, params, mode, round, fleet_run);
                for (column, figure) in columns.iter_mut().zip(figures) {
                    column.push(figure);
                }
            }
            let [admitted, per, decisions, calls, lost] = columns.map(median);
            let lost = if mode == "leases" {
                format!("{:.0} %", lost * 100.0)
            } else {
                "-".to_owned()
            };
            println!(
                "{limit:<13} | {mode:<8} | {admitted:>10.0} | {per:>24.3} | {decisions:>11.0} | {calls:>13.0} | {lost:>17}"
            );
        }
    }
}
