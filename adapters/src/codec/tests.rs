use netmachine_domain::*;
use netmachine_domain::{samples, strategies};
use netmachine_engines::ports::{verify_signed, Signer};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;
use crate::crypto::{Ed25519Keys, RingVerifier};

fn keys() -> Ed25519Keys {
    Ed25519Keys::generate().expect("keygen")
}

/// A frame of every signed kind, validly signed by its subject.
fn signed_frames() -> impl Strategy<Value = Frame> {
    prop_oneof![
        strategies::node_advert_body().prop_map(|mut body| {
            let k = keys();
            body.id = k.node_identity();
            let sig = k.sign(&NodeAdvert::signing_bytes_of(&body));
            Frame::NodeAdvert(Advert::from_parts(body, sig))
        }),
        strategies::topic_advert_body().prop_map(|mut body| {
            let k = keys();
            body.topic = TopicIdentity::new(k.public());
            let sig = k.sign(&TopicAdvert::signing_bytes_of(&body));
            Frame::TopicAdvert(Advert::from_parts(body, sig))
        }),
        strategies::domain_advert_body().prop_map(|mut body| {
            let k = keys();
            body.id = DomainIdentity::new(k.public());
            let sig = k.sign(&DomainAdvert::signing_bytes_of(&body));
            Frame::DomainAdvert(Advert::from_parts(body, sig))
        }),
        (strategies::engine_message(), strategies::node_identity()).prop_map(|(mut message, dst)| {
            let k = keys();
            message.src.node = k.node_identity();
            message.sig = Some(k.sign(&message.signing_bytes()));
            let mut node =
                NodeMessage { src: k.node_identity(), dst, payload: NodePayload::Engine(message), sig: None };
            node.sig = Some(k.sign(&node.signing_bytes()));
            Frame::Node(node)
        }),
    ]
}

/// Verifies every signature a frame carries.
fn frame_verifies(frame: &Frame) -> bool {
    let v = RingVerifier;
    match frame {
        Frame::NodeAdvert(a) => verify_signed(&v, a).is_ok(),
        Frame::TopicAdvert(a) => verify_signed(&v, a).is_ok(),
        Frame::DomainAdvert(a) => verify_signed(&v, a).is_ok(),
        Frame::Node(n) => {
            let inner_ok = match &n.payload {
                NodePayload::Engine(m) => verify_signed(&v, m).is_ok(),
                NodePayload::Relay(_) => true,
            };
            inner_ok && verify_signed(&v, n).is_ok()
        }
        // Handshake and acknowledgement frames carry no signature, so they
        // never pass as signed.
        Frame::Hello(_) | Frame::HelloReply(_) | Frame::Ack(_) => false,
    }
}

