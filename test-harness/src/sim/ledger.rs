//! The ledger of unicasts: the invariant check, streamed. Each message
//! sent opens a record; a delivery or the sender being told is counted
//! when it happens, and the record is settled (judged and dropped) once
//! the message's expiry has passed by [`SETTLE_GRACE_US`]: no copy of it
//! can be delivered any more (a receiver drops what has expired), and its
//! sender has been told of it if it ever will. So the ledger holds the
//! messages of the last expiry period and the grace, not of the whole run.

use std::collections::{HashMap, VecDeque};

use super::metrics::KindMetrics;
use super::Simulation;

/// How long after its expiry a message is judged: three idle timeouts.
/// A sender hears that a connection it sent on is gone within one (then
/// what it had in flight comes back to its queue, already expired, and it
/// is told); a receiver's notice that the message arrived expired, or
/// found no engine, crosses the network back, behind a partition or a
/// retransmission if there is one.
pub(crate) const SETTLE_GRACE_US: u64 = 3 * super::IDLE_TIMEOUT_US;

/// Lost messages named among the violations, at most.
const NAMED_LOSSES: usize = 20;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) at_us: u64,
    pub(crate) to: u32,
    pub(crate) expiry_ms: u64,
    pub(crate) delivered: u32,
    pub(crate) told: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    open: HashMap<(u32, u64), Sent>,
    /// When each open record is settled, in sending order (every message
    /// of a run has the same time to live, so this order is also the
    /// order of settling).
    due: VecDeque<(u64, u32, u64)>,
    pub(crate) tally: KindMetrics,
    pub(crate) violations: Vec<String>,
    /// Open records at most, over the run.
    pub(crate) peak_open: usize,
}

impl Ledger {
    pub(crate) fn open(&mut self, from: u32, id: u64, sent: Sent, settle_at_us: u64) {
        self.open.insert((from, id), sent);
        self.due.push_back((settle_at_us, from, id));
        self.peak_open = self.peak_open.max(self.open.len());
    }

    pub(crate) fn get_mut(&mut self, from: u32, id: u64) -> Option<&mut Sent> {
        self.open.get_mut(&(from, id))
    }
}

impl Simulation {
    /// Settles every record whose time has come.
    pub(super) fn settle_due(&mut self) {
        while let Some(&(at, from, id)) = self.ledger.due.front() {
            if at > self.now_us {
                break;
            }
            self.ledger.due.pop_front();
            if let Some(sent) = self.ledger.open.remove(&(from, id)) {
                self.settle(from, id, sent);
            }
        }
        if self.ledger.open.is_empty() && self.ledger.open.capacity() > 0 {
            self.ledger.open = HashMap::new();
        }
    }

    /// Settles what is still open when the run ends.
    pub(super) fn settle_all(&mut self) {
        let mut open: Vec<_> = std::mem::take(&mut self.ledger.open).into_iter().collect();
        open.sort_unstable_by_key(|(key, _)| *key);
        self.ledger.due.clear();
        for ((from, id), sent) in open {
            self.settle(from, id, sent);
        }
    }

    fn settle(&mut self, from: u32, id: u64, sent: Sent) {
        let adversarial = |n: u32| self.nodes[n as usize].behaviour.is_some();
        let excused = !self.reachable(from, sent.to)
            || adversarial(from)
            || adversarial(sent.to)
            || self.nodes[from as usize].generation > 0;
        let tally = &mut self.ledger.tally;
        tally.expected += 1;
        if sent.delivered >= 1 {
            tally.delivered += 1;
        }
        if sent.delivered > 1 {
            tally.duplicates += u64::from(sent.delivered - 1);
            self.ledger.violations.push(format!("message {id} from node {from} delivered {} times", sent.delivered));
        }
        if sent.told {
            tally.told_undeliverable += 1;
        }
        if sent.delivered == 0 && !sent.told {
            if excused {
                tally.excused += 1;
            } else {
                tally.lost += 1;
                if self.ledger.violations.len() < NAMED_LOSSES {
                    self.ledger.violations.push(format!(
                        "message {id} from node {from} to node {} neither delivered nor reported",
                        sent.to
                    ));
                }
            }
        }
        if let Some((healed_at, cut)) = self.last_heal {
            let crosses = (from < cut) != (sent.to < cut);
            let honest = !adversarial(from) && !adversarial(sent.to);
            let up = |n: u32| self.nodes[n as usize].alive && self.nodes[n as usize].generation == 0;
            if crosses && honest && up(from) && up(sent.to) && sent.at_us >= healed_at + 5_000_000 {
                self.results.across_healed_cut.sent += 1;
                if sent.delivered > 0 {
                    self.results.across_healed_cut.delivered += 1;
                }
            }
        }
    }
}
