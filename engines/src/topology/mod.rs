//! Topology: one overlay per joined domain ([`overlay::Overlay`],
//! HyParView), multiplexed in one engine. The domain engine tells it when
//! this node becomes a member, renews, leaves, or admits a new member; its
//! peers' topology engines tell it the rest. It drives the Transport
//! through its effects: an active neighbour's connection is kept open, the
//! others may close when idle; and it tells every engine of the node when a
//! peer enters or leaves a domain's active view.
//!
//! One connection serves every domain two nodes share: the overlays only
//! name peers, and the node core keeps one connection per peer.
//!
//! What a peer can make it spend: per domain, at most the active and
//! passive views' entries and one pending request per free active slot;
//! a message is decoded only up to its caps ([`messages::MAX_ENTRIES`]), an
//! entry is kept only with a certificate valid for the domain, and a
//! neighbour's shuffles are limited per period.

pub mod config;
pub mod messages;
pub mod met_lately;
pub mod overlay;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use netmachine_domain::{
    Body, DomainAdvert, DomainIdentity, MembershipCertificate, NodeAdvert, NodeIdentity, ProtocolId, Timestamp,
};

use crate::engine::{Effect, EngineSetup, Input, Notice, ProtocolEngine, Timed};
use crate::ports::Verifier;

pub use config::{OverlayConfig, Repair};
pub use messages::{FromDomain, Message, PeerInfo, MAX_ENTRIES};
pub use overlay::{Out, Overlay, OverlayCounters};

pub const TOPOLOGY_PROTOCOL: &str = "netmachine/topology";
pub const TOPOLOGY_VERSION: u16 = 1;
/// The engine that may tell this one about memberships.
pub const DOMAIN_PROTOCOL: &str = "netmachine/domain";

/// What the engine counted beyond its overlays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyCounters {
    /// Messages that did not decode: malformed, or lists over their cap.
    pub malformed: u64,
    /// Messages for a domain this node is not a member of.
    pub not_member: u64,
}

pub struct Topology {
    node: NodeIdentity,
    protocol: ProtocolId,
    config: OverlayConfig,
    verifier: Arc<dyn Verifier>,
    seed: u64,
    /// What peers dial this node by; no overlay runs until it is known.
    own_advert: Option<NodeAdvert>,
    /// This node's memberships, as the domain engine last told them.
    memberships: BTreeMap<DomainIdentity, (DomainAdvert, MembershipCertificate, Option<NodeIdentity>)>,
    overlays: BTreeMap<DomainIdentity, Overlay>,
    counters: TopologyCounters,
    effects: VecDeque<Effect>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("node", &self.node).field("domains", &self.overlays.len()).finish()
    }
}

impl Topology {
    pub fn new(setup: &EngineSetup, config: OverlayConfig) -> Self {
        Self {
            node: setup.node,
            protocol: ProtocolId::new(TOPOLOGY_PROTOCOL, TOPOLOGY_VERSION)
                .unwrap_or_else(|_| unreachable!("a valid constant protocol")),
            config,
            verifier: setup.verifier.clone(),
            seed: setup.seed_for(TOPOLOGY_PROTOCOL),
            own_advert: None,
            memberships: BTreeMap::new(),
            overlays: BTreeMap::new(),
            counters: TopologyCounters::default(),
            effects: VecDeque::new(),
        }
    }

    pub fn overlay(&self, domain: &DomainIdentity) -> Option<&Overlay> {
        self.overlays.get(domain)
    }

