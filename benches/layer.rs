//! The Tower layer's overhead per HTTP request beside `tower_governor` 0.8, and
//! beside no limiter at all, in one binary.
//!
//! Every line times one request through a service stack, driven to completion
//! on a Tokio current-thread runtime, response dropped:
//!
//! * `ready_call`: `svc.ready().await?.call(req).await` on one service instance;
//! * `oneshot_clone`: `svc.clone().oneshot(req).await`, which is what axum (and
//!   hyper-util's `TowerToHyperService`) does for every request.
//!
//! The stacks, each keyed by the peer IP address taken from the request's
//! `axum::extract::ConnectInfo<SocketAddr>` extension (as a server made with
//! `into_make_service_with_connect_info` sees it):
//!
//! * `none`: the inner service alone, no limiter;
//! * `ours`: `FreqLimitLayer` over `InMemoryBackend::<IpAddr>::new()`,
//!   reject-only (`max_wait(Duration::ZERO)`, as governor is), refusals as
//!   `429` responses (`.http_responses()`, no headers on admitted responses);
//! * `governor`: `tower_governor::GovernorLayer` with its default
//!   `PeerIpKeyExtractor` and `NoOpMiddleware` (no headers on admitted
//!   responses).
//!
//! Allowed path: a quota nothing exceeds (ours 10^9 per second with a burst of
//! 10^9, governor one cell per nanosecond with a burst of 10^9); every timed
//! request must come back `200`. Rejection path (`*_reject`): one request per
//! hour, so every request after the first (made during set-up) comes back `429`.
//! The status of every timed response is checked after timing.
//!
//! Groups:
//!
//! * `a_noop_inner`: the inner service is a no-op (`Clone` is free);
//! * `b_boxed_inner`: the inner service is a `BoxCloneSyncService` around the
//!   no-op, which is what a layer added with `Router::layer` wraps in axum (a
//!   `Route`); cloning it allocates;
//! * `c_axum_router`: a whole axum hello-world `Router` (`GET /` returning a
//!   static string) with the layer added by `Router::layer`, called as axum's
//!   server calls it (`router.clone().oneshot(req)`);
//! * `d_parts`: diagnostics, not a comparison: pieces of the rejection path
//!   (the backend's decision, our `429` response, governor's
//!   `DefaultClock::default()`, which it builds on every rejection) and the
//!   clock reads.
//!
//! `ours` reads the time-stamp counter, the default clock of a normal build
//! (benches build with `test-util`, so it is set explicitly). Extra lines:
//! `ours_tokio_clock` is ours on `Clock::tokio()` (`clock_gettime`, the
//! default with `test-util`); `ours_closure_key` keys by a closure instead of the fn
//! pointer the other lines use to name their type.
//!
//! Requests are built outside the timed region, in chunks of [`CHUNK`]; their
//! drop (inside the service) is timed, as is the response's.
//!
//! After criterion has run, `main` takes its own quick median-of-N measurement
//! of every line (lines taking turns) and prints the ratio table; criterion
//! does not hand its estimates back to the program. Under `--test` (the CI
//! smoke mode) every line runs a handful of iterations and the table is computed
//! from tiny samples, only to prove the code works; under `--list` and
//! `--profile-time` it is skipped.

mod support;

use support::{Line, Mode, medians, mode, run_criterion, sampling};

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use tokio::runtime::Runtime;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::{Clock, Timestamp};
use tower_freqlimit::http::{HttpResponses, policy_header, refusal_response};
use tower_freqlimit::layer::{FreqLimitLayer, LayerParams, Policy, UnitCost};
use tower_freqlimit::{FreqLimitError, FreqLimitParams, Reserve, gcra};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;

/// 10^9 per second with a burst of 10^9: no request here comes close.
const OPEN: FreqLimitParams =
    FreqLimitParams::new(1_000_000_000, Duration::from_secs(1), 1_000_000_000);
/// One request per hour: everything after the first is rejected.
const TIGHT: FreqLimitParams = FreqLimitParams::per_hour(1);

/// Requests sent through each line before it is timed (all checked). Kept
/// small: governor's rejections cost about 15 µs each on the benchmark VM.
const WARM_UP: u64 = 2_000;

/// Requests built ahead of each timed stretch.
const CHUNK: u64 = 256;

/// The client every request comes from.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

fn request() -> Request<Body> {
    let mut req = Request::new(Body::empty());
    req.extensions_mut().insert(ConnectInfo(PEER));
    req
}

/// The rate-limit key, as a user of the layer writes it.
fn peer_ip(req: &Request<Body>) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

