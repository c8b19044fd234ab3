//! Ports for driving engines alone, in property tests and in the
//! simulator. The signature scheme here is a keyed hash that anyone holding
//! the public key could forge: it proves that engines check signatures over
//! the right bytes, not that the crypto is sound (the ring adapter's own
//! tests do that).

use std::hash::{DefaultHasher, Hash, Hasher};

use netmachine_domain::{ExternalIdentity, Signature};

use crate::ports::{BadSignature, Signer, Verifier};

fn digest(key: &ExternalIdentity, bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut hasher = DefaultHasher::new();
        i.hash(&mut hasher);
        key.hash(&mut hasher);
        bytes.hash(&mut hasher);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    out
}

/// Signs with the keyed-hash test scheme.
#[derive(Debug, Clone, Copy)]
pub struct TestSigner(pub ExternalIdentity);

impl TestSigner {
    pub fn node(seed: u8) -> Self {
        Self(ExternalIdentity::ed25519([seed; 32]))
    }
}

impl Signer for TestSigner {
    fn identity(&self) -> ExternalIdentity {
        self.0
    }
    fn sign(&self, bytes: &[u8]) -> Signature {
        Signature::Ed25519(Box::new(digest(&self.0, bytes)))
    }
}

/// Verifies the keyed-hash test scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestVerifier;

impl Verifier for TestVerifier {
    fn verify(&self, signer: &ExternalIdentity, bytes: &[u8], sig: &Signature) -> Result<(), BadSignature> {
        match sig {
            Signature::Ed25519(s) if **s == digest(signer, bytes) => Ok(()),
            _ => Err(BadSignature),
        }
    }

    fn hmac_sha256(&self, key: &[u8], bytes: &[u8]) -> [u8; 32] {
        let mut keyed = key.to_vec();
        keyed.extend_from_slice(bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest(&ExternalIdentity::ed25519([0x4d; 32]), &keyed)[..32]);
        out
    }

    fn hmac_sha256_matches(&self, key: &[u8], bytes: &[u8], tag: &[u8; 32]) -> bool {
        self.hmac_sha256(key, bytes) == *tag
    }
}

/// Deterministic randomness for tests.
pub use crate::random::SplitMix as SeededRandom;
