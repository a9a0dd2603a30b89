//! Pacing *outbound* calls: an HTTP client that respects a messaging API's limits.
//!
//! This is the use case `aiofreqlimit` was written for. A chat API allows a bot
//! **one message per chat per second** and **twenty messages per group per
//! minute**; going faster gets you `429`s, or banned. Instead of sleeping by
//! hand, wrap the HTTP client in two rate-limit layers that *wait* for a slot
//! (no `max_wait`), so every call goes out as early as both limits allow:
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(per group, keyed by the group id in the URI)   // outer
//!     .layer(per chat,  keyed by the chat id in the URI)    // inner
//!     .service(hyper_util::client::legacy::Client)
//! ```
//!
//! A request first waits for its group's slot, *then* for its chat's slot, then
//! is sent. The inner (per-chat) limit therefore holds exactly for the times
//! requests go out; the outer (per-group) one holds for the times requests are
//! let through to the chat limit, so a request that then still waits for its
//! chat goes out a little later than its group slot (never earlier). This is the
//! semantics of nesting `async with limit.acquire(group)` and
//! `async with limit.acquire(chat)` in `aiofreqlimit`.
//!
//! The "API" is a local axum server (`POST /groups/{group}/chats/{chat}/messages`)
//! started on a free loopback port. To keep the demo short, the per-group limit
//! runs four times faster than the real `FreqLimitParams::per_minute(20)`
//! (20 per 15 s: one every 750 ms) with a burst of 4; the per-chat limit is the
//! real one. Fifteen messages are handed to the client at once:
//!
//! * group `g1`: six to chat `a` and six to chat `b`, interleaved. First the
//!   per-chat limit bites (both chats at 0, 1, 2, 3 s: the group's burst lets
//!   them through), then the per-group limit does (one every 750 ms or so).
//! * group `g2`: three to chat `c`. Another group, another bucket: only the
//!   per-chat limit applies (0, 1, 2 s).
//!
//! The times printed are when each request left the limiters for the client,
//! stamped by a `map_future` under the two layers (for the printout only; the
//! layers work the same straight on `Client`).
//!
//! Run with `cargo run --example outbound_client`; it takes about 6 seconds.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::layer::FreqLimitLayer;

/// One message per chat per second (the real limit).
const PER_CHAT: FreqLimitParams = FreqLimitParams::per_second(1);
/// Twenty messages per group per minute: the real limit...
const PER_GROUP_REAL: FreqLimitParams = FreqLimitParams::per_minute(20);
/// ...and the demo's: the same twenty, per 15 s instead of 60, four at once.
const PER_GROUP_DEMO: FreqLimitParams = FreqLimitParams::new(20, Duration::from_secs(15), 4);

