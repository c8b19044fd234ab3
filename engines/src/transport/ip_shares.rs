//! How many entries of the peer table each remote IP address holds. One
//! address (one machine, or one botnet member) may hold only a share of
//! the table, so fresh identities minted from it push out its own
//! strangers rather than every newcomer's room. Only peers that dialled in
//! from an address are counted; peers this node dialled are its choice.

use std::collections::HashMap;
use std::net::IpAddr;

use netmachine_domain::NodeIdentity;

#[derive(Debug, Default)]
pub(super) struct IpShares {
    address_of: HashMap<NodeIdentity, IpAddr>,
    held: HashMap<IpAddr, usize>,
}

impl IpShares {
    /// Entries `address` holds now.
    pub(super) fn held_by(&self, address: IpAddr) -> usize {
        self.held.get(&address).copied().unwrap_or(0)
    }

    /// The peers counted against `address`.
    pub(super) fn peers_of(&self, address: IpAddr) -> impl Iterator<Item = &NodeIdentity> {
        self.address_of.iter().filter(move |(_, a)| **a == address).map(|(peer, _)| peer)
    }

    /// Counts `peer`'s entry against `address` (and no longer against the
    /// address it came from before).
    pub(super) fn count(&mut self, peer: NodeIdentity, address: IpAddr) {
        if let Some(before) = self.address_of.insert(peer, address) {
            self.release(before);
        }
        *self.held.entry(address).or_default() += 1;
    }

    /// `peer` left the table.
    pub(super) fn forget(&mut self, peer: &NodeIdentity) {
        if let Some(address) = self.address_of.remove(peer) {
            self.release(address);
        }
    }

    fn release(&mut self, address: IpAddr) {
        if let Some(held) = self.held.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(&address);
            }
        }
    }
}
