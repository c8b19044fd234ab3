//! The Transport engine: one connection per peer, keyed by node identity.
//!
//! It decides, and its driver does: which address to dial (advertised
//! weight first, then local measurements), when to redial (exponential
//! backoff with jitter for permanent peers), which of two simultaneous
//! connections to keep (the one dialled by the smaller identity, so both
//! ends keep the same one), whom to admit (connection caps in total and per
//! IP, bans, versions), how many messages may be unacknowledged on a
//! connection, what waits in each peer's bounded queue, and when a waiting
//! message has expired. Time comes in with every call; effects go out
//! through [`Transport::poll_effect`].

pub mod connection;
mod cost;
mod dialling;
mod early;
mod ip_shares;
mod links;
mod recent;
mod room;
mod send_queue;
mod timers;
mod types;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use netmachine_domain::{
    NodeIdentity, NodeMessage, Timestamp, TransportAddress, TransportProtocol, VersionRange, WeightedAddress,
};

pub use recent::RecentIds;
pub use types::{
    CloseReason, ConnId, ConnIdHasher, ConnMap, ConnectFailure, Direction, OutboundError, TransportEffect,
    TransportEvent, Undeliverable,
};

use crate::engine::Timers;
use crate::ports::Randomness;
pub use cost::message_cost;
use cost::{expiry_of, is_expired};
use send_queue::SendQueue;
use types::PeerTimer;

/// The connection protocol versions this implementation speaks.
pub const PROTOCOL_VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub versions: VersionRange,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Messages a peer's queue takes from senders while it is not connected
    /// (or its window is full). Messages that come back from a dropped
    /// connection were already accepted and are never dropped, so a queue
    /// holds at most `max_queue_per_peer + window`.
    pub max_queue_per_peer: usize,
    /// Peers the engine keeps state for. When the table is full, a peer
    /// holding nothing of value (no connection, nothing queued, not
    /// permanent) is forgotten to make room, the longest quiet first.
    pub max_peers: usize,
    /// Entries of the peer table that peers dialling in from one IP
    /// address may hold; past it, that address's own quietest stranger
    /// makes room, or the newcomer is refused.
    pub max_peers_per_ip: usize,
    /// Messages that may be sent but not yet acknowledged on a connection.
    pub window: usize,
    /// Bytes (as [`message_cost`] counts them) that may be unacknowledged
    /// on a connection; one message is always allowed, however large.
    pub window_bytes: usize,
    /// Bytes a peer's queue takes from senders (one message always fits an
    /// empty queue).
    pub max_queue_bytes_per_peer: usize,
    pub idle_timeout_ms: u64,
    /// A peer with no connection, nothing queued and not permanent is
    /// forgotten after this long without traffic, so the peer table holds
    /// the peers in use rather than every peer ever contacted. Its address
    /// comes back from the identity store when it is next needed.
    pub forget_after_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// The protocol to prefer when a peer advertises several.
    pub preferred_protocol: Option<TransportProtocol>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            versions: PROTOCOL_VERSIONS,
            max_connections: 1024,
            max_connections_per_ip: 32,
            max_queue_per_peer: 8192,
            max_peers: 65_536,
            max_peers_per_ip: 256,
            window: 4096,
            window_bytes: 32 * 1024 * 1024,
            max_queue_bytes_per_peer: 64 * 1024 * 1024,
            idle_timeout_ms: 120_000,
            forget_after_ms: 600_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            preferred_protocol: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Idle,
    Dialling { attempt: ConnId },
    Backoff { until: Timestamp },
    Connected { conn: ConnId },
}

#[derive(Debug, Default, Clone, Copy)]
struct AddressStats {
    failures: u32,
    rtt_micros: Option<u32>,
}

/// One round of dialling a peer: the addresses left to try, and the error
/// of the last one tried.
#[derive(Debug)]
struct DialRound {
    candidates: VecDeque<TransportAddress>,
    last_error: Option<String>,
}

/// Addresses of one peer whose dial outcomes are remembered.
const MAX_ADDRESS_STATS: usize = 16;

