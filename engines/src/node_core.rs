//! The node core: every engine of one node, and the glue between them,
//! written once. It owns the Router, the Transport and the Identity Store,
//! the connection protocol of each connection and each peer's repeat
//! filter. Its
//! host hands it what happened (a local engine sent, a dial ended, a frame
//! arrived, a connection closed, a record reached the disk, time passed)
//! and carries out the [`CoreEffect`]s it returns: deliver to a local
//! engine, dial, write a frame, close a connection, persist a record.
//!
//! What the glue does, in one place:
//! - a message from a local engine is routed, and what leaves the node is
//!   handed to the Transport (with the peer's addresses from its advert in
//!   the store, when the Transport does not track the peer);
//! - a frame goes through the connection's protocol; a message is routed
//!   inbound, a drop the sender should hear of is answered with a notice,
//!   a violation closes the connection, an advert goes to the store;
//! - a record the store accepted reaches the Router (bans, topics, domain
//!   members), the Transport (the addresses of the peers it tracks,
//!   permanence, bans) and the engines
//!   subscribed to identity updates, once its host says it is on disk;
//! - a peer that connects gets this node's advert if it holds an older
//!   one, the adverts of the topics created here, and this node's
//!   subscriptions to topics it publishes (it may have restarted and
//!   forgotten them);
//! - a message the Transport gives up is reported to its sender;
//! - a message to this node under a protocol a hosted engine serves (see
//!   [`crate::registry`]) goes to that engine, with the peers' comings and
//!   goings, and what the engine asks for is built and routed here.

mod advert_rates;
mod connections;
mod hosted;
mod identity;
mod metering;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use netmachine_domain::{
    DestinationIdentity, EngineMessage, EngineName, Frame, IdentityRecord, MessageId, NodeAdvert, NodeIdentity,
    NodeMessage, NodePayload, RecordKey, Timestamp, TopicIdentity, TransportAddress,
};

pub use advert_rates::{AdvertRateConfig, Charge};

use crate::engine::{EngineSetup, Notice, Timed};
use crate::identity_store::{IdentityStore, IdentityUpdated, Persist};
use crate::log_budget::{LogBudget, LogKind};
use crate::ports::{Signer, Verifier};
use crate::router::{Routed, Router, SubscriptionOp, TopicError};
use crate::transport::connection::{Connection, HandshakeOffer};
use crate::transport::{CloseReason, ConnId, ConnMap, RecentIds, Transport, TransportEvent};
use crate::RouteError;

/// What a local engine receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Message(EngineMessage),
    IdentityUpdated(IdentityUpdated),
    /// A message this engine sent was not delivered: its expiry passed
    /// before a connection could take it, the node stopped, or the
    /// destination node dropped it and said why.
    Undeliverable {
        id: MessageId,
        dst: DestinationIdentity,
        reason: String,
    },
}

/// Which message of which connection a delivery carries: a host that
/// cannot hand it to its engine at once [`NodeCore::hold`]s it, and the
/// peer is told of nothing from it on until it is
/// [`NodeCore::release`]d. The peer's window so bounds what waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub conn: ConnId,
    pub number: u64,
}

/// What the host must do for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEffect<A> {
    Deliver {
        to: A,
        delivery: Delivery,
        /// For a message from a peer: hold it if it must wait.
        receipt: Option<Receipt>,
    },
    /// Open a secured stream to `peer` at `address`; report with
    /// [`NodeCore::dialled`].
    Dial { attempt: ConnId, peer: NodeIdentity, address: TransportAddress },
    /// Write a frame on a connection, after those asked for before.
    Write { conn: ConnId, frame: Frame },
    /// Close a connection; report with [`NodeCore::closed`].
    Close { conn: ConnId, reason: CloseReason },
    /// Make a record durable, then hand the change to [`NodeCore::persisted`].
    Persist(Persist),
    /// Delete a record from disk: the cache of unasked records gave it up.
    Forget(RecordKey),
    /// Connectivity, for whoever watches it.
    Notice(TransportEvent),
    /// `by` took these messages, which local engines sent (reported only
    /// while [`NodeCore::report_acknowledgements`] is on).
    Acknowledged { by: NodeIdentity, messages: Vec<(EngineName, MessageId)> },
}

/// Counters for status displays and the simulator's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    pub local_delivered: u64,
    pub sent_remote: u64,
    pub inbound_delivered: u64,
    pub inbound_rejected: u64,
    pub repeats_dropped: u64,
    pub violations: u64,
    pub undeliverable: u64,
}

