//! The core's side of the identity store: changes asked for here or
//! offered by peers become `Persist` effects, and once the host says a
//! record is on disk, it is committed and reaches every engine that
//! depends on it.

use netmachine_domain::{
    EngineName, Frame, IdentityRecord, NodeAdvert, NodeIdentity, Permanence, RecordKey, Timestamp, Trust,
};

use super::{Charge, CoreEffect, Delivery, NodeCore, Phase};
use crate::identity_store::{AdvertUpdate, Persist, UpdateError};
use crate::log_budget::LogKind;
use crate::metrics::Guarded;
use crate::transport::CloseReason;

impl<A: Clone> NodeCore<A> {
    /// An advert `peer` sent: charged to the peer's rate, then checked and
    /// cached within its share. Says why to close the connection when the
    /// peer has gone on beyond its budget for too long.
    pub(super) fn advert_from(
        &mut self,
        peer: NodeIdentity,
        update: AdvertUpdate,
        now: Timestamp,
    ) -> Option<CloseReason> {
        let charge = self.advert_rates.charge(peer, now);
        if charge != Charge::Take {
            self.metrics.count_guarded(Guarded::AdvertOverRate);
            return self.over_budget(peer, charge);
        }
        let (router, transport) = (&self.router, &self.transport);
        // A record in use stays: the node record of a peer in the
        // Transport's table, a topic a local engine created or follows.
        let evictable = |key: &RecordKey| match key {
            RecordKey::Node(id) => !transport.knows(id),
            RecordKey::Topic(topic) => !router.topic_in_use(topic),
            RecordKey::Domain(_) => true,
            RecordKey::Engine(_) => false,
        };
        let outcome = self.identities.apply_advert_from(update, Some(peer), now, self.verifier.as_ref(), &evictable);
        let close = match outcome {
            Ok(change) => {
                self.effects.push_back(CoreEffect::Persist(change));
                None
            }
            // Not held against the peer: an honest neighbour relays every
            // topic it hears of, and simply fills its share.
            Err(err @ UpdateError::SourceOverShare { .. }) => {
                self.metrics.count_guarded(Guarded::AdvertOverShare);
                tracing::debug!(%peer, %err, "advert from a peer not taken");
                None
            }
            Err(err) => {
                if matches!(err, UpdateError::CacheFull { .. }) {
                    self.metrics.count_guarded(Guarded::AdvertCacheFull);
                }
                tracing::debug!(%peer, %err, "advert from a peer not taken");
                None
            }
        };
        self.forget_evicted();
        close
    }

    /// A peer over its advert budget: slowed (its advert dropped), or,
    /// having gone on too long, disconnected with its trust lowered.
    fn over_budget(&mut self, peer: NodeIdentity, charge: Charge) -> Option<CloseReason> {
        if charge != Charge::Disconnect {
            return None;
        }
        self.metrics.count_guarded(Guarded::AdvertSenderDisconnected);
        let trust = self.identities.trust_now(&peer);
        let lowered = Trust(trust.0.saturating_sub(self.advert_rates.config().trust_penalty).max(1));
        if !trust.is_banned() && lowered < trust {
            match self.identities.set_trust(peer, lowered) {
                Ok(change) => self.effects.push_back(CoreEffect::Persist(change)),
                Err(err) => tracing::debug!(%peer, %err, "trust not lowered"),
            }
        }
        Some(CloseReason::Violation("it sent adverts beyond its budget".into()))
    }

    /// Records the identity store gave up: the Router forgets what it
    /// learned from them, and the host deletes them from disk.
    pub(super) fn forget_evicted(&mut self) {
        for key in self.identities.take_evicted() {
            self.metrics.count_guarded(Guarded::RecordEvicted);
            match &key {
                RecordKey::Topic(topic) => self.router.forget_learned_topic(topic),
                RecordKey::Domain(domain) => self.router.forget_domain(domain),
                RecordKey::Node(_) | RecordKey::Engine(_) => {}
            }
            self.effects.push_back(CoreEffect::Forget(key));
        }
    }

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
            IdentityRecord::Node(node) if node.id == self.node => {
                if node.advert != self.own_advert {
                    self.own_advert = node.advert.clone();
                    if let Some(own) = self.own_advert.clone() {
                        self.hosted.tell_all(&crate::engine::Input::OwnAdvert(own), now);
                    }
                }
            }
            IdentityRecord::Node(node) => {
                let banned = node.trust.is_banned();
                self.router.set_banned(node.id, banned);
                // A peer trusted above the default keeps its place in a
                // full peer table.
                self.transport.set_trusted(node.id, node.trust > Trust::DEFAULT);
                // The Transport tracks the peers in use: a permanent one, or
                // one it already knows. Others' addresses stay in the store
                // until a message is sent to them.
                // Permanent by the operator's choice, or while an engine
                // keeps it (an overlay's active neighbour).
                let kept = self.hosted.keeps(&node.id);
                let permanent = (node.permanence == Permanence::Permanent || kept) && !banned;
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
                    if self.logs.allow(LogKind::AdvertNotTaken, None, now) {
                        tracing::warn!(%err, "topic advert not taken by the router");
                    }
                }
            }
            IdentityRecord::Domain(advert) => self.router.set_domain_members(advert.id, advert.nodes.iter().copied()),
            IdentityRecord::Engine(_) => {}
        }
    }
}
