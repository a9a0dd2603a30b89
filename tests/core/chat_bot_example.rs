//! `examples/chat_bot.rs` (included as a module, so the test runs the
//! example's own scenario and window check): one `CompoundLimit` holds every
//! limit in every window; the window check flags an excess; and (ignored: it
//! fails today, see the test) the compound admits, by every instant, at least
//! as many messages as three `FreqLimit`s awaited one after the other.

#[allow(dead_code)]
#[path = "../../examples/chat_bot.rs"]
mod chat_bot;

use std::time::Duration;

use chat_bot::{GLOBAL, PER_CHAT, PER_GROUP, ROUND_EVERY, Scope, Sent};
use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{CompoundLimit, FreqLimit, FreqLimitError};

fn chat_bot_limits() -> CompoundLimit<InMemoryBackend<Scope>> {
    CompoundLimit::new(InMemoryBackend::<Scope>::new())
        .limit("per-chat", PER_CHAT)
        .limit("per-group", PER_GROUP)
        .limit("global", GLOBAL)
}

/// The example's scenario through three limiters, each awaited after the
/// other (chat, group, global); a message goes when the last admits it.
async fn send_stacked() -> Vec<Sent> {
    let per_chat = FreqLimit::new(PER_CHAT, InMemoryBackend::<u32>::new());
    let per_group = FreqLimit::new(PER_GROUP, InMemoryBackend::<u32>::new());
    let global = FreqLimit::new(GLOBAL, InMemoryBackend::global());
    let start = global.clock().now();
    let tasks: Vec<_> = chat_bot::scenario()
        .into_iter()
        .map(|message| {
            let (per_chat, per_group, global) =
                (per_chat.clone(), per_group.clone(), global.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(Instant::now() + ROUND_EVERY * message.round).await;
                per_chat.acquire(&message.chat).await.unwrap();
                per_group.acquire(&message.group).await.unwrap();
                let asked = global.clock().now();
                let admitted = global.acquire(None).await.unwrap();
                let at = (asked + admitted.delay()).saturating_duration_since(start);
                Sent {
                    message,
                    at,
                    waited_for: None,
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    sent.sort_by_key(|s| s.at);
    sent
}

/// The example's scenario through the same compound, not waiting inside it:
/// `try_acquire`, and on a refusal (which consumes nothing) sleep its
/// `retry_after` and try again.
async fn send_retrying(limits: &CompoundLimit<InMemoryBackend<Scope>>) -> Vec<Sent> {
    let start = limits.clock().now();
    let tasks: Vec<_> = chat_bot::scenario()
        .into_iter()
        .map(|message| {
            let limits = limits.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(Instant::now() + ROUND_EVERY * message.round).await;
                let keys = [
                    Some(&Scope::Chat(message.chat)),
                    Some(&Scope::Group(message.group)),
                    None,
                ];
                loop {
                    match limits.try_acquire(&keys).await {
                        Ok(_) => break,
                        Err(FreqLimitError::Rejected(refused)) => {
                            let wake = limits.clock().now() + refused.retry_after();
                            tokio::time::sleep_until(wake.to_instant()).await;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
                let at = limits.clock().now().saturating_duration_since(start);
                Sent {
                    message,
                    at,
                    waited_for: None,
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    sent.sort_by_key(|s| s.at);
    sent
}

/// `(count, allowed)` of each limit in a `limits held: ...` line.
fn parse_limits_line(line: &str) -> Vec<(String, u64, u64)> {
    let rest = line.strip_prefix("limits held: ").expect("the limits line");
    rest.split(", ")
        .map(|part| {
            let (name, figures) = part.split_once(' ').unwrap();
            let (count, allowed) = figures.split_once('/').unwrap();
            (
                name.to_owned(),
                count.parse().unwrap(),
                allowed.parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn chat_bot_example_holds_every_limit() {
    let sent = chat_bot::send_all(&chat_bot_limits()).await;
    assert_eq!(
        sent.len(),
        chat_bot::scenario().len(),
        "every message is sent"
    );
    let report = chat_bot::report(&sent);
    let last = report.lines().last().unwrap();
    let limits = parse_limits_line(last);
    let names: Vec<_> = limits.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names, ["per-chat", "per-group", "global"], "{last}");
    for (name, count, allowed) in &limits {
        assert!(count <= allowed, "{name} exceeded: {last}");
    }
    // The worst windows are full ones: the scenario pushes every limit to its bound.
    assert!(
        limits.iter().all(|(_, count, allowed)| count == allowed),
        "{last}"
    );
}

/// The window check itself: it flags one message too many, and passes the
/// exact GCRA schedule.
#[test]
fn window_check_flags_an_excess() {
    let message = chat_bot::Message {
        round: 0,
        group: 0,
        chat: 0,
    };
    let at = |ms| Sent {
        message,
        at: Duration::from_millis(ms),
        waited_for: None,
    };
    // Per chat, 1/s: 0 s and 1 s are fine, a third at 1.999 s is one too many.
    assert_eq!(
        chat_bot::worst_window(&[at(0), at(1000)], |m| m.chat, &PER_CHAT),
        (2, 2)
    );
    assert_eq!(
        chat_bot::worst_window(&[at(0), at(1000), at(1999)], |m| m.chat, &PER_CHAT),
        (3, 2)
    );
    // Per group, 20/min with a burst of 3: 3 at once, a fourth 3 s later.
    let burst = [at(0), at(0), at(0), at(3000)];
    assert_eq!(
        chat_bot::worst_window(&burst, |m| m.group, &PER_GROUP),
        (4, 4)
    );
    let early = [at(0), at(0), at(0), at(2999)];
    assert_eq!(
        chat_bot::worst_window(&early, |m| m.group, &PER_GROUP),
        (4, 3)
    );
}

/// Counts of messages sent by each whole second, compound vs stacked.
///
/// Fails today: in wait mode a compound charges every limit at its slot, so
/// a message that waits for its chat or group pushes the global bucket's TAT
/// to that slot, and every later message (any chat, any group) waits behind
/// it. The 180 messages then take 459 s through the compound, 171 s through
/// stacked limiters (which exceed the per-group limit by one message: 60 in a
/// window that allows 59) or through the compound with `try_acquire` retried
/// after each refusal's `retry_after` (every limit held).
#[ignore = "compound head-of-line blocking through the global bucket (459 s vs 171 s stacked)"]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn chat_bot_compound_admits_no_fewer_than_stacked_limiters() {
    let compound = chat_bot::send_all(&chat_bot_limits()).await;
    let stacked = send_stacked().await;
    eprintln!("compound: {}", chat_bot::report(&compound));
    eprintln!("stacked:  {}", chat_bot::report(&stacked));
    eprintln!(
        "retrying: {}",
        chat_bot::report(&send_retrying(&chat_bot_limits()).await)
    );
    let end = compound
        .last()
        .unwrap()
        .at
        .max(stacked.last().unwrap().at)
        .as_secs()
        + 1;
    for second in 0..=end {
        let by = |sent: &[Sent]| sent.iter().filter(|s| s.at.as_secs() < second).count();
        assert!(
            by(&compound) >= by(&stacked),
            "by {second} s the compound sent {} messages, the stacked limiters {}",
            by(&compound),
            by(&stacked)
        );
    }
}