fn signing_bytes_of(frame: &Frame) -> (Vec<u8>, Signature, ExternalIdentity) {
    fn parts<T: Signed>(v: &T) -> (Vec<u8>, Signature, ExternalIdentity) {
        (v.signing_bytes(), v.signature().cloned().expect("signed"), v.signer())
    }
    match frame {
        Frame::NodeAdvert(a) => parts(a),
        Frame::TopicAdvert(a) => parts(a),
        Frame::DomainAdvert(a) => parts(a),
        Frame::Node(n) => parts(n),
        Frame::Hello(_) | Frame::HelloReply(_) | Frame::Ack(_) => unreachable!("signed_frames makes signed kinds only"),
    }
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in strategies::frame()) {
        let codec = CborCodec::default();
        let bytes = codec.encode(&frame).expect("encodes");
        prop_assert_eq!(codec.decode(&bytes).expect("decodes"), frame);
    }

    #[test]
    fn a_signature_over_the_canonical_bytes_verifies(frame in signed_frames()) {
        prop_assert!(frame_verifies(&frame));
        let codec = CborCodec::default();
        let decoded = codec.decode(&codec.encode(&frame).expect("encodes")).expect("decodes");
        prop_assert!(frame_verifies(&decoded));
    }

    /// The signature covers every byte it is made over.
    #[test]
    fn changing_any_signed_byte_breaks_the_signature(frame in signed_frames(), index in any::<prop::sample::Index>(), flip in 1u8..) {
        let (mut bytes, sig, signer) = signing_bytes_of(&frame);
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(netmachine_engines::ports::Verifier::verify(&RingVerifier, &signer, &bytes, &sig).is_err());
    }

    /// Changing a byte of an encoded signed frame either makes it
    /// undecodable or makes a different value whose signature fails.
    #[test]
    fn changing_any_encoded_byte_is_caught(frame in signed_frames(), index in any::<prop::sample::Index>(), flip in 1u8..) {
        let codec = CborCodec::default();
        let mut bytes = codec.encode(&frame).expect("encodes");
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(decoded) = codec.decode(&bytes) {
            if decoded != frame {
                prop_assert!(!frame_verifies(&decoded), "a changed frame still verified: byte {}", i);
            }
        }
    }

    /// A valid frame with a few bytes changed, cut, added or repeated
    /// reaches every branch of the decoder. Whatever decodes is a frame
    /// whose encoding is exactly the bytes read: no two encodings stand for
    /// one frame.
    #[test]
    fn damaged_frames_decode_only_to_their_own_encoding(frame in strategies::frame(), changes in strategies::mutations()) {
        let codec = CborCodec::default();
        let mut bytes = codec.encode(&frame).expect("encodes");
        strategies::mutate(&mut bytes, &changes);
        if let Ok(decoded) = codec.decode(&bytes) {
            prop_assert_eq!(codec.encode(&decoded).expect("re-encodes"), bytes);
        }
    }

    /// The same for frames read on a connection, channel messages included.
    #[test]
    fn damaged_channel_frames_decode_only_to_their_own_encoding(
        frame in prop_oneof![channel_frames(), strategies::frame()],
        changes in strategies::mutations(),
    ) {
        let codec = CborCodec::default();
        let mut bytes = Vec::new();
        codec.encode_on_channel(&frame, SENDER, &mut bytes).expect("encodes");
        strategies::mutate(&mut bytes, &changes);
        if let Ok(decoded) = codec.decode_on_channel(&bytes, RECEIVER, &mut NameCache::default()) {
            let mut again = Vec::new();
            if bytes[1] == CHANNEL_MESSAGE_KIND {
                codec.encode_on_channel(&decoded, SENDER, &mut again).expect("re-encodes");
            } else {
                again = codec.encode(&decoded).expect("re-encodes");
            }
            prop_assert_eq!(again, bytes);
        }
    }
}

const A: NodeIdentity = samples::NODE_A;
const B: NodeIdentity = samples::NODE_B;
const SENDER: ChannelEnds = ChannelEnds { local: A, peer: B };
const RECEIVER: ChannelEnds = ChannelEnds { local: B, peer: A };

/// Node messages from A's engines to B: what the channel form carries.
fn channel_frames() -> impl Strategy<Value = Frame> {
    strategies::engine_message().prop_map(|mut message| {
        message.src.node = A;
        message.prefs = None;
        Frame::Node(NodeMessage { src: A, dst: B, payload: NodePayload::Engine(message), sig: None })
    })
}

#[test]
fn oversize_frames_are_refused_before_decoding() {
    let codec = CborCodec::with_max_frame(1024);
    let bytes = vec![FORMAT_VERSION; 1025];
    assert_eq!(codec.decode(&bytes), Err(CodecError::TooLarge { len: 1025, max: 1024 }));
}

#[test]
fn frames_over_the_limit_are_not_encoded() {
    let codec = CborCodec::with_max_frame(64);
    let keys = keys();
    let body =
        NodeAdvertBody::new(keys.node_identity(), vec![], Some("a long enough name to pass 64 bytes"), 1, Timestamp(1))
            .expect("valid");
    let sig = keys.sign(&NodeAdvert::signing_bytes_of(&body));
    let frame = Frame::NodeAdvert(Advert::from_parts(body, sig));
    assert!(matches!(codec.encode(&frame), Err(CodecError::TooLarge { .. })));
}

#[test]
fn header_errors_are_typed() {
    let codec = CborCodec::default();
    assert_eq!(codec.decode(&[]), Err(CodecError::Truncated { len: 0, needed: 2 }));
    assert_eq!(codec.decode(&[9, 1, 0]), Err(CodecError::UnsupportedVersion(9)));
    assert_eq!(codec.decode(&[FORMAT_VERSION, 77, 0]), Err(CodecError::UnknownKind(77)));
    assert!(matches!(codec.decode(&[FORMAT_VERSION, 1, 0xff]), Err(CodecError::Malformed(_))));
}

