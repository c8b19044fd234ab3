//! Messages from peers that found their engine's mailbox full. A
//! connection's reader never waits for one engine: it parks the message
//! here and reads on, so the peer's traffic to every other engine keeps
//! flowing. A task per parked engine moves its messages on, in order, as
//! the engine makes room. Parking is bounded per engine and in total;
//! beyond that a message is dropped and its sender told (the caller sends
//! the notice).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use netmachine_domain::EngineName;
use parking_lot::Mutex;

use super::mailbox::{Inbound, Mailbox};

/// Bytes of message bodies parked for one engine, at most.
pub const MAX_PARKED_BYTES_PER_ENGINE: usize = 16 * 1024 * 1024;
/// Bytes of message bodies parked on a node, at most.
pub const MAX_PARKED_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct Parked {
    messages: VecDeque<Inbound>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Table {
    by_engine: HashMap<EngineName, Parked>,
    bytes: usize,
}

/// The parked messages of a node, by engine.
#[derive(Debug, Default)]
pub(crate) struct Overflow {
    table: Mutex<Table>,
}

fn weight(message: &Inbound) -> usize {
    match message {
        Inbound::Message(m) => m.body.len() + 256,
        _ => 256,
    }
}

impl Overflow {
    /// Whether messages for `engine` wait here: a new one must queue
    /// behind them, or it would overtake them.
    pub(crate) fn holds(&self, engine: &EngineName) -> bool {
        self.table.lock().by_engine.contains_key(engine)
    }

    /// Parks a message for `to`, whose mailbox is full or has messages
    /// parked already; at most `max_messages` per engine. Hands it back
    /// when over budget.
    pub(crate) fn park(self: &Arc<Self>, to: &Mailbox, message: Inbound, max_messages: usize) -> Option<Inbound> {
        let size = weight(&message);
        let mut table = self.table.lock();
        let total = table.bytes;
        let first = !table.by_engine.contains_key(&to.name);
        let parked = table.by_engine.entry(to.name.clone()).or_default();
        let over = parked.messages.len() >= max_messages
            || parked.bytes + size > MAX_PARKED_BYTES_PER_ENGINE
            || total + size > MAX_PARKED_BYTES;
        if over {
            if first {
                table.by_engine.remove(&to.name);
            }
            return Some(message);
        }
        parked.messages.push_back(message);
        parked.bytes += size;
        table.bytes += size;
        drop(table);
        if first {
            tokio::spawn(Arc::clone(self).forward(to.clone()));
        }
        None
    }

    /// Moves `to`'s parked messages into its mailbox as it makes room. A
    /// message stays parked (and counted) until there is room for it.
    async fn forward(self: Arc<Self>, to: Mailbox) {
        loop {
            let Ok(permit) = to.tx.reserve().await else {
                // The engine left: what is parked for it goes.
                let mut table = self.table.lock();
                if let Some(parked) = table.by_engine.remove(&to.name) {
                    table.bytes -= parked.bytes;
                }
                return;
            };
            let mut table = self.table.lock();
            let popped = table.by_engine.get_mut(&to.name).and_then(|parked| {
                let message = parked.messages.pop_front()?;
                parked.bytes -= weight(&message);
                Some(message)
            });
            match popped {
                Some(message) => {
                    table.bytes -= weight(&message);
                    permit.send(message);
                }
                // Empty: new messages for the engine go straight to its
                // mailbox again.
                None => {
                    table.by_engine.remove(&to.name);
                    return;
                }
            }
        }
    }
}
