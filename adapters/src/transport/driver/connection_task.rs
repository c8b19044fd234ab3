//! One task per connection: it dials (or takes an inbound stream), then
//! reads frames into the node core and writes the frames the core returns,
//! until the connection ends. The handshake, acknowledgements and repeats
//! are the core's business; this task moves frames, batches writes, and
//! times out a handshake that does not finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netmachine_domain::{Frame, TransportAddress};
use netmachine_engines::log_budget::LogKind;
use netmachine_engines::transport::{CloseReason, ConnId, ConnectFailure};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{CborCodec, ChannelEnds};
use crate::runtime::{is_advert, ConnHandle, DialRequest, Node};
use crate::transport::frame_memory::FrameLimits;
use crate::transport::framing::{encode_channel_frame_into, encode_frame_into, FrameReader, FramingError};
use crate::transport::stream::{BoxReader, BoxWriter, Connector, DialError, SecuredStream};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a lone acknowledgement waits for a frame to ride with.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// How long a connection the core closed may take to write what was
/// queued before the close.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Bytes of frames gathered into one write.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Frames already in the read buffer handed to the core under one lock.
const READ_BATCH: usize = 32;

/// How a connection began.
enum Start {
    /// This node dialled, as its core asked.
    Dialled { attempt: ConnId, address: TransportAddress, rtt_micros: u32 },
    /// A peer dialled this node.
    Accepted,
}

/// Dials for the core and, once the stream is secured, runs the connection.
pub(super) async fn outbound(
    node: Node,
    codec: CborCodec,
    limits: FrameLimits,
    connector: Option<Arc<dyn Connector>>,
    dial: DialRequest,
) {
    let DialRequest { attempt, peer, address } = dial;
    let fail = |failure: ConnectFailure| {
        let ((), pending) = node.inner.with_core(|core, now| core.dialled(attempt, Err(failure), now));
        node.inner.finish_later(pending);
    };
    let Some(connector) = connector else {
        fail(ConnectFailure::Unreachable(DialError::Unsupported(address.protocol).to_string()));
        return;
    };
    let started = Instant::now();
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, connector.dial(address.socket, peer)).await {
        Ok(Ok(stream)) => stream,
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
    let rtt_micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    run(node, codec, limits, stream, Start::Dialled { attempt, address, rtt_micros }).await;
}

/// Runs a connection a peer opened.
pub(super) async fn inbound(node: Node, codec: CborCodec, limits: FrameLimits, stream: SecuredStream) {
    run(node, codec, limits, stream, Start::Accepted).await;
}

async fn run(node: Node, codec: CborCodec, limits: FrameLimits, stream: SecuredStream, start: Start) {
    let SecuredStream { peer, reader, writer, keepalive, protocol, remote } = stream;
    let host = Arc::clone(&node.inner);
    let (writes, writes_rx) = mpsc::unbounded_channel();
    let (close, close_rx) = oneshot::channel();
    let adverts_queued = Arc::new(AtomicUsize::new(0));
    let handle =
        ConnHandle { writes, adverts_queued: Arc::clone(&adverts_queued), close: Some(close), peer, protocol, remote };
    // The handle is in place before the core can write on the connection.
    let (conn, pending) = host.with_state(
        |state, now| match start {
            Start::Dialled { attempt, address, rtt_micros } => {
                // An attempt the core gave up meanwhile is not opened.
                if !state.core.is_dialling(attempt) {
                    return None;
                }
                state.core.record_rtt(peer, address, rtt_micros);
                state.conns.insert(attempt, handle);
                state.core.dialled(attempt, Ok(()), now);
                Some(attempt)
            }
            Start::Accepted => {
                let conn = state.core.accepted(peer, remote.map(|r| r.ip()));
                state.conns.insert(conn, handle);
                Some(conn)
            }
        },
        None,
    );
    host.finish_later(pending);
    let Some(conn) = conn else { return };

    let io = ConnectionIo { node, codec, conn, ends: ChannelEnds { local: host.identity, peer }, adverts_queued };
    let (mut writer, mut writes_rx) = (writer, writes_rx);
    let (reason, closed_here) = tokio::select! {
        reason = io.read_loop(FrameReader::sharing(reader, codec, limits)) => (reason, false),
        reason = io.write_loop(&mut writer, &mut writes_rx) => (reason, false),
        reason = close_rx => (reason.unwrap_or(CloseReason::Shutdown), true),
    };
    if closed_here {
        // What the core wrote before closing (a refusal's reply, a drop
        // notice) still goes out, unless the peer does not read.
        let _ = tokio::time::timeout(CLOSE_FLUSH, io.write_queued(&mut writer, &mut writes_rx)).await;
    }
    drop(writer);
    drop(keepalive);
    // One step: a frame the core writes in between would go to a handle
    // that is gone, and the core would count it as sent.
    let ((), pending) = host.with_state(
        |state, now| {
            if matches!(reason, CloseReason::Violation(_))
                && state.core.log_allowed(LogKind::ConnectionViolation, Some(peer), now)
            {
                tracing::warn!(%peer, %reason, "connection closed: the peer broke the protocol");
            }
            state.conns.remove(&conn);
            state.core.closed(conn, reason, now);
        },
        None,
    );
    host.finish_later(pending);
    host.room.notify_waiters();
}

