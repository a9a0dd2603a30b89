//! The failure policy applied to a call Redis could not decide: counted,
//! logged (a fail-open warning at most once a second), and answered.

use std::sync::atomic::Ordering;

use super::Inner;
use crate::backends::redis::policy::FailurePolicy;
use crate::backends::redis::stats::bump;
use crate::decision::Admission;
use crate::error::{BackendError, FreqLimitError};
use crate::params::FreqLimitParams;

impl Inner {
    /// An admission for a call Redis could not decide, or the error, as the
    /// failure policy says.
    pub(super) fn failed(
        &self,
        err: BackendError,
        params: &FreqLimitParams,
    ) -> Result<Admission, FreqLimitError> {
        self.fail(err).map(|()| Admission::fail_open(params))
    }

    /// Applies the failure policy to a call Redis could not decide: the error
    /// (fail-closed), or `Ok` for a call to let through (fail-open), counted
    /// and logged.
    pub(super) fn fail(&self, err: BackendError) -> Result<(), FreqLimitError> {
        bump(&self.counters.failures, 1);
        match self.policy {
            FailurePolicy::Closed => {
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    kind = ?err.kind(),
                    error = %err,
                    "Redis could not decide a reservation; refusing the call (fail-closed)"
                );
                Err(FreqLimitError::Backend(err))
            }
            FailurePolicy::Open => {
                bump(&self.counters.fail_open_admissions, 1);
                tracing::debug!(
                    target: "tower_freqlimit::redis",
                    kind = ?err.kind(),
                    error = %err,
                    "Redis could not decide a reservation; letting the call through unchecked (fail-open)"
                );
                // A warning at most once a second, counting the calls since the
                // last one: an outage must be loud, not flood the logs.
                self.unwarned.fetch_add(1, Ordering::Relaxed);
                let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
                let last = self.warned_at.load(Ordering::Relaxed);
                if (last == 0 || now.saturating_sub(last) >= 1_000)
                    && self
                        .warned_at
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    let calls = self.unwarned.swap(0, Ordering::Relaxed);
                    tracing::warn!(
                        target: "tower_freqlimit::redis",
                        kind = ?err.kind(),
                        error = %err,
                        calls,
                        "Redis could not decide reservations; letting calls through unchecked (fail-open)"
                    );
                }
                Ok(())
            }
        }
    }
}
