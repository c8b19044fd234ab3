//! Scenarios: TOML files that say how many nodes, what the network does,
//! what traffic flows, and which faults and attackers strike when.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::model::LinkModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub nodes: u32,
    pub duration_s: f64,
    /// How often the open connections are counted for the time series
    /// (virtual time). Engines are not ticked: each runs its own timers.
    #[serde(default = "default_sample_ms", alias = "tick_ms")]
    pub sample_ms: u64,
    #[serde(default)]
    pub link: LinkModel,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Each node's transport buffer limits; the product's defaults unless
    /// a scenario lowers them to reach them sooner.
    #[serde(default)]
    pub buffers: BufferLimits,
    /// Every node a member of one domain, whose overlay is measured
    /// through a failure (see `sim/domains.rs`).
    #[serde(default)]
    pub domain: Option<DomainScenario>,
}

/// How the overlay fills a view that lost a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairMode {
    /// HyParView: at once, from the passive view.
    Reactive,
    /// The baseline: only at each shuffle period.
    Periodic,
}

/// One domain of every node: joins through its approvers, convergence,
/// then a share of the members failing at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainScenario {
    /// Members that approve joins (the first nodes).
    #[serde(default = "default_approvers")]
    pub approvers: u32,
    /// Joins are spread uniformly over this many seconds from the start.
    pub join_spread_s: f64,
    #[serde(default = "default_shuffle_s")]
    pub shuffle_interval_s: f64,
    #[serde(default = "default_neighbor_ms")]
    pub neighbor_timeout_ms: u64,
    pub fail_at_s: f64,
    /// The share of members that crash at once; the runner tries each.
    pub fail_fractions: Vec<f64>,
    /// Seeds the runner tries for each share.
    pub seeds: Vec<u64>,
    /// Set by the runner: the overlay measured in this run.
    #[serde(default = "default_repair")]
    pub repair: RepairMode,
    /// Set by the runner: the share failing in this run.
    #[serde(default)]
    pub fail_fraction: f64,
    /// When broadcasts start, in seconds after the failure.
    #[serde(default = "default_broadcasts")]
    pub broadcasts_after_s: Vec<f64>,
}

fn default_approvers() -> u32 {
    8
}
fn default_shuffle_s() -> f64 {
    60.0
}
fn default_neighbor_ms() -> u64 {
    2_000
}
fn default_repair() -> RepairMode {
    RepairMode::Reactive
}
fn default_broadcasts() -> Vec<f64> {
    vec![1.0, 10.0]
}

/// The byte limits of each node's transport, per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferLimits {
    pub window_bytes: usize,
    pub queue_bytes_per_peer: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        let config = netmachine_engines::transport::TransportConfig::default();
        Self { window_bytes: config.window_bytes, queue_bytes_per_peer: config.max_queue_bytes_per_peer }
    }
}

fn default_seed() -> u64 {
    1
}

fn default_sample_ms() -> u64 {
    500
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Unicast messages each node sends per second (Poisson), each to a
    /// node chosen at random.
    #[serde(default = "default_rate")]
    pub unicast_per_node_per_s: f64,
    #[serde(default = "default_body")]
    pub body_bytes: usize,
    #[serde(default = "default_ttl")]
    pub ttl_ms: u64,
    /// Topics, each published by one node and subscribed by
    /// `subscribers_per_topic` others.
    #[serde(default)]
    pub topics: u32,
    #[serde(default)]
    pub subscribers_per_topic: u32,
    /// Events each topic's publisher publishes per second.
    #[serde(default)]
    pub events_per_topic_per_s: f64,
    /// Pings each node's application asks its ping engine for, per second
    /// (Poisson), each of a node chosen at random.
    #[serde(default)]
    pub pings_per_node_per_s: f64,
    /// Each node's partial view: this many peers drawn at random, to which
    /// it sends `view_share` of its unicasts (0: every unicast goes to a
    /// node drawn from all of them).
    #[serde(default)]
    pub view_size: u32,
    #[serde(default = "default_view_share")]
    pub view_share: f64,
    /// Traffic stops this long before the end, so what is in flight can land.
    #[serde(default = "default_quiet")]
    pub quiet_tail_s: f64,
}

fn default_rate() -> f64 {
    1.0
}
fn default_body() -> usize {
    256
}
fn default_ttl() -> u64 {
    30_000
}
fn default_view_share() -> f64 {
    0.9
}
fn default_quiet() -> f64 {
    40.0
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            unicast_per_node_per_s: default_rate(),
            body_bytes: default_body(),
            ttl_ms: default_ttl(),
            topics: 0,
            subscribers_per_topic: 0,
            events_per_topic_per_s: 0.0,
            pings_per_node_per_s: 0.0,
            view_size: 0,
            view_share: default_view_share(),
            quiet_tail_s: default_quiet(),
        }
    }
}

/// Something that happens to the network at `at_s`. (Unknown keys are
/// refused by each kind, not here: serde cannot refuse them across a
/// flattened enum.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_s: f64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// `nodes` random nodes crash; each restarts after `restart_after_s`
    /// (with its identity; its queues are lost) unless it is absent.
    Crash { nodes: u32, restart_after_s: Option<f64> },
    /// The first `fraction` of the nodes is cut off from the rest until
    /// `heal_after_s` later.
    Partition { fraction: f64, heal_after_s: Option<f64> },
    /// `nodes` new nodes join and start sending.
    Join { nodes: u32 },
    /// `nodes` random nodes turn adversarial.
    Adversary { nodes: u32, behaviour: Behaviour },
}

/// What an adversarial node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Takes messages and never delivers or acknowledges them.
    Drop,
    /// Holds every message it sends for a second.
    Delay,
    /// Sends a hundred times the normal rate.
    Flood,
    /// Signs its messages with a key that is not its own.
    BadSignatures,
    /// Advertises another node's address.
    LieInAdverts,
    /// Receives but never forwards: with direct routing, the same as drop.
    Withhold,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid { path: path.to_string(), message };
        let scenario: Scenario = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if scenario.nodes < 2 || scenario.nodes > 1_000_000 {
            return Err(invalid(format!("nodes = {} is outside 2..=1000000", scenario.nodes)));
        }
        if !(scenario.duration_s > 0.0 && scenario.duration_s <= 86_400.0) {
            return Err(invalid("duration_s must be in (0, 86400]".into()));
        }
        if !(0.0..1.0).contains(&scenario.link.loss) {
            return Err(invalid("link.loss must be in [0, 1)".into()));
        }
        if !(0.0..=1.0).contains(&scenario.workload.view_share) {
            return Err(invalid("workload.view_share must be in [0, 1]".into()));
        }
        if scenario.sample_ms == 0 {
            return Err(invalid("sample_ms must be at least 1".into()));
        }
        Ok(scenario)
    }
}
