//! Room in the peer table: a full table forgets its quietest stranger
//! (a peer holding nothing of value) for a newcomer, and peers dialling in
//! from one address hold only their share of it.

use std::net::IpAddr;

use netmachine_domain::NodeIdentity;

use super::{ip_shares, Transport, TransportEffect};

impl Transport {
    /// Whether `peer`, dialling in from `ip`, has an entry in the peer
    /// table or can be given one (within its address's share, and after
    /// forgetting a stranger if the table is full).
    pub(super) fn room_for_inbound(&mut self, peer: NodeIdentity, ip: Option<IpAddr>) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        let address_has_room = match ip {
            Some(ip) => self.make_room_for_address(ip),
            None => true,
        };
        address_has_room && self.make_room()
    }

    /// Whether a new peer fits the table, after forgetting the quietest
    /// peer that holds nothing of value if it was full.
    pub(super) fn make_room(&mut self) -> bool {
        if self.peers.len() < self.config.max_peers {
            return true;
        }
        let busy = self.busy_peers();
        let quietest = self
            .peers
            .iter()
            .filter(|(id, p)| p.is_stranger() && !busy.contains(*id))
            .min_by_key(|(id, p)| (p.last_activity, **id))
            .map(|(id, _)| *id);
        self.evict(quietest)
    }

    /// Whether a peer dialling in from `address` fits that address's share
    /// of the table, after forgetting the address's own quietest stranger
    /// if the share was full.
    fn make_room_for_address(&mut self, address: IpAddr) -> bool {
        let address = ip_shares::share_key(address);
        let share = self.config.max_peers_per_ip;
        if self.peers.len() < share {
            return true;
        }
        if !self.ip_shares.is_counting() {
            self.ip_shares.start(self.peers.values().filter_map(|p| p.ip));
        }
        if self.ip_shares.held_by(address) < share {
            return true;
        }
        let busy = self.busy_peers();
        let quietest = self
            .peers
            .iter()
            .filter(|(id, p)| p.ip == Some(address) && p.is_stranger() && !busy.contains(*id))
            .map(|(id, p)| (p.last_activity, *id))
            .min()
            .map(|(_, id)| id);
        self.evict(quietest)
    }

    /// A peer left the table: its address's count goes down, and the
    /// counts go once the table is well below a share.
    pub(super) fn left_table(&mut self, ip: Option<ip_shares::ShareKey>) {
        if let Some(ip) = ip {
            self.ip_shares.release(ip);
        }
        if self.ip_shares.is_counting() && self.peers.len() < self.config.max_peers_per_ip / 2 {
            self.ip_shares.stop();
        }
    }

    /// Peers that must stay: those with a connection in any state, and
    /// those the node trusts above the default.
    fn busy_peers(&self) -> std::collections::HashSet<NodeIdentity> {
        self.conns.values().map(|c| c.peer).chain(self.trusted.iter().flat_map(|t| t.iter()).copied()).collect()
    }

    /// Marks a peer the node trusts above the default: it is never
    /// forgotten to make room.
    pub fn set_trusted(&mut self, peer: NodeIdentity, trusted: bool) {
        match (trusted, &mut self.trusted) {
            (true, set) => {
                set.get_or_insert_with(Box::default).insert(peer);
            }
            (false, Some(set)) => {
                set.remove(&peer);
                if set.is_empty() {
                    self.trusted = None;
                }
            }
            (false, None) => {}
        }
    }

    fn evict(&mut self, peer: Option<NodeIdentity>) -> bool {
        let Some(peer) = peer else { return false };
        self.evicted += 1;
        self.remove_peer(peer);
        true
    }

    /// Takes `peer` out of the table; the host forgets it too.
    pub(super) fn remove_peer(&mut self, peer: NodeIdentity) {
        let ip = self.peers.remove(&peer).and_then(|p| p.ip);
        self.left_table(ip);
        self.cancel_timers(peer);
        self.effects.push_back(TransportEffect::Forgotten { peer });
    }

    /// Peers forgotten so far to make room for newcomers.
    pub fn peers_evicted(&self) -> u64 {
        self.evicted
    }
}
