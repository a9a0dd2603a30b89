//! The Lua scripts, their arguments in microseconds, and their replies.

use std::time::Duration;

use redis::Value;

use crate::backends::compound::CompoundAdmission;
use crate::decision::Rejection;
use crate::decision::{Admission, RefundToken, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::compound::MAX_LIMITS;
use crate::params::FreqLimitParams;

/// The GCRA step, run atomically on the server (see `reserve.lua`).
pub(super) const RESERVE_LUA: &str =
    concat!(include_str!("prelude.lua"), include_str!("reserve.lua"));
/// The refund: the TAT lowered, or a hole recorded (see `refund.lua`).
pub(super) const REFUND_LUA: &str =
    concat!(include_str!("prelude.lua"), include_str!("refund.lua"));
/// A hold: the TAT pushed to at least a given time (see `hold.lua`).
pub(super) const HOLD_LUA: &str = concat!(include_str!("prelude.lua"), include_str!("hold.lua"));
/// The reservations queued for one key, decided in order (see `batch.lua`).
pub(super) const BATCH_LUA: &str = concat!(include_str!("prelude.lua"), include_str!("batch.lua"));
/// A lease: `n` slots of one key (see `lease.lua`).
pub(super) const LEASE_LUA: &str = concat!(include_str!("prelude.lua"), include_str!("lease.lua"));
/// A compound: one decision over several keys (see `compound.lua`).
pub(super) const COMPOUND_LUA: &str =
    concat!(include_str!("prelude.lua"), include_str!("compound.lua"));

/// How the scripts' error reply for a value they did not write begins, after
/// the `ERR` code (see `corrupt` in `prelude.lua`).
pub(super) const CORRUPT: &str = "tower-freqlimit: corrupt value: ";

/// The largest number the scripts handle: 2^53 µs (about 285 years), below which
/// Lua's doubles hold every integer exactly. Arguments are capped here and the
/// scripts' sums saturate here.
pub(super) const MAX_MICROS: u64 = 1 << 53;

/// A script and its SHA-1, for `EVALSHA` with an `EVAL` fallback.
pub(super) struct Script {
    pub(super) source: &'static str,
    pub(super) sha: String,
}

impl Script {
    pub(super) fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// A request's figures in whole microseconds, as the server computes with them.
///
/// `T` is rounded **up** to the microsecond and `tau` is `(burst - 1) * T` of
/// that rounded `T`: the server applies the same `burst` at a rate at most the
/// asked one, so it never admits more than the in-memory backend's guarantee
/// (at most `burst + w / T` calls in any window `w`). When `T` is a whole number
/// of microseconds (every `per_second(n)` with `n` dividing 10^6, every
/// `per_minute`/`per_hour` up to a million) nothing is rounded and the decisions
/// equal the in-memory backend's to the nanosecond. `max_wait` is rounded
/// **down**: a call never waits longer than it allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Micros {
    pub(super) interval: u64,
    pub(super) tau: u64,
    /// `cost * T`.
    pub(super) incr: u64,
    /// `(cost - 1) * T`: how far past the TAT the last unit of the cost lands.
    pub(super) last: u64,
    pub(super) max_wait: Option<u64>,
}

impl Micros {
    pub(super) fn new(params: &FreqLimitParams, request: &Reserve) -> Self {
        let interval = params.interval_nanos().div_ceil(1_000).clamp(1, MAX_MICROS);
        let cap = |v: u64| v.min(MAX_MICROS);
        let cost = u64::from(request.cost);
        Self {
            interval,
            tau: cap(interval.saturating_mul(u64::from(params.burst() - 1))),
            incr: cap(interval.saturating_mul(cost)),
            last: cap(interval.saturating_mul(cost.saturating_sub(1))),
            max_wait: request
                .max_wait
                .map(|w| cap(crate::nanos::from_duration(w) / 1_000)),
        }
    }

    /// Unit calls that pass at once for a key owing `owed` µs (see
    /// [`Admission::remaining`]).
    pub(super) fn remaining(&self, owed: u64) -> u32 {
        if owed > self.tau {
            0
        } else {
            u32::try_from((self.tau - owed) / self.interval + 1).unwrap_or(u32::MAX)
        }
    }

    /// The largest cost these figures admit within `max_wait`.
    fn max_cost(&self, burst: u32, max_wait: u64) -> u32 {
        u32::try_from(u64::from(burst).saturating_add(max_wait / self.interval)).unwrap_or(u32::MAX)
    }
}

/// What the reservation script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Admitted {
        delay: u64,
        reset_after: u64,
        /// The span the reservation took (see `RefundToken`); `end` is
        /// `None` when it took nothing (cost 0).
        start: u64,
        end: Option<u64>,
    },
    Rejected {
        retry_after: u64,
        reset_after: u64,
    },
    CostExceedsCapacity,
}

