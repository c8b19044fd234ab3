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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use netmachine_domain::EngineName;
use netmachine_engines::node_core::Receipt;
use parking_lot::Mutex;
use tokio::sync::mpsc::Permit;

use super::mailbox::{Inbound, Mailbox};

/// Bytes of messages parked for one engine, at most (two peers' full
/// windows).
pub const MAX_PARKED_BYTES_PER_ENGINE: usize = 64 * 1024 * 1024;
/// Bytes of messages parked on a node, at most.
pub const MAX_PARKED_BYTES: usize = 256 * 1024 * 1024;

/// Told when parked messages have reached their engine (or it left).
pub(crate) type Released = Box<dyn Fn(Vec<Receipt>) + Send + Sync>;

/// Parked messages moved into a mailbox in one go, at most: one lock and
/// one report to the core per batch, not per message.
const MOVE_AT_ONCE: usize = 64;

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
    /// Engines with parked messages: read without the lock for every
    /// message from a peer, and nearly always 0.
    engines: AtomicUsize,
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

    fn release(&self, receipts: Vec<Receipt>) {
        if let Some(released) = self.released.get() {
            released(receipts);
        }
    }

    /// Whether messages for `engine` wait here: a new one must queue
    /// behind them, or it would overtake them.
    pub(crate) fn holds(&self, engine: &EngineName) -> bool {
        self.engines.load(Ordering::Acquire) > 0 && self.table.lock().by_engine.contains_key(engine)
    }

    /// Messages parked for each engine that has any.
    pub(crate) fn parked_by_engine(&self) -> Vec<(EngineName, usize)> {
        if self.engines.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.table.lock().by_engine.iter().map(|(name, parked)| (name.clone(), parked.messages.len())).collect()
    }

    fn count_engines(&self, table: &Table) {
        self.engines.store(table.by_engine.len(), Ordering::Release);
    }

    /// Moves what is parked for `to` into its mailbox while it has room,
    /// as the forwarding task would: a connection's reader does so before
    /// it parks more, which saves a hand-off per message while the engine
    /// keeps up. Returns the receipts of the messages moved, and whether
    /// nothing is parked for `to` any more.
    pub(crate) fn move_on(&self, to: &Mailbox) -> (Vec<Receipt>, bool) {
        self.move_parked(to, None, usize::MAX)
    }

    /// Moves up to `at_most` of `to`'s parked messages into its mailbox, in
    /// order, into `first` and then whatever room it has. Returns their
    /// receipts, and whether nothing is parked for `to` any more (its entry
    /// then goes, so new messages go straight to its mailbox again).
    fn move_parked(
        &self,
        to: &Mailbox,
        mut first: Option<Permit<'_, Inbound>>,
        at_most: usize,
    ) -> (Vec<Receipt>, bool) {
        let mut table = self.table.lock();
        let mut moved = Vec::new();
        let mut bytes = 0;
        let emptied = match table.by_engine.get_mut(&to.name) {
            Some(parked) => {
                while moved.len() < at_most && !parked.messages.is_empty() {
                    let Some(slot) = first.take().or_else(|| to.tx.try_reserve().ok()) else { break };
                    let Some((message, receipt)) = parked.messages.pop_front() else { break };
                    let size = weight(&message);
                    parked.bytes -= size;
                    bytes += size;
                    slot.send(message);
                    moved.push(receipt);
                }
                parked.messages.is_empty()
            }
            None => true,
        };
        table.bytes -= bytes;
        if emptied {
            table.by_engine.remove(&to.name);
            self.count_engines(&table);
        }
        (moved, emptied)
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
        self.count_engines(&table);
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
                    self.count_engines(&table);
                    parked
                };
                self.release(parked.messages.into_iter().map(|(_, receipt)| receipt).collect());
                return;
            };
            let (moved, emptied) = self.move_parked(&to, Some(permit), MOVE_AT_ONCE);
            if !moved.is_empty() {
                self.release(moved);
            }
            if emptied {
                return;
            }
        }
    }
}
