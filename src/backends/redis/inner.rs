//! What the clones of a backend share, and its calls to Redis: the reservation
//! (after the negative cache, under the failure policy), the refund and
//! `clear`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{RedisError, Value};
use tokio::sync::Notify;
use tokio::time::error::Elapsed;

use super::cache::{NegativeCache, TatBounds};
use super::circuit::{self, Circuit};
use super::conn::{Arg, Conn, classify};
use super::future::RedisReserveFuture;
use super::key::{RedisKey, encode_key};
use super::policy::{FailurePolicy, RedisClock};
use super::script::{
    COMPOUND_LUA, Decision, HOLD_LUA, MAX_MICROS, Micros, REFUND_LUA, RESERVE_LUA, Script,
};
use super::stats::{Counters, bump};
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::params::FreqLimitParams;

/// How long keys outlive their TAT with [`RedisClock::LimiterTimestamp`].
const LIMITER_CLOCK_TTL_SLACK_MS: u64 = 10 * 60 * 1000;

mod compound;
mod failure;
mod hot;

pub(super) use hot::Hot;

/// What every clone of a [`RedisBackend`](super::RedisBackend) shares.
pub(super) struct Inner {
    pub(super) conn: Conn,
    pub(super) prefix: Box<[u8]>,
    pub(super) timeout: Duration,
    pub(super) policy: FailurePolicy,
    pub(super) clock: RedisClock,
    pub(super) cache: Option<NegativeCache>,
    pub(super) circuit: Arc<Circuit>,
    reserve: Script,
    refund: Script,
    hold: Script,
    compound: Script,
    /// Batches and leases, when turned on.
    hot: Option<Hot>,
    pub(super) counters: Counters,
    refunds_in_flight: AtomicUsize,
    refunds_done: Notify,
    /// When the last fail-open warning was logged (ms since `created`), and how
    /// many fail-open admissions it has not reported yet.
    warned_at: AtomicU64,
    unwarned: AtomicU64,
    created: std::time::Instant,
}

/// Microseconds since the Unix epoch on this host's clock.
fn system_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .min(MAX_MICROS)
}

