//! The sequential model of compound reservations and the properties held
//! against it (see the parent module).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundAdmission, Part};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::compound::Charge;
use tower_freqlimit::gcra::holes::{GiveBack, Hole, Holes};
use tower_freqlimit::{Admission, FreqLimitError, FreqLimitParams, RefundToken, Reserve};

use crate::refund::{T0, assert_units_within_the_bound, request};

pub(super) const MS: u64 = 1_000_000;
pub(super) const S: u64 = 1_000 * MS;

/// Four keys (the last is the global bucket), each with its own params.
pub(super) const KEYS: usize = 4;

fn key_of(i: usize) -> Option<String> {
    (i + 1 < KEYS).then(|| format!("k{i}"))
}

/// One key's state in the model: its TAT and its holes.
#[derive(Debug, Default, Clone)]
struct KeyModel {
    tat: u64,
    holes: Holes,
}

/// The sequential model: what every call should get, one after the other.
#[derive(Debug, Default)]
struct Model {
    keys: HashMap<usize, KeyModel>,
}

/// What the model expects of a compound call.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Each part's admission (the same delay for all) and refund token.
    Admitted(Vec<(Admission, RefundToken)>),
    /// Refused: nothing is consumed.
    Rejected {
        retry_after: Duration,
        limit: usize,
        remaining: u32,
        reset_after: Duration,
    },
    /// A cost a limit can never admit within the wait.
    Impossible(FreqLimitError),
}

impl Expect {
    fn of(got: &Result<CompoundAdmission, FreqLimitError>) -> Self {
        match got {
            Ok(a) => Self::Admitted(a.parts().iter().map(|p| (*p, p.refund_token())).collect()),
            Err(FreqLimitError::Rejected(r)) => Self::Rejected {
                retry_after: r.retry_after(),
                limit: r.limit(),
                remaining: r.remaining(),
                reset_after: r.reset_after(),
            },
            Err(other) => Self::Impossible(other.clone()),
        }
    }
}

impl Model {
    /// A compound, from the rules, written apart from the crate's:
    /// every instant at which some limit's free span starts to conform is a
    /// candidate, `t` is the first candidate at which every limit has room,
    /// each limit takes its earliest room at `t` that is not early.
    fn compound(
        &mut self,
        parts: &[usize],
        params: &[FreqLimitParams; KEYS],
        now: u64,
        r: &Reserve,
    ) -> Expect {
        // All or nothing: an impossible cost in any limit, first.
        for &k in parts {
            let max_cost = params[k].max_cost(r.max_wait);
            if r.cost > max_cost {
                return Expect::Impossible(FreqLimitError::CostExceedsCapacity {
                    cost: r.cost,
                    max_cost,
                });
            }
        }
        for &k in parts {
            self.keys.entry(k).or_default().holes.forget_past(now);
        }
        let c = u64::from(r.cost.max(1));
        // Per limit: the free spans (holes, unless cost 0, then the tail) and
        // the cost's geometry.
        let spans = |k: usize| -> Vec<(u64, u64, bool)> {
            let m = &self.keys[&k];
            let mut free: Vec<(u64, u64, bool)> = if r.cost == 0 {
                Vec::new()
            } else {
                m.holes
                    .as_slice()
                    .iter()
                    .map(|h| (h.start.max(now), h.end, true))
                    .collect()
            };
            free.push((m.tat.max(now), u64::MAX, false));
            free
        };
        let geometry = |k: usize| {
            let p = &params[k];
            (
                (c - 1) * p.interval_nanos(),
                p.tau_nanos(),
                c * p.interval_nanos(),
            )
        };
        // The earliest room of limit `k` for a call at `e`: (span index, start).
        let room = |k: usize, e: u64| -> Option<(usize, u64)> {
            let (last, tau, need) = geometry(k);
            let lead = last.saturating_sub(tau);
            spans(k).iter().enumerate().find_map(|(i, &(a, end, _))| {
                let s = a.max(e.saturating_sub(lead));
                (s + last <= e + tau && s.checked_add(need).is_some_and(|x| x <= end))
                    .then_some((i, s))
            })
        };
        let conform = |k: usize, a: u64| {
            let (last, tau, _) = geometry(k);
            (a + last).saturating_sub(tau).max(now)
        };
        let mut candidates: Vec<u64> = vec![now];
        for &k in parts {
            candidates.extend(spans(k).iter().map(|&(a, _, _)| conform(k, a)));
        }
        candidates.sort_unstable();
        let t = *candidates
            .iter()
            .find(|&&e| parts.iter().all(|&k| room(k, e).is_some()))
            .unwrap();
        // The limit that decides: the latest on its own (the first of equals).
        let alone = |k: usize| *candidates.iter().find(|&&e| room(k, e).is_some()).unwrap();
        let mut decider = 0;
        for (i, &k) in parts.iter().enumerate() {
            if alone(k) > alone(parts[decider]) {
                decider = i;
            }
        }
        if let Some(max_wait) = r.max_wait
            && t - now > max_wait.as_nanos() as u64
        {
            let p = &params[parts[decider]];
            let owed = self.keys[&parts[decider]].tat.saturating_sub(now);
            let figures = Admission::from_parts(
                0,
                owed,
                p.burst(),
                p.interval_nanos(),
                RefundToken::default(),
            );
            return Expect::Rejected {
                retry_after: Duration::from_nanos(t - now) - max_wait,
                limit: decider,
                remaining: figures.remaining(),
                reset_after: figures.reset_after(),
            };
        }
        let rooms: Vec<(usize, u64, bool, u64)> = parts
            .iter()
            .map(|&k| {
                let (span, s) = room(k, t).unwrap();
                (span, s, spans(k)[span].2, geometry(k).2)
            })
            .collect();
        let mut admitted = Vec::new();
        for (&k, &(span, s, in_hole, need)) in parts.iter().zip(&rooms) {
            let p = &params[k];
            let m = self.keys.get_mut(&k).unwrap();
            let owed = m.tat.saturating_sub(now);
            let figures = |reset, token| {
                (
                    Admission::from_parts(t - now, reset, p.burst(), p.interval_nanos(), token),
                    token,
                )
            };
            if r.cost == 0 {
                admitted.push(figures(
                    owed,
                    RefundToken {
                        start: m.tat,
                        end: None,
                    },
                ));
            } else if in_hole {
                // In a hole: the TAT stays.
                m.holes.apply(
                    &Charge::Hole {
                        index: span,
                        start: s,
                        end: s + need,
                    },
                    now,
                );
                admitted.push(figures(
                    owed,
                    RefundToken {
                        start: s,
                        end: Some(s + need),
                    },
                ));
            } else {
                let base = m.tat.max(now);
                let gap = (s > base).then_some(Hole {
                    start: base,
                    end: s,
                });
                m.holes.apply(
                    &Charge::Tail {
                        gap,
                        new_tat: s + need,
                    },
                    now,
                );
                let start = if gap.is_some() { s } else { m.tat };
                admitted.push(figures(
                    s + need - now,
                    RefundToken {
                        start,
                        end: Some(s + need),
                    },
                ));
                m.tat = s + need;
            }
        }
        Expect::Admitted(admitted)
    }

