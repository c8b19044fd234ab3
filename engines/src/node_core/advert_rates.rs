//! How fast each peer may send adverts. Every advert costs its receiver a
//! signature check, perhaps a disk write and a spread to every other
//! peer, so each peer has a bucket of adverts that refills at a steady
//! rate. Past it, the peer is slowed: its adverts are dropped unread. A
//! peer that keeps on is disconnected and its trust falls.

use std::collections::HashMap;

use netmachine_domain::{NodeIdentity, Timestamp};

/// The budget of adverts per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertRateConfig {
    /// Adverts a peer may send at once (its bucket when full).
    pub burst: u32,
    /// Adverts per second the bucket refills by.
    pub per_second: u32,
    /// Adverts refused while the bucket is empty before the peer is
    /// disconnected.
    pub refusals_to_disconnect: u32,
    /// What a disconnection takes off the peer's trust (never to a ban).
    pub trust_penalty: u8,
}

impl Default for AdvertRateConfig {
    fn default() -> Self {
        Self { burst: 256, per_second: 16, refusals_to_disconnect: 256, trust_penalty: 32 }
    }
}

/// What to do with one advert from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Within budget: check it.
    Take,
    /// Over budget: drop it unread.
    Refuse,
    /// Over budget for too long: drop it and disconnect the peer.
    Disconnect,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of an advert.
    millis: u64,
    updated: Timestamp,
    refusals: u32,
}

/// How often buckets that have refilled are dropped.
const PRUNE_EVERY_MS: u64 = 5_000;

#[derive(Debug, Default)]
pub(super) struct AdvertRates {
    config: AdvertRateConfig,
    buckets: HashMap<NodeIdentity, Bucket>,
    next_prune: Timestamp,
}

impl AdvertRates {
    pub(super) fn new(config: AdvertRateConfig) -> Self {
        Self { config, buckets: HashMap::new(), next_prune: Timestamp(0) }
    }

