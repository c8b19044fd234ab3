//! What the simulated network does to a message: latency from a
//! distribution, jitter, loss (QUIC retransmits, so a loss costs a
//! retransmission timeout rather than the message), and bandwidth.

use netmachine_engines::ports::Randomness;
use serde::{Deserialize, Serialize};

/// One-way latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latency {
    Constant { ms: f64 },
    Uniform { min_ms: f64, max_ms: f64 },
    Normal { mean_ms: f64, sd_ms: f64 },
    LogNormal { median_ms: f64, sigma: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkModel {
    pub latency: Latency,
    /// Added uniformly in [0, jitter_ms).
    #[serde(default)]
    pub jitter_ms: f64,
    /// Probability that one transmission of a message is lost.
    #[serde(default)]
    pub loss: f64,
    /// Bits per second of each direction of a link; none means unlimited.
    #[serde(default)]
    pub bandwidth_bps: Option<f64>,
    /// Time the two nodes spend on each message besides the wire (engine
    /// hops, encoding, acknowledging): about 0.1 ms on this machine's
    /// loopback (see `netmachine-sim calibrate`); negligible across a WAN.
    #[serde(default)]
    pub processing_ms: f64,
    /// Time the two nodes spend opening a secured stream besides the link
    /// crossings (the QUIC and TLS handshakes' cryptography, both
    /// certificates checked): a few tenths of a millisecond on this
    /// machine's loopback (see `netmachine-sim calibrate`); small next to
    /// a WAN's round trips.
    #[serde(default)]
    pub handshake_ms: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            latency: Latency::Constant { ms: 20.0 },
            jitter_ms: 0.0,
            loss: 0.0,
            bandwidth_bps: None,
            processing_ms: 0.0,
            handshake_ms: 0.0,
        }
    }
}

/// A uniform draw in [0, 1).
pub fn unit(random: &mut dyn Randomness) -> f64 {
    (random.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn standard_normal(random: &mut dyn Randomness) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let u1 = 1.0 - unit(random);
    let u2 = unit(random);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl LinkModel {
    /// The latency of one transmission, in microseconds, never below 1.
    pub fn sample_latency_us(&self, random: &mut dyn Randomness) -> u64 {
        let ms = match self.latency {
            Latency::Constant { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => min_ms + (max_ms - min_ms) * unit(random),
            Latency::Normal { mean_ms, sd_ms } => mean_ms + sd_ms * standard_normal(random),
            Latency::LogNormal { median_ms, sigma } => median_ms * (sigma * standard_normal(random)).exp(),
        };
        let jitter = self.jitter_ms * unit(random);
        ((ms + jitter + self.processing_ms).max(0.001) * 1000.0) as u64
    }

    /// The handshakes' own cost, in microseconds.
    pub fn handshake_us(&self) -> u64 {
        (self.handshake_ms.max(0.0) * 1000.0) as u64
    }

    /// The typical one-way latency, for timeouts.
    pub fn base_latency_us(&self) -> u64 {
        let ms = match self.latency {
            Latency::Constant { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => (min_ms + max_ms) / 2.0,
            Latency::Normal { mean_ms, .. } => mean_ms,
            Latency::LogNormal { median_ms, .. } => median_ms,
        };
        ((ms + self.jitter_ms / 2.0).max(0.001) * 1000.0) as u64
    }

    /// How many times a transmission is lost before one gets through
    /// (at most 10: a link that loses more is treated as down).
    pub fn losses(&self, random: &mut dyn Randomness) -> u32 {
        let mut n = 0;
        while n < 10 && self.loss > 0.0 && unit(random) < self.loss {
            n += 1;
        }
        n
    }

    /// Time to put `bytes` on the wire.
    pub fn serialization_us(&self, bytes: usize) -> u64 {
        match self.bandwidth_bps {
            Some(bps) if bps > 0.0 => ((bytes as f64 * 8.0) / bps * 1e6) as u64,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use netmachine_engines::random::SplitMix;

    use super::*;

    #[test]
    fn distributions_stay_in_their_ranges_and_are_reproducible() {
        let model = LinkModel {
            latency: Latency::Uniform { min_ms: 10.0, max_ms: 20.0 },
            jitter_ms: 5.0,
            ..LinkModel::default()
        };
        let mut a = SplitMix::new(1);
        let mut b = SplitMix::new(1);
        for _ in 0..1000 {
            let x = model.sample_latency_us(&mut a);
            assert!((10_000..25_000).contains(&x), "{x}");
            assert_eq!(x, model.sample_latency_us(&mut b));
        }
        let normal = LinkModel { latency: Latency::Normal { mean_ms: 50.0, sd_ms: 5.0 }, ..LinkModel::default() };
        let mut r = SplitMix::new(2);
        let mean: f64 = (0..10_000).map(|_| normal.sample_latency_us(&mut r) as f64).sum::<f64>() / 10_000.0;
        assert!((48_000.0..52_000.0).contains(&mean), "{mean}");
        let lossy = LinkModel { loss: 0.5, ..LinkModel::default() };
        let mut r = SplitMix::new(3);
        let total: u32 = (0..10_000).map(|_| lossy.losses(&mut r)).sum();
        assert!((9_000..11_000).contains(&total), "about one loss per success at 50%: {total}");
        let slow = LinkModel { bandwidth_bps: Some(8_000_000.0), ..LinkModel::default() };
        assert_eq!(slow.serialization_us(1_000_000), 1_000_000);
    }
}
