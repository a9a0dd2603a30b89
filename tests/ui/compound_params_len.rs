// Params for three limits on a layer whose key function gives two keys (a
// compound of two limits).
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::{CompoundLimit, CompoundLimitLayer, FreqLimitParams};

struct Call {
    user: u64,
    paid: bool,
}

const PAID: FreqLimitParams = FreqLimitParams::per_second(10);

fn main() {
    let limits = CompoundLimit::new(InMemoryBackend::<u64>::new())
        .limit("per-user", FreqLimitParams::per_second(1))
        .limit("global", FreqLimitParams::per_second(100));
    let _layer = CompoundLimitLayer::new(limits, |call: &Call| Ok([Some(call.user), None]))
        .params_for(|call: &Call| [call.paid.then_some(PAID), None, None]);
}
