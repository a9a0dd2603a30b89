//! Groups of keys (networks, for IP addresses): a share of `max_keys` per group,
//! and one overflow bucket per group for its keys beyond the share.
//!
//! # Why
//!
//! Under [`WhenFull::RefuseNewKeys`](super::WhenFull::RefuseNewKeys) a full
//! table refuses new keys. Without groups, one IPv6 `/48` (65 536 `/64` keys,
//! which cost an attacker nothing) fills any table and keeps every new client
//! out for as long as it floods. With groups, a group holds at most its
//! *share* of the table; the keys it sends beyond that are decided together on
//! one bucket, the group's *overflow bucket*, with the same parameters. A flood
//! from one network then throttles that network, and the rest of the table
//! stays free for everybody else.
//!
//! # The promises kept
//!
//! * **Memory is bounded, exactly.** An overflow bucket takes a slot of
//!   `max_keys` like a key: keys plus overflow buckets never exceed `max_keys`.
//!   The map of groups holds one entry per group that holds a slot (a key or
//!   its overflow bucket), so at most `max_keys` entries too (plus one per new
//!   key in flight).
//! * **A known key is never admitted early.** A key decided on its group's
//!   overflow bucket has its debt there. When it later gets an entry of its
//!   own, that first call is decided on the overflow bucket (atomically), and
//!   the entry starts from the TAT the overflow bucket then holds: never from a
//!   fresh bucket while the overflow bucket still owes time. An overflow bucket
//!   goes (and its slot with it) only once it has drained, like a key. A key's
//!   own entry is dropped only once drained (or evicted, under
//!   [`EvictClosestToDraining`](super::WhenFull::EvictClosestToDraining), which
//!   admits early by design). So every call of one key is decided on a chain of
//!   buckets each starting where the last left off, each at least as far ahead
//!   as the key's own calls alone would have put it.
//! * **Known keys pay nothing.** The group of a key is computed, and the
//!   group's count touched, only when a key enters or leaves the table: the
//!   new-key path, the sweep, the scans. A call on a key already held never
//!   looks at its group.
//!
//! # Costs
//!
//! Keys of a group beyond its share share one bucket: if a network has more
//! active clients than its share (more than `max_keys / 32` `/64`s of one `/48`
//! active within one refill period, by default), its extra clients are limited
//! together. An attacker who holds many networks (a whole IPv6 `/32` is 65 536
//! `/48`s; a botnet spans thousands) still fills the table: groups bound what
//! *one* network holds, not how many networks one attacker holds.
//!
//! Lock order: a call holding a lock of the key map may take a lock of the
//! group map (the sweep and scans count removed keys), never the reverse.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use dashmap::mapref::entry::Entry;

use super::bound::{Bound, Tats};
use crate::backends::BorrowedKey;
use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
use crate::gcra;
use crate::params::FreqLimitParams;

/// The group of an IPv6 address: its `/48`.
pub(super) const IPV6_GROUP_PREFIX: u8 = 48;
/// The group of an IPv4 address: its `/24`.
pub(super) const IPV4_GROUP_PREFIX: u8 = 24;
/// The default share of a group: `max_keys / 32` (at least one key).
pub(super) const DEFAULT_SHARE_DIVISOR: usize = 32;

/// The group of an IP address: the IPv6 `/48` or the IPv4 `/24` it is in (an
/// IPv4-mapped IPv6 address is taken as IPv4). IPv4 and IPv6 groups never
/// collide.
#[must_use]
pub fn ip_group(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => ipv4_group(v4),
        IpAddr::V6(v6) => ipv6_group(v6),
    }
}

fn ipv4_group(ip: Ipv4Addr) -> u64 {
    u64::from(ip.to_bits() >> (32 - IPV4_GROUP_PREFIX))
}

fn ipv6_group(ip: Ipv6Addr) -> u64 {
    // A tag bit above the 48 bits of the prefix keeps IPv6 apart from IPv4.
    #[allow(clippy::cast_possible_truncation, reason = "48 bits")]
    let prefix = (ip.to_bits() >> (128 - IPV6_GROUP_PREFIX)) as u64;
    (1 << 63) | prefix
}

