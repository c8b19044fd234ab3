use netmachine_domain::strategies;
use netmachine_domain::*;
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
    fn encoding_is_deterministic(frame in strategies::frame()) {
        let codec = CborCodec::default();
        let once = codec.encode(&frame).expect("encodes");
        let decoded = codec.decode(&once).expect("decodes");
        prop_assert_eq!(codec.encode(&decoded).expect("encodes"), once);
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

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = CborCodec::default().decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_bodies_behind_a_valid_header_never_panics(kind in 0u8..6, body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut bytes = vec![FORMAT_VERSION, kind];
        bytes.extend(body);
        let _ = CborCodec::default().decode(&bytes);
    }
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

#[test]
fn an_oversize_body_inside_a_frame_is_refused() {
    // A CBOR byte string that claims more than the body limit: the bounded
    // type refuses it even when the frame limit would allow it.
    let too_big = Body::new(vec![0u8; netmachine_domain::limits::MAX_BODY_BYTES + 1]);
    assert!(too_big.is_err());
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
