//! Adverts: records signed by the identity they describe, replaced only by a
//! valid advert with a higher version.

use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::address::WeightedAddress;
use crate::bounded::{BoundedText, BoundedVec};
use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::ValidationError;
use crate::identity::{DomainIdentity, ExternalIdentity, NodeIdentity, Signature, TopicIdentity};
use crate::limits::*;
use crate::rules::MembershipRules;
use crate::signed::Signed;
use crate::time::Timestamp;

/// The signed part of an advert.
pub trait AdvertBody: Canonical {
    /// Names the type inside the signing bytes.
    const SIGNING_TAG: &'static str;
    /// The identity the advert describes; it must have signed it.
    fn subject(&self) -> ExternalIdentity;
    fn version(&self) -> u64;
    fn created(&self) -> Timestamp;
}

/// An advert body and the signature of its subject over the body's
/// canonical bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Advert<B> {
    pub body: B,
    pub sig: Signature,
}

impl<B: AdvertBody> Advert<B> {
    /// The bytes a signer signs to make an advert of `body`.
    pub fn signing_bytes_of(body: &B) -> Vec<u8> {
        let mut w = CanonicalWriter::new(B::SIGNING_TAG);
        body.write_canonical(&mut w);
        w.finish()
    }

    /// Joins a body with the signature made over [`Self::signing_bytes_of`].
    /// Whether the signature is right is a verifier's question.
    pub fn from_parts(body: B, sig: Signature) -> Self {
        Self { body, sig }
    }
}

impl<B> Deref for Advert<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.body
    }
}

impl<B: AdvertBody> Signed for Advert<B> {
    fn signing_bytes(&self) -> Vec<u8> {
        Self::signing_bytes_of(&self.body)
    }

    fn signature(&self) -> Option<&Signature> {
        Some(&self.sig)
    }

    fn signer(&self) -> ExternalIdentity {
        self.body.subject()
    }
}

/// Where a node can be reached, and what it calls itself.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeAdvertBody {
    pub id: NodeIdentity,
    pub addrs: BoundedVec<WeightedAddress, MAX_ADVERT_ADDRESSES>,
    pub name: Option<BoundedText<MAX_NODE_NAME_BYTES>>,
    pub version: u64,
    pub created: Timestamp,
}

impl NodeAdvertBody {
    pub fn new(
        id: NodeIdentity,
        addrs: Vec<WeightedAddress>,
        name: Option<&str>,
        version: u64,
        created: Timestamp,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            id,
            addrs: BoundedVec::new("advert addresses", addrs)?,
            name: name.map(|n| BoundedText::new("node name", n)).transpose()?,
            version,
            created,
        })
    }
}

impl Canonical for NodeAdvertBody {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        w.field(&self.id).field(&self.addrs);
        w.option(self.name.as_ref(), |w, n| {
            w.field(n);
        });
        w.u64(self.version).u64(self.created.0);
    }
}

impl AdvertBody for NodeAdvertBody {
    const SIGNING_TAG: &'static str = "netmachine/NodeAdvert/1";
    fn subject(&self) -> ExternalIdentity {
        *self.id.key()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn created(&self) -> Timestamp {
        self.created
    }
}

pub type NodeAdvert = Advert<NodeAdvertBody>;

/// A tag on a topic, for discovery.
pub type TopicTag = BoundedText<MAX_TAG_BYTES>;

/// Who may publish on a topic and through which relays to subscribe.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TopicAdvertBody {
    pub topic: TopicIdentity,
    /// The nodes allowed to publish. Never empty.
    pub publishers: BoundedVec<NodeIdentity, MAX_TOPIC_PUBLISHERS>,
    pub relays: BoundedVec<NodeIdentity, MAX_TOPIC_RELAYS>,
    pub tags: BoundedVec<TopicTag, MAX_TOPIC_TAGS>,
    pub version: u64,
    pub created: Timestamp,
}

