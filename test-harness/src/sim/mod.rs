//! A deterministic discrete-event simulator of netmachine networks.
//!
//! Every node runs the node core that every real node runs (the Router,
//! the Transport, the Identity Store and the connection protocol, with
//! the real handshake and acknowledgements), driven in virtual time. The
//! simulator is split by concern:
//! - [`network`]: links that carry frames in order after a latency drawn
//!   from the link model, plus serialization time on a link of limited
//!   bandwidth, plus a retransmission timeout per lost transmission
//!   (QUIC's streams are reliable, so loss costs time, not messages);
//! - [`workload`]: unicasts, topics and their events, and the directory
//!   that hands a node the advert of a peer it is told to reach;
//! - [`faults`]: crashes and restarts, partitions, joins, adversaries;
//! - [`report`]: the results at the end of a run;
//! - this module: the loop. It pops (time, event), hands the input to the
//!   node's core, and maps the core's effects onto the network and the
//!   metrics.
//!
//! A partition holds traffic back until it heals or the connection times
//! out; a crash loses the node's memory (its disk stays) and its peers
//! notice at their idle timeout. The same seed gives the same run, event
//! for event.

pub mod domain_runs;
pub mod domains;
pub mod faults;
mod ledger;
mod link;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
mod pings;
pub mod plot;
pub mod queue;
pub mod report;
pub mod scenario;
mod views;
pub mod workload;

use std::collections::HashMap;
use std::hash::Hasher;

use netmachine_domain::{DestinationIdentity, NodeIdentity, Timestamp, TopicIdentity};
use netmachine_engines::engine::Timed;
use netmachine_engines::node_core::{CoreEffect, Delivery};
use netmachine_engines::ping::PING_PROTOCOL;
use netmachine_engines::ports::Randomness;
use netmachine_engines::random::SplitMix;
use netmachine_engines::transport::{CloseReason, ConnId, ConnIdHasher, TransportEvent};

use link::Link;
use metrics::{Results, TimeSeries};
use node::SimNode;
use queue::EventQueue;
use scenario::{FaultKind, Scenario};

/// When a peer gives up on a silent connection (s2n-quic's idle timeout as
/// configured by the QUIC adapter).
const IDLE_TIMEOUT_US: u64 = 10_000_000;
/// When a dial to an unreachable address fails.
const CONNECT_TIMEOUT_US: u64 = 3_000_000;
/// The unacknowledged messages a connection may carry.
const WINDOW: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// Counts the open connections for the time series.
    Sample,
    /// A node's engines asked to be woken now (see `arm_timeout`).
    Timeout(u32),
    Unicast(u32),
    Publish(u32),
    Ping(u32),
    DialDone {
        node: u32,
        generation: u64,
        attempt: ConnId,
        target: u32,
        ok: bool,
    },
    Arrive {
        link: u64,
        from_side: u8,
        seq: u64,
    },
    LinkCheck {
        link: u64,
    },
    CloseNotice {
        link: u64,
        side: u8,
    },
    Fault(u32),
    Restart(u32),
    /// Ends partition number N, if it is still the current one.
    Heal(u32),
    /// A member joins the domain.
    DomainJoin(u32),
    /// A share of the domain's members crash.
    DomainFail,
    /// The overlay's largest component is measured.
    DomainMeasure,
    /// A broadcast over the active views starts.
    DomainBroadcast(u32),
    /// A broadcast reaches a node.
    DomainFlood {
        broadcast: u32,
        node: u32,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Topic {
    id: TopicIdentity,
    publisher: u32,
}

/// One run of a scenario.
pub struct Simulation {
    scenario: Scenario,
    now_us: u64,
    queue: EventQueue<Event>,
    nodes: Vec<SimNode>,
    /// Each node's index by identity.
    index_by_id: HashMap<NodeIdentity, u32>,
    links: Vec<Link>,
    /// Each open end of a link, by node and its connection number.
    conn_index: HashMap<(u32, ConnId), (u64, u8), std::hash::BuildHasherDefault<ConnIdHasher>>,
    node_links: Vec<Vec<u64>>,
    free_links: Vec<u32>,
    random: SplitMix,
    partition_cut: Option<u32>,
    /// Partitions started so far (numbers them).
    partitions: u32,
    /// When the last partition healed, and where it cut.
    last_heal: Option<(u64, u32)>,
    ledger: ledger::Ledger,
    events_published: HashMap<(u32, u64), (u64, u64, u32)>,
    topics: Vec<Topic>,
    subscribers: Vec<Vec<u32>>,
    pubsub_delivered: HashMap<(u32, u64, u32), u32>,
    unicast_latency_us: Vec<u64>,
    pubsub_latency_us: Vec<u64>,
    ping_rtt_us: Vec<u64>,
    views: views::Views,
    /// Pings each node's engine waits on.
    open_pings: Vec<u64>,
    /// Dials under way, by dialler and peer: when each began.
    dials_started: HashMap<(u32, NodeIdentity), u64>,
    setup_us: Vec<u64>,
    results: Results,
    hash: std::hash::DefaultHasher,
    events: u64,
    traffic_end_us: u64,
    end_us: u64,
    trace: Option<Box<dyn std::io::Write>>,
    domain: domains::DomainRun,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation").field("scenario", &self.scenario.name).field("now_us", &self.now_us).finish()
    }
}

