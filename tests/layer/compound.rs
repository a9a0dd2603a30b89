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

pub(crate) const MS: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Chat(u32),
    Group(u32),
}

/// Requests are `(chat, group)`.
type Req = (u32, u32);

/// `per-chat` (keyed by the chat), `per-group` (by the group), `global`.
pub(crate) fn chat_group_global(
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

/// The in-memory backend, answering every compound a poll later, as a remote
/// backend (Redis) does: no decision inside `call`.
#[derive(Clone)]
pub(crate) struct Later(pub(crate) InMemoryBackend<Scope>);

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

/// A handler that says it describes no state: `admitted` would mark the
/// response, and must not be called.
#[derive(Clone)]
struct Silent;

impl tower_freqlimit::layer::compound::OnCompoundRefusal<String, BoxError> for Silent {
    type Error = BoxError;

    const DESCRIBES_STATE: bool = false;

    fn refused<B: CompoundBackend>(
        &self,
        refusal: FreqLimitError,
        _: &CompoundLimit<B>,
        _: &[FreqLimitParams],
    ) -> Result<String, BoxError> {
        Err(Box::new(refusal))
    }

    fn refused_with_state<B: CompoundBackend>(
        &self,
        _: FreqLimitError,
        _: &CompoundLimit<B>,
        _: &[FreqLimitParams],
        _: &tower_freqlimit::CompoundAdmission,
    ) -> Result<String, BoxError> {
        Ok("described".to_owned())
    }

    fn inner_error(&self, error: BoxError) -> BoxError {
        error
    }

    fn admitted<B: CompoundBackend>(
        &self,
        _: String,
        _: &tower_freqlimit::CompoundAdmission,
        _: &CompoundLimit<B>,
        _: &[FreqLimitParams],
    ) -> String {
        "described".to_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_describes_no_state_is_not_asked_to() {
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(10),
        FreqLimitParams::per_second(10),
    );
    let layer = CompoundLimitLayer::new(limits, keys).on_refusal(Silent);
    let inner = service_fn(|_: Req| async { Ok::<_, BoxError>("ok".to_owned()) });
    let svc = ServiceBuilder::new().layer(layer.clone()).service(inner);
    // Forwarded at once, then after a wait of 1 s: neither is described.
    assert_eq!(svc.clone().oneshot((1, 1)).await.unwrap(), "ok");
    assert_eq!(svc.oneshot((1, 1)).await.unwrap(), "ok");
    // A rejection is answered by `refused`, with no state read for it.
    let svc = ServiceBuilder::new().layer(layer.no_wait()).service(inner);
    let refused = svc.oneshot((1, 1)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 0);
}

/// Polls `fut` once, with a waker nobody listens to.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx)
}

/// A response future's `Debug` says where its request is.
#[tokio::test(start_paused = true)]
async fn the_response_future_says_where_the_request_is() {
    let state = |fut: &dyn std::fmt::Debug| {
        let debug = format!("{fut:?}");
        let start = debug.find("state: \"").expect("a state") + 8;
        debug[start..].split('"').next().unwrap().to_owned()
    };
    let limits = chat_group_global(
        FreqLimitParams::per_second(1),
        FreqLimitParams::per_second(10).with_burst(10),
        FreqLimitParams::per_second(100).with_burst(100),
    );
    let inner = service_fn(|req: Req| async move {
        tokio::time::sleep(10 * MS).await;
        Ok::<_, BoxError>(req)
    });
    let mut svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits, keys).max_wait(1500 * MS))
        .service(inner);

    let mut first = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    assert_eq!(state(&first), "forwarded");
    let mut second = Box::pin(svc.ready().await.unwrap().call((1, 1)));
    assert_eq!(state(&second), "sleeping", "chat 1's next slot is 1 s away");
    let third = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(state(&third), "answered", "2 s away: over max_wait");
    assert!(first.as_mut().await.is_ok());

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(poll_once(&mut second).is_pending());
    assert_eq!(
        state(&second),
        "calling",
        "made ready, called, answers in 10 ms"
    );
    assert_eq!(second.await.unwrap(), (1, 1));

    let limits = CompoundLimit::new(Later(InMemoryBackend::new()))
        .limit("per-chat", FreqLimitParams::per_second(1))
        .limit("per-group", FreqLimitParams::per_second(1))
        .limit("global", FreqLimitParams::per_second(1));
    let mut svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits, keys))
        .service(service_fn(|req: Req| async move { Ok::<_, BoxError>(req) }));
    let later = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(state(&later), "reserving");
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