/// What a batch of frames did to the handshake.
enum Handshake {
    Unchanged,
    Done,
    Refused,
}

struct ConnectionIo {
    node: Node,
    codec: CborCodec,
    conn: ConnId,
    /// This node and the peer: what channel messages leave out.
    ends: ChannelEnds,
    /// Adverts queued for this writer (see `MAX_QUEUED_ADVERTS`).
    adverts_queued: Arc<AtomicUsize>,
}

impl ConnectionIo {
    async fn read_loop(&self, mut reader: FrameReader<BoxReader>) -> CloseReason {
        let host = &self.node.inner;
        let conn = self.conn;
        let mut handshaking = true;
        let mut batch = Vec::with_capacity(READ_BATCH);
        loop {
            let next = match handshaking {
                true => match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next_frame()).await {
                    Ok(next) => next,
                    Err(_) => return CloseReason::Lost("the handshake timed out".into()),
                },
                false => reader.next_frame().await,
            };
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => return CloseReason::Lost("closed by the peer".into()),
                Err(FramingError::Io(err)) => return CloseReason::Lost(err.to_string()),
                Err(FramingError::Truncated) => return CloseReason::Lost("the stream ended mid-frame".into()),
                Err(err) => {
                    host.wire.violations.fetch_add(1, Ordering::Relaxed);
                    return CloseReason::Violation(err.to_string());
                }
            };
            // Once the handshake is done, every frame this read brought
            // goes to the core under one lock (during it, the reply
            // changes how what follows is read).
            batch.push(frame);
            let mut broken = None;
            while !handshaking && batch.len() < READ_BATCH {
                match reader.buffered_frame() {
                    Some(Ok(frame)) => batch.push(frame),
                    Some(Err(err)) => {
                        broken = Some(err);
                        break;
                    }
                    None => break,
                }
            }
            host.wire.frames_received.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let acknowledgement = batch.iter().any(|frame| matches!(frame, Frame::Ack(_)));
            let drained = reader.is_drained();
            // A message for a full mailbox is parked, not waited for.
            let (handshake, pending) = host.with_core(|core, now| {
                let last = batch.len();
                for (n, frame) in batch.drain(..).enumerate() {
                    core.frame(conn, frame, drained && n + 1 == last, now);
                }
                match (handshaking, core.is_handshaking(conn), core.is_established(conn)) {
                    (false, ..) | (true, true, _) => Handshake::Unchanged,
                    (true, false, true) => Handshake::Done,
                    (true, false, false) => Handshake::Refused,
                }
            });
            host.finish_later(pending);
            if let Some(err) = broken {
                host.wire.violations.fetch_add(1, Ordering::Relaxed);
                return CloseReason::Violation(err.to_string());
            }
            match handshake {
                Handshake::Unchanged => {}
                Handshake::Done => {
                    // Both ends are proven now: messages travel in the channel form.
                    reader.enter_channel(self.ends);
                    handshaking = false;
                }
                // The core refused (or gave up) the handshake and closes
                // the connection; what the dialler sent behind its hello is
                // not read. The close ends this task, after the reply is
                // written.
                Handshake::Refused => {
                    tokio::time::sleep(HANDSHAKE_TIMEOUT).await;
                    return CloseReason::Lost("the handshake ended without a close".into());
                }
            }
            if acknowledgement {
                host.room.notify_waiters();
            }
        }
    }

    /// Writes the frames already queued, then ends the stream.
    async fn write_queued(&self, writer: &mut BoxWriter, rx: &mut mpsc::UnboundedReceiver<Frame>) {
        let mut buf = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            if self.encode(frame, &mut buf).is_err() {
                break;
            }
        }
        if !buf.is_empty() && write_all_flush(writer, &buf).await.is_err() {
            return;
        }
        let _ = writer.shutdown().await;
    }

    async fn write_loop(&self, writer: &mut BoxWriter, rx: &mut mpsc::UnboundedReceiver<Frame>) -> CloseReason {
        let host = &self.node.inner;
        let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES + 64 * 1024);
        loop {
            let Some(first) = rx.recv().await else { return CloseReason::Shutdown };
            buf.clear();
            let mut frames = 0u64;
            // Only the newest acknowledgement of a batch is written, last:
            // it covers the others, and what the core wrote before it.
            let mut ack = None;
            let mut waited = false;
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                match frame {
                    Frame::Ack(a) => ack = Some(a),
                    frame => match self.encode(frame, &mut buf) {
                        Ok(written) => frames += u64::from(written),
                        Err(reason) => return reason,
                    },
                }
                if buf.len() >= WRITE_BATCH_BYTES {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(frame) => Some(frame),
                    // A lone acknowledgement waits a moment, once, for a
                    // message (a reply, typically) to ride with, rather
                    // than cost a write of its own.
                    Err(_) if buf.is_empty() && ack.is_some() && !waited => {
                        waited = true;
                        match tokio::time::timeout(ACK_DELAY, rx.recv()).await {
                            Ok(Some(frame)) => Some(frame),
                            Ok(None) => return CloseReason::Shutdown,
                            Err(_) => None,
                        }
                    }
                    Err(_) => None,
                };
            }
            if let Some(ack) = ack {
                match self.encode(Frame::Ack(ack), &mut buf) {
                    Ok(written) => frames += u64::from(written),
                    Err(reason) => return reason,
                }
            }
            if buf.is_empty() {
                continue;
            }
            if let Err(err) = write_all_flush(writer, &buf).await {
                return CloseReason::Lost(err.to_string());
            }
            host.wire.frames_sent.fetch_add(frames, Ordering::Relaxed);
            host.wire.bytes_sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
    }

    /// Appends one frame to `buf`; says whether it was.
    fn encode(&self, frame: Frame, buf: &mut Vec<u8>) -> Result<bool, CloseReason> {
        if is_advert(&frame) {
            self.adverts_queued.fetch_sub(1, Ordering::AcqRel);
        }
        match frame {
            Frame::Node(message) => {
                let frame = Frame::Node(message);
                let Err(err) = encode_channel_frame_into(&self.codec, &frame, self.ends, buf) else { return Ok(true) };
                // A message too large to frame is its sender's error, not
                // the connection's: the core gives it up and carries on.
                if let Frame::Node(message) = frame {
                    let (conn, reason) = (self.conn, err.to_string());
                    let ((), pending) =
                        self.node.inner.with_core(|core, now| core.unwritable(conn, message, &reason, now));
                    self.node.inner.finish_later(pending);
                }
                Ok(false)
            }
            frame => encode_frame_into(&self.codec, &frame, buf)
                .map(|()| true)
                .map_err(|err| CloseReason::Violation(err.to_string())),
        }
    }
}

async fn write_all_flush(writer: &mut (impl AsyncWrite + Unpin), buf: &[u8]) -> std::io::Result<()> {
    writer.write_all(buf).await?;
    writer.flush().await
}
