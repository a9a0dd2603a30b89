//! Per-request params for a compound layer (tiers): [`CompoundParamsFor`],
//! [`LimitParams`], and the params a request was decided with ([`Tier`]).

use crate::backends::compound::CompoundBackend;
use crate::compound::CompoundLimit;
use crate::gcra::compound::MAX_LIMITS;
use crate::params::FreqLimitParams;

/// Gives a request its own params in some limits of a compound (tiers: a paid
/// user's higher per-user limit under the same global limit), for
/// [`CompoundLimitLayer::params_for`](super::CompoundLimitLayer::params_for).
///
/// One entry per limit, in the compound's order (`N` is the number of keys
/// the layer's key function returns, so the two arrays cannot differ in
/// length); `None` keeps that limit's own params. The buckets stay the same:
/// a user whose tier changes keeps the state of its keys, read under the new
/// params.
///
/// Implemented for closures `Fn(&Req) -> [Option<FreqLimitParams>; N]` and
/// for [`LimitParams`] (the default: every limit's own params).
///
/// ```
/// use tower_freqlimit::FreqLimitParams;
/// use tower_freqlimit::layer::compound::CompoundParamsFor;
///
/// const PAID: FreqLimitParams = FreqLimitParams::per_second(20);
/// // Requests are (user id, paid); limits are per-user, then global.
/// let tiers = |req: &(u64, bool)| [if req.1 { Some(PAID) } else { None }, None];
/// assert_eq!(tiers.params_for(&(7, true)), [Some(PAID), None]);
/// assert_eq!(tiers.params_for(&(8, false)), [None, None]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot give a `{Req}` its params in a compound of {N} limits",
    label = "not a per-request params hook for this compound layer",
    note = "a params hook is a closure `Fn(&{Req}) -> [Option<FreqLimitParams>; {N}]`: one entry per limit, in the compound's order, as many as the key function's keys (`None`: that limit's own params)"
)]
pub trait CompoundParamsFor<Req, const N: usize> {
    /// The params for `req` in each limit, in order; `None`: the limit's
    /// own.
    fn params_for(&self, req: &Req) -> [Option<FreqLimitParams>; N];
}

// Not recommended in errors: a closure with the wrong array length then reads
// as "cannot give its params in a compound of N limits", not as "expected a
// closure returning an array of another length".
#[diagnostic::do_not_recommend]
impl<F, Req, const N: usize> CompoundParamsFor<Req, N> for F
where
    F: Fn(&Req) -> [Option<FreqLimitParams>; N],
{
    fn params_for(&self, req: &Req) -> [Option<FreqLimitParams>; N] {
        self(req)
    }
}

/// Every request gets every limit's own params (the default of
/// [`CompoundLimitLayer`](super::CompoundLimitLayer)): nothing is called and
/// nothing is copied.
///
/// ```
/// use tower_freqlimit::layer::compound::{CompoundParamsFor, LimitParams};
///
/// assert_eq!(CompoundParamsFor::<&str, 2>::params_for(&LimitParams, &"any"), [None, None]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitParams;

impl<Req, const N: usize> CompoundParamsFor<Req, N> for LimitParams {
    #[inline]
    fn params_for(&self, _: &Req) -> [Option<FreqLimitParams>; N] {
        [None; N]
    }
}

/// The params a request is decided with: the compound's own (`Own`), or,
/// when its [`CompoundParamsFor`] changed any, one per limit.
#[derive(Debug, Clone, Copy)]
// `repr(u8)`: a tag of its own, not a niche in the params, so that `OWN` is
// one byte written, not 160 bytes copied, on every request without a tier.
#[repr(u8)]
pub(super) enum Tier {
    /// The compound's own params.
    Own,
    /// One per limit.
    Changed([FreqLimitParams; MAX_LIMITS]),
}

impl Tier {
    /// The compound's own params.
    pub(super) const OWN: Self = Self::Own;

    /// `limits`' params with `changes` (one per limit, `None`: unchanged).
    #[inline]
    pub(super) fn new<B: CompoundBackend, const N: usize>(
        limits: &CompoundLimit<B>,
        changes: [Option<FreqLimitParams>; N],
    ) -> Self {
        let own = limits.all_params();
        match own.first() {
            Some(first) if changes.iter().any(Option::is_some) => {
                let mut params = [*first; MAX_LIMITS];
                for (i, slot) in params.iter_mut().enumerate() {
                    if let Some(own) = own.get(i) {
                        *slot = changes.get(i).copied().flatten().unwrap_or(*own);
                    }
                }
                Self::Changed(params)
            }
            _ => Self::OWN,
        }
    }

    /// The params, one per limit of `limits`.
    #[inline]
    pub(super) fn params<'a, B: CompoundBackend>(
        &'a self,
        limits: &'a CompoundLimit<B>,
    ) -> &'a [FreqLimitParams] {
        match self {
            Self::Changed(params) => params.get(..limits.len()).unwrap_or(params),
            Self::Own => limits.all_params(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::memory::InMemoryBackend;

    #[test]
    fn a_tier_changes_only_the_limits_it_names() {
        let (a, b, paid) = (
            FreqLimitParams::per_second(1),
            FreqLimitParams::per_second(2),
            FreqLimitParams::per_second(3),
        );
        let limits = CompoundLimit::new(InMemoryBackend::<u8>::new())
            .limit("a", a)
            .limit("b", b);
        assert_eq!(Tier::new(&limits, [None, None]).params(&limits), [a, b]);
        assert!(
            matches!(Tier::new(&limits, [None, None]), Tier::Own),
            "nothing copied"
        );
        assert_eq!(
            Tier::new(&limits, [Some(paid), None]).params(&limits),
            [paid, b]
        );
        assert_eq!(
            Tier::new(&limits, [None, Some(paid)]).params(&limits),
            [a, paid]
        );
        let empty = CompoundLimit::new(InMemoryBackend::<u8>::new());
        assert!(Tier::new(&empty, [Some(paid)]).params(&empty).is_empty());
    }
}
