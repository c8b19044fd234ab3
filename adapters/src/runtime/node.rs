//! A node: its core (Router, Transport, Identity Store) hosted on tokio,
//! with engines attached by name, and the embedding API around it.

use std::path::PathBuf;
use std::sync::Arc;

use netmachine_domain::{
    Advert, DomainAdvert, IdentityRecord, NodeAdvert, NodeAdvertBody, NodeIdentity, NodeMessage, Permanence, RecordKey,
    Timestamp, TopicAdvert, TopicIdentity, Trust, WeightedAddress,
};
use netmachine_engines::engine::ProtocolEngine;
use netmachine_engines::identity_store::{AdvertUpdate, IdentityStore, IdentityStoreConfig, UpdateError};
use netmachine_engines::log_budget::LogBudgetConfig;
use netmachine_engines::node_core::{AdvertRateConfig, CoreConfig, NodeCore};
use netmachine_engines::ports::Signer;
use netmachine_engines::transport::{Transport, TransportConfig};
use netmachine_engines::{InboundRejection, Router, RouterConfig};

use super::disk::DiskQueue;
use super::error::NodeError;
use super::host::{run_timers, Host};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{Ed25519Keys, RingVerifier};
use crate::random::{system_seed, SplitMix};
use crate::store::{RecordStore, RedbRecordStore, VolatileRecordStore};

/// The default capacity of an engine's mailbox.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;
/// The file, inside the data directory, that holds identity records.
pub const IDENTITY_DB_FILE: &str = "identities.redb";

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

/// Runs once the node has started, before `start` returns.
pub(crate) type OnStart = Box<dyn FnOnce(&Node) + Send>;

/// Builds a node.
pub struct NodeBuilder {
    keys: Option<Ed25519Keys>,
    data_dir: Option<PathBuf>,
    record_store: Option<Box<dyn RecordStore>>,
    clock: Option<Arc<dyn Clock>>,
    mailbox_capacity: usize,
    router: RouterConfig,
    identities: IdentityStoreConfig,
    transport: TransportConfig,
    adverts: AdvertRateConfig,
    logs: LogBudgetConfig,
    seed: Option<u64>,
    name: Option<String>,
    addresses: Vec<WeightedAddress>,
    on_start: Vec<OnStart>,
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
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            router: RouterConfig::default(),
            identities: IdentityStoreConfig::default(),
            transport: TransportConfig::default(),
            adverts: AdvertRateConfig::default(),
            logs: LogBudgetConfig::default(),
            seed: None,
            name: None,
            addresses: Vec::new(),
            on_start: Vec::new(),
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

    /// How fast each peer may send adverts before it is slowed, then
    /// disconnected.
    pub fn advert_rates(mut self, config: AdvertRateConfig) -> Self {
        self.adverts = config;
        self
    }

    /// How many log lines peers may cause.
    pub fn log_budget(mut self, config: LogBudgetConfig) -> Self {
        self.logs = config;
        self
    }

    /// How the node's Transport queues, retries and keeps connections.
    pub fn transport_config(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// Seeds the node's randomness (backoff jitter, its boot id); a fresh
    /// seed from the system when none is given.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// What this node's advert says: a display name and where to reach it.
    pub fn advertise(mut self, name: Option<String>, addresses: Vec<WeightedAddress>) -> Self {
        self.name = name;
        self.addresses = addresses;
        self
    }

    pub(crate) fn on_start(mut self, hook: OnStart) -> Self {
        self.on_start.push(hook);
        self
    }

    /// Starts the node: opens its records, builds its core, starts the
    /// disk writer and the timer, and signs a fresh advert of itself.
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
        let previous_version = store.node(&identity).and_then(|r| r.advert.as_ref()).map_or(0, |a| a.version);
        let seed = self.seed.unwrap_or_else(system_seed);
        // Each peer's repeat filter spans two windows: a peer that
        // reconnects resends at most one window.
        let config = CoreConfig {
            boot: boot_id(seed),
            repeat_window: self.transport.window * 2,
            seed,
            adverts: self.adverts,
            logs: self.logs,
            engines: Default::default(),
        };
        let transport = Transport::new(identity, self.transport, Box::new(SplitMix::new(seed)));
        let signer = Ed25519Keys::from_pkcs8(keys.pkcs8())?;
        let core = NodeCore::new(
            config,
            Router::new(identity, self.router),
            transport,
            store,
            Box::new(signer),
            Box::new(RingVerifier),
            clock.now(),
        );
        let topic_keys = super::topic_keys::TopicKeys::open(self.data_dir.clone());
        let host = Arc::new(Host::new(
            core,
            keys,
            Arc::clone(&clock),
            self.mailbox_capacity,
            DiskQueue::default(),
            topic_keys,
        ));
        host.start(disk).map_err(NodeError::Thread)?;
        tokio::spawn(run_timers(Arc::downgrade(&host)));
        let node = Node { inner: host };
        // Before the first input: what the core already asks for (dials
        // to the permanent peers on disk) needs the transport.
        for hook in self.on_start {
            hook(&node);
        }

        // The version rises across restarts: the clock in milliseconds, or
        // one more than the last version if the clock went backwards.
        let now = clock.now();
        let version = now.as_millis().max(previous_version.saturating_add(1));
        let body = NodeAdvertBody::new(identity, self.addresses, self.name.as_deref(), version, now)?;
        let sig = node.inner.keys.sign(&NodeAdvert::signing_bytes_of(&body));
        let advert = Advert::from_parts(body, sig);
        node.inner.change_identity(|core| core.set_own_advert(advert)).await?;
        tracing::info!(node = %identity, "node started");
        Ok(node)
    }
}

