//! In-memory ports for driving engines alone, in property tests and in the
//! simulator. The signature scheme here is a keyed hash that anyone holding
//! the public key could forge: it proves that engines check signatures over
//! the right bytes, not that the crypto is sound (the ring adapter's own
//! tests do that).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use netmachine_domain::{ExternalIdentity, IdentityRecord, NodeIdentity, NodeMessage, RecordKey, Signature, Timestamp};

use crate::ports::{BadSignature, Clock, OutboundError, OutboundTransport, RecordStore, Signer, StoreError, Verifier};

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
}

/// A clock that says whatever it was last set to.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    pub fn at(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Keeps every message handed to it, in order.
#[derive(Debug, Default)]
pub struct RecordingOutbound {
    pub sent: Mutex<Vec<(NodeIdentity, NodeMessage)>>,
    pub refuse: AtomicBool,
}

impl RecordingOutbound {
    pub fn take(&self) -> Vec<(NodeIdentity, NodeMessage)> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl OutboundTransport for RecordingOutbound {
    fn send(&self, to: NodeIdentity, message: NodeMessage) -> Result<(), OutboundError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(OutboundError::QueueFull { peer: to });
        }
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).push((to, message));
        Ok(())
    }
}

/// A record store in memory that can be told to fail.
#[derive(Debug, Default, Clone)]
pub struct MemoryRecordStore {
    pub records: BTreeMap<RecordKey, IdentityRecord>,
    pub fail_writes: bool,
}

impl RecordStore for MemoryRecordStore {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }
    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Io("disk full (simulated)".into()));
        }
        self.records.insert(record.key(), record.clone());
        Ok(())
    }
    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Io("disk full (simulated)".into()));
        }
        self.records.remove(key);
        Ok(())
    }
}

/// Deterministic randomness for tests.
pub use crate::random::SplitMix as SeededRandom;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_clock_says_what_it_was_set_to() {
        let clock = FixedClock::at(5);
        assert_eq!(clock.now(), Timestamp(5));
        clock.set(9);
        assert_eq!(clock.now(), Timestamp(9));
    }

    #[test]
    fn the_memory_store_removes_and_can_fail() {
        let record = IdentityRecord::Node(netmachine_domain::NodeRecord::new(NodeIdentity::ed25519([1; 32])));
        let mut store = MemoryRecordStore::default();
        store.put(&record).expect("put");
        assert_eq!(store.load_all().expect("load"), vec![record.clone()]);
        store.remove(&record.key()).expect("remove");
        assert!(store.load_all().expect("load").is_empty());
        store.fail_writes = true;
        assert!(store.put(&record).is_err());
        assert!(store.remove(&record.key()).is_err());
    }
}
