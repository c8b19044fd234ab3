//! A node with a transport: binds the listeners first (so an address given
//! with port 0 is advertised with the port the system chose), then starts
//! the node with an advert of the bound addresses, then attaches the
//! transport driver.

use netmachine_engines::identity_store::IdentityStoreConfig;
use netmachine_engines::log_budget::LogBudgetConfig;
use netmachine_engines::node_core::AdvertRateConfig;
use std::path::PathBuf;
use std::sync::Arc;

use netmachine_domain::{TransportAddress, TransportProtocol, WeightedAddress};
use netmachine_engines::transport::TransportConfig;
use netmachine_engines::RouterConfig;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::crypto::Ed25519Keys;
use crate::random::system_seed;
use crate::runtime::{Node, NodeError, DEFAULT_MAILBOX_CAPACITY};
use crate::transport::identity_tls::TlsSetupError;
use crate::transport::{
    InboundFailures, MemoryConnector, MemoryNetwork, QuicConnector, QuicTuning, RecordLayer, TlsConfigs,
    TlsTcpConnector, TransportDriver,
};

/// Inbound streams waiting for their handshake.
const ACCEPT_QUEUE: usize = 256;

#[derive(Debug, Error)]
pub enum NetworkedNodeError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: TransportAddress, reason: String },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// One address to listen on, and what to advertise for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    pub bind: TransportAddress,
    /// The address peers should dial, when it differs from the bound one
    /// (a wildcard bind, NAT). Without it the bound address is advertised.
    pub advertise: Option<TransportAddress>,
    pub weight: u8,
}

impl From<WeightedAddress> for ListenSpec {
    fn from(w: WeightedAddress) -> Self {
        Self { bind: w.address, advertise: None, weight: w.weight }
    }
}

/// Everything a networked node is made from.
#[derive(Debug)]
pub struct NetworkedNodeConfig {
    pub keys: Ed25519Keys,
    /// Records survive restarts here; `None` keeps them in memory.
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    /// Addresses to listen on, with the weight to advertise each at.
    pub listen: Vec<ListenSpec>,
    pub mailbox_capacity: usize,
    pub router: RouterConfig,
    pub transport: TransportConfig,
    /// QUIC's packet size, flow-control windows and send buffers.
    pub quic: QuicTuning,
    /// The crypto library and cipher-suite order protecting connections
    /// (QUIC packets and TLS records); identities are on ring regardless.
    pub record: RecordLayer,
    /// Bytes that frames being read may hold, over all connections
    /// (64 MiB by default).
    pub frame_memory: usize,
    /// How long a frame may take to arrive once begun (30 s by default).
    pub frame_deadline: std::time::Duration,
    /// The identity store's budgets, among them the cache of records
    /// peers send unasked.
    pub identities: IdentityStoreConfig,
    /// How fast each peer may send adverts.
    pub adverts: AdvertRateConfig,
    /// Log lines peers may cause.
    pub logs: LogBudgetConfig,
    /// Use this in-memory network instead of sockets (tests).
    pub memory: Option<MemoryNetwork>,
}

impl NetworkedNodeConfig {
    pub fn new(keys: Ed25519Keys, listen: Vec<WeightedAddress>) -> Self {
        Self {
            keys,
            data_dir: None,
            name: None,
            listen: listen.into_iter().map(ListenSpec::from).collect(),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            router: RouterConfig::default(),
            transport: TransportConfig::default(),
            quic: QuicTuning::default(),
            record: RecordLayer::default(),
            frame_memory: crate::transport::frame_memory::DEFAULT_FRAME_MEMORY,
            frame_deadline: crate::transport::framing::FRAME_DEADLINE,
            identities: IdentityStoreConfig::default(),
            adverts: AdvertRateConfig::default(),
            logs: LogBudgetConfig::default(),
            memory: None,
        }
    }
}

