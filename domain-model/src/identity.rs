//! Identities: public keys of the schemes netmachine knows, and the node,
//! engine, topic and domain identities built on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_tuple::{Deserialize_tuple, Serialize_tuple};

use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::{ParseError, ValidationError};
use crate::text;

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ed25519PublicKey(#[serde(with = "serde_bytes")] [u8; 32]);

impl Ed25519PublicKey {
    pub const LEN: usize = 32;

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "ed25519:{:02x}{:02x}{:02x}{:02x}..", b[0], b[1], b[2], b[3])
    }
}

/// A public key of any scheme netmachine knows. It is an enum so that other
/// schemes (secp256k1, BLS, threshold keys) can be added without changing the
/// shape of the wire format: on the wire it is one byte string, the scheme
/// tag followed by the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExternalIdentity {
    Ed25519(Ed25519PublicKey),
}

impl ExternalIdentity {
    const ED25519_TAG: u8 = 1;

    pub const fn ed25519(bytes: [u8; 32]) -> Self {
        Self::Ed25519(Ed25519PublicKey::from_bytes(bytes))
    }

    /// The scheme tag followed by the key bytes: the identity's binary form.
    pub fn to_tagged_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => {
                let mut out = Vec::with_capacity(33);
                out.push(Self::ED25519_TAG);
                out.extend_from_slice(key.as_bytes());
                out
            }
        }
    }

    pub fn from_tagged_bytes(what: &'static str, bytes: &[u8]) -> Result<Self, ParseError> {
        match bytes.split_first() {
            Some((&Self::ED25519_TAG, key)) => {
                let key: [u8; 32] = key.try_into().map_err(|_| ParseError::Malformed {
                    what,
                    reason: format!("an Ed25519 key is 32 bytes, this one is {}", key.len()),
                })?;
                Ok(Self::ed25519(key))
            }
            Some((tag, _)) => Err(ParseError::Malformed { what, reason: format!("unknown key scheme {tag}") }),
            None => Err(ParseError::Malformed { what, reason: "empty".into() }),
        }
    }

    /// The Ed25519 key, the only scheme so far.
    pub fn as_ed25519(&self) -> &Ed25519PublicKey {
        match self {
            Self::Ed25519(key) => key,
        }
    }
}

impl Serialize for ExternalIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Ed25519(key) => {
                let mut tagged = [0u8; 33];
                tagged[0] = Self::ED25519_TAG;
                tagged[1..].copy_from_slice(key.as_bytes());
                serializer.serialize_bytes(&tagged)
            }
        }
    }
}

/// Reads a short byte string (a tagged key or signature) into a buffer on
/// the stack: decoding a message allocates nothing for its keys.
struct ShortBytes {
    buf: [u8; 65],
    len: usize,
}

impl ShortBytes {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<'de> Deserialize<'de> for ShortBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ShortBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string of at most 65 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ShortBytes, E> {
                if v.len() > 65 {
                    return Err(E::invalid_length(v.len(), &self));
                }
                let mut buf = [0u8; 65];
                buf[..v.len()].copy_from_slice(v);
                Ok(ShortBytes { buf, len: v.len() })
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

impl<'de> Deserialize<'de> for ExternalIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = ShortBytes::deserialize(deserializer)?;
        Self::from_tagged_bytes("key", bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

impl Canonical for ExternalIdentity {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.bytes(&self.to_tagged_bytes());
    }
}

impl fmt::Debug for ExternalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ed25519(key) => key.fmt(f),
        }
    }
}

impl fmt::Display for ExternalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::encode("key", &self.to_tagged_bytes()))
    }
}

impl FromStr for ExternalIdentity {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = text::decode("key", "key", s)?;
        Self::from_tagged_bytes("key", &bytes)
    }
}

/// Declares an identity that is a public key with its own text prefix.
macro_rules! key_identity {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(ExternalIdentity);

        impl $name {
            pub const fn new(key: ExternalIdentity) -> Self {
                Self(key)
            }

            pub const fn ed25519(bytes: [u8; 32]) -> Self {
                Self(ExternalIdentity::ed25519(bytes))
            }

            pub fn key(&self) -> &ExternalIdentity {
                &self.0
            }
        }

        impl From<$name> for ExternalIdentity {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl Canonical for $name {
            fn write_canonical(&self, writer: &mut CanonicalWriter) {
                self.0.write_canonical(writer);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&text::encode($prefix, &self.0.to_tagged_bytes()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let full = self.to_string();
                let short: String = full.chars().take($prefix.len() + 10).collect();
                write!(f, "{short}..")
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = text::decode($prefix, $what, s)?;
                ExternalIdentity::from_tagged_bytes($what, &bytes).map(Self)
            }
        }
    };
}

key_identity!(
    /// A node: the public key the node signs with.
    NodeIdentity,
    "node",
    "node identity"
);
key_identity!(
    /// A pub/sub topic: the public key of its creator.
    TopicIdentity,
    "topic",
    "topic identity"
);
key_identity!(
    /// A sovereign domain: the public key of its creator.
    DomainIdentity,
    "domain",
    "domain identity"
);

/// The name of an engine on a node: 1 to 64 characters of `a-z`, `0-9`,
/// `-`, `_` and `.`. Well-known names (`router`, `transport`, ...) make core
/// engines addressable on every node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineName(std::sync::Arc<str>);

impl Serialize for EngineName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl EngineName {
    pub const MAX_LEN: usize = 64;

    pub fn new(name: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "engine name";
        if name.is_empty() {
            return Err(ValidationError::Empty { field: FIELD });
        }
        if name.len() > Self::MAX_LEN {
            return Err(ValidationError::TooLong { field: FIELD, len: name.len(), max: Self::MAX_LEN });
        }
        if let Some(bad) =
            name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ValidationError::BadCharacter { field: FIELD, found: bad });
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EngineName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for EngineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for EngineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EngineName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Canonical for EngineName {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.str(&self.0);
    }
}

/// An engine instance: the node it runs on and its name there. Text form:
/// `name@node1...`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize_tuple, Deserialize_tuple)]
pub struct EngineIdentity {
    pub node: NodeIdentity,
    pub name: EngineName,
}

impl EngineIdentity {
    pub fn new(node: NodeIdentity, name: EngineName) -> Self {
        Self { node, name }
    }
}

impl Canonical for EngineIdentity {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.field(&self.node).field(&self.name);
    }
}

