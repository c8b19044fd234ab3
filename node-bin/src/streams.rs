//! The `subscribe` streams a node's control API serves, so that an
//! `unsubscribe` request can end them.

use std::collections::HashMap;

use netmachine_domain::TopicIdentity;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Told, when a stream is ended from elsewhere, how many streams that
/// request ended.
pub type Ended = oneshot::Receiver<usize>;

#[derive(Debug, Default)]
pub struct SubscriptionStreams {
    open: Mutex<Streams>,
}

#[derive(Debug, Default)]
struct Streams {
    next: u64,
    by_id: HashMap<u64, (TopicIdentity, oneshot::Sender<usize>)>,
}

impl SubscriptionStreams {
    /// Registers a stream of `topic`; its id closes it.
    pub fn open(&self, topic: TopicIdentity) -> (u64, Ended) {
        let (tx, rx) = oneshot::channel();
        let mut open = self.open.lock();
        open.next += 1;
        let id = open.next;
        open.by_id.insert(id, (topic, tx));
        (id, rx)
    }

    /// Forgets a stream that ended by itself.
    pub fn close(&self, id: u64) {
        self.open.lock().by_id.remove(&id);
    }

    /// Ends every stream of `topic`; returns how many there were.
    pub fn end(&self, topic: &TopicIdentity) -> usize {
        let mut open = self.open.lock();
        let ids: Vec<u64> = open.by_id.iter().filter(|(_, (t, _))| t == topic).map(|(id, _)| *id).collect();
        let ended: Vec<oneshot::Sender<usize>> =
            ids.iter().filter_map(|id| open.by_id.remove(id).map(|(_, tx)| tx)).collect();
        let count = ended.len();
        for tx in ended {
            let _ = tx.send(count);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_a_topic_ends_its_streams_only() {
        let streams = SubscriptionStreams::default();
        let (a, b) = (TopicIdentity::ed25519([1; 32]), TopicIdentity::ed25519([2; 32]));
        let (_, mut first) = streams.open(a);
        let (_, mut second) = streams.open(a);
        let (other_id, mut other) = streams.open(b);
        assert_eq!(streams.end(&a), 2);
        assert_eq!(first.try_recv(), Ok(2));
        assert_eq!(second.try_recv(), Ok(2));
        assert!(other.try_recv().is_err());
        assert_eq!(streams.end(&a), 0);
        streams.close(other_id);
        assert_eq!(streams.end(&b), 0, "a closed stream is not ended again");
    }
}
