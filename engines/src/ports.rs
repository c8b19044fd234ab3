//! The ports: the only ways an engine reaches the world. Adapters implement
//! them for real (ring, ciborium, sockets, redb, the system clock) and for
//! tests (manual clock, seeded randomness, in-memory transport and store).

use netmachine_domain::{
    ExternalIdentity, Frame, IdentityRecord, NodeIdentity, NodeMessage, RecordKey, Signature, Signed, Timestamp,
};
use thiserror::Error;

/// The present moment.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// A source of randomness (seeded in tests and the simulator).
pub trait Randomness: Send {
    fn next_u64(&mut self) -> u64;
}

/// Signs with one key: the node's, a topic's or a domain's.
pub trait Signer: Send + Sync {
    /// The public key whose signatures this signer makes.
    fn identity(&self) -> ExternalIdentity;
    fn sign(&self, bytes: &[u8]) -> Signature;
}

/// The signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the signature does not verify with the claimed key")]
pub struct BadSignature;

/// Checks signatures of any scheme netmachine knows.
pub trait Verifier: Send + Sync {
    fn verify(&self, signer: &ExternalIdentity, bytes: &[u8], sig: &Signature) -> Result<(), BadSignature>;
}

/// Why a signed value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("the value carries no signature")]
    Missing,
    #[error(transparent)]
    Bad(#[from] BadSignature),
}

/// Verifies a signed value's signature over its canonical bytes.
pub fn verify_signed<T: Signed + ?Sized>(verifier: &dyn Verifier, value: &T) -> Result<(), SignatureError> {
    let sig = value.signature().ok_or(SignatureError::Missing)?;
    verifier.verify(&value.signer(), &value.signing_bytes(), sig)?;
    Ok(())
}

/// Verifies the signature when one is present; absence is fine.
pub fn verify_if_signed<T: Signed + ?Sized>(verifier: &dyn Verifier, value: &T) -> Result<(), BadSignature> {
    match value.signature() {
        Some(sig) => verifier.verify(&value.signer(), &value.signing_bytes(), sig),
        None => Ok(()),
    }
}

/// A frame that could not be encoded or decoded. Every decode failure is one
/// of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame is truncated: {len} bytes, a header needs {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("frame format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("frame kind {0} is unknown")]
    UnknownKind(u8),
    #[error("frame header says kind {header:?} but the body is {body:?}")]
    KindMismatch { header: u8, body: u8 },
    #[error("frame body is malformed: {0}")]
    Malformed(String),
    #[error("frame could not be encoded: {0}")]
    Encode(String),
}

/// Turns frames into bytes and back.
pub trait Codec: Send + Sync {
    fn encode(&self, frame: &Frame) -> Result<Vec<u8>, CodecError>;
    fn decode(&self, bytes: &[u8]) -> Result<Frame, CodecError>;
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

/// The outbound side of the transport: hands a message to the connection
/// (or queue) for a peer. It never blocks.
pub trait OutboundTransport: Send + Sync {
    fn send(&self, to: NodeIdentity, message: NodeMessage) -> Result<(), OutboundError>;
}

/// A failure of the persistent record store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("record store I/O failed: {0}")]
    Io(String),
    #[error("record store holds a corrupt record for {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Where the identity store keeps its records across restarts. Every call
/// is durable when it returns `Ok`.
pub trait RecordStore: Send {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError>;
    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError>;
    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError>;
}
