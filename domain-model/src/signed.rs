//! What every signed value offers: the bytes its signature covers, the
//! signature, and the key that must have made it. Checking the signature is
//! the job of a verifier port; the domain model only says what to check.

use crate::identity::{ExternalIdentity, Signature};

pub trait Signed {
    /// The canonical bytes the signature covers: every field but the
    /// signature itself, prefixed with a tag naming the type.
    fn signing_bytes(&self) -> Vec<u8>;
    /// The signature, when the value carries one.
    fn signature(&self) -> Option<&Signature>;
    /// The key that must have made the signature.
    fn signer(&self) -> ExternalIdentity;
}
