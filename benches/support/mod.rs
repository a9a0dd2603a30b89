//! What the bench binaries share: timed lines, criterion's run, and the
//! interleaved medians behind each binary's ratio table.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;

/// `run(iters)` makes `iters` calls (or requests) and returns the time taken.
pub type Run = Box<dyn FnMut(u64) -> Duration>;

/// One timed line of a group.
pub struct Line {
    pub name: &'static str,
    pub run: Run,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bench,
    Test,
    List,
}

/// The mode criterion will pick from the same arguments: benchmarks only with
/// `--bench` (which `cargo bench` passes) and without `--test`/`--list`.
/// `--profile-time` (profiling one line) skips the summary, like `--list`.
pub fn mode() -> Mode {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") || args.iter().any(|a| a.starts_with("--profile-time")) {
        Mode::List
    } else if has("--test") || !has("--bench") {
        Mode::Test
    } else {
        Mode::Bench
    }
}

/// Samples and time per sample of the summary tables: 21 x 20 ms in a real run,
/// a token 3 x 200 µs in criterion's `--test` smoke mode.
pub fn sampling(mode: Mode) -> (usize, Duration) {
    match mode {
        Mode::Bench => (21, Duration::from_millis(20)),
        _ => (3, Duration::from_micros(200)),
    }
}

/// Runs every group's lines under criterion: about 4.2 s per line (1 s warm-up,
/// 3 s measurement, analysis). Command-line flags still override.
pub fn run_criterion<'a>(groups: impl IntoIterator<Item = (&'static str, &'a mut Vec<Line>)>) {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    for (name, lines) in groups {
        let mut group = c.benchmark_group(name);
        for line in lines.iter_mut() {
            let run = &mut line.run;
            group.bench_function(line.name, |b| b.iter_custom(&mut *run));
        }
        group.finish();
    }
    c.final_summary();
}

/// Median nanoseconds per call of each line, from `samples` samples of about
/// `target` each, calibrated with `probe` calls. The lines take turns (so
/// background load hits them alike), and each turn first runs one untimed sample
/// of the same size, so that a line's state is back in cache after the other
/// lines' turns, as it is in criterion, which runs one line at a time.
pub fn medians(
    lines: &mut [Line],
    samples: usize,
    target: Duration,
    probe: u64,
    max_iters: u64,
) -> Vec<f64> {
    let iters: Vec<u64> = lines
        .iter_mut()
        .map(|line| {
            let t = (line.run)(probe).max(Duration::from_nanos(1));
            let per_call = t.as_secs_f64() / probe as f64;
            ((target.as_secs_f64() / per_call) as u64).clamp(100, max_iters)
        })
        .collect();
    let mut per_call: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); lines.len()];
    for _ in 0..samples {
        for (i, line) in lines.iter_mut().enumerate() {
            black_box((line.run)(iters[i]));
            let t = (line.run)(iters[i]);
            per_call[i].push(t.as_nanos() as f64 / iters[i] as f64);
        }
    }
    per_call
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}