#[derive(Debug)]
struct Peer {
    addresses: Vec<WeightedAddress>,
    /// What this node measured of each address it dialled: a short list
    /// (a peer advertises a handful), not a map, as most peers sit idle in
    /// the table and a map costs a few hundred bytes even for one.
    stats: Vec<(TransportAddress, AddressStats)>,
    link: Link,
    /// The dial round under way, if any: boxed, as few peers of the table
    /// are being dialled.
    dial: Option<Box<DialRound>>,
    queue: SendQueue,
    permanent: bool,
    failures: u32,
    last_activity: Timestamp,
    /// The address it first dialled in from, if it did: what its entry
    /// counts against (see `ip_shares`).
    ip: Option<ip_shares::ShareKey>,
}

impl Peer {
    fn new(now: Timestamp) -> Self {
        Self {
            addresses: Vec::new(),
            stats: Vec::new(),
            link: Link::Idle,
            dial: None,
            queue: SendQueue::default(),
            permanent: false,
            failures: 0,
            last_activity: now,
            ip: None,
        }
    }

    fn stats_of(&self, address: &TransportAddress) -> AddressStats {
        self.stats.iter().find(|(a, _)| a == address).map(|(_, s)| *s).unwrap_or_default()
    }

    /// The stats of `address`, made if missing; the oldest is dropped past
    /// [`MAX_ADDRESS_STATS`].
    fn stats_mut(&mut self, address: TransportAddress) -> &mut AddressStats {
        let index = match self.stats.iter().position(|(a, _)| *a == address) {
            Some(index) => index,
            None => {
                if self.stats.len() >= MAX_ADDRESS_STATS {
                    self.stats.remove(0);
                }
                self.stats.push((address, AddressStats::default()));
                self.stats.len() - 1
            }
        };
        &mut self.stats[index].1
    }

    fn wants_connection(&self) -> bool {
        self.permanent || !self.queue.is_empty()
    }

    /// Holds nothing of value: no connection or dial, nothing queued, not
    /// permanent. Such a peer may be forgotten to make room.
    fn is_stranger(&self) -> bool {
        matches!(self.link, Link::Idle | Link::Backoff { .. }) && !self.wants_connection()
    }
}

#[derive(Debug)]
struct Conn {
    peer: NodeIdentity,
    /// The peer's boot id, known once the handshake is done.
    peer_boot: Option<u64>,
    direction: Direction,
    ip: Option<IpAddr>,
    established: bool,
    inflight: usize,
    inflight_bytes: usize,
}

impl Conn {
    /// Whether one more message of `cost` fits the window.
    fn has_room(&self, cost: usize, config: &TransportConfig) -> bool {
        self.inflight < config.window && (self.inflight == 0 || self.inflight_bytes + cost <= config.window_bytes)
    }

    fn take(&mut self, cost: usize) {
        self.inflight += 1;
        self.inflight_bytes += cost;
    }
}

/// A snapshot of one peer, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    pub peer: NodeIdentity,
    pub connected: bool,
    pub direction: Option<Direction>,
    pub permanent: bool,
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
    pub inflight_bytes: usize,
    pub failures: u32,
}

