//! Pings in the workload: each node's application asks the node's ping
//! engine (hosted by the node core, as in a real node) to ping a node
//! chosen at random, and counts how each ping ended.

use netmachine_domain::{Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, MessageId, ProtocolId};
use netmachine_engines::ping::{self, Outcome, PING_PROTOCOL, PING_VERSION};

use super::node::APP_NAME;
use super::{ms, Event, Simulation};

impl Simulation {
    /// Starts the pings of every node present at the start.
    pub(super) fn schedule_pings(&mut self) {
        for n in 0..self.nodes.len() as u32 {
            if self.nodes[n as usize].present {
                self.start_pinging(n);
            }
        }
    }

    /// Node `n` starts pinging (at the start, or when it joins).
    pub(super) fn start_pinging(&mut self, n: u32) {
        let rate = self.scenario.workload.pings_per_node_per_s;
        if rate > 0.0 {
            let first = self.now_us + self.exponential_us(rate);
            self.queue.push(first, Event::Ping(n));
        }
    }

    /// Node `n` crashed: the pings its engine waited on are gone with it.
    pub(super) fn pings_lost_in_crash(&mut self, n: u32) {
        if let Some(open) = self.open_pings.get_mut(n as usize) {
            self.results.pings.lost_in_crash += std::mem::take(open);
        }
    }

    pub(super) fn ping(&mut self, n: u32) {
        let next = self.exponential_us(self.scenario.workload.pings_per_node_per_s);
        if self.now_us + next < self.traffic_end_us {
            self.queue.push(self.now_us + next, Event::Ping(n));
        }
        if !self.nodes[n as usize].alive || !self.nodes[n as usize].present {
            return;
        }
        let to = self.random_peer_of(n);
        let (Ok(app), Ok(protocol)) = (EngineName::new(APP_NAME), ProtocolId::new(PING_PROTOCOL, PING_VERSION)) else {
            return;
        };
        let node = &mut self.nodes[n as usize];
        let id = node.next_message_id;
        node.next_message_id += 1;
        let src = EngineIdentity::new(node.id, app);
        let own = DestinationIdentity::Node(node.id);
        let peer = self.nodes[to as usize].id;
        let request = EngineMessage::new(src, own, MessageId(id), protocol, ping::request(peer));
        self.results.pings.asked += 1;
        self.introduce(n, to);
        if self.nodes[n as usize].core.send(request, ms(self.now_us)).is_err() {
            self.results.pings.refused += 1;
        } else if let Some(open) = self.open_pings.get_mut(n as usize) {
            *open += 1;
        }
        self.drain(n);
    }

    /// What node `n`'s ping engine answered its application.
    pub(super) fn ping_answered(&mut self, n: u32, body: &Body) {
        if let Some(open) = self.open_pings.get_mut(n as usize) {
            *open = open.saturating_sub(1);
        }
        let pings = &mut self.results.pings;
        match Outcome::decode(body) {
            Some(Outcome::Answered { rtt_ms, .. }) => {
                pings.answered += 1;
                self.ping_rtt_us.push(rtt_ms.saturating_mul(1000));
            }
            Some(Outcome::TimedOut { .. }) => pings.timed_out += 1,
            Some(Outcome::Refused { .. }) | None => pings.refused += 1,
        }
    }
}
