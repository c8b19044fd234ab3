//! One task per connection: it dials (or takes an inbound stream), then
//! reads frames into the node core and writes the frames the core returns,
//! until the connection ends. The handshake, acknowledgements and repeats
//! are the core's business; this task moves frames, batches writes, and
//! times out a handshake that does not finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netmachine_domain::{Frame, TransportAddress};
use netmachine_engines::log_budget::LogKind;
use netmachine_engines::transport::{CloseReason, ConnId, ConnectFailure};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{CborCodec, ChannelEnds, DeferredBody};
use crate::runtime::{is_advert, ConnHandle, DialRequest, Node};
use crate::transport::frame_memory::FrameLimits;
use crate::transport::framing::{encode_channel_frame_deferring, encode_frame_into, FrameReader, FramingError};
use crate::transport::stream::{write_chunks, BoxReader, BoxWriter, Connector, DialError, SecuredStream};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a lone acknowledgement waits for a frame to ride with.
const ACK_DELAY: Duration = Duration::from_millis(1);
/// How long a connection the core closed may take to write what was
/// queued before the close (and, after a refused handshake, for the peer
/// to close its end).
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
    let mut reader = FrameReader::sharing(reader, codec, limits);
    let (reason, closed_here) = tokio::select! {
        reason = io.read_loop(&mut reader) => (reason, false),
        reason = io.write_loop(&mut writer, &mut writes_rx) => (reason, false),
        reason = close_rx => (reason.unwrap_or(CloseReason::Shutdown), true),
    };
    if closed_here {
        // What the core wrote before closing (a refusal's reply, a drop
        // notice) still goes out, unless the peer does not read.
        let _ = tokio::time::timeout(CLOSE_FLUSH, io.write_queued(&mut writer, &mut writes_rx)).await;
        if !reader.in_channel() {
            // A refused handshake: what the dialler sent behind its hello
            // is read and dropped until it closes its end, so that this
            // close is not a reset that could overtake the refusal.
            let _ = tokio::time::timeout(CLOSE_FLUSH, reader.discard_to_end()).await;
        }
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
    async fn read_loop(&self, reader: &mut FrameReader<BoxReader>) -> CloseReason {
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
        let mut batch = Batch::for_writer(writer);
        while let Ok(frame) = rx.try_recv() {
            if self.encode(frame, &mut batch).is_err() {
                break;
            }
        }
        if !batch.is_empty() && batch.write(writer).await.is_err() {
            return;
        }
        let _ = writer.shutdown().await;
    }

    async fn write_loop(&self, writer: &mut BoxWriter, rx: &mut mpsc::UnboundedReceiver<Frame>) -> CloseReason {
        let host = &self.node.inner;
        let mut batch = Batch::for_writer(writer);
        loop {
            let Some(first) = rx.recv().await else { return CloseReason::Shutdown };
            let mut frames = 0u64;
            // Only the newest acknowledgement of a batch is written, last:
            // it covers the others, and what the core wrote before it.
            let mut ack = None;
            let mut waited = false;
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                match frame {
                    Frame::Ack(a) => ack = Some(a),
                    frame => match self.encode(frame, &mut batch) {
                        Ok(written) => frames += u64::from(written),
                        Err(reason) => return reason,
                    },
                }
                if batch.len() >= WRITE_BATCH_BYTES {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(frame) => Some(frame),
                    // A lone acknowledgement waits a moment, once, for a
                    // message (a reply, typically) to ride with, rather
                    // than cost a write of its own.
                    Err(_) if batch.is_empty() && ack.is_some() && !waited => {
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
                match self.encode(Frame::Ack(ack), &mut batch) {
                    Ok(written) => frames += u64::from(written),
                    Err(reason) => return reason,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let bytes = batch.len();
            if let Err(err) = batch.write(writer).await {
                return CloseReason::Lost(err.to_string());
            }
            host.wire.frames_sent.fetch_add(frames, Ordering::Relaxed);
            host.wire.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// Appends one frame to the batch; says whether it was.
    fn encode(&self, frame: Frame, batch: &mut Batch) -> Result<bool, CloseReason> {
        if is_advert(&frame) {
            self.adverts_queued.fetch_sub(1, Ordering::AcqRel);
        }
        match frame {
            Frame::Node(message) => {
                let frame = Frame::Node(message);
                let encoded = encode_channel_frame_deferring(
                    &self.codec,
                    &frame,
                    self.ends,
                    &mut batch.buf,
                    batch.set_apart_from,
                );
                let err = match encoded {
                    Ok(deferred) => {
                        if let Some(body) = deferred {
                            batch.set_apart(body);
                        }
                        return Ok(true);
                    }
                    Err(err) => err,
                };
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
            frame => encode_frame_into(&self.codec, &frame, &mut batch.buf)
                .map(|()| true)
                .map_err(|err| CloseReason::Violation(err.to_string())),
        }
    }
}

/// The bytes of one write. Frames are encoded into `buf`. For a writer
/// that takes whole buffers (QUIC), a body of [`SET_APART_FROM`] bytes or
/// more is not copied in: `buf` up to its place is closed off as a chunk,
/// and the body follows as its own chunk, the very buffer the message
/// holds.
struct Batch {
    buf: Vec<u8>,
    /// Closed off, in order, before `buf`.
    chunks: Vec<Bytes>,
    chunked_bytes: usize,
    takes_chunks: bool,
    set_apart_from: usize,
}

/// Bodies from this size on are written without a copy (when the writer
/// takes chunks); below it, one more chunk costs more than the copy.
const SET_APART_FROM: usize = 16 * 1024;
const BATCH_CAPACITY: usize = WRITE_BATCH_BYTES + 64 * 1024;

impl Batch {
    fn for_writer(writer: &BoxWriter) -> Self {
        let takes_chunks = writer.takes_chunks();
        Self {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            chunks: Vec::new(),
            chunked_bytes: 0,
            takes_chunks,
            set_apart_from: if takes_chunks { SET_APART_FROM } else { usize::MAX },
        }
    }

    fn len(&self) -> usize {
        self.chunked_bytes + self.buf.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoder left `body` out at `body.at`: what came before it is a
    /// chunk, then the body.
    fn set_apart(&mut self, body: DeferredBody) {
        let before = self.close_off(body.at);
        self.chunked_bytes += before.len() + body.bytes.len();
        self.chunks.push(before);
        self.chunks.push(body.bytes);
    }

    /// The first `upto` bytes of `buf`, copied out as a chunk; the buffer
    /// is kept for what follows. (Handing the buffer itself over, and
    /// taking a new one for each batch, measured slower for small
    /// messages than this copy.)
    fn close_off(&mut self, upto: usize) -> Bytes {
        let chunk = Bytes::copy_from_slice(&self.buf[..upto]);
        self.buf.drain(..upto);
        chunk
    }

    /// Writes the batch and empties it.
    async fn write(&mut self, writer: &mut BoxWriter) -> std::io::Result<()> {
        if !self.takes_chunks {
            writer.write_all(&self.buf).await?;
            self.buf.clear();
            return writer.flush().await;
        }
        if !self.buf.is_empty() {
            let last = self.close_off(self.buf.len());
            self.chunks.push(last);
        }
        let written = write_chunks(writer, &mut self.chunks).await;
        self.chunks.clear();
        self.chunked_bytes = 0;
        written?;
        writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use netmachine_domain::samples::{self, NODE_A, NODE_B};
    use netmachine_domain::{Ack, Body, NodeMessage, NodePayload};
    use tokio::io::AsyncWrite;

    use super::*;
    use crate::transport::framing::encode_channel_frame_into;
    use crate::transport::stream::StreamWriter;

    /// Takes at most two chunks a call, and keeps what it was given.
    struct Taker {
        got: Arc<Mutex<Vec<Bytes>>>,
        copied: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncWrite for Taker {
        fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.copied.lock().expect("lock").extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl StreamWriter for Taker {
        fn takes_chunks(&self) -> bool {
            true
        }
        fn poll_write_chunks(&mut self, _cx: &mut Context<'_>, chunks: &mut [Bytes]) -> Poll<std::io::Result<usize>> {
            let n = chunks.len().min(2);
            for chunk in &mut chunks[..n] {
                self.got.lock().expect("lock").push(std::mem::take(chunk));
            }
            Poll::Ready(Ok(n))
        }
    }

    fn message(body_len: usize, id: u64) -> Frame {
        let mut m = samples::engine_message();
        m.src.node = NODE_A;
        m.prefs = None;
        m.id = netmachine_domain::MessageId(id);
        m.body = Body::new(vec![id as u8; body_len]).expect("within the limit");
        Frame::Node(NodeMessage { src: NODE_A, dst: NODE_B, payload: NodePayload::Engine(m), sig: None })
    }

    /// Small frames, bodies set apart with a few bytes or many before
    /// them, and an acknowledgement: the writer is handed the same bytes
    /// the whole encodings make, large bodies as the very buffers the
    /// messages hold, and nothing is copied through its byte interface.
    #[test]
    fn a_batch_hands_over_exactly_the_bytes_of_its_frames_and_large_bodies_as_they_are() {
        let mut frames = vec![message(300 * 1024, 1), message(10, 2)];
        frames.extend((3..400).map(|id| message(40, id)));
        frames.push(message(SET_APART_FROM, 400));
        frames.push(Frame::Ack(Ack { received: 7 }));
        let (got, copied) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let mut writer: BoxWriter = Box::new(Taker { got: Arc::clone(&got), copied: Arc::clone(&copied) });
        let codec = CborCodec::default();
        let ends = ChannelEnds { local: NODE_A, peer: NODE_B };
        let mut batch = Batch::for_writer(&writer);
        let mut whole = Vec::new();
        for frame in &frames {
            encode_channel_frame_into(&codec, frame, ends, &mut whole).expect("encodes");
            if let Some(body) =
                encode_channel_frame_deferring(&codec, frame, ends, &mut batch.buf, batch.set_apart_from)
                    .expect("encodes")
            {
                batch.set_apart(body);
            }
        }
        assert_eq!(batch.len(), whole.len());
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(batch.write(&mut writer)).expect("writes");
        assert!(batch.is_empty());
        let got = got.lock().expect("lock");
        assert_eq!(got.concat(), whole);
        assert!(copied.lock().expect("lock").is_empty());
        for (frame, len) in [(&frames[0], 300 * 1024), (&frames[400 - 1], SET_APART_FROM)] {
            let Frame::Node(NodeMessage { payload: NodePayload::Engine(m), .. }) = frame else { unreachable!() };
            let body = m.body.as_bytes();
            assert!(
                got.iter().any(|c| c.len() == len && c.as_ptr() == body.as_ptr()),
                "a body of {len} bytes went as its own buffer"
            );
        }
    }
}