fn protocol(what: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::Protocol,
        format!("unexpected reply from the reservation script: {what}"),
    )
}

fn int(value: &Value) -> Result<i64, BackendError> {
    match value {
        Value::Int(n) => Ok(*n),
        other => Err(protocol(&format!("{other:?} instead of an integer"))),
    }
}

fn micros(value: &Value) -> Result<u64, BackendError> {
    let n = int(value)?;
    u64::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_MICROS)
        .ok_or_else(|| protocol(&format!("{n} is out of range")))
}

impl Decision {
    /// Reads the script's reply; anything unexpected is a `Protocol` error, never a
    /// panic.
    pub(super) fn parse(reply: &Value) -> Result<Self, BackendError> {
        let Value::Array(items) = reply else {
            return Err(protocol(&format!("{reply:?} instead of an array")));
        };
        match (items.first().map(int).transpose()?, items.len()) {
            (Some(0), 5) => Ok(Self::Admitted {
                delay: micros(&items[1])?,
                reset_after: micros(&items[2])?,
                start: micros(&items[3])?,
                end: match int(&items[4])? {
                    -1 => None,
                    _ => Some(micros(&items[4])?),
                },
            }),
            (Some(1), 3) => Ok(Self::Rejected {
                retry_after: micros(&items[1])?,
                reset_after: micros(&items[2])?,
            }),
            (Some(2), 1) => Ok(Self::CostExceedsCapacity),
            _ => Err(protocol(&format!("{reply:?}"))),
        }
    }

    /// The decision as the limiter sees it, in nanoseconds (µs × 1000).
    pub(super) fn into_result(
        self,
        m: &Micros,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Admission, FreqLimitError> {
        const NS: u64 = 1_000;
        match self {
            Self::Admitted {
                delay,
                reset_after,
                start,
                end,
            } => Ok(Admission::from_parts(
                delay * NS,
                reset_after * NS,
                params.burst(),
                m.interval * NS,
                RefundToken { start, end },
            )),
            Self::Rejected {
                retry_after,
                reset_after,
            } => Err(FreqLimitError::Rejected(Rejection {
                retry_after: Duration::from_micros(retry_after),
                remaining: m.remaining(reset_after),
                reset_after: Duration::from_micros(reset_after),
                limit: 0,
            })),
            Self::CostExceedsCapacity => Err(FreqLimitError::CostExceedsCapacity {
                cost: request.cost,
                max_cost: m.max_cost(params.burst(), m.max_wait.unwrap_or(MAX_MICROS)),
            }),
        }
    }
}

/// What the lease script took (see `lease.lua`): the slots, where they start
/// on the TAT axis, and the server's time (µs). Anything unexpected is a
/// `Protocol` error.
pub(super) fn parse_lease(reply: &Value) -> Result<(u32, u64, u64), BackendError> {
    match reply {
        Value::Array(items) if items.len() == 3 => {
            let slots = int(&items[0])?;
            let slots =
                u32::try_from(slots).map_err(|_| protocol(&format!("{slots} slots in a lease")))?;
            Ok((slots, micros(&items[1])?, micros(&items[2])?))
        }
        _ => Err(protocol(&format!("{reply:?} instead of a lease"))),
    }
}

/// The batch script's replies, one per caller (see `batch.lua`), each read
/// by [`Decision::parse`].
pub(super) fn parse_batch(reply: &Value, len: usize) -> Result<&[Value], BackendError> {
    match reply {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(protocol(&format!("{reply:?} instead of {len} decisions"))),
    }
}

/// What the compound script decided (see `compound.lua`), limits numbered
/// from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per call, on the stack for a moment: boxing would allocate per call"
)]
pub(super) enum CompoundDecision {
    Admitted {
        delay: u64,
        decided_by: usize,
        len: usize,
        /// Per limit: `reset_after`, and the span (`end` `None` for cost 0).
        parts: [(u64, u64, Option<u64>); MAX_LIMITS],
    },
    Rejected {
        limit: usize,
        retry_after: u64,
        reset_after: u64,
    },
    CostExceedsCapacity {
        limit: usize,
    },
}

