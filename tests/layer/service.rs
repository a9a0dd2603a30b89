//! The Tower `Service` contract of `FreqLimitService`, proved with `tower-test`
//! mocks (whose `call` panics unless `poll_ready` returned `Ready` on the same
//! instance), plus refunds, backend failures, missing keys, stacking, and the
//! forward times of random arrival patterns on a paused clock.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::layer::{FreqLimitLayer, LayerParams, MissingKey, Policy, UnitCost};
use tower_freqlimit::{BackendErrorKind, FreqLimitError, FreqLimitParams, gcra};
use tower_test::mock;

use crate::support::down::DownBackend;

const MS: Duration = Duration::from_millis(1);

/// Requests are `(key, id)`; key 0 means "no key".
type Req = (u8, u32);

/// A layer keyed by the request's first field.
fn keyed(params: FreqLimitParams) -> KeyedLayer<impl Fn(&Req) -> Option<u8> + Clone> {
    FreqLimitLayer::new(params, InMemoryBackend::new())
        .key(|req: &Req| (req.0 != 0).then_some(req.0))
}

type KeyedLayer<K> = FreqLimitLayer<InMemoryBackend<u8>, Policy<K, LayerParams, UnitCost>>;

fn refusal(err: &tower_freqlimit::layer::BoxError) -> &FreqLimitError {
    err.downcast_ref::<FreqLimitError>()
        .expect("a FreqLimitError")
}

#[tokio::test(start_paused = true)]
async fn inner_is_called_only_once_ready_and_only_after_the_wait() {
    let (mock, mut handle) = mock::pair::<Req, &'static str>();
    let mut svc = ServiceBuilder::new()
        .layer(keyed(FreqLimitParams::per_second(1)))
        .service(mock);
    handle.allow(0);

    // Our readiness is the inner service's.
    let not_ready = tokio::time::timeout(10 * MS, svc.ready()).await;
    assert!(not_ready.is_err(), "ready only once the inner service is");

    handle.allow(1);
    let first = tokio::spawn(svc.ready().await.unwrap().call((1, 1)));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 1));
    send.send_response("one");
    assert_eq!(first.await.unwrap().unwrap(), "one");

    // The second request on key 1 must wait for its slot, 1 s after the first,
    // and goes through a clone of the inner service made ready after the wait:
    // one permit for `svc`, one for the clone.
    handle.allow(2);
    let start = Instant::now();
    let second = tokio::spawn(svc.ready().await.unwrap().call((1, 2)));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 2));
    assert_eq!(start.elapsed(), 1000 * MS);
    send.send_response("two");
    assert_eq!(second.await.unwrap().unwrap(), "two");

    // `svc` kept the readiness that the waiting request did not use: another
    // key goes through it with no permit left.
    let third = svc.ready().await.unwrap().call((2, 3));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (2, 3));
    send.send_response("three");
    assert_eq!(third.await.unwrap(), "three");

    // A waiting request takes the inner service's readiness only after its
    // wait: with no permit, it is not forwarded, however long it has waited.
    handle.allow(1);
    let fourth = tokio::spawn(svc.ready().await.unwrap().call((1, 4)));
    tokio::time::sleep(3 * 1000 * MS).await;
    assert!(!fourth.is_finished(), "its clone has no permit yet");
    handle.allow(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 4));
    send.send_response("four");
    assert_eq!(fourth.await.unwrap().unwrap(), "four");
}

/// Sends `req` through `svc`, which forwards it at once, and answers it with
/// `response`.
async fn forward_and_answer<S>(
    svc: &mut S,
    handle: &mut mock::Handle<Req, u32>,
    req: Req,
    response: u32,
) where
    S: Service<Req, Response = u32>,
    S::Error: std::fmt::Debug + Send + 'static,
    S::Future: Send + 'static,
{
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(response);
    call.await.unwrap().unwrap();
}

