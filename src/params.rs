//! The limit contract: `limit` events per `period`, with a `burst`.

use std::fmt;
use std::time::Duration;

/// A GCRA limit: `limit` events per `period`, of which `burst` may pass at once.
///
/// From these the algorithm derives two durations:
///
/// * the emission interval `T = period / limit` ([`interval`](Self::interval)): the
///   steady-state spacing between two events;
/// * the tolerance `tau = (burst - 1) * T` ([`tau`](Self::tau)): how far ahead of
///   schedule a caller may run, which is what lets `burst` events through at once.
///
/// Time is kept in whole nanoseconds. When `period` is not a multiple of `limit`, the
/// interval is rounded *up* to the next nanosecond, so the limiter never admits more
/// than `limit` events per `period` over the long run (`per_second(3)` spaces events
/// 333 333 334 ns apart).
///
/// # Constructors
///
/// * [`per_second`](Self::per_second), [`per_minute`](Self::per_minute) and
///   [`per_hour`](Self::per_hour) mean **`n` events per second, minute or hour**
///   (not one event every `n` seconds);
/// * [`new`](Self::new) takes any period and is a `const fn`, so a limit can be a
///   constant, and a constant with bad values does not compile;
/// * [`try_new`](Self::try_new) and [`try_from_secs_f64`](Self::try_from_secs_f64)
///   are for values read at run time (config files, flags): they return a
///   [`ParamsError`] that names the bad field instead of panicking.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::FreqLimitParams;
///
/// // One message per chat per second, as a constant.
/// const PER_CHAT: FreqLimitParams = FreqLimitParams::per_second(1);
/// assert_eq!(PER_CHAT.interval(), Duration::from_secs(1));
///
/// // Twenty per group per minute, three of them at once.
/// let per_group = FreqLimitParams::per_minute(20).with_burst(3);
/// assert_eq!(per_group.interval(), Duration::from_secs(3));
/// assert_eq!(per_group.tau(), Duration::from_secs(6));
///
/// // From configuration: errors name the field.
/// let err = FreqLimitParams::try_new(0, Duration::from_secs(1), 1).unwrap_err();
/// assert_eq!(err.to_string(), "limit must be greater than 0");
/// ```
///
/// A constant with bad values is a compile error:
///
/// ```compile_fail
/// use tower_freqlimit::FreqLimitParams;
/// const BROKEN: FreqLimitParams = FreqLimitParams::per_second(0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FreqLimitParams {
    limit: u32,
    burst: u32,
    period: Duration,
    interval_ns: u64,
    tau_ns: u64,
}

impl FreqLimitParams {
    /// `limit` events per `period`, `burst` of them at once.
    ///
    /// # Panics
    ///
    /// Panics with the [`ParamsError`] message if the values are invalid (see
    /// [`try_new`](Self::try_new)). In a `const` item that panic is a compile error;
    /// use `try_new` for values that come from outside the program.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// const FIVE_PER_TEN_SECONDS: FreqLimitParams =
    ///     FreqLimitParams::new(5, Duration::from_secs(10), 2);
    /// assert_eq!(FIVE_PER_TEN_SECONDS.interval(), Duration::from_secs(2));
    /// ```
    #[must_use]
    #[inline]
    pub const fn new(limit: u32, period: Duration, burst: u32) -> Self {
        match Self::try_new(limit, period, burst) {
            Ok(params) => params,
            Err(err) => panic!("{}", err.message()),
        }
    }

    /// The fallible form of [`new`](Self::new), for values read at run time.
    ///
    /// # Errors
    ///
    /// * [`ParamsError::LimitZero`], [`ParamsError::PeriodZero`],
    ///   [`ParamsError::BurstZero`] for a zero field;
    /// * [`ParamsError::IntervalTooShort`] when `period / limit` is under one
    ///   nanosecond;
    /// * [`ParamsError::OutOfRange`] when the interval or the tolerance does not fit
    ///   in `u64` nanoseconds (about 584 years).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::{FreqLimitParams, ParamsError};
    ///
    /// let params = FreqLimitParams::try_new(2, Duration::from_secs(1), 1)?;
    /// assert_eq!(params.interval(), Duration::from_millis(500));
    ///
    /// assert_eq!(
    ///     FreqLimitParams::try_new(1, Duration::ZERO, 1),
    ///     Err(ParamsError::PeriodZero)
    /// );
    /// # Ok::<(), ParamsError>(())
    /// ```
    pub const fn try_new(limit: u32, period: Duration, burst: u32) -> Result<Self, ParamsError> {
        if limit == 0 {
            return Err(ParamsError::LimitZero);
        }
        if period.is_zero() {
            return Err(ParamsError::PeriodZero);
        }
        if burst == 0 {
            return Err(ParamsError::BurstZero);
        }
        let period_ns = period.as_nanos();
        let limit = limit as u128;
        if period_ns < limit {
            return Err(ParamsError::IntervalTooShort);
        }
        // Rounded up: a truncated interval would admit slightly more than `limit`
        // per `period` over a long run.
        let interval = period_ns.div_ceil(limit);
        let tau = interval * (burst as u128 - 1);
        if interval > u64::MAX as u128 || tau > u64::MAX as u128 {
            return Err(ParamsError::OutOfRange);
        }
        Ok(Self {
            limit: limit as u32,
            burst,
            period,
            interval_ns: interval as u64,
            tau_ns: tau as u64,
        })
    }