/// The default grouping, for the key types that have one: [`IpAddr`],
/// [`Ipv4Addr`], [`Ipv6Addr`] (by network). Other key types are not grouped
/// unless the user gives a function.
pub(super) fn default_group_of<K: 'static>() -> Option<fn(&K) -> u64> {
    fn by_network<K: 'static>(key: &K) -> u64 {
        let key: &dyn Any = key;
        if let Some(ip) = key.downcast_ref::<IpAddr>() {
            ip_group(*ip)
        } else if let Some(ip) = key.downcast_ref::<Ipv6Addr>() {
            ip_group(IpAddr::V6(*ip))
        } else if let Some(ip) = key.downcast_ref::<Ipv4Addr>() {
            ipv4_group(*ip)
        } else {
            0
        }
    }
    let key = std::any::TypeId::of::<K>();
    let is_ip = key == std::any::TypeId::of::<IpAddr>()
        || key == std::any::TypeId::of::<Ipv6Addr>()
        || key == std::any::TypeId::of::<Ipv4Addr>();
    is_ip.then_some(by_network::<K> as fn(&K) -> u64)
}

/// One group: how many keys of the table it holds, and its overflow bucket.
#[derive(Debug)]
struct Group {
    /// Keys of the table in this group, plus claims of inserts in flight.
    keys: usize,
    /// The overflow bucket's TAT; 0: none (a stored TAT is never 0). Updated
    /// by compare-and-swap under the map's read lock; created and dropped
    /// under its write lock.
    overflow: AtomicU64,
}

/// Where a new key of a group is decided.
pub(super) enum Claim {
    /// The group is under its share: the key may have an entry of its own
    /// (the claim is counted in the group and must be kept or released). With
    /// the overflow bucket's TAT as the claim saw it, if there was one.
    Own(Option<u64>),
    /// The group is at its share: the key is decided on the overflow bucket.
    Overflow,
}

/// The groups of a bounded backend.
pub(super) struct Groups<K> {
    group_of: fn(&K) -> u64,
    share: usize,
    map: DashMap<u64, Group, foldhash::fast::RandomState>,
    /// Overflow buckets held (each also holds a slot of the bound).
    overflows: AtomicUsize,
}

impl<K> Groups<K> {
    pub(super) fn new(group_of: fn(&K) -> u64, share: usize) -> Self {
        Self {
            group_of,
            share: share.max(1),
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            overflows: AtomicUsize::new(0),
        }
    }

    pub(super) fn share(&self) -> usize {
        self.share
    }

    pub(super) fn overflow_buckets(&self) -> usize {
        self.overflows.load(Ordering::Relaxed)
    }

    pub(super) fn group_of(&self, key: &K) -> u64 {
        (self.group_of)(key)
    }

    /// Claims a place for a new key in group `group`, if the group is under
    /// its share.
    pub(super) fn claim(&self, group: u64) -> Claim {
        let mut entry = self.map.entry(group).or_insert_with(|| Group {
            keys: 0,
            overflow: AtomicU64::new(0),
        });
        if entry.keys < self.share {
            entry.keys += 1;
            let overflow = entry.overflow.load(Ordering::Relaxed);
            Claim::Own((overflow != 0).then_some(overflow))
        } else {
            Claim::Overflow
        }
    }

    /// A key of `group` left the table, or a claim was not used.
    pub(super) fn release(&self, group: u64) {
        // `clear` may have dropped the group under an insert in flight: then
        // there is nothing to count down.
        let _ = self.map.remove_if_mut(&group, |_, entry| {
            entry.keys = entry.keys.saturating_sub(1);
            entry.keys == 0 && *entry.overflow.get_mut() == 0
        });
    }

