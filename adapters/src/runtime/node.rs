//! A node: the Router and the Identity Store hosted on tokio, with engines
//! attached by name.
//!
//! Routing reads the Router's table under a short read lock in the task of
//! the engine that sends, then hands the message straight to the
//! destination's bounded mailbox. Changes to the table (engines, topics,
//! trust) take the write lock. This is the spec's "one Router instance per
//! sender" arrangement: one state machine, many routing contexts, and no
//! extra hop through a central task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netmachine_domain::{
    Advert, DomainAdvert, EngineName, IdentityRecord, NodeAdvert, NodeAdvertBody, NodeIdentity, NodeMessage,
    NodePayload, Permanence, RecordKey, Timestamp, TopicAdvert, TopicIdentity, Trust, WeightedAddress,
};
use netmachine_engines::identity_store::{Accepted, AdvertUpdate, IdentityStore, IdentityStoreConfig};
use netmachine_engines::ports::Signer;
use netmachine_engines::{InboundRejection, RouteError, Routed, Router, RouterConfig};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, Notify};

use super::delivery::{Delivery, Watches};
use super::error::{NodeError, SendError};
use super::identity_actor::{spawn_identity_actor, IdentityCommand};
use super::mailbox::{Inbound, Mailbox};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{Ed25519Keys, RingVerifier};
use crate::outbound::{OutboundError, OutboundTransport};
use crate::store::{RecordStore, RedbRecordStore, VolatileRecordStore};

/// Deliveries that found their mailbox full and wait for room. Empty (and
/// unallocated) in the common case.
#[derive(Debug, Default)]
#[must_use = "a pending delivery is lost unless it is waited for"]
pub(crate) struct Pending {
    waiting: Vec<Waiting>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[derive(Debug)]
struct Waiting {
    to: Mailbox,
    inbound: Inbound,
    /// The destination of a unicast, whose sender learns if it left.
    dst: Option<netmachine_domain::DestinationIdentity>,
}

/// The default capacity of an engine's mailbox.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;
/// The file, inside the data directory, that holds identity records.
pub const IDENTITY_DB_FILE: &str = "identities.redb";

/// An outbound port for a node with no transport: every remote send fails
/// with a clear error.
#[derive(Debug, Default)]
pub struct NoTransport;

impl OutboundTransport for NoTransport {
    fn send(&self, _to: NodeIdentity, _message: NodeMessage) -> Result<(), OutboundError> {
        Err(OutboundError::NoTransport)
    }
}

/// Counters a person or a control API can read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub local_delivered: AtomicU64,
    pub sent_remote: AtomicU64,
    pub inbound_delivered: AtomicU64,
    pub inbound_rejected: AtomicU64,
    pub undeliverable: AtomicU64,
}

/// A snapshot of what a node is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub engines: usize,
    pub topics: usize,
    pub local_delivered: u64,
    pub sent_remote: u64,
    pub inbound_delivered: u64,
    pub inbound_rejected: u64,
    pub undeliverable: u64,
}

pub(crate) struct NodeInner {
    pub keys: Ed25519Keys,
    pub identity: NodeIdentity,
    pub clock: Arc<dyn Clock>,
    pub outbound: Arc<dyn OutboundTransport>,
    pub router: Arc<RwLock<Router<Mailbox>>>,
    pub mailbox_capacity: usize,
    pub counters: Counters,
    identity_tx: Mutex<Option<mpsc::Sender<IdentityCommand>>>,
    identity_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub topic_keys: Mutex<HashMap<TopicIdentity, Ed25519Keys>>,
    own_advert: RwLock<Option<NodeAdvert>>,
    /// Signalled when the transport has room again after refusing a send.
    pub outbound_room: Arc<Notify>,
    /// Senders waiting to hear what became of a message.
    pub watches: Arc<Watches>,
}

impl std::fmt::Debug for NodeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Called with every identity record the node holds at start and every
/// one accepted later, on the identity store's thread.
pub type IdentityHook = Box<dyn Fn(&IdentityRecord) + Send + Sync>;