#[test]
fn a_header_that_lies_about_the_kind_is_refused() {
    let codec = CborCodec::default();
    let keys = keys();
    let body = NodeAdvertBody::new(keys.node_identity(), vec![], None, 1, Timestamp(1)).expect("valid");
    let sig = keys.sign(&NodeAdvert::signing_bytes_of(&body));
    let mut bytes = codec.encode(&Frame::NodeAdvert(Advert::from_parts(body, sig))).expect("encodes");
    bytes[1] = FrameKind::TopicAdvert as u8;
    assert!(matches!(codec.decode(&bytes), Err(CodecError::KindMismatch { .. })));
}

#[test]
fn trailing_bytes_are_refused() {
    let codec = CborCodec::default();
    let keys = keys();
    let body = NodeAdvertBody::new(keys.node_identity(), vec![], None, 1, Timestamp(1)).expect("valid");
    let sig = keys.sign(&NodeAdvert::signing_bytes_of(&body));
    let mut bytes = codec.encode(&Frame::NodeAdvert(Advert::from_parts(body, sig))).expect("encodes");
    bytes.push(0);
    assert!(matches!(codec.decode(&bytes), Err(CodecError::Malformed(_))));
}

/// A frame within the frame limit whose body is one byte over the body
/// limit: the byte-string header is rewritten to claim one more byte, and
/// that byte is added.
fn frame_with_a_body_one_byte_over(channel: bool) -> Vec<u8> {
    let max = netmachine_domain::limits::MAX_BODY_BYTES;
    let message = EngineMessage {
        src: EngineIdentity::new(A, EngineName::new("a").expect("valid")),
        dst: DestinationIdentity::Engine(EngineIdentity::new(B, EngineName::new("b").expect("valid"))),
        id: MessageId(1),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: ProtocolId::new("test", 1).expect("valid"),
        body: Body::new(vec![0xAA; max]).expect("at the limit"),
        sig: None,
    };
    let frame = Frame::Node(NodeMessage { src: A, dst: B, payload: NodePayload::Engine(message), sig: None });
    let codec = CborCodec::default();
    let mut bytes = Vec::new();
    if channel {
        codec.encode_on_channel(&frame, SENDER, &mut bytes).expect("encodes");
    } else {
        bytes = codec.encode(&frame).expect("encodes");
    }
    // A CBOR byte string of `max` bytes: 0x5a, then a 32-bit length.
    let mut header = vec![0x5a];
    header.extend_from_slice(&u32::try_from(max).expect("fits").to_be_bytes());
    let at = bytes.windows(5).position(|w| w == header.as_slice()).expect("the body's header");
    bytes[at + 1..at + 5].copy_from_slice(&u32::try_from(max + 1).expect("fits").to_be_bytes());
    bytes.insert(at + 5, 0xAA);
    assert!(bytes.len() <= codec.max_frame(), "the frame itself is within its limit");
    bytes
}

#[test]
fn an_oversize_body_inside_a_frame_is_refused_by_every_decoder() {
    let full = frame_with_a_body_one_byte_over(false);
    assert_eq!(full[1], FrameKind::Node as u8);
    let body = &full[HEADER_LEN..];
    assert_eq!(engine_frame::decode(body), None, "the hand-written reader refuses it");
    assert!(matches!(from_cbor::<Frame>(body), Err(CodecError::Malformed(_))), "serde refuses it");
    assert!(matches!(CborCodec::default().decode(&full), Err(CodecError::Malformed(_))));

    let channel = frame_with_a_body_one_byte_over(true);
    assert_eq!(channel[1], CHANNEL_MESSAGE_KIND);
    let decoded = CborCodec::default().decode_on_channel(&channel, RECEIVER, &mut NameCache::default());
    assert!(matches!(decoded, Err(CodecError::Malformed(_))), "{decoded:?}");
}

