//! The task that sends a hot key's calls: a lease when demand is hot, else
//! the queue in batches, until nothing is left to send.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{Inner, KeyState, MAX_BATCH, Queued, lease_rejection, lock};
use crate::backends::redis::conn::{Arg, classify};
use crate::backends::redis::lease::{Lease, Leases, Take};
use crate::backends::redis::policy::RedisClock;
use crate::backends::redis::script::{Decision, MAX_MICROS, Micros, parse_batch, parse_lease};
use crate::backends::redis::stats::bump;
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
use crate::params::FreqLimitParams;

/// What the driver does next.
enum Work {
    Lease(Leases, FreqLimitParams, Timestamp),
    /// The entries, and now on the callers' clock when they are sent.
    Batch(Vec<Queued>, Timestamp),
    Done,
}

impl Inner {
    /// Sends `key`'s calls until its queue is empty and no lease is wanted.
    /// One driver per key at a time (`KeyState::driving`), so each call
    /// finds the previous one's result on the server.
    pub(super) async fn drive(self: Arc<Self>, key: Box<[u8]>, state: Arc<Mutex<KeyState>>) {
        let Some(hot) = self.hot.as_ref() else {
            return;
        };
        loop {
            let work = {
                let mut s = lock(&state);
                let now = self.driver_now(s.seen);
                if let (Some(settings), Some(params)) = (hot.leases(), s.figures)
                    && s.wants_lease(now.as_nanos())
                {
                    Work::Lease(*settings, params, now)
                } else if s.queue.is_empty() {
                    s.driving = false;
                    if hot.leases().is_none() {
                        // Batching alone keeps nothing between calls.
                        drop(s);
                        hot.keys.remove_if(&key, |_, v| {
                            Arc::ptr_eq(v, &state) && lock(v).queue.is_empty() && !lock(v).driving
                        });
                    }
                    Work::Done
                } else {
                    let n = s.queue.len().min(MAX_BATCH);
                    Work::Batch(s.queue.drain(..n).collect(), now)
                }
            };
            match work {
                Work::Done => return,
                Work::Lease(settings, params, now) => {
                    self.take_lease(&key, &state, &settings, params, now).await;
                }
                Work::Batch(entries, now) => {
                    let sent = Instant::now();
                    self.send_batch(&key, entries).await;
                    let mut s = lock(&state);
                    s.rtt = self.call_time(now, sent, s.seen);
                }
            }
        }
    }

    /// Now on the callers' clock, from the last request's time: exactly that
    /// on [`RedisClock::LimiterTimestamp`] (whose times the caller chose),
    /// else plus the time since.
    pub(super) fn driver_now(&self, (seen, at): (Timestamp, Instant)) -> Timestamp {
        match self.clock {
            RedisClock::LimiterTimestamp => seen,
            RedisClock::Server | RedisClock::HostWallClock => seen + at.elapsed(),
        }
    }

    /// How long a call sent at `now` (the callers' clock) and `sent` (the
    /// host's) took, as of the last request `seen`: on the host's clock, or
    /// on [`RedisClock::LimiterTimestamp`] the callers' time that passed
    /// meanwhile. That is what the round-trip rules weigh against `T`: how
    /// far the callers' time, in which leased slots open and close, moved on
    /// while the call was out. A call that took long on a loaded host while
    /// the callers' (simulated, replayed) time stood still lost nothing.
    fn call_time(&self, now: Timestamp, sent: Instant, seen: (Timestamp, Instant)) -> u64 {
        match self.clock {
            RedisClock::LimiterTimestamp => seen.0.as_nanos().saturating_sub(now.as_nanos()),
            RedisClock::Server | RedisClock::HostWallClock => {
                crate::nanos::from_duration(sent.elapsed())
            }
        }
    }

