//! Errors of the embedding API.

use crate::codec::CodecError;
use crate::store::StoreError;
use netmachine_domain::{DestinationIdentity, ValidationError};
use netmachine_engines::identity_store::UpdateError;
use netmachine_engines::{RegistryError, RouteError, TopicError};
use thiserror::Error;

use crate::crypto::KeyError;
use crate::keyfile::KeyFileError;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the node has stopped")]
    Stopped,
    #[error("cannot start the identity store thread: {0}")]
    Thread(std::io::Error),
    #[error("this node holds no key for topic {0}: only the node that created it can sign its adverts")]
    NoTopicKey(netmachine_domain::TopicIdentity),
}

/// A message was not sent.
#[derive(Debug, Error)]
pub enum SendError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("the mailbox of {dst} is closed: that engine has stopped")]
    MailboxClosed { dst: DestinationIdentity },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{max} senders already wait for outcomes on this node; send without waiting, or try again shortly")]
    TooManyWaiting { max: usize },
}
