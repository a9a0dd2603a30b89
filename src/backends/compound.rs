//! Compound reservations: one decision over several limits at once
//! ([`CompoundBackend`]), for [`CompoundLimit`](crate::CompoundLimit).

use std::future::Future;

use super::FreqLimitBackend;
use crate::clock::Timestamp;
use crate::decision::{Admission, Reserve};
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::compound::{CompoundReserved, MAX_LIMITS};
use crate::params::FreqLimitParams;

/// One limit of a compound reservation: the key it counts under (`None`: the
/// global bucket) and its params.
///
/// ```
/// use tower_freqlimit::backends::compound::Part;
/// use tower_freqlimit::FreqLimitParams;
///
/// let per_chat = FreqLimitParams::per_second(1);
/// let part = Part::new(Some(&"chat:42"), &per_chat);
/// assert_eq!(part.key, Some(&"chat:42"));
/// ```
#[derive(Debug)]
pub struct Part<'a, K> {
    /// The limit's key; `None` is the backend's global bucket.
    pub key: Option<&'a K>,
    /// The limit's params.
    pub params: &'a FreqLimitParams,
}

impl<K> Clone for Part<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Part<'_, K> {}

impl<'a, K> Part<'a, K> {
    /// The limit `params` counted under `key`.
    ///
    /// ```
    /// # use tower_freqlimit::backends::compound::Part;
    /// # use tower_freqlimit::FreqLimitParams;
    /// let global = FreqLimitParams::per_second(30);
    /// assert!(Part::<String>::new(None, &global).key.is_none());
    /// ```
    #[must_use]
    pub const fn new(key: Option<&'a K>, params: &'a FreqLimitParams) -> Self {
        Self { key, params }
    }
}

/// An admitted compound call: its one wait and, per limit, what that limit
/// tells the caller (`remaining`, `reset_after`, the refund token).
///
/// ```
/// use tower_freqlimit::backends::compound::{CompoundBackend, Part};
/// use tower_freqlimit::backends::memory::InMemoryBackend;
/// use tower_freqlimit::clock::Timestamp;
/// use tower_freqlimit::{FreqLimitParams, Reserve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_freqlimit::FreqLimitError> {
/// let backend = InMemoryBackend::<&str>::new();
/// let (per_chat, global) = (FreqLimitParams::per_second(1), FreqLimitParams::per_second(30));
/// let parts = [Part::new(Some(&"chat:42"), &per_chat), Part::new(None, &global)];
/// let admitted = backend.reserve_compound(&parts, Timestamp::now(), Reserve::new()).await?;
/// assert!(admitted.delay().is_zero());
/// assert_eq!(admitted.parts()[1].remaining(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CompoundAdmission {
    decided_by: u8,
    len: u8,
    parts: [Admission; MAX_LIMITS],
}

impl PartialEq for CompoundAdmission {
    fn eq(&self, other: &Self) -> bool {
        self.decided_by == other.decided_by && self.parts() == other.parts()
    }
}

impl Eq for CompoundAdmission {}

impl CompoundAdmission {
    /// How long the call waits for its slot (the same in every limit).
    #[must_use]
    pub fn delay(&self) -> std::time::Duration {
        self.parts[0].delay()
    }

    /// The index of the limit the call waits for: the one whose own wait
    /// (alone) is the longest, the first of equals (0 when nothing waits).
    #[must_use]
    pub const fn decided_by(&self) -> usize {
        self.decided_by as usize
    }

    /// Each limit's admission, in the compound's order.
    #[must_use]
    pub fn parts(&self) -> &[Admission] {
        &self.parts[..usize::from(self.len)]
    }

    /// Builds the admission a backend reports from the pure decision.
    #[must_use]
    pub fn from_reserved(reserved: &CompoundReserved) -> Self {
        Self::from_admissions(reserved.decided_by(), reserved.admissions())
    }

    /// The same admission with another delay (nanoseconds from when the
    /// call asked) in every limit: a remote backend adds the round trip.
    #[cfg(feature = "redis")]
    pub(crate) fn with_delay(mut self, delay: u64) -> Self {
        for part in &mut self.parts[..usize::from(self.len)] {
            *part = part.with_delay(delay);
        }
        self
    }

    /// The admission of a compound of `len` limits that said `parts`
    /// (the rest unused), waiting for limit `decided_by`.
    #[inline]
    pub(crate) const fn from_array(
        decided_by: usize,
        len: usize,
        parts: [Admission; MAX_LIMITS],
    ) -> Self {
        Self {
            // Both below `MAX_LIMITS`, which fits in a byte.
            decided_by: decided_by as u8,
            len: len as u8,
            parts,
        }
    }

    /// The admission of a compound whose limits said `parts` (1 to
    /// [`MAX_LIMITS`], each with the common delay), waiting for limit
    /// `decided_by`: for a backend that decides elsewhere (Redis).
    pub(crate) fn from_admissions(decided_by: usize, admissions: &[Admission]) -> Self {
        debug_assert!(!admissions.is_empty() && admissions.len() <= MAX_LIMITS);
        debug_assert!(decided_by < admissions.len());
        let mut parts = [admissions[0]; MAX_LIMITS];
        parts[..admissions.len()].copy_from_slice(admissions);
        Self {
            // Both below `MAX_LIMITS`, which fits in a byte.
            decided_by: decided_by as u8,
            len: admissions.len() as u8,
            parts,
        }
    }
}

