//! The Network Identity Store: records for nodes, engines, topics and
//! domains. An advert replaces what is held only when its signature verifies
//! and its version is newer.
//!
//! The store never writes to disk itself. Every change is two steps: a
//! check that returns a [`Persist`] (the record to make durable), and
//! [`IdentityStore::commit`], which its host calls once the record is on
//! disk, and which applies it in memory and says whom to announce it to.
//! A record is therefore on disk before anyone hears of it, and a write
//! that fails leaves the store as it was.
//!
//! Several changes may wait for the disk at once. Each is checked against
//! the newest change staged for its key, not only against what is
//! committed, so two adverts of one node cannot both pass against the same
//! old version, and a trust change made while an advert waits keeps that
//! advert. The host persists and commits changes in the order they were
//! made; one it cannot persist it hands back to [`IdentityStore::abandon`].

mod cache;

use std::collections::{BTreeSet, HashMap};

pub use cache::{record_weight, CacheBudget, CachedKind};
use cache::{Mark, NO_SHARE};

use netmachine_domain::validity::{check_created_not_future, check_version_rises};
use netmachine_domain::{
    AdvertBody, DomainAdvert, EngineName, EngineRecord, IdentityRecord, NodeAdvert, NodeIdentity, NodeRecord,
    Permanence, RecordKey, RuleError, Timestamp, TopicAdvert, Trust,
};
use thiserror::Error;

use crate::ports::{verify_signed, SignatureError, Verifier};

/// An advert offered to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertUpdate {
    Node(NodeAdvert),
    Topic(TopicAdvert),
    Domain(DomainAdvert),
}

impl AdvertUpdate {
    pub fn key(&self) -> RecordKey {
        match self {
            Self::Node(a) => RecordKey::Node(a.id),
            Self::Topic(a) => RecordKey::Topic(a.topic),
            Self::Domain(a) => RecordKey::Domain(a.id),
        }
    }
}

/// Why an update was refused. A refused update changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    #[error("advert for {key} refused: {source}")]
    Signature { key: RecordKey, source: SignatureError },
    #[error("advert for {key} refused: {source}")]
    Rule { key: RecordKey, source: RuleError },
    #[error("advert for {key} refused: that node is banned")]
    Banned { key: RecordKey },
    #[error("the identity store is full ({max} records); {key} was not added")]
    Full { key: RecordKey, max: usize },
    #[error("{max} identity changes already wait for the disk; {key} was not changed: try again shortly")]
    Busy { key: RecordKey, max: usize },
    #[error("{key} is this node's own identity and cannot be changed from outside")]
    OwnRecord { key: RecordKey },
    #[error("advert for {key} refused: {peer} is already the source of its share of {max} cached records")]
    SourceOverShare { key: RecordKey, peer: NodeIdentity, max: usize },
    #[error("advert for {key} refused: the cache of {kind} records is full of records in use")]
    CacheFull { key: RecordKey, kind: &'static str },
}

/// A checked change: write `record` to durable storage, then hand this
/// back to [`IdentityStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a change takes effect only once persisted and committed"]
pub struct Persist {
    record: IdentityRecord,
}

impl Persist {
    /// The record to write.
    pub fn record(&self) -> &IdentityRecord {
        &self.record
    }
}

/// Announced to subscribers after every accepted change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityUpdated {
    pub key: RecordKey,
    pub record: IdentityRecord,
}

/// An accepted change and who should hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event: IdentityUpdated,
    pub notify: Vec<EngineName>,
}

/// Changes that may wait for the disk at once; more are refused until
/// some are committed. A slow disk bounds memory here, not later.
pub const MAX_STAGED: usize = 1024;

#[derive(Debug, Clone)]
pub struct IdentityStoreConfig {
    pub max_records: usize,
    pub max_subscribers: usize,
    /// Budgets of the records peers sent unasked.
    pub cache: CacheBudget,
}

impl Default for IdentityStoreConfig {
    fn default() -> Self {
        Self { max_records: 1_000_000, max_subscribers: 1024, cache: CacheBudget::default() }
    }
}

/// A record, with its place in the cache when a peer sent it unasked.
/// The cache counts each key's mark once: the staged change's while one
/// waits for the disk, else the committed record's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    record: IdentityRecord,
    mark: Option<Mark>,
}