/// A request sleeping for its slot holds no permit of a `ConcurrencyLimit`
/// below it: another key's request gets through meanwhile.
#[tokio::test(start_paused = true)]
async fn sleeping_requests_hold_no_inner_readiness() {
    let (mock, mut handle) = mock::pair::<Req, u32>();
    let mut svc = ServiceBuilder::new()
        .layer(keyed(FreqLimitParams::per_second(1)))
        .concurrency_limit(1)
        .service(mock);

    forward_and_answer(&mut svc, &mut handle, (1, 1), 1).await;

    // Key 1 must now wait 1 s; key 2 passes at once although the limit is 1.
    let start = Instant::now();
    let waiting = tokio::spawn(svc.ready().await.unwrap().call((1, 2)));
    let other = tokio::spawn(svc.ready().await.unwrap().call((2, 3)));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (2, 3));
    assert_eq!(start.elapsed(), Duration::ZERO);
    send.send_response(3);
    assert_eq!(other.await.unwrap().unwrap(), 3);

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 2));
    send.send_response(2);
    assert_eq!(waiting.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through() {
    let (mock, mut handle) = mock::pair::<Req, u32>();
    let mut svc = keyed(FreqLimitParams::per_second(100)).layer_for(mock);

    // An error from the inner poll_ready is ours.
    handle.send_error("inner not ready: boom");
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "inner not ready: boom");

    // An error from the inner response future.
    let call = tokio::spawn(svc.ready().await.unwrap().call((1, 2)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("inner failed: bang");
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "inner failed: bang");

    // An error from the poll_ready of the clone a waiting request uses once its
    // wait is over (key 1 is 10 ms ahead now).
    let waiting = tokio::spawn(svc.ready().await.unwrap().call((1, 3)));
    handle.send_error("inner not ready after the wait");
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "inner not ready after the wait");
}

/// A response future dropped while it waits never reaches the inner service and
/// gives its slot back to the next caller.
#[tokio::test(start_paused = true)]
async fn dropped_waiting_request_is_never_forwarded_and_refunds() {
    let (mock, mut handle) = mock::pair::<Req, u32>();
    let mut svc = keyed(FreqLimitParams::per_second(1)).layer_for(mock);
    forward_and_answer(&mut svc, &mut handle, (1, 1), 1).await;

    // Its slot is at 1 s; the caller gives up after 100 ms, dropping the future.
    let start = Instant::now();
    let gave_up = tokio::time::timeout(100 * MS, svc.ready().await.unwrap().call((1, 2))).await;
    assert!(gave_up.is_err());

    // The abandoned slot goes to the next request: forwarded at 1 s, not 2 s.
    let third = tokio::spawn(svc.ready().await.unwrap().call((1, 3)));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 3), "request 2 never reached the inner service");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    send.send_response(3);
    assert_eq!(third.await.unwrap().unwrap(), 3);
}

#[tokio::test]
async fn backend_failures_are_errors_or_503_never_panics() {
    let inner = service_fn(|req: Req| async move { Ok::<_, Infallible>(req.1) });
    let svc = FreqLimitLayer::new(
        FreqLimitParams::per_second(1),
        DownBackend::<u8>::unavailable(),
    )
    .layer_for(inner);
    let err = svc.oneshot((1, 1)).await.unwrap_err();
    let FreqLimitError::Backend(backend) = refusal(&err) else {
        panic!("expected a backend error, got {err}");
    };
    assert_eq!(backend.kind(), BackendErrorKind::Unavailable);
    assert_eq!(err.to_string(), "rate-limit backend unavailable");
}