    /// A single call: holes first (`gcra::holes`).
    fn single(
        &mut self,
        k: usize,
        params: &FreqLimitParams,
        now: u64,
        r: &Reserve,
    ) -> Result<Admission, FreqLimitError> {
        let m = self.keys.entry(k).or_default();
        m.holes.forget_past(now);
        let reserved = m.holes.reserve(Some(m.tat), now, params, r)?;
        if let Some(tat) = reserved.new_tat {
            m.tat = tat;
        }
        Ok(reserved.admission)
    }

    fn refund(&mut self, k: usize, admission: &Admission) {
        let m = self.keys.entry(k).or_default();
        if let GiveBack::Lowered(tat) = m.holes.give_back(m.tat, admission.refund_token()) {
            m.tat = tat;
        }
    }
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    /// Time moves on by `dt`, then a compound over `parts` (distinct keys).
    Compound {
        dt: u64,
        parts: Vec<usize>,
        cost: u32,
        max_wait: Option<u64>,
    },
    /// Time moves on by `dt`, then a single call on one key.
    Single {
        dt: u64,
        key: usize,
        cost: u32,
        max_wait: Option<u64>,
    },
    /// The `n`-th (modulo their number) waiting reservation gives up.
    Cancel(usize),
}

fn params() -> impl Strategy<Value = [FreqLimitParams; KEYS]> {
    let one = (
        prop_oneof![Just(10 * MS), Just(30 * MS), Just(100 * MS), Just(S)],
        1..=4u32,
    )
        .prop_map(|(t, burst)| FreqLimitParams::new(1, Duration::from_nanos(t), burst));
    [one.clone(), one.clone(), one.clone(), one]
}

fn ops(max_cost: u32) -> impl Strategy<Value = Vec<Op>> {
    let wait =
        prop_oneof![3 => Just(None), 1 => Just(Some(0u64)), 1 => (0..=200 * MS).prop_map(Some)];
    let dt = prop_oneof![3 => Just(0u64), 2 => 0..=200 * MS];
    let compound = (
        dt.clone(),
        Just((0..KEYS).collect::<Vec<_>>()).prop_shuffle(),
        1..=KEYS,
        0..=max_cost,
        wait.clone(),
    )
        .prop_map(|(dt, keys, n, cost, max_wait)| Op::Compound {
            dt,
            parts: keys[..n].to_vec(),
            cost,
            max_wait,
        });
    let single =
        (dt, 0..KEYS, 0..=max_cost, wait).prop_map(|(dt, key, cost, max_wait)| Op::Single {
            dt,
            key,
            cost,
            max_wait,
        });
    prop::collection::vec(
        prop_oneof![
            4 => compound,
            2 => single,
            2 => any::<prop::sample::Index>().prop_map(|i| Op::Cancel(i.index(1 << 16))),
        ],
        1..50,
    )
}

