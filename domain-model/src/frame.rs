//! The kinds of frame that cross a connection or sit in a store. A codec
//! adapter gives each kind its number in the frame header.

use serde::{Deserialize, Serialize};

use crate::advert::{DomainAdvert, NodeAdvert, TopicAdvert};
use crate::handshake::{Ack, Hello, HelloReply};
use crate::message::NodeMessage;

// Frames are short-lived values between a codec and an engine; boxing the
// large variant would cost an allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Frame {
    Node(NodeMessage),
    NodeAdvert(NodeAdvert),
    TopicAdvert(TopicAdvert),
    DomainAdvert(DomainAdvert),
    Hello(Hello),
    HelloReply(HelloReply),
    Ack(Ack),
}

/// The kind of a frame, as the header names it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum FrameKind {
    Node = 1,
    NodeAdvert = 2,
    TopicAdvert = 3,
    DomainAdvert = 4,
    Hello = 5,
    HelloReply = 6,
    Ack = 7,
}

impl FrameKind {
    pub fn from_u8(kind: u8) -> Option<Self> {
        Some(match kind {
            1 => Self::Node,
            2 => Self::NodeAdvert,
            3 => Self::TopicAdvert,
            4 => Self::DomainAdvert,
            5 => Self::Hello,
            6 => Self::HelloReply,
            7 => Self::Ack,
            _ => return None,
        })
    }
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Node(_) => FrameKind::Node,
            Self::NodeAdvert(_) => FrameKind::NodeAdvert,
            Self::TopicAdvert(_) => FrameKind::TopicAdvert,
            Self::DomainAdvert(_) => FrameKind::DomainAdvert,
            Self::Hello(_) => FrameKind::Hello,
            Self::HelloReply(_) => FrameKind::HelloReply,
            Self::Ack(_) => FrameKind::Ack,
        }
    }
}