/// Builds a node.
pub struct NodeBuilder {
    keys: Option<Ed25519Keys>,
    data_dir: Option<PathBuf>,
    record_store: Option<Box<dyn RecordStore>>,
    clock: Option<Arc<dyn Clock>>,
    outbound: Option<Arc<dyn OutboundTransport>>,
    mailbox_capacity: usize,
    router: RouterConfig,
    identities: IdentityStoreConfig,
    name: Option<String>,
    addresses: Vec<WeightedAddress>,
    hooks: Vec<IdentityHook>,
    outbound_room: Option<Arc<Notify>>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder").field("data_dir", &self.data_dir).finish_non_exhaustive()
    }
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeBuilder {
    pub fn new() -> Self {
        Self {
            keys: None,
            data_dir: None,
            record_store: None,
            clock: None,
            outbound: None,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            router: RouterConfig::default(),
            identities: IdentityStoreConfig::default(),
            name: None,
            addresses: Vec::new(),
            hooks: Vec::new(),
            outbound_room: None,
        }
    }

    /// The node key; a fresh one is made when none is given.
    pub fn keys(mut self, keys: Ed25519Keys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Keep identity records in `dir` (redb). Without it, records live in
    /// memory and are gone when the node stops.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keep identity records in a store of the caller's choosing.
    pub fn record_store(mut self, store: Box<dyn RecordStore>) -> Self {
        self.record_store = Some(store);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The outbound side of a transport; without one, remote sends fail.
    pub fn outbound(mut self, outbound: Arc<dyn OutboundTransport>) -> Self {
        self.outbound = Some(outbound);
        self
    }

    /// Signalled when the transport has room again after refusing a send.
    pub(crate) fn outbound_room(mut self, room: Arc<Notify>) -> Self {
        self.outbound_room = Some(room);
        self
    }

    /// Runs `hook` for every identity record held at start and accepted later.
    pub fn on_identity_record(mut self, hook: IdentityHook) -> Self {
        self.hooks.push(hook);
        self
    }

    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    pub fn router_config(mut self, config: RouterConfig) -> Self {
        self.router = config;
        self
    }

    pub fn identity_store_config(mut self, config: IdentityStoreConfig) -> Self {
        self.identities = config;
        self
    }

    /// What this node's advert says: a display name and where to reach it.
    pub fn advertise(mut self, name: Option<String>, addresses: Vec<WeightedAddress>) -> Self {
        self.name = name;
        self.addresses = addresses;
        self
    }

    /// Starts the node: opens its records, signs a fresh advert of itself,
    /// and starts the identity store.
    pub async fn start(self) -> Result<Node, NodeError> {
        let keys = match self.keys {
            Some(keys) => keys,
            None => Ed25519Keys::generate()?,
        };
        let identity = keys.node_identity();
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let disk: Box<dyn RecordStore> = match (self.record_store, &self.data_dir) {
            (Some(store), _) => store,
            (None, Some(dir)) => Box::new(RedbRecordStore::open(&dir.join(IDENTITY_DB_FILE))?),
            (None, None) => Box::new(VolatileRecordStore::default()),
        };
        let store = IdentityStore::open(identity, self.identities, disk.load_all()?);
        let router = Arc::new(RwLock::new(Router::new(identity, self.router)));
        seed_router(&mut router.write(), &store);
        let hooks = Arc::new(self.hooks);
        for record in store.records() {
            for hook in hooks.iter() {
                hook(record);
            }
        }
        let previous_version = store.node(&identity).and_then(|r| r.advert.as_ref()).map_or(0, |a| a.version);

        let on_accepted = {
            let router = Arc::clone(&router);
            let hooks = Arc::clone(&hooks);
            Box::new(move |accepted: &Accepted| {
                apply_to_router(&router, accepted);
                for hook in hooks.iter() {
                    hook(&accepted.event.record);
                }
            })
        };
        let (identity_tx, thread) =
            spawn_identity_actor(store, disk, Arc::clone(&clock), on_accepted).map_err(NodeError::Thread)?;

        let node = Node {
            inner: Arc::new(NodeInner {
                keys,
                identity,
                clock: Arc::clone(&clock),
                outbound: self.outbound.unwrap_or_else(|| Arc::new(NoTransport)),
                router,
                mailbox_capacity: self.mailbox_capacity,
                counters: Counters::default(),
                identity_tx: Mutex::new(Some(identity_tx)),
                identity_thread: Mutex::new(Some(thread)),
                topic_keys: Mutex::new(HashMap::new()),
                own_advert: RwLock::new(None),
                outbound_room: self.outbound_room.unwrap_or_else(|| Arc::new(Notify::new())),
                watches: Arc::default(),
            }),
        };
        // The version rises across restarts: the clock in milliseconds, or
        // one more than the last version if the clock went backwards.
        let now = clock.now();
        let version = now.as_millis().max(previous_version.saturating_add(1));
        let body = NodeAdvertBody::new(identity, self.addresses, self.name.as_deref(), version, now)?;
        let sig = node.inner.keys.sign(&NodeAdvert::signing_bytes_of(&body));
        let advert = Advert::from_parts(body, sig);
        node.identity_request(|reply| IdentityCommand::SetOwnAdvert(advert.clone(), reply)).await??;
        *node.inner.own_advert.write() = Some(advert);
        tracing::info!(node = %identity, "node started");
        Ok(node)
    }
}

/// Gives the Router what the identity store already knows at start.
fn seed_router(router: &mut Router<Mailbox>, store: &IdentityStore) {
    for record in store.records() {
        apply_record(router, record);
    }
}

fn apply_record(router: &mut Router<Mailbox>, record: &IdentityRecord) {
    match record {
        IdentityRecord::Node(node) => router.set_banned(node.id, node.trust.is_banned()),
        IdentityRecord::Topic(advert) => {
            if let Err(err) = router.learn_topic(advert.clone()) {
                tracing::warn!(%err, "topic advert not taken by the router");
            }
        }
        IdentityRecord::Domain(advert) => router.set_domain_members(advert.id, advert.nodes.iter().copied()),
        IdentityRecord::Engine(_) => {}
    }
}

/// Runs on the identity store's thread after each accepted change.
fn apply_to_router(router: &RwLock<Router<Mailbox>>, accepted: &Accepted) {
    let mailboxes: Vec<(EngineName, Mailbox)> = {
        let mut router = router.write();
        apply_record(&mut router, &accepted.event.record);
        accepted
            .notify
            .iter()
            .filter_map(|name| router.engine_address(name).map(|m| (name.clone(), m.clone())))
            .collect()
    };
    for (name, mailbox) in mailboxes {
        // A full mailbox must not stall the identity store (an engine
        // waiting on the store would deadlock it), so a notice to a
        // saturated engine is dropped and logged.
        if mailbox.try_send(Inbound::IdentityUpdated(accepted.event.clone())).is_err() {
            tracing::warn!(engine = %name, key = %accepted.event.key, "identity update notice dropped: mailbox full");
        }
    }
}

/// A notice from a peer's router that a message this node's engine sent
/// was dropped there, as the engine receives it.
fn notice_of(message: &netmachine_domain::EngineMessage) -> Option<Inbound> {
    let (id, reason) = netmachine_engines::router::undeliverable_notice_of(message)?;
    Some(Inbound::Undeliverable {
        id,
        dst: netmachine_domain::DestinationIdentity::Node(message.src.node),
        reason: reason.describe().to_string(),
    })
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// A node reference that does not keep the node alive (for parts the node
/// itself owns, like its transport).
#[derive(Clone, Debug)]
pub struct WeakNode(std::sync::Weak<NodeInner>);

impl WeakNode {
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

impl Node {
    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    pub fn is_banned(&self, node: &NodeIdentity) -> bool {
        self.inner.router.read().is_banned(node)
    }

    /// Tells a local engine that a message it sent was given up.
    pub fn notify_undeliverable(&self, message: &NodeMessage, reason: &str) {
        self.inner.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
        let NodePayload::Engine(inner) = &message.payload else { return };
        if inner.src.node != self.identity() {
            return;
        }
        let outcome = Delivery::Undeliverable { reason: reason.to_string() };
        self.inner.watches.settle(&inner.src.name, inner.id, None, outcome);
        let mailbox = self.inner.router.read().engine_address(&inner.src.name).cloned();
        let notice = Inbound::Undeliverable { id: inner.id, dst: inner.dst.clone(), reason: reason.to_string() };
        match mailbox {
            Some(mailbox) => {
                if mailbox.try_send(notice).is_err() {
                    tracing::warn!(engine = %inner.src.name, id = inner.id.0, %reason, "undeliverable notice dropped: mailbox full");
                }
            }
            None => {
                tracing::info!(engine = %inner.src.name, id = inner.id.0, %reason, "message undeliverable; its sender is gone")
            }
        }
    }

    /// Whether any sender waits to hear what became of its message.
    pub fn waits_for_outcomes(&self) -> bool {
        self.inner.watches.any()
    }

    /// A peer acknowledged a message this node sent: its sender hears of it
    /// if it waits.
    pub fn acknowledged(&self, message: &NodeMessage, by: NodeIdentity) {
        if let NodePayload::Engine(inner) = &message.payload {
            if inner.src.node == self.identity() {
                self.inner.watches.settle(&inner.src.name, inner.id, Some(by), Delivery::Acknowledged { by });
            }
        }
    }

    /// Marks a peer permanent (kept connected) or ephemeral.
    pub async fn set_permanence(&self, node: NodeIdentity, permanence: Permanence) -> Result<(), NodeError> {
        self.identity_request(|reply| IdentityCommand::SetPermanence(node, permanence, reply)).await??;
        Ok(())
    }
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    pub fn identity(&self) -> NodeIdentity {
        self.inner.identity
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// This node's current signed advert.
    pub fn advert(&self) -> Option<NodeAdvert> {
        self.inner.own_advert.read().clone()
    }

    /// Offers an advert to the identity store; it is kept only if its
    /// signature verifies and its version is newer.
    pub async fn offer_advert(&self, update: AdvertUpdate) -> Result<(), NodeError> {
        self.identity_request(|reply| IdentityCommand::Apply(update, reply)).await??;
        Ok(())
    }

    pub async fn offer_node_advert(&self, advert: NodeAdvert) -> Result<(), NodeError> {
        self.offer_advert(AdvertUpdate::Node(advert)).await
    }

    /// Makes the node of `advert` a permanent peer: kept connected and
    /// redialled. An advert of that node already held at the same or a
    /// newer version (it may have come over a connection already) is fine.
    pub async fn add_permanent_peer(&self, advert: NodeAdvert) -> Result<NodeIdentity, NodeError> {
        let peer = advert.id;
        match self.offer_node_advert(advert).await {
            Err(NodeError::Update(netmachine_engines::identity_store::UpdateError::Rule {
                source: netmachine_domain::RuleError::StaleVersion { current, offered },
                ..
            })) if current >= offered => {}
            other => other?,
        }
        self.set_permanence(peer, Permanence::Permanent).await?;
        Ok(peer)
    }

    pub async fn offer_topic_advert(&self, advert: TopicAdvert) -> Result<(), NodeError> {
        self.offer_advert(AdvertUpdate::Topic(advert)).await
    }

    pub async fn offer_domain_advert(&self, advert: DomainAdvert) -> Result<(), NodeError> {
        self.offer_advert(AdvertUpdate::Domain(advert)).await
    }

    /// Sets a node's trust; 0 bans it.
    pub async fn set_trust(&self, node: NodeIdentity, trust: Trust) -> Result<(), NodeError> {
        self.identity_request(|reply| IdentityCommand::SetTrust(node, trust, reply)).await??;
        Ok(())
    }

    pub async fn lookup(&self, key: RecordKey) -> Result<Option<IdentityRecord>, NodeError> {
        self.identity_request(|reply| IdentityCommand::Lookup(key, reply)).await
    }

    pub async fn identity_records(&self) -> Result<Vec<IdentityRecord>, NodeError> {
        self.identity_request(IdentityCommand::All).await
    }

    pub(crate) async fn subscribe_identity_updates(&self, engine: EngineName) -> Result<bool, NodeError> {
        self.identity_request(|reply| IdentityCommand::Subscribe(engine, reply)).await
    }

    pub(crate) fn unsubscribe_identity_updates(&self, engine: EngineName) {
        if let Some(tx) = self.inner.identity_tx.lock().as_ref() {
            let _ = tx.try_send(IdentityCommand::Unsubscribe(engine));
        }
    }

    async fn identity_request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> IdentityCommand,
    ) -> Result<T, NodeError> {
        let tx = self.inner.identity_tx.lock().clone().ok_or(NodeError::Stopped)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(command(reply_tx)).await.map_err(|_| NodeError::Stopped)?;
        reply_rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Routes a message that arrived from `peer` over an authenticated
    /// connection. A rejection that `disconnects_peer()` tells the
    /// transport to drop that peer.
    pub async fn deliver_inbound(&self, peer: NodeIdentity, message: NodeMessage) -> Result<(), InboundRejection> {
        let pending = self.deliver_inbound_now(peer, message)?;
        self.finish_inbound(pending).await;
        Ok(())
    }

    /// [`Node::deliver_inbound`] without waiting: what found a full mailbox
    /// is returned, for [`Node::finish_inbound`]. A connection's reader
    /// takes this path so that a message costs no future unless it has to
    /// wait.
    pub(crate) fn deliver_inbound_now(
        &self,
        peer: NodeIdentity,
        message: NodeMessage,
    ) -> Result<Pending, InboundRejection> {
        // Who to tell if the message has to be dropped here.
        let origin = match &message.payload {
            NodePayload::Engine(inner) => Some((inner.src.clone(), inner.id, inner.protocol.clone())),
            NodePayload::Relay(_) => None,
        };
        let routed = self.inner.router.read().route_inbound(peer, message, self.now(), &RingVerifier);
        match routed {
            Ok(routed) => {
                self.inner.counters.inbound_delivered.fetch_add(1, Ordering::Relaxed);
                match self.dispatch_now(routed) {
                    Ok(pending) => Ok(pending),
                    Err(_) => {
                        // A closed local mailbox means the engine left; the
                        // message has nowhere to go.
                        self.inner.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
                        Ok(Pending::default())
                    }
                }
            }
            Err(rejection) => {
                self.inner.counters.inbound_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%rejection, "inbound message dropped");
                if let Some((source, id, protocol)) = origin {
                    let notice =
                        self.inner.router.read().undeliverable_notice(&source, id, &protocol, &rejection, self.now());
                    self.send_control(notice.into_iter().collect());
                }
                Err(rejection)
            }
        }
    }

    /// Waits for room in the mailboxes an inbound message found full.
    pub(crate) async fn finish_inbound(&self, pending: Pending) {
        if self.wait_for_room(pending).await.is_err() {
            self.inner.counters.undeliverable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Routes a message from a local engine. What found a full local
    /// mailbox is returned, to be finished with [`Node::wait_for_room`]; a
    /// message costs no future unless it has to wait.
    pub(crate) fn route_local_now(&self, message: netmachine_domain::EngineMessage) -> Result<Pending, SendError> {
        let routed = self.inner.router.read().route_local(message, self.now(), &self.inner.keys)?;
        self.dispatch_now(routed)
    }

    /// Hands a routed message to its mailboxes, to the ones with room at
    /// once; the others are returned in order, to be waited for.
    fn dispatch_now(&self, routed: Routed<Mailbox>) -> Result<Pending, SendError> {
        let mut pending = Pending::default();
        match routed {
            Routed::Local { to, message } => {
                let dst = message.dst.clone();
                let inbound = match notice_of(&message) {
                    Some(notice) => {
                        self.settle_from_notice(&message, &notice);
                        notice
                    }
                    None => Inbound::Message(message),
                };
                match to.try_send(inbound) {
                    Ok(()) => {
                        self.inner.counters.local_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(inbound)) => {
                        pending.waiting.push(Waiting { to, inbound, dst: Some(dst) });
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(SendError::MailboxClosed { dst }),
                }
            }
            Routed::Topic { to, message, remote } => {
                for outbound in remote {
                    let subscriber = outbound.dst;
                    match self.inner.outbound.send(subscriber, outbound) {
                        Ok(()) => {
                            self.inner.counters.sent_remote.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => tracing::warn!(%subscriber, %err, "event not handed to the transport"),
                    }
                }
                // A full subscriber is waited for rather than skipped: a slow
                // subscriber slows the publisher (backpressure) rather than
                // losing events. One that left is skipped.
                for mailbox in to {
                    match mailbox.try_send(Inbound::Message(message.clone())) {
                        Ok(()) => {
                            self.inner.counters.local_delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(inbound)) => {
                            pending.waiting.push(Waiting { to: mailbox, inbound, dst: None });
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            Routed::Subscription { peer, topic, op } => {
                let applied = self.inner.router.write().apply_remote_subscription(peer, topic, op);
                match applied {
                    Ok(()) => tracing::info!(%peer, %topic, ?op, "remote subscription"),
                    Err(err) => tracing::info!(%peer, %topic, %err, "remote subscription refused"),
                }
            }
            Routed::Remote(outbound) => {
                let dst = match &outbound.payload {
                    NodePayload::Engine(inner) => inner.dst.clone(),
                    NodePayload::Relay(_) => netmachine_domain::DestinationIdentity::Node(outbound.dst),
                };
                self.inner
                    .outbound
                    .send(outbound.dst, outbound)
                    .map_err(|source| SendError::Route(RouteError::Outbound { dst, source }))?;
                self.inner.counters.sent_remote.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(pending)
    }

    /// A peer's router dropped a message an engine here sent: a sender
    /// waiting for it hears why.
    fn settle_from_notice(&self, message: &netmachine_domain::EngineMessage, notice: &Inbound) {
        let (netmachine_domain::DestinationIdentity::Engine(sender), Inbound::Undeliverable { id, reason, .. }) =
            (&message.dst, notice)
        else {
            return;
        };
        let reason = format!("{} at {}", reason, message.src.node);
        self.inner.watches.settle(&sender.name, *id, Some(message.src.node), Delivery::Undeliverable { reason });
    }

    /// Finishes the deliveries that found full mailboxes, in order.
    pub(crate) async fn wait_for_room(&self, pending: Pending) -> Result<(), SendError> {
        for Waiting { to, inbound, dst } in pending.waiting {
            match to.send(inbound).await {
                Ok(()) => {
                    self.inner.counters.local_delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    if let Some(dst) = dst {
                        return Err(SendError::MailboxClosed { dst });
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the node's own control messages (subscription requests). They
    /// go to the transport, which queues them until the peer is reachable.
    pub(crate) fn send_control(&self, messages: Vec<netmachine_domain::EngineMessage>) {
        let now = self.now();
        for message in messages {
            let dst = message.dst.clone();
            let routed = self.inner.router.read().route_local(message, now, &self.inner.keys);
            match routed.map_err(SendError::from).and_then(|routed| self.dispatch_now(routed)) {
                Ok(pending) if pending.is_empty() => {}
                Ok(_) => tracing::warn!(%dst, "control message for a local engine with a full mailbox dropped"),
                Err(err) => tracing::warn!(%dst, %err, "control message not sent"),
            }
        }
    }

    /// Renews this node's subscriptions with a peer that just connected (it
    /// may have restarted and forgotten them).
    pub fn resubscribe_with(&self, peer: NodeIdentity) {
        let requests = self.inner.router.read().resubscriptions_for(&peer, self.now());
        self.send_control(requests);
    }

    /// The adverts of the topics this node's engines created.
    pub fn local_topic_adverts(&self) -> Vec<TopicAdvert> {
        let router = self.inner.router.read();
        let keys = self.inner.topic_keys.lock();
        keys.keys().filter_map(|topic| router.topic_advert(topic).cloned()).collect()
    }

    /// Each topic this node knows, with its local and remote subscriber counts.
    pub fn topic_summaries(&self) -> Vec<(TopicIdentity, usize, usize)> {
        let router = self.inner.router.read();
        router
            .topic_summaries()
            .into_iter()
            .map(|(topic, local)| (topic, local, router.remote_subscribers(&topic).len()))
            .collect()
    }

    pub fn stats(&self) -> NodeStats {
        let router = self.inner.router.read();
        let c = &self.inner.counters;
        NodeStats {
            engines: router.engine_names().count(),
            topics: router.topic_count(),
            local_delivered: c.local_delivered.load(Ordering::Relaxed),
            sent_remote: c.sent_remote.load(Ordering::Relaxed),
            inbound_delivered: c.inbound_delivered.load(Ordering::Relaxed),
            inbound_rejected: c.inbound_rejected.load(Ordering::Relaxed),
            undeliverable: c.undeliverable.load(Ordering::Relaxed),
        }
    }

    /// Stops the identity store after it has written everything it
    /// accepted. Engines keep their handles but identity requests fail.
    pub async fn shutdown(&self) {
        drop(self.inner.identity_tx.lock().take());
        let thread = self.inner.identity_thread.lock().take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the identity store thread ended abnormally");
            }
        }
        tracing::info!(node = %self.identity(), "node stopped");
    }
}
