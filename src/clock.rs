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
//! instant when the clock is made, and returns Tokio instants, so it plugs into
//! the same backends and timers. The price: it does **not** follow
//! `tokio::time::pause()`, and it may drift from the system's monotonic clock by
//! the TSC calibration error (parts per million), which shifts wake-ups by as
//! much. Use it in production where the request rate makes the clock read
//! matter; keep the default in tests. Use one kind of clock per backend: mixing
//! them mixes two time bases.

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
/// // Both are Tokio instants on (nearly) the same time base.
/// assert!(a.max(b) - a.min(b) < std::time::Duration::from_millis(50));
/// ```
#[derive(Clone, Default)]
pub struct Clock {
    fast: Option<FastClock>,
}

#[derive(Clone)]
struct FastClock {
    tsc: quanta::Clock,
    raw_origin: u64,
    origin: Instant,
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
        let origin = Instant::now();
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
    pub fn now(&self) -> Instant {
        match &self.fast {
            None => Instant::now(),
            Some(fast) => {
                let elapsed = fast.tsc.delta_as_nanos(fast.raw_origin, fast.tsc.raw());
                fast.origin + Duration::from_nanos(elapsed)
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
