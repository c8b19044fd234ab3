//! Faults: crashes and restarts, partitions and their healing, nodes that
//! join late, and adversaries.

use netmachine_engines::ports::Randomness;

use super::node::{address_of, transport_config};
use super::scenario::{Behaviour, FaultKind};
use super::{Event, Simulation, IDLE_TIMEOUT_US, WINDOW};

impl Simulation {
    fn pick(&mut self, count: u32) -> Vec<u32> {
        let total = self.nodes.iter().filter(|n| n.present).count() as u64;
        let mut chosen = Vec::new();
        let mut guard = 0;
        while chosen.len() < count.min(total as u32) as usize && guard < 100_000 {
            guard += 1;
            let n = (self.random.next_u64() % total) as u32;
            if !chosen.contains(&n) && self.nodes[n as usize].present {
                chosen.push(n);
            }
        }
        chosen
    }

    pub(super) fn fault(&mut self, index: usize) {
        let kind = self.scenario.faults[index].kind.clone();
        match kind {
            FaultKind::Crash { nodes, restart_after_s } => {
                for n in self.pick(nodes) {
                    self.crash(n);
                    if let Some(after) = restart_after_s {
                        self.queue.push(self.now_us + (after * 1e6) as u64, Event::Restart(n));
                    }
                }
            }
            FaultKind::Partition { fraction, heal_after_s } => {
                let cut = ((self.scenario.nodes as f64) * fraction.clamp(0.0, 1.0)) as u32;
                self.partition_cut = Some(cut);
                self.partitions += 1;
                let number = self.partitions;
                let crossing: Vec<u64> = (0..self.links.len())
                    .filter(|l| {
                        let link = &self.links[*l];
                        (link.open[0] || link.open[1]) && (link.ends[0] < cut) != (link.ends[1] < cut)
                    })
                    .map(|l| self.handle_of(l))
                    .collect();
                for link in crossing {
                    self.queue.push(self.now_us + IDLE_TIMEOUT_US, Event::LinkCheck { link });
                }
                if let Some(after) = heal_after_s {
                    self.queue.push(self.now_us + (after * 1e6) as u64, Event::Heal(number));
                }
            }
            FaultKind::Join { nodes } => {
                let waiting: Vec<u32> = (0..self.nodes.len() as u32)
                    .filter(|n| !self.nodes[*n as usize].present)
                    .take(nodes as usize)
                    .collect();
                let rate = self.scenario.workload.unicast_per_node_per_s;
                for n in waiting {
                    self.nodes[n as usize].present = true;
                    if rate > 0.0 {
                        let first = self.now_us + self.exponential_us(rate);
                        self.queue.push(first, Event::Unicast(n));
                    }
                    self.start_pinging(n);
                }
            }
            FaultKind::Adversary { nodes, behaviour } => {
                for n in self.pick(nodes) {
                    self.nodes[n as usize].behaviour = Some(behaviour);
                    if behaviour == Behaviour::LieInAdverts {
                        // It signs an advert of another node's address.
                        let other = (n + 1) % self.scenario.nodes;
                        self.nodes[n as usize].readvertise(address_of(other));
                        self.drain(n);
                    }
                }
            }
        }
    }

    /// The process dies: its memory is gone, its disk stays.
    pub(super) fn crash(&mut self, n: u32) {
        self.nodes[n as usize].crash(transport_config(WINDOW, self.scenario.buffers));
        self.pings_lost_in_crash(n);
        self.drop_links_of(n);
    }

    /// The process starts again from its disk; its application subscribes
    /// to its topics again.
    pub(super) fn restart(&mut self, n: u32) {
        let seed = self.random.next_u64();
        self.nodes[n as usize].restart(seed, transport_config(WINDOW, self.scenario.buffers));
        self.drain(n);
        for t in 0..self.topics.len() {
            let topic = self.topics[t];
            if topic.publisher == n {
                self.nodes[n as usize].core.created_topic(topic.id);
            }
            if self.subscribers[t].contains(&n) {
                self.subscribe(n, topic.id);
            }
        }
    }

    pub(super) fn heal(&mut self, partition: u32) {
        if self.partitions == partition {
            if let Some(cut) = self.partition_cut.take() {
                self.last_heal = Some((self.now_us, cut));
            }
        }
    }
}
