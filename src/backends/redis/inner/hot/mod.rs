//! Hot keys: the reservations of one key queued in this process while a call
//! for it is in flight, then sent in one batch (`batch.lua`); and leases,
//! slots taken in one call and handed out here (`lease.lua`, the rules in
//! `redis/lease.rs`).
//!
//! Each key this process is batching or leasing has a [`KeyState`] behind
//! its own mutex (no lock is shared between keys). A request that finds no
//! call in flight starts a driver task (`driver.rs`), which sends calls for
//! the key until its queue is empty.

mod driver;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::Inner;
use crate::backends::redis::future::RedisReserveFuture;
use crate::backends::redis::lease::{Demand, Lease, Leases};
use crate::backends::redis::script::{BATCH_LUA, LEASE_LUA, Micros, Script};
use crate::backends::redis::stats::bump;
use crate::clock::Timestamp;
use crate::decision::{Admission, Rejection, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::params::FreqLimitParams;

/// The most reservations one batch call decides; the rest wait for the next.
const MAX_BATCH: usize = 256;

/// The keys being batched or leased, and the settings.
pub(in crate::backends::redis) struct Hot {
    keys: DashMap<Box<[u8]>, Arc<Mutex<KeyState>>>,
    leases: Option<Leases>,
    /// The number of keys at which stale states are swept next.
    sweep_at: AtomicUsize,
    batch: Script,
    lease: Script,
}

impl Hot {
    /// Batching, and leases too when `leases` is set.
    pub(in crate::backends::redis) fn new(leases: Option<Leases>) -> Self {
        Self {
            keys: DashMap::new(),
            leases,
            sweep_at: AtomicUsize::new(1024),
            batch: Script::new(BATCH_LUA),
            lease: Script::new(LEASE_LUA),
        }
    }

    /// The settings of leases, if they are on.
    pub(in crate::backends::redis) const fn leases(&self) -> Option<&Leases> {
        self.leases.as_ref()
    }
}

/// A key and its state, as the table holds them.
type Entry = (Box<[u8]>, Arc<Mutex<KeyState>>);

/// A reservation waiting for the key's call in flight to come back.
struct Queued {
    now: Timestamp,
    asked: Instant,
    params: FreqLimitParams,
    request: Reserve,
    m: Micros,
    reply: oneshot::Sender<Result<Admission, FreqLimitError>>,
}

/// One key's queue, demand and leases.
struct KeyState {
    /// A driver task is sending calls for this key.
    driving: bool,
    queue: VecDeque<Queued>,
    demand: Demand,
    /// In slot order; at most two (the one in use and the next).
    leases: VecDeque<Lease>,
    /// The figures of the last unit request: what a lease is taken under.
    figures: Option<FreqLimitParams>,
    /// The last request's time, and when it was read on the host's clock:
    /// the driver's idea of now.
    seen: (Timestamp, Instant),
    /// No lease call before this time (ns, the callers' clock): the key is
    /// leased too far ahead, or the last lease call failed.
    pause_until: u64,
    /// The last call's round trip for this key, in ns (0: none yet).
    rtt: u64,
}

impl KeyState {
    fn new(now: Timestamp) -> Self {
        Self {
            driving: false,
            queue: VecDeque::new(),
            demand: Demand::new(now.as_nanos()),
            leases: VecDeque::new(),
            figures: None,
            seen: (now, Instant::now()),
            pause_until: 0,
            rtt: 0,
        }
    }

    /// Whether a lease should be taken now: demand is hot, the last round
    /// trip was under `T / 4` (a lease whose round trip reaches `T / 2` has
    /// no slot surely in its interval here, and is given back: a margin, as
    /// round trips vary), the newest lease (if any) is down to a quarter, no
    /// more than one is held.
    fn wants_lease(&self, now: u64) -> bool {
        self.demand.is_hot()
            && self
                .figures
                .is_some_and(|p| self.rtt.saturating_mul(4) < p.interval_nanos())
            && now >= self.pause_until
            && self.leases.len() < 2
            && self.leases.back().is_none_or(|l| l.left() <= l.count / 4)
    }

    /// Nothing here worth keeping: no queue, no driver, no lease, not hot,
    /// and no request for two demand windows.
    fn is_stale(&self, now: u64, settings: &Leases) -> bool {
        let interval = self
            .figures
            .map_or(1, |p| p.interval_nanos().div_ceil(1_000));
        !self.driving
            && self.queue.is_empty()
            && self.leases.is_empty()
            && !self.demand.is_hot()
            && now.saturating_sub(self.seen.0.as_nanos())
                > settings.window_nanos(interval).saturating_mul(2)
    }
}

fn lock(state: &Mutex<KeyState>) -> MutexGuard<'_, KeyState> {
    // A panic elsewhere while holding it leaves figures, not broken
    // invariants: carry on.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A rejection by the lease: the next slot here opens `retry_after` ns from now.
fn lease_rejection(retry_after: u64) -> FreqLimitError {
    FreqLimitError::Rejected(Rejection {
        retry_after: std::time::Duration::from_nanos(retry_after),
        remaining: 0,
        reset_after: std::time::Duration::from_nanos(retry_after),
        limit: 0,
    })
}

impl Inner {
    /// Whether leases are on.
    pub(in crate::backends::redis) fn leasing(&self) -> bool {
        self.hot.as_ref().is_some_and(|hot| hot.leases.is_some())
    }

    /// A leased slot for a unit request at `now`, or its refusal by the
    /// lease; `None` when no lease of the key can answer (none held, other
    /// figures, another cost). `count`: count the request in the key's demand
    /// even when unanswered (`reserve_sync` does not: `reserve` follows).
    pub(in crate::backends::redis) fn leased(
        self: &Arc<Self>,
        key: &[u8],
        now: Timestamp,
        params: &FreqLimitParams,
        request: &Reserve,
        count: bool,
    ) -> Option<Result<Admission, FreqLimitError>> {
        let hot = self.hot.as_ref()?;
        let settings = hot.leases()?;
        let state = match hot.keys.get(key) {
            Some(state) => Arc::clone(&state),
            None if !count => return None,
            None => self.new_state(hot, key, now, settings),
        };
        let mut s = lock(&state);
        let now_ns = now.as_nanos();
        s.seen = (now, Instant::now());
        let m = Micros::new(params, request);
        if request.cost == 1 {
            s.figures = Some(*params);
        }
        let max_wait = request.max_wait.map(crate::nanos::from_duration);
        let answer = driver::take(&mut s, &m, request, now_ns, max_wait, self)
            .map(|taken| taken.map(|(lease, slot, delay)| lease.admission(slot, delay, now_ns)));
        if answer.is_none() && !count {
            return None;
        }
        let window = settings.window_nanos(m.interval);
        let hot_now = s.demand.tick(
            now_ns,
            window,
            m.interval.saturating_mul(1_000),
            settings.min_demand,
        );
        if !hot_now {
            self.give_back(key, &mut s, now_ns);
        } else if answer.is_some() && !s.driving && s.wants_lease(now_ns) {
            // Ask for the next lease before this one runs out.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                s.driving = true;
                drop(s);
                let inner = Arc::clone(self);
                runtime.spawn(inner.drive(key.into(), state));
            }
        }
        answer
    }

    /// A new state for `key`, after sweeping the stale ones when there are
    /// many (so that keys seen once do not pile up).
    fn new_state(
        &self,
        hot: &Hot,
        key: &[u8],
        now: Timestamp,
        settings: &Leases,
    ) -> Arc<Mutex<KeyState>> {
        let len = hot.keys.len();
        if len >= hot.sweep_at.load(Ordering::Relaxed) {
            let now = now.as_nanos();
            hot.keys.retain(|_, state| {
                state
                    .try_lock()
                    .map_or(true, |s| !s.is_stale(now, settings))
            });
            hot.sweep_at
                .store((hot.keys.len() * 2).max(1024), Ordering::Relaxed);
        }
        Arc::clone(
            &hot.keys
                .entry(key.into())
                .or_insert_with(|| Arc::new(Mutex::new(KeyState::new(now)))),
        )
    }

    /// Queues a reservation behind the key's call in flight, or starts the
    /// key's driver; `Err(key)` when batching is off or there is no Tokio
    /// runtime to drive from (the caller then calls Redis itself).
    pub(in crate::backends::redis) fn enqueue(
        self: &Arc<Self>,
        key: Vec<u8>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
        m: Micros,
        asked: Instant,
    ) -> Result<RedisReserveFuture, Vec<u8>> {
        let Some(hot) = self.hot.as_ref() else {
            return Err(key);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(key);
        };
        let state = match hot.keys.get(key.as_slice()) {
            Some(state) => Arc::clone(&state),
            None => Arc::clone(
                &hot.keys
                    .entry(key.as_slice().into())
                    .or_insert_with(|| Arc::new(Mutex::new(KeyState::new(now)))),
            ),
        };
        let (reply, answer) = oneshot::channel();
        let mut s = lock(&state);
        s.queue.push_back(Queued {
            now,
            asked,
            params: *params,
            request,
            m,
            reply,
        });
        if !s.driving {
            s.driving = true;
            drop(s);
            runtime.spawn(Arc::clone(self).drive(key.into(), state));
        }
        // The deadline counts from here, as a call of its own would: a caller
        // queued behind a slow call is not kept twice the timeout. If its
        // batch still goes and admits it, the slot is given back (`deliver`).
        let inner = Arc::clone(self);
        let params = *params;
        Ok(RedisReserveFuture::pending(async move {
            match tokio::time::timeout(inner.timeout, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(FreqLimitError::Backend(BackendError::new(
                    BackendErrorKind::Other,
                    "the task sending this key's batch stopped without an answer",
                ))),
                Err(_) => inner.failed(
                    inner.timed_out("the reservation may or may not be made"),
                    &params,
                ),
            }
        }))
    }

    /// Gives every slot of the key's leases not handed out yet back to
    /// Redis (lost ones are counted).
    fn give_back(self: &Arc<Self>, key: &[u8], s: &mut KeyState, now: u64) {
        for lease in s.leases.drain(..) {
            self.give_back_lease(key, lease, now);
        }
    }

    /// Gives the slots of `lease` not handed out yet back to Redis.
    fn give_back_lease(self: &Arc<Self>, key: &[u8], mut lease: Lease, now: u64) {
        let (lost, span) = lease.give_back(now);
        bump(&self.counters.slots_lost, u64::from(lost));
        if let Some((start, end, slots)) = span {
            bump(&self.counters.slots_returned, u64::from(slots));
            self.send_refund_span(key.to_vec(), start, end);
        }
    }

    /// Drops every lease held here without giving anything back (for
    /// `clear`, which deletes the keys they were taken from).
    pub(in crate::backends::redis) fn forget_leases(&self) {
        if let Some(hot) = &self.hot {
            for state in &hot.keys {
                lock(state.value()).leases.clear();
            }
        }
    }

    /// [`RedisBackend::release_leases`](crate::backends::redis::RedisBackend::release_leases):
    /// every key's slots not handed out go back, and the refunds are waited for.
    /// Each key's slots are judged at its callers' now (`driver_now`): on
    /// [`RedisClock::LimiterTimestamp`](crate::backends::redis::RedisClock::LimiterTimestamp)
    /// the host's clock says nothing of which have passed.
    pub(in crate::backends::redis) async fn release_leases(self: &Arc<Self>) {
        if let Some(hot) = &self.hot {
            let states: Vec<Entry> = hot
                .keys
                .iter()
                .map(|e| (e.key().clone(), Arc::clone(e.value())))
                .collect();
            for (key, state) in states {
                let mut s = lock(&state);
                let now = self.driver_now(s.seen).as_nanos();
                // No lease right after: demand is judged afresh.
                s.demand = Demand::new(now);
                self.give_back(&key, &mut s, now);
            }
        }
        self.refunds_settled().await;
    }
}
