//! A peer's send queue: the messages waiting for a connection, or for room
//! in its window, and what they weigh. It holds no memory while empty,
//! which is most of the time for most of the peers a node remembers.

use std::collections::VecDeque;

use netmachine_domain::{NodeMessage, Timestamp};

use super::cost::{expiry_of, is_expired, message_cost};

#[derive(Debug, Default)]
pub(super) struct SendQueue(Option<Box<Queued>>);

#[derive(Debug, Default)]
struct Queued {
    messages: VecDeque<NodeMessage>,
    /// Their weight by [`message_cost`].
    bytes: usize,
}

impl SendQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.messages.len())
    }

    /// What the queued messages weigh, by [`message_cost`].
    pub(super) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    pub(super) fn front(&self) -> Option<&NodeMessage> {
        self.0.as_ref().and_then(|q| q.messages.front())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &NodeMessage> {
        self.0.iter().flat_map(|q| q.messages.iter())
    }

    /// The earliest expiry among the queued messages.
    pub(super) fn first_expiry(&self) -> Option<Timestamp> {
        self.iter().filter_map(expiry_of).min()
    }

    pub(super) fn push_back(&mut self, message: NodeMessage) {
        let queued = self.0.get_or_insert_with(Box::default);
        queued.bytes += message_cost(&message);
        queued.messages.push_back(message);
    }

    pub(super) fn push_front(&mut self, message: NodeMessage) {
        let queued = self.0.get_or_insert_with(Box::default);
        queued.bytes += message_cost(&message);
        queued.messages.push_front(message);
    }

    pub(super) fn pop_front(&mut self) -> Option<NodeMessage> {
        let queued = self.0.as_mut()?;
        let message = queued.messages.pop_front()?;
        queued.bytes = queued.bytes.saturating_sub(message_cost(&message));
        if queued.messages.is_empty() {
            self.0 = None;
        }
        Some(message)
    }

    /// Empties the queue, oldest first.
    pub(super) fn take_all(&mut self) -> VecDeque<NodeMessage> {
        self.0.take().map(|q| q.messages).unwrap_or_default()
    }

    /// Takes out the messages expired at `now`, oldest first; the others
    /// stay in order.
    pub(super) fn take_expired(&mut self, now: Timestamp) -> Vec<NodeMessage> {
        let (dead, keep): (Vec<_>, Vec<_>) = self.take_all().into_iter().partition(|m| is_expired(m, now));
        for message in keep {
            self.push_back(message);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::{
        Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, ExternalIdentity, MessageId,
        NodeIdentity, ProtocolId,
    };

    use super::*;

    fn message(id: u64, expiry: Option<u64>) -> NodeMessage {
        let node = |b: u8| NodeIdentity::new(ExternalIdentity::ed25519([b; 32]));
        let name = EngineName::new("app").expect("a valid name");
        let src = EngineIdentity::new(node(1), name.clone());
        let dst = DestinationIdentity::Engine(EngineIdentity::new(node(2), name));
        let protocol = ProtocolId::new("test", 1).expect("a valid protocol");
        let mut inner =
            EngineMessage::new(src, dst, MessageId(id), protocol, Body::new(vec![0; id as usize]).expect("a body"));
        inner.expiry = expiry.map(Timestamp);
        NodeMessage::carrying(node(1), node(2), inner)
    }

    fn ids(messages: impl IntoIterator<Item = NodeMessage>) -> Vec<u64> {
        messages
            .into_iter()
            .map(|m| match m.payload {
                netmachine_domain::NodePayload::Engine(inner) => inner.id.0,
                netmachine_domain::NodePayload::Relay(_) => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn it_weighs_what_it_holds_and_holds_nothing_once_empty() {
        let mut queue = SendQueue::default();
        assert!(queue.is_empty());
        queue.push_back(message(2, None));
        queue.push_back(message(3, Some(50)));
        queue.push_front(message(1, Some(10)));
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.bytes(), 3 * 256 + 1 + 2 + 3);
        assert_eq!(queue.first_expiry(), Some(Timestamp(10)));
        assert_eq!(ids(queue.pop_front()), vec![1]);
        assert_eq!(queue.bytes(), 2 * 256 + 2 + 3);
        assert_eq!(ids(queue.take_expired(Timestamp(50))), vec![3]);
        assert_eq!(queue.bytes(), 256 + 2);
        assert_eq!(ids(queue.pop_front()), vec![2]);
        assert!(queue.is_empty() && queue.0.is_none(), "no memory held");
        assert_eq!(queue.bytes(), 0);
        queue.push_back(message(4, None));
        assert_eq!(ids(queue.take_all()), vec![4]);
        assert!(queue.0.is_none());
    }
}