// Tiers: `params_for` gives a request params of its own in some limits.

/// Free users: one call a second each.
const FREE: FreqLimitParams = FreqLimitParams::per_second(1);
/// Paid users: two a second each, both at once.
const PAID: FreqLimitParams = FreqLimitParams::per_second(2).with_burst(2);

/// Tiered requests are `(user, paid)`.
type TierReq = (u32, bool);

fn user_keys(req: &TierReq) -> Result<[Option<Scope>; 2], tower_freqlimit::KeyNotFound> {
    Ok([Some(Scope::Chat(req.0)), None])
}

/// A paid user's per-user limit is `PAID`; the global limit is everyone's.
fn tier(req: &TierReq) -> [Option<FreqLimitParams>; 2] {
    [req.1.then_some(PAID), None]
}

/// `per-user` (free users' params) and `global`, on `backend`.
fn per_user_global<B: CompoundBackend<Key = Scope>>(
    backend: B,
    global: FreqLimitParams,
) -> CompoundLimit<B> {
    CompoundLimit::new(backend)
        .limit("per-user", FREE)
        .limit("global", global)
}

/// What `user`'s keys hold now, read under `per_user` params (a compound on
/// the same backend shares the buckets): each limit's `remaining` and the
/// wait of a unit call.
async fn tier_state<B: CompoundBackend<Key = Scope> + Clone>(
    limits: &CompoundLimit<B>,
    per_user: FreqLimitParams,
    user: u32,
) -> (Vec<u32>, Duration) {
    let view = CompoundLimit::new(limits.backend().clone())
        .limit("per-user", per_user)
        .limit("global", *limits.params(1).unwrap());
    let status = view
        .status(&[Some(&Scope::Chat(user)), None])
        .await
        .unwrap();
    let remaining = status.parts().iter().map(|p| p.remaining()).collect();
    (remaining, status.delay())
}

