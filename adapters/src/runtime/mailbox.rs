//! What an engine's mailbox carries.

use netmachine_domain::{DestinationIdentity, EngineMessage, MessageId};
use netmachine_engines::identity_store::IdentityUpdated;
use tokio::sync::mpsc;

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
pub type Mailbox = mpsc::Sender<Inbound>;
