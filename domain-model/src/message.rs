//! Messages between engines, between nodes, and through relays.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::bounded::BoundedText;
use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::{RuleError, ValidationError};
use crate::identity::{DestinationIdentity, DomainIdentity, EngineIdentity, NodeIdentity, Signature};
use crate::limits::{MAX_BODY_BYTES, MAX_PROTOCOL_NAME_BYTES, MAX_RELAY_SEALED_BYTES};
use crate::signed::Signed;
use crate::time::Timestamp;
use crate::ExternalIdentity;

/// A message number, unique per (source, destination) pair.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

/// How far a message may travel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum RoutingScope {
    /// Only engines on the sending node.
    Local,
    /// Only nodes known to be members of the domain (and this node).
    Domain(DomainIdentity),
    /// Anywhere.
    #[default]
    Any,
}

impl Canonical for RoutingScope {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        match self {
            Self::Local => writer.u8(0),
            Self::Domain(domain) => writer.u8(1).field(domain),
            Self::Any => writer.u8(2),
        };
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Ordering {
    #[default]
    Ordered,
    Unordered,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum Reliability {
    #[default]
    Reliable,
    Unreliable,
}

/// How the message travels between nodes. Onion and mixnet paths come later.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum PathKind {
    #[default]
    Direct,
}

/// A sender's wishes for how its message crosses the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct TransportPrefs {
    pub ordering: Ordering,
    pub reliability: Reliability,
    pub path: PathKind,
    /// A transport protocol to prefer over the peer's advertised weights.
    pub protocol: Option<crate::TransportProtocol>,
}

impl Canonical for TransportPrefs {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.u8(self.ordering as u8).u8(self.reliability as u8).u8(self.path as u8);
        writer.option(self.protocol.as_ref(), |w, p| {
            w.u8(*p as u8);
        });
    }
}

/// The protocol a body is written in: a name and a version.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize_tuple, Deserialize_tuple)]
pub struct ProtocolId {
    pub name: BoundedText<MAX_PROTOCOL_NAME_BYTES>,
    pub version: u16,
}

impl ProtocolId {
    pub fn new(name: &str, version: u16) -> Result<Self, ValidationError> {
        if name.is_empty() {
            return Err(ValidationError::Empty { field: "protocol name" });
        }
        Ok(Self { name: BoundedText::new("protocol name", name)?, version })
    }
}

impl Canonical for ProtocolId {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.field(&self.name).u16(self.version);
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// An opaque message body of at most [`MAX_BODY_BYTES`]. Cloning it is
/// cheap: publishing one event to many subscribers shares the bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Body(Bytes);

impl Body {
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, ValidationError> {
        let bytes = bytes.into();
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ValidationError::TooLong { field: "message body", len: bytes.len(), max: MAX_BODY_BYTES });
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = Bytes::deserialize(deserializer)?;
        Self::new(bytes).map_err(serde::de::Error::custom)
    }
}

/// A message from one engine to a destination.
#[derive(Clone, PartialEq, Eq, Debug, Serialize_tuple, Deserialize_tuple)]
pub struct EngineMessage {
    pub src: EngineIdentity,
    pub dst: DestinationIdentity,
    pub id: MessageId,
    pub reply_to: Option<MessageId>,
    pub expiry: Option<Timestamp>,
    pub scope: RoutingScope,
    pub prefs: Option<TransportPrefs>,
    pub protocol: ProtocolId,
    pub body: Body,
    /// The source's signature over every other field. Optional: a message
    /// that crosses one authenticated hop is vouched for by the channel.
    pub sig: Option<Signature>,
}

impl EngineMessage {
    /// A message with no reply, expiry, preferences or signature, scoped to
    /// anywhere; set the other fields on the result.
    pub fn new(src: EngineIdentity, dst: DestinationIdentity, id: MessageId, protocol: ProtocolId, body: Body) -> Self {
        Self {
            src,
            dst,
            id,
            reply_to: None,
            expiry: None,
            scope: RoutingScope::Any,
            prefs: None,
            protocol,
            body,
            sig: None,
        }
    }

    /// Fails when the message's expiry has passed at `now`.
    pub fn check_not_expired(&self, now: Timestamp) -> Result<(), RuleError> {
        crate::validity::check_expiry(self.expiry, now)
    }
}

impl Signed for EngineMessage {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut w = CanonicalWriter::new("netmachine/EngineMessage/1");
        w.field(&self.src).field(&self.dst).u64(self.id.0);
        w.option(self.reply_to.as_ref(), |w, id| {
            w.u64(id.0);
        });
        w.option(self.expiry.as_ref(), |w, t| {
            w.u64(t.0);
        });
        w.field(&self.scope);
        w.option(self.prefs.as_ref(), |w, p| {
            w.field(p);
        });
        w.field(&self.protocol).bytes(self.body.as_bytes());
        w.finish()
    }

    fn signature(&self) -> Option<&Signature> {
        self.sig.as_ref()
    }

    fn signer(&self) -> ExternalIdentity {
        *self.src.node.key()
    }
}

/// A sealed message for the next relay hop: the inner message is encrypted
/// to `dst` and padded, so a relay learns only the next hop.
#[derive(Clone, PartialEq, Eq, Debug, Serialize_tuple, Deserialize_tuple)]
pub struct RelayMessage {
    pub src: NodeIdentity,
    pub dst: NodeIdentity,
    pub expiry: Option<Timestamp>,
    pub sealed: SealedBytes,
}

/// The encrypted inner part of a relay message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SealedBytes(Bytes);

impl SealedBytes {
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, ValidationError> {
        let bytes = bytes.into();
        if bytes.len() > MAX_RELAY_SEALED_BYTES {
            return Err(ValidationError::TooLong {
                field: "sealed relay message",
                len: bytes.len(),
                max: MAX_RELAY_SEALED_BYTES,
            });
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Serialize for SealedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SealedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(Bytes::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl Canonical for RelayMessage {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.field(&self.src).field(&self.dst);
        writer.option(self.expiry.as_ref(), |w, t| {
            w.u64(t.0);
        });
        writer.bytes(self.sealed.as_bytes());
    }
}

/// What a node message carries.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum NodePayload {
    Engine(EngineMessage),
    Relay(RelayMessage),
}

/// What crosses a connection between two nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize_tuple, Deserialize_tuple)]
pub struct NodeMessage {
    pub src: NodeIdentity,
    pub dst: NodeIdentity,
    pub payload: NodePayload,
    /// The source node's signature over `src`, `dst` and the payload.
    pub sig: Option<Signature>,
}

impl NodeMessage {
    /// An engine message as it travels from node `src` to node `dst`,
    /// without a node signature (the channel vouches for the hop).
    pub fn carrying(src: NodeIdentity, dst: NodeIdentity, message: EngineMessage) -> Self {
        Self { src, dst, payload: NodePayload::Engine(message), sig: None }
    }
}

impl Signed for NodeMessage {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut w = CanonicalWriter::new("netmachine/NodeMessage/1");
        w.field(&self.src).field(&self.dst);
        match &self.payload {
            NodePayload::Engine(message) => {
                w.u8(0).bytes(&message.signing_bytes());
                w.option(message.sig.as_ref(), |w, s| {
                    w.bytes(s.as_bytes());
                });
            }
            NodePayload::Relay(relay) => {
                w.u8(1).field(relay);
            }
        }
        w.finish()
    }

    fn signature(&self) -> Option<&Signature> {
        self.sig.as_ref()
    }

    fn signer(&self) -> ExternalIdentity {
        *self.src.key()
    }
}
