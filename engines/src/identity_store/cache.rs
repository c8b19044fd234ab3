//! Records the node did not ask for: adverts that peers sent or relayed
//! (their own node adverts, topic and domain adverts). They are kept only
//! within a bounded cache: each peer may be the source of a share of it,
//! each kind of record has a count and a byte budget, and when a kind is
//! full the least useful record makes room: one not in use, from the
//! least trusted source, the oldest first.
//!
//! A record leaves the cache (and is kept for good) once the node shows it
//! wants it: a trust or permanence set on a node, a topic created here.
//! New kinds of advert (certificates, domain records to come) get a row in
//! [`CachedKind`] and fit the same budgets.

use std::collections::{BTreeSet, HashMap};

use netmachine_domain::{IdentityRecord, JoinPolicy, NodeIdentity, RecordKey, Timestamp};

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

#[derive(Debug, Clone, Copy)]
struct Entry {
    source: NodeIdentity,
    since: Timestamp,
    weight: usize,
}

/// Why a record was not let into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRefusal {
    /// Its source already has its share of the cache.
    SourceOverShare,
    /// The kind is full of records in use.
    Full,
}

#[derive(Debug)]
pub(super) struct Cache {
    /// This node: records it is the source of (read back from disk, whose
    /// source is not kept) count against no peer's share.
    own: NodeIdentity,
    budget: CacheBudget,
    entries: HashMap<RecordKey, Entry>,
    per_source: HashMap<NodeIdentity, usize>,
    records: [usize; 3],
    bytes: [usize; 3],
    /// Each kind's records, oldest first.
    by_age: [BTreeSet<(Timestamp, RecordKey)>; 3],
}

const DEFAULT_TRUST: u8 = netmachine_domain::Trust::DEFAULT.0;

/// Records looked at, oldest first, for one from an untrusted source
/// before the oldest that may go at all is taken.
const LOOK_FOR_UNTRUSTED: usize = 64;

impl Cache {
    pub(super) fn new(own: NodeIdentity, budget: CacheBudget) -> Self {
        Self {
            own,
            budget,
            entries: HashMap::new(),
            per_source: HashMap::new(),
            records: [0; 3],
            bytes: [0; 3],
            by_age: Default::default(),
        }
    }

    fn counts_to_source(&self, kind: CachedKind, source: &NodeIdentity) -> bool {
        kind != CachedKind::Node && *source != self.own
    }

    pub(super) fn holds(&self, key: &RecordKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Records and bytes of `kind` held now.
    pub(super) fn usage(&self, kind: CachedKind) -> (usize, usize) {
        (self.records[kind.index()], self.bytes[kind.index()])
    }

    /// Takes `record` from `source` into the cache, naming the records
    /// that must go to make room (least useful first). `evictable` says
    /// which records may go; `trust` ranks sources.
    pub(super) fn admit(
        &mut self,
        record: &IdentityRecord,
        source: NodeIdentity,
        now: Timestamp,
        evictable: &dyn Fn(&RecordKey) -> bool,
        trust: &dyn Fn(&NodeIdentity) -> u8,
    ) -> Result<Vec<RecordKey>, CacheRefusal> {
        let key = record.key();
        let Some(kind) = CachedKind::of(&key) else { return Ok(Vec::new()) };
        let weight = record_weight(record);
        let counts_to_source = self.counts_to_source(kind, &source);
        let held = self.entries.get(&key).copied();
        if counts_to_source
            && held.is_none_or(|e| e.source != source)
            && self.per_source.get(&source).copied().unwrap_or(0) >= self.budget.per_source
        {
            return Err(CacheRefusal::SourceOverShare);
        }
        // The record's old version (if cached) leaves first.
        if held.is_some() {
            self.remove(&key);
        }
        let i = kind.index();
        let over = |c: &Self| c.records[i] + 1 > c.budget.records[i] || c.bytes[i] + weight > c.budget.bytes[i];
        let mut evicted = Vec::new();
        while over(self) {
            let Some(victim) = self.least_useful(kind, evictable, trust) else {
                return Err(CacheRefusal::Full);
            };
            self.remove(&victim);
            evicted.push(victim);
        }
        self.by_age[i].insert((now, key.clone()));
        self.entries.insert(key, Entry { source, since: now, weight });
        self.records[i] += 1;
        self.bytes[i] += weight;
        if counts_to_source {
            *self.per_source.entry(source).or_default() += 1;
        }
        Ok(evicted)
    }

    /// The record of `kind` to evict first: among the oldest, one from a
    /// source trusted no more than the default; else the oldest that may go.
    fn least_useful(
        &self,
        kind: CachedKind,
        evictable: &dyn Fn(&RecordKey) -> bool,
        trust: &dyn Fn(&NodeIdentity) -> u8,
    ) -> Option<RecordKey> {
        let mut may_go = self.by_age[kind.index()].iter().map(|(_, k)| k).filter(|k| evictable(k));
        let mut first = None;
        for key in may_go.by_ref().take(LOOK_FOR_UNTRUSTED) {
            let untrusted = self.entries.get(key).is_some_and(|e| trust(&e.source) <= DEFAULT_TRUST);
            if untrusted {
                return Some(key.clone());
            }
            first.get_or_insert(key);
        }
        first.or_else(|| may_go.next()).cloned()
    }

    /// `key` leaves the cache: evicted, or kept for good from now on.
    pub(super) fn remove(&mut self, key: &RecordKey) {
        let Some(entry) = self.entries.remove(key) else { return };
        let Some(kind) = CachedKind::of(key) else { return };
        let i = kind.index();
        self.by_age[i].remove(&(entry.since, key.clone()));
        self.records[i] -= 1;
        self.bytes[i] -= entry.weight;
        if self.counts_to_source(kind, &entry.source) {
            if let Some(held) = self.per_source.get_mut(&entry.source) {
                *held -= 1;
                if *held == 0 {
                    self.per_source.remove(&entry.source);
                }
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
