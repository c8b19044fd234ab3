//! Hosts the Transport engine on tokio. The engine sits behind a mutex that
//! every caller takes briefly: the Router's outbound port, connection tasks
//! reporting acknowledgements and closures, and a ticker. Effects that only
//! touch channels run under the lock, so messages keep the engine's order;
//! effects that reach other parts of the node run after it is released.
//!
//! Each connection runs one task: a handshake (versions, boot ids, advert
//! versions, admission), then a reader and a writer. The writer batches
//! frames and keeps every sent message until the peer acknowledges it; the
//! reader delivers through the Router, drops repeats, and acknowledges in
//! batches. When a connection ends, its unacknowledged messages go back to
//! the engine to be sent again.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use netmachine_domain::{
    Ack, Frame, HandshakeStatus, Hello, HelloReply, NodeAdvert, NodeIdentity, NodeMessage, NodePayload, Timestamp,
    TransportProtocol,
};
use netmachine_engines::engine::Timed;

use netmachine_engines::transport::{
    message_cost, CloseReason, ConnId, ConnectFailure, RecentIds, Transport, TransportConfig, TransportEffect,
    TransportEvent,
};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::framing::{encode_channel_frame_into, encode_frame_into, FrameReader, FramingError};
use super::stream::{BoxWriter, Connector, DialError, SecuredStream};
use crate::clock::Clock;
use crate::codec::{CborCodec, ChannelEnds};
use crate::outbound::{OutboundError, OutboundTransport};
use crate::runtime::{Node, Pending, WeakNode};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the timer task sleeps without looking again (a clock that
/// jumps is noticed within this).
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);
/// How long a standalone acknowledgement waits for a message to ride on.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// Acknowledge at least every this many messages.
const ACK_EVERY: u64 = 64;
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
                tokio::spawn(inbound_connection(Arc::clone(&shared), stream));
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
        with_engine(&self.shared, |engine| engine.ban(peer));
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
        let due_before = state.engine.poll_timeout();
        let result = input(&mut state);
        if state.engine.poll_timeout().is_some_and(|due| due_before.is_none_or(|before| due < before)) {
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
                shared.runtime.spawn(outbound_connection(Arc::clone(shared), attempt, peer, address));
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
            TransportEffect::Transmit { .. } | TransportEffect::Close { .. } => {}
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
        // A forgotten peer has nothing in flight: its repeat filter goes too.
        let mut state = shared.state.lock();
        let DriverState { engine, recent, .. } = &mut *state;
        recent.retain(|peer, _| engine.knows(peer));
    }
}

fn node_of(shared: &Shared) -> Option<Node> {
    shared.node.get().and_then(WeakNode::upgrade)
}

async fn write_frame(shared: &Shared, writer: &mut BoxWriter, frame: &Frame) -> Result<(), FramingError> {
    let mut buf = Vec::with_capacity(256);
    encode_frame_into(&shared.codec, frame, &mut buf)?;
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

async fn read_handshake_frame(reader: &mut FrameReader<super::stream::BoxReader>) -> Result<Frame, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next_frame()).await {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => Err("the peer closed during the handshake".into()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("the handshake timed out".into()),
    }
}

/// This node's advert version, and the version it holds of `peer`'s.
async fn advert_versions(node: &Node, peer: NodeIdentity) -> (u64, u64) {
    let own = node.advert().map_or(0, |a| a.version);
    let held = match node.lookup(netmachine_domain::RecordKey::Node(peer)).await {
        Ok(Some(netmachine_domain::IdentityRecord::Node(r))) => r.advert.map_or(0, |a| a.version),
        _ => 0,
    };
    (own, held)
}

