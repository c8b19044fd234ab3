//! The pure types of netmachine: identities, adverts, messages, identity
//! records, their canonical signing bytes and their validity rules.
//!
//! Nothing here does I/O, reads a clock, or calls a crypto library or a wire
//! codec. Types derive `serde` so any codec can carry them; signing is
//! expressed as "these are the bytes to sign" plus a signature value.

pub mod address;
pub mod advert;
pub mod bounded;
pub mod canonical;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod identity;
pub mod limits;
pub mod membership;
pub mod message;
pub mod record;
pub mod rules;
pub mod signed;
pub mod time;
pub mod validity;
pub mod wire;

mod text;

#[cfg(feature = "strategies")]
pub mod samples;
#[cfg(feature = "strategies")]
pub mod strategies;

pub use address::{TransportAddress, TransportProtocol, WeightedAddress};
pub use advert::{
    Advert, AdvertBody, DomainAdvert, DomainAdvertBody, JoinPolicy, NodeAdvert, NodeAdvertBody, TopicAdvert,
    TopicAdvertBody,
};
pub use bounded::{BoundedText, BoundedVec};
pub use error::{ParseError, RuleError, ValidationError};
pub use frame::{Frame, FrameKind};
pub use handshake::{Ack, HandshakeStatus, Hello, HelloReply, VersionRange};
pub use identity::{
    DestinationIdentity, DomainIdentity, Ed25519PublicKey, EngineIdentity, EngineName, ExternalIdentity, NodeIdentity,
    Signature, TopicIdentity,
};
pub use membership::{
    CertificateBody, CertificateError, JoinProof, JoinRefusal, JoinRequest, Leave, MembershipCertificate,
    MembershipRules,
};
pub use message::{
    Body, EngineMessage, MessageId, NodeMessage, NodePayload, Ordering, PathKind, ProtocolId, RelayMessage,
    Reliability, RoutingScope, SealedBytes, TransportPrefs,
};
pub use record::{EngineRecord, IdentityRecord, Measurements, NodeRecord, Permanence, RecordKey, Reputation, Trust};
pub use signed::Signed;
pub use time::Timestamp;
pub use wire::WireReader;