impl fmt::Display for EngineIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.node)
    }
}

impl fmt::Debug for EngineIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:?}", self.name, self.node)
    }
}

impl FromStr for EngineIdentity {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: &str| ParseError::Malformed { what: "engine identity", reason: reason.into() };
        let (name, node) = s.trim().split_once('@').ok_or_else(|| malformed("expected <engine-name>@node1..."))?;
        // One text per identity: no blanks after the `@` either.
        if node.trim_start() != node {
            return Err(malformed("no blanks may follow the @"));
        }
        Ok(Self { node: node.parse()?, name: EngineName::new(name)? })
    }
}

/// Where a message goes.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum DestinationIdentity {
    /// One engine, local or remote.
    Engine(EngineIdentity),
    /// A node as a whole (its Router).
    Node(NodeIdentity),
    /// Every subscriber of a topic.
    Topic(TopicIdentity),
    /// Through the given relay node.
    Relay(NodeIdentity),
    /// Any member of a domain (anycast).
    Domain(DomainIdentity),
}

impl Canonical for DestinationIdentity {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        match self {
            Self::Engine(engine) => writer.u8(0).field(engine),
            Self::Node(node) => writer.u8(1).field(node),
            Self::Topic(topic) => writer.u8(2).field(topic),
            Self::Relay(node) => writer.u8(3).field(node),
            Self::Domain(domain) => writer.u8(4).field(domain),
        };
    }
}

impl fmt::Display for DestinationIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Engine(engine) => write!(f, "engine {engine}"),
            Self::Node(node) => write!(f, "node {node}"),
            Self::Topic(topic) => write!(f, "topic {topic}"),
            Self::Relay(node) => write!(f, "relay {node}"),
            Self::Domain(domain) => write!(f, "domain {domain}"),
        }
    }
}

/// A signature, tagged with its scheme like the keys; on the wire one byte
/// string, the scheme tag followed by the signature.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Signature {
    /// Boxed: messages without a signature (the common case) stay small,
    /// and they are moved through several queues on their way.
    Ed25519(Box<[u8; 64]>),
}

impl Signature {
    /// The scheme tag followed by the signature: its binary form.
    pub fn to_tagged_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(sig) => {
                let mut out = Vec::with_capacity(65);
                out.push(ExternalIdentity::ED25519_TAG);
                out.extend_from_slice(&sig[..]);
                out
            }
        }
    }

    /// Reads [`Self::to_tagged_bytes`] back; `None` for another length or
    /// an unknown scheme.
    pub fn from_tagged_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&ExternalIdentity::ED25519_TAG, sig)) => Some(Self::Ed25519(Box::new(sig.try_into().ok()?))),
            _ => None,
        }
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Ed25519(sig) => {
                let mut tagged = [0u8; 65];
                tagged[0] = ExternalIdentity::ED25519_TAG;
                tagged[1..].copy_from_slice(&sig[..]);
                serializer.serialize_bytes(&tagged)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = ShortBytes::deserialize(deserializer)?;
        match bytes.as_slice().split_first() {
            Some((&ExternalIdentity::ED25519_TAG, sig)) => {
                let sig: [u8; 64] = sig.try_into().map_err(|_| {
                    serde::de::Error::custom(format!("an Ed25519 signature is 64 bytes, not {}", sig.len()))
                })?;
                Ok(Self::Ed25519(Box::new(sig)))
            }
            Some((tag, _)) => Err(serde::de::Error::custom(format!("unknown signature scheme {tag}"))),
            None => Err(serde::de::Error::custom("empty signature")),
        }
    }
}

impl Signature {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Ed25519(bytes) => &bytes[..],
        }
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.as_bytes();
        write!(f, "sig:{:02x}{:02x}{:02x}{:02x}..", b[0], b[1], b[2], b[3])
    }
}