/// A free and a paid user through one layer (`no_wait`) on `backend`: each
/// gets its tier's per-user limit, both count against the one global limit.
async fn free_and_paid_share_the_global<B>(backend: B)
where
    B: CompoundBackend<Key = Scope> + Clone,
{
    let limits = per_user_global(backend, FreqLimitParams::per_second(10).with_burst(4));
    let svc = ServiceBuilder::new()
        .layer(
            CompoundLimitLayer::new(limits.clone(), user_keys)
                .params_for(tier)
                .no_wait(),
        )
        .service(service_fn(
            |req: TierReq| async move { Ok::<_, BoxError>(req) },
        ));

    // Paid user 1: two at once, the third refused by its per-user limit.
    svc.clone().oneshot((1, true)).await.unwrap();
    svc.clone().oneshot((1, true)).await.unwrap();
    let refused = svc.clone().oneshot((1, true)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 0);
    // Free user 2: one, the second refused by its per-user limit.
    svc.clone().oneshot((2, false)).await.unwrap();
    let refused = svc.clone().oneshot((2, false)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 0);
    // Three admitted calls used 3 of the global 4; paid user 3 takes the last
    // and its second call, within its tier, is refused by the global limit.
    assert_eq!(tier_state(&limits, FREE, 9).await.0, [1, 1]);
    svc.clone().oneshot((3, true)).await.unwrap();
    let refused = svc.oneshot((3, true)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 1);
    // That refusal took nothing from user 3's paid bucket.
    assert_eq!(tier_state(&limits, PAID, 3).await.0, [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_free_and_a_paid_user_get_their_tiers_per_user_limit_and_share_the_global() {
    free_and_paid_share_the_global(InMemoryBackend::new()).await;
}

#[tokio::test(start_paused = true)]
async fn tiers_hold_with_a_backend_that_answers_later() {
    free_and_paid_share_the_global(Later(InMemoryBackend::new())).await;
}

/// A tiered request refused (by its tier's limit, or by the global limit)
/// consumes nothing in any limit, on `backend`.
async fn a_tiered_refusal_consumes_nothing<B>(backend: B)
where
    B: CompoundBackend<Key = Scope> + Clone,
{
    let limits = per_user_global(backend, FreqLimitParams::per_second(10).with_burst(5));
    let svc = ServiceBuilder::new()
        .layer(
            CompoundLimitLayer::new(limits.clone(), user_keys)
                .params_for(tier)
                .max_wait(50 * MS),
        )
        .service(service_fn(
            |req: TierReq| async move { Ok::<_, BoxError>(req) },
        ));

    svc.clone().oneshot((1, true)).await.unwrap();
    svc.clone().oneshot((1, true)).await.unwrap();
    let before = tier_state(&limits, PAID, 1).await;
    assert_eq!(before, (vec![0, 3], 500 * MS));
    // The third would wait 500 ms for the paid per-user slot: refused by it,
    // charged nowhere.
    let refused = svc.clone().oneshot((1, true)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 0);
    assert_eq!(tier_state(&limits, PAID, 1).await, before);

    // Once the global limit is used up (3 free users), a paid user's call is
    // refused by it, and its own bucket keeps its whole burst.
    for user in 10..13 {
        svc.clone().oneshot((user, false)).await.unwrap();
    }
    let refused = svc.clone().oneshot((2, true)).await.unwrap_err();
    assert_eq!(rejected_by(&refused), 1);
    assert_eq!(tier_state(&limits, PAID, 2).await.0, [2, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_tiered_request_refused_consumes_nothing_in_any_limit() {
    a_tiered_refusal_consumes_nothing(InMemoryBackend::new()).await;
    a_tiered_refusal_consumes_nothing(Later(InMemoryBackend::new())).await;
}

/// A paid user's request dropped while it waits gives its tier's slot back
/// exactly, on `backend`.
async fn a_dropped_tiered_wait_refunds_exactly<B>(backend: B)
where
    B: CompoundBackend<Key = Scope> + Clone,
{
    let limits = per_user_global(backend, FreqLimitParams::per_second(1).with_burst(100));
    let svc = ServiceBuilder::new()
        .layer(CompoundLimitLayer::new(limits.clone(), user_keys).params_for(tier))
        .service(service_fn(
            |req: TierReq| async move { Ok::<_, BoxError>(req) },
        ));
    let start = Instant::now();

    // The paid burst of 2 at once; the third waits 500 ms (its tier's
    // interval, not the free 1 s) and is given up after 100 ms.
    svc.clone().oneshot((1, true)).await.unwrap();
    svc.clone().oneshot((1, true)).await.unwrap();
    let gave_up = tokio::time::timeout(100 * MS, svc.clone().oneshot((1, true))).await;
    assert!(gave_up.is_err(), "still waiting at 100 ms");
    // Its 500 ms span came back in both limits: a unit call waits 400 ms
    // more under the paid params, and the global limit has 98 left.
    assert_eq!(tier_state(&limits, PAID, 1).await, (vec![0, 98], 400 * MS));
    // The next paid call runs at 500 ms, as if the dropped one never was.
    svc.clone().oneshot((1, true)).await.unwrap();
    assert_eq!(start.elapsed(), 500 * MS);
    assert_eq!(tier_state(&limits, PAID, 1).await, (vec![0, 97], 500 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_tiered_request_gives_its_slot_back_exactly() {
    a_dropped_tiered_wait_refunds_exactly(InMemoryBackend::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_tiered_request_waiting_on_a_backend_that_answers_later_refunds_exactly() {
    a_dropped_tiered_wait_refunds_exactly(Later(InMemoryBackend::new())).await;
}
