//! The node's `inbox` engine: whatever arrives for it waits in a bounded
//! buffer until a control client (`netmachine inbox`) takes it. One client
//! at a time; a newer one replaces the older.

use std::collections::VecDeque;
use std::sync::Arc;

use netmachine_adapters::runtime::{EngineHandle, Inbound};
use netmachine_domain::EngineMessage;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Messages kept while no client listens; beyond it the oldest go.
pub const INBOX_CAPACITY: usize = 4096;
pub const INBOX_ENGINE: &str = "inbox";

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<EngineMessage>,
    dropped: u64,
    client: Option<mpsc::Sender<EngineMessage>>,
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
                let mut state = state.lock();
                let leftover = match &state.client {
                    Some(client) => match client.try_send(message) {
                        Ok(()) => None,
                        // A client that is gone or too slow to keep up is
                        // let go; what it missed waits for the next one.
                        Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                            state.client = None;
                            Some(m)
                        }
                    },
                    None => Some(message),
                };
                if let Some(message) = leftover {
                    if state.waiting.len() >= INBOX_CAPACITY {
                        state.waiting.pop_front();
                        state.dropped += 1;
                        tracing::warn!(dropped = state.dropped, "inbox full: the oldest message was dropped");
                    }
                    state.waiting.push_back(message);
                }
            }
        });
    }

    /// Puts back what a departing client had not yet taken, ahead of
    /// anything that arrived since.
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
        // The same rule as for arrivals: beyond the capacity the oldest go.
        while state.waiting.len() > INBOX_CAPACITY {
            state.waiting.pop_front();
            state.dropped += 1;
            tracing::warn!(dropped = state.dropped, "inbox full: the oldest message was dropped");
        }
    }

    /// Attaches a client: it gets what waited, then what arrives.
    pub fn attach(&self) -> (Vec<EngineMessage>, mpsc::Receiver<EngineMessage>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let mut state = self.state.lock();
        state.client = Some(tx);
        (state.waiting.drain(..).collect(), rx)
    }
}
