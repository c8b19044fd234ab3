//! Admitting connections, adopting one per peer, and what happens when a
//! connection ends, when a peer is banned, and when the node stops.

use std::net::IpAddr;

use netmachine_domain::{HandshakeStatus, NodeIdentity, NodeMessage, Timestamp, VersionRange};

use super::ip_shares;
use super::types::PeerTimer;
use super::{
    is_expired, preferred_dialler, CloseReason, Conn, ConnId, Direction, Link, Peer, Transport, TransportEffect,
    TransportEvent, Undeliverable,
};

impl Transport {
    // ---- inbound -----------------------------------------------------------

    /// Decides whether to admit a peer that dialled in. On `Ok` the
    /// connection is registered as `conn` and `inbound_established` must
    /// follow (or `closed`).
    pub fn admit_inbound(
        &mut self,
        peer: NodeIdentity,
        ip: Option<IpAddr>,
        versions: VersionRange,
        boot: u64,
        banned: bool,
        now: Timestamp,
    ) -> (ConnId, HandshakeStatus) {
        let conn = self.reserve_conn_id();
        (conn, self.admit_inbound_as(conn, peer, ip, versions, boot, banned, now))
    }

    /// A number for a connection that is not yet the engine's to track
    /// (an inbound stream before its hello), for [`Transport::admit_inbound_as`].
    pub fn reserve_conn_id(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        conn
    }

    /// [`Transport::admit_inbound`] under a number from [`Transport::reserve_conn_id`].
    #[allow(clippy::too_many_arguments)]
    pub fn admit_inbound_as(
        &mut self,
        conn: ConnId,
        peer: NodeIdentity,
        ip: Option<IpAddr>,
        versions: VersionRange,
        boot: u64,
        banned: bool,
        now: Timestamp,
    ) -> HandshakeStatus {
        let status = if banned || peer == self.local {
            HandshakeStatus::Denied
        } else if self.config.versions.best_common(versions).is_none() {
            HandshakeStatus::Incompatible
        } else if self.conns.len() >= self.config.max_connections
            || ip.is_some_and(|ip| {
                self.conns.values().filter(|c| c.ip == Some(ip)).count() >= self.config.max_connections_per_ip
            })
            || !self.room_for_inbound(peer, ip)
        {
            HandshakeStatus::OverCapacity
        } else {
            HandshakeStatus::Ok
        };
        if status == HandshakeStatus::Ok {
            match self.peers.get_mut(&peer) {
                // In use again: not to be forgotten before it is adopted.
                Some(known) => known.last_activity = now,
                None => {
                    self.add_peer(peer, now);
                    if let (Some(ip), Some(entry)) = (ip, self.peers.get_mut(&peer)) {
                        let key = ip_shares::share_key(ip);
                        entry.ip = Some(key);
                        self.ip_shares.count(key);
                    }
                }
            }
            self.conns.insert(
                conn,
                Conn {
                    peer,
                    peer_boot: Some(boot),
                    direction: Direction::Inbound,
                    ip,
                    established: false,
                    inflight: 0,
                    inflight_bytes: 0,
                },
            );
        }
        status
    }

    /// An admitted inbound connection finished its handshake.
    pub fn inbound_established(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.established = true;
        let peer = c.peer;
        self.adopt(conn, peer, now);
    }

    /// Makes `conn` the peer's connection unless a better one exists; the
    /// loser is closed.
    pub(super) fn adopt(&mut self, conn: ConnId, peer_id: NodeIdentity, now: Timestamp) {
        let direction = self.conns.get(&conn).map(|c| c.direction);
        let boot = self.conns.get(&conn).and_then(|c| c.peer_boot);
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        peer.last_activity = now;
        if let Link::Connected { conn: existing } = peer.link {
            if existing != conn {
                let existing_dir = self.conns.get(&existing).map(|c| c.direction);
                let existing_boot = self.conns.get(&existing).and_then(|c| c.peer_boot);
                let keep_new = match (existing_dir, direction) {
                    // The peer restarted: the old connection is to a process
                    // that no longer exists.
                    _ if existing_boot != boot => true,
                    (Some(old), Some(new)) if old != new => {
                        let dialler_of_new = if new == Direction::Outbound { self.local } else { peer_id };
                        dialler_of_new == preferred_dialler(self.local, peer_id)
                    }
                    // Same direction: the newer connection replaces a stale one.
                    _ => true,
                };
                let loser = if keep_new { existing } else { conn };
                self.effects.push_back(TransportEffect::Close { conn: loser, reason: CloseReason::Duplicate });
                if !keep_new {
                    return;
                }
            }
        }
        let was_connected = matches!(peer.link, Link::Connected { .. });
        peer.link = Link::Connected { conn };
        self.timers.set_earliest(PeerTimer::Sweep, now.saturating_add_millis(self.config.idle_timeout_ms));
        if !was_connected {
            if let Some(direction) = direction {
                self.effects
                    .push_back(TransportEffect::Event(TransportEvent::NodeConnected { peer: peer_id, direction }));
            }
        }
        self.flush(peer_id, now);
    }

    // ---- closing -----------------------------------------------------------

