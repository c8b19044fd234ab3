//! Hosts the Transport engine on tokio. The engine sits behind a mutex that
//! every caller takes briefly: the Router's outbound port, connection tasks
//! reporting acknowledgements and closures, and the timer task, which
//! sleeps until the engine's next timeout. Effects that only touch channels
//! run under the lock, so messages keep the engine's order; effects that
//! reach other parts of the node run after it is released.
//!
//! Each connection runs one task ([`connection_task`]): a handshake, then a
//! reader and a writer that move frames and consult the connection
//! protocol of `netmachine_engines::transport::connection` for what they
//! mean. When a connection ends, its unacknowledged messages go back to
//! the engine to be sent again.

mod connection_task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use netmachine_domain::{Frame, IdentityRecord, NodeIdentity, NodeMessage, Permanence, TransportProtocol};
use netmachine_engines::engine::Timed;
use netmachine_engines::transport::{
    CloseReason, ConnId, RecentIds, Transport, TransportConfig, TransportEffect, TransportEvent,
};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::stream::{Connector, SecuredStream};
use crate::clock::Clock;
use crate::codec::CborCodec;
use crate::outbound::{OutboundError, OutboundTransport};
use crate::runtime::{Node, NodeBuilder, WeakNode};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the timer task sleeps without looking again (a clock that
/// jumps is noticed within this).
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);
/// How long a standalone acknowledgement waits for a message to ride on.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// Control frames (adverts) waiting for a connection's writer.
const CONTROL_QUEUE: usize = 256;
/// Bytes of frames gathered into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// What a connection's writer is asked to send.
enum Outgoing {
    Message(NodeMessage),
    Frame(Frame),
}

struct ConnHandle {
    tx: mpsc::Sender<Outgoing>,
    /// Adverts and other frames outside the message window, so they can
    /// never crowd out messages.
    control: mpsc::Sender<Frame>,
    close: Option<oneshot::Sender<CloseReason>>,
    /// Messages the engine sent to this connection that its channel could
    /// not take; they go back with the rest when it closes.
    orphans: Vec<NodeMessage>,
    peer: NodeIdentity,
    protocol: TransportProtocol,
    remote: Option<SocketAddr>,
}

struct DriverState {
    engine: Transport,
    conns: HashMap<ConnId, ConnHandle>,
    /// Each peer's repeat filter, shared by all its connections: a peer
    /// that reconnects before its old connection is found dead resends on
    /// the new one what the old one already delivered.
    recent: HashMap<NodeIdentity, Arc<Mutex<RecentIds>>>,
    /// The advertised addresses of every node the identity store holds an
    /// advert of (as many as its records). The engine forgets idle peers to
    /// keep its table small; a later message to one, an engine's, a pub/sub
    /// event or the node's own, finds its addresses here again.
    addresses: HashMap<NodeIdentity, Vec<netmachine_domain::WeightedAddress>>,
}

/// Counters for status displays.
#[derive(Debug, Default)]
pub struct TransportCounters {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub violations: AtomicU64,
}

/// One connection as a status display shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    pub peer: NodeIdentity,
    pub protocol: TransportProtocol,
    pub remote: Option<SocketAddr>,
}

struct Shared {
    runtime: tokio::runtime::Handle,
    local: NodeIdentity,
    boot: u64,
    clock: Arc<dyn Clock>,
    codec: CborCodec,
    window: usize,
    state: Mutex<DriverState>,
    connectors: Mutex<HashMap<TransportProtocol, Arc<dyn Connector>>>,
    node: OnceLock<WeakNode>,
    events: broadcast::Sender<TransportEvent>,
    room: Arc<Notify>,
    /// Woken when an input moves the engine's next timeout earlier.
    timer_wake: Notify,
    counters: TransportCounters,
}