#[derive(Debug)]
pub struct IdentityStore {
    own: NodeIdentity,
    config: IdentityStoreConfig,
    /// Boxed, as are staged changes: a table keeps spare slots, and a
    /// slot of a boxed record weighs 64 bytes where a record weighs 224.
    records: HashMap<RecordKey, Box<Held>>,
    /// The newest checked change of each key still waiting for the disk.
    staged: HashMap<RecordKey, Box<Held>>,
    subscribers: BTreeSet<EngineName>,
    /// Which records peers sent unasked, within their budgets.
    cache: cache::Cache,
    /// Records the cache gave up, for the host to delete from disk.
    evicted: Vec<RecordKey>,
    /// When the first record was cached: marks count seconds from it.
    epoch: Option<Timestamp>,
}

impl IdentityStore {
    /// Opens the store with the records its host loaded from disk. Those
    /// that look unasked for (another node's record with default trust and
    /// permanence, topic and domain adverts) go back into the cache, oldest
    /// as they come; any beyond its budgets are given up at once
    /// ([`IdentityStore::take_evicted`]).
    pub fn open(own: NodeIdentity, config: IdentityStoreConfig, records: Vec<IdentityRecord>) -> Self {
        let mut store = Self {
            own,
            cache: cache::Cache::new(config.cache.clone()),
            config,
            records: HashMap::new(),
            staged: HashMap::new(),
            subscribers: BTreeSet::new(),
            evicted: Vec::new(),
            epoch: None,
        };
        for record in records {
            let key = record.key();
            let unasked = match &record {
                IdentityRecord::Node(node) => {
                    node.id != own
                        && node.trust <= Trust::DEFAULT
                        && !node.trust.is_banned()
                        && node.permanence != Permanence::Permanent
                }
                IdentityRecord::Topic(_) | IdentityRecord::Domain(_) => true,
                IdentityRecord::Engine(_) => false,
            };
            let mark = match (unasked, CachedKind::of(&key)) {
                (true, Some(kind)) => {
                    let weight = record_weight(&record);
                    if store.cache.over(kind, weight, None) {
                        store.evicted.push(key);
                        continue;
                    }
                    let mark = Mark::new(0, false, NO_SHARE);
                    store.cache.add(kind, mark, weight);
                    Some(mark)
                }
                _ => None,
            };
            store.records.insert(key, Box::new(Held { record, mark }));
        }
        store
    }

    /// Records the cache gave up since last asked: the host deletes them
    /// from disk.
    pub fn take_evicted(&mut self) -> Vec<RecordKey> {
        std::mem::take(&mut self.evicted)
    }

    /// Records and bytes (as [`record_weight`] counts them) of `kind` in
    /// the cache of unasked records.
    pub fn cache_usage(&self, kind: CachedKind) -> (usize, usize) {
        self.cache.usage(kind)
    }

    /// Gives up a cached record that waits for no disk write; the host is
    /// told to delete it.
    fn evict(&mut self, key: RecordKey) {
        if let Some(held) = self.records.remove(&key) {
            if let (Some(kind), Some(mark)) = (CachedKind::of(&key), held.mark) {
                self.cache.release(kind, mark, record_weight(&held.record));
            }
        }
        self.evicted.push(key);
    }

    /// The cached record of `kind` to give up first, other than `except`:
    /// among the first [`cache::SAMPLE`] that may go (in the table's
    /// order, which is the hash's), one from an untrusted source, the
    /// oldest.
    fn least_useful(
        &self,
        kind: CachedKind,
        except: &RecordKey,
        evictable: &dyn Fn(&RecordKey) -> bool,
    ) -> Option<RecordKey> {
        let may_go = |key: &RecordKey| {
            CachedKind::of(key) == Some(kind) && key != except && !self.staged.contains_key(key) && evictable(key)
        };
        self.records
            .iter()
            .filter_map(|(key, held)| held.mark.map(|mark| (key, mark)))
            .filter(|(key, _)| may_go(key))
            .take(cache::SAMPLE)
            .min_by(|(a, ma), (b, mb)| (ma.trusted(), ma.since(), *a).cmp(&(mb.trusted(), mb.since(), *b)))
            .map(|(key, _)| key.clone())
    }

