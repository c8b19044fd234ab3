//! Fixed example values with every optional field present, shared by the
//! golden tests of every crate (enable the `strategies` feature): the
//! signing bytes and the wire encoding of these values are pinned there.

use crate::*;

pub const NODE_A: NodeIdentity = NodeIdentity::ed25519([1; 32]);
pub const NODE_B: NodeIdentity = NodeIdentity::ed25519([2; 32]);

fn name(s: &str) -> EngineName {
    EngineName::new(s).unwrap_or_else(|_| unreachable!("a valid constant name"))
}

fn address(text: &str) -> WeightedAddress {
    WeightedAddress { address: text.parse().unwrap_or_else(|_| unreachable!("a valid constant address")), weight: 7 }
}

/// From `sender@A` to `receiver@B`, unsigned, with a reply-to, an expiry,
/// a domain scope and transport preferences.
pub fn engine_message() -> EngineMessage {
    EngineMessage {
        src: EngineIdentity::new(NODE_A, name("sender")),
        dst: DestinationIdentity::Engine(EngineIdentity::new(NODE_B, name("receiver"))),
        id: MessageId(42),
        reply_to: Some(MessageId(41)),
        expiry: Some(Timestamp(1_700_000_000_000)),
        scope: RoutingScope::Domain(DomainIdentity::ed25519([5; 32])),
        prefs: Some(TransportPrefs::default()),
        protocol: ProtocolId::new("chat", 3).unwrap_or_else(|_| unreachable!("a valid constant protocol")),
        body: Body::new(b"hello".to_vec()).unwrap_or_else(|_| unreachable!("a small body")),
        sig: None,
    }
}

/// A's advert: two addresses and a name.
pub fn node_advert_body() -> NodeAdvertBody {
    NodeAdvertBody::new(
        NODE_A,
        vec![address("quic://127.0.0.1:4100"), address("tls-tcp://[::1]:4101")],
        Some("node-a"),
        3,
        Timestamp(1_000),
    )
    .unwrap_or_else(|_| unreachable!("a valid constant advert"))
}

/// Published by A, relayed by B, one tag.
pub fn topic_advert_body() -> TopicAdvertBody {
    TopicAdvertBody::new(TopicIdentity::ed25519([4; 32]), vec![NODE_A], vec![NODE_B], vec!["news"], 2, Timestamp(2_000))
        .unwrap_or_else(|_| unreachable!("a valid constant advert"))
}

/// Contact nodes A and B, an allow-list of A.
pub fn domain_advert_body() -> DomainAdvertBody {
    let allowed = BoundedVec::new("allow", vec![NODE_A]).unwrap_or_else(|_| unreachable!("one fits"));
    DomainAdvertBody::new(
        DomainIdentity::ed25519([5; 32]),
        vec![NODE_A, NODE_B],
        JoinPolicy::AllowList(allowed),
        4,
        Timestamp(3_000),
    )
    .unwrap_or_else(|_| unreachable!("a valid constant advert"))
}
