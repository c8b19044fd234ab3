//! A node as the binary runs it: the networked node, its `inbox` engine,
//! the peers from the configuration, and the control API.

use std::net::SocketAddr;
use std::path::PathBuf;

use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::domains::{DomainFiles, Domains};
use netmachine_adapters::networked::{NetworkedNode, NetworkedNodeConfig, NetworkedNodeError};
use netmachine_adapters::runtime::NodeError;
use netmachine_adapters::text_forms::node_advert_from_text;
use netmachine_adapters::transport::QuicCongestion;
use netmachine_domain::Permanence;
use netmachine_engines::transport::TransportConfig;
use netmachine_engines::RouterConfig;
use thiserror::Error;

use crate::config::Config;
use crate::control_server::{ControlServer, ControlServerError};
use crate::inbox::{Inbox, INBOX_ENGINE};

#[derive(Debug, Error)]
pub enum HostError {
    #[error(transparent)]
    Start(#[from] NetworkedNodeError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Control(#[from] ControlServerError),
    #[error(transparent)]
    Metrics(#[from] netmachine_adapters::metrics::http::MetricsServerError),
    #[error(transparent)]
    Domains(#[from] netmachine_adapters::domains::DomainError),
    #[error("peer {index} in the config: {reason}")]
    Peer { index: usize, reason: String },
}

/// A running node with everything the binary adds to it.
#[derive(Debug)]
pub struct Host {
    pub networked: NetworkedNode,
    pub control_socket: PathBuf,
    /// Where `/metrics` is served, when it is.
    pub metrics_address: Option<SocketAddr>,
    /// The node's domains, for the control API and devnet.
    pub domains: Domains,
    control: ControlServer,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

/// The `[limits]` keys the transport table does not take.
fn apply_limits(limits: &crate::config::Limits, node: &mut NetworkedNodeConfig) {
    const MIB: usize = 1024 * 1024;
    if let Some(mib) = limits.frame_memory_mib {
        node.frame_memory = mib * MIB;
    }
    if let Some(secs) = limits.frame_deadline_secs {
        node.frame_deadline = std::time::Duration::from_secs(secs);
    }
    if let Some(mib) = limits.quic_receive_window_mib {
        node.quic.receive_window = mib.saturating_mul(MIB as u32);
    }
    if let Some(mib) = limits.quic_send_buffer_mib {
        node.quic.send_buffer = mib.saturating_mul(MIB as u32);
    }
    let adverts = &mut node.adverts;
    adverts.burst = limits.advert_burst.unwrap_or(adverts.burst);
    adverts.per_second = limits.adverts_per_second.unwrap_or(adverts.per_second);
    adverts.refusals_to_disconnect = limits.advert_refusals_to_disconnect.unwrap_or(adverts.refusals_to_disconnect);
    let cache = &mut node.identities.cache;
    for (i, records) in
        [limits.cached_node_records, limits.cached_topic_records, limits.cached_domain_records].into_iter().enumerate()
    {
        cache.records[i] = records.unwrap_or(cache.records[i]);
    }
    for (i, mib) in [limits.cached_node_mib, limits.cached_topic_mib, limits.cached_domain_mib].into_iter().enumerate()
    {
        cache.bytes[i] = mib.map_or(cache.bytes[i], |mib| mib * MIB);
    }
    cache.per_source = limits.cached_records_per_peer.unwrap_or(cache.per_source);
    node.logs.per_peer = limits.log_lines_per_peer.unwrap_or(node.logs.per_peer);
    node.logs.total = limits.log_lines_total.unwrap_or(node.logs.total);
}

impl Host {
    /// Starts a node. `data_dir` of `None` keeps records in memory (devnet).
    pub async fn start(config: &Config, keys: Ed25519Keys, data_dir: Option<PathBuf>) -> Result<Self, HostError> {
        let mut node_config = NetworkedNodeConfig::new(keys, Vec::new());
        node_config.listen = config.listen_specs();
        let networked_data_dir = data_dir.clone();
        node_config.data_dir = data_dir;
        node_config.name = config.name.clone();
        node_config.mailbox_capacity = config.mailbox_capacity();
        node_config.quic.max_mtu = config.max_mtu.unwrap_or(1500);
        node_config.quic.congestion = match config.quic_congestion {
            Some(crate::config::CongestionName::Cubic) => QuicCongestion::Cubic,
            Some(crate::config::CongestionName::Bbr) => QuicCongestion::Bbr,
            None => QuicCongestion::default(),
        };
        node_config.router = RouterConfig { sign_remote: config.sign_all.unwrap_or(false), ..RouterConfig::default() };
        let defaults = TransportConfig::default();
        let limits = &config.limits;
        node_config.transport = TransportConfig {
            max_connections: config.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: config.max_connections_per_ip.unwrap_or(defaults.max_connections_per_ip),
            max_peers: limits.max_peers.unwrap_or(defaults.max_peers),
            max_peers_per_ip: limits.max_peers_per_ip.unwrap_or(defaults.max_peers_per_ip),
            ..defaults
        };
        apply_limits(limits, &mut node_config);
        let inbox = Inbox::default();
        // The inbox is registered before any peer can connect, so nothing
        // sent to it while the node was down is refused on arrival.
        let (networked, engine) =
            NetworkedNode::start_with(node_config, |node| node.register_engine(INBOX_ENGINE)).await?;
        inbox.spawn(engine);
        for (index, text) in config.peers.iter().enumerate() {
            let advert =
                node_advert_from_text(text).map_err(|e| HostError::Peer { index: index + 1, reason: e.to_string() })?;
            let peer = advert.id;
            if let Err(err) = networked.node.offer_node_advert(advert).await {
                // A stale copy (the store already holds this or a newer
                // advert) is fine; anything else is worth a warning.
                tracing::info!(%peer, %err, "peer advert from the config not taken");
            }
            networked.node.set_permanence(peer, Permanence::Permanent).await?;
        }
        let (metrics_address, metrics) = match config.metrics {
            Some(address) => {
                let listener = netmachine_adapters::metrics::http::bind(address).await?;
                let bound = listener.local_addr().unwrap_or(address);
                let node = networked.node.downgrade();
                let failures = std::sync::Arc::clone(&networked.inbound_failures);
                let source: netmachine_adapters::metrics::http::MetricsSource = std::sync::Arc::new(move || {
                    let metrics = node.upgrade()?.metrics();
                    Some(netmachine_adapters::metrics::NodeMetrics { inbound: failures.counts(), ..metrics })
                });
                tracing::info!(address = %bound, "serving metrics at /metrics");
                (Some(bound), Some(tokio::spawn(netmachine_adapters::metrics::http::serve(listener, source))))
            }
            None => (None, None),
        };
        let files = networked_data_dir.as_deref().map(DomainFiles::new);
        let domains = Domains::start(&networked.node, files).await?;
        let control_socket = config.control_socket();
        let control =
            ControlServer::start(&control_socket, networked.clone(), inbox, metrics_address, domains.clone()).await?;
        Ok(Self { networked, control_socket, metrics_address, domains, control, metrics })
    }

    pub async fn shutdown(self) {
        if let Some(metrics) = self.metrics {
            metrics.abort();
        }
        self.control.stop();
        self.networked.shutdown().await;
    }
}