    pub fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        self.overlays.values()
    }

    pub fn counters(&self) -> TopologyCounters {
        self.counters
    }

    fn told(&mut self, body: &Body, now: Timestamp) {
        let notice = match FromDomain::decode(body) {
            Ok(notice) => notice,
            Err(err) => {
                tracing::warn!(%err, "a domain notice that does not decode ignored");
                return;
            }
        };
        match notice {
            FromDomain::Member { advert, cert, contact } => {
                self.memberships.insert(advert.id, (*advert, cert, contact));
            }
            FromDomain::Left(domain) => {
                self.memberships.remove(&domain);
                if let Some(overlay) = self.overlays.get_mut(&domain) {
                    overlay.leave();
                }
                self.drain(&domain);
                self.overlays.remove(&domain);
            }
        }
        self.sync(now);
    }

    /// Runs an overlay for every membership, with this node's entry as it
    /// stands now.
    fn sync(&mut self, now: Timestamp) {
        let Some(own_advert) = self.own_advert.clone() else { return };
        for (domain, (advert, cert, contact)) in &self.memberships {
            let own = PeerInfo { advert: own_advert.clone(), cert: cert.clone() };
            match self.overlays.get_mut(domain) {
                Some(overlay) => overlay.set_advert(advert.clone(), own, now),
                None => {
                    let seed = self.seed ^ domain_seed(domain);
                    let overlay = Overlay::new(advert.clone(), own, *contact, self.config, seed, now);
                    self.overlays.insert(*domain, overlay);
                }
            }
        }
        self.drain_all();
    }

    fn peer_said(&mut self, peer: NodeIdentity, body: &Body, now: Timestamp) {
        let (domain, message) = match Message::decode(body) {
            Ok(decoded) => decoded,
            Err(err) => {
                self.counters.malformed += 1;
                tracing::debug!(%peer, %err, "topology message refused");
                return;
            }
        };
        let Some(overlay) = self.overlays.get_mut(&domain) else {
            self.counters.not_member += 1;
            return;
        };
        overlay.on_message(peer, message, now, self.verifier.as_ref());
        self.drain(&domain);
    }

    fn drain_all(&mut self) {
        let domains: Vec<DomainIdentity> = self.overlays.keys().copied().collect();
        for domain in domains {
            self.drain(&domain);
        }
    }

    /// Turns what one overlay asked for into effects.
    fn drain(&mut self, domain: &DomainIdentity) {
        let Some(overlay) = self.overlays.get_mut(domain) else { return };
        let mut outs = Vec::new();
        while let Some(out) = overlay.poll_out() {
            outs.push(out);
        }
        for out in outs {
            match out {
                Out::Send(peer, message) => {
                    self.effects.push_back(Effect::SendToPeer { peer, body: message.encode(domain) })
                }
                Out::Learn(advert) => self.effects.push_back(Effect::LearnAdvert(advert)),
                Out::Certified(peer, expires) => {
                    self.effects.push_back(Effect::Certified { domain: *domain, peer, expires: Some(expires) })
                }
                Out::Uncertified(peer) => {
                    self.effects.push_back(Effect::Certified { domain: *domain, peer, expires: None })
                }
                Out::Active(peer, added) => {
                    // Kept open while any domain holds it active.
                    let permanent = added || self.overlays.values().any(|o| o.is_active(&peer));
                    self.effects.push_back(Effect::Keep { peer, permanent });
                    let notice = if added {
                        Notice::PeerAddedToView { domain: *domain, peer }
                    } else {
                        Notice::PeerRemovedFromView { domain: *domain, peer }
                    };
                    self.effects.push_back(Effect::Announce(notice));
                }
            }
        }
    }
}

/// A domain's share of the engine's seed: each overlay draws apart.
fn domain_seed(domain: &DomainIdentity) -> u64 {
    domain
        .key()
        .to_tagged_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

impl ProtocolEngine for Topology {
    fn protocol(&self) -> &ProtocolId {
        &self.protocol
    }

    fn handle(&mut self, input: Input, now: Timestamp) {
        match input {
            Input::FromPeer { message, .. } if message.protocol.version != TOPOLOGY_VERSION => {
                self.counters.malformed += 1;
            }
            Input::FromPeer { peer, message } => self.peer_said(peer, &message.body, now),
            Input::FromEngine { protocol, body } if protocol == DOMAIN_PROTOCOL => self.told(&body, now),
            Input::FromEngine { protocol, .. } => {
                tracing::debug!(%protocol, "topology takes notices only from the domain engine")
            }
            Input::Notice(Notice::PeerGone(peer)) => {
                for overlay in self.overlays.values_mut() {
                    overlay.peer_gone(&peer, now);
                }
                self.drain_all();
            }
            Input::Notice(Notice::PeerUnreachable(peer)) => {
                for overlay in self.overlays.values_mut() {
                    overlay.peer_failed(&peer, now);
                }
                self.drain_all();
            }
            Input::Notice(_) => {}
            Input::OwnAdvert(advert) => {
                self.own_advert = Some(advert);
                self.sync(now);
            }
            Input::Command { from, .. } => tracing::debug!(engine = %from, "topology takes no commands"),
        }
    }

    fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Timed for Topology {
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.overlays.values().filter_map(Overlay::poll_timeout).min()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        for overlay in self.overlays.values_mut() {
            if overlay.poll_timeout().is_some_and(|at| at <= now) {
                overlay.handle_timeout(now);
            }
        }
        self.drain_all();
    }
}