    /// Like [`try_new`](Self::try_new) with the period in (possibly fractional)
    /// seconds, as `aiofreqlimit` takes it.
    ///
    /// # Errors
    ///
    /// Those of `try_new`, plus [`ParamsError::PeriodNotFinite`] for a NaN or
    /// infinite period; a negative period is [`ParamsError::PeriodZero`]'s
    /// "period must be greater than 0".
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::{FreqLimitParams, ParamsError};
    ///
    /// let params = FreqLimitParams::try_from_secs_f64(4, 0.5, 1)?;
    /// assert_eq!(params.interval(), Duration::from_millis(125));
    ///
    /// assert_eq!(
    ///     FreqLimitParams::try_from_secs_f64(1, f64::NAN, 1),
    ///     Err(ParamsError::PeriodNotFinite)
    /// );
    /// # Ok::<(), ParamsError>(())
    /// ```
    pub fn try_from_secs_f64(
        limit: u32,
        period_secs: f64,
        burst: u32,
    ) -> Result<Self, ParamsError> {
        if !period_secs.is_finite() {
            return Err(ParamsError::PeriodNotFinite);
        }
        if period_secs <= 0.0 {
            return Err(ParamsError::PeriodZero);
        }
        let period =
            Duration::try_from_secs_f64(period_secs).map_err(|_| ParamsError::OutOfRange)?;
        Self::try_new(limit, period, burst)
    }

    /// `n` events per second, one at a time (`burst` 1).
    ///
    /// # Panics
    ///
    /// Panics (a compile error in a `const`) if `n` is 0 or above 10⁹ (an interval
    /// under one nanosecond).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// // Ten events per second, not one event every ten seconds.
    /// assert_eq!(FreqLimitParams::per_second(10).interval(), Duration::from_millis(100));
    /// ```
    #[must_use]
    pub const fn per_second(n: u32) -> Self {
        Self::new(n, Duration::from_secs(1), 1)
    }

    /// `n` events per minute, one at a time (`burst` 1).
    ///
    /// # Panics
    ///
    /// Panics (a compile error in a `const`) if `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// assert_eq!(FreqLimitParams::per_minute(20).interval(), Duration::from_secs(3));
    /// ```
    #[must_use]
    pub const fn per_minute(n: u32) -> Self {
        Self::new(n, Duration::from_secs(60), 1)
    }

