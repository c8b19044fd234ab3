//! A hand-written writer and reader for the frame that carries nearly all
//! traffic: a node message wrapping an engine message.
//!
//! Through serde, ciborium spends most of a small message's decoding time
//! on generic machinery (visitors, scratch copies, moving large results up
//! through each nesting level, two allocations per string). This module
//! writes exactly the bytes ciborium writes for such a frame and reads them
//! back with the same validation (the same constructors), so the wire
//! format is unchanged. Anything it does not recognise (transport
//! preferences, relay payloads, indefinite lengths, non-minimal integers,
//! errors of any kind) makes it decline, and the general serde path
//! decides, which keeps both paths in agreement on every input; the tests
//! hold them to that.

use bytes::Bytes;
use netmachine_domain::limits::MAX_PROTOCOL_NAME_BYTES;
use netmachine_domain::{
    Body, BoundedText, DestinationIdentity, DomainIdentity, EngineIdentity, EngineMessage, EngineName,
    ExternalIdentity, Frame, MessageId, NodeIdentity, NodeMessage, NodePayload, ProtocolId, RoutingScope, Signature,
    Timestamp, TopicIdentity,
};

const MAJOR_UINT: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const NULL: u8 = 0xf6;
/// The scheme tag of Ed25519 keys and signatures in their byte strings.
const ED25519_TAG: u8 = 1;

/// Appends the CBOR of `frame` to `out` if it is a node message carrying an
/// engine message without transport preferences; returns false, having
/// written nothing, for any other frame.
pub(super) fn encode(frame: &Frame, out: &mut Vec<u8>) -> bool {
    let Frame::Node(node) = frame else { return false };
    let NodePayload::Engine(message) = &node.payload else { return false };
    if message.prefs.is_some() {
        return false;
    }
    variant(out, "Node");
    head(out, MAJOR_ARRAY, 4);
    key(out, node.src.key());
    key(out, node.dst.key());
    variant(out, "Engine");
    engine_message(out, message);
    signature(out, node.sig.as_ref());
    true
}

fn engine_message(out: &mut Vec<u8>, m: &EngineMessage) {
    head(out, MAJOR_ARRAY, 10);
    engine_identity(out, &m.src);
    destination(out, &m.dst);
    // The full form is for signatures, stores and relays: always whole.
    let _inline = fields_after_addresses(out, m, Form::Full, usize::MAX);
}

/// Which form of an engine message is written or read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Kind 1: transport preferences (always null here) after the scope.
    Full,
    /// Kind 8: no preferences field.
    Channel,
}

/// Id, reply-to, expiry, scope, (preferences,) protocol, body and the
/// engine's signature: everything after the two addresses, alike in both
/// forms.
fn fields_after_addresses(out: &mut Vec<u8>, m: &EngineMessage, form: Form, defer_from: usize) -> Option<DeferredBody> {
    head(out, MAJOR_UINT, m.id.0);
    optional_uint(out, m.reply_to.map(|id| id.0));
    optional_uint(out, m.expiry.map(|t| t.0));
    scope(out, &m.scope);
    if form == Form::Full {
        out.push(NULL);
    }
    head(out, MAJOR_ARRAY, 2);
    text(out, &m.protocol.name);
    head(out, MAJOR_UINT, u64::from(m.protocol.version));
    head(out, MAJOR_BYTES, m.body.len() as u64);
    let deferred = if m.body.len() >= defer_from {
        Some(DeferredBody { at: out.len(), bytes: m.body.as_bytes().clone() })
    } else {
        out.extend_from_slice(m.body.as_bytes());
        None
    };
    signature(out, m.sig.as_ref());
    deferred
}

/// A message body left out of the encoded bytes, to be written as it is:
/// it belongs at offset `at` of the output.
#[derive(Debug)]
pub struct DeferredBody {
    pub at: usize,
    pub bytes: Bytes,
}

