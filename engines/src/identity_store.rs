//! The Network Identity Store: records for nodes, engines, topics and
//! domains. An advert replaces what is held only when its signature verifies
//! and its version is newer; each accepted change is written to the record
//! store before it is applied in memory, then announced to subscribers.

use std::collections::{BTreeSet, HashMap};

use netmachine_domain::validity::{check_created_not_future, check_version_rises};
use netmachine_domain::{
    AdvertBody, DomainAdvert, EngineName, EngineRecord, IdentityRecord, NodeAdvert, NodeIdentity, NodeRecord,
    Permanence, RecordKey, RuleError, Timestamp, TopicAdvert, Trust,
};
use thiserror::Error;

use crate::ports::{verify_signed, RecordStore, SignatureError, StoreError, Verifier};

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
    #[error("{key} is this node's own identity and cannot be changed from outside")]
    OwnRecord { key: RecordKey },
    #[error(transparent)]
    Store(#[from] StoreError),
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

#[derive(Debug, Clone)]
pub struct IdentityStoreConfig {
    pub max_records: usize,
    pub max_subscribers: usize,
}

impl Default for IdentityStoreConfig {
    fn default() -> Self {
        Self { max_records: 1_000_000, max_subscribers: 1024 }
    }
}

#[derive(Debug)]
pub struct IdentityStore {
    own: NodeIdentity,
    config: IdentityStoreConfig,
    records: HashMap<RecordKey, IdentityRecord>,
    subscribers: BTreeSet<EngineName>,
}

impl IdentityStore {
    /// Opens the store with every record the record store holds.
    pub fn open(own: NodeIdentity, config: IdentityStoreConfig, store: &dyn RecordStore) -> Result<Self, StoreError> {
        let records = store.load_all()?.into_iter().map(|r| (r.key(), r)).collect();
        Ok(Self { own, config, records, subscribers: BTreeSet::new() })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn lookup(&self, key: &RecordKey) -> Option<&IdentityRecord> {
        self.records.get(key)
    }

    pub fn node(&self, id: &NodeIdentity) -> Option<&NodeRecord> {
        match self.records.get(&RecordKey::Node(*id)) {
            Some(IdentityRecord::Node(record)) => Some(record),
            _ => None,
        }
    }

    /// Trust of a node; 128 for a node without a record.
    pub fn trust(&self, id: &NodeIdentity) -> Trust {
        self.node(id).map_or(Trust::DEFAULT, |r| r.trust)
    }

    pub fn is_banned(&self, id: &NodeIdentity) -> bool {
        self.trust(id).is_banned()
    }

    pub fn records(&self) -> impl Iterator<Item = &IdentityRecord> {
        self.records.values()
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
        store: &mut dyn RecordStore,
    ) -> Result<Accepted, UpdateError> {
        let key = update.key();
        let record = match update {
            AdvertUpdate::Node(advert) => {
                if advert.id == self.own && self.node(&self.own).and_then(|r| r.advert.as_ref()).is_some() {
                    // Our own advert is made here; a peer may echo it back
                    // but never replace it, even with a higher version.
                    return Err(UpdateError::OwnRecord { key });
                }
                if self.is_banned(&advert.id) {
                    return Err(UpdateError::Banned { key });
                }
                self.check_advert(&key, &advert, self.node(&advert.id).and_then(|r| r.advert.as_ref()), now, verifier)?;
                let mut record = self.node(&advert.id).cloned().unwrap_or_else(|| NodeRecord::new(advert.id));
                record.advert = Some(advert);
                IdentityRecord::Node(record)
            }
            AdvertUpdate::Topic(advert) => {
                let held = match self.records.get(&key) {
                    Some(IdentityRecord::Topic(held)) => Some(held),
                    _ => None,
                };
                self.check_advert(&key, &advert, held, now, verifier)?;
                IdentityRecord::Topic(advert)
            }
            AdvertUpdate::Domain(advert) => {
                let held = match self.records.get(&key) {
                    Some(IdentityRecord::Domain(held)) => Some(held),
                    _ => None,
                };
                self.check_advert(&key, &advert, held, now, verifier)?;
                IdentityRecord::Domain(advert)
            }
        };
        self.commit(key, record, store)
    }

    /// Records this node's own advert, with trust 255. Only the node itself
    /// calls this, with an advert it has just signed.
    pub fn set_own_advert(
        &mut self,
        advert: NodeAdvert,
        verifier: &dyn Verifier,
        store: &mut dyn RecordStore,
    ) -> Result<Accepted, UpdateError> {
        let key = RecordKey::Node(self.own);
        if advert.id != self.own {
            return Err(UpdateError::OwnRecord { key: RecordKey::Node(advert.id) });
        }
        verify_signed(verifier, &advert).map_err(|source| UpdateError::Signature { key: key.clone(), source })?;
        if let Some(held) = self.node(&self.own).and_then(|r| r.advert.as_ref()) {
            check_version_rises(held.version, advert.version)
                .map_err(|source| UpdateError::Rule { key: key.clone(), source })?;
        }
        let mut record = self.node(&self.own).cloned().unwrap_or_else(|| NodeRecord::new(self.own));
        record.advert = Some(advert);
        record.trust = Trust::OWN;
        record.permanence = Permanence::Permanent;
        self.commit(key, IdentityRecord::Node(record), store)
    }

    /// Sets a node's trust (0 bans it). Works before any advert is known.
    pub fn set_trust(
        &mut self,
        node: NodeIdentity,
        trust: Trust,
        store: &mut dyn RecordStore,
    ) -> Result<Accepted, UpdateError> {
        self.edit_node(node, store, |r| r.trust = trust)
    }

    pub fn set_permanence(
        &mut self,
        node: NodeIdentity,
        permanence: Permanence,
        store: &mut dyn RecordStore,
    ) -> Result<Accepted, UpdateError> {
        self.edit_node(node, store, |r| r.permanence = permanence)
    }

    /// Records a local engine (engines have no adverts: the node speaks for
    /// them unless they carry a key of their own).
    pub fn put_engine(&mut self, record: EngineRecord, store: &mut dyn RecordStore) -> Result<Accepted, UpdateError> {
        let key = RecordKey::Engine(record.engine.clone());
        self.commit(key, IdentityRecord::Engine(record), store)
    }

    fn edit_node(
        &mut self,
        node: NodeIdentity,
        store: &mut dyn RecordStore,
        edit: impl FnOnce(&mut NodeRecord),
    ) -> Result<Accepted, UpdateError> {
        let mut record = self.node(&node).cloned().unwrap_or_else(|| NodeRecord::new(node));
        edit(&mut record);
        self.commit(RecordKey::Node(node), IdentityRecord::Node(record), store)
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

    /// Persists, then applies, then announces. Nothing changes in memory
    /// when the record store fails.
    fn commit(
        &mut self,
        key: RecordKey,
        record: IdentityRecord,
        store: &mut dyn RecordStore,
    ) -> Result<Accepted, UpdateError> {
        if !self.records.contains_key(&key) && self.records.len() >= self.config.max_records {
            return Err(UpdateError::Full { key, max: self.config.max_records });
        }
        store.put(&record)?;
        self.records.insert(key.clone(), record.clone());
        Ok(Accepted { event: IdentityUpdated { key, record }, notify: self.subscribers.iter().cloned().collect() })
    }
}

#[cfg(test)]
mod tests;
