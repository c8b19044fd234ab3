//! Seeds for the engines' deterministic generator.

use ring::rand::{SecureRandom, SystemRandom};

pub use netmachine_engines::random::SplitMix;

/// A seed from the system's random source (the clock if that fails).
pub fn system_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_ok() {
        u64::from_le_bytes(bytes)
    } else {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    }
}
