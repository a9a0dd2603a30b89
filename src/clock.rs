//! Where limiters read the time.
//!
//! Every decision needs the current time once, and every program keeps its
//! rate-limit state on **one time base**: the decisions, the waits and the
//! in-memory backend's sweeper all read the clock of the backend
//! ([`FreqLimitBackend::clock`](crate::FreqLimitBackend::clock)), which is
//! [`Clock::new`] unless you give the backend another.
//!
//! * **In a normal build** [`Clock::new`] reads the CPU's time-stamp counter
//!   through [`quanta`](https://docs.rs/quanta) ([`Clock::fast`]): one
//!   unserialized counter read and a multiply, about 3× cheaper than
//!   `clock_gettime` on this project's benchmark machine (a VM whose vDSO uses
//!   the serializing `rdtscp`). It is calibrated once per process against the
//!   system's monotonic clock and shared by every clock of the process, so two
//!   limiters never disagree. Where the counter is not usable (no invariant
//!   TSC), quanta falls back to the monotonic clock.
//! * **With the `test-util` feature** [`Clock::new`] is Tokio's clock
//!   ([`Clock::tokio`]), which follows `tokio::time::pause()` and `advance()`,
//!   so tests are exact to the nanosecond. Enable it where you test, as Tokio
//!   asks for its own `test-util`:
//!
//!   ```toml
//!   [dependencies]
//!   tower-freqlimit = "0.1"
//!
//!   [dev-dependencies]
//!   tower-freqlimit = { version = "0.1", features = ["test-util"] }
//!   tokio = { version = "1", features = ["test-util"] }
//!   ```
//!
//!   Cargo's feature resolver builds `cargo test` (tests, examples, benches)
//!   with it and `cargo build`/`cargo run` without it, so one program never
//!   holds two time bases. Without the feature, `tokio::time::pause()` does
//!   not move the limiter's time: a paused test then waits in real time.
//!
//! Waits are timed on Tokio's timer: a wait of `d` on the counter's time base
//! sleeps `d` on Tokio's and, on waking, checks the counter again and sleeps
//! the rest if the two clocks drifted apart (they differ by the counter's
//! calibration error, parts per million of the wait), so a request never goes
//! before its slot on the time base its slot was decided on.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A time source: the time base of a backend's state, which
/// [`FreqLimit`](crate::FreqLimit) and [`FreqLimitLayer`](crate::FreqLimitLayer)
/// read (see the [module docs](self)). Cloning is cheap (a few words).
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::clock::Clock;
///
/// let clock = Clock::new();
/// // The time-stamp counter in a normal build, Tokio's clock with `test-util`.
/// assert_eq!(clock.is_fast(), !cfg!(feature = "test-util"));
/// let (a, b) = (clock.now(), clock.now());
/// assert!(a <= b);
/// // Both kinds give timestamps on (nearly) the same scale.
/// let (fast, tokio) = (Clock::fast().now(), Clock::tokio().now());
/// assert!(fast.max(tokio).saturating_duration_since(fast.min(tokio)) < Duration::from_millis(50));
/// ```
#[derive(Clone)]
pub struct Clock {
    tsc: Option<Tsc>,
}

/// The process's calibrated time-stamp counter: a counter reading `raw_origin`
/// was taken at timestamp `origin`; `mult` is nanoseconds per 2^32 ticks.
#[derive(Clone)]
struct Tsc {
    counter: quanta::Clock,
    raw_origin: u64,
    origin: u64,
    mult: u64,
}

/// How far the counter's rate may differ from Tokio's clock, in parts per
/// million: the calibration error (a few ppm) and NTP slewing the system
/// clock (at most 500 ppm), with room to spare.
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::clock::DRIFT_BOUND_PPM;
///
/// // Over a one-second wait the counter and Tokio's clock differ by at most 1 ms.
/// let wait = Duration::from_secs(1);
/// assert_eq!(wait * DRIFT_BOUND_PPM as u32 / 1_000_000, Duration::from_millis(1));
/// ```
pub const DRIFT_BOUND_PPM: u64 = 1_000;

/// How long the counter is calibrated over, once per process.
const CALIBRATION: Duration = Duration::from_millis(10);

/// A paired reading is taken once its two reads of std's clock lie this close
/// (nanoseconds).
const PAIRED_WITHIN: u64 = 2_000;

