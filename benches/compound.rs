//! A compound decision (`CompoundLimit`'s backend step) beside one limit and
//! beside the same three limits stacked, on the in-memory backend.
//!
//! The chat bot's three limits: a per-chat part, a per-group part and the
//! global bucket, on a hot key set of 15 chats in 3 groups (chat `i % 15`,
//! its group `chat / 5`; `u64` keys, chats `0..15`, groups `1000..1003`), one
//! backend for all. Params of 10^9 per second with a burst of 10^9 (as in
//! `benches/core.rs`): nothing is ever delayed, which a warm-up asserts, so
//! every line takes the "admitted, store the new TATs" path. Each decision
//! reads the default clock of a normal build (the time-stamp counter) once:
//!
//! * `one_limit`: `InMemoryBackend::reserve_now` on the chat's key;
//! * `compound_3`: `InMemoryBackend::reserve_compound_now` with three parts
//!   (chat, group, global), all or nothing;
//! * `stacked_3`: three `reserve_now` calls on the same three keys (at the
//!   same clock reading), one after the other.
//!
//! The same three limits as Tower layers, each request a `(chat, group)` pair
//! sent with `poll_ready` then `call` to a no-op inner service, its response
//! future polled once (in memory nothing waits, so it is ready at once):
//!
//! * `layer_one`: one `FreqLimitLayer` keyed by the chat;
//! * `layer_compound_3`: one `CompoundLimitLayer` over the three limits;
//! * `layer_stacked_3`: three `FreqLimitLayer`s (chat, group, global), each
//!   wrapping the next, as a user stacks them today.
//!
//! After criterion, `main` prints its own interleaved medians (see
//! `support::medians`) with each line's ratio to `one_limit`. The goal of
//! issue 14: a compound within 2.5 times one limit, and faster than the stack.
//! `COMPOUND_COUNT=line COMPOUND_COUNT_N=n` makes `n` calls of one line in
//! `measured_calls`, for `valgrind --tool=callgrind`
//! (`tools/compound_instructions.sh`).

mod support;

use support::{Line, Mode, medians, mode, run_criterion, sampling};

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower::{Layer, Service};
use tower_freqlimit::Reserve;
use tower_freqlimit::backends::compound::Part;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Clock;
use tower_freqlimit::layer::compound::CompoundLimitLayer;
use tower_freqlimit::{CompoundLimit, FreqLimitLayer, FreqLimitParams};

/// 10^9 per second with a burst of 10^9: never delayed here.
const PARAMS: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);

const CHATS: u64 = 15;
const CHATS_PER_GROUP: u64 = 5;
const GROUP_BASE: u64 = 1_000;

/// The keys of the `i`-th decision: a chat and its group.
#[inline(always)]
fn keys(i: u64) -> (u64, u64) {
    let chat = i % CHATS;
    (chat, GROUP_BASE + chat / CHATS_PER_GROUP)
}

/// A backend on [`clock`] (the layer lines read the backend's clock).
fn backend() -> InMemoryBackend<u64> {
    InMemoryBackend::<u64>::builder()
        .clock(clock().clone())
        .without_sweeper()
        .build()
}

/// The default clock of a normal build (benches build with `test-util`,
/// whose default is Tokio's clock).
fn clock() -> &'static Clock {
    static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(Clock::fast)
}

#[inline(always)]
fn one_limit(backend: &InMemoryBackend<u64>, i: u64) -> bool {
    let (chat, _) = keys(i);
    let admitted = backend.reserve_now(Some(&chat), clock().now(), &PARAMS, Reserve::new());
    black_box(admitted).is_ok_and(|a| a.delay().is_zero())
}

#[inline(always)]
fn compound(backend: &InMemoryBackend<u64>, i: u64) -> bool {
    let (chat, group) = keys(i);
    let parts = [
        Part::new(Some(&chat), &PARAMS),
        Part::new(Some(&group), &PARAMS),
        Part::new(None, &PARAMS),
    ];
    let admitted = backend.reserve_compound_now(&parts, clock().now(), Reserve::new());
    black_box(admitted).is_ok_and(|a| a.delay().is_zero())
}

#[inline(always)]
fn stacked(backend: &InMemoryBackend<u64>, i: u64) -> bool {
    let (chat, group) = keys(i);
    let now = clock().now();
    [Some(&chat), Some(&group), None].into_iter().all(|key| {
        let admitted = backend.reserve_now(key, now, &PARAMS, Reserve::new());
        black_box(admitted).is_ok_and(|a| a.delay().is_zero())
    })
}

/// A line of `decide` on the `i`-th decision (keyed by [`keys`]), after a
/// warm-up that asserts each was admitted at once; it times `iters`
/// decisions, carrying the position in the key set across samples.
fn timed(name: &'static str, mut decide: impl FnMut(u64) -> bool + 'static) -> Line {
    for i in 0..100_000 {
        assert!(
            decide(i),
            "{name}: decision {i} delayed or refused in warm-up"
        );
    }
    let mut position = 0_u64;
    Line {
        name,
        run: Box::new(move |iters| {
            let start = StdInstant::now();
            for _ in 0..iters {
                position += 1;
                black_box(decide(position));
            }
            start.elapsed()
        }),
    }
}