#[test]
fn a_channel_message_needs_its_connection() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut message = strategies::engine_message().new_tree(&mut runner).expect("value").current();
    let (a, b) = (NodeIdentity::ed25519([1; 32]), NodeIdentity::ed25519([2; 32]));
    message.src.node = a;
    message.prefs = None;
    let frame = Frame::Node(NodeMessage { src: a, dst: b, payload: NodePayload::Engine(message), sig: None });
    let codec = CborCodec::default();
    let mut bytes = Vec::new();
    codec.encode_on_channel(&frame, ChannelEnds { local: a, peer: b }, &mut bytes).expect("encodes");
    assert_eq!(bytes[1], CHANNEL_MESSAGE_KIND);
    assert!(matches!(codec.decode(&bytes), Err(CodecError::Malformed(_))), "no connection, no channel form");
    let receiver = ChannelEnds { local: b, peer: a };
    assert_eq!(codec.decode_on_channel(&bytes, receiver, &mut NameCache::default()), Ok(frame));
    // Other kinds read the same on a connection as alone.
    let ack = codec.encode(&Frame::Ack(Ack { received: 3 })).expect("encodes");
    assert_eq!(codec.decode_on_channel(&ack, receiver, &mut NameCache::default()), Ok(Frame::Ack(Ack { received: 3 })));
}

/// One frame of every kind, every optional field present, with fixed
/// (invalid) signatures: decoding checks no signature.
fn golden_frames() -> Vec<(&'static str, Frame)> {
    let sig = |b: u8| Signature::Ed25519(Box::new([b; 64]));
    // Without transport preferences: the hand-written writer's case.
    let message = EngineMessage { prefs: None, sig: Some(sig(9)), ..samples::engine_message() };
    let plain = EngineMessage { reply_to: None, expiry: None, scope: RoutingScope::Any, sig: None, ..message.clone() };
    let node = |payload| Frame::Node(NodeMessage { src: A, dst: B, payload, sig: Some(sig(8)) });
    let relay = RelayMessage {
        src: A,
        dst: NodeIdentity::ed25519([3; 32]),
        expiry: Some(Timestamp(5)),
        sealed: SealedBytes::new(vec![1, 2, 3]).expect("small"),
    };
    let node_advert = samples::node_advert_body();
    let topic = samples::topic_advert_body();
    let domain = samples::domain_advert_body();
    let hello = Hello {
        versions: VersionRange { min: 1, max: 2 },
        boot: 0x0102_0304_0506_0708,
        own_advert_version: 3,
        held_advert_version_of_peer: 4,
    };
    let reply = HelloReply {
        status: HandshakeStatus::OverCapacity,
        versions: VersionRange { min: 1, max: 1 },
        boot: 9,
        own_advert_version: 10,
        held_advert_version_of_peer: 11,
    };
    vec![
        ("node message", node(NodePayload::Engine(message))),
        (
            "node message, plain",
            Frame::Node(NodeMessage { src: A, dst: B, payload: NodePayload::Engine(plain), sig: None }),
        ),
        ("relay message", node(NodePayload::Relay(relay))),
        ("node advert", Frame::NodeAdvert(Advert::from_parts(node_advert, sig(1)))),
        ("topic advert", Frame::TopicAdvert(Advert::from_parts(topic, sig(2)))),
        ("domain advert", Frame::DomainAdvert(Advert::from_parts(domain, sig(3)))),
        ("hello", Frame::Hello(hello)),
        ("hello reply", Frame::HelloReply(reply)),
        ("ack", Frame::Ack(Ack { received: 1_000_000 })),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The wire format, byte for byte: a change to any frame's encoding fails
/// here and must come with a new format version.
#[test]
fn every_frame_kind_has_fixed_bytes() {
    let codec = CborCodec::default();
    let mut mismatches = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for ((label, frame), expected) in golden_frames().into_iter().zip(GOLDEN_FRAMES) {
        let bytes = codec.encode(&frame).expect("encodes");
        kinds.insert(bytes[1]);
        if hex(&bytes) != expected {
            mismatches.push(format!("{label}:\n    \"{}\",", hex(&bytes)));
        }
        assert_eq!(codec.decode(&bytes).as_ref(), Ok(&frame), "{label} reads back");
    }
    // The channel form of the plain node message (kind 8).
    let (_, plain) = golden_frames().swap_remove(1);
    let mut channel = Vec::new();
    codec.encode_on_channel(&plain, SENDER, &mut channel).expect("encodes");
    kinds.insert(channel[1]);
    if hex(&channel) != GOLDEN_CHANNEL_MESSAGE {
        mismatches.push(format!("channel message:\n    \"{}\"", hex(&channel)));
    }
    assert_eq!(codec.decode_on_channel(&channel, RECEIVER, &mut NameCache::default()), Ok(plain));
    assert!(mismatches.is_empty(), "encodings changed:\n{}", mismatches.join("\n"));
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), (1..=8).collect::<Vec<u8>>(), "every kind is covered");
}

