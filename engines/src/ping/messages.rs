//! The bytes of the ping protocol. Every layout is fixed-size, so that a
//! body of any other length is refused before it touches state.
//!
//! - between nodes: a kind byte (0 ping, 1 pong) and an 8-byte nonce;
//! - a local engine's request: the node to ping, in its binary form (the
//!   key scheme's tag, then the key: 33 bytes);
//! - the answer to it: a kind byte, the peer, then for an answer its round
//!   trip in milliseconds, for a refusal the reason in UTF-8.

use netmachine_domain::{Body, ExternalIdentity, NodeIdentity};

/// A node identity in binary form: the scheme tag and an Ed25519 key.
const IDENTITY_BYTES: usize = 33;

const PING: u8 = 0;
const PONG: u8 = 1;
const ANSWERED: u8 = 0;
const TIMED_OUT: u8 = 1;
const REFUSED: u8 = 2;

/// What one ping engine sends another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Ping(u64),
    Pong(u64),
}

impl Wire {
    pub fn encode(self) -> Body {
        let (kind, nonce) = match self {
            Self::Ping(nonce) => (PING, nonce),
            Self::Pong(nonce) => (PONG, nonce),
        };
        let mut bytes = Vec::with_capacity(9);
        bytes.push(kind);
        bytes.extend_from_slice(&nonce.to_be_bytes());
        fits(bytes)
    }

    pub fn decode(body: &Body) -> Option<Self> {
        let bytes: &[u8; 9] = body.as_bytes().as_ref().try_into().ok()?;
        let nonce = u64::from_be_bytes(bytes[1..].try_into().ok()?);
        match bytes[0] {
            PING => Some(Self::Ping(nonce)),
            PONG => Some(Self::Pong(nonce)),
            _ => None,
        }
    }
}

/// The body a local engine sends to ask for a ping of `peer`.
pub fn request(peer: NodeIdentity) -> Body {
    fits(peer.key().to_tagged_bytes())
}

pub(super) fn decode_request(body: &Body) -> Option<NodeIdentity> {
    identity(body.as_bytes())
}

fn identity(bytes: &[u8]) -> Option<NodeIdentity> {
    if bytes.len() != IDENTITY_BYTES {
        return None;
    }
    ExternalIdentity::from_tagged_bytes("node identity", bytes).ok().map(NodeIdentity::new)
}

/// How a ping a local engine asked for ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered { peer: NodeIdentity, rtt_ms: u64 },
    TimedOut { peer: NodeIdentity },
    Refused { peer: NodeIdentity, reason: String },
}

impl Outcome {
    pub fn encode(&self) -> Body {
        let mut bytes = Vec::with_capacity(1 + IDENTITY_BYTES + 8);
        let (kind, peer) = match self {
            Self::Answered { peer, .. } => (ANSWERED, peer),
            Self::TimedOut { peer } => (TIMED_OUT, peer),
            Self::Refused { peer, .. } => (REFUSED, peer),
        };
        bytes.push(kind);
        bytes.extend_from_slice(&peer.key().to_tagged_bytes());
        match self {
            Self::Answered { rtt_ms, .. } => bytes.extend_from_slice(&rtt_ms.to_be_bytes()),
            Self::TimedOut { .. } => {}
            Self::Refused { reason, .. } => bytes.extend_from_slice(reason.as_bytes()),
        }
        fits(bytes)
    }

    pub fn decode(body: &Body) -> Option<Self> {
        let bytes = body.as_bytes();
        let (&kind, rest) = bytes.split_first()?;
        let peer = identity(rest.get(..IDENTITY_BYTES)?)?;
        let tail = &rest[IDENTITY_BYTES..];
        match kind {
            ANSWERED => Some(Self::Answered { peer, rtt_ms: u64::from_be_bytes(tail.try_into().ok()?) }),
            TIMED_OUT if tail.is_empty() => Some(Self::TimedOut { peer }),
            REFUSED => Some(Self::Refused { peer, reason: String::from_utf8(tail.to_vec()).ok()? }),
            _ => None,
        }
    }
}

/// Every body built here is far below the body limit.
fn fits(bytes: Vec<u8>) -> Body {
    Body::new(bytes).unwrap_or_else(|_| unreachable!("a ping body is under a hundred bytes"))
}
