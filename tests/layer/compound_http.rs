//! `CompoundLimitLayer` over HTTP: `429`s and admitted responses whose
//! `RateLimit-Policy` / `RateLimit` headers name each limit, and an axum
//! `Router` with the layer.
#![cfg(feature = "http")]

use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};

use axum::http::{Request, Response, StatusCode};
use tower_freqlimit::http::HttpResponses;

use crate::compound::{Later, MS, Scope, chat_group_global};

type HttpReq = Request<String>;

/// Chat and group from the `x-chat` and `x-group` headers; no chat: 400.
fn http_keys(req: &HttpReq) -> Result<[Option<Scope>; 3], tower_freqlimit::KeyNotFound> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let chat = header("x-chat").ok_or(tower_freqlimit::KeyNotFound::client_omitted("no x-chat"))?;
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
) -> impl Service<HttpReq, Response = Response<String>, Error = std::convert::Infallible> + Clone {
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

    // Chat 1 again: its chat limit refuses; retry after 1 s. RateLimit
    // lists every limit's state, read at the refusal (in memory): the
    // refusal took nothing from the group's or the global limit.
    let refused = svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), Some(POLICY));
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(r#""per-chat";r=0;t=1, "per-group";r=2;t=3, "global";r=1;t=1"#)
    );
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
    // Chat 3 and its group are new: full (t=0).
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(r#""per-chat";r=1;t=0, "per-group";r=3;t=0, "global";r=0;t=1"#)
    );
    assert_eq!(header(&refused, "retry-after"), Some("1"));

    // No chat id: the client's fault, 400, no rate-limit headers.
    let bad = svc.oneshot(request(None, 1)).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&bad, "ratelimit-policy"), None);
}

/// A backend that answers a poll later (as Redis does) cannot read every
/// limit on the spot: its `429` names the refusing limit only.
#[tokio::test(start_paused = true)]
async fn a_429_from_a_backend_that_answers_later_names_the_refusing_limit() {
    let own = limits();
    let limits = CompoundLimit::new(Later(InMemoryBackend::new()))
        .limit("per-chat", *own.params(0).unwrap())
        .limit("per-group", *own.params(1).unwrap())
        .limit("global", *own.params(2).unwrap());
    let svc = ServiceBuilder::new()
        .layer(
            CompoundLimitLayer::new(limits, http_keys)
                .no_wait()
                .on_refusal(HttpResponses::new()),
        )
        .service(service_fn(|_: HttpReq| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        }));
    svc.clone().oneshot(request(Some(1), 1)).await.unwrap();
    let refused = svc.oneshot(request(Some(1), 1)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), Some(POLICY));
    assert_eq!(header(&refused, "ratelimit"), Some(r#""per-chat";r=0;t=1"#));
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

/// A paid chat (header `x-paid`) gets 2 a second in its per-chat limit,
/// a free one 1; the group and global limits are everyone's.
fn tiered_server()
-> impl Service<HttpReq, Response = Response<String>, Error = std::convert::Infallible> + Clone {
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_minute(60).with_burst(10),
        FreqLimitParams::per_second(100).with_burst(100),
    );
    let paid = FreqLimitParams::per_second(2).with_burst(2);
    ServiceBuilder::new()
        .layer(
            CompoundLimitLayer::new(limits, http_keys)
                .params_for(move |req: &HttpReq| {
                    [req.headers().get("x-paid").map(|_| paid), None, None]
                })
                .no_wait()
                .on_refusal(HttpResponses::new().with_headers_on_success()),
        )
        .service(service_fn(|_: HttpReq| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        }))
}

fn paid(chat: u32, group: u32) -> HttpReq {
    let mut req = request(Some(chat), group);
    req.headers_mut().insert("x-paid", "1".parse().unwrap());
    req
}

#[tokio::test(start_paused = true)]
async fn the_headers_describe_the_tier_the_request_was_decided_with() {
    const PAID_POLICY: &str = r#""per-chat";q=2;w=1, "per-group";q=10;w=10, "global";q=100;w=1"#;
    const FREE_POLICY: &str = r#""per-chat";q=1;w=1, "per-group";q=10;w=10, "global";q=100;w=1"#;
    let svc = tiered_server();

    // A paid chat: its tier's per-chat limit in RateLimit-Policy, and its
    // state under it in RateLimit.
    let ok = svc.clone().oneshot(paid(1, 1)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok, "ratelimit-policy"), Some(PAID_POLICY));
    assert_eq!(
        header(&ok, "ratelimit"),
        Some(r#""per-chat";r=1;t=1, "per-group";r=9;t=1, "global";r=99;t=1"#)
    );
    svc.clone().oneshot(paid(1, 1)).await.unwrap();
    let refused = svc.clone().oneshot(paid(1, 1)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), Some(PAID_POLICY));
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(r#""per-chat";r=0;t=1, "per-group";r=8;t=2, "global";r=98;t=1"#)
    );

    // A free chat in the same layer: the compound's own params.
    let ok = svc.clone().oneshot(request(Some(2), 2)).await.unwrap();
    assert_eq!(header(&ok, "ratelimit-policy"), Some(FREE_POLICY));
    let refused = svc.oneshot(request(Some(2), 2)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), Some(FREE_POLICY));
}

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
