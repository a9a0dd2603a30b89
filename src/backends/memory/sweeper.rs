//! The background sweeper: drops drained keys every `sweeper_interval`, off
//! the request path, and stops when the backend is dropped.

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{InMemoryBackend, Inner};
use crate::clock::Timestamp;

impl<K> InMemoryBackend<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Starts the sweeper once, from the first reservation for a key made inside a
    /// Tokio runtime. Out of line: inlined, it gave every reservation a
    /// 400-byte stack frame and six saved registers.
    #[cold]
    #[inline(never)]
    pub(super) fn start_sweeper(&self) {
        let Some(period) = self.inner.sweeper_interval else {
            self.inner.sweeper_started.store(true, Ordering::Relaxed);
            return;
        };
        // Outside a runtime there is nowhere to run the task; try again next call.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut slot = self
            .inner
            .sweeper
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.inner.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Inner<K>> = Arc::downgrade(&self.inner);
        let task = runtime.spawn(async move {
            let start = tokio::time::Instant::now() + period;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // The backend is gone: so is the reason to sweep.
                let Some(inner) = weak.upgrade() else { break };
                // The time of the decisions, not the timer's: one time base.
                inner.sweep(inner.clock.now());
            }
        });
        *slot = Some(task.abort_handle());
    }
}

impl<K> Inner<K>
where
    K: Hash + Eq + Clone,
{
    /// Drops every key drained by `now` (plus `idle_ttl`); returns how many.
    pub(super) fn sweep(&self, now: Timestamp) -> usize {
        let now = now.as_nanos();
        let mut removed = 0;
        self.tats.retain(|key, tat| {
            let keep = tat.get_mut().saturating_add(self.idle_ttl) > now;
            if !keep {
                removed += 1;
                if let Some(bound) = &self.bound {
                    bound.forget(key);
                }
            }
            keep
        });
        if let Some(bound) = &self.bound {
            bound.removed(removed);
            // Overflow buckets are not keys: not counted in what is returned.
            bound.sweep_groups(now, self.idle_ttl);
        }
        // Holes that have ended serve no one; a key's holes lie below its TAT,
        // so a swept key's are among them.
        self.holes.sweep(now);
        removed
    }
}