async fn outbound_connection(
    shared: Arc<Shared>,
    attempt: ConnId,
    peer: NodeIdentity,
    address: netmachine_domain::TransportAddress,
) {
    let fail = |failure: ConnectFailure| {
        let now = shared.clock.now();
        with_engine(&shared, |engine| engine.dial_failed(attempt, failure, Some(address), now));
    };
    let connector = shared.connectors.lock().get(&address.protocol).cloned();
    let Some(connector) = connector else {
        fail(ConnectFailure::Unreachable(DialError::Unsupported(address.protocol).to_string()));
        return;
    };
    let Some(node) = node_of(&shared) else { return };
    let started = std::time::Instant::now();
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, connector.dial(address.socket, peer)).await {
        Ok(Ok(stream)) => {
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            with_engine(&shared, |engine| engine.record_rtt(peer, address, micros));
            stream
        }
        Ok(Err(DialError::WrongIdentity { presented })) => {
            tracing::warn!(%peer, %presented, %address, "the peer at this address proved another identity");
            fail(ConnectFailure::WrongIdentity);
            return;
        }
        Ok(Err(err)) => {
            fail(ConnectFailure::Unreachable(err.to_string()));
            return;
        }
        Err(_) => {
            fail(ConnectFailure::Unreachable(format!("dialling {address} timed out")));
            return;
        }
    };
    let SecuredStream { reader, mut writer, keepalive, protocol, remote, .. } = stream;
    let mut reader = FrameReader::new(reader, shared.codec);
    let (own_version, held_version) = advert_versions(&node, peer).await;
    let engine_versions = shared.state.lock().engine.config().versions;
    let hello = Hello {
        versions: engine_versions,
        boot: shared.boot,
        own_advert_version: own_version,
        held_advert_version_of_peer: held_version,
    };
    if let Err(err) = write_frame(&shared, &mut writer, &Frame::Hello(hello)).await {
        fail(ConnectFailure::Unreachable(err.to_string()));
        return;
    }
    let reply = match read_handshake_frame(&mut reader).await {
        Ok(Frame::HelloReply(reply)) => reply,
        Ok(other) => {
            fail(ConnectFailure::Unreachable(format!("expected a hello reply, got {:?}", other.kind())));
            return;
        }
        Err(err) => {
            fail(ConnectFailure::Unreachable(err));
            return;
        }
    };
    if reply.status != HandshakeStatus::Ok {
        fail(ConnectFailure::Refused(reply.status));
        return;
    }
    if engine_versions.best_common(reply.versions).is_none() {
        fail(ConnectFailure::Refused(HandshakeStatus::Incompatible));
        return;
    }
    let own_advert = (reply.held_advert_version_of_peer < own_version).then(|| node.advert()).flatten();
    run_established(
        shared,
        node,
        attempt,
        peer,
        reader,
        writer,
        keepalive,
        protocol,
        remote,
        own_advert,
        |engine, now| engine.dial_succeeded(attempt, reply.boot, now),
    )
    .await;
}

async fn inbound_connection(shared: Arc<Shared>, stream: SecuredStream) {
    let SecuredStream { peer, reader, mut writer, keepalive, protocol, remote } = stream;
    let Some(node) = node_of(&shared) else { return };
    let mut reader = FrameReader::new(reader, shared.codec);
    let hello = match read_handshake_frame(&mut reader).await {
        Ok(Frame::Hello(hello)) => hello,
        Ok(other) => {
            shared.counters.violations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, kind = ?other.kind(), "refused: the first frame was not a hello");
            return;
        }
        Err(err) => {
            shared.counters.violations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, %err, "refused: no valid hello");
            return;
        }
    };
    let banned = node.is_banned(&peer);
    let now = shared.clock.now();
    let (conn, status, versions) = {
        let mut state = shared.state.lock();
        let (conn, status) =
            state.engine.admit_inbound(peer, remote.map(|r| r.ip()), hello.versions, hello.boot, banned, now);
        (conn, status, state.engine.config().versions)
    };
    let (own_version, held_version) = advert_versions(&node, peer).await;
    let reply = HelloReply {
        status,
        versions,
        boot: shared.boot,
        own_advert_version: own_version,
        held_advert_version_of_peer: held_version,
    };
    let written = write_frame(&shared, &mut writer, &Frame::HelloReply(reply)).await;
    if status != HandshakeStatus::Ok || written.is_err() {
        tracing::info!(%peer, ?status, "inbound connection refused");
        let now = shared.clock.now();
        if status == HandshakeStatus::Ok {
            with_engine(&shared, |engine| {
                engine.closed(conn, CloseReason::Lost("handshake failed".into()), Vec::new(), now)
            });
        }
        let _ = writer.shutdown().await;
        return;
    }
    let own_advert = (hello.held_advert_version_of_peer < own_version).then(|| node.advert()).flatten();
    run_established(
        shared,
        node,
        conn,
        peer,
        reader,
        writer,
        keepalive,
        protocol,
        remote,
        own_advert,
        |engine, now| engine.inbound_established(conn, now),
    )
    .await;
}

