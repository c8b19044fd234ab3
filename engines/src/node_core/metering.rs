//! The core's counts for its operator (see [`crate::metrics`]): where each
//! message and failure is counted, and the gauges read when asked.

use netmachine_domain::{DestinationIdentity, EngineName, NodeIdentity};

use super::{NodeCore, Phase};
use crate::metrics::{ConnectionStates, HandshakeFailure, MetricsSnapshot, PeerClass, Side};
use crate::transport::ConnectFailure;

impl<A: Clone> NodeCore<A> {
    /// The counts so far, with queues, windows and connections as they
    /// stand now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut connections = ConnectionStates::default();
        for phase in self.phases.values() {
            match phase {
                Phase::Dialling { .. } => connections.dialling += 1,
                Phase::AwaitingReply(_) | Phase::AwaitingHello { .. } => connections.handshaking += 1,
                Phase::Established(_) => connections.established += 1,
            }
        }
        let [permanent, ephemeral] = self.transport.depths();
        let mut counts = self.metrics.clone();
        counts.set_guarded(crate::metrics::Guarded::PeerEvicted, self.transport.peers_evicted());
        counts.set_guarded(crate::metrics::Guarded::LogLineHeldBack, self.logs.held_back());
        MetricsSnapshot {
            counts,
            connections,
            permanent,
            ephemeral,
            identity_records: self.identities.len() as u64,
            cached_records: crate::identity_store::CachedKind::ALL
                .iter()
                .map(|kind| {
                    let (records, bytes) = self.identities.cache_usage(*kind);
                    (kind.name(), records as u64, bytes as u64)
                })
                .collect(),
        }
    }

    /// A local engine leaves: the Router stops routing to it, and its row
    /// of counts goes.
    pub fn unregister_engine(&mut self, name: &EngineName) -> Option<A> {
        self.metrics.forget_engine(name.as_str());
        self.router.unregister_engine(name)
    }

    pub(super) fn class_of(&self, peer: &NodeIdentity) -> PeerClass {
        if self.transport.is_permanent(peer) {
            PeerClass::Permanent
        } else {
            PeerClass::Ephemeral
        }
    }

    /// A local engine hands the core a message.
    pub(super) fn count_local_send(&mut self, engine: &EngineName) {
        self.metrics.count_in(PeerClass::Local);
        if self.router.engine_address(engine).is_some() {
            self.metrics.count_engine(engine.as_str(), true);
        }
    }

    /// A message goes to the local engine it names.
    pub(super) fn count_delivery(&mut self, dst: &DestinationIdentity) {
        self.metrics.count_out(PeerClass::Local);
        if let DestinationIdentity::Engine(engine) = dst {
            if self.router.engine_address(&engine.name).is_some() {
                self.metrics.count_engine(engine.name.as_str(), false);
            }
        }
    }

    /// A topic's event goes to its `count` local subscribers.
    pub(super) fn count_topic_delivery(&mut self, dst: &DestinationIdentity, count: usize) {
        for _ in 0..count {
            self.metrics.count_out(PeerClass::Local);
        }
        if let DestinationIdentity::Topic(topic) = dst {
            for engine in self.router.local_subscribers(topic) {
                if self.router.engine_address(engine).is_some() {
                    self.metrics.count_engine(engine.as_str(), false);
                }
            }
        }
    }

    pub(super) fn count_dial_failure(&mut self, failure: &ConnectFailure) {
        if let Some(failure) = HandshakeFailure::of_dial(failure) {
            self.metrics.count_handshake_failure(Side::Outbound, failure);
        }
    }
}
