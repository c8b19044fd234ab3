//! A budget for log lines that peers can cause. Each peer may cause a few
//! lines of each kind per window, and the node a few dozen in all; the
//! rest are counted and summarised once the window ends ("peer X: 12,345
//! inbound messages dropped in the last 10 s"). So no peer, and no crowd of
//! peers, can make the node write more than a bounded number of lines per
//! minute at the default level, and the summary still says what happened.

use std::collections::HashMap;

use netmachine_domain::{NodeIdentity, Timestamp};

/// What a budgeted log line is about, as its summary names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogKind {
    Connected,
    Disconnected,
    ConnectFailed,
    ConnectionRefused,
    ConnectionViolation,
    MessageDropped,
    SubscriptionRefused,
    AdvertNotTaken,
    MessageDroppedMailboxFull,
}

impl LogKind {
    /// The plural the summary counts.
    pub fn what(self) -> &'static str {
        match self {
            Self::Connected => "connections opened",
            Self::Disconnected => "connections lost",
            Self::ConnectFailed => "failed connection attempts",
            Self::ConnectionRefused => "inbound connections refused",
            Self::ConnectionViolation => "connections closed for breaking the protocol",
            Self::MessageDropped => "inbound messages dropped",
            Self::SubscriptionRefused => "subscription requests refused",
            Self::AdvertNotTaken => "adverts the router could not take",
            Self::MessageDroppedMailboxFull => "messages dropped for a full mailbox",
        }
    }
}

/// The budget's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudgetConfig {
    pub window_ms: u64,
    /// Lines of one kind one peer may cause per window.
    pub per_peer: u32,
    /// Lines all peers together may cause per window.
    pub total: u32,
    /// Summary lines per window; beyond them one line sums up the rest.
    pub summaries: usize,
    /// Peers and kinds counted at once; beyond them counts are pooled.
    pub max_keys: usize,
}

impl Default for LogBudgetConfig {
    fn default() -> Self {
        Self { window_ms: 10_000, per_peer: 5, total: 60, summaries: 20, max_keys: 4096 }
    }
}

type Key = (LogKind, Option<NodeIdentity>);

#[derive(Debug)]
pub struct LogBudget {
    config: LogBudgetConfig,
    window_start: Option<Timestamp>,
    lines: u32,
    /// Lines written and held back this window, per peer and kind.
    keys: HashMap<Key, (u32, u64)>,
    /// Lines held back beyond `max_keys`.
    pooled: u64,
    /// Lines held back since the start.
    held_back: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new(LogBudgetConfig::default())
    }
}

impl LogBudget {
    pub fn new(config: LogBudgetConfig) -> Self {
        Self { config, window_start: None, lines: 0, keys: HashMap::new(), pooled: 0, held_back: 0 }
    }

    /// Whether a line of `kind` that `peer` caused may be written now;
    /// if not, it is counted for the window's summary.
    pub fn allow(&mut self, kind: LogKind, peer: Option<NodeIdentity>, now: Timestamp) -> bool {
        self.roll(now);
        let room = self.keys.len() < self.config.max_keys;
        let Some(entry) = (match self.keys.get_mut(&(kind, peer)) {
            Some(entry) => Some(entry),
            None if room => Some(self.keys.entry((kind, peer)).or_default()),
            None => None,
        }) else {
            self.pooled += 1;
            self.held_back += 1;
            return false;
        };
        if entry.0 < self.config.per_peer && self.lines < self.config.total {
            entry.0 += 1;
            self.lines += 1;
            true
        } else {
            entry.1 += 1;
            self.held_back += 1;
            false
        }
    }

    /// Lines held back since the start (each is in some summary).
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// Ends the window if it is over, writing its summaries.
    pub fn roll(&mut self, now: Timestamp) {
        let start = *self.window_start.get_or_insert(now);
        if now.0 < start.0.saturating_add(self.config.window_ms) {
            return;
        }
        for line in self.summaries() {
            tracing::warn!("{line}");
        }
        self.window_start = Some(now);
        self.lines = 0;
        // A busy window's table is not kept for a quiet one.
        if self.keys.capacity() > 64 {
            self.keys = HashMap::new();
        } else {
            self.keys.clear();
        }
        self.pooled = 0;
    }

