//! The recently received message keys of one peer. A message sent again
//! after a connection dropped (its acknowledgement was lost) is recognised
//! and not delivered twice.

use std::collections::{HashSet, VecDeque};

use netmachine_domain::{DestinationIdentity, EngineMessage, EngineName, MessageId};

type Key = (EngineName, DestinationIdentity, MessageId);

#[derive(Debug)]
pub struct RecentIds {
    order: VecDeque<Key>,
    seen: HashSet<Key>,
    capacity: usize,
}

impl RecentIds {
    /// Only messages that were unacknowledged when a connection dropped
    /// can come again, so the capacity needs to cover one window.
    pub fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), seen: HashSet::new(), capacity: capacity.max(1) }
    }

    /// Records the message; false when it was already seen.
    pub fn first_time(&mut self, message: &EngineMessage) -> bool {
        let key = (message.src.name.clone(), message.dst.clone(), message.id);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }
}