    /// A connection ended. `returned` holds its messages that were queued
    /// for it or sent but not acknowledged, oldest first: they go back to
    /// the front of the peer's queue, unless expired.
    pub fn closed(&mut self, conn: ConnId, reason: CloseReason, returned: Vec<NodeMessage>, now: Timestamp) {
        let Some(c) = self.conns.remove(&conn) else {
            // Only a stop or a ban abandons a connection the core still runs.
            let reason = if self.stopping { Undeliverable::Shutdown } else { Undeliverable::Banned };
            for message in returned {
                self.effects.push_back(TransportEffect::GiveUp { message, reason: reason.clone() });
            }
            return;
        };
        let peer_id = c.peer;
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            // The peer was banned meanwhile: what was in flight to it goes.
            for message in returned {
                self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Banned });
            }
            return;
        };
        let returned = if self.stopping {
            for message in returned {
                self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Shutdown });
            }
            Vec::new()
        } else {
            returned
        };
        let expired = put_back(peer, returned, now);
        let was_current = peer.link == (Link::Connected { conn });
        if was_current {
            peer.link = Link::Idle;
            // What waits now may expire before the next connection.
            if let Some(first) = peer.queue.first_expiry() {
                self.timers.set_earliest(PeerTimer::Expire(peer_id), first);
            }
        }
        for message in expired {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Expired });
        }
        if was_current {
            self.effects.push_back(TransportEffect::Event(TransportEvent::NodeDisconnected {
                peer: peer_id,
                reason: reason.clone(),
            }));
            let wants = self.peers.get(&peer_id).is_some_and(|p| p.wants_connection());
            if wants && reason == CloseReason::Shutdown {
                // Closed from this side without a fault: dial again at once.
                self.timers.set(PeerTimer::Redial(peer_id), now);
            }
            if wants && reason != CloseReason::Shutdown {
                // Reconnect after a short, jittered pause rather than at once,
                // so a peer that drops every connection is not hammered.
                let failures = {
                    let Some(peer) = self.peers.get_mut(&peer_id) else {
                        return;
                    };
                    peer.failures = peer.failures.saturating_add(1);
                    peer.failures
                };
                let until = now.saturating_add_millis(self.backoff_delay(failures));
                self.back_off(peer_id, until);
            }
        } else {
            // The survivor of a duplicate pair takes the returned messages;
            // if none survived, they wait for the next connection.
            self.flush(peer_id, now);
            self.rearm_waiting(peer_id, now);
        }
    }

    /// A peer with messages waiting and no connection: their expiry is
    /// watched, and an idle peer is dialled.
    pub(super) fn rearm_waiting(&mut self, peer_id: NodeIdentity, now: Timestamp) {
        let Some(peer) = self.peers.get(&peer_id) else { return };
        if matches!(peer.link, Link::Connected { .. }) || peer.queue.is_empty() {
            return;
        }
        if let Some(first) = peer.queue.first_expiry() {
            self.timers.set_earliest(PeerTimer::Expire(peer_id), first);
        }
        if peer.link == Link::Idle && !self.stopping {
            self.timers.set(PeerTimer::Redial(peer_id), now);
        }
    }

    /// Closes one peer's connection (e.g. after a bad signature).
    pub fn disconnect(&mut self, peer: NodeIdentity, reason: CloseReason) {
        if let Some(Link::Connected { conn }) = self.peers.get(&peer).map(|p| p.link) {
            self.effects.push_back(TransportEffect::Close { conn, reason });
        }
    }

    /// This node banned `peer`: its connection (or dial) is closed, what
    /// was queued for it is given up, and it is forgotten, so nothing more
    /// is sent to it or dialled. Messages in flight come back through
    /// `closed` and are given up there.
    pub fn ban(&mut self, peer: NodeIdentity) {
        let Some(mut p) = self.peers.remove(&peer) else { return };
        self.left_table(p.ip);
        self.cancel_timers(peer);
        match p.link {
            // Its messages in flight come back through `closed`.
            Link::Connected { conn } => {
                self.effects.push_back(TransportEffect::Close { conn, reason: CloseReason::Removed });
            }
            // Abandoned: if the dial still succeeds, the connection is closed.
            Link::Dialling { attempt } => {
                self.conns.remove(&attempt);
            }
            Link::Idle | Link::Backoff { .. } => {}
        }
        for message in p.queue.take_all() {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Banned });
        }
    }

    /// Closes every connection and gives up every queued message.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.effects.push_back(TransportEffect::Close { conn, reason: CloseReason::Shutdown });
        }
        for peer in self.peers.values_mut() {
            peer.permanent = false;
            for message in peer.queue.take_all() {
                self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Shutdown });
            }
        }
    }
}

/// Puts messages that were sent and came back (oldest first) at the front
/// of the peer's queue, in their order; returns those that expired
/// meanwhile, oldest first.
pub(super) fn put_back(peer: &mut Peer, returned: Vec<NodeMessage>, now: Timestamp) -> Vec<NodeMessage> {
    let mut expired = Vec::new();
    for message in returned.into_iter().rev() {
        if is_expired(&message, now) {
            expired.push(message);
        } else {
            peer.queue.push_front(message);
        }
    }
    expired.reverse();
    expired
}
