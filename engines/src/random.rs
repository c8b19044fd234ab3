//! A deterministic generator behind the randomness port: seeded from the
//! system in a node, from a chosen seed in tests and the simulator.

use crate::ports::Randomness;

/// splitmix64: not for secrets, only for jitter and sampling.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl Randomness for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference splitmix64 sequence: simulations and their recorded
    /// seeds replay only while the generator gives exactly these values.
    #[test]
    fn it_gives_the_reference_splitmix64_sequence() {
        let mut zero = SplitMix::new(0);
        assert_eq!(
            [zero.next_u64(), zero.next_u64(), zero.next_u64()],
            [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F]
        );
        let mut other = SplitMix::new(1_234_567);
        assert_eq!(
            [other.next_u64(), other.next_u64(), other.next_u64()],
            [0x599E_D017_FB08_FC85, 0x2C73_F084_5854_0FA5, 0x883E_BCE5_A3F2_7C77]
        );
    }
}
