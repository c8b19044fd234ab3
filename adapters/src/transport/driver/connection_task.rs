//! One task per connection: it dials (or takes an inbound stream), runs the
//! handshake, then reads and writes frames until the connection ends. What
//! the frames mean (the handshake's outcome, acknowledgements, repeats,
//! when to acknowledge) is decided by the connection protocol in
//! `netmachine_engines::transport::connection`; this task only moves them
//! and batches the writes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use netmachine_domain::{
    Ack, Frame, HandshakeStatus, NodeAdvert, NodeIdentity, NodeMessage, Timestamp, TransportProtocol,
};
use netmachine_engines::transport::connection::{expect_hello, Connection, HandshakeOffer, Incoming};
use netmachine_engines::transport::{message_cost, CloseReason, ConnId, ConnectFailure, RecentIds, Transport};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{
    node_of, with_engine, with_state, ConnHandle, Outgoing, Shared, ACK_DELAY, CONTROL_QUEUE, DIAL_TIMEOUT,
    HANDSHAKE_TIMEOUT, WRITE_BATCH_BYTES,
};
use crate::codec::ChannelEnds;
use crate::runtime::{Node, Pending};
use crate::transport::framing::{encode_channel_frame_into, encode_frame_into, FrameReader, FramingError};
use crate::transport::stream::{BoxReader, BoxWriter, DialError, SecuredStream};

async fn write_frame(shared: &Shared, writer: &mut BoxWriter, frame: &Frame) -> Result<(), FramingError> {
    let mut buf = Vec::with_capacity(256);
    encode_frame_into(&shared.codec, frame, &mut buf)?;
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

async fn read_handshake_frame(reader: &mut FrameReader<BoxReader>) -> Result<Frame, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next_frame()).await {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => Err("the peer closed during the handshake".into()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("the handshake timed out".into()),
    }
}

/// What this node offers `peer` in a handshake: its versions and boot id,
/// its advert's version and the version it holds of the peer's.
async fn offer_to(shared: &Shared, node: &Node, peer: NodeIdentity) -> HandshakeOffer {
    let own = node.advert().map_or(0, |a| a.version);
    let held = match node.lookup(netmachine_domain::RecordKey::Node(peer)).await {
        Ok(Some(netmachine_domain::IdentityRecord::Node(r))) => r.advert.map_or(0, |a| a.version),
        _ => 0,
    };
    let versions = shared.state.lock().engine.config().versions;
    HandshakeOffer { versions, boot: shared.boot, own_advert_version: own, held_advert_version_of_peer: held }
}

/// A connection whose handshake succeeded, ready to carry messages.
struct Handshaken {
    conn: ConnId,
    peer: NodeIdentity,
    reader: FrameReader<BoxReader>,
    writer: BoxWriter,
    keepalive: Option<Box<dyn Send + Sync>>,
    protocol: TransportProtocol,
    remote: Option<SocketAddr>,
    /// This node's advert, when the peer holds an older one.
    own_advert: Option<NodeAdvert>,
}

pub(super) async fn outbound_connection(
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
    let offer = offer_to(&shared, &node, peer).await;
    if let Err(err) = write_frame(&shared, &mut writer, &offer.hello()).await {
        fail(ConnectFailure::Unreachable(err.to_string()));
        return;
    }
    let agreed = match read_handshake_frame(&mut reader).await {
        Ok(frame) => offer.accept_reply(frame),
        Err(err) => Err(ConnectFailure::Unreachable(err)),
    };
    let agreed = match agreed {
        Ok(agreed) => agreed,
        Err(failure) => {
            fail(failure);
            return;
        }
    };
    let own_advert = agreed.send_own_advert.then(|| node.advert()).flatten();
    let connection = Handshaken { conn: attempt, peer, reader, writer, keepalive, protocol, remote, own_advert };
    run_established(shared, node, connection, |engine, now| engine.dial_succeeded(attempt, agreed.peer_boot, now))
        .await;
}