type OursLayer = FreqLimitLayer<
    InMemoryBackend<IpAddr>,
    Policy<fn(&Request<Body>) -> Option<IpAddr>, LayerParams, UnitCost>,
    HttpResponses,
>;

/// Ours, configured like governor: per peer IP, reject-only, `429` responses.
///
/// The key function is a fn pointer only to name the type; [`router_ours_closure`]
/// checks that this costs nothing measurable.
fn ours(params: FreqLimitParams) -> OursLayer {
    // Benches build with `test-util` (dev-dependencies), where the default
    // clock is Tokio's; a normal build's default is the time-stamp counter.
    ours_on(params, Clock::fast())
}

/// [`ours`] on the backend's clock `clock`.
fn ours_on(params: FreqLimitParams, clock: Clock) -> OursLayer {
    FreqLimitLayer::new(
        params,
        InMemoryBackend::<IpAddr>::builder().clock(clock).build(),
    )
    .key(peer_ip as fn(&Request<Body>) -> Option<IpAddr>)
    .max_wait(Duration::ZERO)
    .http_responses()
}

/// [`ours`] reading Tokio's clock (`clock_gettime`, [`Clock::tokio`]) instead
/// of the time-stamp counter.
fn ours_tokio(params: FreqLimitParams) -> OursLayer {
    ours_on(params, Clock::tokio())
}

type GovLayer = GovernorLayer<PeerIpKeyExtractor, NoOpMiddleware, Body>;

/// `tower_governor` with a period of `period_ns` and a burst of `burst`.
fn governor(period_ns: u64, burst: u32) -> GovLayer {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(period_ns)
        .burst_size(burst)
        .finish()
        .expect("non-zero period and burst");
    GovernorLayer::new(config)
}

/// Governor's equivalent of [`OPEN`].
fn governor_open() -> GovLayer {
    governor(1, 1_000_000_000)
}

/// Governor's equivalent of [`TIGHT`].
fn governor_tight() -> GovLayer {
    governor(3_600_000_000_000, 1)
}

/// The inner service: answers `200` with an empty body at once.
#[derive(Debug, Clone, Copy)]
struct NoOp;

impl Service<Request<Body>> for NoOp {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        drop(req);
        ready(Ok(Response::new(Body::empty())))
    }
}

type Boxed = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

fn boxed() -> Boxed {
    BoxCloneSyncService::new(NoOp)
}

async fn hello() -> &'static str {
    "Hello, World!"
}

fn router() -> Router {
    Router::new().route("/", get(hello))
}

/// How a line drives its service.
#[derive(Clone, Copy)]
enum Drive {
    ReadyCall,
    OneshotClone,
}

/// Sends `iters` requests through `svc` as `drive` says; returns the time spent
/// in the service (requests are built outside it) and how many responses did
/// not have status `expect`.
async fn requests<S>(svc: &mut S, drive: Drive, iters: u64, expect: StatusCode) -> (Duration, u64)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    let mut batch: Vec<Request<Body>> = Vec::with_capacity(CHUNK as usize);
    let mut spent = Duration::ZERO;
    let mut wrong = 0_u64;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        batch.extend((0..n).map(|_| request()));
        let start = StdInstant::now();
        match drive {
            Drive::ReadyCall => {
                for req in batch.drain(..) {
                    let Ok(ready) = svc.ready().await;
                    let Ok(response) = ready.call(req).await;
                    wrong += u64::from(black_box(response.status()) != expect);
                }
            }
            Drive::OneshotClone => {
                for req in batch.drain(..) {
                    let Ok(response) = svc.clone().oneshot(req).await;
                    wrong += u64::from(black_box(response.status()) != expect);
                }
            }
        }
        spent += start.elapsed();
        left -= n;
    }
    (spent, wrong)
}

/// A line over `svc`: first `first` (the requests that may pass before a tight
/// limit bites, answered `200`), then a warm-up that must all be `expect`, as
/// must every timed response.
fn line<S>(
    rt: &Arc<Runtime>,
    name: &'static str,
    mut svc: S,
    drive: Drive,
    first: u64,
    expect: StatusCode,
) -> Line
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + 'static,
{
    let (_, wrong) = rt.block_on(requests(&mut svc, drive, first, StatusCode::OK));
    assert_eq!(wrong, 0, "{name}: a set-up request was not admitted");
    let (_, wrong) = rt.block_on(requests(&mut svc, drive, WARM_UP, expect));
    assert_eq!(wrong, 0, "{name}: a warm-up response was not {expect}");
    let rt = Arc::clone(rt);
    Line {
        name,
        run: Box::new(move |iters| {
            let (spent, wrong) = rt.block_on(requests(&mut svc, drive, iters, expect));
            assert_eq!(wrong, 0, "{name}: a timed response was not {expect}");
            spent
        }),
    }
}

