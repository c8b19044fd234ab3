//! Waiting for the outcome of a message: the senders that asked to hear
//! whether their message arrived, and the table the runtime settles them
//! from (an acknowledgement from the receiving node, a notice that it was
//! dropped there, or the transport giving it up here).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use netmachine_domain::{EngineName, MessageId, NodeIdentity};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Senders waiting for an outcome at once, over the whole node. Each waits
/// at most as long as its caller allows, so the table empties by itself.
pub const MAX_WAITING_SENDERS: usize = 4096;

/// What became of a message whose sender waited for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// This node handed it on itself: to a local engine's mailbox, or, for
    /// a topic, to its local subscribers and to the transport for each
    /// remote one (no receiver confirms a topic event).
    Local,
    /// The receiving node acknowledged it: its router took it.
    Acknowledged { by: NodeIdentity },
    /// It was given up, here or at the receiving node, for this reason.
    Undeliverable { reason: String },
    /// No outcome within the wait. The message is still in the transport's
    /// hands and may yet arrive or be given up.
    Waiting,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("delivered on this node"),
            Self::Acknowledged { by } => write!(f, "delivered: {by} acknowledged it"),
            Self::Undeliverable { reason } => write!(f, "undeliverable: {reason}"),
            Self::Waiting => f.write_str("no outcome yet: still queued or unacknowledged"),
        }
    }
}

type Key = (EngineName, MessageId);

/// One waiting sender.
#[derive(Debug)]
struct Waiter {
    /// Tells this wait from a later one under the same key.
    token: u64,
    /// The node the message went to: only it can acknowledge the message
    /// or report its drop.
    to: NodeIdentity,
    tx: oneshot::Sender<Delivery>,
}

/// The senders waiting for an outcome, by sending engine and message id.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    waiting: Mutex<Table>,
    /// The table's size, read without the lock on every acknowledgement.
    count: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    next_token: u64,
    by_key: HashMap<Key, Waiter>,
}

/// A registered wait; dropping it forgets the entry if still there.
#[derive(Debug)]
pub(crate) struct Watch {
    watches: Arc<Watches>,
    key: Key,
    token: u64,
    pub outcome: oneshot::Receiver<Delivery>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut table = self.watches.waiting.lock();
        if table.by_key.get(&self.key).is_some_and(|w| w.token == self.token) {
            table.by_key.remove(&self.key);
        }
        self.watches.count.store(table.by_key.len(), Ordering::Release);
    }
}

impl Watches {
    /// Registers a wait for `id`, sent by `engine` to node `to`; None when
    /// the table is full.
    pub fn watch(self: &Arc<Self>, engine: EngineName, id: MessageId, to: NodeIdentity) -> Option<Watch> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.waiting.lock();
        if table.by_key.len() >= MAX_WAITING_SENDERS {
            return None;
        }
        table.next_token += 1;
        let token = table.next_token;
        let key = (engine, id);
        table.by_key.insert(key.clone(), Waiter { token, to, tx });
        self.count.store(table.by_key.len(), Ordering::Release);
        Some(Watch { watches: Arc::clone(self), key, token, outcome: rx })
    }

    /// Whether anyone waits at all: the cheap check before a lookup.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Tells the sender of (`engine`, `id`) what became of it, once.
    /// `from` is the node that reports it, when a peer does: a report from
    /// any other node than the message's destination is ignored.
    pub fn settle(&self, engine: &EngineName, id: MessageId, from: Option<NodeIdentity>, outcome: Delivery) {
        if !self.any() {
            return;
        }
        let waiter = {
            let mut table = self.waiting.lock();
            let key = (engine.clone(), id);
            if from.is_some_and(|from| table.by_key.get(&key).is_some_and(|w| w.to != from)) {
                return;
            }
            let waiter = table.by_key.remove(&key);
            self.count.store(table.by_key.len(), Ordering::Release);
            waiter
        };
        if let Some(waiter) = waiter {
            let _ = waiter.tx.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> EngineName {
        EngineName::new(s).expect("valid")
    }

    #[test]
    fn an_outcome_reaches_its_own_sender_once() {
        let watches = Arc::new(Watches::default());
        let (peer, stranger) = (NodeIdentity::ed25519([1; 32]), NodeIdentity::ed25519([2; 32]));
        assert!(!watches.any());
        let mut a = watches.watch(name("a"), MessageId(1), peer).expect("room");
        let mut b = watches.watch(name("b"), MessageId(1), peer).expect("room");
        assert!(watches.any());
        watches.settle(&name("a"), MessageId(1), Some(stranger), Delivery::Waiting);
        assert!(a.outcome.try_recv().is_err(), "only the destination can report on a message");
        watches.settle(&name("a"), MessageId(1), Some(peer), Delivery::Local);
        watches.settle(&name("a"), MessageId(1), None, Delivery::Waiting);
        assert_eq!(a.outcome.try_recv(), Ok(Delivery::Local));
        assert!(b.outcome.try_recv().is_err(), "b's message is not a's");
        drop(b);
        assert!(!watches.any(), "a dropped wait leaves no entry");
    }

    #[test]
    fn a_dropped_wait_leaves_a_later_one_under_the_same_key() {
        let watches = Arc::new(Watches::default());
        let peer = NodeIdentity::ed25519([1; 32]);
        let first = watches.watch(name("a"), MessageId(1), peer).expect("room");
        let mut second = watches.watch(name("a"), MessageId(1), peer).expect("room");
        drop(first);
        watches.settle(&name("a"), MessageId(1), None, Delivery::Local);
        assert_eq!(second.outcome.try_recv(), Ok(Delivery::Local));
    }

    #[test]
    fn the_table_is_bounded() {
        let watches = Arc::new(Watches::default());
        let peer = NodeIdentity::ed25519([1; 32]);
        let held: Vec<Watch> = (0..MAX_WAITING_SENDERS as u64)
            .map(|i| watches.watch(name("a"), MessageId(i), peer).expect("room"))
            .collect();
        assert!(watches.watch(name("a"), MessageId(u64::MAX), peer).is_none());
        drop(held);
        assert!(watches.watch(name("a"), MessageId(u64::MAX), peer).is_some());
    }
}
