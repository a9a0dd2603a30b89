//! What a caller asks for ([`Reserve`]) and what it is told ([`Admission`]):
//! the values that cross every layer, from the GCRA step to the HTTP headers.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::params::FreqLimitParams;

/// What a caller asks of a backend: a cost and how long it is willing to wait.
///
/// The default is one unit, waiting as long as it takes (`aiofreqlimit`'s
/// behaviour).
///
/// * **Cost** `n` is exactly `n` unit reservations made at the same instant; the
///   call waits as long as the last of them. Cost 0 is a *status check*: it
///   is decided exactly as a unit call (waits, or is rejected, when one would)
///   but consumes nothing, so a cost a client can drive to 0 never lets an
///   over-limit client through.
/// * **Bounded wait**: with [`max_wait`](Self::max_wait), a call that would have
///   to wait longer is rejected and consumes nothing. `max_wait(Duration::ZERO)`
///   is reject-only, like `governor`.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::Reserve;
///
/// let ask = Reserve::new().cost(3).max_wait(Duration::from_millis(250));
/// assert_eq!(ask.cost, 3);
/// assert_eq!(ask.max_wait, Some(Duration::from_millis(250)));
/// assert_eq!(Reserve::new().no_wait().max_wait, Some(Duration::ZERO));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reserve {
    /// The units asked for: a call of cost `n` is `n` unit calls at one
    /// instant. Cost 0 consumes nothing but is admitted only when a unit call
    /// would be.
    pub cost: u32,
    /// The longest acceptable wait; `None` waits as long as needed.
    pub max_wait: Option<Duration>,
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

impl Reserve {
    /// One unit, waiting as long as needed.
    #[must_use]
    #[inline]
    pub const fn new() -> Self {
        Self {
            cost: 1,
            max_wait: None,
        }
    }

    /// Reserve `cost` units at once (a weighted call).
    #[must_use]
    #[inline]
    pub const fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }

    /// Reject instead of waiting longer than `max_wait`.
    #[must_use]
    #[inline]
    pub const fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Reject instead of waiting at all (`max_wait(Duration::ZERO)`).
    #[must_use]
    #[inline]
    pub const fn no_wait(self) -> Self {
        self.max_wait(Duration::ZERO)
    }

    /// Wait as long as needed (the default).
    #[must_use]
    #[inline]
    pub const fn wait_forever(mut self) -> Self {
        self.max_wait = None;
        self
    }
}

/// An admitted call: how long it must wait, and the state of its bucket.
///
/// `remaining` and `reset_after` are what the IETF `RateLimit` header reports.
///
/// ```
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(10).with_burst(5);
/// let admission = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap().admission;
/// assert!(admission.delay().is_zero());
/// assert_eq!(admission.remaining(), 4);
/// assert_eq!(admission.reset_after().as_millis(), 100);
/// ```
///
/// Two admissions are equal when they tell the caller the same thing; the refund
/// token inside (see [`FreqLimitBackend::refund`]) is not compared.
///
/// [`FreqLimitBackend::refund`]: crate::FreqLimitBackend::refund
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    // Nanoseconds, not `Duration`s: half the size, and `remaining` is only divided
    // out when asked for (HTTP headers), not on every decision.
    delay: u64,
    reset_after: u64,
    interval: u64,
    // The refund token's parts, flattened: with the burst and the flags side
    // by side the admission takes 48 bytes (six words) instead of 56. It is
    // returned through memory, so every word counts on the hot path; see
    // `gcra::holes::Spot` for why the backends' slow paths return less.
    span_start: u64,
    span_end: u64,
    burst: u32,
    stored: bool,
    // Let through without a decision because the backend failed (fail-open).
    fail_open: bool,
}

/// The span of its key's TAT axis a reservation took, `[start, end)` on the
/// backend's scale: what a backend needs to give that reservation back
/// ([`FreqLimitBackend::refund`]), whatever was reserved after it.
///
/// A reservation appended at the key's TAT spans from the TAT it found to the
/// TAT it stored; one placed in a hole (the span of a reservation given back
/// earlier, see [`gcra::holes`]) spans the part of the hole it took.
///
/// ```
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(1); // T = 1 s
/// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
/// let second = gcra::reserve(first.new_tat, 0, &params, &Reserve::new()).unwrap();
/// let token = second.admission.refund_token();
/// assert_eq!((token.start, token.end), (1_000_000_000, Some(2_000_000_000)));
/// ```
///
/// [`FreqLimitBackend::refund`]: crate::FreqLimitBackend::refund
/// [`gcra::holes`]: crate::gcra::holes
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RefundToken {
    /// Where the span starts: for a reservation appended at the TAT, the TAT
    /// it found (0 for a new key: any TAT in the past means a full bucket).
    pub start: u64,
    /// Where the span ends: for a reservation appended at the TAT, the TAT it
    /// stored. `None` when the reservation took nothing (cost 0).
    pub end: Option<u64>,
}

