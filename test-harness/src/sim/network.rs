//! The network model: links between nodes that carry frames, each
//! direction an ordered stream (QUIC's), with latency, serialization on a
//! link of limited bandwidth, and a retransmission timeout per loss.

use netmachine_domain::{Frame, NodeIdentity, TransportAddress};
use netmachine_engines::transport::{message_cost, CloseReason, ConnId, ConnectFailure};

use super::link::{Direction, Link};
use super::node::{address_of, index_of};
use super::scenario::Behaviour;
use super::{ms, Event, Simulation, CONNECT_TIMEOUT_US, IDLE_TIMEOUT_US};

impl Simulation {
    /// Node `n` dials `peer` at `address`: the secured stream is open after
    /// a round trip and the handshakes' own cost, or fails after the
    /// connect timeout.
    pub(super) fn dial(&mut self, n: u32, attempt: ConnId, peer: NodeIdentity, address: TransportAddress) {
        let target = index_of(&address).filter(|t| (*t as usize) < self.nodes.len());
        let generation = self.nodes[n as usize].generation;
        let (at, target, ok) = match target {
            Some(target) if self.reachable(n, target) => {
                let open = 2 * self.latency_us() + self.scenario.link.handshake_us();
                (self.now_us + open, target, self.nodes[target as usize].id == peer)
            }
            _ => (self.now_us + CONNECT_TIMEOUT_US, target.unwrap_or(u32::MAX), false),
        };
        self.queue.push(at, Event::DialDone { node: n, generation, attempt, target, ok });
    }

    pub(super) fn dial_done(&mut self, n: u32, generation: u64, attempt: ConnId, target: u32, ok: bool) {
        let now = ms(self.now_us);
        if self.nodes[n as usize].generation != generation || !self.nodes[n as usize].alive {
            return;
        }
        if !self.nodes[n as usize].core.is_dialling(attempt) {
            return;
        }
        let reachable = target != u32::MAX && self.reachable(n, target);
        if !ok || !reachable {
            let failure =
                if reachable { ConnectFailure::WrongIdentity } else { ConnectFailure::Unreachable("no answer".into()) };
            self.nodes[n as usize].core.dialled(attempt, Err(failure), now);
            self.drain(n);
            return;
        }
        let dialler = self.nodes[n as usize].id;
        let ip = Some(address_of(n).socket.ip());
        let theirs = self.nodes[target as usize].core.accepted(dialler, ip);
        let fresh = Link {
            epoch: 0,
            ends: [n, target],
            generations: [generation, self.nodes[target as usize].generation],
            conns: [attempt, theirs],
            open: [true, true],
            dirs: [Direction::default(), Direction::default()],
        };
        let slot = match self.free_links.pop() {
            Some(slot) => {
                let epoch = self.links[slot as usize].epoch.wrapping_add(1);
                self.links[slot as usize] = Link { epoch, ..fresh };
                slot as usize
            }
            None => {
                self.links.push(fresh);
                self.links.len() - 1
            }
        };
        let link = self.handle_of(slot);
        self.conn_index.insert((n, attempt), (link, 0));
        self.conn_index.insert((target, theirs), (link, 1));
        self.node_links[n as usize].push(link);
        self.node_links[target as usize].push(link);
        self.nodes[n as usize].core.dialled(attempt, Ok(()), now);
        self.drain(n);
    }

    /// Node `n` writes a frame on its connection `conn`.
    pub(super) fn transmit(&mut self, n: u32, conn: ConnId, frame: Frame) {
        let Some(&(link, side)) = self.conn_index.get(&(n, conn)) else { return };
        let Some(li) = self.slot_of(link) else { return };
        let latency = self.latency_us();
        let losses = {
            let model = self.scenario.link;
            model.losses(&mut self.random)
        };
        let rto = self.rto_us();
        let (cost, delay) = match &frame {
            Frame::Node(message) => {
                let cost = message_cost(message);
                let node = &mut self.nodes[n as usize];
                node.messages_sent += 1;
                node.bytes_sent += cost as u64;
                let delay = if node.behaviour == Some(Behaviour::Delay) { 1_000_000 } else { 0 };
                (cost, delay)
            }
            _ => (super::link::CONTROL_FRAME_BYTES, 0),
        };
        let serialization = self.scenario.link.serialization_us(cost);
        let dir = &mut self.links[li].dirs[side as usize];
        let seq = dir.next_seq;
        dir.next_seq += 1;
        let start = self.now_us.max(dir.busy_until_us);
        dir.busy_until_us = start + serialization;
        let arrive = (start + serialization + latency + u64::from(losses) * rto + delay).max(dir.last_arrival_us + 1);
        dir.last_arrival_us = arrive;
        dir.in_flight.push_back((seq, frame, false));
        self.queue.push(arrive, Event::Arrive { link, from_side: side, seq });
    }

