//! The tokio runtime that hosts a node's core, and the embedding API.

mod delivery;
mod disk;
mod engine;
mod error;
mod host;
mod mailbox;
mod node;
mod overflow;
mod topic_keys;

pub use delivery::{Delivery, MAX_WAITING_SENDERS};
pub use engine::{EngineHandle, SendOptions};
pub use error::{NodeError, SendError};
pub use host::MAX_QUEUED_ADVERTS;
pub(crate) use host::{is_advert, ConnHandle, DialRequest};
pub use mailbox::{Inbound, Mailbox};
pub use node::{Node, NodeBuilder, NodeStats, WeakNode, DEFAULT_MAILBOX_CAPACITY, IDENTITY_DB_FILE};
pub use overflow::{MAX_PARKED_BYTES, MAX_PARKED_BYTES_PER_ENGINE};
