//! What two nodes say to each other when a connection opens, and the
//! acknowledgements that let a sender forget what its peer has received.

use serde::{Deserialize, Serialize};

/// The range of connection protocol versions a node speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionRange {
    pub min: u16,
    pub max: u16,
}

impl VersionRange {
    /// The highest version both ranges contain.
    pub fn best_common(self, other: VersionRange) -> Option<u16> {
        let low = self.min.max(other.min);
        let high = self.max.min(other.max);
        (low <= high).then_some(high)
    }
}

/// The dialler's opening: its versions, the version of its own advert, and
/// the version it holds of the responder's advert (0 for none).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub versions: VersionRange,
    /// Random per process start: a peer that restarted has a new one, so
    /// its fresh connection replaces the stale one.
    pub boot: u64,
    pub own_advert_version: u64,
    pub held_advert_version_of_peer: u64,
}

/// The responder's answer to a [`Hello`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum HandshakeStatus {
    Ok,
    /// The responder is at its connection limit (in total or for the
    /// dialler's IP address).
    OverCapacity,
    /// No protocol version in common.
    Incompatible,
    /// The responder refuses this node (it is banned there).
    Denied,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HelloReply {
    pub status: HandshakeStatus,
    pub versions: VersionRange,
    pub boot: u64,
    pub own_advert_version: u64,
    pub held_advert_version_of_peer: u64,
}

/// The receiver has taken the first `received` node messages of this
/// connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ack {
    pub received: u64,
}