    /// `n` events per hour, one at a time (`burst` 1).
    ///
    /// # Panics
    ///
    /// Panics (a compile error in a `const`) if `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// assert_eq!(FreqLimitParams::per_hour(3600).interval(), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub const fn per_hour(n: u32) -> Self {
        Self::new(n, Duration::from_secs(3600), 1)
    }

    /// The same limit with `burst` events allowed at once.
    ///
    /// # Panics
    ///
    /// Panics (a compile error in a `const`) if `burst` is 0 or the tolerance
    /// overflows; [`try_with_burst`](Self::try_with_burst) returns the error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_freqlimit::FreqLimitParams;
    ///
    /// const API: FreqLimitParams = FreqLimitParams::per_second(10).with_burst(5);
    /// assert_eq!(API.burst(), 5);
    /// ```
    #[must_use]
    pub const fn with_burst(self, burst: u32) -> Self {
        Self::new(self.limit, self.period, burst)
    }

    /// The fallible form of [`with_burst`](Self::with_burst).
    ///
    /// # Errors
    ///
    /// [`ParamsError::BurstZero`] or [`ParamsError::OutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_freqlimit::{FreqLimitParams, ParamsError};
    ///
    /// let params = FreqLimitParams::per_second(1);
    /// assert_eq!(params.try_with_burst(0), Err(ParamsError::BurstZero));
    /// ```
    pub const fn try_with_burst(self, burst: u32) -> Result<Self, ParamsError> {
        Self::try_new(self.limit, self.period, burst)
    }

    /// Events per period.
    ///
    /// ```
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_minute(20).limit(), 20);
    /// ```
    #[must_use]
    #[inline]
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The period over which `limit` events are allowed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_minute(20).period(), Duration::from_secs(60));
    /// ```
    #[must_use]
    #[inline]
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// Events that may pass at once (1 unless set with [`with_burst`](Self::with_burst)).
    ///
    /// ```
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_second(1).burst(), 1);
    /// ```
    #[must_use]
    #[inline]
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval `T = period / limit`, rounded up to whole nanoseconds.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_second(3).interval(), Duration::from_nanos(333_333_334));
    /// ```
    #[must_use]
    #[inline]
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// The tolerance `tau = (burst - 1) * T`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::FreqLimitParams;
    /// let params = FreqLimitParams::per_second(2).with_burst(3);
    /// assert_eq!(params.tau(), Duration::from_secs(1));
    /// ```
    #[must_use]
    #[inline]
    pub const fn tau(&self) -> Duration {
        Duration::from_nanos(self.tau_ns)
    }

    /// [`interval`](Self::interval) in nanoseconds, the unit of [`crate::gcra`].
    ///
    /// ```
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_second(2).interval_nanos(), 500_000_000);
    /// ```
    #[must_use]
    #[inline]
    pub const fn interval_nanos(&self) -> u64 {
        self.interval_ns
    }

    /// [`tau`](Self::tau) in nanoseconds, the unit of [`crate::gcra`].
    ///
    /// ```
    /// # use tower_freqlimit::FreqLimitParams;
    /// assert_eq!(FreqLimitParams::per_second(2).with_burst(2).tau_nanos(), 500_000_000);
    /// ```
    #[must_use]
    #[inline]
    pub const fn tau_nanos(&self) -> u64 {
        self.tau_ns
    }

    /// The largest cost a single call can ever be admitted with when it may wait
    /// at most `max_wait` (`None`: unbounded, so any cost).
    ///
    /// A call of cost `n` made on a full bucket waits `(n - burst) * T`, so with
    /// `max_wait = 0` (reject-only) this is `burst`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::FreqLimitParams;
    /// let params = FreqLimitParams::per_second(1).with_burst(3);
    /// assert_eq!(params.max_cost(Some(Duration::ZERO)), 3);
    /// assert_eq!(params.max_cost(Some(Duration::from_secs(2))), 5);
    /// assert_eq!(params.max_cost(None), u32::MAX);
    /// ```
    #[must_use]
    pub fn max_cost(&self, max_wait: Option<Duration>) -> u32 {
        match max_wait {
            None => u32::MAX,
            Some(wait) => {
                let extra = crate::nanos::from_duration(wait) / self.interval_ns;
                u32::try_from(u64::from(self.burst).saturating_add(extra)).unwrap_or(u32::MAX)
            }
        }
    }
}

/// Why a [`FreqLimitParams`] was refused.
///
/// The messages are those of `aiofreqlimit` where it has one.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::{FreqLimitParams, ParamsError};
///
/// let err = FreqLimitParams::try_new(10, Duration::from_secs(1), 0).unwrap_err();
/// assert_eq!(err, ParamsError::BurstZero);
/// assert_eq!(err.to_string(), "burst must be greater than 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamsError {
    /// `limit` was 0.
    LimitZero,
    /// `period` was zero or negative.
    PeriodZero,
    /// `burst` was 0.
    BurstZero,
    /// `period` was NaN or infinite.
    PeriodNotFinite,
    /// `period / limit` is under one nanosecond, the resolution of the limiter.
    IntervalTooShort,
    /// `period / limit` or `(burst - 1) * period / limit` does not fit in `u64`
    /// nanoseconds (about 584 years).
    OutOfRange,
}

impl ParamsError {
    /// The message, available in `const` contexts (where `Display` is not).
    ///
    /// ```
    /// # use tower_freqlimit::ParamsError;
    /// assert_eq!(ParamsError::LimitZero.message(), "limit must be greater than 0");
    /// ```
    #[must_use]
    pub const fn message(&self) -> &'static str {
        match self {
            Self::LimitZero => "limit must be greater than 0",
            Self::PeriodZero => "period must be greater than 0",
            Self::BurstZero => "burst must be greater than 0",
            Self::PeriodNotFinite => "period must be a finite number of seconds",
            Self::IntervalTooShort => "period / limit must be at least 1 nanosecond",
            Self::OutOfRange => {
                "period / limit and (burst - 1) * period / limit must fit in u64 nanoseconds"
            }
        }
    }
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParamsError {}