fn ms(us: u64) -> Timestamp {
    Timestamp(us / 1000)
}

impl Simulation {
    pub fn new(scenario: Scenario) -> Self {
        let mut random = SplitMix::new(scenario.seed);
        let joiners: u32 =
            scenario.faults.iter().map(|f| if let FaultKind::Join { nodes } = f.kind { nodes } else { 0 }).sum();
        let total = scenario.nodes + joiners;
        let settings = domains::engine_settings(scenario.domain.as_ref());
        let nodes: Vec<SimNode> = (0..total)
            .map(|i| {
                let config = node::transport_config(WINDOW, scenario.buffers);
                let mut node = SimNode::new(i, random.next_u64(), config, i, settings);
                node.present = i < scenario.nodes;
                node
            })
            .collect();
        let views = views::Views::new(total, scenario.workload.view_size, &mut random);
        let end_us = (scenario.duration_s * 1e6) as u64;
        let traffic_end_us = end_us.saturating_sub((scenario.workload.quiet_tail_s * 1e6) as u64);
        let seconds = scenario.duration_s.ceil() as usize + 1;
        let mut sim = Self {
            index_by_id: nodes.iter().enumerate().map(|(i, n)| (n.id, i as u32)).collect(),
            links: Vec::new(),
            conn_index: HashMap::default(),
            node_links: vec![Vec::new(); total as usize],
            free_links: Vec::new(),
            random,
            partition_cut: None,
            partitions: 0,
            last_heal: None,
            ledger: ledger::Ledger::default(),
            events_published: HashMap::new(),
            topics: Vec::new(),
            subscribers: Vec::new(),
            pubsub_delivered: HashMap::new(),
            unicast_latency_us: Vec::new(),
            ping_rtt_us: Vec::new(),
            views,
            open_pings: vec![0; total as usize],
            pubsub_latency_us: Vec::new(),
            dials_started: HashMap::new(),
            setup_us: Vec::new(),
            results: Results {
                series: TimeSeries {
                    sent: vec![0; seconds],
                    delivered: vec![0; seconds],
                    open_connections: vec![0; seconds],
                    connects: vec![0; seconds],
                    disconnects: vec![0; seconds],
                    rejected: vec![0; seconds],
                },
                ..Results::default()
            },
            hash: std::hash::DefaultHasher::new(),
            events: 0,
            traffic_end_us,
            end_us,
            trace: None,
            domain: domains::DomainRun::default(),
            now_us: 0,
            queue: EventQueue::default(),
            nodes,
            scenario,
        };
        for n in 0..total {
            sim.drain(n);
        }
        sim.schedule_start();
        sim
    }

    /// Writes one line per event to `out` (for replaying a failure by eye).
    pub fn with_trace(mut self, out: Box<dyn std::io::Write>) -> Self {
        self.trace = Some(out);
        self
    }

    fn second(&self) -> usize {
        (self.now_us / 1_000_000) as usize
    }

    fn bump(series: &mut [u64], second: usize) {
        if let Some(slot) = series.get_mut(second) {
            *slot += 1;
        }
    }

    fn schedule_start(&mut self) {
        let rate = self.scenario.workload.unicast_per_node_per_s;
        self.queue.push(0, Event::Sample);
        for i in 0..self.nodes.len() as u32 {
            if rate > 0.0 && self.nodes[i as usize].present {
                let first = self.exponential_us(rate);
                self.queue.push(first, Event::Unicast(i));
            }
        }
        for (i, fault) in self.scenario.faults.iter().enumerate() {
            self.queue.push((fault.at_s * 1e6) as u64, Event::Fault(i as u32));
        }
        self.setup_topics();
        self.schedule_pings();
        self.setup_domain();
    }

    /// Runs to the end; `progress` is called with the fraction done.
    pub fn run(mut self, mut progress: impl FnMut(f64)) -> Results {
        let started = std::time::Instant::now();
        let mut next_report = 0.0;
        while let Some((at, event)) = self.queue.pop() {
            if at > self.end_us {
                break;
            }
            self.now_us = at;
            self.events += 1;
            self.record(&event);
            self.handle(event);
            let done = at as f64 / self.end_us.max(1) as f64;
            if done >= next_report {
                progress(done);
                next_report += 0.02;
            }
        }
        self.now_us = self.end_us;
        progress(1.0);
        self.finish(started.elapsed().as_secs_f64())
    }

