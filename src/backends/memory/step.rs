//! One GCRA step on an in-memory TAT: the compare-and-swap loop every path
//! ends in, and the decision rebuilt from a hole path's spot.

use std::sync::atomic::{AtomicU64, Ordering};

use super::compound;
use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
use crate::gcra;
use crate::gcra::holes::Spot;
use crate::params::FreqLimitParams;

/// The decision a hole path made at `spot` (see [`Spot`]), rebuilt here so
/// that it reaches the caller in registers, as the fast path's does.
#[inline(always)]
pub(super) fn decided_at(
    spot: Spot,
    now: u64,
    params: &FreqLimitParams,
    request: &Reserve,
) -> Result<Admission, FreqLimitError> {
    Ok(spot.decide(now, params, request)?.admission)
}

/// One GCRA step on an atomic TAT: load, decide, compare-and-swap, repeat if
/// another thread got there first.
#[inline(always)]
pub(super) fn update(
    tat: &AtomicU64,
    now: u64,
    params: &FreqLimitParams,
    request: &Reserve,
) -> Result<Admission, FreqLimitError> {
    // Relaxed is enough: the TAT is the only data, and every CAS on one atomic
    // sees a single total order of its values.
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        // A compound is deciding on this key: wait for its few nanoseconds.
        if current == compound::LOCKED {
            current = compound::wait_unlocked(tat);
        }
        // A stored 0 (the global bucket's start) is in the past: a full bucket.
        let reserved = gcra::reserve(Some(current), now, params, request)?;
        let Some(new_tat) = reserved.new_tat else {
            return Ok(reserved.admission);
        };
        match tat.compare_exchange_weak(current, new_tat, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(reserved.admission),
            Err(actual) => current = actual,
        }
    }
}