fn destination(out: &mut Vec<u8>, dst: &DestinationIdentity) {
    match dst {
        DestinationIdentity::Engine(engine) => {
            variant(out, "Engine");
            engine_identity(out, engine);
        }
        DestinationIdentity::Node(node) => {
            variant(out, "Node");
            key(out, node.key());
        }
        DestinationIdentity::Topic(topic) => {
            variant(out, "Topic");
            key(out, topic.key());
        }
        DestinationIdentity::Relay(node) => {
            variant(out, "Relay");
            key(out, node.key());
        }
        DestinationIdentity::Domain(domain) => {
            variant(out, "Domain");
            key(out, domain.key());
        }
    }
}

fn scope(out: &mut Vec<u8>, scope: &RoutingScope) {
    match scope {
        RoutingScope::Local => text(out, "Local"),
        RoutingScope::Any => text(out, "Any"),
        RoutingScope::Domain(domain) => {
            variant(out, "Domain");
            key(out, domain.key());
        }
    }
}

fn engine_identity(out: &mut Vec<u8>, engine: &EngineIdentity) {
    head(out, MAJOR_ARRAY, 2);
    key(out, engine.node.key());
    text(out, engine.name.as_str());
}

/// A type-and-length head in its shortest form, as ciborium writes it.
fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, value as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// An enum variant with a value: a map of one entry, name to value.
fn variant(out: &mut Vec<u8>, name: &str) {
    head(out, MAJOR_MAP, 1);
    text(out, name);
}

fn key(out: &mut Vec<u8>, identity: &ExternalIdentity) {
    let key = identity.as_ed25519().as_bytes();
    head(out, MAJOR_BYTES, 1 + key.len() as u64);
    out.push(ED25519_TAG);
    out.extend_from_slice(key);
}

fn optional_uint(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => head(out, MAJOR_UINT, value),
        None => out.push(NULL),
    }
}

fn signature(out: &mut Vec<u8>, sig: Option<&Signature>) {
    match sig {
        Some(Signature::Ed25519(sig)) => {
            head(out, MAJOR_BYTES, 65);
            out.push(ED25519_TAG);
            out.extend_from_slice(&sig[..]);
        }
        None => out.push(NULL),
    }
}

/// Reads the CBOR body of a node frame written as [`encode`] writes it.
/// `None` means "not recognised here", never "invalid": the caller then
/// decodes through serde, which gives the verdict and its error.
pub(super) fn decode(bytes: &[u8]) -> Option<Frame> {
    let mut r = Reader { rest: bytes, backing: None };
    r.variant("Node")?;
    r.array(4)?;
    let src = NodeIdentity::new(r.key()?);
    let dst = NodeIdentity::new(r.key()?);
    r.variant("Engine")?;
    let message = r.engine_message()?;
    let sig = r.signature()?;
    if !r.rest.is_empty() {
        return None;
    }
    Some(Frame::Node(NodeMessage { src, dst, payload: NodePayload::Engine(message), sig }))
}

