//! Leases: slots of one hot key taken from Redis in one call and handed out
//! in this process ([`Leases`], the settings; `slots.rs`: one lease and the
//! rule for using its slots; `demand.rs`: when to lease). Pure: times are
//! passed in, nothing here talks to Redis.

mod demand;
mod slots;

use std::time::Duration;

pub(super) use demand::Demand;
pub(super) use slots::{Lease, Take};

/// Opt-in leases for keys this process calls far more often than the limit
/// allows ([`RedisBackendBuilder::leases`](super::RedisBackendBuilder::leases)).
///
/// While a key's demand in this process is at least
/// [`min_demand`](Self::min_demand) requests per interval `T`, the backend
/// takes `n` of the key's future slots from Redis in one script call (a
/// *lease*: the slots of [`length`](Self::length) of the key's time, fewer
/// if the demand measured would not use them all, at most
/// [`max_slots`](Self::max_slots)) and hands them out locally, without a
/// round trip. Slot `i` falls due when a unit call taking it would have been
/// admitted (`c_i`, on the server's clock), and serves one request that
/// arrives within its own interval `[c_i, c_i + T)`; a caller that may wait
/// gets the next slot and waits for `c_i` exactly. A slot nobody used in its
/// interval is lost. No lease is taken for a key whose last call took `T / 4`
/// or more (at `T / 2` its slots could not surely be used in their intervals
/// here; round trips vary), measured on the host's clock, or with
/// [`RedisClock::LimiterTimestamp`](super::RedisClock::LimiterTimestamp) in
/// the callers' time that passed meanwhile.
/// When demand falls below half of `min_demand`, or on
/// [`release_leases`](super::RedisBackend::release_leases), the slots not yet
/// used go back to Redis (as refunds do), for every process to take.
///
/// The bound: in any window `w`, all processes together admit at most
/// `burst + w/T + 1` calls (the `+ 1` is the slack of using a slot anywhere in
/// its interval; the clock offset to the server is measured on each lease
/// call and a slot is only used where it surely lies in its interval). The
/// [guide](crate::guide::redis#hot-keys-batches-and-leases) derives it and
/// says when to choose leases over [batching](super::RedisBackendBuilder::batching).
///
/// ```
/// use std::time::Duration;
/// use tower_freqlimit::backends::redis::{Leases, RedisBackend};
///
/// let builder = RedisBackend::<String>::builder().leases(
///     Leases::new()
///         .length(Duration::from_millis(250))
///         .min_demand(4),
/// );
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Leases {
    pub(super) length: Duration,
    pub(super) max_slots: u32,
    pub(super) min_demand: u32,
    pub(super) window: Duration,
    pub(super) horizon: Duration,
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

impl Leases {
    /// The defaults: leases of 500 ms of the key's time, at most 1024 slots,
    /// from 2 requests per interval, demand measured over 25 ms, no lease
    /// whose first slot is more than 2 s away.
    ///
    /// ```
    /// use tower_freqlimit::backends::redis::Leases;
    /// assert_eq!(Leases::new(), Leases::default());
    /// ```
    pub const fn new() -> Self {
        Self {
            length: Duration::from_millis(500),
            max_slots: 1024,
            min_demand: 2,
            window: Duration::from_millis(25),
            horizon: Duration::from_secs(2),
        }
    }

    /// How much of the key's time one lease covers (default 500 ms; at least
    /// two slots). Longer: fewer calls to Redis, coarser sharing between
    /// processes (each holds `length` of the key's slots at a time).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().length(Duration::from_secs(1));
    /// # let _ = leases;
    /// ```
    pub const fn length(mut self, length: Duration) -> Self {
        self.length = length;
        self
    }

    /// The most slots one lease takes (default 1024, at least 2).
    ///
    /// ```
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().max_slots(64);
    /// # let _ = leases;
    /// ```
    pub const fn max_slots(mut self, max_slots: u32) -> Self {
        self.max_slots = if max_slots < 2 { 2 } else { max_slots };
        self
    }

    /// The demand, in requests per interval `T` of this process for one key,
    /// from which it leases (default 2, at least 1; leasing stops below half
    /// of it). Below 2, a leased slot often sees no request in its interval
    /// and is lost: capacity the other processes could have used.
    ///
    /// ```
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().min_demand(3);
    /// # let _ = leases;
    /// ```
    pub const fn min_demand(mut self, requests_per_interval: u32) -> Self {
        self.min_demand = if requests_per_interval < 1 {
            1
        } else {
            requests_per_interval
        };
        self
    }

    /// How long demand is counted over before it is judged (default 25 ms;
    /// at least four intervals `T`). A key turns hot as soon as its count
    /// reaches `min_demand` per interval of the whole window, before the
    /// window ends.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().window(Duration::from_millis(50));
    /// # let _ = leases;
    /// ```
    pub const fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The furthest ahead a lease may start (default 2 s): when other
    /// processes' leases already reach further, the call takes nothing and
    /// this process asks again when they have run down to it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_freqlimit::backends::redis::Leases;
    /// let leases = Leases::new().horizon(Duration::from_secs(5));
    /// # let _ = leases;
    /// ```
    pub const fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// The slots one lease asks for at interval `interval` µs.
    pub(super) fn slots(&self, interval: u64) -> u32 {
        let n = crate::nanos::from_duration(self.length) / 1_000 / interval.max(1);
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .clamp(2, self.max_slots)
    }

    /// The demand window, in nanoseconds, at interval `interval` µs.
    pub(super) fn window_nanos(&self, interval: u64) -> u64 {
        crate::nanos::from_duration(self.window).max(interval.saturating_mul(4_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn settings_size_the_lease() {
        let leases = Leases::new();
        // 500 ms at T = 10 ms.
        assert_eq!(leases.slots(10_000), 50);
        assert_eq!(leases.slots(1), 1024);
        assert_eq!(leases.length(Duration::ZERO).slots(10_000), 2);
        assert_eq!(leases.window_nanos(10_000), 40 * MS);
        assert_eq!(leases.window_nanos(5_000), 25 * MS);
        assert_eq!(leases.window_nanos(100_000), 400 * MS);
    }
}
