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
    /// This node handed it to its receivers itself: a local engine's
    /// mailbox, or a topic's subscribers.
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

/// The senders waiting for an outcome, by sending engine and message id.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    waiting: Mutex<HashMap<Key, oneshot::Sender<Delivery>>>,
    /// The table's size, read without the lock on every acknowledgement.
    count: AtomicUsize,
}

/// A registered wait; dropping it forgets the entry if still there.
#[derive(Debug)]
pub(crate) struct Watch {
    watches: Arc<Watches>,
    key: Key,
    pub outcome: oneshot::Receiver<Delivery>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watches.take(&self.key);
    }
}

impl Watches {
    /// Registers a wait for `id` sent by `engine`; None when the table is
    /// full.
    pub fn watch(self: &Arc<Self>, engine: EngineName, id: MessageId) -> Option<Watch> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting.lock();
        if waiting.len() >= MAX_WAITING_SENDERS {
            return None;
        }
        let key = (engine, id);
        waiting.insert(key.clone(), tx);
        self.count.store(waiting.len(), Ordering::Release);
        Some(Watch { watches: Arc::clone(self), key, outcome: rx })
    }

    /// Whether anyone waits at all: the cheap check before a lookup.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Tells the sender of (`engine`, `id`) what became of it, once.
    pub fn settle(&self, engine: &EngineName, id: MessageId, outcome: Delivery) {
        if !self.any() {
            return;
        }
        if let Some(tx) = self.take(&(engine.clone(), id)) {
            let _ = tx.send(outcome);
        }
    }

    fn take(&self, key: &Key) -> Option<oneshot::Sender<Delivery>> {
        let mut waiting = self.waiting.lock();
        let taken = waiting.remove(key);
        self.count.store(waiting.len(), Ordering::Release);
        taken
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
        assert!(!watches.any());
        let mut a = watches.watch(name("a"), MessageId(1)).expect("room");
        let mut b = watches.watch(name("b"), MessageId(1)).expect("room");
        assert!(watches.any());
        watches.settle(&name("a"), MessageId(1), Delivery::Local);
        watches.settle(&name("a"), MessageId(1), Delivery::Waiting);
        assert_eq!(a.outcome.try_recv(), Ok(Delivery::Local));
        assert!(b.outcome.try_recv().is_err(), "b's message is not a's");
        drop(b);
        assert!(!watches.any(), "a dropped wait leaves no entry");
    }

    #[test]
    fn the_table_is_bounded() {
        let watches = Arc::new(Watches::default());
        let held: Vec<Watch> =
            (0..MAX_WAITING_SENDERS as u64).map(|i| watches.watch(name("a"), MessageId(i)).expect("room")).collect();
        assert!(watches.watch(name("a"), MessageId(u64::MAX)).is_none());
        drop(held);
        assert!(watches.watch(name("a"), MessageId(u64::MAX)).is_some());
    }
}
