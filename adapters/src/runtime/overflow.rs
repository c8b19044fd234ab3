//! Messages from peers that found their engine's mailbox full. A
//! connection's reader never waits for one engine: it parks the message
//! here and reads on, so the peer's traffic to every other engine keeps
//! flowing. The core holds back the acknowledgement of a parked message
//! (and of every later one on its connection) until it reaches the
//! engine, so the peer's window bounds what a connection parks, and a
//! fast sender slows down instead of losing messages. A task per parked
//! engine moves its messages on, in order, as the engine makes room.
//! Beyond a budget in bytes, per engine and per node, a message is dropped
//! and its sender told (the caller sends the notice). Which sender loses
//! is fair: the one holding the most of the engine's room. A newcomer's
//! message pushes out the newest parked message of the largest holder; the
//! largest holder's own new messages are the ones refused.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use netmachine_domain::{EngineName, NodeIdentity};
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
    /// Bytes parked per sending node.
    by_sender: HashMap<NodeIdentity, usize>,
}

impl Parked {
    fn push(&mut self, message: Inbound, receipt: Receipt, size: usize) {
        if let Some(sender) = sender_of(&message) {
            *self.by_sender.entry(sender).or_default() += size;
        }
        self.messages.push_back((message, receipt));
        self.bytes += size;
    }

    fn pop_front(&mut self) -> Option<(Inbound, Receipt, usize)> {
        let (message, receipt) = self.messages.pop_front()?;
        Some(self.took(message, receipt))
    }

    /// The newest parked message of `sender`.
    fn take_newest_of(&mut self, sender: &NodeIdentity) -> Option<(Inbound, Receipt, usize)> {
        let at = self.messages.iter().rposition(|(m, _)| sender_of(m).as_ref() == Some(sender))?;
        let (message, receipt) = self.messages.remove(at)?;
        Some(self.took(message, receipt))
    }

    fn took(&mut self, message: Inbound, receipt: Receipt) -> (Inbound, Receipt, usize) {
        let size = weight(&message);
        self.bytes -= size;
        if let Some(sender) = sender_of(&message) {
            if let Some(held) = self.by_sender.get_mut(&sender) {
                *held -= size;
                if *held == 0 {
                    self.by_sender.remove(&sender);
                }
            }
        }
        (message, receipt, size)
    }

    /// The sender holding the most bytes here, and how many.
    fn largest_holder(&self) -> Option<(NodeIdentity, usize)> {
        self.by_sender.iter().max_by_key(|(node, bytes)| (**bytes, **node)).map(|(node, bytes)| (*node, *bytes))
    }
}

fn sender_of(message: &Inbound) -> Option<NodeIdentity> {
    match message {
        Inbound::Message(m) => Some(m.src.node),
        _ => None,
    }
}

/// A message from a peer parked, or why not.
#[derive(Debug)]
pub(crate) enum Parking {
    /// Parked; these messages of the largest holder were pushed out to
    /// make room (their receipts to release, their senders to tell).
    Parked(Vec<(Inbound, Receipt)>),
    /// Refused: its sender holds the most room already, or there is none.
    Refused(Box<Inbound>),
}

#[derive(Debug, Default)]
struct Table {
    by_engine: HashMap<EngineName, Parked>,
    bytes: usize,
}

