//! The results of a run: what was delivered, lost, excused or repeated,
//! latencies, load per node, and the invariants that were broken.

use std::hash::Hasher;

use super::metrics::{cdf_points, KindMetrics, LatencySummary, PerNode, Results};
use super::Simulation;

impl Simulation {
    pub(super) fn finish(mut self, wall_s: f64) -> Results {
        self.settle_all();
        let mut unicast = std::mem::take(&mut self.ledger.tally);
        let mut violations = std::mem::take(&mut self.ledger.violations);
        let adversarial = |n: u32| self.nodes[n as usize].behaviour.is_some();
        // Every ping ends (answered, timed out or refused) once the quiet
        // tail outlasts a ping's timeout.
        let pings = &self.results.pings;
        let ended = pings.answered + pings.timed_out + pings.refused + pings.lost_in_crash;
        let tail_ms = (self.scenario.workload.quiet_tail_s * 1000.0) as u64;
        if ended != pings.asked && tail_ms > netmachine_engines::ping::PingConfig::default().timeout_ms {
            violations.push(format!("{} of {} pings never ended", pings.asked.saturating_sub(ended), pings.asked));
        }
        unicast.delivered_after_expiry += self.results.unicast.delivered_after_expiry;
        if unicast.delivered_after_expiry > 0 {
            violations.push(format!("{} messages delivered after their expiry", unicast.delivered_after_expiry));
        }
        unicast.repeats_dropped = self.nodes.iter().map(|n| n.repeats_dropped()).sum();
        unicast.delivery_ratio = ratio(unicast.delivered, unicast.expected);
        self.unicast_latency_us.sort_unstable();
        unicast.latency_cdf = cdf_points(&self.unicast_latency_us, 200);
        unicast.latency = LatencySummary::of(&mut self.unicast_latency_us);

        let connection_setup = LatencySummary::of(&mut self.setup_us);
        self.results.pings.rtt = LatencySummary::of(&mut self.ping_rtt_us);
        let mut pubsub = KindMetrics::default();
        for ((publisher, id), (_, expected, topic)) in &self.events_published {
            pubsub.expected += expected;
            for &s in &self.subscribers[*topic as usize] {
                match self.pubsub_delivered.get(&(*publisher, *id, s)).copied().unwrap_or(0) {
                    0 => {
                        if self.reachable(*publisher, s) && !adversarial(s) {
                            pubsub.lost += 1;
                        } else {
                            pubsub.excused += 1;
                        }
                    }
                    k => {
                        pubsub.delivered += 1;
                        pubsub.duplicates += u64::from(k - 1);
                    }
                }
            }
        }
        pubsub.delivery_ratio = ratio(pubsub.delivered, pubsub.expected);
        pubsub.delivered_after_expiry = self.results.pubsub.delivered_after_expiry;
        self.pubsub_latency_us.sort_unstable();
        pubsub.latency_cdf = cdf_points(&self.pubsub_latency_us, 200);
        pubsub.latency = LatencySummary::of(&mut self.pubsub_latency_us);

        let mut in_degree = vec![0u64; self.nodes.len()];
        for link in &self.links {
            if link.open[0] && link.open[1] {
                in_degree[link.ends[1] as usize] += 1;
            }
        }
        let per_node = PerNode {
            messages_sent: self.nodes.iter().map(|n| n.messages_sent).collect(),
            bytes_sent: self.nodes.iter().map(|n| n.bytes_sent).collect(),
            messages_received: self.nodes.iter().map(|n| n.messages_received).collect(),
            bytes_received: self.nodes.iter().map(|n| n.bytes_received).collect(),
            in_degree,
            peak_buffered_bytes: self.nodes.iter().map(|n| n.peak_buffered_bytes as u64).collect(),
        };
        let domain = self.finish_domain();
        Results {
            domain,
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            nodes: self.nodes.len() as u32,
            simulated_s: self.scenario.duration_s,
            wall_s,
            events: self.events,
            events_per_wall_s: self.events as f64 / wall_s.max(1e-9),
            trace_hash: format!("{:016x}", self.hash.finish()),
            unicast,
            pubsub,
            connection_setup,
            per_node,
            peak_rss_bytes_per_node: peak_rss_bytes() / u64::from(self.scenario.nodes.max(1)),
            peak_open_records: self.ledger.peak_open as u64,
            violations,
            ..std::mem::take(&mut self.results)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The process's peak resident memory (Linux), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).map(|kb| kb * 1024))
        })
        .unwrap_or(0)
}