/// Registers a handshaken connection with the engine, runs it until it
/// ends, and returns its unacknowledged messages to the engine.
#[allow(clippy::too_many_arguments)]
async fn run_established(
    shared: Arc<Shared>,
    node: Node,
    conn: ConnId,
    peer: NodeIdentity,
    mut reader: FrameReader<super::stream::BoxReader>,
    writer: BoxWriter,
    keepalive: Option<Box<dyn Send + Sync>>,
    protocol: TransportProtocol,
    remote: Option<SocketAddr>,
    own_advert: Option<NodeAdvert>,
    establish: impl FnOnce(&mut Transport, Timestamp),
) {
    // Both ends are proven now: messages may travel in the channel form.
    let ends = ChannelEnds { local: shared.local, peer };
    reader.enter_channel(ends);
    let (tx, rx) = mpsc::channel(shared.window + 64);
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (close_tx, close_rx) = oneshot::channel();
    if let Some(advert) = own_advert {
        let _ = control.try_send(Frame::NodeAdvert(advert));
    }
    for advert in node.local_topic_adverts() {
        let _ = control.try_send(Frame::TopicAdvert(advert));
    }
    let recent = {
        let mut state = shared.state.lock();
        state.conns.insert(
            conn,
            ConnHandle { tx, control, close: Some(close_tx), orphans: Vec::new(), peer, protocol, remote },
        );
        let window = shared.window;
        Arc::clone(state.recent.entry(peer).or_insert_with(|| Arc::new(Mutex::new(RecentIds::new(window * 2)))))
    };
    let now = shared.clock.now();
    with_engine(&shared, |engine| establish(engine, now));

    let io = ConnectionIo { shared: Arc::clone(&shared), node, conn, ends, unacked: Mutex::new(Unacked::default()) };
    let (reason, rx) = io.run(reader, writer, rx, control_rx, close_rx, &recent).await;
    drop(keepalive);

    let mut returned: Vec<NodeMessage> = io.unacked.into_inner().messages.into();
    let mut rx = rx;
    rx.close();
    while let Ok(item) = rx.try_recv() {
        if let Outgoing::Message(m) = item {
            returned.push(m);
        }
    }
    let now = shared.clock.now();
    {
        let mut state = shared.state.lock();
        if let Some(handle) = state.conns.remove(&conn) {
            returned.extend(handle.orphans);
        }
    }
    with_engine(&shared, |engine| engine.closed(conn, reason, returned, now));
    shared.room.notify_waiters();
}

#[derive(Default)]
struct Unacked {
    messages: VecDeque<NodeMessage>,
    sent: u64,
    acked: u64,
}

struct ConnectionIo {
    shared: Arc<Shared>,
    node: Node,
    conn: ConnId,
    /// This node and the peer: what channel messages leave out.
    ends: ChannelEnds,
    unacked: Mutex<Unacked>,
}

