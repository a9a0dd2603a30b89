//! `compound.lua` against `gcra::compound::reserve_all`, to the microsecond,
//! through single calls, refunds and holes (a proptest on a real server).

use std::time::Duration;

use proptest::prelude::*;
use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundAdmission, CompoundBackend, Part};
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::gcra::compound::{Limit, reserve_all};
use tower_freqlimit::gcra::holes::{GiveBack, Hole, Holes};
use tower_freqlimit::{Admission, FreqLimitError, FreqLimitParams, RefundToken, Reserve};

use super::compound::T0;
use super::exact_backend;
use super::proptest_on_a_server;

/// One call of a history: which limits (a bit mask over the case's limits),
/// after how long, at what cost and patience.
#[derive(Debug, Clone)]
struct Call {
    mask: u8,
    dt_us: u64,
    cost: u32,
    max_wait_us: Option<u64>,
    /// A single reservation on the first limit of the mask instead.
    single: bool,
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    Call(Call),
    /// Cancels a reservation still standing (the `pick`-th, modulo their
    /// number): a single one, or every part of a compound.
    Refund(usize),
}

fn ops(limits: usize, t_max_us: u64) -> impl Strategy<Value = Vec<Op>> {
    let call = (
        1u8..(1 << limits),
        prop_oneof![Just(0u64), 0..=t_max_us / 2, 0..=2 * t_max_us],
        0u32..=6,
        prop_oneof![Just(None), Just(Some(0)), (0..=3 * t_max_us).prop_map(Some)],
        prop::bool::weighted(0.25),
    )
        .prop_map(|(mask, dt_us, cost, max_wait_us, single)| {
            Op::Call(Call {
                mask,
                dt_us,
                cost,
                max_wait_us,
                single,
            })
        });
    prop::collection::vec(
        prop_oneof![4 => call, 1 => any::<usize>().prop_map(Op::Refund)],
        1..30,
    )
}

/// A key's state in nanoseconds, as the server holds it: its TAT and holes,
/// `None` for no key.
pub(super) type State = Option<(u64, Vec<Hole>)>;

/// Reads a value the scripts wrote ("tat start1 end1 ...", microseconds).
pub(super) fn parse(value: &str) -> State {
    if value == "$-1" {
        return None;
    }
    let fields: Vec<u64> = value
        .split(' ')
        .map(|f| f.parse::<u64>().unwrap() * 1_000)
        .collect();
    assert_eq!(fields.len() % 2, 1, "{value}");
    let holes = fields[1..]
        .chunks(2)
        .map(|span| Hole {
            start: span[0],
            end: span[1],
        })
        .collect();
    Some((fields[0], holes))
}