struct Reader<'a> {
    rest: &'a [u8],
    /// The shared buffer `rest` lies in, when there is one: a message body
    /// is then a view of it instead of a copy.
    backing: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(taken)
    }

    /// A definite head of `major` in its shortest form.
    fn head(&mut self, major: u8) -> Option<u64> {
        let first = *self.rest.first()?;
        if first >> 5 != major {
            return None;
        }
        self.rest = &self.rest[1..];
        let value = match first & 0x1f {
            small @ 0..=23 => return Some(u64::from(small)),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        let shortest = match first & 0x1f {
            24 => value >= 24,
            25 => value > 0xff,
            26 => value > 0xffff,
            _ => value > 0xffff_ffff,
        };
        shortest.then_some(value)
    }

    fn uint(&mut self) -> Option<u64> {
        self.head(MAJOR_UINT)
    }

    fn array(&mut self, len: u64) -> Option<()> {
        (self.head(MAJOR_ARRAY)? == len).then_some(())
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.head(MAJOR_BYTES)?).ok()?;
        self.take(len)
    }

    /// A byte string as an owned value: a view of the backing buffer when
    /// there is one, else a copy.
    fn owned_bytes(&mut self) -> Option<Bytes> {
        let backing = self.backing;
        let slice = self.bytes()?;
        Some(match backing {
            Some(buffer) => buffer.slice_ref(slice),
            None => Bytes::copy_from_slice(slice),
        })
    }

    fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.head(MAJOR_TEXT)?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn null(&mut self) -> bool {
        if self.rest.first() == Some(&NULL) {
            self.rest = &self.rest[1..];
            true
        } else {
            false
        }
    }

    /// The name of an enum variant that carries a value.
    fn variant_name(&mut self) -> Option<&'a str> {
        (self.head(MAJOR_MAP)? == 1).then_some(())?;
        self.text()
    }

    fn variant(&mut self, name: &str) -> Option<()> {
        (self.variant_name()? == name).then_some(())
    }

    fn key(&mut self) -> Option<ExternalIdentity> {
        ExternalIdentity::from_tagged_bytes("key", self.bytes()?).ok()
    }

    fn optional_uint(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        self.uint().map(Some)
    }

    fn signature(&mut self) -> Option<Option<Signature>> {
        if self.null() {
            return Some(None);
        }
        match self.bytes()?.split_first() {
            Some((&ED25519_TAG, sig)) => Some(Some(Signature::Ed25519(Box::new(sig.try_into().ok()?)))),
            _ => None,
        }
    }

    fn engine_identity(&mut self) -> Option<EngineIdentity> {
        self.array(2)?;
        let node = NodeIdentity::new(self.key()?);
        let name = EngineName::new(self.text()?).ok()?;
        Some(EngineIdentity::new(node, name))
    }

    fn destination(&mut self) -> Option<DestinationIdentity> {
        Some(match self.variant_name()? {
            "Engine" => DestinationIdentity::Engine(self.engine_identity()?),
            "Node" => DestinationIdentity::Node(NodeIdentity::new(self.key()?)),
            "Topic" => DestinationIdentity::Topic(TopicIdentity::new(self.key()?)),
            "Relay" => DestinationIdentity::Relay(NodeIdentity::new(self.key()?)),
            "Domain" => DestinationIdentity::Domain(DomainIdentity::new(self.key()?)),
            _ => return None,
        })
    }

    fn scope(&mut self) -> Option<RoutingScope> {
        match self.rest.first()? >> 5 {
            MAJOR_TEXT => match self.text()? {
                "Local" => Some(RoutingScope::Local),
                "Any" => Some(RoutingScope::Any),
                _ => None,
            },
            _ => {
                self.variant("Domain")?;
                Some(RoutingScope::Domain(DomainIdentity::new(self.key()?)))
            }
        }
    }

    fn engine_message(&mut self) -> Option<EngineMessage> {
        self.array(10)?;
        let src = self.engine_identity()?;
        let dst = self.destination()?;
        self.fields_after_addresses(src, dst, Form::Full, |name| BoundedText::new("text", name).ok())
    }

    /// Reads what [`fields_after_addresses`] writes and completes the
    /// message; `protocol_name` makes the protocol name from its text.
    fn fields_after_addresses(
        &mut self,
        src: EngineIdentity,
        dst: DestinationIdentity,
        form: Form,
        protocol_name: impl FnOnce(&str) -> Option<BoundedText<MAX_PROTOCOL_NAME_BYTES>>,
    ) -> Option<EngineMessage> {
        let id = MessageId(self.uint()?);
        let reply_to = self.optional_uint()?.map(MessageId);
        let expiry = self.optional_uint()?.map(Timestamp);
        let scope = self.scope()?;
        if form == Form::Full && !self.null() {
            return None;
        }
        self.array(2)?;
        let name = protocol_name(self.text()?)?;
        let version = u16::try_from(self.uint()?).ok()?;
        let body = Body::new(self.owned_bytes()?).ok()?;
        let sig = self.signature()?;
        let protocol = ProtocolId { name, version };
        Some(EngineMessage { src, dst, id, reply_to, expiry, scope, prefs: None, protocol, body, sig })
    }
}

