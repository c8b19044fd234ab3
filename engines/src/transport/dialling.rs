//! Dialling: which address of a peer to try next, what a failed attempt
//! leads to (the next address, or a backoff before the next round), and
//! adopting the connection a dial opened.

use std::collections::VecDeque;

use netmachine_domain::{NodeIdentity, NodePayload, Timestamp, TransportAddress};

use super::types::PeerTimer;
use super::{
    CloseReason, Conn, ConnId, ConnectFailure, DialRound, Direction, Link, Peer, Transport, TransportEffect,
    TransportEvent,
};

impl Transport {
    /// Orders a peer's addresses: the preferred protocol (the waiting
    /// message's transport preference, else this node's), then advertised
    /// weight, then fewest failures, then lowest measured setup time.
    fn ordered_addresses(&self, peer: &Peer) -> VecDeque<TransportAddress> {
        let wanted = peer.queue.front().and_then(|m| match &m.payload {
            NodePayload::Engine(inner) => inner.prefs.and_then(|p| p.protocol),
            NodePayload::Relay(_) => None,
        });
        let preferred = wanted.or(self.config.preferred_protocol);
        let mut addresses = peer.addresses.clone();
        addresses.sort_by_key(|w| {
            let stats = peer.stats_of(&w.address);
            (
                preferred.is_some_and(|p| p != w.address.protocol),
                std::cmp::Reverse(w.weight),
                stats.failures,
                stats.rtt_micros.unwrap_or(u32::MAX),
            )
        });
        addresses.into_iter().map(|w| w.address).collect()
    }

    pub(super) fn start_dial(&mut self, peer_id: NodeIdentity, now: Timestamp) {
        let Some(peer) = self.peers.get(&peer_id) else {
            return;
        };
        let candidates = self.ordered_addresses(peer);
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.dial = Some(Box::new(DialRound { candidates, last_error: None }));
        }
        self.dial_next(peer_id, now);
    }

    fn dial_next(&mut self, peer_id: NodeIdentity, now: Timestamp) {
        if self.conns.len() >= self.config.max_connections {
            self.connect_failed(peer_id, ConnectFailure::LocalCapacity, now);
            return;
        }
        let attempt = self.next_conn;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(address) = peer.dial.as_mut().and_then(|round| round.candidates.pop_front()) else {
            let reason = match peer.dial.take().and_then(|round| round.last_error) {
                Some(error) => ConnectFailure::Unreachable(error),
                None => ConnectFailure::NoAddress,
            };
            self.connect_failed(peer_id, reason, now);
            return;
        };
        self.next_conn += 1;
        peer.link = Link::Dialling { attempt };
        self.conns.insert(
            attempt,
            Conn {
                peer: peer_id,
                peer_boot: None,
                direction: Direction::Outbound,
                ip: Some(address.socket.ip()),
                established: false,
                inflight: 0,
                inflight_bytes: 0,
            },
        );
        self.effects.push_back(TransportEffect::Dial { attempt, peer: peer_id, address });
    }

    /// Every address failed: tell the watchers, and back off before the
    /// next round if the peer still wants a connection.
    fn connect_failed(&mut self, peer_id: NodeIdentity, reason: ConnectFailure, now: Timestamp) {
        self.effects.push_back(TransportEffect::Event(TransportEvent::NodeConnectFailed { peer: peer_id, reason }));
        let delay = {
            let Some(peer) = self.peers.get_mut(&peer_id) else {
                return;
            };
            peer.failures = peer.failures.saturating_add(1);
            if !peer.wants_connection() {
                peer.link = Link::Idle;
                return;
            }
            peer.failures
        };
        let until = now.saturating_add_millis(self.backoff_delay(delay));
        self.back_off(peer_id, until);
    }

    pub(super) fn back_off(&mut self, peer_id: NodeIdentity, until: Timestamp) {
        if let Some(peer) = self.peers.get_mut(&peer_id) {
            peer.link = Link::Backoff { until };
            self.timers.set(PeerTimer::Redial(peer_id), until);
        }
    }

    /// Exponential backoff with jitter: between half and all of
    /// `initial * 2^(failures-1)`, capped.
    pub(super) fn backoff_delay(&mut self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.config.backoff_initial_ms.saturating_mul(1u64 << exp).min(self.config.backoff_max_ms).max(1);
        let half = full / 2;
        // Never zero: a redial due at once would fire in the same timeout.
        (half + self.random.next_u64() % (full - half + 1)).max(1)
    }

    /// The dial reached the peer and the handshake succeeded; `boot` is the
    /// peer's boot id from its reply.
    pub fn dial_succeeded(&mut self, attempt: ConnId, boot: u64, now: Timestamp) {
        let Some(conn) = self.conns.get_mut(&attempt) else {
            // The attempt was abandoned meanwhile (e.g. shutdown): close it.
            self.effects.push_back(TransportEffect::Close { conn: attempt, reason: CloseReason::Duplicate });
            return;
        };
        conn.established = true;
        conn.peer_boot = Some(boot);
        let peer = conn.peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.failures = 0;
            p.dial = None;
        }
        self.adopt(attempt, peer, now);
    }

    /// The dial to one address failed; the next address is tried.
    pub fn dial_failed(
        &mut self,
        attempt: ConnId,
        failure: ConnectFailure,
        address: Option<TransportAddress>,
        now: Timestamp,
    ) {
        let Some(conn) = self.conns.remove(&attempt) else {
            return;
        };
        let peer_id = conn.peer;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        if let Some(address) = address {
            peer.stats_mut(address).failures += 1;
        }
        if peer.link != (Link::Dialling { attempt }) {
            return;
        }
        match failure {
            // A refusal or a wrong identity will not change with another
            // address of the same node.
            ConnectFailure::Refused(_) | ConnectFailure::WrongIdentity => {
                peer.dial = None;
                self.connect_failed(peer_id, failure, now);
            }
            other => {
                if let Some(round) = peer.dial.as_mut() {
                    round.last_error = Some(other.to_string());
                }
                self.dial_next(peer_id, now);
            }
        }
    }
}