    /// One GCRA step on the group's overflow bucket, if it has one; `None`
    /// when it has none (the caller then creates it with
    /// [`create_overflow`](Self::create_overflow), holding a slot for it).
    pub(super) fn update_overflow(
        &self,
        group: u64,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Option<Result<Admission, FreqLimitError>> {
        let entry = self.map.get(&group)?;
        // Read under the read lock: the bucket cannot be dropped meanwhile.
        if entry.overflow.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(super::update(&entry.overflow, now, params, request))
    }

    /// Gives back a reservation of `key` made on its group's overflow bucket,
    /// if nothing was reserved there since (as a key's refund does).
    pub(super) fn refund(&self, key: &K, tat_after: u64, tat_before: u64) -> bool {
        let Some(entry) = self.map.get(&self.group_of(key)) else {
            return false;
        };
        // The reservation that created the bucket started from nothing (0),
        // which here means "no bucket": 1, as far in the past, keeps the bucket
        // (and its slot) until the sweep.
        entry
            .overflow
            .compare_exchange(
                tat_after,
                tat_before.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Raises the group's overflow bucket to at least `tat` (a hold), if it
    /// has one: whether it moved; `None` when it has none.
    pub(super) fn raise_overflow(&self, group: u64, tat: u64) -> Option<bool> {
        let entry = self.map.get(&group)?;
        let overflow = &entry.overflow;
        if overflow.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(overflow.fetch_max(tat, Ordering::Relaxed) < tat)
    }

    /// Stores a new overflow bucket for `group` with `tat`, if it has none.
    /// Returns `false` when another call created one meanwhile (the caller
    /// then gives its slot back and decides on that one).
    pub(super) fn create_overflow(&self, group: u64, tat: u64) -> bool {
        let entry = self.map.entry(group).or_insert_with(|| Group {
            keys: 0,
            overflow: AtomicU64::new(0),
        });
        if entry.overflow.load(Ordering::Relaxed) != 0 {
            return false;
        }
        entry.overflow.store(tat, Ordering::Relaxed);
        self.overflows.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drops every overflow bucket drained by `now` (after `idle_ttl`), and
    /// every group left with neither key nor bucket. Returns how many buckets
    /// went (each freed a slot of the bound).
    pub(super) fn sweep(&self, now: u64, idle_ttl: u64) -> usize {
        let mut freed = 0;
        self.map.retain(|_, entry| {
            let tat = entry.overflow.get_mut();
            if *tat != 0 && tat.saturating_add(idle_ttl) <= now {
                *tat = 0;
                freed += 1;
            }
            entry.keys > 0 || *tat != 0
        });
        if freed > 0 {
            self.overflows.fetch_sub(freed, Ordering::Relaxed);
        }
        freed
    }

    /// Forgets every group; returns how many overflow buckets went.
    pub(super) fn clear(&self) -> usize {
        let mut freed = 0;
        self.map.retain(|_, entry| {
            freed += usize::from(*entry.overflow.get_mut() != 0);
            false
        });
        self.overflows.fetch_sub(freed, Ordering::Relaxed);
        freed
    }
}

impl<K> Bound<K>
where
    K: std::hash::Hash + Eq + Clone,
{
    /// The new-key path of a bounded backend with groups: a key of a group
    /// under its share gets an entry of its own (a slot of the bound, made
    /// room for if the table is full); a key of a group at its share is
    /// decided on the group's overflow bucket.
    pub(super) fn insert_grouped<Q>(
        &self,
        groups: &Groups<K>,
        tats: &Tats<K>,
        key: &Q,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Admission, FreqLimitError>
    where
        Q: BorrowedKey<K> + ?Sized,
    {
        let key = key.to_key();
        let group = groups.group_of(&key);
        match groups.claim(group) {
            Claim::Overflow => self.on_overflow(groups, group, tats, now, params, request),
            Claim::Own(overflow) => {
                let result =
                    self.insert_own(groups, (group, overflow), tats, key, now, params, request);
                if !matches!(result, Ok(Stored::Yes(_))) {
                    groups.release(group);
                }
                result.map(Stored::admission)
            }
        }
    }

    /// [`insert_held`](Bound::insert_held) with groups: a key under its
    /// group's share gets its own entry (starting no earlier than the group's
    /// overflow bucket, as [`insert_grouped`](Self::insert_grouped) does); a
    /// key past it holds the overflow bucket, where its calls are decided.
    pub(super) fn insert_held_grouped(
        &self,
        groups: &Groups<K>,
        tats: &Tats<K>,
        key: K,
        now: u64,
        tat: u64,
    ) -> Result<bool, FreqLimitError> {
        let group = groups.group_of(&key);
        match groups.claim(group) {
            Claim::Own(overflow) => {
                let start = overflow.map_or(tat, |overflow| overflow.max(tat));
                let stored = self.store_held(tats, key, now, start);
                if !matches!(stored, Ok((_, true))) {
                    groups.release(group);
                }
                stored.map(|(moved, _)| moved)
            }
            Claim::Overflow => loop {
                if let Some(moved) = groups.raise_overflow(group, tat) {
                    return Ok(moved);
                }
                self.take_slot(tats, now)?;
                if groups.create_overflow(group, tat) {
                    return Ok(true);
                }
                // Another call created it meanwhile: hold that one.
                self.give_slot_back();
            },
        }
    }

    /// A new key with a claim in its group. The caller releases the claim
    /// unless the key was stored.
    #[allow(clippy::too_many_arguments, reason = "one call site, all needed")]
    fn insert_own(
        &self,
        groups: &Groups<K>,
        (group, overflow): (u64, Option<u64>),
        tats: &Tats<K>,
        key: K,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Stored, FreqLimitError> {
        // A first decision that stores nothing: a call that would be refused
        // (or costs 0) needs no slot. It starts where the key would: on the
        // overflow bucket if the group has one.
        let peek = gcra::reserve(overflow, now, params, request)?;
        if peek.new_tat.is_none() {
            return Ok(Stored::No(peek.admission));
        }
        self.take_slot(tats, now)?;
        // The real decision. On the overflow bucket, atomically: the key's
        // calls so far may be recorded there, and two calls of one new key
        // racing here are then ordered by the bucket.
        let decided = match groups.update_overflow(group, now, params, request) {
            Some(result) => result.map(|admission| (admission.refund_token().end, admission)),
            None => gcra::reserve(None, now, params, request)
                .map(|reserved| (reserved.new_tat, reserved.admission))
                .map_err(FreqLimitError::from),
        };
        let (new_tat, admission) = match decided {
            Ok((Some(new_tat), admission)) => (new_tat, admission),
            Ok((None, admission)) => {
                self.give_slot_back();
                return Ok(Stored::No(admission));
            }
            Err(refused) => {
                self.give_slot_back();
                return Err(refused);
            }
        };
        match tats.entry(key) {
            // Inserted by another call meanwhile: give the slot back and decide
            // on that entry too (if this call was charged on the overflow
            // bucket, it is charged twice: late, never early).
            Entry::Occupied(tat) => {
                self.give_slot_back();
                super::update(tat.get(), now, params, request).map(Stored::No)
            }
            Entry::Vacant(slot) => {
                slot.insert(AtomicU64::new(new_tat));
                self.inserted(new_tat);
                Ok(Stored::Yes(admission))
            }
        }
    }

    /// A new key of a group at its share: decided on the group's overflow
    /// bucket, which is created (taking a slot of the bound) if it is not there.
    fn on_overflow(
        &self,
        groups: &Groups<K>,
        group: u64,
        tats: &Tats<K>,
        now: u64,
        params: &FreqLimitParams,
        request: &Reserve,
    ) -> Result<Admission, FreqLimitError> {
        loop {
            if let Some(decided) = groups.update_overflow(group, now, params, request) {
                return decided;
            }
            let reserved = gcra::reserve(None, now, params, request)?;
            let Some(new_tat) = reserved.new_tat else {
                return Ok(reserved.admission);
            };
            self.take_slot(tats, now)?;
            if groups.create_overflow(group, new_tat) {
                return Ok(reserved.admission);
            }
            // Another call created it meanwhile: decide on that one.
            self.give_slot_back();
        }
    }
}

/// Whether a new key's entry was stored (its group claim is then kept).
enum Stored {
    Yes(Admission),
    No(Admission),
}

impl Stored {
    fn admission(self) -> Admission {
        match self {
            Self::Yes(admission) | Self::No(admission) => admission,
        }
    }
}