    /// The mark the cache counts for `key`, and its record's weight.
    fn counted(&self, key: &RecordKey) -> Option<(Mark, usize)> {
        let held = self.staged.get(key).or_else(|| self.records.get(key))?;
        held.mark.map(|mark| (mark, record_weight(&held.record)))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn lookup(&self, key: &RecordKey) -> Option<&IdentityRecord> {
        self.records.get(key).map(|held| &held.record)
    }

    pub fn node(&self, id: &NodeIdentity) -> Option<&NodeRecord> {
        match self.lookup(&RecordKey::Node(*id)) {
            Some(IdentityRecord::Node(record)) => Some(record),
            _ => None,
        }
    }

    /// Trust of a node; 128 for a node without a record.
    pub fn trust(&self, id: &NodeIdentity) -> Trust {
        self.node(id).map_or(Trust::DEFAULT, |r| r.trust)
    }

    /// A node's trust counting a change still waiting for the disk.
    pub fn trust_now(&self, id: &NodeIdentity) -> Trust {
        self.current_node(id).map_or(Trust::DEFAULT, |r| r.trust)
    }

    pub fn is_banned(&self, id: &NodeIdentity) -> bool {
        self.trust(id).is_banned()
    }

    /// What a new change of `key` builds on: the newest staged change, or
    /// the committed record.
    fn current(&self, key: &RecordKey) -> Option<&IdentityRecord> {
        self.staged.get(key).or_else(|| self.records.get(key)).map(|held| &held.record)
    }

    fn current_node(&self, id: &NodeIdentity) -> Option<&NodeRecord> {
        match self.current(&RecordKey::Node(*id)) {
            Some(IdentityRecord::Node(record)) => Some(record),
            _ => None,
        }
    }

    /// Changes checked and not yet committed or abandoned.
    pub fn staged_count(&self) -> usize {
        self.staged.len()
    }

    pub fn records(&self) -> impl Iterator<Item = &IdentityRecord> {
        self.records.values().map(|held| &held.record)
    }

    /// Returns false when the subscriber limit is reached.
    pub fn subscribe(&mut self, engine: EngineName) -> bool {
        if self.subscribers.len() >= self.config.max_subscribers && !self.subscribers.contains(&engine) {
            return false;
        }
        self.subscribers.insert(engine);
        true
    }

    pub fn unsubscribe(&mut self, engine: &EngineName) {
        self.subscribers.remove(engine);
    }

    /// Applies an advert if its signature verifies, its version is newer
    /// than the one held, it is not from the future, and its subject is not
    /// banned.
    pub fn apply_advert(
        &mut self,
        update: AdvertUpdate,
        now: Timestamp,
        verifier: &dyn Verifier,
    ) -> Result<Persist, UpdateError> {
        self.apply_advert_from(update, None, now, verifier, &|_| false)
    }

    /// [`IdentityStore::apply_advert`] for an advert `source` sent unasked
    /// (`None`: this node offers it, and keeps it). A record new here, or
    /// one already in the cache, is cached within `source`'s share and its
    /// kind's budget; `evictable` says which cached records may make room
    /// (those not in use).
    pub fn apply_advert_from(
        &mut self,
        update: AdvertUpdate,
        source: Option<NodeIdentity>,
        now: Timestamp,
        verifier: &dyn Verifier,
        evictable: &dyn Fn(&RecordKey) -> bool,
    ) -> Result<Persist, UpdateError> {
        let key = update.key();
        let record = match update {
            AdvertUpdate::Node(advert) => {
                if advert.id == self.own && self.current_node(&self.own).and_then(|r| r.advert.as_ref()).is_some() {
                    // Our own advert is made here; a peer may echo it back
                    // but never replace it, even with a higher version.
                    return Err(UpdateError::OwnRecord { key });
                }
                if self.current_node(&advert.id).is_some_and(|r| r.trust.is_banned()) {
                    return Err(UpdateError::Banned { key });
                }
                let held = self.current_node(&advert.id).and_then(|r| r.advert.as_ref());
                self.check_advert(&key, &advert, held, now, verifier)?;
                let mut record = self.current_node(&advert.id).cloned().unwrap_or_else(|| NodeRecord::new(advert.id));
                record.advert = Some(advert);
                IdentityRecord::Node(record)
            }
            AdvertUpdate::Topic(advert) => {
                let held = match self.current(&key) {
                    Some(IdentityRecord::Topic(held)) => Some(held),
                    _ => None,
                };
                self.check_advert(&key, &advert, held, now, verifier)?;
                IdentityRecord::Topic(advert)
            }
            AdvertUpdate::Domain(advert) => {
                let held = match self.current(&key) {
                    Some(IdentityRecord::Domain(held)) => Some(held),
                    _ => None,
                };
                self.check_advert(&key, &advert, held, now, verifier)?;
                IdentityRecord::Domain(advert)
            }
        };
        let counted = self.counted(&key);
        let mark = match source {
            // New here, or cached already: cached within its budgets.
            Some(source) if counted.is_some() || self.current(&key).is_none() => {
                Some(self.cache_from(&record, source, now, counted, evictable)?)
            }
            // A record the node asked for stays kept, and one this node
            // offers is kept for good.
            Some(_) | None => None,
        };
        self.stage_marked(key, record, mark)
    }

    /// Makes room in the cache for `record` from `source` (replacing
    /// `counted`, the key's mark until now), giving up what must go, and
    /// says where it stands.
    fn cache_from(
        &mut self,
        record: &IdentityRecord,
        source: NodeIdentity,
        now: Timestamp,
        counted: Option<(Mark, usize)>,
        evictable: &dyn Fn(&RecordKey) -> bool,
    ) -> Result<Mark, UpdateError> {
        let key = record.key();
        let kind = CachedKind::of(&key).ok_or(UpdateError::CacheFull { key: key.clone(), kind: "engine" })?;
        // A node's own advert counts against no peer's share.
        let number = if kind == CachedKind::Node { NO_SHARE } else { self.cache.source_of(&source) };
        let same_source = counted.is_some_and(|(mark, _)| mark.source() == number);
        if !same_source && !self.cache.has_share(number) {
            let max = self.cache.budget().per_source;
            return Err(UpdateError::SourceOverShare { key, peer: source, max });
        }
        let weight = record_weight(record);
        let replacing = counted.map(|(_, weight)| weight);
        while self.cache.over(kind, weight, replacing) {
            let Some(victim) = self.least_useful(kind, &key, evictable) else {
                return Err(UpdateError::CacheFull { key, kind: kind.name() });
            };
            self.evict(victim);
        }
        let trusted = self.trust(&source) > Trust::DEFAULT;
        let epoch = *self.epoch.get_or_insert(now);
        let since = u32::try_from(now.0.saturating_sub(epoch.0) / 1000).unwrap_or(u32::MAX);
        Ok(Mark::new(since, trusted, number))
    }

    /// Records this node's own advert, with trust 255. Only the node itself
    /// calls this, with an advert it has just signed.
    pub fn set_own_advert(&mut self, advert: NodeAdvert, verifier: &dyn Verifier) -> Result<Persist, UpdateError> {
        let key = RecordKey::Node(self.own);
        if advert.id != self.own {
            return Err(UpdateError::OwnRecord { key: RecordKey::Node(advert.id) });
        }
        verify_signed(verifier, &advert).map_err(|source| UpdateError::Signature { key: key.clone(), source })?;
        if let Some(held) = self.current_node(&self.own).and_then(|r| r.advert.as_ref()) {
            check_version_rises(held.version, advert.version)
                .map_err(|source| UpdateError::Rule { key: key.clone(), source })?;
        }
        let mut record = self.current_node(&self.own).cloned().unwrap_or_else(|| NodeRecord::new(self.own));
        record.advert = Some(advert);
        record.trust = Trust::OWN;
        record.permanence = Permanence::Permanent;
        self.stage_marked(key, IdentityRecord::Node(record), None)
    }

    /// Sets a node's trust (0 bans it). Works before any advert is known.
    pub fn set_trust(&mut self, node: NodeIdentity, trust: Trust) -> Result<Persist, UpdateError> {
        self.edit_node(node, |r| r.trust = trust)
    }

    pub fn set_permanence(&mut self, node: NodeIdentity, permanence: Permanence) -> Result<Persist, UpdateError> {
        self.edit_node(node, |r| r.permanence = permanence)
    }

    /// Records a local engine (engines have no adverts: the node speaks for
    /// them unless they carry a key of their own).
    pub fn put_engine(&mut self, record: EngineRecord) -> Result<Persist, UpdateError> {
        let key = RecordKey::Engine(record.engine.clone());
        self.stage_marked(key, IdentityRecord::Engine(record), None)
    }

    fn edit_node(&mut self, node: NodeIdentity, edit: impl FnOnce(&mut NodeRecord)) -> Result<Persist, UpdateError> {
        let mut record = self.current_node(&node).cloned().unwrap_or_else(|| NodeRecord::new(node));
        edit(&mut record);
        // A node made permanent, trusted above the default or banned is
        // one the node cares about: kept for good. One whose trust fell
        // stays in the cache.
        let valued =
            record.permanence == Permanence::Permanent || record.trust > Trust::DEFAULT || record.trust.is_banned();
        let key = RecordKey::Node(node);
        // A record made here for a node trusted less (one that broke the
        // rules and never sent its advert) is cached too, oldest of all.
        let mark = match (valued, self.current(&key).is_some()) {
            (true, _) => None,
            (false, true) => self.counted(&key).map(|(mark, _)| mark),
            (false, false) => Some(Mark::new(0, false, NO_SHARE)),
        };
        self.stage_marked(key, IdentityRecord::Node(record), mark)
    }

    fn check_advert<B: AdvertBody>(
        &self,
        key: &RecordKey,
        advert: &netmachine_domain::Advert<B>,
        held: Option<&netmachine_domain::Advert<B>>,
        now: Timestamp,
        verifier: &dyn Verifier,
    ) -> Result<(), UpdateError> {
        let rule = |source| UpdateError::Rule { key: key.clone(), source };
        if let Some(held) = held {
            check_version_rises(held.body.version(), advert.body.version()).map_err(rule)?;
        }
        check_created_not_future(advert.body.created(), now).map_err(rule)?;
        verify_signed(verifier, advert).map_err(|source| UpdateError::Signature { key: key.clone(), source })?;
        Ok(())
    }

    /// A change that fits: a new record needs room in the table, counting
    /// the new records staged before it.
    fn stage_marked(
        &mut self,
        key: RecordKey,
        record: IdentityRecord,
        mark: Option<Mark>,
    ) -> Result<Persist, UpdateError> {
        if self.staged.len() >= MAX_STAGED && !self.staged.contains_key(&key) {
            return Err(UpdateError::Busy { key, max: MAX_STAGED });
        }
        if self.current(&key).is_none() {
            let new_staged = self.staged.keys().filter(|k| !self.records.contains_key(k)).count();
            if self.records.len() + new_staged >= self.config.max_records {
                return Err(UpdateError::Full { key, max: self.config.max_records });
            }
        }
        if let Some(kind) = CachedKind::of(&key) {
            if let Some((old, weight)) = self.counted(&key) {
                self.cache.release(kind, old, weight);
            }
            if let Some(new) = mark {
                self.cache.add(kind, new, record_weight(&record));
            }
        }
        self.staged.insert(key, Box::new(Held { record: record.clone(), mark }));
        Ok(Persist { record })
    }

    /// Takes out the staged change of `key` if `record` is still the
    /// newest.
    fn unstage(&mut self, key: &RecordKey, record: &IdentityRecord) -> Option<Box<Held>> {
        if !self.staged.get(key).is_some_and(|staged| staged.record == *record) {
            return None;
        }
        let held = self.staged.remove(key);
        if self.staged.is_empty() {
            // Changes come one at a time: an empty table keeps no slots.
            self.staged = HashMap::new();
        }
        held
    }

    /// A change its host could not make durable: it never takes effect,
    /// and the committed record's mark counts again.
    pub fn abandon(&mut self, change: &Persist) {
        let key = change.record.key();
        let Some(held) = self.unstage(&key, &change.record) else { return };
        if let Some(kind) = CachedKind::of(&key) {
            if let Some(mark) = held.mark {
                self.cache.release(kind, mark, record_weight(&held.record));
            }
            if let Some((mark, weight)) = self.counted(&key) {
                self.cache.add(kind, mark, weight);
            }
        }
    }

    /// Applies a change its host has made durable, and says whom to tell.
    /// A new record that no longer fits (the table filled meanwhile) is
    /// refused.
    pub fn commit(&mut self, change: Persist) -> Result<Accepted, UpdateError> {
        let key = change.record.key();
        // The staged change's mark moves with it; a change overtaken by a
        // newer one takes the newer one's (which the cache counts).
        let unstaged = self.unstage(&key, &change.record);
        let mark = match &unstaged {
            Some(held) => held.mark,
            None => match self.staged.get(&key) {
                Some(newer) => newer.mark,
                // Already committed by a twin change: its mark stays.
                None => self.records.get(&key).and_then(|held| held.mark),
            },
        };
        if !self.records.contains_key(&key) && self.records.len() >= self.config.max_records {
            if let (Some(kind), Some(mark), Some(_)) = (CachedKind::of(&key), mark, unstaged) {
                self.cache.release(kind, mark, record_weight(&change.record));
            }
            return Err(UpdateError::Full { key, max: self.config.max_records });
        }
        let record = change.record;
        self.records.insert(key.clone(), Box::new(Held { record: record.clone(), mark }));
        Ok(Accepted { event: IdentityUpdated { key, record }, notify: self.subscribers.iter().cloned().collect() })
    }
}

#[cfg(test)]
mod tests;