#[cfg(feature = "http")]
#[tokio::test]
async fn backend_failures_are_503_over_http() {
    for (kind, body) in [
        (
            BackendErrorKind::Unavailable,
            "rate-limit backend unavailable\n",
        ),
        (BackendErrorKind::Full, "rate-limit backend is full\n"),
        (
            BackendErrorKind::Corrupt,
            "rate-limit backend holds a corrupt value\n",
        ),
    ] {
        let http_inner = service_fn(|_: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let svc = FreqLimitLayer::new(
            FreqLimitParams::per_second(1),
            DownBackend::<u8>::failing_with(tower_freqlimit::BackendError::from_kind(kind)),
        )
        .http_responses()
        .layer_for(http_inner);
        let response = svc
            .oneshot(http::Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{kind:?}");
        assert_eq!(response.body(), body, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn missing_keys_follow_the_policy() {
    let echo = service_fn(|req: Req| async move { Ok::<_, Infallible>(req.1) });
    let params = FreqLimitParams::per_hour(1);

    // Default: refused with KeyNotFound.
    let mut svc = keyed(params).layer_for(echo);
    let err = svc.ready().await.unwrap().call((0, 1)).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        &FreqLimitError::KeyNotFound(tower_freqlimit::KeyNotFound::UNSPECIFIED)
    );

    // Global: keyless requests share one bucket, apart from keyed ones.
    let mut svc = keyed(params)
        .on_missing_key(MissingKey::Global)
        .max_wait(Duration::ZERO)
        .layer_for(echo);
    assert_eq!(svc.ready().await.unwrap().call((0, 1)).await.unwrap(), 1);
    assert!(svc.ready().await.unwrap().call((0, 2)).await.is_err());
    assert_eq!(svc.ready().await.unwrap().call((5, 3)).await.unwrap(), 3);

    // Allow: keyless requests are not limited at all.
    let mut svc = keyed(params)
        .on_missing_key(MissingKey::Allow)
        .max_wait(Duration::ZERO)
        .layer_for(echo);
    for id in 0..10 {
        assert_eq!(svc.ready().await.unwrap().call((0, id)).await.unwrap(), id);
    }
}

#[tokio::test(start_paused = true)]
async fn per_request_params_and_cost() {
    const FREE: FreqLimitParams = FreqLimitParams::per_hour(2).with_burst(2);
    const PAID: FreqLimitParams = FreqLimitParams::per_hour(10).with_burst(10);
    let echo = service_fn(|req: Req| async move { Ok::<_, Infallible>(req.1) });
    // Keys 1..=9 are free users, 10.. paid; a request's id is its cost.
    let mut svc = keyed(FREE)
        .params_for(|req: &Req| if req.0 >= 10 { PAID } else { FREE })
        .cost_for(|req: &Req| req.1)
        .max_wait(Duration::ZERO)
        .layer_for(echo);
    assert!(svc.ready().await.unwrap().call((1, 2)).await.is_ok());
    assert!(svc.ready().await.unwrap().call((1, 1)).await.is_err());
    assert!(svc.ready().await.unwrap().call((10, 7)).await.is_ok());
    assert!(svc.ready().await.unwrap().call((10, 3)).await.is_ok());
    assert!(svc.ready().await.unwrap().call((10, 1)).await.is_err());
    // A cost above the burst can never pass in reject-only mode.
    let err = svc.ready().await.unwrap().call((2, 3)).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        &FreqLimitError::CostExceedsCapacity {
            cost: 3,
            max_cost: 2
        }
    );
}

/// Two layers admit only what both allow: a per-user limit (burst 2) over a
/// global one (burst 3). A request the inner layer rejects has already used its
/// outer slot, as with any two limits in series.
#[tokio::test(start_paused = true)]
async fn stacked_layers_admit_only_what_both_allow() {
    let echo = service_fn(|req: Req| async move { Ok::<_, Infallible>(req.1) });
    let per_user = keyed(FreqLimitParams::per_hour(1).with_burst(2)).max_wait(Duration::ZERO);
    let global = FreqLimitLayer::new(
        FreqLimitParams::per_hour(1).with_burst(3),
        InMemoryBackend::<u8>::new(),
    )
    .max_wait(Duration::ZERO);
    let mut svc = ServiceBuilder::new()
        .layer(per_user)
        .layer(global)
        .service(echo);
    let mut admitted = Vec::new();
    for req in [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)] {
        admitted.push(svc.ready().await.unwrap().call(req).await.is_ok());
    }
    assert_eq!(admitted, [true, true, false, true, false, false]);
}

/// The layer forwards each request exactly when the core's schedule says.
fn forward_times(params: FreqLimitParams, arrivals: &[(u8, u64)]) -> Vec<(u32, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = Instant::now();
        let forwarded = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&forwarded);
        let inner = service_fn(move |req: Req| {
            record.lock().unwrap().push((req.1, start.elapsed()));
            async move { Ok::<_, Infallible>(()) }
        });
        let svc = keyed(params).layer_for(inner);
        let mut tasks = Vec::new();
        for (id, &(key, at_ms)) in arrivals.iter().enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
            tasks.push(tokio::spawn(svc.clone().oneshot((key, id as u32))));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let mut forwarded = forwarded.lock().unwrap().clone();
        forwarded.sort();
        forwarded
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layer_forwards_on_the_core_schedule(
        interval_ms in 1u64..=500,
        burst in 1u32..=5,
        gaps in prop::collection::vec((1u8..=3, 0u64..=400), 1..40),
    ) {
        let params = FreqLimitParams::new(1, Duration::from_millis(interval_ms), burst);
        let mut at = 0;
        let arrivals: Vec<(u8, u64)> = gaps.iter().map(|&(key, gap)| { at += gap; (key, at) }).collect();

        // The core's schedule, in whole milliseconds (every input is one).
        let mut tats = [None; 4];
        let expected: Vec<(u32, Duration)> = arrivals.iter().enumerate().map(|(id, &(key, at_ms))| {
            let now = at_ms * 1_000_000;
            let step = gcra::step(tats[key as usize], now, &params);
            tats[key as usize] = Some(step.new_tat);
            (id as u32, Duration::from_nanos(now + step.delay))
        }).collect();

        prop_assert_eq!(forward_times(params, &arrivals), expected);
    }
}

/// `layer_for` reads better than `Layer::layer(&layer, svc)` in these tests.
trait LayerFor<S>: tower::Layer<S> {
    fn layer_for(&self, inner: S) -> Self::Service {
        self.layer(inner)
    }
}

impl<S, L: tower::Layer<S>> LayerFor<S> for L {}

/// A cost that can never fit is refused before the backend is asked: even a
/// backend that is down answers `CostExceedsCapacity`, in the layer and in
/// `FreqLimit` alike (no round trip to Redis for a request that cannot pass).
#[tokio::test]
async fn an_impossible_cost_never_reaches_the_backend() {
    let params = FreqLimitParams::per_second(1).with_burst(3);
    let inner = service_fn(|req: Req| async move { Ok::<_, Infallible>(req.1) });
    let svc = FreqLimitLayer::new(params, DownBackend::<u8>::unavailable())
        .cost_for(|req: &Req| req.1)
        .no_wait()
        .layer_for(inner);
    let err = svc.clone().oneshot((1, 4)).await.unwrap_err();
    assert_eq!(
        refusal(&err),
        &FreqLimitError::CostExceedsCapacity {
            cost: 4,
            max_cost: 3
        }
    );
    // A cost that fits does ask, and meets the backend's failure.
    let err = svc.oneshot((1, 3)).await.unwrap_err();
    assert!(matches!(refusal(&err), FreqLimitError::Backend(_)), "{err}");

    let limiter = tower_freqlimit::FreqLimit::new(params, DownBackend::<u8>::unavailable());
    let no_wait = tower_freqlimit::Reserve::new().cost(4).no_wait();
    assert_eq!(
        limiter.acquire_with(&1, no_wait).await.unwrap_err(),
        FreqLimitError::CostExceedsCapacity {
            cost: 4,
            max_cost: 3
        }
    );
}
