//! Remote subscriptions, v1: a node with local subscribers to a topic asks
//! each publisher node named in the topic's advert to send it the topic's
//! events. The request is an engine message from the node's `router` to
//! the publisher node, in a tiny fixed layout that needs no codec.

use netmachine_domain::{EngineMessage, ExternalIdentity, MessageId, TopicIdentity};

/// The protocol name of subscription requests.
pub const SUBSCRIPTION_PROTOCOL: &str = "netmachine/subscription";
pub const SUBSCRIPTION_VERSION: u16 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SubscriptionOp {
    Subscribe,
    Unsubscribe,
}

/// `[op][key scheme][key]`: 34 bytes for an Ed25519 topic key.
pub fn encode_request(op: SubscriptionOp, topic: &TopicIdentity) -> Vec<u8> {
    let mut body = vec![match op {
        SubscriptionOp::Subscribe => 1,
        SubscriptionOp::Unsubscribe => 2,
    }];
    body.extend_from_slice(&topic.key().to_tagged_bytes());
    body
}

pub fn decode_request(body: &[u8]) -> Option<(SubscriptionOp, TopicIdentity)> {
    let (op, key) = body.split_first()?;
    let op = match op {
        1 => SubscriptionOp::Subscribe,
        2 => SubscriptionOp::Unsubscribe,
        _ => return None,
    };
    let key = ExternalIdentity::from_tagged_bytes("topic", key).ok()?;
    Some((op, TopicIdentity::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        let topic = TopicIdentity::ed25519([4; 32]);
        for op in [SubscriptionOp::Subscribe, SubscriptionOp::Unsubscribe] {
            assert_eq!(decode_request(&encode_request(op, &topic)), Some((op, topic)));
        }
        assert_eq!(decode_request(&[]), None);
        assert_eq!(decode_request(&[3, 1]), None);
        assert_eq!(decode_request(&[1, 1, 2, 3]), None);
    }
}

/// The protocol of the notice a node sends back to the source engine of a
/// message it had to drop (expired on arrival, or no such engine).
pub const UNDELIVERABLE_PROTOCOL: &str = "netmachine/undeliverable";

/// Why a message was dropped at its destination node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DropReason {
    Expired,
    NoRoute,
    /// The destination engine's mailbox and its overflow were full.
    MailboxFull,
}

impl DropReason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Expired => "expired before it reached its destination",
            Self::NoRoute => "no such engine at the destination node",
            Self::MailboxFull => "the destination engine's mailbox was full",
        }
    }
}

/// `[reason][message id, big-endian]`.
pub fn encode_notice(reason: DropReason, id: u64) -> Vec<u8> {
    let mut body = vec![match reason {
        DropReason::Expired => 1,
        DropReason::NoRoute => 2,
        DropReason::MailboxFull => 3,
    }];
    body.extend_from_slice(&id.to_be_bytes());
    body
}

pub fn decode_notice(body: &[u8]) -> Option<(DropReason, u64)> {
    let (reason, id) = body.split_first()?;
    let reason = match reason {
        1 => DropReason::Expired,
        2 => DropReason::NoRoute,
        3 => DropReason::MailboxFull,
        _ => return None,
    };
    let id: [u8; 8] = id.try_into().ok()?;
    Some((reason, u64::from_be_bytes(id)))
}

/// When `message` is a peer router's notice that a message of this node
/// was dropped there: that message's id and why.
pub fn undeliverable_notice_of(message: &EngineMessage) -> Option<(MessageId, DropReason)> {
    if message.protocol.name.as_str() != UNDELIVERABLE_PROTOCOL || message.src.name.as_str() != super::NODE_ENGINE_NAME
    {
        return None;
    }
    let (reason, id) = decode_notice(message.body.as_bytes())?;
    Some((MessageId(id), reason))
}
