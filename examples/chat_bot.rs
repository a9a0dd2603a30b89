//! Several limits at once: a chat bot's three limits as one `CompoundLimit`.
//!
//! A chat API allows a bot **one message per second per chat**, **twenty per
//! minute per group** (here with a burst of 3: three at once, then one every
//! 3 s) and **thirty per second** in all. Three groups of five chats each
//! hand the bot four messages per chat at once, in three rounds 30 s apart:
//! 180 messages. Each message waits until all three limits admit it
//! (`acquire`), and the three limits are charged at that one instant.
//!
//! The clock is Tokio's paused clock, which the limiter follows with the
//! `test-util` feature (this crate's examples are built with it), so the
//! minutes of the scenario run in an instant. A message's instant is the one
//! its limits were charged at (the clock before `acquire` plus the admission's
//! delay); the task wakes up to 1 ms later, on Tokio's millisecond timer.
//!
//! The last line checks every window of the timeline: for each limit, each of
//! its keys and each pair of that key's admitted instants `t_i <= t_j`, the
//! window `w = t_j - t_i` holds `count = j - i + 1` messages, and the limit
//! allows `burst + floor(w / T)` in it (`T = period / limit`, exactly). The
//! line shows, per limit, the window where `count - allowed` is the largest
//! (the fullest one on a tie) as `count/allowed`: the limit held if and only
//! if `count <= allowed`.
//!
//! Run with `cargo run --example chat_bot`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{CompoundLimit, FreqLimitError, FreqLimitParams};

/// The limits share one backend, so each limit has keys of its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Scope {
    Chat(u32),
    Group(u32),
}

pub const PER_CHAT: FreqLimitParams = FreqLimitParams::per_second(1);
pub const PER_GROUP: FreqLimitParams = FreqLimitParams::per_minute(20).with_burst(3);
pub const GLOBAL: FreqLimitParams = FreqLimitParams::per_second(30);

pub const GROUPS: u32 = 3;
pub const CHATS_PER_GROUP: u32 = 5;
pub const AT_ONCE: u32 = 4;
pub const ROUNDS: u32 = 3;
pub const ROUND_EVERY: Duration = Duration::from_secs(30);

/// A message: its round, its group and its chat (numbered across groups).
#[derive(Clone, Copy, Debug)]
pub struct Message {
    pub round: u32,
    pub group: u32,
    pub chat: u32,
}

/// Every message, in the order the bot gets them.
#[must_use]
pub fn scenario() -> Vec<Message> {
    let mut messages = Vec::new();
    for round in 0..ROUNDS {
        for chat in 0..GROUPS * CHATS_PER_GROUP {
            for _ in 0..AT_ONCE {
                let group = chat / CHATS_PER_GROUP;
                messages.push(Message { round, group, chat });
            }
        }
    }
    messages
}

/// An admitted message: its instant from the start, and the limit it waited
/// for (`None`: it did not wait).
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub message: Message,
    pub at: Duration,
    pub waited_for: Option<usize>,
}

/// Sends every message (a task each) through `limits`; sorted by instant.
pub async fn send_all(limits: &CompoundLimit<InMemoryBackend<Scope>>) -> Vec<Sent> {
    let start = limits.clock().now();
    let tasks: Vec<_> = scenario()
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
                let asked = limits.clock().now();
                let admitted = limits.acquire(&keys).await?;
                let at = (asked + admitted.delay()).saturating_duration_since(start);
                let waited_for = (!admitted.delay().is_zero()).then(|| admitted.decided_by());
                Ok::<_, FreqLimitError>(Sent {
                    message,
                    at,
                    waited_for,
                })
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(
            task.await
                .expect("no panic")
                .expect("acquire waits, never refuses"),
        );
    }
    sent.sort_by_key(|s| s.at);
    sent
}

/// One limit's worst window over its keys (see the module docs), as
/// `(count, allowed)`. `sent` is sorted by instant.
pub fn worst_window(
    sent: &[Sent],
    key: impl Fn(&Message) -> u32,
    params: &FreqLimitParams,
) -> (u64, u64) {
    let mut by_key: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
    for s in sent {
        by_key.entry(key(&s.message)).or_default().push(s.at);
    }
    let (mut worst, mut rank) = ((0, 0), (i64::MIN, 0));
    for instants in by_key.values() {
        for (i, first) in instants.iter().enumerate() {
            for (j, last) in instants.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                let periods = (*last - *first).as_nanos() * u128::from(params.limit())
                    / params.period().as_nanos();
                let allowed = u64::from(params.burst()) + periods as u64;
                if (count as i64 - allowed as i64, count) > rank {
                    (worst, rank) = ((count, allowed), (count as i64 - allowed as i64, count));
                }
            }
        }
    }
    worst
}

/// `limits held: per-chat c/a, per-group c/a, global c/a`.
#[must_use]
pub fn limits_line(sent: &[Sent]) -> String {
    let chat = worst_window(sent, |m| m.chat, &PER_CHAT);
    let group = worst_window(sent, |m| m.group, &PER_GROUP);
    let global = worst_window(sent, |_| 0, &GLOBAL);
    format!(
        "limits held: per-chat {}/{}, per-group {}/{}, global {}/{}",
        chat.0, chat.1, group.0, group.1, global.0, global.1
    )
}

/// What the example prints: a timeline, then the limits line.
#[must_use]
pub fn report(sent: &[Sent]) -> String {
    let mut out = String::from("messages per group, per 10 s (a digit per 10 s, from 0 s):\n");
    let columns = sent.last().map_or(0, |s| s.at.as_secs() / 10 + 1) as usize;
    for group in 0..GROUPS {
        let mut counts = vec![0; columns];
        for s in sent.iter().filter(|s| s.message.group == group) {
            counts[(s.at.as_secs() / 10) as usize] += 1;
        }
        let row: String = counts
            .iter()
            .map(|&n| char::from_digit(n, 10).unwrap_or('+'))
            .collect();
        out += &format!("  group {group}  {row}\n");
    }
    let mut waits = [0; 3];
    for limit in sent.iter().filter_map(|s| s.waited_for) {
        waits[limit] += 1;
    }
    out += &format!(
        "{} messages in {:.1} s; waits decided by per-chat {}, per-group {}, global {}\n",
        sent.len(),
        sent.last().map_or(0.0, |s| s.at.as_secs_f64()),
        waits[0],
        waits[1],
        waits[2],
    );
    out + &limits_line(sent)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let limits = CompoundLimit::new(InMemoryBackend::<Scope>::new())
        .limit("per-chat", PER_CHAT)
        .limit("per-group", PER_GROUP)
        .limit("global", GLOBAL);
    println!("{}", report(&send_all(&limits).await));
}