/// A backend line: `decide` on a backend of its own.
fn line(name: &'static str, decide: fn(&InMemoryBackend<u64>, u64) -> bool) -> Line {
    let backend = backend();
    timed(name, move |i| decide(&backend, i))
}

/// The inner service of the layer lines: answers at once.
#[derive(Clone, Copy)]
struct NoOp;

impl Service<(u64, u64)> for NoOp {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: (u64, u64)) -> Self::Future {
        ready(Ok(()))
    }
}

/// Sends one request through `svc` (ready, call, one poll of the response);
/// whether it was answered at once and admitted.
#[inline(always)]
fn send<S>(svc: &mut S, req: (u64, u64)) -> bool
where
    S: Service<(u64, u64), Response = ()>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let response = pin!(svc.call(req));
    matches!(response.poll(&mut cx), Poll::Ready(Ok(())))
}

/// A layer line: `svc` on the `i`-th request.
fn layer_line<S>(name: &'static str, mut svc: S) -> Line
where
    S: Service<(u64, u64), Response = ()> + 'static,
{
    timed(name, move |i| send(&mut svc, keys(i)))
}

fn layer_lines() -> Vec<Line> {
    let chat = |backend: &InMemoryBackend<u64>| {
        FreqLimitLayer::new(PARAMS, backend.clone()).key(|req: &(u64, u64)| Some(req.0))
    };
    let one = chat(&backend()).layer(NoOp);
    let shared = backend();
    let limits = CompoundLimit::new(shared)
        .limit("per-chat", PARAMS)
        .limit("per-group", PARAMS)
        .limit("global", PARAMS);
    let compound = CompoundLimitLayer::new(limits, |req: &(u64, u64)| {
        Ok([Some(req.0), Some(req.1), None])
    })
    .layer(NoOp);
    let stacked_backend = backend();
    let stacked = chat(&stacked_backend).layer(
        FreqLimitLayer::new(PARAMS, stacked_backend.clone())
            .key(|req: &(u64, u64)| Some(req.1))
            .layer(FreqLimitLayer::new(PARAMS, stacked_backend).layer(NoOp)),
    );
    vec![
        layer_line("layer_one", one),
        layer_line("layer_compound_3", compound),
        layer_line("layer_stacked_3", stacked),
    ]
}

fn lines() -> Vec<Line> {
    let mut lines = vec![
        line("one_limit", one_limit),
        line("compound_3", compound),
        line("stacked_3", stacked),
    ];
    lines.extend(layer_lines());
    lines
}

fn summary(lines: &mut [Line], mode: Mode) {
    let (samples, target) = sampling(mode);
    println!();
    println!(
        "Summary: median of {samples} samples of ~{target:?} per line, lines taking turns, \
         each turn after one untimed sample (ns per decision, one clock read included)"
    );
    if mode != Mode::Bench {
        println!("(--test mode: tiny samples, figures are not meaningful)");
    }
    let m = medians(lines, samples, target, 10_000, 50_000_000);
    println!(
        "{:<58} | {:>8} | {:>12}",
        "decision (15 chats, 3 groups, hot)", "ns/op", "x one limit"
    );
    println!("{:-<58}-|-{:->8}-|-{:->12}", "", "", "");
    let labels = [
        "one limit: reserve_now(chat)",
        "compound of 3: reserve_compound_now(chat, group, global)",
        "3 stacked: reserve_now(chat), (group), (None)",
        "layer, one limit: FreqLimitLayer (chat)",
        "layer, compound of 3: CompoundLimitLayer",
        "layer, 3 stacked: FreqLimitLayer x 3",
    ];
    for (i, (label, ns)) in labels.iter().zip(&m).enumerate() {
        let one = if i < 3 { m[0] } else { m[3] };
        println!("{label:<58} | {ns:>8.2} | {:>12.2}", ns / one);
    }
    println!("compound / stacked: {:.2}", m[1] / m[2]);
    println!("layers, compound / stacked: {:.2}", m[4] / m[5]);
}

/// The part of a `COMPOUND_COUNT` run that callgrind counts.
#[inline(never)]
fn measured_calls(line: &mut Line, n: u64) {
    (line.run)(n);
}

fn main() {
    if let Ok(wanted) = std::env::var("COMPOUND_COUNT") {
        let n = std::env::var("COMPOUND_COUNT_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut lines = lines();
        let found = lines.iter_mut().find(|l| l.name == wanted);
        measured_calls(
            found.unwrap_or_else(|| panic!("COMPOUND_COUNT: no line {wanted}")),
            n,
        );
        return;
    }
    let mode = mode();
    let mut lines = lines();
    run_criterion([("compound", &mut lines)]);
    if mode != Mode::List {
        summary(&mut lines, mode);
    }
}
