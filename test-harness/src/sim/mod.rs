//! A deterministic discrete-event simulator of netmachine networks.
//!
//! Every node runs the real Router and Transport engines (the same code the
//! `netmachine` binary runs), driven in virtual time through the in-memory
//! ports. Connections are simulated: each direction delivers in order after
//! a latency drawn from the link model, plus serialization time on a link of
//! limited bandwidth, plus a retransmission timeout per lost transmission
//! (QUIC's streams are reliable, so loss costs time, not messages). A
//! partition holds traffic back until it heals or the connection times out;
//! a crash loses the node's memory and its peers notice at their idle
//! timeout. The same seed gives the same run, event for event.

pub mod metrics;
pub mod model;
pub mod node;
pub mod plot;
pub mod queue;
pub mod scenario;

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::net::{Ipv4Addr, SocketAddr};

use netmachine_domain::{
    Advert, Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, MessageId, NodeMessage, NodePayload,
    ProtocolId, Signature, Timestamp, TopicAdvert, TopicAdvertBody, TopicIdentity, TransportAddress, TransportProtocol,
    WeightedAddress,
};
use netmachine_engines::engine::Timed;
use netmachine_engines::ports::{Randomness, Signer};
use netmachine_engines::random::SplitMix;
use netmachine_engines::router::{decode_notice, SubscriptionOp, UNDELIVERABLE_PROTOCOL};
use netmachine_engines::testing::{TestSigner, TestVerifier};
use netmachine_engines::transport::{
    message_cost, CloseReason, ConnId, ConnectFailure, TransportEffect, TransportEvent, PROTOCOL_VERSIONS,
};
use netmachine_engines::Routed;

use metrics::{cdf_points, KindMetrics, LatencySummary, PerNode, Results, TimeSeries};
use model::unit;
use node::{SimNode, APP_NAME};
use queue::EventQueue;
use scenario::{Behaviour, FaultKind, Scenario};

/// When a peer gives up on a silent connection (s2n-quic's idle timeout as
/// configured by the QUIC adapter).
const IDLE_TIMEOUT_US: u64 = 10_000_000;
/// When a dial to an unreachable address fails.
const CONNECT_TIMEOUT_US: u64 = 3_000_000;
/// The unacknowledged messages a connection may carry.
const WINDOW: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Event {
    /// Counts the open connections for the time series.
    Sample,
    /// A node's engines asked to be woken now (see `arm_timeout`).
    Timeout(u32),
    Unicast(u32),
    Publish(u32),
    DialDone {
        node: u32,
        generation: u64,
        attempt: ConnId,
        target: u32,
        address: TransportAddress,
        ok: bool,
    },
    Arrive {
        link: u64,
        from_side: u8,
        seq: u64,
    },
    Ack {
        link: u64,
        from_side: u8,
        upto: u64,
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
}

/// One direction of a simulated connection: an ordered stream.
#[derive(Debug, Default)]
struct Direction {
    /// Sent and not yet acknowledged: (seq, message, cost, arrived). Those
    /// below `next_deliver` were delivered and wait for their ack; those
    /// above it that arrived wait behind an earlier one (head-of-line).
    in_flight: VecDeque<(u64, NodeMessage, usize, bool)>,
    next_deliver: u64,
    next_seq: u64,
    busy_until_us: u64,
    last_arrival_us: u64,
}

/// A simulated connection. Slots are reused once both ends have closed;
/// events name a link by slot and epoch, so late ones for a reused slot
/// are ignored.
#[derive(Debug)]
struct Link {
    epoch: u32,
    ends: [u32; 2],
    generations: [u64; 2],
    conns: [ConnId; 2],
    open: [bool; 2],
    dirs: [Direction; 2],
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at_us: u64,
    to: u32,
    expiry_ms: u64,
    delivered: u32,
    told: bool,
}

#[derive(Debug, Clone, Copy)]
struct Topic {
    id: TopicIdentity,
    publisher: u32,
}

/// One run of a scenario.
pub struct Simulation {
    scenario: Scenario,
    now_us: u64,
    queue: EventQueue<Event>,
    nodes: Vec<SimNode>,
    /// Whose address each node advertises (itself, unless it lies).
    advertised: Vec<u32>,
    links: Vec<Link>,
    conn_index: HashMap<(u32, ConnId), (u64, u8)>,
    node_links: Vec<Vec<u64>>,
    free_links: Vec<u32>,
    random: SplitMix,
    partition_cut: Option<u32>,
    /// Partitions started so far (numbers them).
    partitions: u32,
    /// When the last partition healed, and where it cut.
    last_heal: Option<(u64, u32)>,
    unicasts: HashMap<(u32, u64), Sent>,
    events_published: HashMap<(u32, u64), (u64, u64, u32)>,
    topics: Vec<Topic>,
    subscribers: Vec<Vec<u32>>,
    pubsub_delivered: HashMap<(u32, u64, u32), u32>,
    unicast_latency_us: Vec<u64>,
    pubsub_latency_us: Vec<u64>,
    results: Results,
    hash: std::hash::DefaultHasher,
    events: u64,
    traffic_end_us: u64,
    end_us: u64,
    trace: Option<Box<dyn std::io::Write>>,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation").field("scenario", &self.scenario.name).field("now_us", &self.now_us).finish()
    }
}