pub(super) async fn inbound_connection(shared: Arc<Shared>, stream: SecuredStream) {
    let SecuredStream { peer, reader, mut writer, keepalive, protocol, remote } = stream;
    let Some(node) = node_of(&shared) else { return };
    let mut reader = FrameReader::new(reader, shared.codec);
    let hello = match read_handshake_frame(&mut reader).await {
        Ok(frame) => expect_hello(frame).map_err(|reason| reason.to_string()),
        Err(err) => Err(format!("no valid hello: {err}")),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(err) => {
            shared.counters.violations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, %err, "inbound connection refused");
            return;
        }
    };
    let banned = node.is_banned(&peer);
    let now = shared.clock.now();
    let (conn, status) =
        shared.state.lock().engine.admit_inbound(peer, remote.map(|r| r.ip()), hello.versions, hello.boot, banned, now);
    let offer = offer_to(&shared, &node, peer).await;
    let written = write_frame(&shared, &mut writer, &offer.reply(status)).await;
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
    let own_advert = offer.agreed_with(&hello).send_own_advert.then(|| node.advert()).flatten();
    let connection = Handshaken { conn, peer, reader, writer, keepalive, protocol, remote, own_advert };
    run_established(shared, node, connection, |engine, now| engine.inbound_established(conn, now)).await;
}

/// Registers a handshaken connection with the engine, runs it until it
/// ends, and returns its unacknowledged messages to the engine.
async fn run_established(
    shared: Arc<Shared>,
    node: Node,
    connection: Handshaken,
    establish: impl FnOnce(&mut Transport, Timestamp),
) {
    let Handshaken { conn, peer, mut reader, writer, keepalive, protocol, remote, own_advert } = connection;
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

    let io = ConnectionIo { shared: Arc::clone(&shared), node, conn, ends, machine: Mutex::new(Connection::new(peer)) };
    let (reason, rx) = io.run(reader, writer, rx, control_rx, close_rx, &recent).await;
    drop(keepalive);

    let mut returned = io.machine.into_inner().into_unacknowledged();
    let mut rx = rx;
    rx.close();
    while let Ok(item) = rx.try_recv() {
        if let Outgoing::Message(m) = item {
            returned.push(m);
        }
    }
    let now = shared.clock.now();
    // One step: a send between the two would be written to a connection
    // whose handle is gone, and lost.
    with_state(&shared, |state| {
        if let Some(handle) = state.conns.remove(&conn) {
            returned.extend(handle.orphans);
        }
        state.engine.closed(conn, reason, returned, now);
    });
    shared.room.notify_waiters();
}

struct ConnectionIo {
    shared: Arc<Shared>,
    node: Node,
    conn: ConnId,
    /// This node and the peer: what channel messages leave out.
    ends: ChannelEnds,
    /// The connection protocol, shared by the reader and the writer.
    machine: Mutex<Connection>,
}