impl ConnectionIo {
    async fn run(
        &self,
        mut reader: FrameReader<super::stream::BoxReader>,
        mut writer: BoxWriter,
        mut rx: mpsc::Receiver<Outgoing>,
        mut control_rx: mpsc::Receiver<Frame>,
        close_rx: oneshot::Receiver<CloseReason>,
        recent: &Mutex<RecentIds>,
    ) -> (CloseReason, mpsc::Receiver<Outgoing>) {
        let received = AtomicU64::new(0);
        let ack_wanted = Notify::new();
        let reason = tokio::select! {
            reason = self.read_loop(&mut reader, &received, &ack_wanted, recent) => reason,
            reason = self.write_loop(&mut writer, &mut rx, &mut control_rx, &received, &ack_wanted) => reason,
            reason = close_rx => reason.unwrap_or(CloseReason::Shutdown),
        };
        // Counted while the stream is still open (it closes when the reader
        // and writer go, below), so whoever sees the connection closed sees
        // the violation counted.
        if matches!(reason, CloseReason::Violation(_)) {
            self.shared.counters.violations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %self.ends.peer, %reason, "connection closed");
        }
        drop((reader, writer));
        (reason, rx)
    }

    async fn write_loop(
        &self,
        writer: &mut BoxWriter,
        rx: &mut mpsc::Receiver<Outgoing>,
        control_rx: &mut mpsc::Receiver<Frame>,
        received: &AtomicU64,
        ack_wanted: &Notify,
    ) -> CloseReason {
        let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES + 64 * 1024);
        let mut acked_to_peer = 0u64;
        loop {
            let first = tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => Some(item),
                    None => return CloseReason::Shutdown,
                },
                Some(frame) = control_rx.recv() => Some(Outgoing::Frame(frame)),
                () = ack_wanted.notified() => {
                    // Give the acknowledgement a moment to ride on a message
                    // (a reply, typically) instead of costing a write alone.
                    match tokio::time::timeout(ACK_DELAY, rx.recv()).await {
                        Ok(Some(item)) => Some(item),
                        Ok(None) => return CloseReason::Shutdown,
                        Err(_) => None,
                    }
                }
            };
            buf.clear();
            let mut frames = 0u64;
            // What the reader has taken, read before the batch is gathered:
            // the reader queues a drop notice for a message before it counts
            // the message, so the notice is in this batch (or an earlier
            // one) whenever the acknowledgement covers its message.
            let taken = received.load(Ordering::Acquire);
            let mut drained = true;
            let mut next = first;
            loop {
                if let Some(item) = next.take() {
                    if let Err(reason) = self.encode(item, &mut buf) {
                        return reason;
                    }
                    frames += 1;
                }
                if buf.len() >= WRITE_BATCH_BYTES {
                    drained = false;
                    break;
                }
                match control_rx.try_recv() {
                    Ok(frame) => next = Some(Outgoing::Frame(frame)),
                    Err(_) => match rx.try_recv() {
                        Ok(item) => next = Some(item),
                        Err(_) => break,
                    },
                }
            }
            // Acknowledge what the reader has taken, riding on this write;
            // after a full batch, on the next one (asked for here, in case
            // nothing else is left to write).
            if taken > acked_to_peer && !drained {
                ack_wanted.notify_one();
            } else if taken > acked_to_peer {
                if let Err(err) = encode_frame_into(&self.shared.codec, &Frame::Ack(Ack { received: taken }), &mut buf)
                {
                    return CloseReason::Violation(err.to_string());
                }
                acked_to_peer = taken;
                frames += 1;
            }
            if buf.is_empty() {
                continue;
            }
            if let Err(err) = write_all_flush(writer, &buf).await {
                return CloseReason::Lost(err.to_string());
            }
            self.shared.counters.frames_sent.fetch_add(frames, Ordering::Relaxed);
            self.shared.counters.bytes_sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
    }

    fn encode(&self, item: Outgoing, buf: &mut Vec<u8>) -> Result<(), CloseReason> {
        match item {
            Outgoing::Message(message) => {
                let frame = Frame::Node(message);
                if let Err(err) = encode_channel_frame_into(&self.shared.codec, &frame, self.ends, buf) {
                    // A message too large to frame is the sender's error, not
                    // the connection's: give it up and carry on.
                    if let Frame::Node(message) = frame {
                        if let Some(node) = node_of(&self.shared) {
                            node.notify_undeliverable(&message, &err.to_string());
                        }
                        let now = self.shared.clock.now();
                        let conn = self.conn;
                        let cost = message_cost(&message);
                        with_engine(&self.shared, |engine| engine.acked(conn, 1, cost, now));
                    }
                    return Ok(());
                }
                if let Frame::Node(message) = frame {
                    let mut unacked = self.unacked.lock();
                    unacked.messages.push_back(message);
                    unacked.sent += 1;
                }
                Ok(())
            }
            Outgoing::Frame(frame) => {
                encode_frame_into(&self.shared.codec, &frame, buf).map_err(|e| CloseReason::Violation(e.to_string()))
            }
        }
    }

    async fn read_loop(
        &self,
        reader: &mut FrameReader<super::stream::BoxReader>,
        received: &AtomicU64,
        ack_wanted: &Notify,
        recent: &Mutex<RecentIds>,
    ) -> CloseReason {
        let mut since_ack = 0u64;
        loop {
            let frame = match reader.next_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return CloseReason::Lost("closed by the peer".into()),
                Err(FramingError::Io(err)) => return CloseReason::Lost(err.to_string()),
                Err(FramingError::Truncated) => return CloseReason::Lost("the stream ended mid-frame".into()),
                Err(err) => return CloseReason::Violation(err.to_string()),
            };
            self.shared.counters.frames_received.fetch_add(1, Ordering::Relaxed);
            match frame {
                Frame::Node(message) => {
                    match self.deliver(message, recent) {
                        Ok(pending) if pending.is_empty() => {}
                        // A full mailbox holds up this connection's reader
                        // only: the backpressure reaches this peer and no other.
                        Ok(pending) => self.node.finish_inbound(pending).await,
                        Err(reason) => return reason,
                    }
                    received.fetch_add(1, Ordering::Release);
                    since_ack += 1;
                }
                Frame::Ack(ack) => {
                    let released = {
                        let mut unacked = self.unacked.lock();
                        if ack.received > unacked.sent || ack.received < unacked.acked {
                            return CloseReason::Violation(format!(
                                "acknowledged {} messages, {} were sent",
                                ack.received, unacked.sent
                            ));
                        }
                        let n = ack.received - unacked.acked;
                        unacked.acked = ack.received;
                        let mut bytes = 0;
                        let watched = self.node.waits_for_outcomes();
                        for _ in 0..n {
                            let Some(message) = unacked.messages.pop_front() else { break };
                            bytes += message_cost(&message);
                            if watched {
                                self.node.acknowledged(&message, self.ends.peer);
                            }
                        }
                        (n, bytes)
                    };
                    if released.0 > 0 {
                        let now = self.shared.clock.now();
                        let conn = self.conn;
                        with_engine(&self.shared, |engine| engine.acked(conn, released.0, released.1, now));
                        self.shared.room.notify_waiters();
                    }
                }
                Frame::NodeAdvert(advert) => {
                    if advert.id != self.ends.peer {
                        return CloseReason::Violation("sent an advert of another node".into());
                    }
                    if let Err(err) = self.node.offer_node_advert(advert).await {
                        tracing::debug!(peer = %self.ends.peer, %err, "peer advert not taken");
                    }
                }
                Frame::TopicAdvert(advert) => {
                    let _ = self.node.offer_topic_advert(advert).await;
                }
                Frame::DomainAdvert(advert) => {
                    let _ = self.node.offer_domain_advert(advert).await;
                }
                Frame::Hello(_) | Frame::HelloReply(_) => {
                    return CloseReason::Violation("a second handshake on an open connection".into());
                }
            }
            // Acknowledge once every so many messages, and whenever the
            // reader has caught up: after any frame, since the last message
            // of a burst may be followed by an acknowledgement or an advert
            // in the same read.
            if since_ack >= ACK_EVERY || (since_ack > 0 && reader.is_drained()) {
                since_ack = 0;
                ack_wanted.notify_one();
                // The peer is in use: its connection is not idle, whichever
                // way the traffic flows.
                let (now, peer) = (self.shared.clock.now(), self.ends.peer);
                with_engine(&self.shared, |engine| engine.activity(peer, now));
            }
        }
    }

    /// Delivers without a future; what found a full mailbox is returned
    /// for the reader to wait on.
    fn deliver(&self, message: NodeMessage, recent: &Mutex<RecentIds>) -> Result<Pending, CloseReason> {
        if let NodePayload::Engine(inner) = &message.payload {
            if !recent.lock().first_time(inner) {
                self.shared.counters.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(Pending::default());
            }
        }
        match self.node.deliver_inbound_now(self.ends.peer, message) {
            Ok(pending) => Ok(pending),
            Err(rejection) if rejection.disconnects_peer() => Err(CloseReason::Violation(rejection.to_string())),
            // Other rejections (no route, expired) drop the message only.
            Err(_) => Ok(Pending::default()),
        }
    }
}

async fn write_all_flush(writer: &mut (impl AsyncWrite + Unpin), buf: &[u8]) -> std::io::Result<()> {
    writer.write_all(buf).await?;
    writer.flush().await
}