fn address_of(index: u32) -> TransportAddress {
    let ip = Ipv4Addr::from((10u32 << 24) | (index & 0x00ff_ffff));
    TransportAddress::new(TransportProtocol::Quic, SocketAddr::from((ip, 4100)))
}

fn index_of(address: &TransportAddress) -> Option<u32> {
    match address.socket.ip() {
        std::net::IpAddr::V4(v4) => Some(u32::from(v4) & 0x00ff_ffff),
        std::net::IpAddr::V6(_) => None,
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
        let nodes: Vec<SimNode> = (0..total)
            .map(|i| {
                let mut node = SimNode::new(i, random.next_u64(), node::transport_config(WINDOW, scenario.buffers));
                node.present = i < scenario.nodes;
                node
            })
            .collect();
        let end_us = (scenario.duration_s * 1e6) as u64;
        let traffic_end_us = end_us.saturating_sub((scenario.workload.quiet_tail_s * 1e6) as u64);
        let seconds = scenario.duration_s.ceil() as usize + 1;
        let mut sim = Self {
            advertised: (0..total).collect(),
            links: Vec::new(),
            conn_index: HashMap::new(),
            node_links: vec![Vec::new(); total as usize],
            free_links: Vec::new(),
            random,
            partition_cut: None,
            partitions: 0,
            last_heal: None,
            unicasts: HashMap::new(),
            events_published: HashMap::new(),
            topics: Vec::new(),
            subscribers: Vec::new(),
            pubsub_delivered: HashMap::new(),
            unicast_latency_us: Vec::new(),
            pubsub_latency_us: Vec::new(),
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
            now_us: 0,
            queue: EventQueue::default(),
            nodes,
            scenario,
        };
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
    }

    fn exponential_us(&mut self, per_second: f64) -> u64 {
        let u = 1.0 - unit(&mut self.random);
        ((-u.ln() / per_second) * 1e6) as u64 + 1
    }

    fn setup_topics(&mut self) {
        let workload = self.scenario.workload.clone();
        let present = self.scenario.nodes;
        for t in 0..workload.topics {
            let publisher = (self.random.next_u64() % u64::from(present)) as u32;
            let topic_signer = TestSigner(netmachine_domain::ExternalIdentity::ed25519({
                let mut key = [0xc0u8; 32];
                key[..4].copy_from_slice(&t.to_be_bytes());
                key
            }));
            let id = TopicIdentity::new(topic_signer.0);
            let Ok(body) =
                TopicAdvertBody::new(id, vec![self.nodes[publisher as usize].id], vec![], vec![], 1, Timestamp(0))
            else {
                continue;
            };
            let sig = topic_signer.sign(&TopicAdvert::signing_bytes_of(&body));
            let advert: TopicAdvert = Advert::from_parts(body, sig);
            let Ok(app) = EngineName::new(APP_NAME) else { continue };
            let _ = self.nodes[publisher as usize].router.create_topic(&app, advert.clone(), &TestVerifier);
            let mut subs = Vec::new();
            while subs.len() < workload.subscribers_per_topic.min(present - 1) as usize {
                let s = (self.random.next_u64() % u64::from(present)) as u32;
                if s != publisher && !subs.contains(&s) {
                    subs.push(s);
                }
            }
            for &s in &subs {
                let node = &mut self.nodes[s as usize];
                let _ = node.router.learn_topic(advert.clone());
                let _ = node.router.subscribe(&app, &id);
            }
            self.topics.push(Topic { id, publisher });
            self.subscribers.push(subs.clone());
            for &s in &subs {
                let requests =
                    self.nodes[s as usize].router.subscription_requests(&id, SubscriptionOp::Subscribe, Timestamp(0));
                for request in requests {
                    self.route_from(s, request);
                }
            }
            if workload.events_per_topic_per_s > 0.0 {
                let first = self.exponential_us(workload.events_per_topic_per_s);
                self.queue.push(first + 2_000_000, Event::Publish(t));
            }
        }
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
            Event::Ack { link, upto, .. } => (6, link, upto),
            Event::LinkCheck { link } => (7, link, 0),
            Event::CloseNotice { link, side } => (8, link, u64::from(side)),
            Event::Fault(i) => (9, u64::from(i), 0),
            Event::Restart(n) => (10, u64::from(n), 0),
            Event::Heal(p) => (11, u64::from(p), 0),
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
                    node.transport.handle_timeout(ms(self.now_us));
                    self.drain(n);
                }
            }
            Event::Unicast(n) => self.unicast(n),
            Event::Publish(t) => self.publish(t),
            Event::DialDone { node, generation, attempt, target, address, ok } => {
                self.dial_done(node, generation, attempt, target, address, ok)
            }
            Event::Arrive { link, from_side, seq } => self.arrive(link, from_side, seq),
            Event::Ack { link, from_side, upto } => self.ack(link, from_side, upto),
            Event::LinkCheck { link } => {
                if !self.link_usable(link) {
                    for side in 0..2 {
                        self.close_side(link, side, CloseReason::Lost("idle timeout".into()));
                    }
                }
            }
            Event::CloseNotice { link, side } => {
                self.close_side(link, side, CloseReason::Lost("closed by the peer".into()))
            }
            Event::Fault(i) => self.fault(i as usize),
            Event::Restart(n) => {
                let seed = self.random.next_u64();
                self.nodes[n as usize].restart(seed, node::transport_config(WINDOW, self.scenario.buffers));
                self.resubscribe(n);
            }
            Event::Heal(p) => {
                if self.partitions == p {
                    if let Some(cut) = self.partition_cut.take() {
                        self.last_heal = Some((self.now_us, cut));
                    }
                }
            }
        }
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        let (na, nb) = (&self.nodes[a as usize], &self.nodes[b as usize]);
        if !na.alive || !nb.alive {
            return false;
        }
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

    fn unicast(&mut self, n: u32) {
        let rate = self.scenario.workload.unicast_per_node_per_s;
        let flood = self.nodes[n as usize].behaviour == Some(Behaviour::Flood);
        let next = self.exponential_us(if flood { rate * 100.0 } else { rate });
        if self.now_us + next < self.traffic_end_us {
            self.queue.push(self.now_us + next, Event::Unicast(n));
        }
        let node = &self.nodes[n as usize];
        if !node.alive || !node.present {
            return;
        }
        let total = self.nodes.len() as u64;
        let mut to = (self.random.next_u64() % total) as u32;
        if to == n {
            to = (to + 1) % total as u32;
        }
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let ttl = self.scenario.workload.ttl_ms;
        let expiry = ms(self.now_us).saturating_add_millis(ttl);
        let node = &mut self.nodes[n as usize];
        let id = node.next_message_id;
        node.next_message_id += 1;
        let Ok(body) = Body::new(vec![0u8; self.scenario.workload.body_bytes]) else { return };
        let Ok(protocol) = ProtocolId::new("sim/unicast", 1) else { return };
        let src = EngineIdentity::new(node.id, app.clone());
        let dst = DestinationIdentity::Engine(EngineIdentity::new(self.nodes[to as usize].id, app));
        let mut message = EngineMessage::new(src, dst, MessageId(id), protocol, body);
        message.expiry = Some(expiry);
        if self.nodes[n as usize].behaviour == Some(Behaviour::BadSignatures) {
            message.sig = Some(Signature::Ed25519(Box::new([0x66; 64])));
        }
        self.unicasts.insert((n, id), Sent { at_us: self.now_us, to, expiry_ms: expiry.0, delivered: 0, told: false });
        let second = self.second();
        Self::bump(&mut self.results.series.sent, second);
        self.route_from(n, message);
    }

    fn publish(&mut self, t: u32) {
        let rate = self.scenario.workload.events_per_topic_per_s;
        let next = self.exponential_us(rate);
        if self.now_us + next < self.traffic_end_us {
            self.queue.push(self.now_us + next, Event::Publish(t));
        }
        let topic = self.topics[t as usize];
        let node = &mut self.nodes[topic.publisher as usize];
        if !node.alive {
            return;
        }
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let id = node.next_message_id;
        node.next_message_id += 1;
        let (Ok(body), Ok(protocol)) =
            (Body::new(vec![1u8; self.scenario.workload.body_bytes]), ProtocolId::new("sim/event", 1))
        else {
            return;
        };
        let src = EngineIdentity::new(node.id, app);
        let mut message = EngineMessage::new(src, DestinationIdentity::Topic(topic.id), MessageId(id), protocol, body);
        message.expiry = Some(ms(self.now_us).saturating_add_millis(self.scenario.workload.ttl_ms));
        let expected = self.subscribers[t as usize].len() as u64;
        self.events_published.insert((topic.publisher, id), (self.now_us, expected, t));
        self.route_from(topic.publisher, message);
    }

    /// Routes a message from node `n`'s app (or router) and hands what goes
    /// out to its Transport.
    fn route_from(&mut self, n: u32, message: EngineMessage) {
        let now = ms(self.now_us);
        let node = &mut self.nodes[n as usize];
        let key = (n, message.id.0);
        let outbound = match node.router.route_local(message, now, &node.signer) {
            Ok(Routed::Remote(message)) => vec![message],
            Ok(Routed::Topic { remote, .. }) => remote,
            Ok(_) => Vec::new(),
            Err(_) => {
                if let Some(sent) = self.unicasts.get_mut(&key) {
                    sent.told = true;
                }
                Vec::new()
            }
        };
        for message in outbound {
            self.send_to(n, message.dst, message);
        }
    }

    fn send_to(&mut self, n: u32, to: netmachine_domain::NodeIdentity, message: NodeMessage) {
        let now = ms(self.now_us);
        let target = self.nodes.iter().position(|x| x.id == to).map(|i| i as u32);
        let key = match &message.payload {
            NodePayload::Engine(inner) => (n, inner.id.0),
            NodePayload::Relay(_) => (n, 0),
        };
        if let Some(target) = target {
            let advertised = address_of(self.advertised[target as usize]);
            self.nodes[n as usize].transport.set_addresses(
                to,
                vec![WeightedAddress { address: advertised, weight: 1 }],
                now,
            );
        }
        if self.nodes[n as usize].transport.send(to, message, now).is_err() {
            if let Some(sent) = self.unicasts.get_mut(&key) {
                sent.told = true;
            }
        }
        self.drain(n);
    }

    fn resubscribe(&mut self, n: u32) {
        let now = Timestamp(ms(self.now_us).0);
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        for t in 0..self.topics.len() {
            let topic = self.topics[t];
            if self.subscribers[t].contains(&n) {
                // The advert is known from configuration again after a restart.
                let advert = self.nodes[topic.publisher as usize].router.topic_advert(&topic.id).cloned();
                if let Some(advert) = advert {
                    let node = &mut self.nodes[n as usize];
                    let _ = node.router.learn_topic(advert);
                    let _ = node.router.subscribe(&app, &topic.id);
                    let requests = node.router.subscription_requests(&topic.id, SubscriptionOp::Subscribe, now);
                    for request in requests {
                        self.route_from(n, request);
                    }
                }
            }
        }
    }

    // ---- engine effects ------------------------------------------------------

    fn drain(&mut self, n: u32) {
        let mut pending = vec![n];
        while let Some(n) = pending.pop() {
            {
                let node = &mut self.nodes[n as usize];
                if !node.alive {
                    continue;
                }
                let Some(effect) = node.transport.poll_effect() else { continue };
                match effect {
                    TransportEffect::Dial { attempt, peer, address } => {
                        let target = index_of(&address).filter(|t| (*t as usize) < self.nodes.len());
                        let generation = self.nodes[n as usize].generation;
                        match target {
                            Some(target) if self.reachable(n, target) => {
                                let at = self.now_us + 2 * self.latency_us();
                                let ok = self.nodes[target as usize].id == peer;
                                self.queue
                                    .push(at, Event::DialDone { node: n, generation, attempt, target, address, ok });
                            }
                            _ => {
                                let at = self.now_us + CONNECT_TIMEOUT_US;
                                let target = target.unwrap_or(u32::MAX);
                                self.queue.push(
                                    at,
                                    Event::DialDone { node: n, generation, attempt, target, address, ok: false },
                                );
                            }
                        }
                    }
                    TransportEffect::Transmit { conn, message } => self.transmit(n, conn, message),
                    TransportEffect::Close { conn, reason } => {
                        if let Some(&(link, side)) = self.conn_index.get(&(n, conn)) {
                            self.close_side(link, side, reason);
                            let at = self.now_us + self.latency_us();
                            self.queue.push(at, Event::CloseNotice { link, side: 1 - side });
                        }
                    }
                    TransportEffect::Event(event) => {
                        let second = self.second();
                        match event {
                            TransportEvent::NodeConnected { .. } => {
                                self.results.connects += 1;
                                Self::bump(&mut self.results.series.connects, second);
                            }
                            TransportEvent::NodeConnectFailed { .. } => self.results.connect_failures += 1,
                            TransportEvent::NodeDisconnected { .. } => {
                                self.results.disconnects += 1;
                                Self::bump(&mut self.results.series.disconnects, second);
                            }
                        }
                    }
                    TransportEffect::GiveUp { message, .. } => {
                        if let NodePayload::Engine(inner) = &message.payload {
                            if let Some(sent) = self.unicasts.get_mut(&(n, inner.id.0)) {
                                sent.told = true;
                            }
                        }
                    }
                }
                pending.push(n);
            }
        }
        self.note_buffers(n);
        self.arm_timeout(n);
    }

    /// Schedules a wake-up at the node's next engine timeout, unless one at
    /// that moment or sooner is already queued.
    fn arm_timeout(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.alive {
            return;
        }
        let Some(due) = node.transport.poll_timeout() else { return };
        let at = due.0.saturating_mul(1000).max(self.now_us);
        if node.wake_at_us.is_none_or(|queued| at < queued) {
            node.wake_at_us = Some(at);
            self.queue.push(at, Event::Timeout(n));
        }
    }

    fn note_buffers(&mut self, n: u32) {
        // Cheap enough at the sizes simulated: a node has few peers.
        let node = &mut self.nodes[n as usize];
        if node.alive && node.messages_sent.is_multiple_of(64) {
            let buffered: usize =
                node.transport.peer_summaries().iter().map(|p| p.queued_bytes + p.inflight_bytes).sum();
            node.peak_buffered_bytes = node.peak_buffered_bytes.max(buffered);
        }
    }

    fn dial_done(
        &mut self,
        n: u32,
        generation: u64,
        attempt: ConnId,
        target: u32,
        address: TransportAddress,
        ok: bool,
    ) {
        let now = ms(self.now_us);
        if self.nodes[n as usize].generation != generation || !self.nodes[n as usize].alive {
            return;
        }
        let reachable = target != u32::MAX && self.reachable(n, target);
        if !ok || !reachable {
            let failure =
                if reachable { ConnectFailure::WrongIdentity } else { ConnectFailure::Unreachable("no answer".into()) };
            self.nodes[n as usize].transport.dial_failed(attempt, failure, Some(address), now);
            self.drain(n);
            return;
        }
        let (dialler_id, dialler_boot) = (self.nodes[n as usize].id, self.nodes[n as usize].boot);
        let ip = Some(address_of(n).socket.ip());
        let banned = false;
        let (their_conn, status) = self.nodes[target as usize].transport.admit_inbound(
            dialler_id,
            ip,
            PROTOCOL_VERSIONS,
            dialler_boot,
            banned,
            now,
        );
        if status != netmachine_domain::HandshakeStatus::Ok {
            self.nodes[n as usize].transport.dial_failed(attempt, ConnectFailure::Refused(status), Some(address), now);
            self.drain(n);
            return;
        }
        let fresh = Link {
            epoch: 0,
            ends: [n, target],
            generations: [generation, self.nodes[target as usize].generation],
            conns: [attempt, their_conn],
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
        self.conn_index.insert((target, their_conn), (link, 1));
        self.node_links[n as usize].push(link);
        self.node_links[target as usize].push(link);
        self.nodes[target as usize].transport.inbound_established(their_conn, now);
        let target_boot = self.nodes[target as usize].boot;
        self.nodes[n as usize].transport.dial_succeeded(attempt, target_boot, now);
        self.drain(target);
        self.drain(n);
    }

    fn transmit(&mut self, n: u32, conn: ConnId, message: NodeMessage) {
        let Some(&(link, side)) = self.conn_index.get(&(n, conn)) else { return };
        let Some(li) = self.slot_of(link) else { return };
        let latency = self.latency_us();
        let losses = {
            let model = self.scenario.link;
            model.losses(&mut self.random)
        };
        let rto = self.rto_us();
        let cost = message_cost(&message);
        let serialization = self.scenario.link.serialization_us(cost);
        let delay = if self.nodes[n as usize].behaviour == Some(Behaviour::Delay) { 1_000_000 } else { 0 };
        let node = &mut self.nodes[n as usize];
        node.messages_sent += 1;
        node.bytes_sent += cost as u64;
        let dir = &mut self.links[li].dirs[side as usize];
        let seq = dir.next_seq;
        dir.next_seq += 1;
        let start = self.now_us.max(dir.busy_until_us);
        dir.busy_until_us = start + serialization;
        let arrive = (start + serialization + latency + u64::from(losses) * rto + delay).max(dir.last_arrival_us + 1);
        dir.last_arrival_us = arrive;
        dir.in_flight.push_back((seq, message, cost, false));
        self.queue.push(arrive, Event::Arrive { link, from_side: side, seq });
    }

    fn arrive(&mut self, link: u64, from_side: u8, seq: u64) {
        let Some(li) = self.slot_of(link) else { return };
        let to_side = 1 - from_side;
        let l = &self.links[li];
        if !l.open[to_side as usize] || !l.open[from_side as usize] {
            return;
        }
        let (from, to) = (l.ends[from_side as usize], l.ends[to_side as usize]);
        let receiver_restarted = l.generations[to_side as usize] != self.nodes[to as usize].generation;
        if receiver_restarted {
            // The process this link led to is gone; the sender's side times out.
            return;
        }
        if !self.reachable(from, to) {
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
        // Mark it arrived; then deliver, in order, everything that has.
        {
            let dir = &mut self.links[li].dirs[from_side as usize];
            if seq < dir.next_deliver {
                return;
            }
            let Some(front) = dir.in_flight.front().map(|f| f.0) else { return };
            let Some(entry) = seq.checked_sub(front).and_then(|o| dir.in_flight.get_mut(o as usize)) else { return };
            entry.3 = true;
        }
        if matches!(self.nodes[to as usize].behaviour, Some(Behaviour::Drop) | Some(Behaviour::Withhold)) {
            return;
        }
        let mut delivered_any = false;
        loop {
            let next = {
                let dir = &mut self.links[li].dirs[from_side as usize];
                let Some(front) = dir.in_flight.front().map(|f| f.0) else { break };
                let Some(entry) = dir.next_deliver.checked_sub(front).and_then(|o| dir.in_flight.get(o as usize))
                else {
                    break;
                };
                if !entry.3 {
                    break;
                }
                dir.next_deliver += 1;
                (entry.1.clone(), entry.2)
            };
            let (message, cost) = next;
            delivered_any = true;
            let node = &mut self.nodes[to as usize];
            node.messages_received += 1;
            node.bytes_received += cost as u64;
            let from_id = self.nodes[from as usize].id;
            let fresh = match &message.payload {
                NodePayload::Engine(inner) => self.nodes[to as usize]
                    .recent
                    .entry(from_id)
                    .or_insert_with(|| netmachine_engines::transport::RecentIds::new(2 * WINDOW))
                    .first_time(inner),
                NodePayload::Relay(_) => true,
            };
            if fresh {
                self.deliver(from, to, message);
            } else {
                self.results.unicast.repeats_dropped += 1;
            }
            if !self.links[li].open[to_side as usize] {
                // Delivering closed the link (a forged message): stop here.
                return;
            }
        }
        if delivered_any {
            let upto = self.links[li].dirs[from_side as usize].next_deliver;
            let at = self.now_us + self.latency_us();
            self.queue.push(at, Event::Ack { link, from_side, upto });
        }
    }

    fn deliver(&mut self, from: u32, to: u32, message: NodeMessage) {
        let now = ms(self.now_us);
        let from_id = self.nodes[from as usize].id;
        let key = match &message.payload {
            NodePayload::Engine(inner) => (from, inner.id.0, inner.expiry),
            NodePayload::Relay(_) => (from, 0, None),
        };
        let origin = match &message.payload {
            NodePayload::Engine(inner) => Some((inner.src.clone(), inner.id, inner.protocol.clone())),
            NodePayload::Relay(_) => None,
        };
        let routed = self.nodes[to as usize].router.route_inbound(from_id, message, now, &TestVerifier);
        match routed {
            Ok(Routed::Local { message, .. }) if message.protocol.name.as_str() == UNDELIVERABLE_PROTOCOL => {
                // The sender hears that its message was dropped at the far end.
                if let Some((_, id)) = decode_notice(message.body.as_bytes()) {
                    if let Some(sent) = self.unicasts.get_mut(&(to, id)) {
                        sent.told = true;
                    }
                }
            }
            Ok(Routed::Local { .. }) => {
                if let Some(sent) = self.unicasts.get_mut(&(key.0, key.1)) {
                    sent.delivered += 1;
                    if self.now_us / 1000 >= sent.expiry_ms {
                        self.results.unicast.delivered_after_expiry += 1;
                    }
                    if sent.delivered == 1 {
                        self.unicast_latency_us.push(self.now_us - sent.at_us);
                        Self::bump(&mut self.results.series.delivered, (self.now_us / 1_000_000) as usize);
                    }
                }
            }
            Ok(Routed::Topic { to: subscribers, .. }) => {
                if !subscribers.is_empty() {
                    let entry = self.pubsub_delivered.entry((key.0, key.1, to)).or_insert(0);
                    *entry += 1;
                    if *entry == 1 {
                        if let Some((at, _, _)) = self.events_published.get(&(key.0, key.1)) {
                            self.pubsub_latency_us.push(self.now_us - at);
                        }
                    }
                    if key.2.is_some_and(|e| now >= e) {
                        self.results.pubsub.delivered_after_expiry += 1;
                    }
                }
            }
            Ok(Routed::Subscription { peer, topic, op }) => {
                let _ = self.nodes[to as usize].router.apply_remote_subscription(peer, topic, op);
            }
            Ok(Routed::Remote(_)) => {}
            Err(rejection) => {
                if let Some((source, id, protocol)) = origin {
                    let notice =
                        self.nodes[to as usize].router.undeliverable_notice(&source, id, &protocol, &rejection, now);
                    if let Some(notice) = notice {
                        self.route_from(to, notice);
                    }
                }
                if rejection.disconnects_peer() {
                    self.results.rejected += 1;
                    let second = self.second();
                    Self::bump(&mut self.results.series.rejected, second);
                    self.nodes[to as usize]
                        .transport
                        .disconnect(from_id, CloseReason::Violation(rejection.to_string()));
                    self.drain(to);
                }
            }
        }
    }

    fn ack(&mut self, link: u64, from_side: u8, upto: u64) {
        let Some(li) = self.slot_of(link) else { return };
        let l = &mut self.links[li];
        if !l.open[from_side as usize] {
            return;
        }
        let sender = l.ends[from_side as usize];
        let conn = l.conns[from_side as usize];
        if l.generations[from_side as usize] != self.nodes[sender as usize].generation {
            return;
        }
        let dir = &mut l.dirs[from_side as usize];
        let (mut count, mut bytes) = (0u64, 0usize);
        while dir.in_flight.front().is_some_and(|f| f.0 < upto) {
            if let Some((_, _, cost, _)) = dir.in_flight.pop_front() {
                count += 1;
                bytes += cost;
            }
        }
        if count > 0 {
            self.nodes[sender as usize].transport.acked(conn, count, bytes, ms(self.now_us));
            self.drain(sender);
        }
    }

    /// Closes one end of a link: its unacknowledged messages go back to
    /// that node's Transport engine.
    fn close_side(&mut self, link: u64, side: u8, reason: CloseReason) {
        let Some(li) = self.slot_of(link) else { return };
        let l = &mut self.links[li];
        if !l.open[side as usize] {
            return;
        }
        l.open[side as usize] = false;
        let node = l.ends[side as usize];
        let conn = l.conns[side as usize];
        let returned: Vec<NodeMessage> = l.dirs[side as usize].in_flight.drain(..).map(|(_, m, _, _)| m).collect();
        self.conn_index.remove(&(node, conn));
        if !l.open[0] && !l.open[1] {
            l.dirs = [Direction::default(), Direction::default()];
            self.free_links.push(li as u32);
        }
        if l.generations[side as usize] != self.nodes[node as usize].generation || !self.nodes[node as usize].alive {
            return;
        }
        self.nodes[node as usize].transport.closed(conn, reason, returned, ms(self.now_us));
        self.drain(node);
    }

    // ---- faults ----------------------------------------------------------------

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

    fn fault(&mut self, index: usize) {
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
                }
            }
            FaultKind::Adversary { nodes, behaviour } => {
                for n in self.pick(nodes) {
                    self.nodes[n as usize].behaviour = Some(behaviour);
                    if behaviour == Behaviour::LieInAdverts {
                        let other = (n + 1) % self.scenario.nodes;
                        self.advertised[n as usize] = other;
                    }
                }
            }
        }
    }

    fn crash(&mut self, n: u32) {
        self.nodes[n as usize].alive = false;
        let links = std::mem::take(&mut self.node_links[n as usize]);
        for link in links {
            let Some(li) = self.slot_of(link) else { continue };
            let l = &mut self.links[li];
            for side in 0..2 {
                if l.ends[side] == n {
                    l.open[side] = false;
                    l.dirs[side].in_flight.clear();
                    self.conn_index.remove(&(n, l.conns[side]));
                }
            }
            if l.open[0] || l.open[1] {
                self.queue.push(self.now_us + IDLE_TIMEOUT_US, Event::LinkCheck { link });
            }
        }
    }

    // ---- results ---------------------------------------------------------------

    fn finish(mut self, wall_s: f64) -> Results {
        let mut unicast = KindMetrics::default();
        let adversarial = |n: u32| self.nodes[n as usize].behaviour.is_some();
        let mut violations = Vec::new();
        for ((from, id), sent) in &self.unicasts {
            unicast.expected += 1;
            if sent.delivered >= 1 {
                unicast.delivered += 1;
            }
            if sent.delivered > 1 {
                unicast.duplicates += u64::from(sent.delivered - 1);
                violations.push(format!("message {id} from node {from} delivered {} times", sent.delivered));
            }
            if sent.told {
                unicast.told_undeliverable += 1;
            }
            if sent.delivered == 0 && !sent.told {
                let excused = !self.reachable(*from, sent.to)
                    || adversarial(*from)
                    || adversarial(sent.to)
                    || self.nodes[*from as usize].generation > 0;
                if excused {
                    unicast.excused += 1;
                } else {
                    unicast.lost += 1;
                    if violations.len() < 20 {
                        violations.push(format!(
                            "message {id} from node {from} to node {} neither delivered nor reported",
                            sent.to
                        ));
                    }
                }
            }
        }
        if let Some((healed_at, cut)) = self.last_heal {
            for ((from, _), sent) in &self.unicasts {
                let crosses = (*from < cut) != (sent.to < cut);
                let honest = !adversarial(*from) && !adversarial(sent.to);
                let up = |n: u32| self.nodes[n as usize].alive && self.nodes[n as usize].generation == 0;
                let never_crashed = up(*from) && up(sent.to);
                if crosses && honest && never_crashed && sent.at_us >= healed_at + 5_000_000 {
                    self.results.across_healed_cut.sent += 1;
                    if sent.delivered > 0 {
                        self.results.across_healed_cut.delivered += 1;
                    }
                }
            }
        }
        if unicast.delivered_after_expiry > 0 {
            violations.push(format!("{} messages delivered after their expiry", unicast.delivered_after_expiry));
        }
        unicast.delivered_after_expiry += self.results.unicast.delivered_after_expiry;
        unicast.repeats_dropped = self.results.unicast.repeats_dropped;
        unicast.delivery_ratio = ratio(unicast.delivered, unicast.expected);
        self.unicast_latency_us.sort_unstable();
        unicast.latency_cdf = cdf_points(&self.unicast_latency_us, 200);
        unicast.latency = LatencySummary::of(&mut self.unicast_latency_us);

        let mut pubsub = KindMetrics::default();
        for ((publisher, id), (_, expected, topic)) in &self.events_published {
            pubsub.expected += expected;
            for &s in &self.subscribers[*topic as usize] {
                match self.pubsub_delivered.get(&(*publisher, *id, s)).copied().unwrap_or(0) {
                    0 => {
                        if self.reachable(*publisher, s) && !adversarial(s) {
                            pubsub.lost += 1;
                        } else {
                            pubsub.excused += 1;
                        }
                    }
                    k => {
                        pubsub.delivered += 1;
                        pubsub.duplicates += u64::from(k - 1);
                    }
                }
            }
        }
        pubsub.delivery_ratio = ratio(pubsub.delivered, pubsub.expected);
        pubsub.delivered_after_expiry = self.results.pubsub.delivered_after_expiry;
        self.pubsub_latency_us.sort_unstable();
        pubsub.latency_cdf = cdf_points(&self.pubsub_latency_us, 200);
        pubsub.latency = LatencySummary::of(&mut self.pubsub_latency_us);

        let mut in_degree = vec![0u64; self.nodes.len()];
        for link in &self.links {
            if link.open[0] && link.open[1] {
                in_degree[link.ends[1] as usize] += 1;
            }
        }
        let per_node = PerNode {
            messages_sent: self.nodes.iter().map(|n| n.messages_sent).collect(),
            bytes_sent: self.nodes.iter().map(|n| n.bytes_sent).collect(),
            messages_received: self.nodes.iter().map(|n| n.messages_received).collect(),
            bytes_received: self.nodes.iter().map(|n| n.bytes_received).collect(),
            in_degree,
            peak_buffered_bytes: self.nodes.iter().map(|n| n.peak_buffered_bytes as u64).collect(),
        };
        Results {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            nodes: self.nodes.len() as u32,
            simulated_s: self.scenario.duration_s,
            wall_s,
            events: self.events,
            events_per_wall_s: self.events as f64 / wall_s.max(1e-9),
            trace_hash: format!("{:016x}", self.hash.finish()),
            unicast,
            pubsub,
            per_node,
            peak_rss_bytes_per_node: peak_rss_bytes() / u64::from(self.scenario.nodes.max(1)),
            violations,
            ..std::mem::take(&mut self.results)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The process's peak resident memory (Linux), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024))
        })
        .unwrap_or(0)
}

use std::io::Write as _;
