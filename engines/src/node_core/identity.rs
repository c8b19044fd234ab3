//! The core's side of the identity store: changes asked for here or
//! offered by peers become `Persist` effects, and once the host says a
//! record is on disk, it is committed and reaches every engine that
//! depends on it.

use netmachine_domain::{EngineName, Frame, IdentityRecord, NodeAdvert, NodeIdentity, Permanence, Timestamp, Trust};

use super::{CoreEffect, Delivery, NodeCore, Phase};
use crate::identity_store::{AdvertUpdate, Persist, UpdateError};

impl<A: Clone> NodeCore<A> {
    /// Offers an advert to the identity store. On `Ok` the change waits
    /// for its host to persist it ([`CoreEffect::Persist`]).
    pub fn offer_advert(&mut self, update: AdvertUpdate, now: Timestamp) -> Result<(), UpdateError> {
        let change = self.identities.apply_advert(update, now, self.verifier.as_ref())?;
        self.effects.push_back(CoreEffect::Persist(change));
        Ok(())
    }

    /// Records this node's own advert, just signed.
    pub fn set_own_advert(&mut self, advert: NodeAdvert) -> Result<(), UpdateError> {
        let change = self.identities.set_own_advert(advert, self.verifier.as_ref())?;
        self.effects.push_back(CoreEffect::Persist(change));
        Ok(())
    }

    /// Sets a node's trust; 0 bans it.
    pub fn set_trust(&mut self, node: NodeIdentity, trust: Trust) -> Result<(), UpdateError> {
        let change = self.identities.set_trust(node, trust)?;
        self.effects.push_back(CoreEffect::Persist(change));
        Ok(())
    }

    pub fn set_permanence(&mut self, node: NodeIdentity, permanence: Permanence) -> Result<(), UpdateError> {
        let change = self.identities.set_permanence(node, permanence)?;
        self.effects.push_back(CoreEffect::Persist(change));
        Ok(())
    }

    /// Returns false when the store's subscriber table is full.
    pub fn subscribe_identity_updates(&mut self, engine: EngineName) -> bool {
        self.identities.subscribe(engine)
    }

    pub fn unsubscribe_identity_updates(&mut self, engine: &EngineName) {
        self.identities.unsubscribe(engine);
    }

    /// A change could not be made durable: it never takes effect.
    pub fn persist_failed(&mut self, change: &Persist) {
        self.identities.abandon(change);
    }

    /// A change is on disk: it takes effect and is announced.
    pub fn persisted(&mut self, change: Persist, now: Timestamp) -> Result<(), UpdateError> {
        let accepted = self.identities.commit(change)?;
        let record = &accepted.event.record;
        self.apply_record(record, now);
        if let IdentityRecord::Topic(advert) = record {
            // Topic adverts spread to every connected peer; a peer that
            // already holds this version refuses it, so the spread ends.
            let mut conns: Vec<_> =
                self.phases.iter().filter(|(_, p)| matches!(p, Phase::Established(_))).map(|(c, _)| *c).collect();
            conns.sort_unstable();
            for conn in conns {
                self.effects.push_back(CoreEffect::Write { conn, frame: Frame::TopicAdvert(advert.clone()) });
            }
        }
        for engine in &accepted.notify {
            if let Some(to) = self.router.engine_address(engine).cloned() {
                let delivery = Delivery::IdentityUpdated(accepted.event.clone());
                self.effects.push_back(CoreEffect::Deliver { to, delivery, receipt: None });
            }
        }
        self.pump(now);
        Ok(())
    }

    /// What a record means for the Router and the Transport.
    pub(super) fn apply_record(&mut self, record: &IdentityRecord, now: Timestamp) {
        match record {
            IdentityRecord::Node(node) if node.id == self.node => self.own_advert = node.advert.clone(),
            IdentityRecord::Node(node) => {
                let banned = node.trust.is_banned();
                self.router.set_banned(node.id, banned);
                // The Transport tracks the peers in use: a permanent one, or
                // one it already knows. Others' addresses stay in the store
                // until a message is sent to them.
                let permanent = node.permanence == Permanence::Permanent && !banned;
                if permanent || self.transport.knows(&node.id) {
                    if let Some(advert) = &node.advert {
                        self.transport.set_addresses(node.id, advert.addrs.to_vec(), now);
                    }
                    self.transport.set_permanent(node.id, permanent, now);
                }
                if banned {
                    self.recent.remove(&node.id);
                    self.transport.ban(node.id);
                }
            }
            IdentityRecord::Topic(advert) => {
                if let Err(err) = self.router.learn_topic(advert.clone()) {
                    tracing::warn!(%err, "topic advert not taken by the router");
                }
            }
            IdentityRecord::Domain(advert) => self.router.set_domain_members(advert.id, advert.nodes.iter().copied()),
            IdentityRecord::Engine(_) => {}
        }
    }
}