/// A line timing `iters` calls of a synchronous `f` (diagnostics).
fn plain_line(name: &'static str, mut f: impl FnMut() + 'static) -> Line {
    Line {
        name,
        run: Box::new(move |iters| {
            let start = StdInstant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed()
        }),
    }
}

/// A row of the summary table.
enum Row {
    /// Indices of the `none`, `ours` and `governor` lines of one case.
    Compare {
        label: &'static str,
        none: usize,
        ours: usize,
        governor: usize,
    },
    /// One line on its own (diagnostics).
    Single { label: &'static str, line: usize },
}

struct Case {
    group: &'static str,
    lines: Vec<Line>,
    rows: Vec<Row>,
}

const OK: StatusCode = StatusCode::OK;
const REJECTED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

/// Groups a and b, for an inner service made by `inner`: no limiter, ours,
/// governor, ours rejecting, governor rejecting, and ours on Tokio's clock,
/// each driven both ways.
fn stack_case<S>(rt: &Arc<Runtime>, group: &'static str, inner: impl Fn() -> S) -> Case
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    use Drive::{OneshotClone, ReadyCall};
    let mut lines = Vec::new();
    for (drive, suffix) in [(ReadyCall, "ready_call"), (OneshotClone, "oneshot_clone")] {
        // `Line` names are 'static: leak the handful made here.
        let name = |stack: &str| -> &'static str { format!("{stack}/{suffix}").leak() };
        lines.extend([
            line(rt, name("none"), inner(), drive, 0, OK),
            line(rt, name("ours"), ours(OPEN).layer(inner()), drive, 0, OK),
            line(
                rt,
                name("governor"),
                governor_open().layer(inner()),
                drive,
                0,
                OK,
            ),
            line(
                rt,
                name("ours_reject"),
                ours(TIGHT).layer(inner()),
                drive,
                1,
                REJECTED,
            ),
            line(
                rt,
                name("governor_reject"),
                governor_tight().layer(inner()),
                drive,
                1,
                REJECTED,
            ),
            line(
                rt,
                name("ours_tokio_clock"),
                ours_tokio(OPEN).layer(inner()),
                drive,
                0,
                OK,
            ),
        ]);
    }
    let labels: [&'static str; 6] = match group {
        "a_noop_inner" => [
            "a no-op inner, ready+call: allowed",
            "a no-op inner, ready+call: rejected",
            "a no-op inner, ready+call: allowed, tokio clock",
            "a no-op inner, clone+oneshot: allowed",
            "a no-op inner, clone+oneshot: rejected",
            "a no-op inner, clone+oneshot: allowed, tokio clock",
        ],
        _ => [
            "b boxed inner, ready+call: allowed",
            "b boxed inner, ready+call: rejected",
            "b boxed inner, ready+call: allowed, tokio clock",
            "b boxed inner, clone+oneshot: allowed",
            "b boxed inner, clone+oneshot: rejected",
            "b boxed inner, clone+oneshot: allowed, tokio clock",
        ],
    };
    let mut rows = Vec::new();
    for (base, labels) in [(0, &labels[..3]), (6, &labels[3..])] {
        for (label, (ours, governor)) in labels.iter().zip([(1, 2), (3, 4), (5, 2)]) {
            rows.push(Row::Compare {
                label,
                none: base,
                ours: base + ours,
                governor: base + governor,
            });
        }
    }
    Case { group, lines, rows }
}

/// The whole axum hello-world, called as axum's server calls it.
fn case_router(rt: &Arc<Runtime>) -> Case {
    use Drive::OneshotClone;
    let lines = vec![
        line(rt, "none", router(), OneshotClone, 0, OK),
        line(rt, "ours", router().layer(ours(OPEN)), OneshotClone, 0, OK),
        line(
            rt,
            "governor",
            router().layer(governor_open()),
            OneshotClone,
            0,
            OK,
        ),
        line(
            rt,
            "ours_reject",
            router().layer(ours(TIGHT)),
            OneshotClone,
            1,
            REJECTED,
        ),
        line(
            rt,
            "governor_reject",
            router().layer(governor_tight()),
            OneshotClone,
            1,
            REJECTED,
        ),
        line(
            rt,
            "ours_closure_key",
            router_ours_closure(OPEN),
            OneshotClone,
            0,
            OK,
        ),
        line(
            rt,
            "ours_tokio_clock",
            router().layer(ours_tokio(OPEN)),
            OneshotClone,
            0,
            OK,
        ),
    ];
    let row = |label, ours, governor| Row::Compare {
        label,
        none: 0,
        ours,
        governor,
    };
    Case {
        group: "c_axum_router",
        lines,
        rows: vec![
            row("c axum Router, clone+oneshot: allowed", 1, 2),
            row("c axum Router, clone+oneshot: rejected", 3, 4),
            row("c axum Router: allowed, key by closure", 5, 2),
            row("c axum Router: allowed, tokio clock", 6, 2),
        ],
    }
}

/// The hello-world router under [`ours`] keyed by a closure instead of a fn
/// pointer.
fn router_ours_closure(params: FreqLimitParams) -> Router {
    router().layer(
        FreqLimitLayer::new(params, InMemoryBackend::<IpAddr>::new())
            .key(|req: &Request<Body>| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip())
            })
            .max_wait(Duration::ZERO)
            .http_responses(),
    )
}

