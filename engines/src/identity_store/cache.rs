//! Records the node did not ask for: adverts that peers sent or relayed
//! (their own node adverts, topic and domain adverts). They are kept only
//! within a bounded cache: each peer may be the source of a share of it,
//! each kind of record has a count and a byte budget, and when a kind is
//! full the least useful record makes room: one not in use, from an
//! untrusted source, the oldest, among a sample of the kind's records.
//! Each cached record carries its [`Mark`] in the store's table, in bytes
//! its box already had to spare, and there is no second index.
//!
//! A record leaves the cache (and is kept for good) once the node shows it
//! wants it: a trust or permanence set on a node, a topic created here.
//! New kinds of advert (certificates, domain records to come) get a row in
//! [`CachedKind`] and fit the same budgets.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroU32;

use netmachine_domain::{IdentityRecord, JoinPolicy, NodeIdentity, RecordKey};

/// The kinds of record the cache holds, each with budgets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CachedKind {
    Node,
    Topic,
    Domain,
}

impl CachedKind {
    pub const ALL: [CachedKind; 3] = [Self::Node, Self::Topic, Self::Domain];

    pub fn of(key: &RecordKey) -> Option<Self> {
        match key {
            RecordKey::Node(_) => Some(Self::Node),
            RecordKey::Topic(_) => Some(Self::Topic),
            RecordKey::Domain(_) => Some(Self::Domain),
            RecordKey::Engine(_) => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Topic => "topic",
            Self::Domain => "domain",
        }
    }
}

/// The cache's budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheBudget {
    /// Records of each kind ([`CachedKind::ALL`] order).
    pub records: [usize; 3],
    /// Bytes (as [`record_weight`] counts them) of each kind.
    pub bytes: [usize; 3],
    /// Topic and domain records one peer may be the source of (sent or
    /// relayed); a peer's own node record is not counted.
    pub per_source: usize,
}

impl Default for CacheBudget {
    fn default() -> Self {
        Self { records: [65_536, 8_192, 1_024], bytes: [32 << 20, 32 << 20, 8 << 20], per_source: 256 }
    }
}

/// A cached record's place in the cache, kept with the record in 8 bytes
/// (so a boxed record takes no more memory for it): when it came, whether
/// its source was trusted then, and its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    /// Seconds since the store's first cached record; the top bit says
    /// whether the source was trusted above the default.
    since: u32,
    source: NonZeroU32,
}

impl Mark {
    pub(super) fn new(since_s: u32, trusted: bool, source: NonZeroU32) -> Self {
        Self { since: since_s.min(SINCE_MASK) | (u32::from(trusted) << 31), source }
    }

    pub(super) fn since(self) -> u32 {
        self.since & SINCE_MASK
    }

    pub(super) fn trusted(self) -> bool {
        self.since >> 31 == 1
    }

    pub(super) fn source(self) -> NonZeroU32 {
        self.source
    }
}

const SINCE_MASK: u32 = 0x7fff_ffff;

/// The source of a node's own record, and of records read back from disk
/// (whose source is not kept): they count against no peer's share.
pub(super) const NO_SHARE: NonZeroU32 = NonZeroU32::MIN;

/// The cache's counts: records and bytes per kind, and records per
/// source. The records themselves, each with its [`Mark`], are in the
/// store's table.
#[derive(Debug)]
pub(super) struct Cache {
    budget: CacheBudget,
    records: [usize; 3],
    bytes: [usize; 3],
    /// Records per source, by the source's keyed hash: a peer cannot tell
    /// which others share its number (one in four billion do).
    per_source: HashMap<NonZeroU32, u32>,
    hasher: RandomState,
}

/// Cached records looked at, in the table's order, for the least useful.
pub(super) const SAMPLE: usize = 64;

impl Cache {
    pub(super) fn new(budget: CacheBudget) -> Self {
        Self { budget, records: [0; 3], bytes: [0; 3], per_source: HashMap::new(), hasher: RandomState::new() }
    }

    pub(super) fn budget(&self) -> &CacheBudget {
        &self.budget
    }

    /// Records and bytes of `kind` held now.
    pub(super) fn usage(&self, kind: CachedKind) -> (usize, usize) {
        (self.records[kind.index()], self.bytes[kind.index()])
    }

    /// The number a mark gives `source`.
    pub(super) fn source_of(&self, source: &NodeIdentity) -> NonZeroU32 {
        let hash = self.hasher.hash_one(source) as u32;
        NonZeroU32::new(hash.max(2)).unwrap_or(NO_SHARE)
    }

    /// Whether `source` may be the source of one more record.
    pub(super) fn has_share(&self, source: NonZeroU32) -> bool {
        source == NO_SHARE || self.per_source.get(&source).is_none_or(|held| (*held as usize) < self.budget.per_source)
    }

    /// Whether a record of `kind` weighing `weight`, replacing one of
    /// `replacing` bytes (`None` for a new record), would be over the
    /// budgets.
    pub(super) fn over(&self, kind: CachedKind, weight: usize, replacing: Option<usize>) -> bool {
        let i = kind.index();
        let (records, bytes) = match replacing {
            Some(old) => (self.records[i], self.bytes[i] - old.min(self.bytes[i])),
            None => (self.records[i] + 1, self.bytes[i]),
        };
        records > self.budget.records[i] || bytes + weight > self.budget.bytes[i]
    }

    /// Counts a record of `weight` bytes.
    pub(super) fn add(&mut self, kind: CachedKind, mark: Mark, weight: usize) {
        let i = kind.index();
        self.records[i] += 1;
        self.bytes[i] += weight;
        if mark.source != NO_SHARE {
            *self.per_source.entry(mark.source).or_default() += 1;
        }
    }

    /// Stops counting a record (it left the table, or was replaced).
    pub(super) fn release(&mut self, kind: CachedKind, mark: Mark, weight: usize) {
        let i = kind.index();
        self.records[i] -= 1;
        self.bytes[i] -= weight.min(self.bytes[i]);
        if let Some(held) = self.per_source.get_mut(&mark.source) {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(&mark.source);
            }
        }
    }
}

/// About how many bytes a record takes in memory and on disk: a fixed part
/// for its keys, signature and framing, and each list item's share.
pub fn record_weight(record: &IdentityRecord) -> usize {
    const ID: usize = 40;
    const BASE: usize = 256;
    match record {
        IdentityRecord::Node(node) => {
            BASE + node.advert.as_ref().map_or(0, |a| a.addrs.len() * 64 + a.name.as_ref().map_or(0, |n| n.len()))
        }
        IdentityRecord::Topic(advert) => {
            BASE + (advert.publishers.len() + advert.relays.len()) * ID
                + advert.tags.iter().map(|t| t.len() + 2).sum::<usize>()
        }
        IdentityRecord::Domain(advert) => {
            let allowed = match &advert.join {
                JoinPolicy::AllowList(list) => list.len(),
                _ => 0,
            };
            BASE + (advert.nodes.len() + allowed) * ID
        }
        IdentityRecord::Engine(_) => BASE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark fits in the bytes a boxed record's allocation has to spare
    /// (and an absent mark costs nothing more).
    #[test]
    fn a_mark_takes_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Mark>>(), 8);
        let mark = Mark::new(12, true, NO_SHARE);
        assert_eq!((mark.since(), mark.trusted(), mark.source()), (12, true, NO_SHARE));
        assert_eq!(Mark::new(u32::MAX, false, NO_SHARE).since(), SINCE_MASK, "a later time saturates");
    }
}
