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

use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
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

/// Whether a group has room for one more key of its own.
pub(super) enum Room {
    /// Under its share, with its overflow bucket's TAT if it has one.
    Yes(Option<u64>),
    /// At its share: its new keys are decided on its overflow bucket.
    No,
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

    /// Whether `group` is under its share (a read: nothing is claimed).
    pub(super) fn room(&self, group: u64) -> Room {
        match self.map.get(&group) {
            None => Room::Yes(None),
            Some(entry) if entry.keys < self.share => {
                let overflow = entry.overflow.load(Ordering::Relaxed);
                Room::Yes((overflow != 0).then_some(overflow))
            }
            Some(_) => Room::No,
        }
    }

    /// Counts a new key in `group` if the group is under its share (it must
    /// then be [released](Self::release) when the key leaves or is not
    /// stored). The caller holds the key's entry in the key map, so two calls
    /// of one new key never both count it: a second claim for one key would
    /// make the group look full to a third key.
    pub(super) fn claim(&self, group: u64) -> Room {
        let mut entry = self.map.entry(group).or_insert_with(|| Group {
            keys: 0,
            overflow: AtomicU64::new(0),
        });
        if entry.keys < self.share {
            entry.keys += 1;
            let overflow = entry.overflow.load(Ordering::Relaxed);
            Room::Yes((overflow != 0).then_some(overflow))
        } else {
            Room::No
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