impl ConnectionIo {
    async fn run(
        &self,
        mut reader: FrameReader<BoxReader>,
        mut writer: BoxWriter,
        mut rx: mpsc::Receiver<Outgoing>,
        mut control_rx: mpsc::Receiver<Frame>,
        close_rx: oneshot::Receiver<CloseReason>,
        recent: &Mutex<RecentIds>,
    ) -> (CloseReason, mpsc::Receiver<Outgoing>) {
        let ack_wanted = Notify::new();
        let reason = tokio::select! {
            reason = self.read_loop(&mut reader, &ack_wanted, recent) => reason,
            reason = self.write_loop(&mut writer, &mut rx, &mut control_rx, &ack_wanted) => reason,
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
        ack_wanted: &Notify,
    ) -> CloseReason {
        let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES + 64 * 1024);
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
            let owed = self.machine.lock().ack_owed();
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
            // Acknowledge what the reader had taken, riding on this write;
            // after a full batch, on the next one (asked for here, in case
            // nothing else is left to write).
            match owed {
                Some(_) if !drained => ack_wanted.notify_one(),
                Some(received) => {
                    let ack = Frame::Ack(Ack { received });
                    if let Err(err) = encode_frame_into(&self.shared.codec, &ack, &mut buf) {
                        return CloseReason::Violation(err.to_string());
                    }
                    self.machine.lock().ack_written(received);
                    frames += 1;
                }
                None => {}
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
                        self.node.notify_undeliverable(&message, &err.to_string());
                        let now = self.shared.clock.now();
                        let conn = self.conn;
                        let cost = message_cost(&message);
                        with_engine(&self.shared, |engine| engine.acked(conn, 1, cost, now));
                    }
                    return Ok(());
                }
                if let Frame::Node(message) = frame {
                    self.machine.lock().wrote(message);
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
        reader: &mut FrameReader<BoxReader>,
        ack_wanted: &Notify,
        recent: &Mutex<RecentIds>,
    ) -> CloseReason {
        loop {
            let frame = match reader.next_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return CloseReason::Lost("closed by the peer".into()),
                Err(FramingError::Io(err)) => return CloseReason::Lost(err.to_string()),
                Err(FramingError::Truncated) => return CloseReason::Lost("the stream ended mid-frame".into()),
                Err(err) => return CloseReason::Violation(err.to_string()),
            };
            self.shared.counters.frames_received.fetch_add(1, Ordering::Relaxed);
            let incoming = {
                let mut recent = recent.lock();
                self.machine.lock().receive(frame, &mut recent)
            };
            match incoming {
                Err(reason) => return reason,
                Ok(Incoming::Message(message)) => {
                    match self.deliver(message) {
                        Ok(pending) if pending.is_empty() => {}
                        // A full mailbox holds up this connection's reader
                        // only: the backpressure reaches this peer and no other.
                        Ok(pending) => self.node.finish_inbound(pending).await,
                        Err(reason) => return reason,
                    }
                    let mut machine = self.machine.lock();
                    machine.taken();
                    if machine.ack_wanted(reader.is_drained()) {
                        drop(machine);
                        self.ack_due(ack_wanted);
                    }
                    continue;
                }
                Ok(Incoming::Repeat) => {
                    self.shared.counters.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Incoming::Acknowledged { messages, bytes }) => self.acknowledged(messages, bytes),
                Ok(Incoming::Advert(update)) => {
                    if let Err(err) = self.node.offer_advert(update).await {
                        tracing::debug!(peer = %self.ends.peer, %err, "advert from a peer not taken");
                    }
                }
            }
            if self.machine.lock().ack_wanted(reader.is_drained()) {
                self.ack_due(ack_wanted);
            }
        }
    }

    /// Asks the writer for an acknowledgement. The peer is in use: its
    /// connection is not idle, whichever way the traffic flows.
    fn ack_due(&self, ack_wanted: &Notify) {
        ack_wanted.notify_one();
        let (now, peer) = (self.shared.clock.now(), self.ends.peer);
        with_engine(&self.shared, |engine| engine.activity(peer, now));
    }

    /// The peer took `messages`: their room in the window is free again,
    /// and senders waiting for them hear so.
    fn acknowledged(&self, messages: Vec<NodeMessage>, bytes: usize) {
        if messages.is_empty() {
            return;
        }
        if self.node.waits_for_outcomes() {
            for message in &messages {
                self.node.acknowledged(message, self.ends.peer);
            }
        }
        let (now, conn, count) = (self.shared.clock.now(), self.conn, messages.len() as u64);
        with_engine(&self.shared, |engine| engine.acked(conn, count, bytes, now));
        self.shared.room.notify_waiters();
    }

    /// Delivers without a future; what found a full mailbox is returned
    /// for the reader to wait on.
    fn deliver(&self, message: NodeMessage) -> Result<Pending, CloseReason> {
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