pub struct Transport {
    local: NodeIdentity,
    config: TransportConfig,
    random: Box<dyn Randomness>,
    /// Boxed: the table keeps spare slots, and a slot of a boxed peer
    /// weighs 40 bytes where the peer itself weighs some 200.
    peers: HashMap<NodeIdentity, Box<Peer>>,
    conns: ConnMap<Conn>,
    next_conn: ConnId,
    effects: VecDeque<TransportEffect>,
    /// Redials, expiries, idle closes and forgetting, per peer.
    timers: Timers<PeerTimer>,
    /// The peer table's entries per remote address.
    ip_shares: ip_shares::IpShares,
    /// Peers forgotten to make room in a full table (or a full share).
    evicted: u64,
    /// Peers trusted above the default: never evicted. Boxed: most nodes
    /// trust none.
    #[allow(clippy::box_collection, reason = "8 bytes in every node while unused, not the 48 of an empty set")]
    trusted: Option<Box<std::collections::HashSet<NodeIdentity>>>,
    /// Set by `shutdown`: what comes back from closing connections is given
    /// up, and nothing is dialled.
    stopping: bool,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// The node whose dial is kept when two connections to the same peer
/// exist: the smaller identity.
fn preferred_dialler(a: NodeIdentity, b: NodeIdentity) -> NodeIdentity {
    a.min(b)
}

impl Transport {
    pub fn new(local: NodeIdentity, config: TransportConfig, random: Box<dyn Randomness>) -> Self {
        Self {
            local,
            config,
            random,
            peers: HashMap::new(),
            conns: ConnMap::default(),
            next_conn: 1,
            effects: VecDeque::new(),
            timers: Timers::new(),
            stopping: false,
            ip_shares: ip_shares::IpShares::default(),
            evicted: 0,
            trusted: None,
        }
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The next thing the driver must do.
    pub fn poll_effect(&mut self) -> Option<TransportEffect> {
        self.effects.pop_front()
    }

    pub fn is_connected(&self, peer: &NodeIdentity) -> bool {
        self.peers.get(peer).is_some_and(|p| matches!(p.link, Link::Connected { .. }))
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether the engine holds any state for `peer`.
    pub fn knows(&self, peer: &NodeIdentity) -> bool {
        self.peers.contains_key(peer)
    }

    pub fn peer_summaries(&self) -> Vec<PeerSummary> {
        let mut out: Vec<PeerSummary> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let conn = match p.link {
                    Link::Connected { conn } => self.conns.get(&conn),
                    _ => None,
                };
                PeerSummary {
                    peer: *id,
                    connected: conn.is_some(),
                    direction: conn.map(|c| c.direction),
                    permanent: p.permanent,
                    queued: p.queue.len(),
                    queued_bytes: p.queue.bytes(),
                    inflight: conn.map_or(0, |c| c.inflight),
                    inflight_bytes: conn.map_or(0, |c| c.inflight_bytes),
                    failures: p.failures,
                }
            })
            .collect();
        out.sort_by_key(|s| s.peer);
        out
    }

    /// Whether `peer` is one this node keeps connected.
    pub fn is_permanent(&self, peer: &NodeIdentity) -> bool {
        self.peers.get(peer).is_some_and(|p| p.permanent)
    }

    /// What waits for the permanent peers, then for the ephemeral ones.
    pub fn depths(&self) -> [crate::metrics::Depths; 2] {
        let mut out = [crate::metrics::Depths::default(); 2];
        for peer in self.peers.values() {
            let depths = &mut out[usize::from(!peer.permanent)];
            depths.peers += 1;
            depths.queued_messages += peer.queue.len() as u64;
            depths.queued_bytes += peer.queue.bytes() as u64;
            if let Link::Connected { conn } = peer.link {
                if let Some(c) = self.conns.get(&conn) {
                    depths.connected_peers += 1;
                    depths.inflight_messages += c.inflight as u64;
                    depths.inflight_bytes += c.inflight_bytes as u64;
                }
            }
        }
        out
    }

    fn peer_entry(&mut self, peer: NodeIdentity, now: Timestamp) -> Option<&mut Peer> {
        if !self.peers.contains_key(&peer) {
            if !self.make_room() {
                return None;
            }
            self.add_peer(peer, now);
        }
        self.peers.get_mut(&peer).map(|p| &mut **p)
    }

    /// A new entry in the peer table, with its forget timer running.
    fn add_peer(&mut self, peer: NodeIdentity, now: Timestamp) {
        self.peers.insert(peer, Box::new(Peer::new(now)));
        self.timers.set_earliest(PeerTimer::Sweep, now.saturating_add_millis(self.config.forget_after_ms));
    }

    // ---- what the engine is told about peers ----------------------------

    /// The addresses a peer advertises (from its NodeAdvert).
    pub fn set_addresses(&mut self, peer: NodeIdentity, addresses: Vec<WeightedAddress>, now: Timestamp) {
        if peer == self.local {
            return;
        }
        if let Some(entry) = self.peer_entry(peer, now) {
            entry.addresses = addresses;
            if entry.link == Link::Idle && entry.wants_connection() {
                self.timers.set(PeerTimer::Redial(peer), now);
            }
        }
    }

    /// Marks a peer permanent (kept connected, redialled with backoff) or
    /// ephemeral (closed when idle). A permanent peer is dialled at once.
    pub fn set_permanent(&mut self, peer: NodeIdentity, permanent: bool, now: Timestamp) {
        if peer == self.local {
            return;
        }
        let Some(entry) = self.peer_entry(peer, now) else {
            return;
        };
        entry.permanent = permanent;
        let link = entry.link;
        let last_activity = entry.last_activity;
        if permanent && link == Link::Idle {
            self.start_dial(peer, now);
        }
        if !permanent {
            // Ephemeral now: its connection may close when idle, and the
            // peer be forgotten.
            let wait = match link {
                Link::Connected { .. } => self.config.idle_timeout_ms,
                _ => self.config.forget_after_ms,
            };
            self.timers.set_earliest(PeerTimer::Sweep, last_activity.saturating_add_millis(wait));
        }
    }