/// The two ends of an authenticated connection, seen from this node: what
/// a channel frame leaves out because the connection already proves it.
/// Sent frames come from `local` to `peer`; received ones the other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEnds {
    pub local: NodeIdentity,
    pub peer: NodeIdentity,
}

/// Writes the compact body of a node message sent from `ends.local` to
/// `ends.peer` by one of its own engines: the node identities that the
/// connection proves are left out, and so is the destination node when it
/// is the peer. Any other frame is [`NotChannel`], and nothing is written.
///
/// Layout: an array of 10: source engine name, destination (the engine
/// name alone when the engine is on the peer, else as in the full form),
/// id, reply-to, expiry, scope, protocol, body, engine signature, node
/// signature.
/// A body of `defer_from` bytes or more is left out (see [`DeferredBody`]).
pub(super) fn encode_on_channel(
    frame: &Frame,
    ends: ChannelEnds,
    out: &mut Vec<u8>,
    defer_from: usize,
) -> Result<Option<DeferredBody>, NotChannel> {
    let Frame::Node(node) = frame else { return Err(NotChannel) };
    let NodePayload::Engine(m) = &node.payload else { return Err(NotChannel) };
    if node.src != ends.local || node.dst != ends.peer || m.src.node != ends.local || m.prefs.is_some() {
        return Err(NotChannel);
    }
    head(out, MAJOR_ARRAY, 10);
    text(out, m.src.name.as_str());
    match &m.dst {
        DestinationIdentity::Engine(engine) if engine.node == ends.peer => text(out, engine.name.as_str()),
        _ => destination(out, &m.dst),
    }
    let deferred = fields_after_addresses(out, m, Form::Channel, defer_from);
    signature(out, node.sig.as_ref());
    Ok(deferred)
}

/// The frame is not a message in the channel form; nothing was written.
#[derive(Debug)]
pub(super) struct NotChannel;

/// The last names a connection's reader saw. A stream of messages between
/// the same engines then shares its name strings instead of allocating
/// them for every message.
#[derive(Debug, Default)]
pub struct NameCache {
    src: Option<EngineName>,
    dst: Option<EngineName>,
    protocol: Option<BoundedText<MAX_PROTOCOL_NAME_BYTES>>,
}

/// The cached value when it has this text, else a new one made from it,
/// which then replaces it in the cache.
fn reuse<T: Clone>(
    slot: &mut Option<T>,
    text: &str,
    as_str: fn(&T) -> &str,
    make: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    match slot {
        Some(cached) if as_str(cached) == text => Some(cached.clone()),
        _ => {
            let fresh = make(text)?;
            *slot = Some(fresh.clone());
            Some(fresh)
        }
    }
}

