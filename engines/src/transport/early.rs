//! Messages that follow the dialler's hello at once. A fresh connection
//! would otherwise carry nothing for a round trip, until the listener's
//! reply. What goes early is what the listener can take on the channel's
//! word alone: messages to an engine or to the node, scoped anywhere.
//! Topic events wait (the listener checks them against the topic's advert,
//! which is sent after the reply), and so do domain-scoped messages (they
//! need the dialler's certificate). Early messages use the same window as
//! any other; if the listener refuses, or the connection fails before its
//! reply, they go back to the front of the peer's queue.

use netmachine_domain::{DestinationIdentity, NodeIdentity, NodeMessage, NodePayload, RoutingScope, Timestamp};

use super::links::put_back;
use super::{ConnId, Link, Transport, TransportEffect, Undeliverable};

/// Whether the listener can take `message` before it has answered the hello.
pub fn may_precede_reply(message: &NodeMessage) -> bool {
    match &message.payload {
        NodePayload::Engine(inner) => {
            matches!(inner.dst, DestinationIdentity::Engine(_) | DestinationIdentity::Node(_))
                && !matches!(inner.scope, RoutingScope::Domain(_))
        }
        NodePayload::Relay(_) => false,
    }
}

impl Transport {
    /// The hello is written on `attempt`: the messages at the front of the
    /// peer's queue that [`may_precede_reply`] follow it, as far as the
    /// window allows.
    pub fn hello_sent(&mut self, attempt: ConnId, now: Timestamp) {
        let Some(peer) = self.conns.get(&attempt).map(|c| c.peer) else {
            return;
        };
        if self.peers.get(&peer).map(|p| p.link) != Some(Link::Dialling { attempt }) {
            return;
        }
        self.move_to_conn(peer, attempt, may_precede_reply, now);
    }

    /// What `attempt` sent before the listener's reply, oldest first, when
    /// the attempt failed: back to the front of the peer's queue, before
    /// [`Transport::dial_failed`] decides what comes next.
    pub fn requeue_early(&mut self, attempt: ConnId, messages: Vec<NodeMessage>, now: Timestamp) {
        if messages.is_empty() {
            return;
        }
        let stopping = self.stopping;
        let peer_id: Option<NodeIdentity> = self.conns.get(&attempt).map(|c| c.peer);
        let (expired, reason) = match peer_id.and_then(|p| self.peers.get_mut(&p)) {
            Some(peer) if !stopping => (put_back(peer, messages, now), Undeliverable::Expired),
            // Only a stop or a ban abandons an attempt the core still runs.
            _ if stopping => (messages, Undeliverable::Shutdown),
            _ => (messages, Undeliverable::Banned),
        };
        for message in expired {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: reason.clone() });
        }
        // The peer may have a connection by now (one it dialled in on):
        // it takes them. Otherwise their expiry is watched until the next.
        if let Some(peer_id) = peer_id.filter(|_| !stopping) {
            self.flush(peer_id, now);
            self.rearm_waiting(peer_id, now);
        }
    }
}