impl Inner {
    /// The state of a new backend with these settings (`negative_cache`: its
    /// slots, 0 for none).
    #[allow(
        clippy::too_many_arguments,
        reason = "the builder's settings, passed once"
    )]
    pub(super) fn new(
        conn: Conn,
        prefix: String,
        timeout: Duration,
        policy: FailurePolicy,
        clock: RedisClock,
        negative_cache: usize,
        probe_every: Duration,
        hot: Option<Hot>,
    ) -> Self {
        Self {
            conn,
            prefix: prefix.into_bytes().into_boxed_slice(),
            timeout,
            policy,
            clock,
            cache: (negative_cache > 0).then(|| NegativeCache::new(negative_cache)),
            circuit: Arc::new(Circuit::new(probe_every)),
            reserve: Script::new(RESERVE_LUA),
            refund: Script::new(REFUND_LUA),
            hold: Script::new(HOLD_LUA),
            compound: Script::new(COMPOUND_LUA),
            hot,
            counters: Counters::default(),
            refunds_in_flight: AtomicUsize::new(0),
            refunds_done: Notify::new(),
            warned_at: AtomicU64::new(0),
            unwarned: AtomicU64::new(0),
            created: std::time::Instant::now(),
        }
    }

    /// The time to send, or `None` for the server's `TIME`.
    fn now_arg(&self, now: Timestamp) -> Arg {
        match self.clock {
            RedisClock::Server => Arg::None,
            RedisClock::HostWallClock => Arg::Num(system_micros()),
            RedisClock::LimiterTimestamp => Arg::Num((now.as_nanos() / 1_000).min(MAX_MICROS)),
        }
    }

    /// Milliseconds to keep a key past its TAT: none on the server's or the
    /// hosts' clock, whose time runs with the server's expiry; ten minutes on the
    /// caller's, which may not (a test's chosen instants).
    fn ttl_slack_ms(&self) -> u64 {
        match self.clock {
            RedisClock::Server | RedisClock::HostWallClock => 0,
            RedisClock::LimiterTimestamp => LIMITER_CLOCK_TTL_SLACK_MS,
        }
    }

    /// Where a TAT `ahead` µs past the server's now lies on the caller's scale,
    /// for a call made at `now` (at `asked` on the host's clock) whose reply
    /// has just been read.
    ///
    /// The server's now was no earlier than `now` and no later than the reply's
    /// arrival, `now` plus the time since `asked` (rounded up, as the bound is
    /// an upper one); on [`RedisClock::LimiterTimestamp`] it was `now` itself.
    fn tat_bounds(&self, now: Timestamp, asked: std::time::Instant, ahead: u64) -> TatBounds {
        let sent = now.as_nanos() / 1_000;
        let arrived = match self.clock {
            RedisClock::LimiterTimestamp => sent,
            RedisClock::Server | RedisClock::HostWallClock => now
                .as_nanos()
                .saturating_add(crate::nanos::from_duration(asked.elapsed()))
                .div_ceil(1_000),
        };
        TatBounds::new(sent.saturating_add(ahead), arrived.saturating_add(ahead))
    }

    /// The negative cache's answer for `key`: a rejection, counted, when it
    /// remembers the key as over its limit for these figures.
    pub(super) fn cached_rejection(
        &self,
        key: &[u8],
        now: Timestamp,
        m: &Micros,
    ) -> Option<FreqLimitError> {
        let rejection = self.cache.as_ref()?.check(key, now.as_nanos() / 1_000, m)?;
        bump(&self.counters.cache_rejections, 1);
        Some(FreqLimitError::Rejected(rejection))
    }

    /// [`FreqLimitBackend::reserve`](crate::FreqLimitBackend::reserve) of the
    /// Redis key `key`: an answer from the negative cache, or a script call.
    pub(super) fn start_reserve(
        self: &Arc<Self>,
        key: Vec<u8>,
        now: Timestamp,
        params: &FreqLimitParams,
        request: Reserve,
    ) -> RedisReserveFuture {
        let m = Micros::new(params, &request);
        if let Some(answer) = self.leased(&key, now, params, &request, true) {
            return RedisReserveFuture::ready(answer);
        }
        if let Some(rejection) = self.cached_rejection(&key, now, &m) {
            return RedisReserveFuture::ready(Err(rejection));
        }
        if self.circuit.is_open() {
            let down = self.circuit.reject(&self.counters);
            return RedisReserveFuture::ready(self.failed(down, params));
        }
        let asked = std::time::Instant::now();
        let key = match self.enqueue(key, now, params, request, m, asked) {
            Ok(queued) => return queued,
            Err(key) => key,
        };
        let inner = Arc::clone(self);
        RedisReserveFuture::pending(inner.reserve(key, now, *params, request, m, asked))
    }

    /// Runs `script` on `keys` with `args` within the timeout (`Err` when it
    /// passed), counting the retries.
    async fn eval(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[Arg],
    ) -> Result<Result<Value, RedisError>, Elapsed> {
        let mut conn = self.conn.clone();
        let mut retries = 0;
        let reply =
            tokio::time::timeout(self.timeout, conn.eval(script, keys, args, &mut retries)).await;
        bump(&self.counters.retries, u64::from(retries));
        if let Ok(Err(err)) = &reply
            && circuit::connection_lost(err)
        {
            circuit::trip(&self.circuit, &self.conn, self.timeout, &self.counters);
        }
        reply
    }

    async fn reserve(
        self: Arc<Self>,
        key: Vec<u8>,
        now: Timestamp,
        params: FreqLimitParams,
        request: Reserve,
        m: Micros,
        asked: std::time::Instant,
    ) -> Result<Admission, FreqLimitError> {
        let args = [
            Arg::Num(m.interval),
            Arg::Num(m.tau),
            Arg::Num(m.incr),
            Arg::Num(m.last),
            m.max_wait.map_or(Arg::None, Arg::Num),
            self.now_arg(now),
            Arg::Num(self.ttl_slack_ms()),
        ];
        bump(&self.counters.script_calls, 1);
        let reply = self.eval(&self.reserve, &[&key], &args).await;
        let decision = match reply {
            Ok(Ok(value)) => Decision::parse(&value),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(self.timed_out("the reservation may or may not have been made")),
        };
        self.conclude(&key, now, asked, &params, &request, &m, decision)
    }

    /// The timeout error of a call whose outcome is unknown (`what`).
    fn timed_out(&self, what: &str) -> BackendError {
        BackendError::new(
            BackendErrorKind::Timeout,
            format!("no answer from Redis within {:?}; {what}", self.timeout),
        )
    }

    /// What a caller at `now` (at `asked` on the host's clock) gets from the
    /// script's decision on `key`: the negative cache kept true, the failure
    /// policy applied, a delay counted from when it asked.
    #[allow(
        clippy::too_many_arguments,
        reason = "one caller's figures, passed through"
    )]
    fn conclude(
        &self,
        key: &[u8],
        now: Timestamp,
        asked: std::time::Instant,
        params: &FreqLimitParams,
        request: &Reserve,
        m: &Micros,
        decision: Result<Decision, BackendError>,
    ) -> Result<Admission, FreqLimitError> {
        let decision = match decision {
            Ok(decision) => decision,
            Err(err) => return self.failed(err, params),
        };
        if let Some(cache) = &self.cache {
            match decision {
                Decision::Rejected { reset_after, .. } => {
                    cache.remember(key, self.tat_bounds(now, asked, reset_after));
                }
                Decision::Admitted {
                    reset_after,
                    end: Some(_),
                    ..
                } => cache.refresh(key, self.tat_bounds(now, asked, reset_after)),
                _ => {}
            }
        }
        let mut admission = decision.into_result(m, params, request)?;
        if !admission.delay().is_zero() && self.clock != RedisClock::LimiterTimestamp {
            // The slot is `delay` after the server's now, which is at most the
            // reply's arrival: counting from `now` (when the caller asked), add
            // the round trip, so the caller never starts before its slot.
            let rtt = crate::nanos::from_duration(asked.elapsed());
            admission = admission
                .with_delay(crate::nanos::from_duration(admission.delay()).saturating_add(rtt));
        }
        Ok(admission)
    }

    pub(super) async fn clear(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        // Slots of schedules about to be deleted: using them would admit
        // beside the fresh keys' bursts.
        self.forget_leases();
        let global = encode_key::<str>(&self.prefix, None);
        conn.run(redis::cmd("DEL").arg(&global))
            .await
            .map_err(classify)?;
        let mut pattern = Vec::with_capacity(self.prefix.len() + 4);
        for &byte in &*self.prefix {
            if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(byte);
        }
        pattern.extend_from_slice(b":k:*");
        for node in conn.scan_targets().await.map_err(classify)? {
            let mut cursor = 0u64;
            loop {
                let reply = conn
                    .on_node(
                        node.as_ref(),
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await
                    .map_err(classify)?;
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                    .map_err(|err| BackendError::new(BackendErrorKind::Protocol, err))?;
                // One key per DEL: cluster-safe.
                for key in keys {
                    conn.run(redis::cmd("DEL").arg(key))
                        .await
                        .map_err(classify)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// [`FreqLimitBackend::hold`](crate::FreqLimitBackend::hold) of the Redis
    /// key `key`. Never fails open: a hold that could not be stored is an
    /// error. A retry could not hold twice (the TAT goes to a maximum), but
    /// none is made: the caller learns again from the next response. `asked`:
    /// when the caller asked, on the host's clock (see
    /// [`tat_bounds`](Self::tat_bounds)).
    pub(super) async fn hold(
        self: Arc<Self>,
        key: Vec<u8>,
        now: Timestamp,
        hold: Duration,
        params: FreqLimitParams,
        asked: std::time::Instant,
    ) -> Result<bool, FreqLimitError> {
        let m = Micros::new(&params, &Reserve::new());
        let ahead = (crate::nanos::from_duration(hold) / 1_000)
            .saturating_add(m.tau)
            .min(MAX_MICROS);
        let args = [
            Arg::Num(ahead),
            self.now_arg(now),
            Arg::Num(self.ttl_slack_ms()),
        ];
        bump(&self.counters.script_calls, 1);
        let moved = match self.eval(&self.hold, &[&key], &args).await {
            Ok(Ok(Value::Int(moved))) => moved == 1,
            Ok(Ok(other)) => {
                return Err(FreqLimitError::Backend(BackendError::new(
                    BackendErrorKind::Protocol,
                    format!("unexpected reply from the hold script: {other:?}"),
                )));
            }
            Ok(Err(err)) => return Err(FreqLimitError::Backend(classify(err))),
            Err(_) => {
                return Err(FreqLimitError::Backend(
                    self.timed_out("the hold may or may not be stored"),
                ));
            }
        };
        if let Some(cache) = &self.cache {
            // The key now owes at least `ahead` past the caller's now: this
            // process refuses it without a round trip until then.
            cache.remember(&key, self.tat_bounds(now, asked, ahead));
        }
        Ok(moved)
    }

    /// [`FreqLimitBackend::refund`](crate::FreqLimitBackend::refund) of `key`.
    pub(super) fn send_refund<K: RedisKey + ?Sized>(
        self: &Arc<Self>,
        key: Option<&K>,
        admission: &Admission,
    ) -> bool {
        let token = admission.refund_token();
        let Some(end) = token.end else {
            return false;
        };
        if admission.is_fail_open() {
            return false;
        }
        self.send_refund_span(encode_key(&self.prefix, key), token.start, end)
    }

    /// Gives the span `[start, end)` (the script's microseconds, as a
    /// reservation's reply gave it) of the Redis key `key` back, in a spawned
    /// task; `false` without a Tokio runtime to send it from.
    fn send_refund_span(self: &Arc<Self>, key: Vec<u8>, start: u64, end: u64) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if let Some(cache) = &self.cache {
            cache.forget(&key);
        }
        let args = [Arg::Num(start), Arg::Num(end)];
        let inner = Arc::clone(self);
        inner.refunds_in_flight.fetch_add(1, Ordering::AcqRel);
        bump(&inner.counters.refunds_sent, 1);
        runtime.spawn(async move {
            let sent = inner.eval(&inner.refund, &[&key], &args).await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    "a refund could not be sent to Redis; the slot stays used"
                );
            }
            if inner.refunds_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.refunds_done.notify_waiters();
            }
        });
        true
    }

    /// Waits until every refund sent so far has been answered (or timed out).
    pub(super) async fn refunds_settled(&self) {
        loop {
            let done = self.refunds_done.notified();
            if self.refunds_in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }
}