/// The value the scripts would write for `state`.
pub(super) fn render(state: &State) -> String {
    match state {
        None => "$-1".to_owned(),
        Some((tat, holes)) => std::iter::once(*tat)
            .chain(holes.iter().flat_map(|h| [h.start, h.end]))
            .map(|v| (v / 1_000).to_string())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `spans` as a [`Holes`] (sorted, apart: each given back as a hole).
pub(super) fn holes_of(spans: &[Hole]) -> Holes {
    let mut holes = Holes::new();
    for span in spans {
        let token = RefundToken {
            start: span.start,
            end: Some(span.end),
        };
        assert_eq!(holes.give_back(u64::MAX, token), GiveBack::Hole);
    }
    assert_eq!(holes.as_slice(), spans);
    holes
}

/// A reservation still standing, on Redis, with the model's refund tokens.
enum Made {
    Single(usize, Admission, RefundToken),
    Compound(Vec<usize>, CompoundAdmission, Vec<RefundToken>),
}

/// Redis's refund token (microseconds) in nanoseconds.
pub(super) fn in_nanos(token: RefundToken) -> RefundToken {
    RefundToken {
        start: token.start * 1_000,
        end: token.end.map(|e| e * 1_000),
    }
}

#[test]
fn the_compound_script_agrees_with_reserve_all() {
    let Some((server, rt, config)) = proptest_on_a_server(256) else {
        return;
    };
    // 1 to 4 limits, T in whole microseconds (1 to 200 ms), bursts 1 to 4;
    // the last limit is the global bucket or a key. Single reservations and
    // refunds between the compounds make holes.
    let strategy = (
        prop::collection::vec((1u64..=200_000, 1u32..=4), 1..=4),
        any::<bool>(),
    )
        .prop_flat_map(|(limits, global)| {
            let t_max = limits.iter().map(|l| l.0).max().unwrap();
            let n = limits.len();
            (Just(limits), Just(global), ops(n, t_max))
        });
    proptest!(config, |((limits, global, ops) in strategy)| {
        let params: Vec<FreqLimitParams> = limits
            .iter()
            .map(|&(t, burst)| FreqLimitParams::new(1, Duration::from_micros(t), burst))
            .collect();
        let keys: Vec<Option<String>> = (0..limits.len())
            .map(|i| (!(global && i == limits.len() - 1)).then(|| format!("k{i}")))
            .collect();
        rt.block_on(async {
            let redis = exact_backend(&server).await;
            let names: Vec<String> = keys
                .iter()
                .map(|key| String::from_utf8(redis.redis_key(key.as_deref())).unwrap())
                .collect();
            let read = |i: usize| parse(&server.cmd(&["GET", &names[i]]));
            // What each key should hold, checked after every step.
            let mut expected: Vec<State> = vec![None; limits.len()];
            let mut made: Vec<Made> = Vec::new();
            let mut now = T0;
            for (step, op) in ops.iter().enumerate() {
                let call = match op {
                    Op::Refund(pick) => {
                        if !made.is_empty() {
                            let (key_indices, tokens) = match made.swap_remove(pick % made.len()) {
                                Made::Single(i, got, token) => {
                                    redis.refund(keys[i].as_ref(), &got);
                                    (vec![i], vec![token])
                                }
                                Made::Compound(chosen, got, tokens) => {
                                    let parts: Vec<Option<&String>> = chosen.iter().map(|&i| keys[i].as_ref()).collect();
                                    redis.refund_compound(&parts, &got);
                                    (chosen, tokens)
                                }
                            };
                            redis.refunds_settled().await;
                            for (i, token) in key_indices.into_iter().zip(tokens) {
                                if let Some((tat, spans)) = &mut expected[i] {
                                    let mut holes = holes_of(spans);
                                    if let GiveBack::Lowered(lowered) = holes.give_back(*tat, token) {
                                        *tat = lowered;
                                    }
                                    *spans = holes.as_slice().to_vec();
                                }
                            }
                        }
                        None
                    }
                    Op::Call(call) => Some(call),
                };
                if let Some(call) = call {
                    now += call.dt_us * 1_000;
                    let mut request = Reserve::new().cost(call.cost);
                    if let Some(w) = call.max_wait_us {
                        request = request.max_wait(Duration::from_micros(w));
                    }
                    let chosen: Vec<usize> = (0..limits.len()).filter(|i| call.mask & (1 << i) != 0).collect();
                    // Each chosen key as the server holds it, ended holes
                    // forgotten (as the scripts do before a reservation).
                    let states: Vec<State> = chosen.iter().map(|&i| read(i)).collect();
                    let mut holes: Vec<Holes> = states
                        .iter()
                        .map(|state| {
                            let mut holes = holes_of(state.as_ref().map_or(&[][..], |s| &s.1));
                            holes.forget_past(now);
                            holes
                        })
                        .collect();
                    let tats: Vec<Option<u64>> = states.iter().map(|s| s.as_ref().map(|s| s.0)).collect();
                    let at = Timestamp::from_nanos(now);
                    if call.single {
                        let (i, holes) = (chosen[0], &mut holes[0]);
                        let want = holes.reserve(tats[0], now, &params[i], &request);
                        let got = redis.reserve(keys[i].as_deref(), at, &params[i], request).await;
                        prop_assert_eq!(&got, &want.map(|r| r.admission).map_err(FreqLimitError::from), "step {}: {:?}", step, call);
                        if let (Ok(got), Ok(want)) = (&got, &want) {
                            let token = want.admission.refund_token();
                            prop_assert_eq!(in_nanos(got.refund_token()), token, "step {}", step);
                            if call.cost > 0 {
                                let tat = want.new_tat.or(tats[0]).unwrap();
                                expected[i] = Some((tat, holes.as_slice().to_vec()));
                                made.push(Made::Single(i, *got, token));
                            }
                        }
                    } else {
                        let model: Vec<Limit<'_>> = chosen
                            .iter()
                            .enumerate()
                            .map(|(j, &i)| Limit::new(tats[j], &params[i]).with_holes(holes[j].as_slice()))
                            .collect();
                        let want = reserve_all(&model, now, &request);
                        let parts: Vec<Part<'_, String>> = chosen.iter().map(|&i| Part::new(keys[i].as_ref(), &params[i])).collect();
                        let got = redis.reserve_compound(&parts, at, request).await;
                        match (&got, &want) {
                            (Ok(got), Ok(want)) => {
                                prop_assert_eq!(got, &CompoundAdmission::from_reserved(want), "step {}: {:?}", step, call);
                                let mut tokens = Vec::new();
                                for (g, w) in got.parts().iter().zip(want.admissions()) {
                                    let (g, w) = (in_nanos(g.refund_token()), w.refund_token());
                                    prop_assert_eq!(g, w, "step {}", step);
                                    tokens.push(w);
                                }
                                if call.cost > 0 {
                                    for (j, (&i, charge)) in chosen.iter().zip(want.charges()).enumerate() {
                                        let tat = charge.new_tat().or(tats[j]).unwrap();
                                        holes[j].apply(charge, now);
                                        expected[i] = Some((tat, holes[j].as_slice().to_vec()));
                                    }
                                    made.push(Made::Compound(chosen.clone(), *got, tokens));
                                }
                            }
                            (Err(got), Err(want)) => {
                                // A rejection's equality includes the limit it names.
                                prop_assert_eq!(got, &FreqLimitError::from(want.refusal), "step {}: {:?}", step, call);
                            }
                            _ => prop_assert!(false, "step {}: {:?}: got {:?}, want {:?}", step, call, got, want),
                        }
                    }
                }
                // What the server holds is what the model holds.
                for (i, name) in names.iter().enumerate() {
                    let stored = server.cmd(&["GET", name]);
                    prop_assert_eq!(stored, render(&expected[i]), "step {}: {:?}, limit {}", step, op, i);
                }
            }
            Ok(())
        })?;
    });
}
