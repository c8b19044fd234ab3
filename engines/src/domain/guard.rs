//! What bounds an approver's work for joiners: at most a few joins per node
//! per window, and every (node, nonce) seen within twice the clock skew is
//! refused as a replay. Both tables have a fixed capacity; when one is
//! full of live entries, new joiners are refused until entries age out.

use std::collections::HashMap;

use netmachine_domain::limits::MAX_CLOCK_SKEW_MS;
use netmachine_domain::{JoinRefusal, NodeIdentity, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Joins one node may send in a window.
    pub joins_per_window: u32,
    pub window_ms: u64,
    /// Nodes whose joins are counted at once.
    pub max_joiners: usize,
    /// Nonces remembered at once.
    pub max_nonces: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { joins_per_window: 3, window_ms: 10_000, max_joiners: 4096, max_nonces: 65_536 }
    }
}

#[derive(Debug)]
pub struct JoinGuard {
    config: GuardConfig,
    /// Each joiner's window: when it began, and joins in it.
    windows: HashMap<NodeIdentity, (Timestamp, u32)>,
    /// Nonces seen, and when each may be forgotten.
    nonces: HashMap<(NodeIdentity, u64), Timestamp>,
}

impl JoinGuard {
    pub fn new(config: GuardConfig) -> Self {
        Self { config, windows: HashMap::new(), nonces: HashMap::new() }
    }

    /// Counts one join from `node`, or refuses it past the node's share.
    pub fn take_join(&mut self, node: NodeIdentity, now: Timestamp) -> Result<(), JoinRefusal> {
        let window = self.config.window_ms;
        if !self.windows.contains_key(&node) && self.windows.len() >= self.config.max_joiners {
            self.windows.retain(|_, (began, _)| began.saturating_add_millis(window) > now);
            if self.windows.len() >= self.config.max_joiners {
                return Err(JoinRefusal::Busy);
            }
        }
        let (began, count) = self.windows.entry(node).or_insert((now, 0));
        if began.saturating_add_millis(window) <= now {
            *began = now;
            *count = 0;
        }
        if *count >= self.config.joins_per_window {
            return Err(JoinRefusal::RateLimited);
        }
        *count += 1;
        Ok(())
    }

    /// Whether `created` is within the clock skew of `now`.
    pub fn fresh(created: Timestamp, now: Timestamp) -> bool {
        created.0.abs_diff(now.0) <= MAX_CLOCK_SKEW_MS
    }

    pub fn seen(&self, node: &NodeIdentity, nonce: u64) -> bool {
        self.nonces.contains_key(&(*node, nonce))
    }

    /// Remembers a nonce until no request carrying it could be fresh.
    pub fn remember(&mut self, node: NodeIdentity, nonce: u64, now: Timestamp) -> Result<(), JoinRefusal> {
        if self.nonces.len() >= self.config.max_nonces {
            self.nonces.retain(|_, until| *until > now);
            if self.nonces.len() >= self.config.max_nonces {
                return Err(JoinRefusal::Busy);
            }
        }
        self.nonces.insert((node, nonce), now.saturating_add_millis(2 * MAX_CLOCK_SKEW_MS));
        Ok(())
    }

    pub fn nonces_held(&self) -> usize {
        self.nonces.len()
    }

    pub fn joiners_held(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netmachine_domain::ExternalIdentity;

    fn node(seed: u8) -> NodeIdentity {
        NodeIdentity::new(ExternalIdentity::ed25519([seed; 32]))
    }

    #[test]
    fn a_node_gets_its_share_of_joins_per_window() {
        let mut guard = JoinGuard::new(GuardConfig { joins_per_window: 2, ..GuardConfig::default() });
        let t = Timestamp(1_000);
        assert_eq!(guard.take_join(node(1), t), Ok(()));
        assert_eq!(guard.take_join(node(1), t), Ok(()));
        assert_eq!(guard.take_join(node(1), t), Err(JoinRefusal::RateLimited));
        assert_eq!(guard.take_join(node(2), t), Ok(()), "another node has its own share");
        assert_eq!(guard.take_join(node(1), Timestamp(11_000)), Ok(()), "a new window");
    }

    #[test]
    fn full_tables_refuse_newcomers_until_entries_age_out() {
        let config = GuardConfig { max_joiners: 2, max_nonces: 2, ..GuardConfig::default() };
        let mut guard = JoinGuard::new(config);
        let t = Timestamp(1_000);
        guard.take_join(node(1), t).expect("room");
        guard.take_join(node(2), t).expect("room");
        assert_eq!(guard.take_join(node(3), t), Err(JoinRefusal::Busy));
        assert_eq!(guard.take_join(node(3), Timestamp(11_000)), Ok(()), "old windows pruned");
        assert!(guard.joiners_held() <= 2);
        guard.remember(node(1), 1, t).expect("room");
        guard.remember(node(1), 2, t).expect("room");
        assert!(guard.seen(&node(1), 2));
        assert_eq!(guard.remember(node(1), 3, t), Err(JoinRefusal::Busy));
        let later = t.saturating_add_millis(2 * MAX_CLOCK_SKEW_MS);
        assert_eq!(guard.remember(node(1), 3, later), Ok(()));
        assert!(!guard.seen(&node(1), 1), "forgotten once no copy could be fresh");
        assert!(JoinGuard::fresh(Timestamp(1_000), Timestamp(1_000 + MAX_CLOCK_SKEW_MS)));
        assert!(!JoinGuard::fresh(Timestamp(1_000), Timestamp(1_001 + MAX_CLOCK_SKEW_MS)));
    }
}
