//! Compound limits on Redis: every limit's key in one script call
//! (`compound.lua`), and the hash slot those keys must share on a cluster.

use std::hash::Hash;

use redis::cluster_routing::Slot;

use super::RedisBackend;
use super::conn::Conn;
use super::future::RedisCompoundFuture;
use super::key::{RedisKey, encode_key};
use crate::backends::compound::{CompoundBackend, Part, check_parts};
use crate::clock::Timestamp;
use crate::decision::Reserve;
use crate::error::{BackendError, BackendErrorKind, FreqLimitError};
use crate::gcra::compound::MAX_LIMITS;

/// The hash tag a cluster reads in a key name: what lies between its first
/// `{` and the first `}` after it, if that is not empty (the cluster then
/// hashes the tag alone, else the whole name).
pub(super) fn hash_tag(name: &[u8]) -> Option<&[u8]> {
    let open = name.iter().position(|&b| b == b'{')?;
    let close = name[open + 1..].iter().position(|&b| b == b'}')?;
    let tag = &name[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

/// What to do about keys that cannot share a slot.
const SET_A_HASH_TAG: &str = "on a Redis Cluster the keys of a compound must share a hash slot \
(one script call decides them all): build the backend with a prefix that contains a hash tag, \
such as `.prefix(\"{myapp}:limits\")`, so that every key of the backend lands in the slot of `myapp`";

/// Compound limits in one round trip: every part's key goes to one
/// `EVALSHA` of `compound.lua`, which reads every key, decides as
/// [`gcra::compound::reserve_all`](crate::gcra::compound::reserve_all) does
/// (in microseconds, on the [`RedisClock`](super::RedisClock) of the
/// backend) and writes every key, atomically. See the
/// [module docs](super#compound-limits).
///
/// * **Same keys as single limits**: a part `Some(k)` is the key a
///   [`FreqLimit`](crate::FreqLimit) on this backend uses for `k`, so a
///   compound and a single limit on one backend share that key's state
///   (and refunds of either follow the same rules).
/// * **Failures** go through the backend's circuit, timeout and
///   [`FailurePolicy`](super::FailurePolicy), for the compound as a whole:
///   fail-closed, the error; fail-open, *every* limit let through unchecked
///   (each part [`is_fail_open`](crate::Admission::is_fail_open), no wait,
///   nothing stored, nothing to refund), counted once in
///   [`RedisStats`](super::RedisStats).
/// * **Not failures**: parts that are not a compound
///   ([`check_parts`]), and on a cluster keys that hash to different slots,
///   are errors of kind [`Other`](BackendErrorKind::Other) whatever the
///   policy, returned without sending anything.
/// * **The negative cache** is not asked (a compound's answer depends on
///   every limit); a compound's answer updates it for the single calls on
///   the same keys: a rejection is remembered for the limit that refused.
///
/// ```no_run
/// use tower_freqlimit::backends::redis::RedisBackend;
/// use tower_freqlimit::{CompoundLimit, FreqLimitParams};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::<String>::builder()
///     .prefix("{bot}:limits") // a hash tag: one slot on a cluster
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// let limits = CompoundLimit::new(backend)
///     .limit("per-chat", FreqLimitParams::per_second(1))
///     .limit("global", FreqLimitParams::per_second(30));
/// let chat = "chat:42".to_owned();
/// limits.acquire(&[Some(&chat), None]).await?;
/// # Ok(())
/// # }
/// ```
impl<K> CompoundBackend for RedisBackend<K>
where
    K: RedisKey + Hash + Eq + Clone + Send + Sync,
{
    type CompoundFuture = RedisCompoundFuture;

    fn reserve_compound(
        &self,
        parts: &[Part<'_, K>],
        now: Timestamp,
        request: Reserve,
    ) -> RedisCompoundFuture {
        if let Err(err) = check_parts(parts) {
            return RedisCompoundFuture::ready(Err(FreqLimitError::Backend(err)));
        }
        // A cost some limit can never admit is refused before asking, as the
        // in-memory backend does (the script checks it too, in its
        // microseconds).
        for part in parts {
            if let Some(refusal) = request.impossible_under(part.params) {
                return RedisCompoundFuture::ready(Err(refusal.into()));
            }
        }
        let inner = &self.inner;
        let keys: Vec<Vec<u8>> = parts
            .iter()
            .map(|part| encode_key(&inner.prefix, part.key))
            .collect();
        if matches!(inner.conn, Conn::Cluster(_)) {
            let slot = Slot::for_key(&keys[0]);
            if let Some(i) = keys.iter().position(|key| Slot::for_key(key) != slot) {
                return RedisCompoundFuture::ready(Err(FreqLimitError::Backend(
                    BackendError::new(
                        BackendErrorKind::Other,
                        format!(
                            "limits 0 and {i} of the compound hash to different slots; nothing was sent. {SET_A_HASH_TAG}"
                        ),
                    ),
                )));
            }
        }
        let mut params = [*parts[0].params; MAX_LIMITS];
        for (i, part) in parts.iter().enumerate() {
            params[i] = *part.params;
        }
        inner.start_compound(keys, params, now, request)
    }

    /// On a Redis Cluster, a prefix without a hash tag is refused: the keys of
    /// one compound would live in different slots, which one script call
    /// cannot reach. A standalone server or a Sentinel primary takes any
    /// prefix.
    fn check_compound(&self) -> Result<(), BackendError> {
        if matches!(self.inner.conn, Conn::Cluster(_)) && hash_tag(&self.inner.prefix).is_none() {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                format!(
                    "the prefix `{}` has no hash tag; {SET_A_HASH_TAG}",
                    String::from_utf8_lossy(&self.inner.prefix)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_tag_is_what_the_cluster_hashes() {
        assert_eq!(hash_tag(b"{app}:limits"), Some(&b"app"[..]));
        assert_eq!(hash_tag(b"x{a}{b}"), Some(&b"a"[..]));
        assert_eq!(hash_tag(b"freqlimit"), None);
        // Empty, or not closed: the cluster hashes the whole name.
        assert_eq!(hash_tag(b"{}app{x}"), None);
        assert_eq!(hash_tag(b"app{x"), None);
        // A tag in the prefix decides the slot of every key under it.
        for prefix in [&b"{app}"[..], b"a{b}c", b"{x}{y"] {
            let slot = Slot::for_key(encode_key::<str>(prefix, None));
            for key in ["1", "{other}", "}", "chat:42"] {
                assert_eq!(Slot::for_key(encode_key(prefix, Some(key))), slot, "{key}");
            }
        }
        // Without one, keys spread.
        let a = Slot::for_key(encode_key(b"app", Some("1")));
        assert!((2..50).any(|i| Slot::for_key(encode_key(b"app", Some(&i.to_string()))) != a));
    }
}