impl PartialEq for Admission {
    fn eq(&self, other: &Self) -> bool {
        self.delay == other.delay
            && self.reset_after == other.reset_after
            && self.remaining() == other.remaining()
            && self.fail_open == other.fail_open
    }
}

impl Eq for Admission {}

impl Admission {
    /// How long the call waits (or, once returned by [`FreqLimit::acquire`], waited)
    /// for its slot, measured from when it asked.
    ///
    /// [`FreqLimit::acquire`]: crate::FreqLimit::acquire
    #[must_use]
    #[inline]
    pub const fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay)
    }

    /// How many more unit calls would be admitted without waiting, right after
    /// this one.
    #[must_use]
    #[inline]
    pub const fn remaining(&self) -> u32 {
        let tau = (self.burst.saturating_sub(1) as u64).saturating_mul(self.interval);
        remaining_after(self.reset_after, tau, self.interval)
    }

    /// How long until the bucket is full again (the key is then as good as new).
    #[must_use]
    #[inline]
    pub const fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after)
    }

    /// What a backend needs to give this reservation back.
    #[must_use]
    #[inline]
    pub const fn refund_token(&self) -> RefundToken {
        RefundToken {
            start: self.span_start,
            end: if self.stored {
                Some(self.span_end)
            } else {
                None
            },
        }
    }

    /// Whether the call was let through *without* a decision: a remote backend
    /// set to fail open could not be asked (see the Redis backend's
    /// `FailurePolicy`). Its figures are those of a new key's first call (no
    /// delay, `burst - 1` remaining), not the key's real state, and there is
    /// nothing to refund. Always `false` for decided calls.
    ///
    /// ```
    /// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
    ///
    /// let params = FreqLimitParams::per_second(1);
    /// let admission = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap().admission;
    /// assert!(!admission.is_fail_open());
    /// ```
    #[must_use]
    #[inline]
    pub const fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// An admission made of its figures, in nanoseconds: how a backend that
    /// decides elsewhere (a server running the GCRA step itself, as the Redis
    /// backend's script does) reports its decision. `burst` and `interval` are
    /// the params' (`interval` as that backend rounded it; they give
    /// [`remaining`](Self::remaining)); `refund` is what
    /// [`FreqLimitBackend::refund`](crate::FreqLimitBackend::refund) will need.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::{Admission, RefundToken};
    ///
    /// // Admitted at once, the bucket one call short of full (T = 1 s, burst 3).
    /// let s = 1_000_000_000;
    /// let admission = Admission::from_parts(0, s, 3, s, RefundToken { start: 0, end: Some(s) });
    /// assert_eq!(admission.remaining(), 2);
    /// assert_eq!(admission.reset_after(), Duration::from_secs(1));
    /// ```
    #[must_use]
    #[inline]
    pub const fn from_parts(
        delay: u64,
        reset_after: u64,
        burst: u32,
        interval: u64,
        refund: RefundToken,
    ) -> Self {
        Self {
            delay,
            reset_after,
            burst,
            interval,
            span_start: refund.start,
            span_end: match refund.end {
                Some(end) => end,
                None => 0,
            },
            stored: refund.end.is_some(),
            fail_open: false,
        }
    }

    /// The same admission with another delay (nanoseconds from when the call
    /// asked): a remote backend adds the round trip.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::{Admission, FreqLimitParams};
    ///
    /// let admission = Admission::fail_open(&FreqLimitParams::per_second(1)).with_delay(2_000);
    /// assert_eq!(admission.delay(), Duration::from_micros(2));
    /// ```
    #[must_use]
    #[inline]
    pub const fn with_delay(mut self, delay: u64) -> Self {
        self.delay = delay;
        self
    }

    /// A call let through undecided because a remote backend failed and is set
    /// to fail open: the figures of a new key's first call, nothing to refund.
    ///
    /// ```
    /// use tower_freqlimit::{Admission, FreqLimitParams};
    ///
    /// let admission = Admission::fail_open(&FreqLimitParams::per_second(1).with_burst(5));
    /// assert!(admission.is_fail_open());
    /// assert_eq!(admission.remaining(), 4);
    /// assert!(admission.refund_token().end.is_none());
    /// ```
    #[must_use]
    pub const fn fail_open(params: &FreqLimitParams) -> Self {
        Self {
            delay: 0,
            reset_after: params.interval_nanos(),
            burst: params.burst(),
            interval: params.interval_nanos(),
            span_start: 0,
            span_end: 0,
            stored: false,
            fail_open: true,
        }
    }
}

/// Unit calls that would pass right now without waiting, for a key that owes
/// `owed` nanoseconds (its TAT minus now).
#[inline]
pub(crate) const fn remaining_after(owed: u64, tau: u64, interval: u64) -> u32 {
    if owed > tau {
        0
    } else {
        // At most `burst`, which is a u32.
        ((tau - owed) / interval + 1) as u32
    }
}

