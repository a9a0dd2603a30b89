//! The reqwest middleware against real servers on loopback: pacing per host,
//! learning from a `429`, retry off by default and bounded when on. Limits
//! are per hour, so nothing refills while a test runs on the real clock, and
//! a learned hold is checked by a request refused without being sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::reqwest::FreqLimitMiddleware;
use tower_freqlimit::{FreqLimitError, FreqLimitParams};

use crate::support::http::serve;

const HOURLY: FreqLimitParams = FreqLimitParams::per_hour(60).with_burst(2);

/// A server answering its `n`-th request (1, 2, ...) with `answer(n)`.
async fn upstream(answer: fn(usize) -> Response) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let app = Router::new().route(
        "/",
        any(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move { answer(n) }
        }),
    );
    (serve(app).await, count)
}

fn ok(_: usize) -> Response {
    "ok".into_response()
}

fn client(middleware: FreqLimitMiddleware<InMemoryBackend<String>>) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// The limiter's refusal inside reqwest-middleware's error, if it is one.
fn refusal(err: &reqwest_middleware::Error) -> Option<&FreqLimitError> {
    match err {
        reqwest_middleware::Error::Middleware(err) => err.downcast_ref(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}

#[tokio::test]
async fn paces_each_host_apart_and_refuses_past_max_wait() {
    let (a, sent_a) = upstream(ok).await;
    let (b, sent_b) = upstream(ok).await;
    let client =
        client(FreqLimitMiddleware::new(HOURLY, InMemoryBackend::new()).max_wait(Duration::ZERO));
    for addr in [a, b] {
        for _ in 0..2 {
            let reply = client.get(format!("http://{addr}/")).send().await.unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
        }
        let err = client
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(refusal(&err), Some(FreqLimitError::Rejected(_))),
            "{err:?}"
        );
    }
    // The refused requests were never sent.
    assert_eq!(
        (sent_a.load(Ordering::SeqCst), sent_b.load(Ordering::SeqCst)),
        (2, 2)
    );
}

fn too_many_for_an_hour(_: usize) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "3600")],
        "slow down",
    )
        .into_response()
}

/// After a `429` with `Retry-After: 3600`, the host is held: the next
/// request is refused locally instead of meeting the same `429`. Without
/// learning it goes out and meets it.
#[tokio::test]
async fn a_429_holds_the_host_and_spares_the_server() {
    let (addr, sent) = upstream(too_many_for_an_hour).await;
    let learning =
        client(FreqLimitMiddleware::new(HOURLY, InMemoryBackend::new()).max_wait(Duration::ZERO));
    let first = learning
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    let err = learning
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    let Some(FreqLimitError::Rejected(r)) = refusal(&err) else {
        panic!("{err:?}")
    };
    assert!(r.retry_after() > Duration::from_secs(3590), "{r:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 1, "retry is off by default");

    let (addr, sent) = upstream(too_many_for_an_hour).await;
    let deaf = client(
        FreqLimitMiddleware::new(HOURLY, InMemoryBackend::new())
            .max_wait(Duration::ZERO)
            .without_learning(),
    );
    for _ in 0..2 {
        let reply = deaf.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(sent.load(Ordering::SeqCst), 2);
}

fn once_too_many(n: usize) -> Response {
    if n == 1 {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "0.05"),
            ],
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

/// With `retry(1)`, an idempotent request refused with a hold is sent again
/// once the hold is over; a `POST` is not, unless asked.
#[tokio::test]
async fn retry_is_bounded_and_idempotent_only() {
    let params = FreqLimitParams::per_second(1_000);
    let middleware = || FreqLimitMiddleware::new(params, InMemoryBackend::new());
    let retrying = client(middleware().retry(1));
    let any = client(middleware().retry(1).retry_any_method());
    let plain = client(middleware());
    assert_eq!(
        once_refused(&retrying, Method::GET).await,
        (StatusCode::OK, 2)
    );
    assert_eq!(
        once_refused(&retrying, Method::POST).await,
        (StatusCode::TOO_MANY_REQUESTS, 1)
    );
    assert_eq!(once_refused(&any, Method::POST).await, (StatusCode::OK, 2));
    // Off by default.
    assert_eq!(
        once_refused(&plain, Method::GET).await,
        (StatusCode::TOO_MANY_REQUESTS, 1)
    );
}

/// One request to a fresh upstream that answers its first request with a
/// `429`: the status the caller got, and how many requests the upstream saw.
async fn once_refused(client: &ClientWithMiddleware, method: Method) -> (StatusCode, usize) {
    let (addr, sent) = upstream(once_too_many).await;
    let reply = client
        .request(method, format!("http://{addr}/"))
        .body("x")
        .send()
        .await
        .unwrap();
    (reply.status(), sent.load(Ordering::SeqCst))
}