/// The handshake settings of a node.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    pub boot: u64,
    /// Messages each peer's repeat filter remembers.
    pub repeat_window: usize,
    /// Seeds the hosted engines' generators.
    pub seed: u64,
    /// How fast each peer may send adverts.
    pub adverts: AdvertRateConfig,
    /// Log lines peers may cause.
    pub logs: crate::log_budget::LogBudgetConfig,
    /// The settings of the hosted engines.
    pub engines: crate::registry::EngineSettings,
}

/// Where a connection stands.
#[derive(Debug)]
enum Phase {
    /// This node dialled; the stream is being opened.
    Dialling { peer: NodeIdentity, address: TransportAddress },
    /// This node sent its hello and waits for the reply.
    AwaitingReply(Box<AwaitingReply>),
    /// The peer dialled; its hello has not come yet.
    AwaitingHello { peer: NodeIdentity, ip: Option<std::net::IpAddr> },
    /// Boxed, as is a reply awaited: the table of phases keeps spare
    /// slots, each as large as the largest phase.
    Established(Box<Connection>),
}

#[derive(Debug)]
struct AwaitingReply {
    offer: HandshakeOffer,
    address: TransportAddress,
    /// The peer, and what was sent behind the hello (see
    /// `transport::early`).
    connection: Connection,
}

pub struct NodeCore<A> {
    node: NodeIdentity,
    config: CoreConfig,
    router: Router<A>,
    transport: Transport,
    identities: IdentityStore,
    signer: Arc<dyn Signer>,
    verifier: Arc<dyn Verifier>,
    own_advert: Option<NodeAdvert>,
    /// Topics whose adverts this node gives every peer that connects.
    local_topics: Vec<TopicIdentity>,
    phases: ConnMap<Phase>,
    /// Boxed: most peers sit idle in the table, whose spare slots would
    /// otherwise weigh a whole filter each.
    recent: HashMap<NodeIdentity, Box<RecentIds>>,
    effects: VecDeque<CoreEffect<A>>,
    /// Connections that owe the peer an acknowledgement, written once the
    /// other effects are out (a delivery may be held first).
    acks_due: Vec<ConnId>,
    counters: CoreCounters,
    metrics: crate::metrics::CoreMetrics,
    report_acks: bool,
    hosted: hosted::Hosted,
    /// How fast each peer has been sending adverts.
    advert_rates: advert_rates::AdvertRates,
    /// Log lines peers may cause.
    logs: LogBudget,
}

impl<A> std::fmt::Debug for NodeCore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore").field("node", &self.node).field("connections", &self.phases.len()).finish()
    }
}

impl<A: Clone> NodeCore<A> {
    /// A core over engines its host built: the identity store opened with
    /// what the host loaded from disk. The Router and the Transport learn
    /// what the store already holds.
    pub fn new(
        config: CoreConfig,
        router: Router<A>,
        transport: Transport,
        identities: IdentityStore,
        signer: Box<dyn Signer>,
        verifier: Box<dyn Verifier>,
        now: Timestamp,
    ) -> Self {
        let mut core = Self {
            node: router.node(),
            config,
            router,
            transport,
            identities,
            signer: Arc::from(signer),
            verifier: Arc::from(verifier),
            own_advert: None,
            local_topics: Vec::new(),
            phases: ConnMap::default(),
            recent: HashMap::new(),
            effects: VecDeque::new(),
            acks_due: Vec::new(),
            counters: CoreCounters::default(),
            metrics: crate::metrics::CoreMetrics::default(),
            report_acks: false,
            hosted: hosted::Hosted::default(),
            advert_rates: advert_rates::AdvertRates::new(config.adverts),
            logs: LogBudget::new(config.logs),
        };
        // A stream of its own, apart from the Transport's from the same seed.
        let seed = crate::ports::Randomness::next_u64(&mut crate::random::SplitMix::new(config.seed));
        let setup = EngineSetup { node: core.node, seed, signer: core.signer.clone(), verifier: core.verifier.clone() };
        let settings = config.engines;
        for engine in crate::registry::protocol_engines(&setup, &settings) {
            let protocol = engine.protocol().clone();
            if let Err(err) = core.add_engine(engine, now) {
                tracing::error!(%protocol, %err, "engine not hosted: the registry lists its protocol twice");
            }
        }
        // In a fixed order, so that a restart is a pure function of the disk.
        let mut held: Vec<IdentityRecord> = core.identities.records().cloned().collect();
        held.sort_by_key(IdentityRecord::key);
        for record in &held {
            core.apply_record(record, now);
        }
        // What the disk held beyond the cache's budgets goes from it.
        core.forget_evicted();
        core.pump(now);
        core
    }