/// A reservation still standing: per key, its admission, when it runs, its cost.
#[derive(Debug, Clone)]
pub(super) struct Made {
    pub(super) parts: Vec<(usize, Admission)>,
    pub(super) at: u64,
    pub(super) cost: u32,
    pub(super) cancelled: bool,
}

/// Runs `ops` on a backend and on the model, asserting every decision equal;
/// returns what was admitted.
fn run(params: &[FreqLimitParams; KEYS], ops: &[Op]) -> Result<Vec<Made>, TestCaseError> {
    let backend = InMemoryBackend::<String>::builder()
        .without_sweeper()
        .build();
    let keys: Vec<Option<String>> = (0..KEYS).map(key_of).collect();
    let mut model = Model::default();
    let mut now = T0;
    let mut made: Vec<Made> = Vec::new();
    for op in ops {
        match op {
            Op::Compound {
                dt,
                parts,
                cost,
                max_wait,
            } => {
                now += dt;
                let r = request(*cost, *max_wait);
                let call: Vec<Part<'_, String>> = parts
                    .iter()
                    .map(|&k| Part::new(keys[k].as_ref(), &params[k]))
                    .collect();
                let got = backend.reserve_compound_now(&call, Timestamp::from_nanos(now), r);
                let want = model.compound(parts, params, now, &r);
                prop_assert_eq!(Expect::of(&got), want, "at {} ns: {:?}", now - T0, op);
                if let Ok(a) = &got
                    && *cost > 0
                {
                    made.push(Made {
                        parts: parts
                            .iter()
                            .copied()
                            .zip(a.parts().iter().copied())
                            .collect(),
                        at: now + a.delay().as_nanos() as u64,
                        cost: *cost,
                        cancelled: false,
                    });
                }
            }
            Op::Single {
                dt,
                key,
                cost,
                max_wait,
            } => {
                now += dt;
                let r = request(*cost, *max_wait);
                let got = backend.reserve_now(
                    keys[*key].as_ref(),
                    Timestamp::from_nanos(now),
                    &params[*key],
                    r,
                );
                let want = model.single(*key, &params[*key], now, &r);
                prop_assert_eq!(&got, &want, "at {} ns: {:?}", now - T0, op);
                if let Ok(a) = got {
                    prop_assert_eq!(a.refund_token(), want.unwrap().refund_token());
                    if *cost > 0 {
                        made.push(Made {
                            parts: vec![(*key, a)],
                            at: now + a.delay().as_nanos() as u64,
                            cost: *cost,
                            cancelled: false,
                        });
                    }
                }
            }
            Op::Cancel(n) => {
                let waiting: Vec<usize> = (0..made.len())
                    .filter(|&i| !made[i].cancelled && made[i].at > now)
                    .collect();
                if let Some(&i) = waiting.get(n % waiting.len().max(1)) {
                    for &(k, a) in &made[i].parts {
                        backend.refund(keys[k].as_ref(), &a);
                        model.refund(k, &a);
                    }
                    made[i].cancelled = true;
                }
            }
        }
    }
    Ok(made)
}

/// Asserts that no key admitted more than `burst + w / T` units in any window.
pub(super) fn assert_within_the_bound(
    made: &[Made],
    params: &[FreqLimitParams; KEYS],
) -> Result<(), TestCaseError> {
    for (k, p) in params.iter().enumerate() {
        let admitted = made
            .iter()
            .filter(|m| !m.cancelled && m.parts.iter().any(|(key, _)| *key == k))
            .map(|m| (m.at, u64::from(m.cost)))
            .collect();
        assert_units_within_the_bound(admitted, p, &format!("key {k}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every decision (compound or single, refusals and refund tokens
    /// included) equals the sequential model's, through cancellations.
    #[test]
    fn compounds_decide_as_the_sequential_model((params, ops) in params().prop_flat_map(|p| (Just(p), ops(6)))) {
        run(&params, &ops)?;
    }

    /// No key ever admits more than `burst + w / T` units in a window `w`
    /// (costs within every burst: a larger cost is admitted at one instant,
    /// beyond the bound even alone).
    #[test]
    fn no_limit_exceeds_its_bound_in_any_window(
        (params, ops) in params()
            .prop_map(|mut p| { for q in &mut p { *q = FreqLimitParams::new(1, q.interval(), q.burst().max(2)); } p })
            .prop_flat_map(|p| (Just(p), ops(2)))
    ) {
        let made = run(&params, &ops)?;
        assert_within_the_bound(&made, &params)?;
    }
}
