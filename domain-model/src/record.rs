//! What the Network Identity Store keeps per identity.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::advert::{DomainAdvert, NodeAdvert, TopicAdvert};
use crate::identity::{DomainIdentity, EngineIdentity, ExternalIdentity, NodeIdentity, TopicIdentity};
use crate::message::TransportPrefs;
use crate::time::Timestamp;

/// How much this node trusts another: 0 is banned, 128 the default for a
/// node it knows nothing about, 255 its own nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Trust(pub u8);

impl Trust {
    pub const BANNED: Trust = Trust(0);
    pub const DEFAULT: Trust = Trust(128);
    pub const OWN: Trust = Trust(255);

    pub fn is_banned(self) -> bool {
        self == Self::BANNED
    }
}

impl Default for Trust {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Standing earned from observed behaviour, 0 (worst) to 255.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reputation(pub u8);

impl Default for Reputation {
    fn default() -> Self {
        Self(128)
    }
}

/// What this node has measured of a peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Measurements {
    pub rtt_micros: Option<u32>,
    pub failures: u32,
    pub last_seen: Option<Timestamp>,
}

/// Whether a connection to the peer is kept up or closed when idle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Permanence {
    #[default]
    Ephemeral,
    Permanent,
}

/// A node's record: its advert when one is known (trust can be set, e.g. a
/// ban, before any advert arrives), and local knowledge about it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeIdentity,
    pub advert: Option<NodeAdvert>,
    pub trust: Trust,
    pub reputation: Reputation,
    pub measurements: Measurements,
    pub prefs: Option<TransportPrefs>,
    pub permanence: Permanence,
}

impl NodeRecord {
    pub fn new(id: NodeIdentity) -> Self {
        Self {
            id,
            advert: None,
            trust: Trust::DEFAULT,
            reputation: Reputation::default(),
            measurements: Measurements::default(),
            prefs: None,
            permanence: Permanence::Ephemeral,
        }
    }
}

/// An engine's record: its own key when it has one (otherwise its node's
/// key speaks for it).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EngineRecord {
    pub engine: EngineIdentity,
    pub key: Option<ExternalIdentity>,
}

/// The identity a record is about.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum RecordKey {
    Node(NodeIdentity),
    Engine(EngineIdentity),
    Topic(TopicIdentity),
    Domain(DomainIdentity),
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(id) => write!(f, "{id}"),
            Self::Engine(id) => write!(f, "{id}"),
            Self::Topic(id) => write!(f, "{id}"),
            Self::Domain(id) => write!(f, "{id}"),
        }
    }
}

/// One entry of the Network Identity Store.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum IdentityRecord {
    Node(NodeRecord),
    Engine(EngineRecord),
    Topic(TopicAdvert),
    Domain(DomainAdvert),
}

impl IdentityRecord {
    pub fn key(&self) -> RecordKey {
        match self {
            Self::Node(record) => RecordKey::Node(record.id),
            Self::Engine(record) => RecordKey::Engine(record.engine.clone()),
            Self::Topic(advert) => RecordKey::Topic(advert.topic),
            Self::Domain(advert) => RecordKey::Domain(advert.id),
        }
    }
}