const GOLDEN_FRAMES: [&str; 9] = [
    "0101a1644e6f64658458210101010101010101010101010101010101010101010101010101010101010101015821010202020202020202020202020202020202020202020202020202020202020202a166456e67696e658a8258210101010101010101010101010101010101010101010101010101010101010101016673656e646572a166456e67696e65825821010202020202020202020202020202020202020202020202020202020202020202687265636569766572182a18291b0000018bcfe56800a166446f6d61696e5821010505050505050505050505050505050505050505050505050505050505050505f6826463686174034568656c6c6f5841010909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090909090958410108080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808",
    "0101a1644e6f64658458210101010101010101010101010101010101010101010101010101010101010101015821010202020202020202020202020202020202020202020202020202020202020202a166456e67696e658a8258210101010101010101010101010101010101010101010101010101010101010101016673656e646572a166456e67696e65825821010202020202020202020202020202020202020202020202020202020202020202687265636569766572182af6f663416e79f6826463686174034568656c6c6ff6f6",
    "0101a1644e6f64658458210101010101010101010101010101010101010101010101010101010101010101015821010202020202020202020202020202020202020202020202020202020202020202a16552656c61798458210101010101010101010101010101010101010101010101010101010101010101015821010303030303030303030303030303030303030303030303030303030303030303054301020358410108080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808",
    "0102a16a4e6f6465416476657274a264626f6479a5626964582101010101010101010101010101010101010101010101010101010101010101010165616464727382a26761646472657373a26870726f746f636f6c645175696366736f636b6574a16256348284187f0000011910046677656967687407a26761646472657373a26870726f746f636f6c66546c7354637066736f636b6574a16256368290000000000000000000000000000000011910056677656967687407646e616d65666e6f64652d616776657273696f6e0367637265617465641903e86373696758410101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101",
    "0103a16b546f706963416476657274a264626f6479a665746f70696358210104040404040404040404040404040404040404040404040404040404040404046a7075626c6973686572738158210101010101010101010101010101010101010101010101010101010101010101016672656c617973815821010202020202020202020202020202020202020202020202020202020202020202647461677381646e6577736776657273696f6e0267637265617465641907d06373696758410102020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202",
    "0104a16c446f6d61696e416476657274a264626f6479a66269645821010505050505050505050505050505050505050505050505050505050505050505656e6f6465738258210101010101010101010101010101010101010101010101010101010101010101015821010202020202020202020202020202020202020202020202020202020202020202646a6f696ea169416c6c6f774c6973748158210101010101010101010101010101010101010101010101010101010101010101016572756c6573a469617070726f76657273806a636572745f74746c5f731a00015180677265766f6b6564806966756c6c5f6d657368f46776657273696f6e046763726561746564190bb86373696758410103030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303",
    "0105a16548656c6c6fa46876657273696f6e73a2636d696e01636d61780264626f6f741b0102030405060708726f776e5f6164766572745f76657273696f6e03781b68656c645f6164766572745f76657273696f6e5f6f665f7065657204",
    "0106a16a48656c6c6f5265706c79a5667374617475736c4f76657243617061636974796876657273696f6e73a2636d696e01636d61780164626f6f7409726f776e5f6164766572745f76657273696f6e0a781b68656c645f6164766572745f76657273696f6e5f6f665f706565720b",
    "0107a16341636ba16872656365697665641a000f4240",
];
const GOLDEN_CHANNEL_MESSAGE: &str =
    "01088a6673656e646572687265636569766572182af6f663416e79826463686174034568656c6c6ff6f6";
