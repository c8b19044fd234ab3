//! An engine's mailbox: what the node core delivers to a local engine
//! (`node_core::Delivery`), under the embedding API's name, and the
//! bounded channel it arrives by.

use netmachine_domain::EngineName;
use tokio::sync::mpsc;

/// What arrives in an engine's mailbox.
pub use netmachine_engines::node_core::Delivery as Inbound;

/// The sending side of an engine's bounded mailbox, with the engine's name
/// (a sender waiting for an outcome is found by it).
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub name: EngineName,
    pub tx: mpsc::Sender<Inbound>,
}