/// Reads a body written by [`encode_on_channel`] at the other end of the
/// connection, rebuilding the node message it stands for. `None` means the
/// bytes are not a valid channel message. With `backing`, the buffer that
/// `bytes` lies in, the message body is a view of it rather than a copy.
pub(super) fn decode_on_channel(
    bytes: &[u8],
    backing: Option<&Bytes>,
    ends: ChannelEnds,
    names: &mut NameCache,
) -> Option<Frame> {
    // A view is cut from `backing`, so `bytes` must lie inside it.
    debug_assert!(backing.is_none_or(|b| {
        let (inside, part) = (b.as_ptr_range(), bytes.as_ptr_range());
        bytes.is_empty() || (inside.start <= part.start && part.end <= inside.end)
    }));
    let mut r = Reader { rest: bytes, backing };
    r.array(10)?;
    let src = EngineIdentity::new(
        ends.peer,
        reuse(&mut names.src, r.text()?, EngineName::as_str, |n| EngineName::new(n).ok())?,
    );
    let dst = match r.rest.first()? >> 5 {
        MAJOR_TEXT => {
            let name = reuse(&mut names.dst, r.text()?, EngineName::as_str, |n| EngineName::new(n).ok())?;
            DestinationIdentity::Engine(EngineIdentity::new(ends.local, name))
        }
        _ => r.destination()?,
    };
    let message = r.fields_after_addresses(src, dst, Form::Channel, |name| {
        reuse(&mut names.protocol, name, BoundedText::as_str, |n| BoundedText::new("text", n).ok())
    })?;
    let node_sig = r.signature()?;
    if !r.rest.is_empty() {
        return None;
    }
    Some(Frame::Node(NodeMessage {
        src: ends.peer,
        dst: ends.local,
        payload: NodePayload::Engine(message),
        sig: node_sig,
    }))
}

#[cfg(test)]
mod tests {
    use netmachine_domain::strategies;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{from_cbor, to_cbor};

    fn serde_bytes_of(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        to_cbor(frame, &mut out).expect("encodes");
        out
    }

