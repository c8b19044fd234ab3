//! The ports: the only ways an engine reaches the world that are not an
//! input or an effect. Engines are handed `now` on every call and return
//! what to send, persist or announce; what they still need from outside is
//! randomness and the keys: signing and checking signatures. Adapters
//! implement these with ring and the system's entropy, and tests with a
//! seeded generator and a keyed-hash scheme.

use netmachine_domain::{ExternalIdentity, Signature, Signed};
use thiserror::Error;

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

/// Checks signatures of any scheme netmachine knows, and makes and checks
/// the keyed hashes that prove knowledge of a shared key without sending it.
pub trait Verifier: Send + Sync {
    fn verify(&self, signer: &ExternalIdentity, bytes: &[u8], sig: &Signature) -> Result<(), BadSignature>;
    /// HMAC-SHA256 of `bytes` under `key`.
    fn hmac_sha256(&self, key: &[u8], bytes: &[u8]) -> [u8; 32];
    /// Whether `tag` is the HMAC-SHA256 of `bytes` under `key`, compared in
    /// constant time.
    fn hmac_sha256_matches(&self, key: &[u8], bytes: &[u8], tag: &[u8; 32]) -> bool;
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
