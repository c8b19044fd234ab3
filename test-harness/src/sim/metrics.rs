//! What a run measured, in the form written to its JSON results file.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(samples_us: &mut [u64]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        let at = |p: f64| samples_us[((samples_us.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        Self { samples: samples_us.len() as u64, p50_ms: at(0.5), p90_ms: at(0.9), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// Delivery figures for one kind of message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindMetrics {
    /// Deliveries expected (unicast: messages sent; pub/sub: events times
    /// subscribers).
    pub expected: u64,
    pub delivered: u64,
    /// Delivered more than once to the engine.
    pub duplicates: u64,
    /// Resent after a dropped connection and recognised as repeats.
    pub repeats_dropped: u64,
    /// The sender was told the message expired (or was refused at once).
    pub told_undeliverable: u64,
    /// Neither delivered nor told, to a live, honest, reachable receiver
    /// from a live sender: an invariant violation.
    pub lost: u64,
    /// Expected deliveries excused: the receiver or the sender was down or
    /// adversarial, or the receiver was cut off, when the run ended.
    pub excused: u64,
    pub delivered_after_expiry: u64,
    pub delivery_ratio: f64,
    pub latency: LatencySummary,
    /// Latency CDF points (ms, fraction), at most 200.
    pub latency_cdf: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerNode {
    pub messages_sent: Vec<u64>,
    pub bytes_sent: Vec<u64>,
    pub messages_received: Vec<u64>,
    pub bytes_received: Vec<u64>,
    /// Connections each node accepted, open at the end.
    pub in_degree: Vec<u64>,
    /// Peak bytes a node's transport held in queues and windows.
    pub peak_buffered_bytes: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PingMetrics {
    pub asked: u64,
    pub answered: u64,
    pub timed_out: u64,
    pub refused: u64,
    /// Waiting when the asking node crashed: its engine is gone.
    pub lost_in_crash: u64,
    /// Round trips as the ping engines measured them (whole milliseconds).
    pub rtt: LatencySummary,
}

/// One value per simulated second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeSeries {
    pub sent: Vec<u64>,
    pub delivered: Vec<u64>,
    pub open_connections: Vec<u64>,
    pub connects: Vec<u64>,
    pub disconnects: Vec<u64>,
    pub rejected: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub scenario: String,
    pub seed: u64,
    pub nodes: u32,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub events: u64,
    pub events_per_wall_s: f64,
    /// A hash of every event processed: equal seeds give equal hashes.
    pub trace_hash: String,
    pub unicast: KindMetrics,
    pub pubsub: KindMetrics,
    /// Pings asked of the nodes' ping engines, and how they ended.
    #[serde(default)]
    pub pings: PingMetrics,
    pub connects: u64,
    /// From a dial to the connection being usable (secured stream, hello
    /// and reply), for the dialler.
    #[serde(default)]
    pub connection_setup: LatencySummary,
    pub connect_failures: u64,
    pub disconnects: u64,
    /// Messages refused on arrival (bad signature, impersonation) and the
    /// connections closed for it.
    pub rejected: u64,
    pub per_node: PerNode,
    pub series: TimeSeries,
    /// Bytes of simulator state per node at the end (engines, links, queue),
    /// an estimate from the process's resident memory.
    pub peak_rss_bytes_per_node: u64,
    /// Unicast records open at once, at most (each is settled once its
    /// message's expiry has passed: see `ledger.rs`).
    #[serde(default)]
    pub peak_open_records: u64,
    /// Unicast messages between honest nodes that never crashed, across the
    /// last partition's cut, sent at least 5 s after it healed.
    pub across_healed_cut: Crossing,
    pub violations: Vec<String>,
    /// What a domain scenario measured of its overlay.
    #[serde(default)]
    pub domain: Option<DomainResults>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crossing {
    pub sent: u64,
    pub delivered: u64,
}

/// Up to `points` points of the CDF of `sorted` (microseconds), in ms.
pub fn cdf_points(sorted_us: &[u64], points: usize) -> Vec<(f64, f64)> {
    if sorted_us.is_empty() {
        return Vec::new();
    }
    let n = sorted_us.len();
    let step = (n / points.max(1)).max(1);
    let mut out: Vec<(f64, f64)> =
        (0..n).step_by(step).map(|i| (sorted_us[i] as f64 / 1000.0, (i + 1) as f64 / n as f64)).collect();
    out.push((sorted_us[n - 1] as f64 / 1000.0, 1.0));
    out
}

/// What a domain run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainResults {
    pub members: u32,
    pub repair: String,
    pub fail_fraction: f64,
    pub survivors: u32,
    /// Members whose join ended in a certificate before the failure.
    pub joined: u32,
    /// The share of members in the largest component just before the
    /// failure.
    pub connected_before: f64,
    /// (seconds after the failure, share of survivors in the largest
    /// component of the active-view graph).
    pub connected: Vec<(f64, f64)>,
    /// (seconds after the failure the broadcast started, share of
    /// survivors it reached).
    pub broadcasts: Vec<(f64, f64)>,
    /// Per survivor, from the failure to the end.
    pub topology_messages_per_survivor: f64,
    pub neighbor_requests_per_survivor: f64,
    pub dials_per_survivor: f64,
    /// Seconds after the failure when every survivor was first in one
    /// component, if it happened.
    pub all_connected_after_s: Option<f64>,
}