/// The parked messages of a node, by engine.
pub(crate) struct Overflow {
    /// Bytes that may be parked per engine, and in all.
    budget: (usize, usize),
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

impl Default for Overflow {
    fn default() -> Self {
        Self::with_budget(MAX_PARKED_BYTES_PER_ENGINE, MAX_PARKED_BYTES)
    }
}

impl Overflow {
    pub(crate) fn with_budget(per_engine: usize, total: usize) -> Self {
        Self {
            budget: (per_engine, total),
            table: Mutex::default(),
            engines: AtomicUsize::new(0),
            released: OnceLock::new(),
        }
    }

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
                    let Some((message, receipt, size)) = parked.pop_front() else { break };
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
    /// parked already. Over budget, the largest holder of `to`'s room
    /// loses: its newest messages are pushed out for this one, or this one
    /// is refused if its sender is that holder.
    pub(crate) fn park(self: &Arc<Self>, to: &Mailbox, message: Inbound, receipt: Receipt) -> Parking {
        let size = weight(&message);
        let sender = sender_of(&message);
        let mut table = self.table.lock();
        let first = !table.by_engine.contains_key(&to.name);
        let mut total = table.bytes;
        let parked = table.by_engine.entry(to.name.clone()).or_default();
        let (per_engine, all) = self.budget;
        let fits = |parked: &Parked, total: usize| parked.bytes + size <= per_engine && total + size <= all;
        let mut pushed_out = Vec::new();
        while !fits(parked, total) {
            let mine = sender.and_then(|s| parked.by_sender.get(&s).copied()).unwrap_or(0);
            let largest = parked.largest_holder().filter(|(node, bytes)| Some(*node) != sender && mine + size < *bytes);
            let Some((node, _)) = largest else { break };
            let Some((out, out_receipt, out_size)) = parked.take_newest_of(&node) else { break };
            total -= out_size;
            pushed_out.push((out, out_receipt));
        }
        if !fits(parked, total) {
            // Nothing pushed out is lost: it goes back where it was.
            for (out, out_receipt) in pushed_out.into_iter().rev() {
                let out_size = weight(&out);
                parked.push(out, out_receipt, out_size);
            }
            if first {
                table.by_engine.remove(&to.name);
            }
            return Parking::Refused(Box::new(message));
        }
        parked.push(message, receipt, size);
        table.bytes = total + size;
        self.count_engines(&table);
        drop(table);
        if first {
            tokio::spawn(Arc::clone(self).forward(to.clone()));
        }
        Parking::Parked(pushed_out)
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

#[cfg(test)]
mod tests {
    use netmachine_domain::{
        Body, DestinationIdentity, EngineIdentity, EngineMessage, MessageId, NodeIdentity, ProtocolId,
    };
    use tokio::sync::mpsc;

    use super::*;

    fn from(node: u8, id: u64) -> Inbound {
        let src = EngineIdentity::new(NodeIdentity::ed25519([node; 32]), EngineName::new("app").expect("valid"));
        let dst = EngineIdentity::new(NodeIdentity::ed25519([9; 32]), EngineName::new("inbox").expect("valid"));
        Inbound::Message(EngineMessage::new(
            src,
            DestinationIdentity::Engine(dst),
            MessageId(id),
            ProtocolId::new("t", 1).expect("valid"),
            Body::new(vec![0; 744]).expect("small"),
        ))
    }

    fn receipt(node: u8, number: u64) -> Receipt {
        Receipt { conn: u64::from(node), number }
    }

    fn ids_of(out: &[(Inbound, Receipt)]) -> Vec<(u64, u64)> {
        out.iter().map(|(_, r)| (r.conn, r.number)).collect()
    }

    /// Guards mailbox space: a sender flooding an engine loses its own
    /// messages, never another sender's.
    #[tokio::test]
    async fn a_flooding_sender_loses_its_own_messages_not_others() {
        // Each message weighs 1000 bytes: room for ten.
        let overflow = Arc::new(Overflow::with_budget(10_000, 100_000));
        let (tx, _rx) = mpsc::channel(1);
        let to = Mailbox::new(EngineName::new("inbox").expect("valid"), tx);
        for n in 0..10 {
            assert!(matches!(overflow.park(&to, from(1, n), receipt(1, n)), Parking::Parked(out) if out.is_empty()));
        }
        // The flooder's next message is refused.
        assert!(matches!(overflow.park(&to, from(1, 10), receipt(1, 10)), Parking::Refused(_)));
        // An honest sender's message pushes out the flooder's newest.
        let Parking::Parked(out) = overflow.park(&to, from(2, 0), receipt(2, 0)) else { panic!("refused") };
        assert_eq!(ids_of(&out), [(1, 9)]);
        let Parking::Parked(out) = overflow.park(&to, from(2, 1), receipt(2, 1)) else { panic!("refused") };
        assert_eq!(ids_of(&out), [(1, 8)]);
        // Once both hold the same, the newcomer's own messages are refused.
        for n in 2..5 {
            assert!(matches!(overflow.park(&to, from(2, n), receipt(2, n)), Parking::Parked(_)));
        }
        assert!(matches!(overflow.park(&to, from(2, 5), receipt(2, 5)), Parking::Refused(_)));
        assert_eq!(overflow.parked_by_engine(), [(to.name.clone(), 10)]);
    }
}
