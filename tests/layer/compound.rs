//! `CompoundLimitLayer`: several limits decided as one reservation by a Tower
//! layer. All or nothing when rejecting, overlapping waits, refunds in every
//! limit when a waiting request is dropped, the inner service made ready
//! before each call (`tower-test` mocks), and the HTTP headers naming each
//! limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_freqlimit::backends::compound::{CompoundBackend, Part};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::layer::BoxError;
use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitError, FreqLimitParams};
use tower_test::mock;

const MS: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Chat(u32),
    Group(u32),
}

/// Requests are `(chat, group)`.
type Req = (u32, u32);

/// `per-chat` (keyed by the chat), `per-group` (by the group), `global`.
fn chat_group_global(
    chat: FreqLimitParams,
    group: FreqLimitParams,
    global: FreqLimitParams,
) -> CompoundLimit<InMemoryBackend<Scope>> {
    CompoundLimit::new(InMemoryBackend::new())
        .limit("per-chat", chat)
        .limit("per-group", group)
        .limit("global", global)
}

fn keys(req: &Req) -> Result<[Option<Scope>; 3], tower_freqlimit::KeyNotFound> {
    Ok([Some(Scope::Chat(req.0)), Some(Scope::Group(req.1)), None])
}

/// Each limit's `remaining` and `reset_after` for `req`'s keys now,
/// consuming nothing.
async fn state(limits: &CompoundLimit<InMemoryBackend<Scope>>, req: Req) -> Vec<(u32, Duration)> {
    let [chat, group, global] = keys(&req).unwrap();
    let status = limits
        .status(&[chat.as_ref(), group.as_ref(), global.as_ref()])
        .await
        .unwrap();
    status
        .parts()
        .iter()
        .map(|part| (part.remaining(), part.reset_after()))
        .collect()
}

/// Each limit's `remaining` for `req`'s keys now.
async fn remaining(limits: &CompoundLimit<InMemoryBackend<Scope>>, req: Req) -> Vec<u32> {
    state(limits, req)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

fn rejected_by(err: &BoxError) -> usize {
    match err.downcast_ref::<FreqLimitError>() {
        Some(FreqLimitError::Rejected(rejection)) => rejection.limit(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// What reached a recording service, and when.
type Seen = Arc<Mutex<Vec<(Req, Duration)>>>;

/// A service that records when each request reached it.
fn recording() -> (
    impl Service<Req, Response = Req, Error = BoxError, Future = impl Send> + Clone,
    Seen,
) {
    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let svc = service_fn(move |req: Req| {
        log.lock().unwrap().push((req, start.elapsed()));
        async move { Ok::<_, BoxError>(req) }
    });
    (svc, seen)
}

#[tokio::test(start_paused = true)]
async fn a_rejected_request_consumes_nothing_in_any_limit() {
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(10).with_burst(5),
        FreqLimitParams::per_second(10).with_burst(3),
    );
    let (inner, seen) = recording();
    let mut svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), keys).no_wait())
        .service(inner);

    assert_eq!(
        svc.ready().await.unwrap().call((1, 1)).await.unwrap(),
        (1, 1)
    );
    // Chat 1 again: refused by its chat limit; group 1 and the global limit
    // are not charged for it.
    let refused = svc.ready().await.unwrap().call((1, 1)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 0);
    assert_eq!(remaining(&limits, (2, 1)).await, [1, 4, 2]);

    // Two more chats use the global limit up; a fourth is refused by it and
    // its chat and group keep their whole burst.
    svc.ready().await.unwrap().call((2, 1)).await.unwrap();
    svc.ready().await.unwrap().call((3, 2)).await.unwrap();
    let refused = svc.ready().await.unwrap().call((4, 3)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 2);
    assert_eq!(remaining(&limits, (4, 3)).await, [1, 5, 0]);
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "refused requests never reach the service"
    );
}

