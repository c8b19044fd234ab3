//! Ed25519 with ring: the node key (and topic or domain keys), signing and
//! verification.

use std::fmt;

use netmachine_domain::{ExternalIdentity, NodeIdentity, Signature};
use netmachine_engines::ports::{BadSignature, Signer, Verifier};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("could not generate a key: the system random source failed")]
    Generate,
    #[error("the key bytes are not an Ed25519 PKCS#8 key: {0}")]
    Rejected(String),
}

/// An Ed25519 key pair, kept with its PKCS#8 document so it can be saved.
pub struct Ed25519Keys {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    public: ExternalIdentity,
}

impl Ed25519Keys {
    pub fn generate() -> Result<Self, KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(document.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::Rejected(e.to_string()))?;
        let public_bytes: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Rejected("public key is not 32 bytes".into()))?;
        Ok(Self { pair, pkcs8: pkcs8.to_vec(), public: ExternalIdentity::ed25519(public_bytes) })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public(&self) -> ExternalIdentity {
        self.public
    }

    pub fn node_identity(&self) -> NodeIdentity {
        NodeIdentity::new(self.public)
    }
}

impl fmt::Debug for Ed25519Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Keys").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Signer for Ed25519Keys {
    fn identity(&self) -> ExternalIdentity {
        self.public
    }

    fn sign(&self, bytes: &[u8]) -> Signature {
        let sig = self.pair.sign(bytes);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        Signature::Ed25519(Box::new(out))
    }
}

/// Verifies signatures with ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingVerifier;

impl Verifier for RingVerifier {
    fn verify(&self, signer: &ExternalIdentity, bytes: &[u8], sig: &Signature) -> Result<(), BadSignature> {
        match (signer, sig) {
            (ExternalIdentity::Ed25519(key), Signature::Ed25519(sig)) => {
                UnparsedPublicKey::new(&ED25519, key.as_bytes()).verify(bytes, &sig[..]).map_err(|_| BadSignature)
            }
        }
    }

    fn hmac_sha256(&self, key: &[u8], bytes: &[u8]) -> [u8; 32] {
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn hmac_sha256_matches(&self, key: &[u8], bytes: &[u8], tag: &[u8; 32]) -> bool {
        ring::hmac::verify(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), bytes, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_message_does_not() {
        let keys = Ed25519Keys::generate().expect("keygen");
        let sig = keys.sign(b"hello");
        assert!(RingVerifier.verify(&keys.public(), b"hello", &sig).is_ok());
        assert!(RingVerifier.verify(&keys.public(), b"hellp", &sig).is_err());
        let other = Ed25519Keys::generate().expect("keygen");
        assert!(RingVerifier.verify(&other.public(), b"hello", &sig).is_err());
    }

    #[test]
    fn an_hmac_matches_only_its_key_and_bytes() {
        let tag = RingVerifier.hmac_sha256(b"key", b"bytes");
        assert!(RingVerifier.hmac_sha256_matches(b"key", b"bytes", &tag));
        assert!(!RingVerifier.hmac_sha256_matches(b"kez", b"bytes", &tag));
        assert!(!RingVerifier.hmac_sha256_matches(b"key", b"bytez", &tag));
    }

    #[test]
    fn keys_round_trip_through_pkcs8() {
        let keys = Ed25519Keys::generate().expect("keygen");
        let again = Ed25519Keys::from_pkcs8(keys.pkcs8()).expect("reload");
        assert_eq!(keys.public(), again.public());
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(Ed25519Keys::from_pkcs8(b"not a key"), Err(KeyError::Rejected(_))));
    }
}