impl CompoundDecision {
    /// Reads the script's reply for a compound of `len` limits; anything
    /// unexpected is a `Protocol` error, never a panic.
    pub(super) fn parse(reply: &Value, len: usize) -> Result<Self, BackendError> {
        let Value::Array(items) = reply else {
            return Err(protocol(&format!("{reply:?} instead of an array")));
        };
        let index = |value: &Value| -> Result<usize, BackendError> {
            usize::try_from(int(value)?)
                .ok()
                .filter(|&i| i < len)
                .ok_or_else(|| protocol(&format!("{value:?} is not a limit of {len}")))
        };
        match (items.first().map(int).transpose()?, items.len()) {
            (Some(0), n) if n == 3 + 3 * len && len <= MAX_LIMITS => {
                let mut parts = [(0, 0, None); MAX_LIMITS];
                for (i, part) in parts.iter_mut().enumerate().take(len) {
                    let at = 3 + 3 * i;
                    *part = (
                        micros(&items[at])?,
                        micros(&items[at + 1])?,
                        match int(&items[at + 2])? {
                            -1 => None,
                            _ => Some(micros(&items[at + 2])?),
                        },
                    );
                }
                Ok(Self::Admitted {
                    delay: micros(&items[1])?,
                    decided_by: index(&items[2])?,
                    len,
                    parts,
                })
            }
            (Some(1), 4) => Ok(Self::Rejected {
                limit: index(&items[1])?,
                retry_after: micros(&items[2])?,
                reset_after: micros(&items[3])?,
            }),
            (Some(2), 2) => Ok(Self::CostExceedsCapacity {
                limit: index(&items[1])?,
            }),
            _ => Err(protocol(&format!("{reply:?}"))),
        }
    }

