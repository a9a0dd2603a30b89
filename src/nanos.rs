//! Time as integer nanoseconds: the unit of every decision. A leaf: it uses
//! nothing of the crate.

use std::time::Duration;

/// Converts a duration to nanoseconds, saturating at `u64::MAX` (about 584 years).
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(tower_freqlimit::nanos::from_duration(Duration::from_millis(1)), 1_000_000);
/// assert_eq!(tower_freqlimit::nanos::from_duration(Duration::MAX), u64::MAX);
/// ```
#[must_use]
#[inline]
pub const fn from_duration(d: Duration) -> u64 {
    // u64 arithmetic: cheaper than going through `as_nanos()`'s u128.
    match d.as_secs().checked_mul(1_000_000_000) {
        Some(secs) => secs.saturating_add(d.subsec_nanos() as u64),
        None => u64::MAX,
    }
}

/// Whole seconds, rounded up: what `Retry-After` carries.
#[must_use]
#[inline]
pub(crate) const fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + (d.subsec_nanos() > 0) as u64
}