    /// Node frames with engine payloads: what this module is for.
    fn engine_frames() -> impl Strategy<Value = Frame> {
        (strategies::node_message(), strategies::engine_message()).prop_map(|(mut node, message)| {
            node.payload = NodePayload::Engine(message);
            Frame::Node(node)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Byte for byte what ciborium writes, for every frame taken.
        #[test]
        fn writes_what_serde_writes(frame in prop_oneof![engine_frames(), strategies::frame()]) {
            let mut fast = Vec::new();
            if encode(&frame, &mut fast) {
                prop_assert_eq!(fast, serde_bytes_of(&frame));
            } else {
                prop_assert!(fast.is_empty(), "declined after writing");
            }
        }

        /// Reads back every frame it writes, and declines the rest.
        #[test]
        fn reads_what_it_writes(frame in prop_oneof![engine_frames(), strategies::frame()]) {
            let bytes = serde_bytes_of(&frame);
            let mut fast = Vec::new();
            match decode(&bytes) {
                Some(decoded) => prop_assert_eq!(decoded, frame),
                None => prop_assert!(!encode(&frame, &mut fast), "wrote a frame it cannot read"),
            }
        }

        /// On damaged input it never accepts what serde refuses, nor reads
        /// a different value than serde reads.
        #[test]
        fn agrees_with_serde_on_damaged_frames(
            frame in engine_frames(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = serde_bytes_of(&frame);
            for (index, value) in edits {
                let i = index.index(bytes.len());
                bytes[i] = value;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Some(fast) = decode(&bytes) {
                let slow: Frame = from_cbor(&bytes).map_err(|e| TestCaseError::fail(format!("serde refused what the fast path took: {e}")))?;
                prop_assert_eq!(fast, slow);
            }
        }
    }

    /// A frame one node's engine sends to another node, and the two views
    /// of the connection it crosses.
    fn channel_frames() -> impl Strategy<Value = (Frame, ChannelEnds, ChannelEnds)> {
        (engine_frames(), any::<bool>()).prop_map(|(mut frame, to_peer_engine)| {
            let Frame::Node(node) = &mut frame else { unreachable!("engine frames are node frames") };
            let (sender, receiver) = (node.src, node.dst);
            let NodePayload::Engine(message) = &mut node.payload else { unreachable!("engine payload") };
            message.src.node = sender;
            message.prefs = None;
            if to_peer_engine {
                if let DestinationIdentity::Engine(engine) = &mut message.dst {
                    engine.node = receiver;
                }
            }
            (frame, ChannelEnds { local: sender, peer: receiver }, ChannelEnds { local: receiver, peer: sender })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// What one end writes in the channel form, the other reads back
        /// as the same node message.
        #[test]
        fn channel_messages_round_trip((frame, sender, receiver) in channel_frames()) {
            let mut bytes = Vec::new();
            prop_assert!(matches!(encode_on_channel(&frame, sender, &mut bytes, usize::MAX), Ok(None)));
            prop_assert!(bytes.len() + 100 < serde_bytes_of(&frame).len(), "the channel form is not compact");
            let mut names = NameCache::default();
            prop_assert_eq!(decode_on_channel(&bytes, None, receiver, &mut names), Some(frame.clone()));
            // Again with the names cached: the same value.
            prop_assert_eq!(decode_on_channel(&bytes, None, receiver, &mut names), Some(frame.clone()));
            // From a shared buffer: the same value, its body a view of
            // that buffer rather than a copy.
            let shared = Bytes::from(bytes);
            let decoded = decode_on_channel(&shared, Some(&shared), receiver, &mut names);
            prop_assert_eq!(decoded.clone(), Some(frame));
            if let Some(Frame::Node(NodeMessage { payload: NodePayload::Engine(m), .. })) = decoded {
                let body: &[u8] = m.body.as_bytes();
                let inside = shared.as_ptr_range();
                prop_assert!(body.is_empty() || inside.contains(&body.as_ptr()), "the body was copied");
            }
        }

        /// A node message that does not go from one end to the other, or
        /// that speaks for another node's engine, is not written in the
        /// channel form: the full form keeps it checkable.
        #[test]
        fn only_messages_between_the_ends_take_the_channel_form(
            (frame, sender, _receiver) in channel_frames(),
            stranger in strategies::node_identity(),
            which in 0..3u8,
        ) {
            let mut frame = frame;
            let Frame::Node(node) = &mut frame else { unreachable!("node frame") };
            let still_between_the_ends = match which {
                0 => { node.src = stranger; stranger == sender.local }
                1 => { node.dst = stranger; stranger == sender.peer }
                _ => {
                    let NodePayload::Engine(m) = &mut node.payload else { unreachable!("engine payload") };
                    m.src.node = stranger;
                    stranger == sender.local
                }
            };
            let mut bytes = Vec::new();
            prop_assert_eq!(encode_on_channel(&frame, sender, &mut bytes, usize::MAX).is_ok(), still_between_the_ends);
            prop_assert_eq!(bytes.is_empty(), !still_between_the_ends);
        }

        /// Damaged channel messages never panic, and whatever still reads
        /// is a message from the peer's own engine to this node.
        #[test]
        fn damaged_channel_messages_are_refused_or_stay_between_the_ends(
            (frame, sender, receiver) in channel_frames(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Vec::new();
            prop_assert!(matches!(encode_on_channel(&frame, sender, &mut bytes, usize::MAX), Ok(None)));
            for (index, value) in edits {
                let i = index.index(bytes.len());
                bytes[i] = value;
            }
            if let Some(Frame::Node(node)) = decode_on_channel(&bytes, None, receiver, &mut NameCache::default()) {
                prop_assert_eq!((node.src, node.dst), (receiver.peer, receiver.local));
                let NodePayload::Engine(m) = node.payload else { return Err(TestCaseError::fail("not an engine message")) };
                prop_assert_eq!(m.src.node, receiver.peer);
            }
        }
    }

    #[test]
    fn non_minimal_integers_and_trailing_bytes_are_left_to_serde() {
        let frame = Frame::Ack(netmachine_domain::Ack { received: 1 });
        assert!(decode(&serde_bytes_of(&frame)).is_none());
        let mut reader = Reader { rest: &[0x18, 0x05], backing: None };
        assert_eq!(reader.uint(), None, "5 written in two bytes is not the shortest form");
        let mut reader = Reader { rest: &[0x18, 0x18], backing: None };
        assert_eq!(reader.uint(), Some(24));
    }
}