/// Pieces of the rejection path, to attribute its cost.
fn case_parts() -> Case {
    let first = gcra::reserve(None, 0, &TIGHT, &Reserve::new()).expect("admitted");
    let refusal = FreqLimitError::from(
        gcra::reserve(first.new_tat, 0, &TIGHT, &Reserve::new().no_wait()).expect_err("rejected"),
    );
    assert!(matches!(refusal, FreqLimitError::Rejected(_)));
    let backend = InMemoryBackend::<IpAddr>::builder()
        .without_sweeper()
        .build();
    let ip = PEER.ip();
    backend
        .reserve_now(Some(&ip), Timestamp::now(), &TIGHT, Reserve::new())
        .expect("first admitted");
    Case {
        group: "d_parts",
        lines: vec![
            plain_line("ours/reserve_now_rejected", move || {
                let result = backend.reserve_now(
                    Some(&ip),
                    Timestamp::now(),
                    &TIGHT,
                    Reserve::new().no_wait(),
                );
                assert!(black_box(result).is_err());
            }),
            plain_line("ours/refusal_response", move || {
                black_box(refusal_response::<Body>(black_box(&refusal), Some(&TIGHT)));
            }),
            plain_line("ours/policy_header", || {
                black_box(policy_header(black_box(&TIGHT)));
            }),
            plain_line("governor/default_clock_now", || {
                black_box(DefaultClock::default().now());
            }),
            plain_line("governor/keyed_check_rejected", {
                let limiter =
                    governor::RateLimiter::keyed(governor::Quota::per_hour(NonZeroU32::MIN));
                assert!(limiter.check_key(&ip).is_ok());
                move || {
                    assert!(black_box(limiter.check_key(&ip)).is_err());
                }
            }),
            plain_line("ours/clock_tokio_now", {
                let clock = Clock::tokio();
                move || {
                    black_box(clock.now());
                }
            }),
            plain_line("ours/clock_fast_now", {
                let clock = Clock::fast();
                move || {
                    black_box(clock.now());
                }
            }),
            plain_line("governor/quanta_clock_now", {
                let clock = DefaultClock::default();
                move || {
                    black_box(clock.now());
                }
            }),
        ],
        rows: vec![
            Row::Single {
                label: "d ours: InMemoryBackend::reserve_now, rejected",
                line: 0,
            },
            Row::Single {
                label: "d ours: refusal_response (429 + 3 headers + body)",
                line: 1,
            },
            Row::Single {
                label: "d ours: policy_header (one format!)",
                line: 2,
            },
            Row::Single {
                label: "d governor: DefaultClock::default().now()",
                line: 3,
            },
            Row::Single {
                label: "d governor: RateLimiter::check_key, rejected",
                line: 4,
            },
            Row::Single {
                label: "d ours: Clock::tokio().now() (clock_gettime)",
                line: 5,
            },
            Row::Single {
                label: "d ours: Clock::fast().now() (TSC)",
                line: 6,
            },
            Row::Single {
                label: "d governor: QuantaClock::now() (TSC)",
                line: 7,
            },
        ],
    }
}

/// A row's verdict on the goal: ours no slower than governor.
struct Goal {
    what: &'static str,
    ratio: f64,
}