#[tokio::test(start_paused = true)]
async fn waits_overlap_the_request_runs_when_the_slowest_limit_admits_it() {
    // Chat: one a second. Group: one every two seconds. The second message of
    // chat 1 in group 1 waits for both at once: 2 s, not 1 s + 2 s.
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_minute(30),
        FreqLimitParams::per_second(100).with_burst(100),
    );
    let (inner, seen) = recording();
    let svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), keys))
        .service(inner);

    let first = tokio::spawn(svc.clone().oneshot((1, 1)));
    let second = tokio::spawn(svc.clone().oneshot((1, 1)));
    // A message of another chat in another group does not wait behind them.
    let other = tokio::spawn(svc.clone().oneshot((2, 2)));
    for task in [first, second, other] {
        task.await.unwrap().unwrap();
    }
    let mut times: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(req, at)| (*req, *at))
        .collect();
    times.sort_by_key(|(_, at)| *at);
    assert_eq!(
        times,
        [
            ((1, 1), Duration::ZERO),
            ((2, 2), Duration::ZERO),
            ((1, 1), 2000 * MS)
        ]
    );

    // With a bound on the wait below the group's 2 s, the next one is refused
    // by the group and charged nowhere.
    let bounded = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), keys).max_wait(1500 * MS))
        .service(recording().0);
    let before = state(&limits, (1, 1)).await;
    let refused = bounded.oneshot((1, 1)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 1);
    assert_eq!(state(&limits, (1, 1)).await, before);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_request_gives_its_slot_back_in_every_limit() {
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(1),
    );
    let (inner, seen) = recording();
    let svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), keys))
        .service(inner);

    svc.clone().oneshot((1, 1)).await.unwrap();
    // The second waits 1 s; its caller gives up after 100 ms.
    let gave_up = tokio::time::timeout(100 * MS, svc.clone().oneshot((1, 1))).await;
    assert!(gave_up.is_err(), "still waiting at 100 ms");
    // Every limit is back to the first request's schedule: a unit call now
    // waits 900 ms (2 s after the first without the refund), in each limit.
    let [chat, group, global] = keys(&(1, 1)).unwrap();
    let status = limits
        .status(&[chat.as_ref(), group.as_ref(), global.as_ref()])
        .await
        .unwrap();
    assert_eq!(status.delay(), 900 * MS);
    for part in status.parts() {
        assert_eq!(part.reset_after(), 900 * MS);
    }
    // And the next request runs at 1 s, not at 2 s.
    svc.clone().oneshot((1, 1)).await.unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap().1, 1000 * MS);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_made_ready_before_each_call() {
    // `tower-test`'s mock panics on a `call` without `Ready` from its own
    // `poll_ready`, and counts permits: each instance uses its own.
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(10).with_burst(10),
        FreqLimitParams::per_second(10).with_burst(10),
    );
    let (mock, mut handle) = mock::pair::<Req, &'static str>();
    let mut svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits, keys))
        .service(mock);

    handle.allow(0);
    let not_ready = tokio::time::timeout(10 * MS, svc.ready()).await;
    assert!(not_ready.is_err(), "ready only once the inner service is");

    handle.allow(1);
    let first = tokio::spawn(svc.ready().await.unwrap().call((1, 1)));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 1));
    send.send_response("one");
    assert_eq!(first.await.unwrap().unwrap(), "one");

    // The second waits 1 s, then goes through a clone of the inner service
    // made ready after the wait: with no permit left, it is not forwarded.
    handle.allow(1);
    let second = tokio::spawn(svc.ready().await.unwrap().call((1, 2)));
    tokio::time::sleep(3000 * MS).await;
    assert!(!second.is_finished(), "its clone has no permit yet");
    handle.allow(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 2));
    send.send_response("two");
    assert_eq!(second.await.unwrap().unwrap(), "two");
}

#[tokio::test(start_paused = true)]
async fn a_key_function_that_fails_refuses_with_its_key_not_found() {
    let limits = CompoundLimit::new(InMemoryBackend::<u32>::new())
        .limit("per-user", FreqLimitParams::per_second(1))
        .limit("global", FreqLimitParams::per_second(1));
    let layer = CompoundLimitLayer::new(limits, |user: &u32| match user {
        0 => Err(tower_freqlimit::KeyNotFound::client_omitted("no user id")),
        user => Ok([Some(*user), None]),
    });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |user: u32| async move { Ok::<_, BoxError>(user) },
        ));
    let err = svc.clone().oneshot(0).await.unwrap_err();
    match err.downcast_ref::<FreqLimitError>() {
        Some(FreqLimitError::KeyNotFound(missing)) => assert_eq!(missing.message(), "no user id"),
        other => panic!("expected KeyNotFound, got {other:?}"),
    }
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[cfg(feature = "http")]
mod http {
    use super::*;
    use axum::http::{Request, Response, StatusCode};
    use tower_freqlimit::http::HttpResponses;

    type HttpReq = Request<String>;