    /// Records how long reaching an address took (dial, handshakes): the
    /// local measurement that orders addresses of equal weight.
    pub fn record_rtt(&mut self, peer: NodeIdentity, address: TransportAddress, rtt_micros: u32) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.stats_mut(address).rtt_micros = Some(rtt_micros);
        }
    }

    // ---- sending ---------------------------------------------------------

    /// Takes a message for `to`: sent at once on an open connection with
    /// room in its window, otherwise queued (and the peer dialled).
    pub fn send(&mut self, to: NodeIdentity, message: NodeMessage, now: Timestamp) -> Result<(), OutboundError> {
        if is_expired(&message, now) {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Expired });
            return Ok(());
        }
        let cost = message_cost(&message);
        if !self.peers.contains_key(&to) {
            if !self.make_room() {
                return Err(OutboundError::QueueFull { peer: to });
            }
            self.add_peer(to, now);
        }
        let Some(peer) = self.peers.get_mut(&to) else {
            return Err(OutboundError::QueueFull { peer: to });
        };
        peer.last_activity = now;
        if let Link::Connected { conn } = peer.link {
            if peer.queue.is_empty() {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.has_room(cost, &self.config) {
                        c.take(cost);
                        self.effects.push_back(TransportEffect::Transmit { conn, message });
                        return Ok(());
                    }
                }
            }
        }
        let bytes_full = !peer.queue.is_empty() && peer.queue.bytes() + cost > self.config.max_queue_bytes_per_peer;
        if peer.queue.len() >= self.config.max_queue_per_peer || bytes_full {
            return Err(OutboundError::QueueFull { peer: to });
        }
        let had_link = !matches!(peer.link, Link::Idle);
        if !had_link && peer.addresses.is_empty() {
            return Err(OutboundError::NoAddress { peer: to });
        }
        if let Some(expiry) = expiry_of(&message) {
            self.timers.set_earliest(PeerTimer::Expire(to), expiry);
        }
        peer.queue.push_back(message);
        if !had_link {
            self.start_dial(to, now);
        }
        Ok(())
    }

    /// The receiver took `count` more messages of `conn`, weighing `bytes`
    /// by [`message_cost`]: their room in the window is free again.
    pub fn acked(&mut self, conn: ConnId, count: u64, bytes: usize, now: Timestamp) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.inflight = c.inflight.saturating_sub(usize::try_from(count).unwrap_or(usize::MAX));
        c.inflight_bytes = c.inflight_bytes.saturating_sub(bytes);
        let peer = c.peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_activity = now;
        }
        self.flush(peer, now);
    }

    /// The peer showed it is alive (a message or acknowledgement arrived).
    pub fn activity(&mut self, peer: NodeIdentity, now: Timestamp) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_activity = now;
        }
    }

    /// Moves queued messages onto the peer's connection while the window
    /// has room.
    fn flush(&mut self, peer_id: NodeIdentity, now: Timestamp) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Link::Connected { conn } = peer.link else {
            return;
        };
        self.move_to_conn(peer_id, conn, |_| true, now);
    }

    /// Moves the front of a peer's queue onto `conn` while the window has
    /// room and each message is `sendable`.
    fn move_to_conn(
        &mut self,
        peer_id: NodeIdentity,
        conn: ConnId,
        sendable: impl Fn(&NodeMessage) -> bool,
        now: Timestamp,
    ) {
        let Some(peer) = self.peers.get_mut(&peer_id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        while let Some(front) = peer.queue.front() {
            if !sendable(front) {
                break;
            }
            let cost = message_cost(front);
            if !c.has_room(cost, &self.config) {
                break;
            }
            let Some(message) = peer.queue.pop_front() else { break };
            if is_expired(&message, now) {
                self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Expired });
                continue;
            }
            c.take(cost);
            self.effects.push_back(TransportEffect::Transmit { conn, message });
        }
    }
}

#[cfg(test)]
mod tests;