/// A backend that decides several limits in one step: the storage side of
/// [`CompoundLimit`](crate::CompoundLimit).
///
/// [`reserve_compound`](Self::reserve_compound) must be atomic over all the
/// parts' keys: concurrent calls (compound or single, on any of the keys)
/// behave as if made one after the other, and a refusal stores nothing in
/// any limit. Its decision is [`gcra::compound::reserve_all`](crate::gcra::compound::reserve_all).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot decide several limits at once",
    label = "not a `CompoundBackend`",
    note = "`InMemoryBackend` and `RedisBackend` (feature `redis`) are compound backends"
)]
pub trait CompoundBackend: FreqLimitBackend {
    /// What [`reserve_compound`](Self::reserve_compound) returns.
    type CompoundFuture: Future<Output = Result<CompoundAdmission, FreqLimitError>> + Send + 'static;

    /// Reserves `request` in every part at once (see the trait docs).
    ///
    /// # Errors
    ///
    /// As [`FreqLimitBackend::reserve`], for the whole compound: a
    /// [`Rejection`](crate::Rejection) names the limit that refused
    /// ([`Rejection::limit`](crate::Rejection::limit)). A
    /// [`BackendError`] of kind [`Other`](BackendErrorKind::Other) when the
    /// parts are not a compound ([`check_parts`]).
    fn reserve_compound(
        &self,
        parts: &[Part<'_, Self::Key>],
        now: Timestamp,
        request: Reserve,
    ) -> Self::CompoundFuture;

    /// Decides on the spot, when this backend can (in process): what
    /// [`reserve_compound`](Self::reserve_compound) would return, without a
    /// future. The Tower layer calls this first, so that a request admitted
    /// with no delay is forwarded inside `call`. When it returns `Some`, it
    /// must have done exactly what `reserve_compound` would have done. The
    /// default returns `None`, which is right for every remote backend.
    ///
    /// ```
    /// use tower_freqlimit::backends::compound::{CompoundBackend, Part};
    /// use tower_freqlimit::backends::memory::InMemoryBackend;
    /// use tower_freqlimit::clock::Timestamp;
    /// use tower_freqlimit::{FreqLimitParams, Reserve};
    ///
    /// let backend = InMemoryBackend::<&str>::new();
    /// let per_user = FreqLimitParams::per_second(1);
    /// let parts = [Part::new(Some(&"ann"), &per_user)];
    /// let decided = backend.reserve_compound_sync(&parts, Timestamp::now(), Reserve::new());
    /// assert!(decided.unwrap().unwrap().delay().is_zero());
    /// ```
    fn reserve_compound_sync(
        &self,
        parts: &[Part<'_, Self::Key>],
        now: Timestamp,
        request: Reserve,
    ) -> Option<Result<CompoundAdmission, FreqLimitError>> {
        let _ = (parts, now, request);
        None
    }

    /// Whether this backend, as built, can decide compounds at all; checked
    /// when a [`CompoundLimit`](crate::CompoundLimit) is built on it, so a
    /// setup that cannot work fails then, not at the first request. The
    /// default says yes.
    ///
    /// # Errors
    ///
    /// A [`BackendError`] that says what to change.
    fn check_compound(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Gives back every part of an admitted compound whose caller went away:
    /// [`refund`](FreqLimitBackend::refund) per part, with its key. Returns
    /// whether every part was given back.
    fn refund_compound(&self, keys: &[Option<&Self::Key>], admission: &CompoundAdmission) -> bool {
        keys.iter()
            .zip(admission.parts())
            .fold(true, |all, (key, part)| self.refund(*key, part) && all)
    }
}

/// Checks that `parts` make a compound: 1 to [`MAX_LIMITS`] parts, no key
/// named by two of them (two limits on one key would be one bucket counted
/// twice: give each limit keys of its own, such as an enum with a variant per
/// limit).
///
/// # Errors
///
/// A [`BackendError`] of kind [`Other`](BackendErrorKind::Other) that says
/// which.
///
/// ```
/// use tower_freqlimit::backends::compound::{check_parts, Part};
/// use tower_freqlimit::FreqLimitParams;
///
/// let p = FreqLimitParams::per_second(1);
/// assert!(check_parts(&[Part::new(Some(&1), &p), Part::new(None, &p)]).is_ok());
/// let err = check_parts(&[Part::<u32>::new(None, &p), Part::new(None, &p)]).unwrap_err();
/// assert!(err.to_string().contains("limits 0 and 1"));
/// ```
#[inline]
pub fn check_parts<K: PartialEq>(parts: &[Part<'_, K>]) -> Result<(), BackendError> {
    if parts.is_empty() || parts.len() > MAX_LIMITS {
        return Err(not_a_compound(parts.len()));
    }
    for (i, a) in parts.iter().enumerate() {
        for (j, b) in parts.iter().enumerate().skip(i + 1) {
            if a.key == b.key {
                return Err(same_key(i, j));
            }
        }
    }
    Ok(())
}

#[cold]
fn not_a_compound(len: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        if len == 0 {
            "a compound needs at least one limit"
        } else {
            "a compound has at most 4 limits (gcra::compound::MAX_LIMITS)"
        },
    )
}

#[cold]
fn same_key(i: usize, j: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::Other,
        format!(
            "limits {i} and {j} of the compound name the same key (give each limit keys of its own)"
        ),
    )
}
