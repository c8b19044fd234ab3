//! What the Router tells a sender whose message it could not route, and why
//! it drops an inbound message.

use netmachine_domain::{DestinationIdentity, EngineName, NodeIdentity, RoutingScope, RuleError, TopicIdentity};
use thiserror::Error;

use crate::ports::BadSignature;
use crate::transport::OutboundError;

/// A local engine's message was not routed. Each variant names the
/// destination so the sender knows which message failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("no route to {dst}")]
    NoRoute { dst: DestinationIdentity },
    #[error("the source engine {src} is not registered on this node")]
    UnknownSource { src: String },
    #[error("message to {dst} not routed: {rule}")]
    Expired { dst: DestinationIdentity, rule: RuleError },
    #[error("message to {dst} is outside its routing scope {scope:?}")]
    OutOfScope { dst: DestinationIdentity, scope: RoutingScope },
    #[error("this node is not a publisher named in the advert of {topic}")]
    NotAPublisher { topic: TopicIdentity },
    #[error("routing to {dst} is not supported yet: {what}")]
    Unsupported { dst: DestinationIdentity, what: &'static str },
    #[error("the transport did not take the message to {dst}: {source}")]
    Outbound { dst: DestinationIdentity, source: OutboundError },
    #[error("{dst} is banned on this node")]
    Banned { dst: DestinationIdentity },
}

/// An inbound message from a peer was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InboundRejection {
    #[error("message for {dst} is not addressed to this node")]
    NotForThisNode { dst: NodeIdentity },
    #[error("peer {peer} sent a message claiming to come from {claimed}")]
    Impersonation { peer: NodeIdentity, claimed: String },
    #[error("message from {peer} carries a bad signature")]
    BadSignature { peer: NodeIdentity },
    #[error("message from {peer} dropped: {rule}")]
    Expired { peer: NodeIdentity, rule: RuleError },
    #[error("message from {peer} has local routing scope and cannot arrive from another node")]
    OutOfScope { peer: NodeIdentity },
    #[error("{peer} is not a publisher of {topic}")]
    NotAPublisher { peer: NodeIdentity, topic: TopicIdentity },
    #[error("no local route for a message from {peer} to {dst}")]
    NoRoute { peer: NodeIdentity, dst: DestinationIdentity },
    #[error("message from {peer} needs a feature not supported yet: {what}")]
    Unsupported { peer: NodeIdentity, what: &'static str },
    #[error("{peer} is banned on this node")]
    Banned { peer: NodeIdentity },
}

impl InboundRejection {
    /// A peer that forges or impersonates is disconnected, not just ignored.
    pub fn disconnects_peer(&self) -> bool {
        matches!(self, Self::BadSignature { .. } | Self::Impersonation { .. })
    }
}

impl From<(NodeIdentity, BadSignature)> for InboundRejection {
    fn from((peer, _): (NodeIdentity, BadSignature)) -> Self {
        Self::BadSignature { peer }
    }
}

/// Registering or unregistering an engine failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    #[error("an engine named {0} is already registered on this node")]
    NameTaken(EngineName),
    #[error("this node is at its limit of {0} engines")]
    Full(usize),
    #[error("protocol {0} is already served by another engine on this node")]
    ProtocolTaken(String),
}

/// A topic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic {0} is not known on this node")]
    Unknown(TopicIdentity),
    #[error("topic {0} already exists on this node")]
    AlreadyExists(TopicIdentity),
    #[error("the advert of {topic} does not carry a valid signature of the topic key")]
    BadAdvert { topic: TopicIdentity },
    #[error("only the creator {creator} may delete topic {topic}")]
    NotCreator { topic: TopicIdentity, creator: String },
    #[error("engine {0} is not registered on this node")]
    UnknownEngine(EngineName),
    #[error("this node is at its limit of {0} topics")]
    TooManyTopics(usize),
    #[error("topic {topic} is at its limit of {max} local subscribers")]
    TooManySubscribers { topic: TopicIdentity, max: usize },
}
