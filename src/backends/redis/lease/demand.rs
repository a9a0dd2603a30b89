//! When a key is hot enough to lease: its requests per interval here.

/// How many requests a key sees here, per interval `T`, judged once a window.
#[derive(Debug, Clone, Copy)]
pub(in crate::backends::redis) struct Demand {
    since: u64,
    count: u64,
    hot: bool,
}

impl Demand {
    pub(in crate::backends::redis) const fn new(now: u64) -> Self {
        Self {
            since: now,
            count: 0,
            hot: false,
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
        if span >= window {
            // Requests per interval, in thousandths.
            let rate = u128::from(self.count) * u128::from(interval) * 1_000 / u128::from(span);
            let min = u128::from(min) * 1_000;
            self.hot = if self.hot {
                rate * 2 >= min
            } else {
                rate >= min
            };
            self.since = now;
            self.count = 0;
        } else if !self.hot
            && u128::from(self.count) * u128::from(interval) >= u128::from(min) * u128::from(window)
        {
            // The window's worth already: hot without waiting for its end.
            self.hot = true;
            self.since = now;
            self.count = 0;
        }
        self.hot
    }

    pub(in crate::backends::redis) const fn is_hot(&self) -> bool {
        self.hot
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
        // 2 requests per interval: hot at the 20th, the window's worth.
        for i in 1..=19 {
            assert!(!d.tick(i * 5 * MS, window, interval, 2), "{i}");
        }
        assert!(d.tick(100 * MS, window, interval, 2));
        // 19 in a window: not hot.
        let mut slow = Demand::new(0);
        for i in 1..=19 {
            slow.tick(i * 5 * MS, window, interval, 2);
        }
        slow.tick(110 * MS, window, interval, 2);
        assert!(!slow.is_hot());
        // 10 in the next 100 ms: 1 per interval, half of min: still hot.
        for i in 1..=10 {
            d.tick(100 * MS + i * 10 * MS, window, interval, 2);
        }
        assert!(d.is_hot());
        // Then 5: cold.
        for i in 1..=5 {
            d.tick(200 * MS + i * 20 * MS, window, interval, 2);
        }
        assert!(!d.is_hot());
    }
}