    fn record(&mut self, event: &Event) {
        self.hash.write_u64(self.now_us);
        let (kind, a, b) = match *event {
            Event::Sample => (0, 0, 0),
            Event::Timeout(n) => (1, u64::from(n), 0),
            Event::Unicast(n) => (2, u64::from(n), 0),
            Event::Publish(t) => (3, u64::from(t), 0),
            Event::DialDone { node, attempt, ok, .. } => (4, u64::from(node), attempt * 2 + u64::from(ok)),
            Event::Arrive { link, seq, .. } => (5, link, seq),
            Event::LinkCheck { link } => (7, link, 0),
            Event::CloseNotice { link, side } => (8, link, u64::from(side)),
            Event::Fault(i) => (9, u64::from(i), 0),
            Event::Restart(n) => (10, u64::from(n), 0),
            Event::Heal(p) => (11, u64::from(p), 0),
            Event::Ping(n) => (12, u64::from(n), 0),
            Event::DomainJoin(n) => (13, u64::from(n), 0),
            Event::DomainFail => (14, 0, 0),
            Event::DomainMeasure => (15, 0, 0),
            Event::DomainBroadcast(k) => (16, u64::from(k), 0),
            Event::DomainFlood { broadcast, node } => (17, u64::from(broadcast), u64::from(node)),
        };
        self.hash.write_u64(kind);
        self.hash.write_u64(a);
        self.hash.write_u64(b);
        if let Some(trace) = self.trace.as_mut() {
            let _ = writeln!(trace, "{} {:?}", self.now_us, event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Sample => {
                self.settle_due();
                let open = self.links.iter().filter(|l| l.open[0] && l.open[1]).count() as u64;
                let second = self.second();
                if let Some(slot) = self.results.series.open_connections.get_mut(second) {
                    *slot = open;
                }
                self.queue.push(self.now_us + self.scenario.sample_ms * 1000, Event::Sample);
            }
            Event::Timeout(n) => {
                let node = &mut self.nodes[n as usize];
                // An earlier wake-up that a sooner one replaced is ignored.
                if node.alive && node.wake_at_us == Some(self.now_us) {
                    node.wake_at_us = None;
                    node.core.handle_timeout(ms(self.now_us));
                    self.drain(n);
                }
            }
            Event::Unicast(n) => self.unicast(n),
            Event::Publish(t) => self.publish(t),
            Event::Ping(n) => self.ping(n),
            Event::DialDone { node, generation, attempt, target, ok } => {
                self.dial_done(node, generation, attempt, target, ok)
            }
            Event::Arrive { link, from_side, seq } => self.arrive(link, from_side, seq),
            Event::LinkCheck { link } => self.link_check(link),
            Event::CloseNotice { link, side } => {
                self.close_side(link, side, CloseReason::Lost("closed by the peer".into()))
            }
            Event::Fault(i) => self.fault(i as usize),
            Event::Restart(n) => self.restart(n),
            Event::Heal(p) => self.heal(p),
            Event::DomainJoin(n) => self.domain_join(n),
            Event::DomainFail => self.domain_fail(),
            Event::DomainMeasure => self.domain_measure(),
            Event::DomainBroadcast(k) => self.domain_broadcast(k),
            Event::DomainFlood { broadcast, node } => self.flood_arrives(broadcast, node),
        }
    }

    /// Carries out what node `n`'s core asked for, until it asks nothing
    /// more, then queues a wake-up for its next timeout.
    fn drain(&mut self, n: u32) {
        while let Some(effect) = self.nodes[n as usize].core.poll_effect() {
            if !self.nodes[n as usize].alive {
                return;
            }
            match effect {
                CoreEffect::Deliver { delivery, .. } => self.delivered(n, delivery),
                CoreEffect::Dial { attempt, peer, address } => {
                    self.dials_started.entry((n, peer)).or_insert(self.now_us);
                    self.dial(n, attempt, peer, address)
                }
                CoreEffect::Write { conn, frame } => self.transmit(n, conn, frame),
                CoreEffect::Close { conn, reason } => self.close(n, conn, reason),
                // Written at once (see `SimNode::disk`), then committed.
                CoreEffect::Persist(change) => {
                    let _ = self.nodes[n as usize].core.persisted(change, ms(self.now_us));
                }
                // The simulated disk keeps nothing apart from the store.
                CoreEffect::Forget(_) => {}
                CoreEffect::Notice(event) => self.noticed(n, event),
                // Nobody in the simulator waits for acknowledgements.
                CoreEffect::Acknowledged { .. } => {}
            }
        }
        self.note_buffers(n);
        self.arm_timeout(n);
    }

    /// What node `n`'s application engine received.
    fn delivered(&mut self, n: u32, delivery: Delivery) {
        match delivery {
            Delivery::Message(message) if message.protocol.name.as_str() == PING_PROTOCOL => {
                self.ping_answered(n, &message.body)
            }
            // The domain engine's answers to the simulator's commands: the
            // overlays are measured from the engines themselves.
            Delivery::Message(message)
                if message.protocol.name.as_str() == netmachine_engines::domain::DOMAIN_PROTOCOL => {}
            Delivery::Message(message) => {
                let from = self.index_by_id.get(&message.src.node).copied().unwrap_or(u32::MAX);
                match message.dst {
                    DestinationIdentity::Topic(_) => self.event_delivered(from, message.id.0, n, message.expiry),
                    _ => self.unicast_delivered(from, message.id.0),
                }
            }
            Delivery::Undeliverable { id, .. } => {
                if let Some(sent) = self.ledger.get_mut(n, id.0) {
                    sent.told = true;
                }
            }
            Delivery::IdentityUpdated(_) => {}
        }
    }

    fn noticed(&mut self, n: u32, event: TransportEvent) {
        let second = self.second();
        match event {
            TransportEvent::NodeConnected { peer, .. } => {
                if let Some(started) = self.dials_started.remove(&(n, peer)) {
                    self.setup_us.push(self.now_us - started);
                }
                self.results.connects += 1;
                Self::bump(&mut self.results.series.connects, second);
            }
            TransportEvent::NodeConnectFailed { peer, .. } => {
                self.dials_started.remove(&(n, peer));
                self.results.connect_failures += 1
            }
            TransportEvent::NodeDisconnected { .. } => {
                self.results.disconnects += 1;
                Self::bump(&mut self.results.series.disconnects, second);
            }
        }
    }

    fn note_buffers(&mut self, n: u32) {
        // Cheap enough at the sizes simulated: a node has few peers.
        let node = &mut self.nodes[n as usize];
        if node.alive && node.messages_sent.is_multiple_of(64) {
            let buffered: usize =
                node.core.transport().peer_summaries().iter().map(|p| p.queued_bytes + p.inflight_bytes).sum();
            node.peak_buffered_bytes = node.peak_buffered_bytes.max(buffered);
        }
    }

    /// Schedules a wake-up at the node's next timeout, unless one at that
    /// moment or sooner is already queued.
    fn arm_timeout(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.alive {
            return;
        }
        let Some(due) = node.core.poll_timeout() else { return };
        let at = due.0.saturating_mul(1000).max(self.now_us);
        if node.wake_at_us.is_none_or(|queued| at < queued) {
            node.wake_at_us = Some(at);
            self.queue.push(at, Event::Timeout(n));
        }
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        na.alive && nb.alive && self.path_open(a, b)
    }

    /// Whether no partition lies between two nodes.
    fn path_open(&self, a: u32, b: u32) -> bool {
        match self.partition_cut {
            Some(cut) => (a < cut) == (b < cut),
            None => true,
        }
    }

    /// A link carries traffic only between the two processes that made it:
    /// a restarted node's old connections are dead even once it is back.
    /// The slot of a link handle, if it still names the same link.
    fn slot_of(&self, link: u64) -> Option<usize> {
        let slot = (link & 0xffff_ffff) as usize;
        let epoch = (link >> 32) as u32;
        self.links.get(slot).filter(|l| l.epoch == epoch).map(|_| slot)
    }

    fn handle_of(&self, slot: usize) -> u64 {
        (u64::from(self.links[slot].epoch) << 32) | slot as u64
    }

    fn link_usable(&self, link: u64) -> bool {
        let Some(li) = self.slot_of(link) else { return false };
        let l = &self.links[li];
        let [a, b] = l.ends;
        self.reachable(a, b)
            && l.generations[0] == self.nodes[a as usize].generation
            && l.generations[1] == self.nodes[b as usize].generation
    }

    fn latency_us(&mut self) -> u64 {
        let model = self.scenario.link;
        model.sample_latency_us(&mut self.random)
    }

    fn rto_us(&self) -> u64 {
        (3 * self.scenario.link.base_latency_us()).max(200_000)
    }

    // ---- workload ------------------------------------------------------------
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    /// Events name nodes, links and connections by index, never by key:
    /// the queue of a run of 100,000 nodes holds millions of them.
    #[test]
    fn an_event_is_a_few_indexes() {
        assert!(std::mem::size_of::<super::Event>() <= 32, "{} bytes", std::mem::size_of::<super::Event>());
    }
}