/// The id a node gives peers in its handshake: a new one on every start,
/// so a peer can tell a restart from a reconnection.
fn boot_id(seed: u64) -> u64 {
    seed.rotate_left(17) ^ 0x6e65_746d_6163_6869
}

/// A running node. Cheap to clone; every clone is the same node.
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) inner: Arc<Host>,
}

/// A node reference that does not keep the node alive (for parts the node
/// itself owns, like its transport).
#[derive(Clone, Debug)]
pub struct WeakNode(std::sync::Weak<Host>);

impl WeakNode {
    pub fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

impl Node {
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    pub fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    pub fn identity(&self) -> NodeIdentity {
        self.inner.identity
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn is_banned(&self, node: &NodeIdentity) -> bool {
        self.inner.read(|state| state.core.identities().is_banned(node))
    }

    /// This node's current signed advert.
    pub fn advert(&self) -> Option<NodeAdvert> {
        self.inner.read(|state| state.core.own_advert().cloned())
    }

    /// Offers an advert to the identity store; it is kept only if its
    /// signature verifies and its version is newer. Returns once it is on
    /// disk and in effect.
    pub async fn offer_advert(&self, update: AdvertUpdate) -> Result<(), NodeError> {
        let now = self.now();
        self.inner.change_identity(|core| core.offer_advert(update, now)).await
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
            Err(NodeError::Update(UpdateError::Rule {
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
        self.inner.change_identity(|core| core.set_trust(node, trust)).await
    }

    /// Marks a peer permanent (kept connected) or ephemeral.
    pub async fn set_permanence(&self, node: NodeIdentity, permanence: Permanence) -> Result<(), NodeError> {
        self.inner.change_identity(|core| core.set_permanence(node, permanence)).await
    }

    pub async fn lookup(&self, key: RecordKey) -> Result<Option<IdentityRecord>, NodeError> {
        self.running()?;
        Ok(self.inner.read(|state| state.core.identities().lookup(&key).cloned()))
    }

    pub async fn identity_records(&self) -> Result<Vec<IdentityRecord>, NodeError> {
        self.running()?;
        Ok(self.inner.read(|state| state.core.identities().records().cloned().collect()))
    }

    fn running(&self) -> Result<(), NodeError> {
        match self.inner.is_stopped() {
            true => Err(NodeError::Stopped),
            false => Ok(()),
        }
    }

    /// Hosts an engine of the embedder's own beside those of
    /// `netmachine_engines::registry`: messages to this node under its
    /// protocol go to it from now on, and its effects and timers are the
    /// node core's.
    pub async fn add_engine(&self, engine: Box<dyn ProtocolEngine>) -> Result<(), NodeError> {
        self.running()?;
        let (added, pending) = self.inner.with_core(|core, now| core.add_engine(engine, now));
        let _ = self.inner.finish(pending).await;
        Ok(added?)
    }

    /// Routes a message that arrived from `peer` over a channel that
    /// proved the peer's identity, outside the node's own transport.
    pub async fn deliver_inbound(&self, peer: NodeIdentity, message: NodeMessage) -> Result<(), InboundRejection> {
        let (routed, pending) = self.inner.with_core(|core, now| core.receive_from(peer, message, now));
        let _ = self.inner.finish(pending).await;
        routed
    }

    /// Each topic this node knows, with its local and remote subscriber counts.
    pub fn topic_summaries(&self) -> Vec<(TopicIdentity, usize, usize)> {
        self.inner.read(|state| {
            let router = state.core.router();
            router
                .topic_summaries()
                .into_iter()
                .map(|(topic, local)| (topic, local, router.remote_subscribers(&topic).len()))
                .collect()
        })
    }

    /// Reads the hosted engines' state (see
    /// [`netmachine_engines::node_core::NodeCore::engine`]).
    pub fn inspect_engines<T>(
        &self,
        f: impl FnOnce(&netmachine_engines::node_core::NodeCore<crate::runtime::Mailbox>) -> T,
    ) -> T {
        self.inner.read(|state| f(&state.core))
    }

    /// Whether this node holds the key of `topic` (it created the topic,
    /// in this life or, with a data directory, an earlier one).
    pub fn holds_topic_key(&self, topic: &TopicIdentity) -> bool {
        self.inner.topic_keys.holds(topic)
    }

    /// Signs a newer advert of a topic this node created, naming this node
    /// as its publisher, with `tags`, and hands it to the identity store.
    pub async fn readvertise_topic(&self, topic: TopicIdentity, tags: &[&str]) -> Result<TopicAdvert, NodeError> {
        let now = self.now();
        // The clock is the version, but a re-sign within the millisecond
        // of the advert held must still be newer than it.
        let held = match self.lookup(RecordKey::Topic(topic)).await? {
            Some(IdentityRecord::Topic(advert)) => advert.version,
            _ => 0,
        };
        let body = netmachine_domain::TopicAdvertBody::new(
            topic,
            vec![self.identity()],
            Vec::new(),
            tags.to_vec(),
            now.as_millis().max(held.saturating_add(1)),
            now,
        )?;
        let sig = self
            .inner
            .topic_keys
            .sign(&topic, &TopicAdvert::signing_bytes_of(&body))
            .ok_or(NodeError::NoTopicKey(topic))?;
        let advert: TopicAdvert = Advert::from_parts(body, sig);
        self.offer_topic_advert(advert.clone()).await?;
        Ok(advert)
    }

    pub fn stats(&self) -> NodeStats {
        self.inner.read(|state| {
            let router = state.core.router();
            let c = state.core.counters();
            NodeStats {
                engines: router.engine_names().count(),
                topics: router.topic_count(),
                local_delivered: c.local_delivered,
                sent_remote: c.sent_remote,
                inbound_delivered: c.inbound_delivered,
                inbound_rejected: c.inbound_rejected,
                undeliverable: c.undeliverable,
            }
        })
    }

    /// What the node core counts, with each engine's mailbox depth and the
    /// frames moved on the wire (see [`crate::metrics`]).
    pub fn metrics(&self) -> crate::metrics::NodeMetrics {
        let parked = self.inner.parked_by_engine();
        let (core, mailboxes) = self.inner.read(|state| {
            let router = state.core.router();
            let mut mailboxes: Vec<crate::metrics::MailboxDepth> = router
                .engine_names()
                .filter_map(|name| router.engine_address(name))
                .map(|mailbox| crate::metrics::MailboxDepth {
                    engine: mailbox.name.to_string(),
                    capacity: mailbox.tx.max_capacity() as u64,
                    queued: (mailbox.tx.max_capacity() - mailbox.tx.capacity()) as u64,
                    parked: 0,
                })
                .collect();
            mailboxes.sort_by(|a, b| a.engine.cmp(&b.engine));
            (state.core.metrics(), mailboxes)
        });
        let mut mailboxes = mailboxes;
        for (engine, count) in parked {
            if let Some(row) = mailboxes.iter_mut().find(|m| m.engine == engine.as_str()) {
                row.parked = count as u64;
            }
        }
        crate::metrics::NodeMetrics { core, mailboxes, wire: self.inner.wire_counts(), inbound: Default::default() }
    }

    /// Closes every connection and stops the identity store after it has
    /// written everything it accepted. Engines keep their handles, but
    /// identity changes fail.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
        tracing::info!(node = %self.identity(), "node stopped");
    }
}
