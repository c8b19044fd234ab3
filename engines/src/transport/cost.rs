//! What a message weighs against windows and queues, and when it expires.

use netmachine_domain::{NodeMessage, NodePayload, Timestamp};

pub(super) fn expiry_of(message: &NodeMessage) -> Option<Timestamp> {
    match &message.payload {
        NodePayload::Engine(inner) => inner.expiry,
        NodePayload::Relay(relay) => relay.expiry,
    }
}

/// What a message weighs against windows and queues: its payload, plus a
/// fixed allowance for the envelope.
pub fn message_cost(message: &NodeMessage) -> usize {
    256 + match &message.payload {
        NodePayload::Engine(inner) => inner.body.len(),
        NodePayload::Relay(relay) => relay.sealed.as_bytes().len(),
    }
}

pub(super) fn is_expired(message: &NodeMessage, now: Timestamp) -> bool {
    expiry_of(message).is_some_and(|at| now >= at)
}
