//! Where limiters read the time.
//!
//! Every decision needs the current time once. [`Clock::tokio`] (the default)
//! reads [`tokio::time::Instant::now`], which follows `tokio::time::pause()` and
//! `advance()`, so tests are exact. On Linux that is a `clock_gettime` call,
//! measured at about 25 ns on this project's benchmark machine (a VM whose vDSO
//! uses the serializing `rdtscp`), often more than the whole decision.
//!
//! [`Clock::fast`] reads the CPU's time-stamp counter through
//! [`quanta`](https://docs.rs/quanta) (about 10 ns there), anchored to a Tokio
//! instant when the clock is made, and gives [`Timestamp`]s on the same scale,
//! so it plugs into the same backends and timers. The price: it does **not** follow
//! `tokio::time::pause()`, and it may drift from the system's monotonic clock by
//! the TSC calibration error (parts per million), which shifts wake-ups by as
//! much. Use it in production where the request rate makes the clock read
//! matter; keep the default in tests. Use one kind of clock per backend: mixing
//! them mixes two time bases. The in-memory backend's sweeper reads Tokio's
//! clock, so with the fast clock give it an
//! [`idle_ttl`](crate::backends::memory::InMemoryBackendBuilder::idle_ttl) of a
//! second or more: drift then never lets it drop a key that still owes time.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A time source for [`FreqLimit`](crate::FreqLimit) and
/// [`FreqLimitLayer`](crate::FreqLimitLayer); see the [module docs](self).
///
/// ```
/// use tower_freqlimit::clock::Clock;
///
/// let tokio = Clock::tokio();
/// let fast = Clock::fast();
/// let (a, b) = (fast.now(), tokio.now());
/// // Both are timestamps on (nearly) the same time base.
/// assert!(a.max(b).saturating_duration_since(a.min(b)) < std::time::Duration::from_millis(50));
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    fast: Option<FastClock>,
}

#[derive(Clone)]
struct FastClock {
    tsc: quanta::Clock,
    raw_origin: u64,
    origin: Timestamp,
}

impl Clock {
    /// [`tokio::time::Instant::now`]: follows `tokio::time::pause()`. The default.
    #[must_use]
    pub fn tokio() -> Self {
        Self { fast: None }
    }

    /// The time-stamp counter, via `quanta`, anchored to a Tokio instant taken
    /// now. Does not follow `tokio::time::pause()`.
    ///
    /// The counter is calibrated once per process (the first call takes a few
    /// milliseconds); later calls are cheap.
    #[must_use]
    pub fn fast() -> Self {
        static CALIBRATED: OnceLock<quanta::Clock> = OnceLock::new();
        let tsc = CALIBRATED.get_or_init(quanta::Clock::new).clone();
        let raw_origin = tsc.raw();
        let origin = Timestamp::now();
        Self {
            fast: Some(FastClock {
                tsc,
                raw_origin,
                origin,
            }),
        }
    }

    /// The current time.
    #[inline]
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match &self.fast {
            None => Timestamp::now(),
            Some(fast) => {
                let elapsed = fast.tsc.delta_as_nanos(fast.raw_origin, fast.tsc.raw());
                Timestamp(fast.origin.0.saturating_add(elapsed))
            }
        }
    }

    /// Whether this is the [`fast`](Self::fast) clock.
    #[must_use]
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_fast() {
            "Clock::fast"
        } else {
            "Clock::tokio"
        })
    }
}

/// A point in time as backends see it: nanoseconds on one process-wide
/// monotonic scale, so the GCRA arithmetic runs on plain `u64`s and tests can
/// name any instant exactly ([`Timestamp::from_nanos`]).
///
/// Tokio instants convert both ways ([`From<Instant>`](#impl-From%3CInstant%3E-for-Timestamp),
/// [`to_instant`](Self::to_instant)); the scale is anchored at the first
/// conversion in the process, biased so that instants from before it (a paused
/// test clock started earlier) still map to positive values.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_freqlimit::clock::Timestamp;
///
/// let now = Instant::now();
/// let ts = Timestamp::from(now);
/// assert_eq!(ts.to_instant(), now);
/// assert_eq!((ts + Duration::from_millis(5)).to_instant(), now + Duration::from_millis(5));
/// assert_eq!(Timestamp::from_nanos(10).as_nanos(), 10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

/// Where the anchor instant sits on the `u64` scale: about 146 years of room
/// before it, 438 after.
const BIAS: u64 = 1 << 62;

fn anchor() -> std::time::Instant {
    static ANCHOR: OnceLock<std::time::Instant> = OnceLock::new();
    *ANCHOR.get_or_init(std::time::Instant::now)
}

impl Timestamp {
    /// Tokio's current time ([`tokio::time::Instant::now`]), which follows
    /// `tokio::time::pause()`.
    #[must_use]
    #[inline]
    pub fn now() -> Self {
        Self::from(Instant::now())
    }

    /// The timestamp `nanos` nanoseconds from the start of the scale.
    #[must_use]
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds from the start of the scale: what [`crate::gcra`] computes with.
    #[must_use]
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The Tokio instant of this timestamp (for timers), saturating at the ends of
    /// what `Instant` can hold.
    #[must_use]
    pub fn to_instant(self) -> Instant {
        let anchor = anchor();
        let std = if self.0 >= BIAS {
            let after = Duration::from_nanos(self.0 - BIAS);
            anchor
                .checked_add(after)
                .or_else(|| anchor.checked_add(FAR_FUTURE))
        } else {
            anchor.checked_sub(Duration::from_nanos(BIAS - self.0))
        };
        std.map_or_else(|| Instant::from_std(anchor), Instant::from_std)
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    #[inline]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// How far ahead a deadline that overflows `Instant` is put (30 years, as Tokio
/// does for its "far future").
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

impl From<Instant> for Timestamp {
    #[inline]
    fn from(instant: Instant) -> Self {
        let anchor = anchor();
        let instant = instant.into_std();
        // Two calls into std's `Instant` arithmetic; the fast clock avoids them.
        let nanos = match instant.checked_duration_since(anchor) {
            Some(after) => BIAS.saturating_add(crate::nanos::from_duration(after)),
            None => BIAS.saturating_sub(crate::nanos::from_duration(anchor - instant)),
        };
        Self(nanos)
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Self;

    /// Saturating: a timestamp never wraps.
    #[inline]
    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(crate::nanos::from_duration(rhs)))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Self;

    /// Saturating: a timestamp never wraps.
    #[inline]
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0.saturating_sub(crate::nanos::from_duration(rhs)))
    }
}
