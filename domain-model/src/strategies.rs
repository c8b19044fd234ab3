//! Proptest strategies for every domain type, shared by the tests of every
//! crate (enable the `strategies` feature). Signatures made here are random
//! bytes: tests that need valid ones sign with a real signer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::*;

pub fn key_bytes() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

pub fn node_identity() -> impl Strategy<Value = NodeIdentity> {
    key_bytes().prop_map(NodeIdentity::ed25519)
}

pub fn topic_identity() -> impl Strategy<Value = TopicIdentity> {
    key_bytes().prop_map(TopicIdentity::ed25519)
}

pub fn domain_identity() -> impl Strategy<Value = DomainIdentity> {
    key_bytes().prop_map(DomainIdentity::ed25519)
}

pub fn engine_name() -> impl Strategy<Value = EngineName> {
    "[a-z0-9_.-]{1,64}".prop_map(|s| EngineName::new(&s).expect("strategy makes valid names"))
}

pub fn engine_identity() -> impl Strategy<Value = EngineIdentity> {
    (node_identity(), engine_name()).prop_map(|(node, name)| EngineIdentity::new(node, name))
}

pub fn destination() -> impl Strategy<Value = DestinationIdentity> {
    prop_oneof![
        engine_identity().prop_map(DestinationIdentity::Engine),
        node_identity().prop_map(DestinationIdentity::Node),
        topic_identity().prop_map(DestinationIdentity::Topic),
        node_identity().prop_map(DestinationIdentity::Relay),
        domain_identity().prop_map(DestinationIdentity::Domain),
    ]
}

pub fn signature() -> impl Strategy<Value = Signature> {
    vec(any::<u8>(), 64).prop_map(|bytes| {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes);
        Signature::Ed25519(Box::new(sig))
    })
}

pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (0u64..4_000_000_000_000).prop_map(Timestamp)
}

pub fn transport_address() -> impl Strategy<Value = TransportAddress> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ];
    let protocol = prop_oneof![Just(TransportProtocol::Quic), Just(TransportProtocol::TlsTcp)];
    (protocol, ip, 1u16..).prop_map(|(protocol, ip, port)| TransportAddress::new(protocol, SocketAddr::new(ip, port)))
}

pub fn weighted_address() -> impl Strategy<Value = WeightedAddress> {
    (transport_address(), any::<u8>()).prop_map(|(address, weight)| WeightedAddress { address, weight })
}

pub fn node_advert_body() -> impl Strategy<Value = NodeAdvertBody> {
    (
        node_identity(),
        vec(weighted_address(), 0..=limits::MAX_ADVERT_ADDRESSES),
        option::of("[a-zA-Z0-9 ._-]{0,64}"),
        any::<u64>(),
        timestamp(),
    )
        .prop_map(|(id, addrs, name, version, created)| {
            NodeAdvertBody::new(id, addrs, name.as_deref(), version, created).expect("strategy respects limits")
        })
}

pub fn topic_advert_body() -> impl Strategy<Value = TopicAdvertBody> {
    (
        topic_identity(),
        vec(node_identity(), 1..8),
        vec(node_identity(), 0..4),
        vec("[a-z0-9-]{0,16}", 0..4),
        any::<u64>(),
        timestamp(),
    )
        .prop_map(|(topic, publishers, relays, tags, version, created)| {
            let tags = tags.iter().map(String::as_str).collect();
            TopicAdvertBody::new(topic, publishers, relays, tags, version, created).expect("strategy respects limits")
        })
}

pub fn join_policy() -> impl Strategy<Value = JoinPolicy> {
    prop_oneof![
        Just(JoinPolicy::Open),
        any::<[u8; 32]>().prop_map(|key_hash| JoinPolicy::PreSharedKey { key_hash }),
        vec(node_identity(), 0..4)
            .prop_map(|nodes| JoinPolicy::AllowList(BoundedVec::new("allow-list", nodes).expect("small"))),
        Just(JoinPolicy::OwnerApproves),
    ]
}