fn summary(cases: &mut [Case], mode: Mode) {
    let (samples, target) = sampling(mode);
    println!();
    println!(
        "Summary: median of {samples} samples of ~{target:?} per line, lines taking turns, \
         each turn after one untimed sample (ns per request)"
    );
    if mode != Mode::Bench {
        println!("(--test mode: tiny samples, figures are not meaningful)");
    }
    println!(
        "{:<50} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8}",
        "case", "none ns", "ours ns", "gov ns", "ours-0", "gov-0", "ours/gov", "ours/0", "gov/0"
    );
    println!(
        "{:-<50}-|-{:->8}-|-{:->8}-|-{:->8}-|-{:->8}-|-{:->8}-|-{:->8}-|-{:->8}-|-{:->8}",
        "", "", "", "", "", "", "", "", ""
    );
    let mut singles = Vec::new();
    let mut goals = Vec::new();
    for case in cases.iter_mut() {
        let m = medians(&mut case.lines, samples, target, 2_000, 10_000_000);
        for row in &case.rows {
            match *row {
                Row::Compare {
                    label,
                    none,
                    ours,
                    governor,
                } => {
                    let (n, o, g) = (m[none], m[ours], m[governor]);
                    println!(
                        "{label:<50} | {n:>8.1} | {o:>8.1} | {g:>8.1} | {:>8.1} | {:>8.1} | {:>8.2} | {:>8.2} | {:>8.2}",
                        o - n,
                        g - n,
                        o / g,
                        o / n,
                        g / n
                    );
                    goals.push(Goal {
                        what: label,
                        ratio: o / g,
                    });
                }
                Row::Single { label, line } => singles.push((label, m[line])),
            }
        }
    }
    println!(
        "(ns: median time per request; ours-0, gov-0: overhead over no limiter; ratios of \
         times, below 1 means faster; on `rejected` rows `none` is the unlimited service \
         answering 200, so 1/ratio is the rejection throughput as a fraction of the unlimited one)"
    );
    println!();
    println!("{:<56} | {:>8}", "diagnostic (not a comparison)", "ns/op");
    println!("{:-<56}-|-{:->8}", "", "");
    for (label, ns) in singles {
        println!("{label:<56} | {ns:>8.1}");
    }
    println!();
    println!(
        "Goal: ours <= tower_governor, time per request (the default clock's rows are the \
         issue's goal; `tokio clock` rows show ours on `Clock::tokio()`)"
    );
    for goal in goals {
        println!(
            "  {:<50} ours/gov {:>5.2}  {}",
            goal.what,
            goal.ratio,
            if goal.ratio <= 1.0 { "met" } else { "NOT met" }
        );
    }
}

/// `LAYER_COUNT=group/line LAYER_COUNT_N=n`: sets up only `group`, then sends
/// `n` requests through `line` in [`measured_requests`], for an instruction
/// count under `valgrind --tool=callgrind` (see bench/layer_instructions.sh).
/// Instructions, unlike seconds, do not move with the machine's load.
fn count(rt: &Arc<Runtime>, wanted: &str) {
    let n: u64 = std::env::var("LAYER_COUNT_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (group, line) = wanted.split_once('/').expect("LAYER_COUNT=group/line");
    let mut case = match group {
        "a_noop_inner" => stack_case(rt, "a_noop_inner", || NoOp),
        "b_boxed_inner" => stack_case(rt, "b_boxed_inner", boxed),
        "c_axum_router" => case_router(rt),
        other => panic!("LAYER_COUNT: no group {other}"),
    };
    let found = case.lines.iter_mut().find(|l| l.name == line);
    let found = found.unwrap_or_else(|| panic!("LAYER_COUNT: no line {line} in {group}"));
    measured_requests(found, n);
}

/// The part of a [`count`] run that callgrind counts (`--toggle-collect`).
#[inline(never)]
fn measured_requests(line: &mut Line, n: u64) {
    (line.run)(n);
}

fn main() {
    let mode = mode();
    let rt = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime"),
    );
    // The in-memory backend starts its sweeper on the first reservation made in
    // a runtime; make every layer inside this one.
    let _guard = rt.enter();
    if let Ok(wanted) = std::env::var("LAYER_COUNT") {
        count(&rt, &wanted);
        return;
    }
    let mut cases = vec![
        stack_case(&rt, "a_noop_inner", || NoOp),
        stack_case(&rt, "b_boxed_inner", boxed),
        case_router(&rt),
        case_parts(),
    ];
    run_criterion(cases.iter_mut().map(|case| (case.group, &mut case.lines)));
    if mode != Mode::List {
        summary(&mut cases, mode);
    }
}
