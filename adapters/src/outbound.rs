//! The outbound side of a node's transport, as the runtime sees it: where
//! it hands the messages the Router decided go to other nodes.

use netmachine_domain::{NodeIdentity, NodeMessage};
pub use netmachine_engines::transport::OutboundError;

/// The outbound side of the transport: hands a message to the connection
/// (or queue) for a peer. It never blocks.
pub trait OutboundTransport: Send + Sync {
    fn send(&self, to: NodeIdentity, message: NodeMessage) -> Result<(), OutboundError>;
}
