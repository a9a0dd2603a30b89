//! `examples/chat_bot.rs` (included as a module, so the test runs the
//! example's own scenario and window check): one `CompoundLimit` holds every
//! limit in every window; the window check flags an excess; against three
//! `FreqLimit`s awaited one after the other, the compound is done no later
//! when waiting, and admits at least as many when refusing.

#[allow(dead_code)]
#[path = "../../examples/chat_bot.rs"]
mod chat_bot;

use std::time::Duration;

use chat_bot::{GLOBAL, PER_CHAT, PER_GROUP, ROUND_EVERY, Scope, Sent};
use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{CompoundLimit, FreqLimit};

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

/// Waiting, stacked limiters and the compound send the same messages; the
/// compound holds every limit and is done no later. (By a given instant the
/// two may differ either way: the compound books every limit for a message
/// when it arrives, in arrival order, while stacked limiters book the group
/// only once the chat lets the message through, so a chat's fourth message
/// can hold a group slot a later chat's first message would have used.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_the_compound_is_done_no_later_than_stacked_limiters_and_holds_every_limit() {
    let compound = chat_bot::send_all(&chat_bot_limits()).await;
    let stacked = send_stacked().await;
    assert_eq!(compound.len(), stacked.len());
    let (done, stacked_done) = (compound.last().unwrap().at, stacked.last().unwrap().at);
    assert!(
        done <= stacked_done,
        "compound done at {done:?}, stacked at {stacked_done:?}"
    );
    let held = parse_limits_line(chat_bot::report(&compound).lines().last().unwrap());
    assert!(
        held.iter().all(|(_, count, allowed)| count <= allowed),
        "{held:?}"
    );
}

/// Every message tries once, refusing instead of waiting: stacked limiters
/// lose capacity (a chat's or a group's slot is taken when a later limit
/// refuses), the compound does not, so it admits at least as many, and its
/// admissions hold every limit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refusing_the_compound_admits_at_least_as_many_as_stacked_limiters() {
    let limits = chat_bot_limits();
    let per_chat = FreqLimit::new(PER_CHAT, InMemoryBackend::<u32>::new());
    let per_group = FreqLimit::new(PER_GROUP, InMemoryBackend::<u32>::new());
    let global = FreqLimit::new(GLOBAL, InMemoryBackend::global());
    let start = limits.clock().now();
    let (mut compound, mut stacked) = (Vec::new(), 0);
    // The scenario, one message every 10 ms, round after round.
    for (i, message) in chat_bot::scenario().into_iter().enumerate() {
        tokio::time::sleep_until(start.to_instant() + Duration::from_millis(10 * i as u64)).await;
        let keys = [
            Some(&Scope::Chat(message.chat)),
            Some(&Scope::Group(message.group)),
            None,
        ];
        if limits.try_acquire(&keys).await.is_ok() {
            let at = limits.clock().now().saturating_duration_since(start);
            compound.push(Sent {
                message,
                at,
                waited_for: None,
            });
        }
        if per_chat.try_acquire(&message.chat).await.is_ok()
            && per_group.try_acquire(&message.group).await.is_ok()
            && global.try_acquire(None).await.is_ok()
        {
            stacked += 1;
        }
    }
    assert!(
        compound.len() >= stacked,
        "compound {}, stacked {stacked}",
        compound.len()
    );
    let held = parse_limits_line(chat_bot::report(&compound).lines().last().unwrap());
    assert!(
        held.iter().all(|(_, count, allowed)| count <= allowed),
        "{held:?}"
    );
}
