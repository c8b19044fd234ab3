//! Messages from peers that found their engine's mailbox full. A
//! connection's reader never waits for one engine: it parks the message
//! here and reads on, so the peer's traffic to every other engine keeps
//! flowing. The core holds back the acknowledgement of a parked message
//! (and of every later one on its connection) until it reaches the
//! engine, so the peer's window bounds what a connection parks, and a
//! fast sender slows down instead of losing messages. A task per parked
//! engine moves its messages on, in order, as the engine makes room.
//! Beyond a budget in bytes, per engine and per node, a message is dropped
//! and its sender told (the caller sends the notice).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use netmachine_domain::EngineName;
use netmachine_engines::node_core::Receipt;
use parking_lot::Mutex;

use super::mailbox::{Inbound, Mailbox};

/// Bytes of messages parked for one engine, at most (two peers' full
/// windows).
pub const MAX_PARKED_BYTES_PER_ENGINE: usize = 64 * 1024 * 1024;
/// Bytes of messages parked on a node, at most.
pub const MAX_PARKED_BYTES: usize = 256 * 1024 * 1024;

/// Told when a parked message has reached its engine (or its engine left).
pub(crate) type Released = Box<dyn Fn(Receipt) + Send + Sync>;

#[derive(Debug, Default)]
struct Parked {
    messages: VecDeque<(Inbound, Receipt)>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Table {
    by_engine: HashMap<EngineName, Parked>,
    bytes: usize,
}

/// The parked messages of a node, by engine.
#[derive(Default)]
pub(crate) struct Overflow {
    table: Mutex<Table>,
    released: OnceLock<Released>,
}

impl std::fmt::Debug for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overflow").field("table", &self.table).finish_non_exhaustive()
    }
}

fn weight(message: &Inbound) -> usize {
    match message {
        Inbound::Message(m) => m.body.len() + 256,
        _ => 256,
    }
}

impl Overflow {
    pub(crate) fn on_released(&self, released: Released) {
        let _ = self.released.set(released);
    }

    fn release(&self, receipt: Receipt) {
        if let Some(released) = self.released.get() {
            released(receipt);
        }
    }

    /// Whether messages for `engine` wait here: a new one must queue
    /// behind them, or it would overtake them.
    pub(crate) fn holds(&self, engine: &EngineName) -> bool {
        self.table.lock().by_engine.contains_key(engine)
    }

    /// Parks a message for `to`, whose mailbox is full or has messages
    /// parked already. Hands it back when over budget.
    pub(crate) fn park(self: &Arc<Self>, to: &Mailbox, message: Inbound, receipt: Receipt) -> Option<Inbound> {
        let size = weight(&message);
        let mut table = self.table.lock();
        let total = table.bytes;
        let first = !table.by_engine.contains_key(&to.name);
        let parked = table.by_engine.entry(to.name.clone()).or_default();
        if parked.bytes + size > MAX_PARKED_BYTES_PER_ENGINE || total + size > MAX_PARKED_BYTES {
            if first {
                table.by_engine.remove(&to.name);
            }
            return Some(message);
        }
        parked.messages.push_back((message, receipt));
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
                // The engine left: what is parked for it goes, and its
                // connections may acknowledge past it.
                let parked = {
                    let mut table = self.table.lock();
                    let parked = table.by_engine.remove(&to.name).unwrap_or_default();
                    table.bytes -= parked.bytes;
                    parked
                };
                for (_, receipt) in parked.messages {
                    self.release(receipt);
                }
                return;
            };
            let popped = {
                let mut table = self.table.lock();
                let popped = table.by_engine.get_mut(&to.name).and_then(|parked| {
                    let (message, receipt) = parked.messages.pop_front()?;
                    parked.bytes -= weight(&message);
                    Some((message, receipt))
                });
                match &popped {
                    Some((message, _)) => table.bytes -= weight(message),
                    // Empty: new messages for the engine go straight to its
                    // mailbox again.
                    None => {
                        table.by_engine.remove(&to.name);
                    }
                }
                popped
            };
            let Some((message, receipt)) = popped else { return };
            permit.send(message);
            self.release(receipt);
        }
    }
}