    /// The summary lines of the window so far: the largest counts each on
    /// a line, the rest summed up on one.
    pub fn summaries(&self) -> Vec<String> {
        let seconds = self.config.window_ms / 1000;
        let mut held: Vec<(u64, Key)> =
            self.keys.iter().filter(|(_, (_, held))| *held > 0).map(|(key, (_, held))| (*held, *key)).collect();
        held.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut lines: Vec<String> = held
            .iter()
            .take(self.config.summaries)
            .map(|(count, (kind, peer))| match peer {
                Some(peer) => format!("peer {peer}: {count} {} in the last {seconds} s", kind.what()),
                None => format!("{count} {} in the last {seconds} s", kind.what()),
            })
            .collect();
        let rest: u64 = held.iter().skip(self.config.summaries).map(|(count, _)| count).sum::<u64>() + self.pooled;
        if rest > 0 {
            lines.push(format!("{rest} more log lines from other peers held back in the last {seconds} s"));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);

    fn peer(seed: u8) -> Option<NodeIdentity> {
        Some(NodeIdentity::ed25519([seed; 32]))
    }

    #[test]
    fn a_peer_gets_a_few_lines_then_a_summary() {
        let config = LogBudgetConfig { per_peer: 2, total: 100, ..LogBudgetConfig::default() };
        let mut budget = LogBudget::new(config);
        let written = (0..1000).filter(|_| budget.allow(LogKind::MessageDropped, peer(1), T0)).count();
        assert_eq!(written, 2);
        assert!(budget.allow(LogKind::MessageDropped, peer(2), T0), "another peer has its own lines");
        assert!(budget.allow(LogKind::Connected, peer(1), T0), "and another kind");
        let summaries = budget.summaries();
        assert_eq!(summaries.len(), 1);
        assert!(summaries[0].ends_with(": 998 inbound messages dropped in the last 10 s"), "{}", summaries[0]);
        budget.roll(T0.saturating_add_millis(10_000));
        assert!(budget.summaries().is_empty(), "a new window");
        assert!(budget.allow(LogKind::MessageDropped, peer(1), T0.saturating_add_millis(10_000)));
        assert_eq!(budget.held_back(), 998);
    }

    /// Beyond the peers it counts one by one, a line is held back and
    /// only summed, whatever room the totals have; the table of a busy
    /// window is not kept for the next.
    #[test]
    fn peers_beyond_the_counted_ones_are_pooled() {
        let config = LogBudgetConfig { per_peer: 5, total: 100, summaries: 20, max_keys: 2, window_ms: 10_000 };
        let mut budget = LogBudget::new(config);
        assert!(budget.allow(LogKind::Connected, peer(1), T0));
        assert!(budget.allow(LogKind::Connected, peer(2), T0));
        assert!(!budget.allow(LogKind::Connected, peer(3), T0), "a third peer is not counted apart");
        assert!(!budget.allow(LogKind::Connected, peer(3), T0));
        assert_eq!(budget.summaries(), ["2 more log lines from other peers held back in the last 10 s"]);
        assert_eq!(budget.held_back(), 2);
        let mut busy = LogBudget::new(LogBudgetConfig { max_keys: 1000, ..config });
        for n in 0..200u8 {
            busy.allow(LogKind::Connected, peer(n), T0);
        }
        busy.roll(T0.saturating_add_millis(10_000));
        assert_eq!(busy.keys.capacity(), 0, "a busy window's table is given back");
    }

    #[test]
    fn a_crowd_of_peers_shares_one_total() {
        let config = LogBudgetConfig { per_peer: 5, total: 10, summaries: 3, max_keys: 50, window_ms: 10_000 };
        let mut budget = LogBudget::new(config);
        let written = (0..100u8).filter(|n| budget.allow(LogKind::Connected, peer(*n), T0)).count();
        assert_eq!(written, 10);
        let summaries = budget.summaries();
        assert_eq!(summaries.len(), 4, "three summaries and one line for the rest: {summaries:?}");
        assert!(summaries[3].starts_with("87 more log lines"), "40 held back by keys, 50 pooled: {summaries:?}");
    }
}
