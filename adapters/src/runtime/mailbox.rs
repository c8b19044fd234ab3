//! What an engine's mailbox carries: what the node core delivers to a
//! local engine (`node_core::Delivery`), under the embedding API's name.

use tokio::sync::mpsc;

/// What arrives in an engine's mailbox.
pub use netmachine_engines::node_core::Delivery as Inbound;

/// The sending side of an engine's bounded mailbox.
pub type Mailbox = mpsc::Sender<Inbound>;