    /// Drops, every 5 s, the buckets that have refilled: a full
    /// bucket is what a peer not yet seen gets, so only peers that sent
    /// adverts lately take room.
    pub(super) fn prune(&mut self, now: Timestamp) {
        if now < self.next_prune {
            return;
        }
        self.next_prune = now.saturating_add_millis(PRUNE_EVERY_MS);
        let full = u64::from(self.config.burst.max(1)) * 1000;
        let rate = u64::from(self.config.per_second);
        self.buckets.retain(|_, b| b.millis + now.0.saturating_sub(b.updated.0).saturating_mul(rate) < full);
        if self.buckets.is_empty() {
            self.buckets = HashMap::new();
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Charges one advert to `peer`.
    pub(super) fn charge(&mut self, peer: NodeIdentity, now: Timestamp) -> Charge {
        let full = u64::from(self.config.burst.max(1)) * 1000;
        let bucket = self.buckets.entry(peer).or_insert(Bucket { millis: full, updated: now, refusals: 0 });
        let elapsed = now.0.saturating_sub(bucket.updated.0);
        bucket.millis = (bucket.millis + elapsed.saturating_mul(u64::from(self.config.per_second))).min(full);
        bucket.updated = now;
        if bucket.millis >= 1000 {
            bucket.millis -= 1000;
            if bucket.millis == full - 1000 {
                // A bucket that refilled forgives what came before.
                bucket.refusals = 0;
            }
            return Charge::Take;
        }
        self.refused(peer)
    }

    /// An advert of `peer` refused for being over another of its budgets
    /// (its share of the cache) counts as a refusal too.
    pub(super) fn refused(&mut self, peer: NodeIdentity) -> Charge {
        let Some(bucket) = self.buckets.get_mut(&peer) else { return Charge::Refuse };
        bucket.refusals = bucket.refusals.saturating_add(1);
        if bucket.refusals >= self.config.refusals_to_disconnect {
            bucket.refusals = 0;
            return Charge::Disconnect;
        }
        Charge::Refuse
    }

    /// The peer left the Transport's table.
    pub(super) fn forget(&mut self, peer: &NodeIdentity) {
        self.buckets.remove(peer);
    }

    pub(super) fn config(&self) -> AdvertRateConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);

    fn peer() -> NodeIdentity {
        NodeIdentity::ed25519([3; 32])
    }

    #[test]
    fn a_burst_is_taken_then_the_rate_holds() {
        let config = AdvertRateConfig { burst: 4, per_second: 2, refusals_to_disconnect: 100, trust_penalty: 1 };
        let mut rates = AdvertRates::new(config);
        for _ in 0..4 {
            assert_eq!(rates.charge(peer(), T0), Charge::Take);
        }
        assert_eq!(rates.charge(peer(), T0), Charge::Refuse);
        // Half a second refills one advert.
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(499)), Charge::Refuse);
        // A second refills two.
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(1000)), Charge::Take);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(1000)), Charge::Take);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(1000)), Charge::Refuse);
    }

    /// A take that leaves the bucket short of full forgives nothing: a
    /// peer that sends a little faster than its rate is still cut off.
    #[test]
    fn only_a_full_bucket_forgives() {
        let config = AdvertRateConfig { burst: 2, per_second: 1, refusals_to_disconnect: 3, trust_penalty: 1 };
        let mut rates = AdvertRates::new(config);
        let later = T0.saturating_add_millis(1000);
        let outcomes = [
            rates.charge(peer(), T0),
            rates.charge(peer(), T0),
            rates.charge(peer(), T0),
            rates.charge(peer(), later),
            rates.charge(peer(), later),
            rates.charge(peer(), later),
        ];
        use Charge::*;
        assert_eq!(outcomes, [Take, Take, Refuse, Take, Refuse, Disconnect]);
    }

    #[test]
    fn a_forgotten_peer_starts_with_a_full_bucket() {
        let config = AdvertRateConfig { burst: 1, per_second: 1, refusals_to_disconnect: 10, trust_penalty: 1 };
        let mut rates = AdvertRates::new(config);
        assert_eq!(rates.charge(peer(), T0), Charge::Take);
        assert_eq!(rates.charge(peer(), T0), Charge::Refuse);
        rates.forget(&peer());
        assert_eq!(rates.charge(peer(), T0), Charge::Take);
    }

    #[test]
    fn refilled_buckets_are_dropped() {
        let config = AdvertRateConfig { burst: 2, per_second: 1, refusals_to_disconnect: 3, trust_penalty: 1 };
        let mut rates = AdvertRates::new(config);
        rates.charge(peer(), T0);
        rates.charge(NodeIdentity::ed25519([4; 32]), T0.saturating_add_millis(4_500));
        rates.prune(T0);
        assert_eq!(rates.tracked(), 2, "both still refilling");
        rates.prune(T0.saturating_add_millis(4_999));
        assert_eq!(rates.tracked(), 2, "not yet time to look");
        rates.prune(T0.saturating_add_millis(5_000));
        assert_eq!(rates.tracked(), 1, "the first has refilled; the second, charged later, has not");
        // Exactly full is refilled.
        let mut exact = AdvertRates::new(config);
        exact.charge(peer(), T0);
        exact.prune(T0.saturating_add_millis(1000));
        assert_eq!(exact.tracked(), 0);
    }

    #[test]
    fn a_peer_that_keeps_on_is_disconnected_and_a_pause_forgives() {
        let config = AdvertRateConfig { burst: 2, per_second: 1, refusals_to_disconnect: 3, trust_penalty: 1 };
        let mut rates = AdvertRates::new(config);
        let mut outcomes = Vec::new();
        for _ in 0..5 {
            outcomes.push(rates.charge(peer(), T0));
        }
        assert_eq!(outcomes, [Charge::Take, Charge::Take, Charge::Refuse, Charge::Refuse, Charge::Disconnect]);
        assert_eq!(rates.charge(peer(), T0), Charge::Refuse);
        // A full bucket again: the refusals before are forgiven.
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(10_000)), Charge::Take);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(10_000)), Charge::Take);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(10_000)), Charge::Refuse);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(10_000)), Charge::Refuse);
        assert_eq!(rates.charge(peer(), T0.saturating_add_millis(10_000)), Charge::Disconnect);
    }
}
