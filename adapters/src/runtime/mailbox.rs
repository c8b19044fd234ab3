//! An engine's mailbox: what it carries, and what happens when it is full.
//!
//! A local sender whose message finds the mailbox full waits for room: a
//! slow engine slows the engines that send to it on the same node. A
//! message from the network never waits: a connection carries traffic for
//! every engine of the node, and one slow engine must not hold up the
//! others. It goes to the engine's overflow instead, which a task of its
//! own moves into the mailbox as room appears, in order; once the overflow
//! holds as many messages as the mailbox, further messages from the
//! network are dropped and the node tells their senders
//! ([`Mailbox::offer_from_network`]). The mailbox and its overflow are
//! bounded by the same capacity, so a slow engine holds at most twice it.

use netmachine_domain::{DestinationIdentity, EngineMessage, MessageId};
use netmachine_engines::identity_store::IdentityUpdated;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TrySendError};

/// What arrives in an engine's mailbox.
#[derive(Debug, Clone)]
pub enum Inbound {
    Message(EngineMessage),
    IdentityUpdated(IdentityUpdated),
    /// A message this engine sent was given up: its expiry passed before a
    /// connection could take it, or the node stopped.
    Undeliverable {
        id: MessageId,
        dst: DestinationIdentity,
        reason: String,
    },
}

/// The sending side of an engine's bounded mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Inbound>,
    overflow: Arc<Overflow>,
}

#[derive(Debug)]
struct Overflow {
    waiting: Mutex<OverflowQueue>,
    /// Messages in the overflow, and the one its task is moving: while it
    /// is above 0, a message from the network goes behind them.
    pending: AtomicUsize,
    capacity: usize,
}

#[derive(Debug, Default)]
struct OverflowQueue {
    messages: VecDeque<Inbound>,
    moving: bool,
}

impl Mailbox {
    /// A mailbox of `capacity` messages, and its receiving side.
    pub fn bounded(capacity: usize) -> (Self, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflow = Arc::new(Overflow { waiting: Mutex::default(), pending: AtomicUsize::new(0), capacity });
        (Self { tx, overflow }, rx)
    }

    /// As `mpsc::Sender::try_send`: the message comes back when refused.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, inbound: Inbound) -> Result<(), TrySendError<Inbound>> {
        self.tx.try_send(inbound)
    }

    pub async fn send(&self, inbound: Inbound) -> Result<(), SendError<Inbound>> {
        self.tx.send(inbound).await
    }

    /// Messages waiting in the overflow, for status displays and tests.
    pub fn overflowing(&self) -> usize {
        self.overflow.pending.load(Ordering::Acquire)
    }

    /// Hands over a message from the network without waiting: into the
    /// mailbox, or behind what already waits in the overflow.
    pub fn offer_from_network(&self, inbound: Inbound) -> Offered {
        if self.overflow.pending.load(Ordering::Acquire) == 0 {
            match self.tx.try_send(inbound) {
                Ok(()) => return Offered::Taken,
                Err(TrySendError::Closed(_)) => return Offered::Gone,
                Err(TrySendError::Full(inbound)) => return self.overflow(inbound),
            }
        }
        self.overflow(inbound)
    }

    fn overflow(&self, inbound: Inbound) -> Offered {
        let mut waiting = self.overflow.waiting.lock();
        if self.tx.is_closed() {
            return Offered::Gone;
        }
        if waiting.messages.len() >= self.overflow.capacity {
            return Offered::Full;
        }
        waiting.messages.push_back(inbound);
        self.overflow.pending.fetch_add(1, Ordering::AcqRel);
        if !waiting.moving {
            waiting.moving = true;
            let (tx, overflow) = (self.tx.clone(), Arc::clone(&self.overflow));
            tokio::spawn(move_overflow(tx, overflow));
        }
        Offered::Taken
    }
}

/// What became of a message from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// In the mailbox, or waiting in its overflow.
    Taken,
    /// Dropped: the mailbox and its overflow are full.
    Full,
    /// Dropped: the engine has gone.
    Gone,
}

/// Moves an overflow into its mailbox as room appears, then ends.
async fn move_overflow(tx: mpsc::Sender<Inbound>, overflow: Arc<Overflow>) {
    loop {
        let next = {
            let mut waiting = overflow.waiting.lock();
            let next = waiting.messages.pop_front();
            if next.is_none() {
                waiting.moving = false;
            }
            next
        };
        let Some(inbound) = next else { return };
        let sent = tx.send(inbound).await;
        overflow.pending.fetch_sub(1, Ordering::AcqRel);
        if sent.is_err() {
            // The engine is gone: what waits for it goes too.
            let mut waiting = overflow.waiting.lock();
            let dropped = waiting.messages.len();
            waiting.messages.clear();
            waiting.moving = false;
            overflow.pending.fetch_sub(dropped, Ordering::AcqRel);
            return;
        }
    }
}
