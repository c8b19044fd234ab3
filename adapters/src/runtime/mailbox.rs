//! An engine's mailbox: what the node core delivers to a local engine
//! (`node_core::Delivery`), under the embedding API's name, and the
//! bounded channel it arrives by.

use std::sync::Arc;

use netmachine_domain::EngineName;
use tokio::sync::mpsc;

/// What arrives in an engine's mailbox.
pub use netmachine_engines::node_core::Delivery as Inbound;

/// The sending side of an engine's bounded mailbox, with the engine's name
/// (a sender waiting for an outcome is found by it). Shared: the Router
/// hands out a copy for every delivery, and one reference count is
/// cheaper than the channel's and the name's.
#[derive(Debug, Clone)]
pub struct Mailbox(Arc<MailboxEnds>);

#[derive(Debug)]
pub struct MailboxEnds {
    pub name: EngineName,
    pub tx: mpsc::Sender<Inbound>,
}

impl Mailbox {
    pub fn new(name: EngineName, tx: mpsc::Sender<Inbound>) -> Self {
        Self(Arc::new(MailboxEnds { name, tx }))
    }
}

impl std::ops::Deref for Mailbox {
    type Target = MailboxEnds;

    fn deref(&self) -> &MailboxEnds {
        &self.0
    }
}
