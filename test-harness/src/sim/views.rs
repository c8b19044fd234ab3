//! Partial views: a workload with locality. Each node keeps a view of a
//! few peers chosen at random and sends most of its messages to them, as
//! a node of an overlay does with its neighbours. A peer of the view found
//! crashed or not yet joined is replaced by a live node chosen at random,
//! as an overlay repairs its view.

use netmachine_engines::ports::Randomness;

use super::model::unit;
use super::Simulation;

/// How many draws a view repair makes before it settles for any node.
const REPAIR_DRAWS: u32 = 16;

/// Every node's view, flat: node `n`'s peers are `peers[n*size..(n+1)*size]`.
#[derive(Debug, Default)]
pub(crate) struct Views {
    size: usize,
    peers: Vec<u32>,
}

impl Views {
    /// Views of `size` peers each for `nodes` nodes, drawn from all of them
    /// (nodes that join later are among them, and replaced until they do).
    pub(crate) fn new(nodes: u32, size: u32, random: &mut dyn Randomness) -> Self {
        let size = size.min(nodes.saturating_sub(1)) as usize;
        let mut peers = Vec::with_capacity(nodes as usize * size);
        for n in 0..nodes {
            for _ in 0..size {
                let mut p = (random.next_u64() % u64::from(nodes)) as u32;
                if p == n {
                    p = (p + 1) % nodes;
                }
                peers.push(p);
            }
        }
        Self { size, peers }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
}

impl Simulation {
    /// Where node `n` sends its next message: a peer of its view, or with
    /// the rest of the share, any node.
    pub(super) fn destination_of(&mut self, n: u32) -> u32 {
        if self.views.is_empty() || unit(&mut self.random) >= self.scenario.workload.view_share {
            return self.random_peer_of(n);
        }
        let size = self.views.size;
        let slot = n as usize * size + (self.random.next_u64() % size as u64) as usize;
        let peer = self.views.peers[slot];
        if self.is_live(peer) {
            return peer;
        }
        let mut replacement = self.random_peer_of(n);
        for _ in 0..REPAIR_DRAWS {
            if self.is_live(replacement) {
                break;
            }
            replacement = self.random_peer_of(n);
        }
        self.views.peers[slot] = replacement;
        replacement
    }

    fn is_live(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        node.alive && node.present
    }
}