    pub(super) fn arrive(&mut self, link: u64, from_side: u8, seq: u64) {
        let Some(li) = self.slot_of(link) else { return };
        let to_side = 1 - from_side;
        let l = &self.links[li];
        let (from, to) = (l.ends[from_side as usize], l.ends[to_side as usize]);
        let conn = l.conns[to_side as usize];
        // A frame already on the wire when its sender crashed still arrives
        // (if nothing on the way needs resending: that end no longer can).
        // One from an end that closed does not: its connection protocol
        // has taken back what it had not had acknowledged.
        let sender_crashed = !self.nodes[from as usize].alive
            || l.generations[from_side as usize] != self.nodes[from as usize].generation;
        let sender_gone = !l.open[from_side as usize];
        if !l.open[to_side as usize] || (sender_gone && !sender_crashed) {
            return;
        }
        if l.generations[to_side as usize] != self.nodes[to as usize].generation {
            // The process this link led to is gone; the sender's side times out.
            return;
        }
        if sender_crashed && !self.path_open(from, to) {
            return;
        }
        if !sender_crashed && !self.reachable(from, to) {
            // QUIC keeps retransmitting until the connection times out. The
            // stream stays in order: a retry never overtakes an earlier one.
            if self.nodes[to as usize].alive {
                let rto = self.rto_us();
                let dir = &mut self.links[li].dirs[from_side as usize];
                let at = (self.now_us + rto).max(dir.last_arrival_us + 1);
                dir.last_arrival_us = at;
                self.queue.push(at, Event::Arrive { link, from_side, seq });
            }
            return;
        }
        // Mark it arrived; then hand over, in order, everything that has.
        {
            let dir = &mut self.links[li].dirs[from_side as usize];
            let Some(front) = dir.in_flight.front().map(|f| f.0) else { return };
            let Some(entry) = seq.checked_sub(front).and_then(|o| dir.in_flight.get_mut(o as usize)) else { return };
            entry.2 = true;
        }
        loop {
            let next = {
                let dir = &mut self.links[li].dirs[from_side as usize];
                if !dir.in_flight.front().is_some_and(|f| f.2) {
                    break;
                }
                let Some((_, frame, _)) = dir.in_flight.pop_front() else { break };
                if dir.in_flight.is_empty() {
                    // Most links are idle most of the time: an empty
                    // stream holds no buffer (a burst's would otherwise
                    // stay for the link's life, at 10,000 nodes gigabytes).
                    dir.in_flight = std::collections::VecDeque::new();
                }
                let drained = !dir.in_flight.front().is_some_and(|f| f.2);
                (frame, drained)
            };
            let (frame, drained) = next;
            if let Frame::Node(message) = &frame {
                let withholds =
                    matches!(self.nodes[to as usize].behaviour, Some(Behaviour::Drop) | Some(Behaviour::Withhold));
                if withholds {
                    // Taken off the wire and never delivered nor acknowledged.
                    continue;
                }
                let node = &mut self.nodes[to as usize];
                node.messages_received += 1;
                node.bytes_received += message_cost(message) as u64;
            }
            self.nodes[to as usize].core.frame(conn, frame, drained, ms(self.now_us));
            self.drain(to);
            if !self.links[li].open[to_side as usize] {
                // Handling it closed the link (a forged message): stop here.
                return;
            }
        }
    }

    /// Node `n`'s core asked to close `conn`: its end closes now, the
    /// other end hears of it a latency later.
    pub(super) fn close(&mut self, n: u32, conn: ConnId, reason: CloseReason) {
        if let CloseReason::Violation(_) = reason {
            self.results.rejected += 1;
            let second = self.second();
            Self::bump(&mut self.results.series.rejected, second);
        }
        match self.conn_index.get(&(n, conn)).copied() {
            Some((link, side)) => {
                self.close_side(link, side, reason);
                let at = self.now_us + self.latency_us();
                self.queue.push(at, Event::CloseNotice { link, side: 1 - side });
            }
            // A dial still under way: it is abandoned.
            None => {
                self.nodes[n as usize].core.closed(conn, reason, ms(self.now_us));
                self.drain(n);
            }
        }
    }

    /// Closes one end of a link and tells that node's core.
    pub(super) fn close_side(&mut self, link: u64, side: u8, reason: CloseReason) {
        let Some(li) = self.slot_of(link) else { return };
        let l = &mut self.links[li];
        if !l.open[side as usize] {
            return;
        }
        l.open[side as usize] = false;
        let node = l.ends[side as usize];
        let conn = l.conns[side as usize];
        // What this end wrote before closing stays on the wire.
        self.conn_index.remove(&(node, conn));
        if !l.open[0] && !l.open[1] {
            l.dirs = [Direction::default(), Direction::default()];
            let ends = l.ends;
            self.free_links.push(li as u32);
            // Its ends no longer list it: a node's list holds its open
            // links, not every link it ever had.
            for end in ends {
                let list = &mut self.node_links[end as usize];
                if let Some(at) = list.iter().position(|h| *h == link) {
                    list.swap_remove(at);
                }
            }
        }
        if l.generations[side as usize] != self.nodes[node as usize].generation || !self.nodes[node as usize].alive {
            return;
        }
        self.nodes[node as usize].core.closed(conn, reason, ms(self.now_us));
        self.drain(node);
    }

    /// A silent connection times out at both ends.
    pub(super) fn link_check(&mut self, link: u64) {
        if !self.link_usable(link) {
            for side in 0..2 {
                self.close_side(link, side, CloseReason::Lost("idle timeout".into()));
            }
        }
    }

    /// A crashed node's ends of its links vanish; the other ends time out.
    pub(super) fn drop_links_of(&mut self, n: u32) {
        let links = std::mem::take(&mut self.node_links[n as usize]);
        for link in links {
            let Some(li) = self.slot_of(link) else { continue };
            let l = &mut self.links[li];
            for side in 0..2 {
                if l.ends[side] == n {
                    // What it had already sent stays on the wire.
                    l.open[side] = false;
                    self.conn_index.remove(&(n, l.conns[side]));
                }
            }
            if l.open[0] || l.open[1] {
                self.queue.push(self.now_us + IDLE_TIMEOUT_US, Event::LinkCheck { link });
            }
        }
    }
}
