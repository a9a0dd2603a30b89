//! What limiters report through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`), for whichever recorder the application installs
//! (Prometheus, StatsD, ...).
//!
//! | name | kind | counts |
//! |---|---|---|
//! | `freqlimit_allowed_total` | counter | calls admitted at once |
//! | `freqlimit_delayed_total` | counter | calls admitted after a wait |
//! | `freqlimit_rejected_total` | counter | calls refused: over the limit (bounded wait), an impossible cost, a missing key |
//! | `freqlimit_backend_errors_total` | counter | backend failures (the call was refused, or let through by a fail-open backend) |
//! | `freqlimit_delay_seconds` | histogram | the wait of every admitted call (0 for those admitted at once) |
//!
//! Every series has one label, `limiter`: the name given with
//! [`FreqLimitLayer::name`](crate::layer::FreqLimitLayer::name) or
//! [`FreqLimit::name`](crate::FreqLimit::name) (`"default"` if none).
//! Keys are never labels: they may be personal data, and one series per key
//! would flood the recorder.
//!
//! The handles are registered with the recorder installed when the limiter
//! first decides a call, then reused: recording costs no lookup and no
//! allocation. A call counted as delayed is counted when its slot is reserved,
//! not when it wakes.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use metrics_util::debugging::DebuggingRecorder;
//! use tower_freqlimit::backends::memory::InMemoryBackend;
//! use tower_freqlimit::{FreqLimit, FreqLimitParams};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//!     runtime.block_on(async {
//!         let limiter = FreqLimit::new(FreqLimitParams::per_second(1), InMemoryBackend::<u8>::new())
//!             .name("chat");
//!         limiter.try_acquire(&1).await.unwrap();
//!         limiter.try_acquire(&1).await.unwrap_err();
//!     });
//! });
//! let counts: Vec<(String, String)> = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .filter(|(key, ..)| key.key().name().ends_with("_total"))
//!     .map(|(key, _, _, value)| (key.key().name().to_string(), format!("{value:?}")))
//!     .collect();
//! assert!(counts.contains(&("freqlimit_allowed_total".into(), "Counter(1)".into())));
//! assert!(counts.contains(&("freqlimit_rejected_total".into(), "Counter(1)".into())));
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::decision::Admission;
use crate::error::FreqLimitError;

/// A limiter's name and, with the `metrics` feature, its metric handles.
#[derive(Clone)]
pub(crate) struct Reporter {
    name: Cow<'static, str>,
    #[cfg(feature = "metrics")]
    handles: std::sync::Arc<std::sync::OnceLock<Handles>>,
}

impl Default for Reporter {
    fn default() -> Self {
        Self::named(Cow::Borrowed("default"))
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(feature = "metrics")]
struct Handles {
    allowed: metrics::Counter,
    delayed: metrics::Counter,
    rejected: metrics::Counter,
    backend_errors: metrics::Counter,
    delay: metrics::Histogram,
}

impl Reporter {
    pub(crate) fn named(name: Cow<'static, str>) -> Self {
        Self {
            name,
            #[cfg(feature = "metrics")]
            handles: std::sync::Arc::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[cfg(feature = "metrics")]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let limiter = self.name.clone();
            Handles {
                allowed: metrics::counter!("freqlimit_allowed_total", "limiter" => limiter.clone()),
                delayed: metrics::counter!("freqlimit_delayed_total", "limiter" => limiter.clone()),
                rejected: metrics::counter!("freqlimit_rejected_total", "limiter" => limiter.clone()),
                backend_errors: metrics::counter!(
                    "freqlimit_backend_errors_total",
                    "limiter" => limiter.clone()
                ),
                delay: metrics::histogram!("freqlimit_delay_seconds", "limiter" => limiter),
            }
        })
    }

    /// A call admitted, at once or after `admission.delay()`.
    #[inline]
    pub(crate) fn admitted(&self, admission: &Admission) {
        #[cfg(feature = "metrics")]
        {
            let handles = self.handles();
            if admission.is_fail_open() {
                handles.backend_errors.increment(1);
            }
            let delay = admission.delay();
            if delay.is_zero() {
                handles.allowed.increment(1);
            } else {
                handles.delayed.increment(1);
            }
            handles.delay.record(delay.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = admission;
    }

    /// A call let through without a limit (a missing key under
    /// `MissingKey::Allow`): counted as allowed, with no wait.
    #[inline]
    pub(crate) fn unlimited(&self) {
        #[cfg(feature = "metrics")]
        {
            let handles = self.handles();
            handles.allowed.increment(1);
            handles.delay.record(0.0);
        }
    }

    /// A call refused.
    #[inline]
    pub(crate) fn refused(&self, refusal: &FreqLimitError) {
        #[cfg(feature = "metrics")]
        match refusal {
            FreqLimitError::Backend(_) => self.handles().backend_errors.increment(1),
            _ => self.handles().rejected.increment(1),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = refusal;
    }
}