impl Tsc {
    /// The counter of this process, calibrated on first use, then shared.
    fn process() -> &'static Self {
        static TSC: OnceLock<Tsc> = OnceLock::new();
        TSC.get_or_init(Self::calibrate)
    }

    /// Puts the counter on the timestamp scale against std's monotonic clock,
    /// from two paired readings [`CALIBRATION`] apart (plus quanta's own
    /// calibration, a few milliseconds). quanta's scale alone comes from about
    /// half a millisecond of readings and was measured 600 ppm off on a loaded
    /// machine; pairs 10 ms apart, each read within a few microseconds, put
    /// the error near 1 ppm. Where quanta fell back to a clock that counts
    /// nanoseconds, the same arithmetic gives a scale of 1.
    fn calibrate() -> Self {
        let counter = quanta::Clock::new();
        let (raw_origin, origin) = Self::paired(&counter);
        std::thread::sleep(CALIBRATION);
        let (raw_later, later) = Self::paired(&counter);
        let ticks = raw_later.saturating_sub(raw_origin).max(1);
        let nanos = later.saturating_sub(origin);
        // Nanoseconds per 2^32 ticks.
        #[allow(clippy::cast_possible_truncation, reason = "a few ns per tick at most")]
        let mult = ((u128::from(nanos) << 32) / u128::from(ticks)) as u64;
        Self {
            counter,
            raw_origin,
            origin,
            mult,
        }
    }

    /// A counter reading and the timestamp of the same instant: the counter
    /// read between two reads of std's clock that lie close together (a
    /// preemption between them is retried), dated at the first of them. The
    /// date is then at most the pair's width behind, never ahead: a clock
    /// behind admits a call late, never early.
    fn paired(counter: &quanta::Clock) -> (u64, u64) {
        let mut best = (u64::MAX, 0, 0);
        for _ in 0..100 {
            let before = Timestamp::from_std(std::time::Instant::now()).0;
            let raw = counter.raw();
            let after = Timestamp::from_std(std::time::Instant::now()).0;
            let width = after.saturating_sub(before);
            if width < best.0 {
                best = (width, raw, before);
            }
            if width <= PAIRED_WITHIN {
                break;
            }
        }
        (best.1, best.2)
    }

    /// One counter read (a call into quanta), then a subtract, a 64×64
    /// multiply, a shift and an add: no second call to scale the delta.
    #[inline(always)]
    fn now(&self) -> u64 {
        let ticks = self.counter.raw().saturating_sub(self.raw_origin);
        #[allow(clippy::cast_possible_truncation, reason = "< 2^64 ns for centuries")]
        let elapsed = ((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64;
        // The origin is about 2^62 and `elapsed` stays under 2^62 for 146
        // years: no overflow to guard against.
        self.origin.wrapping_add(elapsed)
    }
}

impl Clock {
    /// The program's clock: [`fast`](Self::fast) in a normal build,
    /// [`tokio`](Self::tokio) with the `test-util` feature (see the
    /// [module docs](self)). What backends use unless told otherwise.
    #[must_use]
    pub fn new() -> Self {
        if cfg!(feature = "test-util") {
            Self::tokio()
        } else {
            Self::fast()
        }
    }

    /// [`tokio::time::Instant::now`]: follows `tokio::time::pause()`. The
    /// default with the `test-util` feature.
    #[must_use]
    pub fn tokio() -> Self {
        Self { tsc: None }
    }

    /// The time-stamp counter, via `quanta`, calibrated once per process and
    /// shared by every clock of the process. Does not follow
    /// `tokio::time::pause()`. The default in a normal build.
    ///
    /// The first call in a process takes 10 to 20 milliseconds (calibration,
    /// a sleep of 10 ms and quanta's own); later calls are cheap. Its rate
    /// agrees with std's monotonic clock to a few parts per million at
    /// calibration; the system clock itself may be slewed by NTP by up to
    /// 500 ppm, so over a wait the two may differ by up to [`DRIFT_BOUND_PPM`]
    /// parts per million of the wait, which waits absorb (see
    /// [`wake_at`](Self::wake_at)).
    #[must_use]
    pub fn fast() -> Self {
        Self {
            tsc: Some(Tsc::process().clone()),
        }
    }

    /// The current time.
    #[inline]
    #[must_use]
    pub fn now(&self) -> Timestamp {
        match &self.tsc {
            None => Timestamp::from(Instant::now()),
            Some(tsc) => Timestamp(tsc.now()),
        }
    }

    /// Whether this is the [`fast`](Self::fast) clock.
    #[must_use]
    pub fn is_fast(&self) -> bool {
        self.tsc.is_some()
    }

    /// The Tokio instant at which to wake for `deadline` on this clock: exact
    /// for Tokio's clock; for the counter, now on Tokio's clock plus what is
    /// left on the counter (so the two clocks' drift counts only over the
    /// wait, never over the process's life). Check [`now`](Self::now) on
    /// waking: the counter may be a little behind.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_freqlimit::clock::Clock;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let clock = Clock::new();
    /// let deadline = clock.now() + Duration::from_millis(5);
    /// while clock.now() < deadline {
    ///     tokio::time::sleep_until(clock.wake_at(deadline)).await;
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn wake_at(&self, deadline: Timestamp) -> Instant {
        match &self.tsc {
            None => deadline.to_instant(),
            Some(tsc) => {
                let left = deadline.saturating_duration_since(Timestamp(tsc.now()));
                let now = Instant::now();
                now.checked_add(left).unwrap_or(now + FAR_FUTURE)
            }
        }
    }

    /// Sleeps until this clock reaches `deadline` (on Tokio's timer, checking
    /// this clock on each wake: see [`wake_at`](Self::wake_at)).
    pub(crate) async fn sleep_until(&self, deadline: Timestamp) {
        while self.now() < deadline {
            tokio::time::sleep_until(self.wake_at(deadline)).await;
        }
    }
}

impl Default for Clock {
    /// [`Clock::new`].
    fn default() -> Self {
        Self::new()
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
/// test clock started earlier) still map to positive values. The counter of
/// [`Clock::fast`] is put on the same scale when it is calibrated; its
/// timestamps then follow the counter, and drift from Tokio's instants by
/// the calibration error: time a wait with [`Clock::wake_at`], not
/// [`to_instant`](Self::to_instant).
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
    /// The current time on the program's clock ([`Clock::new`]): the
    /// time-stamp counter in a normal build, Tokio's clock (which follows
    /// `tokio::time::pause()`) with the `test-util` feature.
    #[must_use]
    #[inline]
    pub fn now() -> Self {
        if cfg!(feature = "test-util") {
            Self::from(Instant::now())
        } else {
            Self(Tsc::process().now())
        }
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
        Self::from_std(instant.into_std())
    }
}

impl Timestamp {
    /// A std instant on the scale (two calls into std's `Instant` arithmetic;
    /// the counter avoids them).
    #[inline]
    fn from_std(instant: std::time::Instant) -> Self {
        let anchor = anchor();
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
