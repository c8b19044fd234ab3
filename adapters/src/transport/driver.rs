//! The transport driver: the connectors (QUIC, TLS over TCP, in-memory)
//! of a node, and one task per connection that moves frames between the
//! stream and the node core. What the frames mean (the handshake,
//! acknowledgements, repeats, adverts) the core decides; the driver dials
//! when the core asks, reads frames into it, and writes what it returns.

mod connection_task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use netmachine_domain::{NodeIdentity, TransportProtocol};
use netmachine_engines::transport::{PeerSummary, TransportConfig, TransportEvent};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use super::frame_memory::FrameLimits;
use super::stream::{Connector, SecuredStream};
use crate::codec::CborCodec;
use crate::runtime::{DialRequest, Node, NodeBuilder, WeakNode};

/// Counters for status displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounters {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_sent: u64,
    pub duplicates_dropped: u64,
    pub violations: u64,
}

/// One connection as a status display shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    pub peer: NodeIdentity,
    pub protocol: TransportProtocol,
    pub remote: Option<SocketAddr>,
}

struct Shared {
    local: NodeIdentity,
    config: TransportConfig,
    seed: u64,
    codec: CborCodec,
    /// What frames being read may hold over all connections, and how long
    /// one may take.
    frame_limits: FrameLimits,
    connectors: Mutex<HashMap<TransportProtocol, Arc<dyn Connector>>>,
    node: OnceLock<WeakNode>,
    /// Dials asked for before [`TransportDriver::attach`].
    dials: Mutex<Option<mpsc::UnboundedReceiver<DialRequest>>>,
}

/// The transport of a node: its connectors, and the connections to its
/// peers. Cheap to clone.
#[derive(Clone)]
pub struct TransportDriver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TransportDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportDriver").field("local", &self.shared.local).finish_non_exhaustive()
    }
}

impl TransportDriver {
    /// A driver for the node `local`, whose Transport engine will run with
    /// `config`, its randomness seeded with `seed`.
    pub fn new(local: NodeIdentity, config: TransportConfig, seed: u64) -> Self {
        Self::with_frame_limits(local, config, seed, FrameLimits::default())
    }

    /// As [`TransportDriver::new`], with the limits of frames being read.
    pub fn with_frame_limits(local: NodeIdentity, config: TransportConfig, seed: u64, limits: FrameLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                local,
                config,
                seed,
                codec: CborCodec::default(),
                frame_limits: limits,
                connectors: Mutex::new(HashMap::new()),
                node: OnceLock::new(),
                dials: Mutex::new(None),
            }),
        }
    }

    /// Adds a transport protocol (QUIC, TLS over TCP, in-memory).
    pub fn add_connector(&self, connector: Arc<dyn Connector>) {
        self.shared.connectors.lock().insert(connector.protocol(), connector);
    }

    pub fn local_addresses(&self) -> Vec<(TransportProtocol, SocketAddr)> {
        self.shared.connectors.lock().values().filter_map(|c| c.local_address().map(|a| (c.protocol(), a))).collect()
    }

    /// Starts serving: the dials the node asked for since it started, and
    /// the inbound streams of its listeners. Until then no connection
    /// opens, so engines registered before this miss no message.
    pub fn attach(&self, node: &Node, mut accepted: mpsc::Receiver<SecuredStream>) {
        if let Some(dials) = self.shared.dials.lock().take() {
            let shared = Arc::clone(&self.shared);
            let weak = node.downgrade();
            tokio::spawn(async move {
                let mut dials = dials;
                while let Some(dial) = dials.recv().await {
                    let Some(node) = weak.upgrade() else { return };
                    let connector = shared.connectors.lock().get(&dial.address.protocol).cloned();
                    let limits = shared.frame_limits.clone();
                    tokio::spawn(connection_task::outbound(node, shared.codec, limits, connector, dial));
                }
            });
        }
        let node = node.downgrade();
        let codec = self.shared.codec;
        let limits = self.shared.frame_limits.clone();
        tokio::spawn(async move {
            while let Some(stream) = accepted.recv().await {
                let Some(node) = node.upgrade() else { return };
                tokio::spawn(connection_task::inbound(node, codec, limits.clone(), stream));
            }
        });
    }

    /// The node this driver serves, once started.
    fn node(&self) -> Option<Node> {
        self.shared.node.get().and_then(WeakNode::upgrade)
    }

    /// Takes the dials the node's core asks for; they wait for
    /// [`TransportDriver::attach`].
    fn take_dials(&self, node: &Node) {
        let _ = self.shared.node.set(node.downgrade());
        let (tx, rx) = mpsc::unbounded_channel::<DialRequest>();
        node.inner.set_dialer(tx);
        *self.shared.dials.lock() = Some(rx);
    }

    pub fn local_identity(&self) -> NodeIdentity {
        self.shared.local
    }

    /// Connectivity events: connected, failed to connect, disconnected.
    pub fn events(&self) -> broadcast::Receiver<TransportEvent> {
        match self.node() {
            Some(node) => node.inner.events.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    pub fn counters(&self) -> TransportCounters {
        let Some(node) = self.node() else { return TransportCounters::default() };
        let wire = &node.inner.wire;
        let core = node.inner.read(|state| state.core.counters());
        TransportCounters {
            frames_sent: wire.frames_sent.load(Ordering::Relaxed),
            frames_received: wire.frames_received.load(Ordering::Relaxed),
            bytes_sent: wire.bytes_sent.load(Ordering::Relaxed),
            duplicates_dropped: core.repeats_dropped,
            violations: core.violations + wire.violations.load(Ordering::Relaxed),
        }
    }

    /// The established connections, one per connected peer.
    pub fn connections(&self) -> Vec<ConnectionSummary> {
        let Some(node) = self.node() else { return Vec::new() };
        let mut out: Vec<ConnectionSummary> = node.inner.read(|state| {
            state
                .core
                .transport()
                .peer_summaries()
                .into_iter()
                .filter(|p| p.connected)
                .filter_map(|p| {
                    let handle = state.conns.values().find(|c| c.peer == p.peer)?;
                    Some(ConnectionSummary { peer: p.peer, protocol: handle.protocol, remote: handle.remote })
                })
                .collect()
        });
        out.sort_by_key(|c| c.peer);
        out
    }

    pub fn peer_summaries(&self) -> Vec<PeerSummary> {
        self.node().map(|node| node.inner.read(|state| state.core.transport().peer_summaries())).unwrap_or_default()
    }

    /// Closes the connection to `peer`, if there is one: it was removed.
    pub fn disconnect(&self, peer: NodeIdentity) {
        if let Some(node) = self.node() {
            let ((), pending) = node.inner.with_core(|core, now| core.disconnect(peer, now));
            node.inner.finish_later(pending);
        }
    }

    /// Closes every connection; queued messages are given up.
    pub fn shutdown(&self) {
        if let Some(node) = self.node() {
            let ((), pending) = node.inner.with_core(|core, now| core.shutdown(now));
            node.inner.finish_later(pending);
        }
    }
}

impl NodeBuilder {
    /// Gives the node this transport: its Transport engine runs with the
    /// driver's settings, and the driver dials what the node asks for.
    pub fn transport(self, driver: &TransportDriver) -> Self {
        let driver = driver.clone();
        self.transport_config(driver.shared.config.clone())
            .seed(driver.shared.seed)
            .on_start(Box::new(move |node| driver.take_dials(node)))
    }
}
