//! The tokio runtime that hosts a node's engines, and the embedding API.

mod delivery;
mod engine;
mod error;
mod identity_actor;
mod mailbox;
mod node;

pub use delivery::{Delivery, MAX_WAITING_SENDERS};
pub use engine::{EngineHandle, SendOptions};
pub use error::{NodeError, SendError};
pub use mailbox::{Inbound, Mailbox};
pub(crate) use node::Pending;
pub use node::{
    IdentityHook, NoTransport, Node, NodeBuilder, NodeStats, WeakNode, DEFAULT_MAILBOX_CAPACITY, IDENTITY_DB_FILE,
};
