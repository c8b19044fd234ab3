//! Frames on a byte stream: a 4-byte big-endian length, then the frame as
//! the codec writes it (format version, kind, CBOR). The length is checked
//! against the limit before any of the frame is read, and the frame's
//! buffer grows only as its bytes arrive, each piece paid for from the
//! node's [`FrameMemory`] first. A frame once begun must be whole within
//! [`FRAME_DEADLINE`].

use crate::codec::{Codec, CodecError};
use bytes::{BufMut, Bytes};
use netmachine_domain::Frame;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::time::Instant;

pub use super::frame_memory::FRAME_DEADLINE;
use super::frame_memory::{FrameLimits, FrameMemory};

use crate::codec::{frame_to_cbor, CborCodec, ChannelEnds, DeferredBody, NameCache, FORMAT_VERSION};

pub const LENGTH_PREFIX: usize = 4;
/// The read buffer of a connection; a frame no larger is read without
/// drawing on the node's frame memory.
pub const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum FramingError {
    #[error("the peer announced a frame of {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("a frame was not whole within {} s of its first byte", .0.as_secs())]
    Stalled(Duration),
    #[error("garbage frame: {0}")]
    Codec(#[from] CodecError),
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends one length-prefixed frame to `out`, encoding straight into it.
pub fn encode_frame_into(codec: &CborCodec, frame: &Frame, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    out.push(FORMAT_VERSION);
    out.push(frame.kind() as u8);
    if let Err(err) = frame_to_cbor(frame, out) {
        out.truncate(start);
        return Err(err);
    }
    finish_prefix(codec, start, 0, out)
}

/// Fills in the length prefix of the frame that starts at `start` (whose
/// bytes are those from `start` on, and `left_out` more written apart), or
/// takes the frame back out if it is over the limit.
fn finish_prefix(codec: &CborCodec, start: usize, left_out: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let len = out.len() - start - LENGTH_PREFIX + left_out;
    if len > codec.max_frame() {
        out.truncate(start);
        return Err(CodecError::TooLarge { len, max: codec.max_frame() });
    }
    let prefix = u32::try_from(len).map_err(|_| CodecError::TooLarge { len, max: codec.max_frame() })?;
    out[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Appends one length-prefixed frame sent over an established connection
/// (see [`CborCodec::encode_on_channel`]).
pub fn encode_channel_frame_into(
    codec: &CborCodec,
    frame: &Frame,
    ends: ChannelEnds,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    encode_channel_frame_deferring(codec, frame, ends, out, usize::MAX).map(|_whole| ())
}

/// As [`encode_channel_frame_into`], but a message body of `defer_from`
/// bytes or more is left out of `out` and handed back with its place, to
/// be written between `out[..at]` and `out[at..]` as it is.
pub fn encode_channel_frame_deferring(
    codec: &CborCodec,
    frame: &Frame,
    ends: ChannelEnds,
    out: &mut Vec<u8>,
    defer_from: usize,
) -> Result<Option<DeferredBody>, CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    let deferred = match codec.encode_on_channel_deferring(frame, ends, out, defer_from) {
        Ok(deferred) => deferred,
        Err(err) => {
            out.truncate(start);
            return Err(err);
        }
    };
    finish_prefix(codec, start, deferred.as_ref().map_or(0, |d| d.bytes.len()), out)?;
    Ok(deferred)
}

/// A frame's body (after its length), in the channel form once the
/// handshake set one.
fn decode_body(
    codec: &CborCodec,
    channel: &mut Option<(ChannelEnds, NameCache)>,
    body: &[u8],
) -> Result<Frame, FramingError> {
    match channel {
        Some((ends, names)) => codec.decode_on_channel(body, *ends, names),
        None => codec.decode(body),
    }
    .map_err(FramingError::from)
}

/// Reads frames from a stream, at most `codec.max_frame()` bytes each.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: BufReader<R>,
    codec: CborCodec,
    body: Vec<u8>,
    memory: FrameMemory,
    deadline: Duration,
    /// Set once the handshake is done: channel messages are read from then.
    channel: Option<(ChannelEnds, NameCache)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Whether the handshake was done ([`FrameReader::enter_channel`]).
    pub fn in_channel(&self) -> bool {
        self.channel.is_some()
    }

    /// Reads and drops whatever the peer still sends, until it ends the
    /// stream or it fails. A TCP socket closed with bytes left unread is
    /// reset, and a reset can overtake the last frames written to the
    /// peer; the caller bounds how long this may take.
    pub async fn discard_to_end(&mut self) {
        let mut scratch = [0u8; 16 * 1024];
        while let Ok(1..) = self.inner.read(&mut scratch).await {}
    }

    /// A reader with a frame memory of its own, as large as one frame.
    pub fn new(inner: R, codec: CborCodec) -> Self {
        let limits = FrameLimits { memory: FrameMemory::new(codec.max_frame()), deadline: FRAME_DEADLINE };
        Self::sharing(inner, codec, limits)
    }

    /// A reader whose large frames draw on the node's frame memory, shared
    /// with its other connections.
    pub fn sharing(inner: R, codec: CborCodec, limits: FrameLimits) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER, inner),
            codec,
            body: Vec::new(),
            memory: limits.memory,
            deadline: limits.deadline,
            channel: None,
        }
    }

    /// Sets how long a frame may take once begun (tests shorten it).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// From now on the stream is an established connection between these
    /// ends, and channel messages are read.
    pub fn enter_channel(&mut self, ends: ChannelEnds) {
        self.channel = Some((ends, NameCache::default()));
    }

    /// The next frame, or `None` when the stream ends cleanly between
    /// frames.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        let mut prefix = [0u8; LENGTH_PREFIX];
        match self.inner.read_exact(&mut prefix[..1]).await {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let deadline = Instant::now() + self.deadline;
        self.read_by(deadline, &mut prefix[1..]).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.codec.max_frame() {
            return Err(FramingError::TooLarge { len, max: self.codec.max_frame() });
        }
        if len > READ_BUFFER {
            return self.large_frame(len, deadline).await.map(Some);
        }
        let mut body = std::mem::take(&mut self.body);
        body.resize(len, 0);
        let read = self.read_by(deadline, &mut body).await;
        let decoded = read.and_then(|()| decode_body(&self.codec, &mut self.channel, &body));
        self.body = body;
        decoded.map(Some)
    }

    /// A frame larger than the read buffer. Its buffer grows only as its
    /// bytes arrive: it starts as large as the first bytes that came and
    /// doubles (never past the frame) only once full, each growth paid for
    /// from the node's frame memory before it is made, so a peer holds at
    /// most twice the bytes it sent. Past the first bytes (copied from the
    /// read buffer) the frame is read straight into its own buffer, and a
    /// channel message's body is a view of that buffer rather than a copy;
    /// each doubling still copies what came so far. The frame memory comes
    /// back once the frame is decoded.
    async fn large_frame(&mut self, len: usize, deadline: Instant) -> Result<Frame, FramingError> {
        let first = match tokio::time::timeout_at(deadline, self.inner.fill_buf()).await {
            Err(_) => return Err(FramingError::Stalled(self.deadline)),
            Ok(Err(err)) => return Err(err.into()),
            Ok(Ok(buffered)) => buffered.len().min(len),
        };
        if first == 0 {
            return Err(FramingError::Truncated);
        }
        let mut paid = self.pay(first, deadline).await?;
        let mut body: Vec<u8> = Vec::with_capacity(first);
        body.extend_from_slice(&self.inner.buffer()[..first]);
        std::pin::Pin::new(&mut self.inner).consume(first);
        while body.len() < len {
            if body.len() == body.capacity() {
                let target = (body.capacity() * 2).min(len);
                paid.merge(self.pay(target - body.capacity(), deadline).await?);
                body.reserve_exact(target - body.len());
            }
            let room = (body.capacity() - body.len()).min(len - body.len());
            let mut spare = (&mut body).limit(room);
            match tokio::time::timeout_at(deadline, self.inner.read_buf(&mut spare)).await {
                Err(_) => return Err(FramingError::Stalled(self.deadline)),
                Ok(Err(err)) => return Err(err.into()),
                Ok(Ok(0)) => return Err(FramingError::Truncated),
                Ok(Ok(_)) => {}
            }
        }
        let body = Bytes::from(body);
        let decoded = match &mut self.channel {
            Some((ends, names)) => self.codec.decode_on_channel_shared(&body, *ends, names),
            None => self.codec.decode(&body),
        }
        .map_err(FramingError::from);
        // The payment ends here, but the buffer lives on as the decoded
        // message's body when that is a view of it.
        drop(body);
        drop(paid);
        decoded
    }

    /// Takes `bytes` of the node's frame memory, waiting no later than the
    /// frame's deadline.
    async fn pay(
        &mut self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, FramingError> {
        tokio::time::timeout_at(deadline, self.memory.take(bytes))
            .await
            .map_err(|_| FramingError::Stalled(self.deadline))
    }

    /// The next frame if it is wholly in the read buffer already, decoded
    /// in place (no wait, no copy); `None` when it needs a read. Lets a
    /// reader hand the core every frame one read brought, at once.
    pub fn buffered_frame(&mut self) -> Option<Result<Frame, FramingError>> {
        let buffered = self.inner.buffer();
        let prefix: [u8; LENGTH_PREFIX] = buffered.get(..LENGTH_PREFIX)?.try_into().ok()?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.codec.max_frame() {
            return Some(Err(FramingError::TooLarge { len, max: self.codec.max_frame() }));
        }
        let body = buffered.get(LENGTH_PREFIX..LENGTH_PREFIX + len)?;
        let decoded = decode_body(&self.codec, &mut self.channel, body);
        std::pin::Pin::new(&mut self.inner).consume(LENGTH_PREFIX + len);
        Some(decoded)
    }

    /// Whether the next frame would need a read from the stream: a good
    /// moment to acknowledge what has been taken so far.
    pub fn is_drained(&self) -> bool {
        self.inner.buffer().is_empty()
    }

    /// Fills `buf` by `deadline`.
    async fn read_by(&mut self, deadline: Instant, buf: &mut [u8]) -> Result<(), FramingError> {
        match tokio::time::timeout_at(deadline, self.inner.read_exact(buf)).await {
            Err(_) => Err(FramingError::Stalled(self.deadline)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(FramingError::Truncated),
            Ok(Err(err)) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::strategies;
    use proptest::prelude::*;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn frames_round_trip_through_a_stream(frames in proptest::collection::vec(strategies::frame(), 0..8)) {
            let codec = CborCodec::default();
            let mut bytes = Vec::new();
            for frame in &frames {
                encode_frame_into(&codec, frame, &mut bytes).expect("encodes");
            }
            let decoded = runtime().block_on(async {
                let mut reader = FrameReader::new(&bytes[..], codec);
                let mut out = Vec::new();
                while let Some(frame) = reader.next_frame().await.expect("valid stream") {
                    out.push(frame);
                }
                out
            });
            prop_assert_eq!(decoded, frames);
        }

        /// A stream of valid frames with a few bytes changed: the reader
        /// gives back the frames before the damage unchanged, then either
        /// stops with an error or reads frames that are each exactly what
        /// their bytes encode. It never panics and never reads past the end.
        #[test]
        fn a_damaged_stream_reads_as_far_as_it_is_valid(
            frames in proptest::collection::vec(strategies::frame(), 1..6),
            changes in strategies::mutations(),
        ) {
            let codec = CborCodec::default();
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for frame in &frames {
                encode_frame_into(&codec, frame, &mut bytes).expect("encodes");
                ends.push(bytes.len());
            }
            let original = bytes.clone();
            strategies::mutate(&mut bytes, &changes);
            let first_change = original.iter().zip(&bytes).position(|(a, b)| a != b)
                .unwrap_or(original.len().min(bytes.len()));
            let intact = ends.iter().take_while(|end| **end <= first_change).count();
            let read = runtime().block_on(async {
                let mut reader = FrameReader::new(&bytes[..], codec);
                let mut out = Vec::new();
                for _ in 0..64 {
                    match reader.next_frame().await {
                        Ok(Some(frame)) => out.push(frame),
                        _ => break,
                    }
                }
                out
            });
            prop_assert!(read.len() >= intact, "read {} frames, {} were intact", read.len(), intact);
            for (got, sent) in read.iter().zip(&frames).take(intact) {
                prop_assert_eq!(got, sent);
            }
            // Every frame read re-encodes to a stream that is a prefix of
            // the bytes read.
            let mut again = Vec::new();
            for frame in &read {
                encode_frame_into(&codec, frame, &mut again).expect("re-encodes");
            }
            prop_assert!(bytes.starts_with(&again));
        }
    }

    #[test]
    fn an_oversize_length_is_refused_before_reading_the_body() {
        let codec = CborCodec::with_max_frame(1000);
        let bytes = 5000u32.to_be_bytes();
        let err = runtime().block_on(FrameReader::new(&bytes[..], codec).next_frame()).expect_err("too large");
        assert!(matches!(err, FramingError::TooLarge { len: 5000, max: 1000 }));
    }

    #[test]
    fn a_cut_frame_is_truncated_and_garbage_is_a_codec_error() {
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let err = runtime().block_on(FrameReader::new(&bytes[..], CborCodec::default()).next_frame()).expect_err("cut");
        assert!(matches!(err, FramingError::Truncated));
        let mut garbage = 4u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[1, 1, 0xff, 0xff]);
        let err =
            runtime().block_on(FrameReader::new(&garbage[..], CborCodec::default()).next_frame()).expect_err("garbage");
        assert!(matches!(err, FramingError::Codec(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Frames that one read brought are decoded from the buffer in
        /// place, exactly as an awaited read decodes them, and a frame not
        /// wholly there is left for the next read.
        #[test]
        fn buffered_frames_are_the_frames_the_stream_holds(
            frames in proptest::collection::vec(strategies::frame(), 2..8),
            cut in 1usize..64,
        ) {
            let codec = CborCodec::default();
            let mut bytes = Vec::new();
            for frame in &frames {
                encode_frame_into(&codec, frame, &mut bytes).expect("encodes");
            }
            // The stream ends inside the last frame's encoding: between
            // 1 and 63 of its bytes are cut, never all of them.
            let last_start = bytes.len() - {
                let mut one = Vec::new();
                encode_frame_into(&codec, frames.last().expect("one at least"), &mut one).expect("encodes");
                one.len()
            };
            bytes.truncate(bytes.len() - cut.min(bytes.len() - last_start - 1));
            // Awaited reads and buffered frames, mixed as the connection's
            // reader mixes them, until the cut.
            let (decoded, buffered, end) = runtime().block_on(async {
                let mut reader = FrameReader::new(&bytes[..], codec);
                let (mut out, mut buffered) = (Vec::new(), 0);
                for _ in 0..frames.len() + 1 {
                    while let Some(frame) = reader.buffered_frame() {
                        out.push(frame.expect("valid"));
                        buffered += 1;
                    }
                    match reader.next_frame().await {
                        Ok(Some(frame)) => out.push(frame),
                        end => return (out, buffered, end),
                    }
                }
                (out, buffered, Ok(None))
            });
            prop_assert_eq!(&decoded[..], &frames[..frames.len() - 1]);
            prop_assert!(matches!(end, Err(FramingError::Truncated)), "the cut frame is left: {:?}", end);
            // Small frames arrive in one read: all but the first are
            // taken from the buffer.
            if bytes.len() < 60_000 {
                prop_assert_eq!(buffered, frames.len() - 2);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A body set apart is exactly the bytes it leaves out: the frame
        /// before its place, the body, and the rest read as the whole
        /// encoding. Frames that are not channel messages set nothing apart.
        #[test]
        fn a_body_set_apart_leaves_exactly_its_bytes_out(
            body_len in 0usize..40_000,
            signed in any::<bool>(),
            defer_from in prop_oneof![Just(0usize), Just(1), 1usize..40_000, Just(usize::MAX)],
            other in strategies::frame(),
        ) {
            use netmachine_domain::samples::{self, NODE_A, NODE_B};
            use netmachine_domain::{Body, NodeMessage, NodePayload};
            let mut message = samples::engine_message();
            message.src.node = NODE_A;
            message.prefs = None;
            message.body = Body::new(vec![9u8; body_len]).expect("within the limit");
            if !signed {
                message.sig = None;
            }
            let frame =
                Frame::Node(NodeMessage { src: NODE_A, dst: NODE_B, payload: NodePayload::Engine(message), sig: None });
            let ends = ChannelEnds { local: NODE_A, peer: NODE_B };
            let codec = CborCodec::default();
            for frame in [frame, other] {
                let mut whole = vec![1, 2, 3];
                encode_channel_frame_into(&codec, &frame, ends, &mut whole).expect("encodes");
                let mut parts = vec![1, 2, 3];
                let deferred = encode_channel_frame_deferring(&codec, &frame, ends, &mut parts, defer_from).expect("encodes");
                let rebuilt = match deferred {
                    Some(body) => {
                        prop_assert!(body.bytes.len() >= defer_from);
                        prop_assert!(body.at >= 3 && body.at <= parts.len());
                        [&parts[..body.at], &body.bytes[..], &parts[body.at..]].concat()
                    }
                    None => parts,
                };
                prop_assert_eq!(rebuilt, whole);
            }
        }
    }

    /// Guards frame memory: an announced length reserves nothing, the
    /// buffer grows only with the bytes that came, and all of it returns
    /// when the frame is read.
    #[test]
    fn a_large_frame_is_paid_for_as_its_bytes_arrive() {
        runtime().block_on(async {
            let memory = FrameMemory::new(8 * 1024 * 1024);
            let (mut near, far) = tokio::io::duplex(1024 * 1024);
            let limits = FrameLimits { memory: memory.clone(), deadline: FRAME_DEADLINE };
            let mut reader = FrameReader::sharing(far, CborCodec::default(), limits);
            let len = 4 * 1024 * 1024u32;
            let read = tokio::spawn(async move { reader.next_frame().await.map(|_| ()) });
            use tokio::io::AsyncWriteExt;
            near.write_all(&len.to_be_bytes()).await.expect("writes");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(memory.in_use(), 0, "a length alone takes nothing");
            near.write_all(&vec![0u8; 600 * 1024]).await.expect("writes");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let held = memory.in_use();
            assert!((600 * 1024..=1200 * 1024).contains(&held), "600 KiB read holds {held} bytes");
            drop(near);
            assert!(matches!(read.await.expect("joins"), Err(FramingError::Truncated)));
            assert_eq!(memory.in_use(), 0, "a frame given up returns its memory");
        });
    }

    /// Large frames, full and in the channel form, fed in uneven pieces
    /// (the buffer grows, and is then read into straight): each reads back
    /// as it was sent, and the frame memory all comes back.
    #[test]
    fn large_frames_read_whole_from_uneven_pieces() {
        use netmachine_domain::samples::{self, NODE_A, NODE_B};
        use netmachine_domain::{Body, NodeMessage, NodePayload};
        let mut message = samples::engine_message();
        message.src.node = NODE_A;
        message.prefs = None;
        message.body = Body::new(vec![7u8; 700 * 1024 + 13]).expect("a body within the limit");
        let frame =
            Frame::Node(NodeMessage { src: NODE_A, dst: NODE_B, payload: NodePayload::Engine(message), sig: None });
        let sender = ChannelEnds { local: NODE_A, peer: NODE_B };
        let codec = CborCodec::default();
        let mut bytes = Vec::new();
        encode_frame_into(&codec, &frame, &mut bytes).expect("encodes");
        encode_channel_frame_into(&codec, &frame, sender, &mut bytes).expect("encodes");
        runtime().block_on(async {
            let memory = FrameMemory::new(8 * 1024 * 1024);
            let (mut near, far) = tokio::io::duplex(256 * 1024);
            let limits = FrameLimits { memory: memory.clone(), deadline: FRAME_DEADLINE };
            let mut reader = FrameReader::sharing(far, codec, limits);
            let write = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // Pieces of 1, 2, 3... 999 bytes, then the rest.
                let mut at = 0;
                for size in (1..1000).cycle() {
                    let end = (at + size).min(bytes.len());
                    near.write_all(&bytes[at..end]).await.expect("writes");
                    at = end;
                    if at == bytes.len() {
                        break;
                    }
                }
                near
            });
            let full = reader.next_frame().await.expect("reads").expect("a frame");
            assert_eq!(full, frame);
            reader.enter_channel(ChannelEnds { local: NODE_B, peer: NODE_A });
            let channel = reader.next_frame().await.expect("reads").expect("a frame");
            assert_eq!(channel, frame);
            let near = write.await.expect("joins");
            drop(near);
            assert!(reader.next_frame().await.expect("clean end").is_none());
            assert_eq!(memory.in_use(), 0, "the frames' memory came back");
        });
    }

    /// Guards connection slots: a frame begun and left unfinished ends the
    /// read at the deadline instead of holding the connection for good.
    #[test]
    fn a_frame_that_stalls_is_given_up_at_its_deadline() {
        runtime().block_on(async {
            let (mut near, far) = tokio::io::duplex(1024);
            let mut reader =
                FrameReader::new(far, CborCodec::default()).with_deadline(std::time::Duration::from_millis(100));
            use tokio::io::AsyncWriteExt;
            near.write_all(&[0, 0, 1, 0, 7]).await.expect("writes");
            let err = reader.next_frame().await.expect_err("stalled");
            assert!(matches!(err, FramingError::Stalled(_)), "{err:?}");
            drop(near);
        });
    }

    #[test]
    fn a_buffered_frame_over_the_limit_is_refused_before_it_is_read() {
        let codec = CborCodec::with_max_frame(1000);
        let mut bytes = Vec::new();
        encode_frame_into(&codec, &Frame::Ack(netmachine_domain::Ack { received: 1 }), &mut bytes).expect("encodes");
        bytes.extend_from_slice(&5000u32.to_be_bytes());
        let err = runtime().block_on(async {
            let mut reader = FrameReader::new(&bytes[..], codec);
            reader.next_frame().await.expect("valid").expect("a frame");
            reader.buffered_frame()
        });
        assert!(matches!(err, Some(Err(FramingError::TooLarge { len: 5000, max: 1000 }))));
    }
}