/// A running node and its transport.
#[derive(Debug, Clone)]
pub struct NetworkedNode {
    pub node: Node,
    pub transport: TransportDriver,
    /// Inbound connections its listeners dropped before the node heard of
    /// them.
    pub inbound_failures: Arc<InboundFailures>,
}

impl NetworkedNode {
    /// Must be called inside a tokio runtime.
    pub async fn start(config: NetworkedNodeConfig) -> Result<Self, NetworkedNodeError> {
        Ok(Self::start_with(config, |_| Ok(())).await?.0)
    }

    /// Like [`start`](Self::start), running `prepare` on the node before any
    /// inbound connection is served, e.g. to register engines that must not
    /// miss the first messages.
    pub async fn start_with<T>(
        config: NetworkedNodeConfig,
        prepare: impl FnOnce(&Node) -> Result<T, NodeError>,
    ) -> Result<(Self, T), NetworkedNodeError> {
        let identity = config.keys.node_identity();
        let limits = crate::transport::FrameLimits {
            memory: crate::transport::FrameMemory::new(config.frame_memory),
            deadline: config.frame_deadline,
        };
        let driver = TransportDriver::with_frame_limits(identity, config.transport, system_seed(), limits);
        let (accepted_tx, accepted_rx) = mpsc::channel(ACCEPT_QUEUE);
        let tls = TlsConfigs::with_record_layer(&config.keys, config.record)?;
        let failures = Arc::new(InboundFailures::default());
        let mut advertised = Vec::new();
        for entry in &config.listen {
            let address = entry.bind;
            let listen_error = |reason: String| NetworkedNodeError::Listen { address, reason };
            let bound = match (&config.memory, address.protocol) {
                (Some(network), protocol) => {
                    let connector =
                        MemoryConnector::bind(network, address.socket, identity, protocol, accepted_tx.clone());
                    driver.add_connector(Arc::new(connector));
                    address.socket
                }
                (None, TransportProtocol::Quic) => {
                    let connector = QuicConnector::bind_counting(
                        address.socket,
                        tls.clone(),
                        config.quic,
                        accepted_tx.clone(),
                        Arc::clone(&failures),
                    )
                    .map_err(|e| listen_error(e.to_string()))?;
                    let bound = crate::transport::Connector::local_address(&connector).unwrap_or(address.socket);
                    driver.add_connector(Arc::new(connector));
                    bound
                }
                (None, TransportProtocol::TlsTcp) => {
                    let connector = TlsTcpConnector::bind_counting(
                        address.socket,
                        tls.clone(),
                        accepted_tx.clone(),
                        Arc::clone(&failures),
                    )
                    .await
                    .map_err(|e| listen_error(e.to_string()))?;
                    let bound = crate::transport::Connector::local_address(&connector).unwrap_or(address.socket);
                    driver.add_connector(Arc::new(connector));
                    bound
                }
            };
            advertised.push(WeightedAddress {
                address: entry.advertise.unwrap_or(TransportAddress::new(address.protocol, bound)),
                weight: entry.weight,
            });
        }
        let mut builder = Node::builder()
            .keys(config.keys)
            .mailbox_capacity(config.mailbox_capacity)
            .router_config(config.router)
            .identity_store_config(config.identities)
            .advert_rates(config.adverts)
            .log_budget(config.logs)
            .advertise(config.name, advertised)
            .transport(&driver);
        if let Some(dir) = config.data_dir {
            builder = builder.data_dir(dir);
        }
        let node = builder.start().await?;
        let prepared = prepare(&node)?;
        driver.attach(&node, accepted_rx);
        Ok((Self { node, transport: driver, inbound_failures: failures }, prepared))
    }

    /// The node's metrics, with the inbound connections its listeners
    /// dropped before the node heard of them.
    pub fn metrics(&self) -> crate::metrics::NodeMetrics {
        crate::metrics::NodeMetrics { inbound: self.inbound_failures.counts(), ..self.node.metrics() }
    }

    /// Closes the connections, then stops the node's stores.
    pub async fn shutdown(&self) {
        self.transport.shutdown();
        self.node.shutdown().await;
    }
}
