//! `FreqLimitLayer::learning` on a client, against an upstream service on a
//! paused clock.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::learn::Learner;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

const S: Duration = Duration::from_secs(1);

/// An upstream answering each request with the response `answer` makes for
/// its number (1, 2, ...), counting them.
fn upstream(
    answer: impl Fn(usize, &Request<()>) -> Response<()> + Clone + Send + 'static,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone,
    Arc<AtomicUsize>,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let service = service_fn(move |req: Request<()>| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let response = answer(n, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    (service, count)
}

fn too_many(headers: &[(&str, &str)]) -> Response<()> {
    let mut response = Response::builder().status(StatusCode::TOO_MANY_REQUESTS);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(()).unwrap()
}

fn for_tenant(tenant: &str) -> Request<()> {
    Request::builder()
        .header("x-tenant", tenant)
        .body(())
        .unwrap()
}

fn tenant(req: &Request<()>) -> Option<String> {
    Some(req.headers().get("x-tenant")?.to_str().ok()?.to_owned())
}

/// A `429` with `Retry-After: 10` holds that key for 10 s; another key goes
/// at once. Without learning, the next request goes at its own pace.
#[tokio::test(start_paused = true)]
async fn a_429_holds_its_key_until_the_server_reset() {
    for learning in [true, false] {
        let (service, sent) = upstream(|n, req| {
            if n == 1 && tenant(req).as_deref() == Some("a") {
                too_many(&[("retry-after", "10")])
            } else {
                Response::new(())
            }
        });
        let limit = FreqLimitLayer::new(
            FreqLimitParams::per_second(100),
            InMemoryBackend::<String>::new(),
        )
        .key(tenant);
        let client = if learning {
            ServiceBuilder::new()
                .layer(limit.learning(Learner::new()))
                .service(service)
                .boxed_clone()
        } else {
            ServiceBuilder::new()
                .layer(limit)
                .service(service)
                .boxed_clone()
        };
        let first = client.clone().oneshot(for_tenant("a")).await.unwrap();
        assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
        let start = Instant::now();
        client.clone().oneshot(for_tenant("b")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "another key is not held");
        client.clone().oneshot(for_tenant("a")).await.unwrap();
        let waited = start.elapsed();
        if learning {
            assert!(
                waited >= 10 * S && waited < 10 * S + Duration::from_millis(5),
                "{waited:?}"
            );
        } else {
            assert_eq!(
                waited,
                Duration::from_millis(10),
                "T = 10 ms after the first"
            );
        }
        assert_eq!(sent.load(Ordering::SeqCst), 3);
    }
}

/// `RateLimit: r=0` on a successful response holds the key as well, and a
/// response that says nothing holds nothing.
#[tokio::test(start_paused = true)]
async fn ratelimit_headers_on_a_success_are_believed() {
    let (service, _) = upstream(|n, _| match n {
        1 => Response::builder()
            .header("ratelimit", r#""default";r=0;t=7"#)
            .body(())
            .unwrap(),
        _ => Response::new(()),
    });
    let client = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global())
                .learning(Learner::new()),
        )
        .service(service);
    client.clone().oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    client.clone().oneshot(Request::new(())).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= 7 * S && waited < 7 * S + Duration::from_millis(5),
        "{waited:?}"
    );
    let start = Instant::now();
    client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(10),
        "then T = 10 ms again"
    );
}

/// The server's hold is clamped to the learner's `max_hold`.
#[tokio::test(start_paused = true)]
async fn a_hold_is_clamped() {
    let (service, _) = upstream(|n, _| {
        if n == 1 {
            too_many(&[("retry-after", "86400")])
        } else {
            Response::new(())
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(FreqLimitParams::per_second(100), InMemoryBackend::global())
                .learning(Learner::new().max_hold(3 * S)),
        )
        .service(service);
    client.clone().oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    client.oneshot(Request::new(())).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= 3 * S && waited < 3 * S + Duration::from_millis(5),
        "{waited:?}"
    );
}

/// A request without a key under `MissingKey::Global` is limited on the
/// global bucket, and what its response says holds that bucket.
#[tokio::test(start_paused = true)]
async fn a_keyless_request_on_the_global_bucket_learns_for_it() {
    use tower_freqlimit::layer::MissingKey;
    let (service, _) = upstream(|n, _| {
        if n == 1 {
            too_many(&[("retry-after", "4")])
        } else {
            Response::new(())
        }
    });
    let client = ServiceBuilder::new()
        .layer(
            FreqLimitLayer::new(
                FreqLimitParams::per_second(100),
                InMemoryBackend::<String>::new(),
            )
            .key(tenant)
            .on_missing_key(MissingKey::Global)
            .learning(Learner::new()),
        )
        .service(service);
    client.clone().oneshot(Request::new(())).await.unwrap();
    let start = Instant::now();
    client.clone().oneshot(for_tenant("a")).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "a keyed request is not held"
    );
    client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), 4 * S);
}
