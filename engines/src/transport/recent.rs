//! The recently received message keys of one peer. A message sent again
//! after a connection dropped (its acknowledgement was lost) is recognised
//! and not delivered twice.
//!
//! A message is known by a 64-bit digest of its source engine name,
//! destination and id rather than by those values: recording one then
//! costs no copies and one hash. Two different messages of one peer share
//! a digest with odds of about one in 2^64 / capacity (2 x 10^15 for the
//! default window), and the filter is per peer, so a peer that forged
//! collisions could only drop its own messages.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use netmachine_domain::EngineMessage;

#[derive(Debug)]
pub struct RecentIds {
    /// Oldest first.
    order: VecDeque<u64>,
    /// An index over `order`, built once it holds more than
    /// [`SCAN_LIMIT`] keys: most peers send a few messages, and a scan of
    /// a few keys costs less than a set's memory.
    seen: Option<HashSet<u64, BuildHasherDefault<Digest>>>,
    capacity: usize,
}

/// Keys looked up by a scan of `order`, before an index is built.
const SCAN_LIMIT: usize = 16;

impl RecentIds {
    /// Only messages that were unacknowledged when a connection dropped
    /// can come again, so the capacity needs to cover one window.
    pub fn new(capacity: usize) -> Self {
        Self { order: VecDeque::new(), seen: None, capacity: capacity.max(1) }
    }

    /// Records the message; false when it was already seen.
    pub fn first_time(&mut self, message: &EngineMessage) -> bool {
        let key = digest(message);
        let known = match &self.seen {
            Some(seen) => seen.contains(&key),
            None => self.order.contains(&key),
        };
        if known {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                if let Some(seen) = self.seen.as_mut() {
                    seen.remove(&old);
                }
            }
        }
        self.order.push_back(key);
        match self.seen.as_mut() {
            Some(seen) => {
                seen.insert(key);
            }
            None if self.order.len() > SCAN_LIMIT => self.seen = Some(self.order.iter().copied().collect()),
            None => {}
        }
        true
    }
}

/// The same for every run of a build (a fixed SipHash key), so simulations
/// stay deterministic.
fn digest(message: &EngineMessage) -> u64 {
    let mut hasher = DefaultHasher::new();
    message.src.name.hash(&mut hasher);
    message.dst.hash(&mut hasher);
    message.id.hash(&mut hasher);
    hasher.finish()
}

/// Keys that are already digests need no second hash.
#[derive(Debug, Default)]
struct Digest(u64);

impl Hasher for Digest {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::strategies;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_message_is_new_once_while_it_is_remembered(
            messages in proptest::collection::vec(strategies::engine_message(), 1..40),
            capacity in 1usize..50,
        ) {
            let mut recent = RecentIds::new(capacity);
            let distinct: Vec<&EngineMessage> = messages.iter().fold(Vec::new(), |mut seen, m| {
                if !seen.iter().any(|s| s.src.name == m.src.name && s.dst == m.dst && s.id == m.id) {
                    seen.push(m);
                }
                seen
            });
            for (i, message) in distinct.iter().enumerate() {
                prop_assert!(recent.first_time(message), "message {} was new", i);
                prop_assert!(!recent.first_time(message), "message {} came again at once", i);
            }
            // The last `capacity` are still remembered; older ones are forgotten.
            let remembered = distinct.len().min(capacity);
            for message in &distinct[distinct.len() - remembered..] {
                prop_assert!(!recent.first_time(message));
            }
            if distinct.len() > capacity {
                prop_assert!(recent.first_time(distinct[0]), "the oldest was forgotten");
            }
        }
    }

    #[test]
    fn the_same_id_from_another_engine_or_another_id_is_new() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let message = strategies::engine_message().new_tree(&mut runner).expect("value").current();
        let mut recent = RecentIds::new(16);
        assert!(recent.first_time(&message));
        let mut other_engine = message.clone();
        other_engine.src.name =
            netmachine_domain::EngineName::new(if message.src.name.as_str() == "a" { "b" } else { "a" })
                .expect("valid");
        assert!(recent.first_time(&other_engine));
        let mut other_id = message.clone();
        other_id.id.0 = message.id.0.wrapping_add(1);
        assert!(recent.first_time(&other_id));
        assert!(!recent.first_time(&message));
    }
}