    pub fn node(&self) -> NodeIdentity {
        self.node
    }

    pub fn router(&self) -> &Router<A> {
        &self.router
    }

    pub fn router_mut(&mut self) -> &mut Router<A> {
        &mut self.router
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn identities(&self) -> &IdentityStore {
        &self.identities
    }

    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    /// This node's own advert, once set.
    pub fn own_advert(&self) -> Option<&NodeAdvert> {
        self.own_advert.as_ref()
    }

    /// Whether acknowledgements of local engines' messages are reported
    /// ([`CoreEffect::Acknowledged`]); off by default, as they cost an
    /// effect per batch and most hosts have nobody waiting for them.
    pub fn report_acknowledgements(&mut self, on: bool) {
        self.report_acks = on;
    }

    /// Whether an input since the last call moved the next timeout
    /// earlier: a host sleeping until the old one must wake.
    pub fn take_sooner_timeout(&mut self) -> bool {
        // Both asked, so that neither keeps a stale flag.
        let transport = self.transport.take_sooner_timeout();
        self.hosted.take_sooner() || transport
    }

    /// Closes the connection to `peer`, if there is one: it was removed.
    pub fn disconnect(&mut self, peer: NodeIdentity, now: Timestamp) {
        self.transport.disconnect(peer, CloseReason::Removed);
        self.pump(now);
    }

    /// How long it took to open a secured stream to `peer` at `address`.
    pub fn record_rtt(&mut self, peer: NodeIdentity, address: TransportAddress, micros: u32) {
        self.transport.record_rtt(peer, address, micros);
    }

    /// Whether `attempt` is a dial this core still waits on.
    pub fn is_dialling(&self, attempt: ConnId) -> bool {
        matches!(self.phases.get(&attempt), Some(Phase::Dialling { .. }))
    }

    /// The next thing the host must do. Acknowledgements come last, so
    /// that a delivery the host holds is not acknowledged.
    pub fn poll_effect(&mut self) -> Option<CoreEffect<A>> {
        if let Some(effect) = self.effects.pop_front() {
            return Some(effect);
        }
        while let Some(conn) = self.acks_due.pop() {
            if let Some(ack) = self.ack(conn) {
                return Some(ack);
            }
        }
        None
    }

    // ---- local engines ------------------------------------------------------

    /// Routes a message from a local engine.
    pub fn send(&mut self, message: EngineMessage, now: Timestamp) -> Result<(), RouteError> {
        self.count_local_send(&message.src.name);
        let routed = self.router.route_local(message, now, self.signer.as_ref())?;
        let outcome = self.dispatch(routed, now, None);
        self.pump(now);
        outcome
    }

    /// Subscribes a local engine; the first local subscriber of a topic
    /// asks its publisher nodes for its events.
    pub fn subscribe(&mut self, engine: &EngineName, topic: &TopicIdentity, now: Timestamp) -> Result<(), TopicError> {
        let before = self.router.local_subscriber_count(topic);
        self.router.subscribe(engine, topic)?;
        if before == 0 && self.router.local_subscriber_count(topic) == 1 {
            for request in self.router.subscription_requests(topic, SubscriptionOp::Subscribe, now) {
                self.send_control(request, now);
            }
        }
        self.pump(now);
        Ok(())
    }

    /// Unsubscribes a local engine; returns whether it was subscribed. The
    /// last local subscriber leaving tells the publisher nodes to stop.
    pub fn unsubscribe(
        &mut self,
        engine: &EngineName,
        topic: &TopicIdentity,
        now: Timestamp,
    ) -> Result<bool, TopicError> {
        let was = self.router.unsubscribe(engine, topic)?;
        if was && self.router.local_subscriber_count(topic) == 0 {
            for request in self.router.subscription_requests(topic, SubscriptionOp::Unsubscribe, now) {
                self.send_control(request, now);
            }
        }
        self.pump(now);
        Ok(was)
    }

    /// A topic created by a local engine: its advert, once the host has
    /// offered it to the store and it is on disk, is given to every peer
    /// that connects.
    pub fn created_topic(&mut self, topic: TopicIdentity) {
        if !self.local_topics.contains(&topic) {
            self.local_topics.push(topic);
        }
    }

    /// Sends the node's own control messages; a failure is only logged
    /// (the sender is this node, and no engine waits for it).
    fn send_control(&mut self, message: EngineMessage, now: Timestamp) {
        let dst = message.dst.clone();
        let protocol = message.protocol.clone();
        if let Err(err) = self.route_control(message, now) {
            tracing::debug!(%dst, %protocol, %err, "this node's own notice (a drop notice or a subscription change) not sent");
        }
    }

    /// Routes and carries out a message this node itself sends.
    fn route_control(&mut self, message: EngineMessage, now: Timestamp) -> Result<(), RouteError> {
        let routed = self.router.route_local(message, now, self.signer.as_ref())?;
        self.dispatch(routed, now, None)
    }

    /// Carries out a routing decision.
    fn dispatch(&mut self, routed: Routed<A>, now: Timestamp, receipt: Option<Receipt>) -> Result<(), RouteError> {
        match routed {
            Routed::Local { to, message } => {
                let delivery = match crate::router::undeliverable_notice_of(&message) {
                    Some((id, reason)) => Delivery::Undeliverable {
                        id,
                        dst: DestinationIdentity::Node(message.src.node),
                        reason: format!("{} at {}", reason.describe(), message.src.node),
                    },
                    None => {
                        self.count_delivery(&message.dst);
                        Delivery::Message(message)
                    }
                };
                self.deliver(to, delivery, receipt);
            }
            Routed::Topic { to, message, remote } => {
                self.count_topic_delivery(&message.dst, to.len());
                for address in to {
                    self.deliver(address, Delivery::Message(message.clone()), receipt);
                }
                for outbound in remote {
                    let subscriber = outbound.dst;
                    if let Err(err) = self.hand_to_transport(outbound, now) {
                        tracing::debug!(%subscriber, %err, "event not handed to the transport");
                    }
                }
            }
            Routed::Subscription { peer, topic, op } => {
                if let Err(err) = self.router.apply_remote_subscription(peer, topic, op) {
                    if self.logs.allow(LogKind::SubscriptionRefused, Some(peer), now) {
                        tracing::info!(%peer, %topic, %err, "remote subscription refused");
                    }
                }
            }
            Routed::Protocol(input) => self.hand_to_engine(input, now),
            Routed::Remote(outbound) => {
                let dst = match &outbound.payload {
                    NodePayload::Engine(inner) => inner.dst.clone(),
                    NodePayload::Relay(_) => DestinationIdentity::Node(outbound.dst),
                };
                self.hand_to_transport(outbound, now).map_err(|source| RouteError::Outbound { dst, source })?;
            }
        }
        Ok(())
    }

    fn deliver(&mut self, to: A, delivery: Delivery, receipt: Option<Receipt>) {
        self.counters.local_delivered += 1;
        self.effects.push_back(CoreEffect::Deliver { to, delivery, receipt });
    }

    /// Hands a message to the Transport, giving it the peer's addresses
    /// from the store if it does not track the peer (it tracks the peers in
    /// use, and forgets idle ones).
    fn hand_to_transport(
        &mut self,
        message: NodeMessage,
        now: Timestamp,
    ) -> Result<(), crate::transport::OutboundError> {
        let to = message.dst;
        if !self.transport.knows(&to) {
            if let Some(advert) = self.identities.node(&to).and_then(|r| r.advert.as_ref()) {
                self.transport.set_addresses(to, advert.addrs.to_vec(), now);
            }
        }
        if let Err(err) = self.transport.send(to, message, now) {
            if let Some(reason) = crate::metrics::DropReason::of_outbound(&err) {
                self.metrics.count_drop(reason);
            }
            return Err(err);
        }
        self.counters.sent_remote += 1;
        let class = self.class_of(&to);
        self.metrics.count_out(class);
        Ok(())
    }

    /// Carries out what the Transport and the hosted engines asked for,
    /// until neither asks for more.
    fn pump(&mut self, now: Timestamp) {
        loop {
            self.pump_transport(now);
            if !self.pump_engines(now) {
                break;
            }
        }
    }

    /// Turns what the Transport asked for into the core's effects, and
    /// acts on its events.
    fn pump_transport(&mut self, now: Timestamp) {
        use crate::transport::TransportEffect as T;
        while let Some(effect) = self.transport.poll_effect() {
            match effect {
                T::Dial { attempt, peer, address } => {
                    self.phases.insert(attempt, Phase::Dialling { peer, address });
                    self.effects.push_back(CoreEffect::Dial { attempt, peer, address });
                }
                T::Transmit { conn, message } => self.transmit(conn, message, now),
                T::Close { conn, reason } => self.effects.push_back(CoreEffect::Close { conn, reason }),
                T::Event(event) => {
                    match &event {
                        TransportEvent::NodeConnected { peer, .. } => {
                            // It may have restarted and forgotten this node's
                            // subscriptions.
                            for request in self.router.resubscriptions_for(peer, now) {
                                self.send_control(request, now);
                            }
                            self.hosted.notify(Notice::PeerConnected(*peer));
                        }
                        TransportEvent::NodeDisconnected { peer, .. } => {
                            self.hosted.notify(Notice::PeerGone(*peer));
                        }
                        // Refused before any dial: the other setup failures are
                        // counted where each dial ends.
                        TransportEvent::NodeConnectFailed {
                            peer,
                            reason: crate::transport::ConnectFailure::LocalCapacity,
                            ..
                        } => {
                            self.hosted.notify(Notice::PeerUnreachable(*peer));
                            self.metrics.count_handshake_failure(
                                crate::metrics::Side::Outbound,
                                crate::metrics::HandshakeFailure::LocalCapacity,
                            );
                        }
                        TransportEvent::NodeConnectFailed { peer, .. } => {
                            self.hosted.notify(Notice::PeerUnreachable(*peer));
                        }
                    }
                    self.effects.push_back(CoreEffect::Notice(event));
                }
                T::GiveUp { message, reason } => {
                    self.metrics.count_drop(crate::metrics::DropReason::from(&reason));
                    self.given_up(message, &reason.to_string())
                }
                // A forgotten peer has nothing in flight: its repeat filter goes too.
                T::Forgotten { peer } => {
                    self.recent.remove(&peer);
                    self.advert_rates.forget(&peer);
                }
            }
        }
    }

    fn transmit(&mut self, conn: ConnId, message: NodeMessage, now: Timestamp) {
        match self.phases.get_mut(&conn) {
            Some(Phase::Established(connection)) => {
                connection.wrote(message.clone());
                self.effects.push_back(CoreEffect::Write { conn, frame: Frame::Node(message) });
            }
            // Behind the hello, before the reply.
            Some(Phase::AwaitingReply(awaiting)) => {
                awaiting.connection.wrote(message.clone());
                self.effects.push_back(CoreEffect::Write { conn, frame: Frame::Node(message) });
            }
            // The Transport only transmits on connections it adopted, which
            // are established here, or on a dial whose hello is out;
            // anything else is returned to it.
            _ => self.transport.closed(conn, CloseReason::Lost("not established".into()), vec![message], now),
        }
    }

    /// Tells a local sender that its message was given up.
    fn given_up(&mut self, message: NodeMessage, reason: &str) {
        self.counters.undeliverable += 1;
        let NodePayload::Engine(inner) = message.payload else { return };
        if inner.src.node != self.node {
            return;
        }
        match self.router.engine_address(&inner.src.name).cloned() {
            Some(address) => {
                let delivery = Delivery::Undeliverable { id: inner.id, dst: inner.dst, reason: reason.to_string() };
                self.effects.push_back(CoreEffect::Deliver { to: address, delivery, receipt: None });
            }
            None => {
                tracing::info!(engine = %inner.src.name, id = inner.id.0, %reason, "undeliverable; its sender is gone")
            }
        }
    }

    /// Closes every connection and gives up what waits.
    /// Whether a log line of `kind` that `peer` caused may be written now
    /// (see [`LogBudget`]): hosts log what peers cause through it.
    pub fn log_allowed(&mut self, kind: LogKind, peer: Option<NodeIdentity>, now: Timestamp) -> bool {
        self.logs.allow(kind, peer, now)
    }

    pub fn shutdown(&mut self, now: Timestamp) {
        self.transport.shutdown();
        self.pump(now);
    }
}

impl<A: Clone> Timed for NodeCore<A> {
    fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.transport.poll_timeout(), self.engines_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.logs.roll(now);
        self.advert_rates.prune(now);
        self.transport.handle_timeout(now);
        self.engines_handle_timeout(now);
        self.pump(now);
    }
}

#[cfg(test)]
mod tests;