/// The transport of a node: the outbound port for its Router, and the
/// connections to its peers.
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
    /// Must be called inside a tokio runtime: connections run on it.
    pub fn new(local: NodeIdentity, config: TransportConfig, clock: Arc<dyn Clock>, seed: u64) -> Self {
        let window = config.window;
        let engine = Transport::new(local, config, Box::new(crate::random::SplitMix::new(seed)));
        let (events, _) = broadcast::channel(1024);
        Self {
            shared: Arc::new(Shared {
                runtime: tokio::runtime::Handle::current(),
                local,
                boot: seed.rotate_left(17) ^ 0x6e65_746d_6163_6869,
                clock,
                codec: CborCodec::default(),
                window,
                state: Mutex::new(DriverState {
                    engine,
                    conns: HashMap::new(),
                    recent: HashMap::new(),
                    addresses: HashMap::new(),
                }),
                connectors: Mutex::new(HashMap::new()),
                node: OnceLock::new(),
                events,
                room: Arc::new(Notify::new()),
                timer_wake: Notify::new(),
                counters: TransportCounters::default(),
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

    /// Connects the driver to its node and starts accepting inbound
    /// streams and ticking the engine.
    pub fn attach(&self, node: &Node, mut accepted: mpsc::Receiver<SecuredStream>) {
        let _ = self.shared.node.set(node.downgrade());
        let shared = Arc::clone(&self.shared);
        self.shared.runtime.spawn(async move {
            while let Some(stream) = accepted.recv().await {
                tokio::spawn(connection_task::inbound_connection(Arc::clone(&shared), stream));
            }
        });
        let shared = Arc::downgrade(&self.shared);
        self.shared.runtime.spawn(run_timers(shared));
    }

    /// Signalled whenever acknowledgements free room in a window: a sender
    /// refused with a full queue waits on it.
    pub fn room(&self) -> Arc<Notify> {
        Arc::clone(&self.shared.room)
    }

    pub fn local_identity(&self) -> NodeIdentity {
        self.shared.local
    }

    pub fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.shared.events.subscribe()
    }

    pub fn counters(&self) -> &TransportCounters {
        &self.shared.counters
    }

    pub fn connections(&self) -> Vec<ConnectionSummary> {
        let state = self.shared.state.lock();
        let mut out: Vec<ConnectionSummary> = state
            .engine
            .peer_summaries()
            .into_iter()
            .filter(|p| p.connected)
            .filter_map(|p| {
                state.conns.values().find(|c| c.peer == p.peer).map(|c| ConnectionSummary {
                    peer: p.peer,
                    protocol: c.protocol,
                    remote: c.remote,
                })
            })
            .collect();
        out.sort_by_key(|c| c.peer);
        out
    }

    pub fn peer_summaries(&self) -> Vec<netmachine_engines::transport::PeerSummary> {
        self.shared.state.lock().engine.peer_summaries()
    }

    /// The addresses a peer advertises, from its NodeAdvert.
    pub fn set_addresses(&self, peer: NodeIdentity, addresses: Vec<netmachine_domain::WeightedAddress>) {
        let now = self.shared.clock.now();
        with_state(&self.shared, |state| {
            state.addresses.insert(peer, addresses.clone());
            state.engine.set_addresses(peer, addresses, now);
        });
    }

    pub fn set_permanent(&self, peer: NodeIdentity, permanent: bool) {
        let now = self.shared.clock.now();
        with_engine(&self.shared, |engine| engine.set_permanent(peer, permanent, now));
    }

    /// Closes the connection to `peer`, if there is one: it was removed.
    pub fn disconnect(&self, peer: NodeIdentity) {
        with_engine(&self.shared, |engine| engine.disconnect(peer, CloseReason::Removed));
    }

    /// `peer` was banned: its connection closes, what waits for it is given
    /// up, and it is neither dialled nor sent to again.
    pub fn ban(&self, peer: NodeIdentity) {
        with_state(&self.shared, |state| {
            state.recent.remove(&peer);
            state.engine.ban(peer);
        });
    }

    /// Sends a frame (an advert) to every connected peer, best effort: a
    /// peer whose control queue is full misses it.
    pub fn broadcast_frame(&self, frame: &Frame) {
        let state = self.shared.state.lock();
        for handle in state.conns.values() {
            let _ = handle.control.try_send(frame.clone());
        }
    }

    /// Closes every connection; queued messages are given up.
    pub fn shutdown(&self) {
        with_engine(&self.shared, Transport::shutdown);
    }
}

impl OutboundTransport for TransportDriver {
    fn send(&self, to: NodeIdentity, message: NodeMessage) -> Result<(), OutboundError> {
        let now = self.shared.clock.now();
        with_state(&self.shared, |state| {
            if !state.engine.knows(&to) {
                if let Some(addresses) = state.addresses.get(&to) {
                    state.engine.set_addresses(to, addresses.clone(), now);
                }
            }
            state.engine.send(to, message, now)
        })
    }
}

/// Feeds the engine under its lock, runs the effects that only touch
/// channels there, and the rest after the lock is released.
fn with_engine<T>(shared: &Arc<Shared>, input: impl FnOnce(&mut Transport) -> T) -> T {
    with_state(shared, |state| input(&mut state.engine))
}

/// [`with_engine`] for inputs that also read the driver's own tables.
fn with_state<T>(shared: &Arc<Shared>, input: impl FnOnce(&mut DriverState) -> T) -> T {
    let mut later = Vec::new();
    let result = {
        let mut state = shared.state.lock();
        let result = input(&mut state);
        if state.engine.take_sooner_timeout() {
            shared.timer_wake.notify_one();
        }
        while let Some(effect) = state.engine.poll_effect() {
            match effect {
                TransportEffect::Transmit { conn, message } => {
                    if let Some(handle) = state.conns.get_mut(&conn) {
                        if let Err(err) = handle.tx.try_send(Outgoing::Message(message)) {
                            let message = match err {
                                mpsc::error::TrySendError::Full(Outgoing::Message(m))
                                | mpsc::error::TrySendError::Closed(Outgoing::Message(m)) => Some(m),
                                _ => None,
                            };
                            handle.orphans.extend(message);
                        }
                    }
                }
                // A forgotten peer has nothing in flight: its repeat filter goes too.
                TransportEffect::Forgotten { peer } => {
                    state.recent.remove(&peer);
                }
                TransportEffect::Close { conn, reason } => {
                    if let Some(close) = state.conns.get_mut(&conn).and_then(|h| h.close.take()) {
                        let _ = close.send(reason);
                    }
                }
                other => later.push(other),
            }
        }
        result
    };
    for effect in later {
        match effect {
            TransportEffect::Dial { attempt, peer, address } => {
                shared.runtime.spawn(connection_task::outbound_connection(Arc::clone(shared), attempt, peer, address));
            }
            TransportEffect::Event(event) => {
                match &event {
                    TransportEvent::NodeConnected { peer, direction } => {
                        tracing::info!(%peer, ?direction, "NodeConnected")
                    }
                    TransportEvent::NodeConnectFailed { peer, reason } => {
                        tracing::info!(%peer, %reason, "NodeConnectFailed")
                    }
                    TransportEvent::NodeDisconnected { peer, reason } => {
                        tracing::info!(%peer, %reason, "NodeDisconnected")
                    }
                }
                let _ = shared.events.send(event);
            }
            TransportEffect::GiveUp { message, reason } => {
                // Told from a task of its own: the caller may hold the
                // Router's lock (a send that raced its own expiry), and the
                // notice needs that lock to find the sender's mailbox.
                if let Some(node) = shared.node.get().and_then(WeakNode::upgrade) {
                    shared.runtime.spawn(async move { node.notify_undeliverable(&message, &reason.to_string()) });
                }
            }
            TransportEffect::Transmit { .. } | TransportEffect::Close { .. } | TransportEffect::Forgotten { .. } => {}
        }
    }
    result
}

/// Sleeps until the engine's next timeout (or an input brings it closer),
/// then fires what is due. Ends when the driver is gone.
async fn run_timers(shared: std::sync::Weak<Shared>) {
    loop {
        let (wait, wake) = {
            let Some(shared) = shared.upgrade() else { return };
            let now = shared.clock.now();
            let due = shared.state.lock().engine.poll_timeout();
            let wait = due.map_or(MAX_TIMER_SLEEP, |due| {
                Duration::from_millis(due.as_millis().saturating_sub(now.as_millis())).min(MAX_TIMER_SLEEP)
            });
            (wait, Arc::clone(&shared))
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.timer_wake.notified() => continue,
        }
        drop(wake);
        let Some(shared) = shared.upgrade() else { return };
        let now = shared.clock.now();
        with_engine(&shared, |engine| engine.handle_timeout(now));
    }
}

fn node_of(shared: &Shared) -> Option<Node> {
    shared.node.get().and_then(WeakNode::upgrade)
}

impl NodeBuilder {
    /// Connects the node to a transport: the Router sends through it, the
    /// transport learns peers' addresses and permanence from the identity
    /// store, and senders refused with a full queue wait for its room.
    pub fn transport(self, driver: &TransportDriver) -> Self {
        let builder = self.outbound(Arc::new(driver.clone())).outbound_room(driver.room());
        let driver = driver.clone();
        builder.on_identity_record(Box::new(move |record| {
            if let IdentityRecord::Node(node) = record {
                if node.id == driver.local_identity() {
                    return;
                }
                if let Some(advert) = &node.advert {
                    driver.set_addresses(node.id, advert.addrs.to_vec());
                }
                driver.set_permanent(node.id, node.permanence == Permanence::Permanent && !node.trust.is_banned());
                if node.trust.is_banned() {
                    driver.ban(node.id);
                }
            }
            // Topic adverts spread to every connected peer; a peer that
            // already holds this version refuses it, so the spread ends.
            if let IdentityRecord::Topic(advert) = record {
                driver.broadcast_frame(&netmachine_domain::Frame::TopicAdvert(advert.clone()));
            }
        }))
    }
}
