//! The members an overlay met lately: entries it admitted, each with the
//! neighbour that passed it on, kept apart from the views. A node left
//! alone whose joins failed tries them one at a time. A failure that takes
//! most of the overlay can empty a passive view of 30; the members a node
//! met are a second sample, of which one neighbour supplies at most
//! `PER_SOURCE`, so a hostile neighbour cannot fill it.

use netmachine_domain::{DomainAdvert, NodeIdentity, Timestamp};

use super::messages::PeerInfo;
use crate::ports::Randomness;
use crate::random::SplitMix;

/// Entries one neighbour may have supplied.
pub const PER_SOURCE: usize = 8;

#[derive(Debug, Default)]
pub struct MetLately {
    entries: Vec<(PeerInfo, NodeIdentity)>,
}

impl MetLately {
    /// Each entry, with the neighbour that passed it on.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerInfo, NodeIdentity)> + '_ {
        self.entries.iter().map(|(p, from)| (p, *from))
    }

    /// Keeps `info`, passed on by `from`, in at most `capacity` entries. When
    /// full, or when `from` already supplied its share, an entry (of
    /// `from`'s, in the second case) makes room at random. A member held
    /// already is only updated to a later certificate.
    pub fn remember(&mut self, info: &PeerInfo, from: NodeIdentity, capacity: usize, random: &mut SplitMix) {
        if capacity == 0 {
            return;
        }
        if let Some((held, _)) = self.entries.iter_mut().find(|(p, _)| p.id() == info.id()) {
            if info.cert.expires > held.cert.expires {
                *held = info.clone();
            }
            return;
        }
        let supplied: Vec<usize> = (0..self.entries.len()).filter(|i| self.entries[*i].1 == from).collect();
        if supplied.len() >= PER_SOURCE {
            let evict = supplied[(random.next_u64() % supplied.len() as u64) as usize];
            self.entries.swap_remove(evict);
        } else if self.entries.len() >= capacity {
            let evict = (random.next_u64() % self.entries.len() as u64) as usize;
            self.entries.swap_remove(evict);
        }
        self.entries.push((info.clone(), from));
    }

    /// `peer` failed or left: it is no last resort.
    pub fn forget(&mut self, peer: &NodeIdentity) {
        self.entries.retain(|(p, _)| p.id() != *peer);
    }

    /// Drops the entries whose certificate no longer holds for `advert`.
    pub fn keep_valid(&mut self, advert: &DomainAdvert, now: Timestamp) {
        self.entries.retain(|(p, _)| p.cert.check(advert, now).is_ok());
    }

    /// One entry still valid, at random, taken out: tried once, it answers
    /// and becomes a neighbour, or it is gone.
    pub fn take(&mut self, advert: &DomainAdvert, now: Timestamp, random: &mut SplitMix) -> Option<PeerInfo> {
        self.keep_valid(advert, now);
        if self.entries.is_empty() {
            return None;
        }
        let pick = (random.next_u64() % self.entries.len() as u64) as usize;
        Some(self.entries.swap_remove(pick).0)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