pub fn domain_advert_body() -> impl Strategy<Value = DomainAdvertBody> {
    (domain_identity(), vec(node_identity(), 0..6), join_policy(), any::<u64>(), timestamp()).prop_map(
        |(id, nodes, join, version, created)| {
            DomainAdvertBody::new(id, nodes, join, version, created).expect("strategy respects limits")
        },
    )
}

pub fn routing_scope() -> impl Strategy<Value = RoutingScope> {
    prop_oneof![Just(RoutingScope::Local), domain_identity().prop_map(RoutingScope::Domain), Just(RoutingScope::Any)]
}

pub fn transport_prefs() -> impl Strategy<Value = TransportPrefs> {
    (
        any::<bool>(),
        any::<bool>(),
        option::of(prop_oneof![Just(TransportProtocol::Quic), Just(TransportProtocol::TlsTcp)]),
    )
        .prop_map(|(ordered, reliable, protocol)| TransportPrefs {
            ordering: if ordered { Ordering::Ordered } else { Ordering::Unordered },
            reliability: if reliable { Reliability::Reliable } else { Reliability::Unreliable },
            path: PathKind::Direct,
            protocol,
        })
}

pub fn protocol_id() -> impl Strategy<Value = ProtocolId> {
    ("[a-z][a-z0-9/._-]{0,30}", any::<u16>())
        .prop_map(|(name, version)| ProtocolId::new(&name, version).expect("strategy makes valid names"))
}

pub fn body() -> impl Strategy<Value = Body> {
    vec(any::<u8>(), 0..512).prop_map(|bytes| Body::new(bytes).expect("small body"))
}

/// An engine message; its `sig` is absent or random bytes.
pub fn engine_message() -> impl Strategy<Value = EngineMessage> {
    (
        (engine_identity(), destination(), any::<u64>(), option::of(any::<u64>()), option::of(timestamp())),
        (routing_scope(), option::of(transport_prefs()), protocol_id(), body(), option::of(signature())),
    )
        .prop_map(|((src, dst, id, reply_to, expiry), (scope, prefs, protocol, body, sig))| EngineMessage {
            src,
            dst,
            id: MessageId(id),
            reply_to: reply_to.map(MessageId),
            expiry,
            scope,
            prefs,
            protocol,
            body,
            sig,
        })
}

pub fn relay_message() -> impl Strategy<Value = RelayMessage> {
    (node_identity(), node_identity(), option::of(timestamp()), vec(any::<u8>(), 0..256)).prop_map(
        |(src, dst, expiry, sealed)| RelayMessage {
            src,
            dst,
            expiry,
            sealed: SealedBytes::new(sealed).expect("small"),
        },
    )
}

pub fn node_message() -> impl Strategy<Value = NodeMessage> {
    (
        node_identity(),
        node_identity(),
        prop_oneof![engine_message().prop_map(NodePayload::Engine), relay_message().prop_map(NodePayload::Relay)],
        option::of(signature()),
    )
        .prop_map(|(src, dst, payload, sig)| NodeMessage { src, dst, payload, sig })
}

pub fn version_range() -> impl Strategy<Value = VersionRange> {
    (any::<u16>(), any::<u16>()).prop_map(|(min, max)| VersionRange { min, max })
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (version_range(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(versions, boot, own_advert_version, held_advert_version_of_peer)| Hello {
            versions,
            boot,
            own_advert_version,
            held_advert_version_of_peer,
        },
    )
}

pub fn handshake_status() -> impl Strategy<Value = HandshakeStatus> {
    prop_oneof![
        Just(HandshakeStatus::Ok),
        Just(HandshakeStatus::OverCapacity),
        Just(HandshakeStatus::Incompatible),
        Just(HandshakeStatus::Denied),
    ]
}

pub fn hello_reply() -> impl Strategy<Value = HelloReply> {
    (handshake_status(), hello()).prop_map(|(status, h)| HelloReply {
        status,
        versions: h.versions,
        boot: h.boot,
        own_advert_version: h.own_advert_version,
        held_advert_version_of_peer: h.held_advert_version_of_peer,
    })
}

/// Any frame of every kind; adverts carry random signatures.
pub fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        node_message().prop_map(Frame::Node),
        (node_advert_body(), signature()).prop_map(|(b, s)| Frame::NodeAdvert(Advert::from_parts(b, s))),
        (topic_advert_body(), signature()).prop_map(|(b, s)| Frame::TopicAdvert(Advert::from_parts(b, s))),
        (domain_advert_body(), signature()).prop_map(|(b, s)| Frame::DomainAdvert(Advert::from_parts(b, s))),
        hello().prop_map(Frame::Hello),
        hello_reply().prop_map(Frame::HelloReply),
        any::<u64>().prop_map(|received| Frame::Ack(Ack { received })),
    ]
}