impl TopicAdvertBody {
    pub fn new(
        topic: TopicIdentity,
        publishers: Vec<NodeIdentity>,
        relays: Vec<NodeIdentity>,
        tags: Vec<&str>,
        version: u64,
        created: Timestamp,
    ) -> Result<Self, ValidationError> {
        if publishers.is_empty() {
            return Err(ValidationError::Empty { field: "topic publishers" });
        }
        let tags = tags.into_iter().map(|t| TopicTag::new("topic tag", t)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            topic,
            publishers: BoundedVec::new("topic publishers", publishers)?,
            relays: BoundedVec::new("topic relays", relays)?,
            tags: BoundedVec::new("topic tags", tags)?,
            version,
            created,
        })
    }

    pub fn allows_publisher(&self, node: &NodeIdentity) -> bool {
        self.publishers.contains(node)
    }
}

impl Canonical for TopicAdvertBody {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        w.field(&self.topic).field(&self.publishers).field(&self.relays).field(&self.tags);
        w.u64(self.version).u64(self.created.0);
    }
}

impl AdvertBody for TopicAdvertBody {
    const SIGNING_TAG: &'static str = "netmachine/TopicAdvert/1";
    fn subject(&self) -> ExternalIdentity {
        *self.topic.key()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn created(&self) -> Timestamp {
        self.created
    }
}

pub type TopicAdvert = Advert<TopicAdvertBody>;

/// How a node may join a domain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum JoinPolicy {
    Open,
    /// Joiners prove knowledge of a pre-shared key the approvers hold.
    /// `key_hash` names the key; it is not derived from it (a hash of the
    /// key in a public advert would let anyone guess a weak key offline).
    PreSharedKey {
        #[serde(with = "serde_bytes")]
        key_hash: [u8; 32],
    },
    AllowList(BoundedVec<NodeIdentity, MAX_DOMAIN_ALLOW_LIST>),
    OwnerApproves,
}

impl Canonical for JoinPolicy {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        match self {
            Self::Open => w.u8(0),
            Self::PreSharedKey { key_hash } => w.u8(1).bytes(key_hash),
            Self::AllowList(nodes) => w.u8(2).field(nodes),
            Self::OwnerApproves => w.u8(3),
        };
    }
}

/// A domain's public face: members that answer outsiders, and how to join.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DomainAdvertBody {
    pub id: DomainIdentity,
    pub nodes: BoundedVec<NodeIdentity, MAX_DOMAIN_NODES>,
    pub join: JoinPolicy,
    /// Approvers, certificate lifetime, revocations.
    #[serde(default)]
    pub rules: MembershipRules,
    pub version: u64,
    pub created: Timestamp,
}

impl DomainAdvertBody {
    pub fn new(
        id: DomainIdentity,
        nodes: Vec<NodeIdentity>,
        join: JoinPolicy,
        version: u64,
        created: Timestamp,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            id,
            nodes: BoundedVec::new("domain contact nodes", nodes)?,
            join,
            rules: MembershipRules::default(),
            version,
            created,
        })
    }

    /// The same advert with `rules`.
    pub fn with_rules(mut self, rules: MembershipRules) -> Self {
        self.rules = rules;
        self
    }

    /// Whether the domain keeps a full mesh: its rules ask for one, or
    /// its allow-list names every member there can be and they are at
    /// most `full_mesh_max`.
    pub fn full_mesh(&self, full_mesh_max: usize) -> bool {
        self.rules.full_mesh || matches!(&self.join, JoinPolicy::AllowList(nodes) if nodes.len() <= full_mesh_max)
    }
}

impl Canonical for DomainAdvertBody {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        w.field(&self.id).field(&self.nodes).field(&self.join).field(&self.rules);
        w.u64(self.version).u64(self.created.0);
    }
}

impl AdvertBody for DomainAdvertBody {
    const SIGNING_TAG: &'static str = "netmachine/DomainAdvert/2";
    fn subject(&self) -> ExternalIdentity {
        *self.id.key()
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn created(&self) -> Timestamp {
        self.created
    }
}

pub type DomainAdvert = Advert<DomainAdvertBody>;

impl Canonical for crate::identity::Signature {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        w.bytes(self.as_bytes());
    }
}
