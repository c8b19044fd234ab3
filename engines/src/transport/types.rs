//! What the Transport engine is told and what it asks for.

use std::fmt;

use netmachine_domain::{HandshakeStatus, NodeIdentity, NodeMessage, TransportAddress};
use thiserror::Error;

/// A connection (or a dial attempt that may become one), numbered by the
/// engine.
pub type ConnId = u64;

/// A table keyed by connection. Connection numbers are this node's own
/// counter, so no peer can choose them: a multiplicative hash is enough,
/// and much cheaper than the default SipHash on every frame.
pub type ConnMap<V> = std::collections::HashMap<ConnId, V, std::hash::BuildHasherDefault<ConnIdHasher>>;

#[derive(Debug, Default, Clone, Copy)]
pub struct ConnIdHasher(u64);

impl std::hash::Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// This node dialled.
    Outbound,
    /// The peer dialled.
    Inbound,
}

/// Why a connection closed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CloseReason {
    /// An ephemeral peer was idle too long.
    Idle,
    /// Another connection to the same peer was kept.
    Duplicate,
    /// The peer closed it or the network dropped it.
    Lost(String),
    /// The peer broke the protocol (a garbage frame, a bad signature, an
    /// impersonation).
    Violation(String),
    /// This node is stopping.
    Shutdown,
    /// This node's operator removed or banned the peer.
    Removed,
    /// An engine of this node let the peer go, and said why.
    Dropped(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle => f.write_str("idle"),
            Self::Duplicate => f.write_str("duplicate connection"),
            Self::Lost(why) => write!(f, "connection lost: {why}"),
            Self::Violation(why) => write!(f, "protocol violation: {why}"),
            Self::Shutdown => f.write_str("shutting down"),
            Self::Removed => f.write_str("the peer was removed or banned"),
            Self::Dropped(why) => write!(f, "dropped by an engine: {why}"),
        }
    }
}

/// Why connecting to a peer failed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConnectFailure {
    /// No advert with a usable address is known.
    NoAddress,
    /// Every address was tried; the last error is given.
    Unreachable(String),
    /// The responder proved a different identity than the one dialled.
    WrongIdentity,
    /// The responder answered the handshake with a refusal.
    Refused(HandshakeStatus),
    /// This node is at its connection limit.
    LocalCapacity,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAddress => f.write_str("no address known"),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::WrongIdentity => f.write_str("the peer proved a different identity"),
            Self::Refused(status) => write!(f, "refused by the peer: {status:?}"),
            Self::LocalCapacity => f.write_str("this node is at its connection limit"),
        }
    }
}

/// Notifications for engines that watch connectivity.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TransportEvent {
    NodeConnected { peer: NodeIdentity, direction: Direction },
    NodeConnectFailed { peer: NodeIdentity, reason: ConnectFailure },
    NodeDisconnected { peer: NodeIdentity, reason: CloseReason },
}

/// Why a message was given up.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Undeliverable {
    /// Its expiry passed before it could be sent.
    Expired,
    /// The node is stopping.
    Shutdown,
    /// This node banned the destination node.
    Banned,
}

impl fmt::Display for Undeliverable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired => f.write_str("expired before it could be delivered"),
            Self::Shutdown => f.write_str("the node stopped before it could be delivered"),
            Self::Banned => f.write_str("its destination node was banned"),
        }
    }
}

/// What the engine asks its driver to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TransportEffect {
    /// Connect to `peer` at `address`; report with `dial_succeeded` or
    /// `dial_failed` under the same `attempt`.
    Dial {
        attempt: ConnId,
        peer: NodeIdentity,
        address: TransportAddress,
    },
    /// Write a message on an established connection.
    Transmit {
        conn: ConnId,
        message: NodeMessage,
    },
    /// Close a connection; its unsent and unacknowledged messages come back
    /// through `closed`.
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    Event(TransportEvent),
    /// Tell the sender its message was not delivered.
    GiveUp {
        message: NodeMessage,
        reason: Undeliverable,
    },
    /// The engine forgot an idle peer: what the host keeps for it (its
    /// repeat filter) can go too.
    Forgotten {
        peer: NodeIdentity,
    },
}

/// Why the transport did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutboundError {
    #[error("no transport is configured on this node")]
    NoTransport,
    #[error("the send queue for {peer} is full")]
    QueueFull { peer: NodeIdentity },
    #[error("no address is known for {peer}")]
    NoAddress { peer: NodeIdentity },
    #[error("the transport has stopped")]
    Stopped,
}

/// The Transport's timers (see `timers.rs`): at most one of each kind per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum PeerTimer {
    /// The backoff is over, or an idle peer that wants a connection may dial.
    Redial(NodeIdentity),
    /// The earliest expiry among messages waiting while not connected.
    Expire(NodeIdentity),
    /// Ephemeral connections may have been quiet long enough to close, and
    /// peers with nothing to do long enough to forget: one sweep of the
    /// table for all of them, not a timer each (a node has many peers,
    /// and a timer weighs some 150 bytes).
    Sweep,
}