/// The path segment after `name` in a `/groups/{group}/chats/{chat}/...` URI.
fn segment_after(req: &Request<Full<Bytes>>, name: &str) -> Option<String> {
    let mut segments = req.uri().path().split('/');
    segments.find(|segment| *segment == name)?;
    segments
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

fn group_id(req: &Request<Full<Bytes>>) -> Option<String> {
    segment_after(req, "groups")
}

fn chat_id(req: &Request<Full<Bytes>>) -> Option<String> {
    segment_after(req, "chats")
}

/// The fake messaging API.
async fn send_message(Path((group, chat)): Path<(String, String)>, body: String) -> String {
    format!("delivered {body:?} to {group}/{chat}")
}

/// When a request was handed to the client (a response extension).
#[derive(Clone, Copy)]
struct SentAt(Duration);

/// When the last message of each chat and of each group went out.
#[derive(Default)]
struct Timeline {
    last_in_chat: HashMap<String, Duration>,
    last_in_group: HashMap<String, Duration>,
    smallest_chat_gap: Option<Duration>,
}

impl Timeline {
    /// Records a message sent at `at`; returns the gaps since the previous one in
    /// its chat and in its group.
    fn record(
        &mut self,
        group: &str,
        chat: &str,
        at: Duration,
    ) -> (Option<Duration>, Option<Duration>) {
        let chat_gap = self
            .last_in_chat
            .insert(chat.to_owned(), at)
            .map(|previous| at.saturating_sub(previous));
        if let Some(gap) = chat_gap {
            self.smallest_chat_gap = Some(self.smallest_chat_gap.map_or(gap, |g| g.min(gap)));
        }
        let group_gap = self
            .last_in_group
            .insert(group.to_owned(), at)
            .map(|previous| at.saturating_sub(previous));
        (chat_gap, group_gap)
    }
}

/// Milliseconds, to the nearest (the scheduler adds microseconds of jitter).
fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

fn gap(gap: Option<Duration>) -> String {
    gap.map_or_else(|| "first".to_owned(), |gap| format!("+{} ms", ms(gap)))
}

// One thread: tasks are polled in the order they were spawned, so two messages
// of one chat that clear the group limit at the same instant keep their order.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // The API, on a free loopback port.
    let api = Router::new().route("/groups/{group}/chats/{chat}/messages", post(send_message));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api).await });

    // The client: hyper-util's legacy `Client` is a `tower::Service` (and `Clone`,
    // as the rate-limit service requires of its inner service).
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let start = Instant::now();
    let per_group =
        FreqLimitLayer::new(PER_GROUP_DEMO, InMemoryBackend::<String>::new()).key(group_id);
    let per_chat = FreqLimitLayer::new(PER_CHAT, InMemoryBackend::<String>::new()).key(chat_id);
    let mut api_client = ServiceBuilder::new()
        .layer(per_group)
        .layer(per_chat)
        // For the printout: stamp when each request leaves the limiters.
        .map_future(move |sending: legacy::ResponseFuture| {
            let sent_at = SentAt(start.elapsed());
            async move {
                let mut response = sending.await?;
                response.extensions_mut().insert(sent_at);
                Ok::<_, legacy::Error>(response)
            }
        })
        .service(client);

    println!("API at http://{addr}");
    println!(
        "per chat:  {} per {:?} (one every {:?})",
        PER_CHAT.limit(),
        PER_CHAT.period(),
        PER_CHAT.interval()
    );
    println!(
        "per group: {} per {:?}, burst {} (one every {:?}); the real limit is {} per {:?}\n",
        PER_GROUP_DEMO.limit(),
        PER_GROUP_DEMO.period(),
        PER_GROUP_DEMO.burst(),
        PER_GROUP_DEMO.interval(),
        PER_GROUP_REAL.limit(),
        PER_GROUP_REAL.period(),
    );

    // Interleaved: a1 b1 c1 a2 b2 c2 a3 b3 c3 a4 b4 a5 b5 a6 b6.
    let mut messages = Vec::new();
    for n in 1..=6 {
        messages.push(("g1", "a", n));
        messages.push(("g1", "b", n));
        if n <= 3 {
            messages.push(("g2", "c", n));
        }
    }

    let count = messages.len();
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let mut sending = JoinSet::new();
    println!("  sent at  group chat msg   status   since last in chat / in group");
    for (group, chat, n) in messages {
        let request = Request::post(format!(
            "http://{addr}/groups/{group}/chats/{chat}/messages"
        ))
        .body(Full::from(format!("message {n}")))?;
        // `call` reserves the group slot right away, in this order; the returned
        // future waits for it, then for the chat slot, then sends.
        let response = api_client.ready().await?.call(request);
        let timeline = Arc::clone(&timeline);
        sending.spawn(async move {
            let response = response.await?;
            let at = response
                .extensions()
                .get::<SentAt>()
                .map_or(Duration::ZERO, |s| s.0);
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let (chat_gap, group_gap) = timeline
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(group, chat, at);
            println!(
                "  {:>5} ms  {group}   {chat}    #{n}    {status}   {:>8} / {:>8}   {}",
                ms(at),
                gap(chat_gap),
                gap(group_gap),
                String::from_utf8_lossy(&body),
            );
            Ok::<_, Box<dyn Error + Send + Sync>>(())
        });
    }
    while let Some(sent) = sending.join_next().await {
        sent??;
    }
    let timeline = timeline.lock().unwrap_or_else(PoisonError::into_inner);
    println!(
        "\n{count} messages in {:.1} s; the smallest gap between two messages of one chat: {} ms",
        start.elapsed().as_secs_f64(),
        timeline
            .smallest_chat_gap
            .map_or_else(|| "-".to_owned(), ms),
    );
    println!(
        "(a chat's slots are exactly 1000 ms apart; a timer that fires a few ms late\n \
         for one message shortens the measured gap to the next by as much)"
    );
    Ok(())
}