    /// One lease call; then the queue is served from the leases where it can.
    async fn take_lease(
        self: &Arc<Self>,
        key: &[u8],
        state: &Mutex<KeyState>,
        settings: &Leases,
        params: FreqLimitParams,
        now: Timestamp,
    ) {
        let Some(hot) = self.hot.as_ref() else {
            return;
        };
        let m = Micros::new(&params, &Reserve::new());
        let (slots, after) = {
            let s = lock(state);
            let after = s.leases.back().map_or(0, Lease::end);
            (s.demand.lease_size(settings.slots(m.interval)), after)
        };
        let horizon = (crate::nanos::from_duration(settings.horizon) / 1_000).min(MAX_MICROS);
        let args = [
            Arg::Num(m.interval),
            Arg::Num(m.tau),
            Arg::Num(u64::from(slots)),
            Arg::Num(horizon),
            self.now_arg(now),
            Arg::Num(self.ttl_slack_ms()),
            Arg::Num(after),
        ];
        bump(&self.counters.script_calls, 1);
        let sent = Instant::now();
        let reply = self.eval(&hot.lease, &[key], &args).await;
        // The server read its clock between sending and the reply.
        let early = now.as_nanos();
        let late = match self.clock {
            RedisClock::LimiterTimestamp => early,
            RedisClock::Server | RedisClock::HostWallClock => {
                early.saturating_add(crate::nanos::from_duration(sent.elapsed()))
            }
        };
        let taken = match reply {
            Ok(Ok(value)) => parse_lease(&value),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(self.timed_out("the lease may or may not have been taken")),
        };
        let mut s = lock(state);
        s.rtt = self.call_time(now, sent, s.seen);
        match taken {
            Ok((count, base, server_now)) if count > 0 => {
                bump(&self.counters.leases, 1);
                bump(&self.counters.leased_slots, u64::from(count));
                let lease = Lease {
                    base,
                    count,
                    interval: m.interval,
                    tau: m.tau,
                    burst: params.burst(),
                    server_now,
                    early,
                    late,
                    next: 0,
                };
                if (late - early) / 500 >= m.interval {
                    // The server's clock is known here only within half an
                    // interval or worse (a round trip of T / 2 or more): a
                    // slot would rarely lie surely in its interval. Give
                    // this lease back (not the one in use: its own call
                    // measured it, and given back its rest would be a hole
                    // that passes unused unless some process calls Redis
                    // then), and let batches serve the key for a lease's
                    // length: each such try wastes the slots that pass
                    // during its round trips.
                    self.give_back_lease(key, lease, late);
                    let length = crate::nanos::from_duration(settings.length);
                    s.pause_until =
                        late.saturating_add(length.max(settings.window_nanos(m.interval)));
                } else {
                    s.leases.push_back(lease);
                }
            }
            Ok((_, base, server_now)) => {
                // Leased too far ahead by others: ask again when their
                // leases have run down to the horizon.
                let wait = base
                    .saturating_sub(m.tau)
                    .saturating_sub(server_now)
                    .saturating_sub(horizon)
                    .max(m.interval);
                s.pause_until = late.saturating_add(wait.saturating_mul(1_000));
            }
            Err(err) => {
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    kind = ?err.kind(),
                    error = %err,
                    "a lease could not be taken; reservations go to Redis one batch at a time"
                );
                s.pause_until = late.saturating_add(settings.window_nanos(m.interval));
            }
        }
        // Serve what queued meanwhile, at the time the reply came.
        let queued = std::mem::take(&mut s.queue);
        for entry in queued {
            match serve_queued(&mut s, &entry, late, self) {
                Some(result) => self.deliver(key, entry.reply, result),
                None => s.queue.push_back(entry),
            }
        }
    }

    /// One script call deciding `entries` in order (`reserve.lua` for one).
    async fn send_batch(self: &Arc<Self>, key: &[u8], mut entries: Vec<Queued>) {
        let Some(hot) = self.hot.as_ref() else {
            return;
        };
        if entries.len() == 1
            && let Some(e) = entries.pop()
        {
            let inner = Arc::clone(self);
            let result = inner
                .reserve(key.to_vec(), e.now, e.params, e.request, e.m, e.asked)
                .await;
            self.deliver(key, e.reply, result);
            return;
        }
        let mut args = Vec::with_capacity(1 + 5 * entries.len());
        args.push(Arg::Num(self.ttl_slack_ms()));
        for e in &entries {
            args.extend([
                Arg::Num(e.m.tau),
                Arg::Num(e.m.incr),
                Arg::Num(e.m.last),
                e.m.max_wait.map_or(Arg::None, Arg::Num),
                self.now_arg(e.now),
            ]);
        }
        bump(&self.counters.script_calls, 1);
        bump(&self.counters.batches, 1);
        bump(&self.counters.batched, entries.len() as u64);
        let reply = self.eval(&hot.batch, &[key], &args).await;
        let replies = match &reply {
            Ok(Ok(value)) => parse_batch(value, entries.len()),
            Ok(Err(err)) => Err(classify(err.clone())),
            Err(_) => Err(self.timed_out("the reservations may or may not have been made")),
        };
        for (i, e) in entries.into_iter().enumerate() {
            let decision = match &replies {
                Ok(items) => Decision::parse(&items[i]),
                Err(err) => Err(err.clone()),
            };
            let result = self.conclude(key, e.now, e.asked, &e.params, &e.request, &e.m, decision);
            self.deliver(key, e.reply, result);
        }
    }

    /// Hands `result` to its caller; a slot whose caller is gone goes back.
    fn deliver(
        self: &Arc<Self>,
        key: &[u8],
        reply: oneshot::Sender<Result<Admission, FreqLimitError>>,
        result: Result<Admission, FreqLimitError>,
    ) {
        if let Err(Ok(admission)) = reply.send(result) {
            let token = admission.refund_token();
            if let Some(end) = token.end
                && !admission.is_fail_open()
            {
                self.send_refund_span(key.to_vec(), token.start, end);
            }
        }
    }
}

