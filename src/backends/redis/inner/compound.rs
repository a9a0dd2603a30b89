//! A compound reservation on Redis: one script call for every limit
//! (`compound.lua`), under the failure policy, the negative cache kept true
//! for the single calls on the same keys.

use std::sync::Arc;

use super::Inner;
use crate::backends::compound::CompoundAdmission;
use crate::backends::redis::conn::{Arg, classify};
use crate::backends::redis::future::RedisCompoundFuture;
use crate::backends::redis::policy::RedisClock;
use crate::backends::redis::script::{CompoundDecision, Micros};
use crate::backends::redis::stats::bump;
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::compound::MAX_LIMITS;
use crate::params::FreqLimitParams;

impl Inner {
    /// [`CompoundBackend::reserve_compound`](crate::backends::compound::CompoundBackend::reserve_compound)
    /// of the Redis keys `keys` (1 to `MAX_LIMITS`, checked to be a compound
    /// whose keys share a slot) under `params` (the first `keys.len()`):
    /// one script call, under the failure policy.
    pub(in crate::backends::redis) fn start_compound(
        self: &Arc<Self>,
        keys: Vec<Vec<u8>>,
        params: [FreqLimitParams; MAX_LIMITS],
        now: Timestamp,
        request: Reserve,
    ) -> RedisCompoundFuture {
        if self.circuit.is_open() {
            let down = self.circuit.reject(&self.counters);
            return RedisCompoundFuture::ready(self.failed_compound(down, &params[..keys.len()]));
        }
        let inner = Arc::clone(self);
        let asked = std::time::Instant::now();
        RedisCompoundFuture::pending(inner.compound(keys, params, now, request, asked))
    }

    async fn compound(
        self: Arc<Self>,
        keys: Vec<Vec<u8>>,
        params: [FreqLimitParams; MAX_LIMITS],
        now: Timestamp,
        request: Reserve,
        asked: std::time::Instant,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        let len = keys.len();
        let params = &params[..len];
        let mut ms = [Micros::new(&params[0], &request); MAX_LIMITS];
        for (m, p) in ms.iter_mut().zip(params) {
            *m = Micros::new(p, &request);
        }
        let ms = &ms[..len];
        let mut args = Vec::with_capacity(3 + 3 * len);
        args.extend([
            self.now_arg(now),
            Arg::Num(self.ttl_slack_ms()),
            ms[0].max_wait.map_or(Arg::None, Arg::Num),
        ]);
        for m in ms {
            args.extend([Arg::Num(m.tau), Arg::Num(m.incr), Arg::Num(m.last)]);
        }
        let names: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        bump(&self.counters.script_calls, 1);
        let reply = self.eval(&self.compound, &names, &args).await;
        let decision = match reply {
            Ok(Ok(value)) => CompoundDecision::parse(&value, len),
            Ok(Err(err)) => Err(classify(err)),
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Timeout,
                format!(
                    "no answer from Redis within {:?}; the compound reservation may or may not have been made",
                    self.timeout
                ),
            )),
        };
        let decision = match decision {
            Ok(decision) => decision,
            Err(err) => return self.failed_compound(err, params),
        };
        if let Some(cache) = &self.cache {
            // Not asked before the call (a compound's answer depends on every
            // limit), but kept true for the single calls on these keys.
            match decision {
                CompoundDecision::Rejected {
                    limit, reset_after, ..
                } => cache.remember(&keys[limit], self.tat_bounds(now, asked, reset_after)),
                CompoundDecision::Admitted { len, parts, .. } => {
                    for (key, (reset_after, _, end)) in keys.iter().zip(&parts[..len]) {
                        if end.is_some() {
                            cache.refresh(key, self.tat_bounds(now, asked, *reset_after));
                        }
                    }
                }
                CompoundDecision::CostExceedsCapacity { .. } => {}
            }
        }
        let admission = decision.into_result(ms, params, &request)?;
        if !admission.delay().is_zero() && self.clock != RedisClock::LimiterTimestamp {
            // As for one limit: the slot counts from the server's now, which
            // is at most the reply's arrival.
            let rtt = crate::nanos::from_duration(asked.elapsed());
            let delay = crate::nanos::from_duration(admission.delay()).saturating_add(rtt);
            return Ok(admission.with_delay(delay));
        }
        Ok(admission)
    }

    /// A compound Redis could not decide, under the failure policy: the
    /// error, or every limit let through unchecked (fail-open), nothing
    /// stored and nothing to refund.
    fn failed_compound(
        &self,
        err: BackendError,
        params: &[FreqLimitParams],
    ) -> Result<CompoundAdmission, FreqLimitError> {
        self.fail(err)?;
        let mut parts = [Admission::fail_open(&params[0]); MAX_LIMITS];
        for (part, p) in parts.iter_mut().zip(params) {
            *part = Admission::fail_open(p);
        }
        Ok(CompoundAdmission::from_admissions(
            0,
            &parts[..params.len()],
        ))
    }
}
