//! The node's `inbox` engine: whatever arrives for it waits in a bounded
//! buffer until a control client (`netmachine inbox`) takes it. One client
//! at a time; a newer one replaces the older.
//!
//! The buffer is shared fairly: when it is full, the sender holding the
//! most of it loses its oldest message and is told, so one flooding peer
//! cannot push out everyone else's messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use netmachine_adapters::runtime::{EngineHandle, Inbound};
use netmachine_domain::{EngineMessage, NodeIdentity};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Messages kept while no client listens.
pub const INBOX_CAPACITY: usize = 4096;
/// Bytes of message bodies (plus 256 per message) kept while no client
/// listens.
pub const INBOX_BYTES: usize = 64 * 1024 * 1024;
pub const INBOX_ENGINE: &str = "inbox";

#[derive(Debug, Default)]
struct State {
    waiting: Waiting,
    client: Option<mpsc::Sender<EngineMessage>>,
}

/// The buffer, with how much of it each sending node holds.
#[derive(Debug, Default)]
struct Waiting {
    messages: VecDeque<EngineMessage>,
    /// Bytes held per sending node, by [`weight`].
    by_sender: HashMap<NodeIdentity, usize>,
    bytes: usize,
    dropped: u64,
}

/// What a message weighs in the buffer.
fn weight(message: &EngineMessage) -> usize {
    message.body.len() + 256
}

impl Waiting {
    fn count(&mut self, message: &EngineMessage) {
        *self.by_sender.entry(message.src.node).or_default() += weight(message);
        self.bytes += weight(message);
    }

    fn uncount(&mut self, message: &EngineMessage) {
        self.bytes -= weight(message);
        if let Some(held) = self.by_sender.get_mut(&message.src.node) {
            *held -= weight(message);
            if *held == 0 {
                self.by_sender.remove(&message.src.node);
            }
        }
    }

    fn push_back(&mut self, message: EngineMessage) {
        self.count(&message);
        self.messages.push_back(message);
    }

    fn push_front(&mut self, message: EngineMessage) {
        self.count(&message);
        self.messages.push_front(message);
    }

    /// Beyond the capacity (in messages and in bytes), the oldest message
    /// of the sender holding the most bytes goes; returned so that its
    /// sender can be told.
    fn make_room(&mut self, capacity: usize, bytes: usize) -> Vec<EngineMessage> {
        let mut gone = Vec::new();
        while self.messages.len() > capacity || self.bytes > bytes {
            let Some((&largest, _)) = self.by_sender.iter().max_by_key(|(node, held)| (**held, **node)) else {
                break;
            };
            let Some(at) = self.messages.iter().position(|m| m.src.node == largest) else { break };
            let Some(message) = self.messages.remove(at) else { break };
            self.uncount(&message);
            self.dropped += 1;
            gone.push(message);
        }
        gone
    }

    fn drain(&mut self) -> Vec<EngineMessage> {
        self.by_sender.clear();
        self.bytes = 0;
        self.messages.drain(..).collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inbox {
    state: Arc<Mutex<State>>,
}

impl Inbox {
    /// Runs the engine: every message goes to the client if one listens,
    /// otherwise into the buffer.
    pub fn spawn(&self, mut engine: EngineHandle) {
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while let Some(inbound) = engine.recv().await {
                let Inbound::Message(message) = inbound else { continue };
                let gone = {
                    let mut state = state.lock();
                    let leftover = match &state.client {
                        Some(client) => match client.try_send(message) {
                            Ok(()) => None,
                            // A client that is gone or too slow to keep up
                            // is let go; what it missed waits for the next.
                            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                                state.client = None;
                                Some(m)
                            }
                        },
                        None => Some(message),
                    };
                    match leftover {
                        Some(message) => {
                            state.waiting.push_back(message);
                            state.waiting.make_room(INBOX_CAPACITY, INBOX_BYTES)
                        }
                        None => Vec::new(),
                    }
                };
                for message in &gone {
                    engine.give_up(message);
                }
            }
        });
    }

    /// Puts back what a departing client had not yet taken, ahead of
    /// anything that arrived since. What no longer fits is dropped by the
    /// same rule as arrivals (its senders are not told: they were told
    /// nothing when it first arrived, and the client saw none of it).
    pub fn give_back(&self, mut rx: mpsc::Receiver<EngineMessage>) {
        rx.close();
        let mut untaken = Vec::new();
        while let Ok(message) = rx.try_recv() {
            untaken.push(message);
        }
        let mut state = self.state.lock();
        for message in untaken.into_iter().rev() {
            state.waiting.push_front(message);
        }
        let gone = state.waiting.make_room(INBOX_CAPACITY, INBOX_BYTES);
        if !gone.is_empty() {
            tracing::debug!(dropped = gone.len(), "inbox full: messages of its largest senders dropped");
        }
    }

    /// Attaches a client: it gets what waited, then what arrives.
    pub fn attach(&self) -> (Vec<EngineMessage>, mpsc::Receiver<EngineMessage>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let mut state = self.state.lock();
        state.client = Some(tx);
        (state.waiting.drain(), rx)
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::{Body, DestinationIdentity, EngineIdentity, EngineName, MessageId, ProtocolId};

    use super::*;

    fn from(node: u8, id: u64) -> EngineMessage {
        let src = EngineIdentity::new(NodeIdentity::ed25519([node; 32]), EngineName::new("app").expect("valid"));
        let dst = EngineIdentity::new(NodeIdentity::ed25519([9; 32]), EngineName::new("inbox").expect("valid"));
        EngineMessage::new(
            src,
            DestinationIdentity::Engine(dst),
            MessageId(id),
            ProtocolId::new("t", 1).expect("valid"),
            Body::default(),
        )
    }

    /// Guards the inbox's space: the flooding sender loses its own oldest
    /// messages; a quiet sender's stay.
    #[test]
    fn a_full_inbox_drops_the_largest_senders_oldest() {
        let mut waiting = Waiting::default();
        waiting.push_back(from(2, 100));
        for n in 0..5 {
            waiting.push_back(from(1, n));
        }
        waiting.push_back(from(3, 200));
        let gone = waiting.make_room(4, usize::MAX);
        assert_eq!(gone.iter().map(|m| m.id.0).collect::<Vec<_>>(), [0, 1, 2]);
        let kept: Vec<u64> = waiting.drain().iter().map(|m| m.id.0).collect();
        assert_eq!(kept, [100, 3, 4, 200]);
    }

    /// Guards the inbox's memory: a few large messages weigh more than many
    /// small ones, and their sender is the one that loses.
    #[test]
    fn the_inbox_is_bounded_in_bytes_too() {
        let mut waiting = Waiting::default();
        for n in 0..10 {
            waiting.push_back(from(2, n));
        }
        let mut large = from(1, 100);
        large.body = Body::new(vec![0; 10_000]).expect("small");
        let mut larger = from(1, 101);
        larger.body = Body::new(vec![0; 10_000]).expect("small");
        waiting.push_back(large);
        waiting.push_back(larger);
        let gone = waiting.make_room(100, 15_000);
        assert_eq!(gone.iter().map(|m| m.id.0).collect::<Vec<_>>(), [100]);
        assert_eq!(waiting.messages.len(), 11);
    }
}