/// A rejected call: when to retry, and the state of its bucket.
///
/// `retry_after` is exact to the nanosecond; an HTTP `Retry-After` made from it
/// must round *up* to whole seconds, or a 0.5 s wait becomes "retry now".
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
///
/// let params = FreqLimitParams::per_second(2);
/// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
/// let Err(gcra::Refusal::Rejected(rejection)) =
///     gcra::reserve(first.new_tat, 0, &params, &Reserve::new().no_wait())
/// else {
///     panic!("expected a rejection");
/// };
/// assert_eq!(rejection.retry_after(), Duration::from_millis(500));
/// assert_eq!(rejection.remaining(), 0);
/// assert_eq!(rejection.reset_after(), Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    pub(crate) retry_after: Duration,
    pub(crate) remaining: u32,
    pub(crate) reset_after: Duration,
    /// The index of the limit that refused, in its compound (0 alone).
    pub(crate) limit: u8,
}

impl Rejection {
    /// After this long the same call (same cost, same `max_wait`) is admitted,
    /// unless others take the slot first.
    #[must_use]
    #[inline]
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded **up**, as
    /// `Retry-After` must carry it: a 0.5 s wait is 1, never 0.
    ///
    /// ```
    /// use tower_freqlimit::{gcra, FreqLimitParams, Reserve};
    ///
    /// let params = FreqLimitParams::per_second(2);
    /// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
    /// let Err(gcra::Refusal::Rejected(rejection)) =
    ///     gcra::reserve(first.new_tat, 0, &params, &Reserve::new().no_wait())
    /// else {
    ///     panic!("expected a rejection");
    /// };
    /// assert_eq!(rejection.retry_after_secs(), 1);
    /// ```
    #[must_use]
    #[inline]
    pub const fn retry_after_secs(&self) -> u64 {
        crate::nanos::ceil_secs(self.retry_after)
    }

    /// Unit calls that would still be admitted right now without waiting (non-zero
    /// only when a call of higher cost was rejected).
    #[must_use]
    #[inline]
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }

    /// How long until the bucket is full again.
    #[must_use]
    #[inline]
    pub const fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// Which limit refused: its index in a [`CompoundLimit`](crate::CompoundLimit)
    /// (the order of its [`limit`](crate::CompoundLimit::limit) calls), whose
    /// `remaining` and `reset_after` these are; 0 for a single limit.
    ///
    /// ```
    /// use tower_freqlimit::gcra::{compound, Refusal};
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// let (loose, tight) = (FreqLimitParams::per_second(10), FreqLimitParams::per_second(1));
    /// let owed = [compound::Limit::new(Some(1), &loose), compound::Limit::new(Some(1_000_000_000), &tight)];
    /// let refused = compound::reserve_all(&owed, 0, &Reserve::new().no_wait()).unwrap_err();
    /// let Refusal::Rejected(rejection) = refused.refusal else { panic!() };
    /// assert_eq!(rejection.limit(), 1);
    /// ```
    #[must_use]
    #[inline]
    pub const fn limit(&self) -> usize {
        self.limit as usize
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit exceeded; retry after {:?}", self.retry_after)
    }
}

impl StdError for Rejection {}

/// A key's state, read without consuming anything: what
/// [`FreqLimit::status`](crate::FreqLimit::status) and
/// [`FreqLimitBackend::status`](crate::backends::FreqLimitBackend::status)
/// return.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{gcra, FreqLimitParams, Reserve, Status};
///
/// // 1 per second, burst 3, one call made: two more pass at once.
/// let params = FreqLimitParams::per_second(1).with_burst(3);
/// let first = gcra::reserve(None, 0, &params, &Reserve::new()).unwrap();
/// let peek = gcra::reserve(first.new_tat, 0, &params, &Reserve::new().cost(0)).unwrap();
/// let status = Status::from(peek.admission);
/// assert_eq!(status.remaining(), 2);
/// assert_eq!(status.reset_after(), Duration::from_secs(1));
/// assert_eq!(status.retry_after(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    remaining: u32,
    reset_after: Duration,
    retry_after: Duration,
}

impl Status {
    /// Unit calls that would be admitted right now without waiting.
    #[must_use]
    #[inline]
    pub const fn remaining(&self) -> u32 {
        self.remaining
    }

    /// How long until the bucket is full again (zero for a full bucket, or a
    /// key never seen).
    #[must_use]
    #[inline]
    pub const fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// How long a unit call made now would wait: zero when
    /// [`remaining`](Self::remaining) is not.
    #[must_use]
    #[inline]
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// The state an admitted status check (a call of cost 0) reported.
impl From<Admission> for Status {
    fn from(admission: Admission) -> Self {
        Self {
            remaining: admission.remaining(),
            reset_after: admission.reset_after(),
            retry_after: admission.delay(),
        }
    }
}