/// A queued unit request served from the key's leases at `now` (ns): its
/// slot or the lease's refusal, its delay and `max_wait` counted from when
/// it asked; `None` when no lease answers it.
fn serve_queued(
    s: &mut KeyState,
    e: &Queued,
    now: u64,
    inner: &Inner,
) -> Option<Result<Admission, FreqLimitError>> {
    // Never before it asked: on the callers' clock the reply's time is the
    // lease call's, which a caller queued meanwhile may have passed.
    let now = now.max(e.now.as_nanos());
    let waited = now.saturating_sub(e.now.as_nanos());
    let max_wait = e
        .request
        .max_wait
        .map(|w| crate::nanos::from_duration(w).saturating_sub(waited));
    match take(s, &e.m, &e.request, now, max_wait, inner)? {
        Ok((lease, slot, delay)) => {
            // From when it asked: the slot opened no earlier than the reply
            // (on the caller's own clock, the wait is behind it already).
            let delay = delay.saturating_add(waited);
            Some(Ok(lease.admission(slot, delay, e.now.as_nanos())))
        }
        Err(err) => Some(Err(err)),
    }
}

/// The next slot of the key's leases for a unit request with figures `m` at
/// `now` waiting at most `max_wait` ns: the lease and slot, or the lease's
/// refusal; `None` when no lease answers (none left, other figures, a cost
/// other than 1). Exhausted leases are dropped, lost slots counted.
pub(super) fn take(
    s: &mut KeyState,
    m: &Micros,
    request: &Reserve,
    now: u64,
    max_wait: Option<u64>,
    inner: &Inner,
) -> Option<Result<(Lease, u32, u64), FreqLimitError>> {
    if request.cost != 1 {
        return None;
    }
    while let Some(lease) = s.leases.front_mut() {
        if lease.interval != m.interval || lease.tau != m.tau {
            return None;
        }
        match lease.take(now, max_wait) {
            Take::Slot { slot, delay, lost } => {
                bump(&inner.counters.slots_lost, u64::from(lost));
                bump(&inner.counters.slots_used, 1);
                return Some(Ok((*lease, slot, delay)));
            }
            Take::Refused { retry_after, lost } => {
                bump(&inner.counters.slots_lost, u64::from(lost));
                return Some(Err(lease_rejection(retry_after)));
            }
            Take::Exhausted { lost } => {
                bump(&inner.counters.slots_lost, u64::from(lost));
                s.leases.pop_front();
            }
        }
    }
    None
}
