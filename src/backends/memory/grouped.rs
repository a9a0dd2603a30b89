//! The new-key paths of a bounded backend with [groups](super::groups): a key
//! of a group under its share gets an entry of its own; a key of a group at
//! its share is decided on the group's overflow bucket.
//!
//! A key is counted in its group only while the caller holds the key's
//! (vacant) entry in the key map. Two calls of one new key racing here are
//! then counted once: if both claimed before either inserted, the group would
//! look full to a third key for a moment, and that key would be sent to the
//! overflow bucket for good (a group at its share in a flood never frees a
//! place). The lock order is the one [`groups`](super::groups) sets: a key-map
//! lock, then a group-map lock.

use std::sync::atomic::AtomicU64;

use dashmap::mapref::entry::Entry;

use super::bound::{Bound, Tats};
use super::compound;
use super::groups::{Groups, Room};
use crate::backends::BorrowedKey;
use crate::decision::{Admission, Reserve};
use crate::error::FreqLimitError;
use crate::gcra;
use crate::params::FreqLimitParams;

impl<K> Bound<K>
where
    K: std::hash::Hash + Eq + Clone,
{
    /// The new-key path of a bounded backend with groups.
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
        // A group at its share (a flood's usual case) needs no slot: its keys
        // are decided on the overflow bucket.
        let Room::Yes(overflow) = groups.room(group) else {
            return self.on_overflow(groups, group, tats, now, params, request);
        };
        // A first decision that stores nothing: a call that would be refused
        // (or costs 0) needs no slot. It starts where the key would: on the
        // overflow bucket if the group has one.
        let peek = gcra::reserve(overflow, now, params, request)?;
        if peek.new_tat.is_none() {
            return Ok(peek.admission);
        }
        self.take_slot(tats, now)?;
        let slot = match tats.entry(key) {
            // Inserted by another call meanwhile: give the slot back and
            // decide on that entry.
            Entry::Occupied(tat) => {
                self.give_slot_back();
                return super::update(tat.get(), now, params, request);
            }
            Entry::Vacant(slot) => slot,
        };
        if let Room::No = groups.claim(group) {
            // The group filled up since the read.
            drop(slot);
            self.give_slot_back();
            return self.on_overflow(groups, group, tats, now, params, request);
        }
        // The real decision. On the overflow bucket, atomically: the key's
        // calls so far may be recorded there.
        let decided = match groups.update_overflow(group, now, params, request) {
            Some(result) => result.map(|admission| (admission.refund_token().end, admission)),
            None => gcra::reserve(None, now, params, request)
                .map(|reserved| (reserved.new_tat, reserved.admission))
                .map_err(FreqLimitError::from),
        };
        if let Ok((Some(new_tat), _)) = decided {
            slot.insert(AtomicU64::new(new_tat));
            self.inserted(new_tat);
        } else {
            drop(slot);
            groups.release(group);
            self.give_slot_back();
        }
        decided.map(|(_, admission)| admission)
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
        if let Room::No = groups.room(group) {
            return self.hold_overflow(groups, group, tats, now, tat);
        }
        self.take_slot(tats, now)?;
        let slot = match tats.entry(key) {
            Entry::Occupied(held) => {
                self.give_slot_back();
                return Ok(compound::raise(held.get(), tat));
            }
            Entry::Vacant(slot) => slot,
        };
        let Room::Yes(overflow) = groups.claim(group) else {
            drop(slot);
            self.give_slot_back();
            return self.hold_overflow(groups, group, tats, now, tat);
        };
        let start = overflow.map_or(tat, |overflow| overflow.max(tat));
        slot.insert(AtomicU64::new(start));
        self.inserted(start);
        Ok(true)
    }

    /// A hold on the group's overflow bucket, which is created (taking a slot
    /// of the bound) if it is not there.
    fn hold_overflow(
        &self,
        groups: &Groups<K>,
        group: u64,
        tats: &Tats<K>,
        now: u64,
        tat: u64,
    ) -> Result<bool, FreqLimitError> {
        loop {
            if let Some(moved) = groups.raise_overflow(group, tat) {
                return Ok(moved);
            }
            self.take_slot(tats, now)?;
            if groups.create_overflow(group, tat) {
                return Ok(true);
            }
            // Another call created it meanwhile: hold that one.
            self.give_slot_back();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::backends::memory::WhenFull;

    /// A held key another call inserted meanwhile is raised, never lowered,
    /// and gives its slot back, as without groups.
    #[test]
    fn a_held_key_inserted_meanwhile_is_raised_not_replaced() {
        let tats: Tats<u32> = Tats::with_hasher(foldhash::fast::RandomState::default());
        let groups = Groups::new(|k: &u32| u64::from(*k / 100), 2);
        let bound = Bound::new(2, WhenFull::RefuseNewKeys, Some(groups));
        assert!(bound.insert_held(&tats, &1, 0, 500).unwrap());
        assert!(!bound.insert_held(&tats, &1, 0, 400).unwrap());
        assert!(!bound.insert_held(&tats, &1, 0, 500).unwrap());
        assert!(bound.insert_held(&tats, &1, 0, 600).unwrap());
        assert_eq!(tats.get(&1).unwrap().load(Ordering::Relaxed), 600);
        // The slots given back leave room for exactly one more key.
        assert!(bound.insert_held(&tats, &2, 0, 700).unwrap());
        assert!(bound.insert_held(&tats, &3, 0, 700).is_err());
        assert_eq!(tats.len(), 2);
    }
}