/// One change to a byte string, for tests that start from a valid
/// encoding and damage it: most random bytes fail at the first byte or the
/// length check, while a valid frame with a few changes reaches every
/// branch of a decoder.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// XOR the byte at this position (taken modulo the length).
    Flip(prop::sample::Index, u8),
    /// Set the byte to a value that means something to CBOR or UTF-8.
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    /// Cut the bytes at this position.
    Truncate(prop::sample::Index),
    /// Repeat a run of up to 16 bytes in place.
    Repeat(prop::sample::Index, usize),
}

/// Byte values with a meaning in CBOR headers or UTF-8.
const INTERESTING_BYTES: [u8; 16] =
    [0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x40, 0x5f, 0x7f, 0x80, 0x9f, 0xbf, 0xc0, 0xff];

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<prop::sample::Index>(), prop::sample::select(&INTERESTING_BYTES[..]))
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

/// One to three changes.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(), 1..4)
}

/// Applies the changes in order; positions wrap to the current length.
pub fn mutate(bytes: &mut Vec<u8>, changes: &[Mutation]) {
    for change in changes {
        let len = bytes.len();
        if len == 0 {
            if let Mutation::Insert(_, b) = change {
                bytes.push(*b);
            }
            continue;
        }
        match change {
            Mutation::Flip(i, x) => bytes[i.index(len)] ^= x,
            Mutation::Set(i, b) => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Delete(i) => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Repeat(i, n) => {
                let start = i.index(len);
                let end = (start + n).min(len);
                let run: Vec<u8> = bytes[start..end].to_vec();
                bytes.splice(start..start, run);
            }
        }
    }
}

pub fn node_record() -> impl Strategy<Value = NodeRecord> {
    (
        node_identity(),
        option::of((node_advert_body(), signature()).prop_map(|(b, s)| Advert::from_parts(b, s))),
        (any::<u8>(), any::<u8>()),
        (option::of(any::<u32>()), any::<u32>(), option::of(timestamp())),
        option::of(transport_prefs()),
        any::<bool>(),
    )
        .prop_map(|(id, advert, (trust, reputation), (rtt_micros, failures, last_seen), prefs, permanent)| {
            NodeRecord {
                id,
                advert,
                trust: Trust(trust),
                reputation: Reputation(reputation),
                measurements: Measurements { rtt_micros, failures, last_seen },
                prefs,
                permanence: if permanent { Permanence::Permanent } else { Permanence::Ephemeral },
            }
        })
}

/// Any identity record; adverts in it carry random signatures.
pub fn identity_record() -> impl Strategy<Value = IdentityRecord> {
    prop_oneof![
        node_record().prop_map(IdentityRecord::Node),
        (engine_identity(), option::of(key_bytes().prop_map(ExternalIdentity::ed25519)))
            .prop_map(|(engine, key)| IdentityRecord::Engine(EngineRecord { engine, key })),
        (topic_advert_body(), signature()).prop_map(|(b, s)| IdentityRecord::Topic(Advert::from_parts(b, s))),
        (domain_advert_body(), signature()).prop_map(|(b, s)| IdentityRecord::Domain(Advert::from_parts(b, s))),
    ]
}
