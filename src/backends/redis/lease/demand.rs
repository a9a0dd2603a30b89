//! When a key is hot enough to lease: its requests per interval here.

/// How many requests a key sees here, per interval `T`, judged once a window.
#[derive(Debug, Clone, Copy)]
pub(in crate::backends::redis) struct Demand {
    since: u64,
    count: u64,
    hot: bool,
    /// The last rate judged, in thousandths of a request per interval.
    rate: u64,
}

impl Demand {
    pub(in crate::backends::redis) const fn new(now: u64) -> Self {
        Self {
            since: now,
            count: 0,
            hot: false,
            rate: 0,
        }
    }

    /// Counts a request at `now` (ns); at the end of a window, judges the
    /// rate: hot from `min` requests per interval (`interval` ns), cold again
    /// below `min / 2`. Returns whether the key is hot.
    pub(in crate::backends::redis) fn tick(
        &mut self,
        now: u64,
        window: u64,
        interval: u64,
        min: u32,
    ) -> bool {
        self.count += 1;
        let span = now.saturating_sub(self.since);
        let window_full =
            u128::from(self.count) * u128::from(interval) >= u128::from(min) * u128::from(window);
        // The window's worth already: judged without waiting for its end.
        if span >= window || window_full {
            // Requests per interval, in thousandths.
            let rate =
                u128::from(self.count) * u128::from(interval) * 1_000 / u128::from(span.max(1));
            let min = u128::from(min) * 1_000;
            // (Judged early, the rate is above min: a window's worth in
            // less than a window.)
            self.hot = if self.hot {
                rate * 2 >= min
            } else {
                rate >= min
            };
            self.rate = u64::try_from(rate).unwrap_or(u64::MAX);
            self.since = now;
            self.count = 0;
        }
        self.hot
    }

    pub(in crate::backends::redis) const fn is_hot(&self) -> bool {
        self.hot
    }

    /// The slots a lease of `slots` at most should take for this demand:
    /// what it would use (a request per slot at most), at least 2.
    pub(in crate::backends::redis) fn lease_size(&self, slots: u32) -> u32 {
        let wanted = (u64::from(slots) * self.rate).div_ceil(1_000);
        u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .clamp(2, slots.max(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn demand_turns_hot_at_min_and_cold_below_half() {
        let (window, interval) = (100 * MS, 10 * MS);
        let mut d = Demand::new(0);
        // 4 requests per interval: hot at the 20th, the window's worth,
        // half-way through the window.
        for i in 1..=19 {
            assert!(!d.tick(i * 5 * MS / 2, window, interval, 2), "{i}");
        }
        assert!(d.tick(50 * MS, window, interval, 2));
        // A lease then takes all it may.
        assert_eq!(d.lease_size(50), 50);
        // 1 per interval over the next window, half of min: still hot.
        for i in 1..=10 {
            d.tick(50 * MS + i * 10 * MS, window, interval, 2);
        }
        assert!(d.is_hot());
        // Then half of that: cold.
        for i in 1..=5 {
            d.tick(150 * MS + i * 20 * MS, window, interval, 2);
        }
        assert!(!d.is_hot());

        // 19 in a window: not hot.
        let mut slow = Demand::new(0);
        for i in 1..=19 {
            slow.tick(i * 5 * MS, window, interval, 2);
        }
        slow.tick(110 * MS, window, interval, 2);
        assert!(!slow.is_hot());
        // 10 in exactly a window: judged at its end, not hot.
        let mut half = Demand::new(0);
        for i in 1..=10 {
            half.tick(i * 10 * MS, window, interval, 2);
        }
        assert!(!half.is_hot());

        // A lease takes what the demand would use: 40 of 50 slots at 0.8
        // per interval (hot from 1, cold below 0.5).
        let mut cooling = Demand::new(0);
        cooling.hot = true;
        for i in 1..=8 {
            cooling.tick(i * 12_500_000, 100 * MS, interval, 1);
        }
        assert!(cooling.is_hot());
        assert_eq!(cooling.lease_size(50), 40);
    }
}