    /// The decision as the caller sees it, in nanoseconds: `ms` and `params`
    /// are the limits' figures, in order.
    pub(super) fn into_result(
        self,
        ms: &[Micros],
        params: &[FreqLimitParams],
        request: &Reserve,
    ) -> Result<CompoundAdmission, FreqLimitError> {
        const NS: u64 = 1_000;
        match self {
            Self::Admitted {
                delay,
                decided_by,
                len,
                parts,
            } => {
                let mut admissions = [Admission::fail_open(&params[0]); MAX_LIMITS];
                for i in 0..len {
                    let (reset_after, start, end) = parts[i];
                    admissions[i] = Admission::from_parts(
                        delay * NS,
                        reset_after * NS,
                        params[i].burst(),
                        ms[i].interval * NS,
                        RefundToken { start, end },
                    );
                }
                Ok(CompoundAdmission::from_admissions(
                    decided_by,
                    &admissions[..len],
                ))
            }
            Self::Rejected {
                limit,
                retry_after,
                reset_after,
            } => Err(FreqLimitError::Rejected(Rejection {
                retry_after: Duration::from_micros(retry_after),
                remaining: ms[limit].remaining(reset_after),
                reset_after: Duration::from_micros(reset_after),
                // Below `MAX_LIMITS`, which fits in a byte.
                limit: limit as u8,
            })),
            Self::CostExceedsCapacity { limit } => {
                let m = &ms[limit];
                Err(FreqLimitError::CostExceedsCapacity {
                    cost: request.cost,
                    max_cost: m.max_cost(params[limit].burst(), m.max_wait.unwrap_or(MAX_MICROS)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_t_up_and_max_wait_down() {
        let params = FreqLimitParams::per_second(3).with_burst(2);
        let m = Micros::new(
            &params,
            &Reserve::new().cost(2).max_wait(Duration::from_nanos(1_999)),
        );
        assert_eq!(
            m,
            Micros {
                interval: 333_334,
                tau: 333_334,
                incr: 666_668,
                last: 333_334,
                max_wait: Some(1),
            }
        );
        // A sub-microsecond interval is one microsecond.
        let fast = FreqLimitParams::new(1, Duration::from_nanos(10), 1);
        assert_eq!(Micros::new(&fast, &Reserve::new()).interval, 1);
        // Huge figures are capped where Lua's doubles are still exact.
        let slow = FreqLimitParams::new(1, Duration::from_secs(3_600), 1);
        let m = Micros::new(&slow, &Reserve::new().cost(u32::MAX));
        assert_eq!(m.incr, MAX_MICROS);
    }

    #[test]
    fn the_scripts_say_corrupt_as_the_backend_reads_it() {
        let reply = format!("redis.error_reply('ERR {CORRUPT}' .. why)");
        for script in [
            RESERVE_LUA,
            REFUND_LUA,
            HOLD_LUA,
            COMPOUND_LUA,
            BATCH_LUA,
            LEASE_LUA,
        ] {
            assert!(script.contains(&reply));
        }
    }

    #[test]
    fn the_scripts_keep_as_many_holes_as_the_crate() {
        let line = format!("local MAX_HOLES = {}\n", crate::gcra::holes::MAX_HOLES);
        assert!(
            include_str!("prelude.lua").contains(&line),
            "{line:?} missing"
        );
    }

    #[test]
    fn bad_replies_are_protocol_errors() {
        let bad = [
            Value::Nil,
            Value::Int(0),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(0), Value::Int(1)]),
            Value::Array(vec![Value::Int(7)]),
            Value::Array(vec![Value::Int(1), Value::Int(-5), Value::Int(0)]),
            Value::Array(vec![Value::Int(1), Value::Okay, Value::Int(0)]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
                Value::Int(i64::MAX),
            ]),
        ];
        for reply in &bad {
            let err = Decision::parse(reply).unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Protocol, "{reply:?}");
        }
        let ok = Value::Array(vec![
            Value::Int(0),
            Value::Int(10),
            Value::Int(20),
            Value::Int(0),
            Value::Int(-1),
        ]);
        assert_eq!(
            Decision::parse(&ok).unwrap(),
            Decision::Admitted {
                delay: 10,
                reset_after: 20,
                start: 0,
                end: None
            }
        );
    }

    #[test]
    fn compound_replies_are_read_and_bad_ones_are_protocol_errors() {
        let ints = |v: &[i64]| Value::Array(v.iter().map(|&n| Value::Int(n)).collect());
        assert_eq!(
            CompoundDecision::parse(&ints(&[1, 1, 30, 40]), 2).unwrap(),
            CompoundDecision::Rejected {
                limit: 1,
                retry_after: 30,
                reset_after: 40
            }
        );
        assert_eq!(
            CompoundDecision::parse(&ints(&[2, 0]), 1).unwrap(),
            CompoundDecision::CostExceedsCapacity { limit: 0 }
        );
        let CompoundDecision::Admitted {
            delay,
            decided_by,
            len,
            parts,
        } = CompoundDecision::parse(&ints(&[0, 5, 1, 10, 0, 20, 15, 7, -1]), 2).unwrap()
        else {
            panic!("admitted");
        };
        assert_eq!((delay, decided_by, len), (5, 1, 2));
        assert_eq!(&parts[..2], &[(10, 0, Some(20)), (15, 7, None)]);
        let bad = [
            ints(&[]),
            ints(&[0, 5, 0, 10, 0, 20]), // one part for two limits
            ints(&[0, 5, 2, 10, 0, 20, 15, 7, -1]), // decided by a third
            ints(&[1, 2, 30, 40]),       // refused by a third
            ints(&[1, -1, 30, 40]),
            ints(&[2, 0, 1]),
            ints(&[0, -5, 0, 10, 0, 20, 15, 7, -1]),
            ints(&[3]),
        ];
        for reply in &bad {
            let err = CompoundDecision::parse(reply, 2).unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::Protocol, "{reply:?}");
        }
    }
}
