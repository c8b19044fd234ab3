//! Remote subscriptions, v1: a node with local subscribers to a topic asks
//! each publisher node named in the topic's advert to send it the topic's
//! events. The request is an engine message from the node's `router` to
//! the publisher node, in a tiny fixed layout that needs no codec.

use netmachine_domain::{ExternalIdentity, TopicIdentity};

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
