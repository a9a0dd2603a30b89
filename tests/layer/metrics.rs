//! The `metrics` feature: what the layer and `FreqLimit` count, labelled by
//! limiter name and never by key.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Service, ServiceExt, service_fn};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::layer::MissingKey;
use tower_freqlimit::{
    BackendError, BackendErrorKind, FreqLimit, FreqLimitError, FreqLimitLayer, FreqLimitParams,
    Reserve,
};

use crate::support::down::DownBackend;

/// Runs `body` on a paused current-thread runtime with a recorder of its own,
/// and returns `(metric name, limiter label, labels) -> value`.
fn recorded<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> BTreeMap<(String, String), Value> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(body());
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            assert_eq!(labels.len(), 1, "one label, the limiter: {labels:?}");
            assert_eq!(labels[0].0, "limiter");
            let value = match value {
                DebugValue::Counter(n) => Value::Count(n),
                DebugValue::Histogram(samples) => {
                    Value::Samples(samples.into_iter().map(|s| s.into_inner()).collect())
                }
                DebugValue::Gauge(_) => panic!("no gauges"),
            };
            ((key.key().name().to_string(), labels[0].1.clone()), value)
        })
        .collect()
}

#[derive(Debug, PartialEq)]
enum Value {
    Count(u64),
    Samples(Vec<f64>),
}

fn count(metrics: &BTreeMap<(String, String), Value>, name: &str, limiter: &str) -> u64 {
    match metrics.get(&(name.to_string(), limiter.to_string())) {
        Some(Value::Count(n)) => *n,
        None => 0,
        Some(other) => panic!("{name} is {other:?}"),
    }
}

fn samples(metrics: &BTreeMap<(String, String), Value>, limiter: &str) -> Vec<f64> {
    match metrics.get(&("freqlimit_delay_seconds".to_string(), limiter.to_string())) {
        Some(Value::Samples(s)) => s.clone(),
        other => panic!("delay histogram: {other:?}"),
    }
}

fn echo()
-> impl Service<u32, Response = u32, Error = Infallible, Future = Ready<Result<u32, Infallible>>> + Clone
{
    service_fn(|req: u32| ready(Ok::<_, Infallible>(req)))
}

#[test]
fn the_layer_counts_each_outcome_under_its_name() {
    let metrics = recorded(|| async {
        // 1/s, burst 2, waits up to 1.5 s: requests on key 7 at one instant
        // go 0 s, 0 s, 1 s (delayed), then the fourth (2 s away) is rejected.
        let layer = FreqLimitLayer::new(
            FreqLimitParams::per_second(1).with_burst(2),
            InMemoryBackend::<u32>::new(),
        )
        .name("api")
        .key(|req: &u32| (*req != 0).then_some(*req))
        .max_wait(Duration::from_millis(1500));
        let mut svc = tower::Layer::layer(&layer, echo());
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(tokio::spawn(svc.ready().await.unwrap().call(7)));
        }
        let mut results = Vec::new();
        for wait in waits {
            results.push(wait.await.unwrap().is_ok());
        }
        assert_eq!(results, [true, true, true, false]);
        // A keyless request is refused (the default): counted as rejected.
        assert!(svc.ready().await.unwrap().call(0).await.is_err());

        // Another limiter, keyless requests allowed through unlimited.
        let other =
            FreqLimitLayer::new(FreqLimitParams::per_hour(1), InMemoryBackend::<u32>::new())
                .name("other")
                .key(|_: &u32| None::<u32>)
                .on_missing_key(MissingKey::Allow);
        let mut svc = tower::Layer::layer(&other, echo());
        assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
    });
    assert_eq!(count(&metrics, "freqlimit_allowed_total", "api"), 2);
    assert_eq!(count(&metrics, "freqlimit_delayed_total", "api"), 1);
    assert_eq!(count(&metrics, "freqlimit_rejected_total", "api"), 2);
    assert_eq!(count(&metrics, "freqlimit_backend_errors_total", "api"), 0);
    assert_eq!(samples(&metrics, "api"), [0.0, 0.0, 1.0]);
    assert_eq!(count(&metrics, "freqlimit_allowed_total", "other"), 1);
    assert_eq!(samples(&metrics, "other"), [0.0]);
    assert_eq!(count(&metrics, "freqlimit_rejected_total", "other"), 0);
}

/// A backend that is always down, as when Redis refuses connections.
fn down() -> DownBackend<u32> {
    DownBackend::failing_with(BackendError::new(
        BackendErrorKind::Unavailable,
        "connection refused",
    ))
}

#[test]
fn backend_errors_are_counted_apart() {
    let metrics = recorded(|| async {
        let mut svc = tower::Layer::layer(
            &FreqLimitLayer::new(FreqLimitParams::per_second(1), down()),
            echo(),
        );
        assert!(svc.ready().await.unwrap().call(1).await.is_err());
        let limiter = FreqLimit::new(FreqLimitParams::per_second(1), down()).name("direct");
        assert!(limiter.acquire(&1).await.is_err());
    });
    assert_eq!(
        count(&metrics, "freqlimit_backend_errors_total", "default"),
        1
    );
    assert_eq!(count(&metrics, "freqlimit_rejected_total", "default"), 0);
    assert_eq!(
        count(&metrics, "freqlimit_backend_errors_total", "direct"),
        1
    );
}

#[test]
fn freq_limit_counts_too() {
    let metrics = recorded(|| async {
        let limiter = FreqLimit::new(FreqLimitParams::per_second(2), InMemoryBackend::<u8>::new())
            .name("chat");
        limiter.acquire(&1).await.unwrap(); // at once
        limiter.acquire(&1).await.unwrap(); // after 0.5 s
        assert!(limiter.try_acquire(&1).await.is_err()); // 0.5 s away: rejected
        // An impossible cost is refused before the backend: rejected.
        let err = limiter
            .acquire_with(&1, Reserve::new().cost(3).no_wait())
            .await
            .unwrap_err();
        assert!(matches!(err, FreqLimitError::CostExceedsCapacity { .. }));
    });
    assert_eq!(count(&metrics, "freqlimit_allowed_total", "chat"), 1);
    assert_eq!(count(&metrics, "freqlimit_delayed_total", "chat"), 1);
    assert_eq!(count(&metrics, "freqlimit_rejected_total", "chat"), 2);
    assert_eq!(samples(&metrics, "chat"), [0.0, 0.5]);
}