    /// Chat and group from the `x-chat` and `x-group` headers; no chat: 400.
    fn http_keys(req: &HttpReq) -> Result<[Option<Scope>; 3], tower_freqlimit::KeyNotFound> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let chat =
            header("x-chat").ok_or(tower_freqlimit::KeyNotFound::client_omitted("no x-chat"))?;
        Ok([
            Some(Scope::Chat(chat)),
            Some(Scope::Group(header("x-group").unwrap_or(0))),
            None,
        ])
    }

    fn request(chat: Option<u32>, group: u32) -> HttpReq {
        let mut req = Request::builder().header("x-group", group.to_string());
        if let Some(chat) = chat {
            req = req.header("x-chat", chat.to_string());
        }
        req.body(String::new()).unwrap()
    }

    fn limits() -> CompoundLimit<InMemoryBackend<Scope>> {
        chat_group_global(
            FreqLimitParams::per_second(1),
            FreqLimitParams::per_minute(20).with_burst(3),
            FreqLimitParams::per_second(2).with_burst(2),
        )
    }

    fn server(
        responses: HttpResponses,
    ) -> impl Service<HttpReq, Response = Response<String>, Error = std::convert::Infallible> + Clone
    {
        ServiceBuilder::new()
            .layer(
                CompoundLimitLayer::new(limits(), http_keys)
                    .no_wait()
                    .on_refusal(responses),
            )
            .service(service_fn(|_: HttpReq| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
            }))
    }

    fn header<'a>(response: &'a Response<String>, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    const POLICY: &str = r#""per-chat";q=1;w=1, "per-group";q=3;w=9, "global";q=2;w=1"#;

    #[tokio::test(start_paused = true)]
    async fn a_429_names_every_limit_and_the_one_that_refused() {
        let svc = server(HttpResponses::new());
        let ok = svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header(&ok, "ratelimit"), None, "not opted in");

        // Chat 1 again: its chat limit refuses; retry after 1 s.
        let refused = svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, "ratelimit-policy"), Some(POLICY));
        assert_eq!(header(&refused, "ratelimit"), Some(r#""per-chat";r=0;t=1"#));
        assert_eq!(header(&refused, "retry-after"), Some("1"));

        // 200 ms later, chat 2 passes and chat 3 is refused by the global
        // limit (2 a second, burst 2: its next slot is 300 ms away, which
        // Retry-After rounds up to 1, never down to 0).
        tokio::time::advance(200 * MS).await;
        let ok = svc.clone().oneshot(request(Some(2), 2)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let refused = svc.clone().oneshot(request(Some(3), 3)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, "ratelimit-policy"), Some(POLICY));
        assert_eq!(header(&refused, "ratelimit"), Some(r#""global";r=0;t=1"#));
        assert_eq!(header(&refused, "retry-after"), Some("1"));

        // No chat id: the client's fault, 400, no rate-limit headers.
        let bad = svc.oneshot(request(None, 1)).await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header(&bad, "ratelimit-policy"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_responses_list_every_limit_when_asked() {
        let svc = server(HttpResponses::new().with_headers_on_success());
        let ok = svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header(&ok, "ratelimit-policy"), Some(POLICY));
        assert_eq!(
            header(&ok, "ratelimit"),
            Some(r#""per-chat";r=0;t=1, "per-group";r=2;t=3, "global";r=1;t=1"#)
        );
        let ok = svc.oneshot(request(Some(2), 1)).await.unwrap();
        assert_eq!(
            header(&ok, "ratelimit"),
            Some(r#""per-chat";r=0;t=1, "per-group";r=1;t=6, "global";r=0;t=1"#)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_headers_after_a_wait_count_from_when_the_response_goes_out() {
        let svc = ServiceBuilder::new()
            .layer(
                CompoundLimitLayer::new(limits(), http_keys)
                    .on_refusal(HttpResponses::new().with_headers_on_success()),
            )
            .service(service_fn(|_: HttpReq| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
            }));
        let start = Instant::now();
        svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
        // Chat 1's second message waits 1 s; then its chat limit is full
        // again 1 s later (2 s after it asked).
        let ok = svc.oneshot(request(Some(1), 1)).await.unwrap();
        assert_eq!(start.elapsed(), 1000 * MS);
        let state = header(&ok, "ratelimit").unwrap();
        assert!(
            state.starts_with(r#""per-chat";r=0;t=1, "per-group";"#),
            "{state}"
        );
    }
}

/// The in-memory backend, answering every compound a poll later, as a remote
/// backend (Redis) does: no decision inside `call`.
#[derive(Clone)]
struct Later(InMemoryBackend<Scope>);

impl tower_freqlimit::FreqLimitBackend for Later {
    type Key = Scope;
    type ReserveFuture =
        <InMemoryBackend<Scope> as tower_freqlimit::FreqLimitBackend>::ReserveFuture;

    fn reserve<Q>(
        &self,
        key: Option<&Q>,
        now: tower_freqlimit::clock::Timestamp,
        params: &FreqLimitParams,
        request: tower_freqlimit::Reserve,
    ) -> Self::ReserveFuture
    where
        Scope: std::borrow::Borrow<Q>,
        Q: tower_freqlimit::backends::BorrowedKey<Scope> + ?Sized,
    {
        self.0.reserve(key, now, params, request)
    }

    fn clear(&self) -> impl Future<Output = Result<(), tower_freqlimit::BackendError>> + Send {
        self.0.clear()
    }

    fn clock(&self) -> tower_freqlimit::clock::Clock {
        self.0.clock()
    }

    fn refund(&self, key: Option<&Scope>, admission: &tower_freqlimit::Admission) -> bool {
        self.0.refund(key, admission)
    }
}

impl CompoundBackend for Later {
    type CompoundFuture = std::pin::Pin<
        Box<dyn Future<Output = Result<tower_freqlimit::CompoundAdmission, FreqLimitError>> + Send>,
    >;

    fn reserve_compound(
        &self,
        parts: &[Part<'_, Scope>],
        now: tower_freqlimit::clock::Timestamp,
        request: tower_freqlimit::Reserve,
    ) -> Self::CompoundFuture {
        let decided = self.0.reserve_compound_sync(parts, now, request).unwrap();
        Box::pin(async move {
            tokio::task::yield_now().await;
            decided
        })
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_backend_that_answers_later_requests_go_through_a_ready_clone() {
    let limits = CompoundLimit::new(Later(InMemoryBackend::new()))
        .limit("per-chat", FreqLimitParams::per_second(1))
        .limit("per-group", FreqLimitParams::per_second(1).with_burst(10))
        .limit("global", FreqLimitParams::per_second(1).with_burst(10));
    let (mock, mut handle) = mock::pair::<Req, &'static str>();
    let mut svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), keys))
        .service(mock);

    // Admitted with no delay, but only once the backend answered: the request
    // goes through a clone, which needs a permit of its own.
    handle.allow(1);
    let first = tokio::spawn(svc.ready().await.unwrap().call((1, 1)));
    tokio::time::sleep(10 * MS).await;
    assert!(!first.is_finished(), "its clone has no permit yet");
    handle.allow(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, (1, 1));
    send.send_response("one");
    assert_eq!(first.await.unwrap().unwrap(), "one");

    // A request that waits for its slot and is dropped gives it back in
    // every limit.
    handle.allow(2);
    let gave_up = tokio::time::timeout(100 * MS, svc.ready().await.unwrap().call((1, 1))).await;
    assert!(gave_up.is_err(), "still waiting at 100 ms");
    let [chat, group, global] = keys(&(1, 1)).unwrap();
    let status = limits
        .status(&[chat.as_ref(), group.as_ref(), global.as_ref()])
        .await
        .unwrap();
    let remaining: Vec<_> = status.parts().iter().map(|p| p.remaining()).collect();
    assert_eq!(remaining, [0, 9, 9], "only the first request is charged");
    assert_eq!(status.delay(), 890 * MS);

    // Refused (reject mode): answered without reaching the inner service.
    let (inner, seen) = recording();
    let strict = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits, keys).no_wait())
        .service(inner);
    let refused = strict.oneshot((1, 1)).await.unwrap_err();
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(rejected_by(&refused), 0);
}

#[cfg(feature = "http")]
mod axum_app {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;
    use tower_freqlimit::backends::memory::InMemoryBackend;
    use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams, KeyNotFound};

    fn get_as(key: Option<&str>) -> Request {
        let mut req = Request::builder().uri("/");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.body(Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_axum_router_takes_the_layer() {
        let limits = CompoundLimit::new(InMemoryBackend::<String>::new())
            .limit("per-key", FreqLimitParams::per_second(1))
            .limit("global", FreqLimitParams::per_second(100).with_burst(100));
        let layer = CompoundLimitLayer::new(limits, |req: &Request| {
            let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
            let key = key.ok_or(KeyNotFound::client_omitted("send x-api-key"))?;
            Ok([Some(key.to_owned()), None])
        })
        .no_wait()
        .http_responses();
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(layer);

        let statuses = [Some("a"), Some("a"), Some("b"), None];
        let mut got = Vec::new();
        for key in statuses {
            got.push(app.clone().oneshot(get_as(key)).await.unwrap().status());
        }
        assert_eq!(
            got,
            [
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::OK,
                StatusCode::BAD_REQUEST
            ]
        );
    }
}
