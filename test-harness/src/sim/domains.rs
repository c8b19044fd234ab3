//! One domain of every node, and its overlay measured through a failure.
//!
//! The first `approvers` nodes serve the domain (an open one); every other
//! node joins through one of them at a random moment of the join spread,
//! with the real domain and topology engines of its node core. At
//! `fail_at_s` a share of the members crash at once. Survivors notice as a
//! real node does: a connection that goes silent closes at the idle
//! timeout, and a dial to a dead node fails. The simulator then measures,
//! from the engines' own views:
//! - the share of survivors in the largest connected component of the
//!   active-view graph, every few seconds;
//! - broadcasts flooded over the active views: each node that first gets
//!   one forwards it once to its active neighbours of that moment, as a
//!   flood does; the share of survivors it reaches;
//! - what survivors spent after the failure: topology messages, neighbour
//!   requests, and dials.

use netmachine_domain::{
    Advert, DestinationIdentity, DomainAdvert, DomainAdvertBody, DomainIdentity, EngineIdentity, EngineMessage,
    EngineName, ExternalIdentity, JoinPolicy, MembershipRules, MessageId, ProtocolId,
};
use netmachine_engines::domain::{Command, DOMAIN_PROTOCOL, DOMAIN_VERSION};
use netmachine_engines::ports::{Randomness, Signer};
use netmachine_engines::registry::EngineSettings;
use netmachine_engines::testing::TestSigner;
use netmachine_engines::topology::{Repair, Topology};

use super::metrics::DomainResults;
use super::model::unit;
use super::node::APP_NAME;
use super::scenario::{DomainScenario, RepairMode};
use super::{ms, Event, Simulation};

/// The engines' settings for a run: the scenario's overlay timers and
/// repair; the product's defaults otherwise.
pub(crate) fn engine_settings(spec: Option<&DomainScenario>) -> EngineSettings {
    let mut settings = EngineSettings::default();
    if let Some(spec) = spec {
        settings.topology.shuffle_interval_ms = (spec.shuffle_interval_s * 1000.0) as u64;
        settings.topology.neighbor_timeout_ms = spec.neighbor_timeout_ms;
        settings.topology.repair = match spec.repair {
            RepairMode::Reactive => Repair::Reactive,
            RepairMode::Periodic => Repair::PeriodicOnly,
        };
    }
    settings
}

/// How often the largest component is measured.
const MEASURE_EVERY_US: u64 = 5_000_000;

/// The domain's state in a run.
#[derive(Debug, Default)]
pub(crate) struct DomainRun {
    advert: Option<DomainAdvert>,
    results: DomainResults,
    /// For each broadcast: which nodes it reached.
    reached: Vec<Vec<bool>>,
    /// Counters of the survivors at the failure: messages, requests, dials.
    at_failure: (u64, u64, u64),
    failed_at_us: Option<u64>,
}

fn domain_key() -> TestSigner {
    TestSigner(ExternalIdentity::ed25519([0xd5; 32]))
}

impl Simulation {
    fn domain_scenario(&self) -> Option<DomainScenario> {
        self.scenario.domain.clone()
    }

    /// Makes the advert, has the approvers serve it and schedules the joins.
    pub(super) fn setup_domain(&mut self) {
        let Some(spec) = self.domain_scenario() else { return };
        let members = self.scenario.nodes;
        let approvers: Vec<u32> = (0..spec.approvers.clamp(1, members)).collect();
        let ids: Vec<_> = approvers.iter().map(|a| self.nodes[*a as usize].id).collect();
        let Ok(rules) = MembershipRules::new(ids.clone(), 24 * 3600, vec![], false) else { return };
        let Ok(body) = DomainAdvertBody::new(
            DomainIdentity::new(domain_key().0),
            ids,
            JoinPolicy::Open,
            1,
            netmachine_domain::Timestamp(0),
        ) else {
            return;
        };
        let body = body.with_rules(rules);
        let sig = domain_key().sign(&DomainAdvert::signing_bytes_of(&body));
        let advert: DomainAdvert = Advert::from_parts(body, sig);
        self.domain.advert = Some(advert.clone());
        self.domain.results.members = members;
        self.domain.results.fail_fraction = spec.fail_fraction;
        self.domain.results.repair = format!("{:?}", spec.repair).to_lowercase();
        // Approvers know each other, as an operator's bootstrap list makes
        // them: each joins the overlay through another.
        for &a in &approvers {
            for &b in &approvers {
                if a != b {
                    self.introduce(a, b);
                }
            }
        }
        for &a in &approvers {
            self.domain_command(a, &Command::Serve { advert: advert.clone(), psk: None });
        }
        for n in spec.approvers.min(members)..members {
            let at = (unit(&mut self.random) * spec.join_spread_s * 1e6) as u64 + 1;
            self.queue.push(at, Event::DomainJoin(n));
        }
        self.queue.push((spec.fail_at_s * 1e6) as u64, Event::DomainFail);
        self.queue.push(MEASURE_EVERY_US, Event::DomainMeasure);
    }

    fn domain_command(&mut self, n: u32, command: &Command) {
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let Ok(protocol) = ProtocolId::new(DOMAIN_PROTOCOL, DOMAIN_VERSION) else { return };
        let node = &mut self.nodes[n as usize];
        let id = MessageId(node.next_message_id);
        node.next_message_id += 1;
        let src = EngineIdentity::new(node.id, app);
        let message = EngineMessage::new(src, DestinationIdentity::Node(node.id), id, protocol, command.encode());
        let _ = node.core.send(message, ms(self.now_us));
        self.drain(n);
    }

    /// Node `n` joins through a random approver.
    pub(super) fn domain_join(&mut self, n: u32) {
        let (Some(spec), Some(advert)) = (self.domain_scenario(), self.domain.advert.clone()) else { return };
        let approver = (self.random.next_u64() % u64::from(spec.approvers.max(1))) as u32;
        self.introduce(n, approver);
        let via = Some(self.nodes[approver as usize].id);
        self.domain_command(n, &Command::Join { advert, psk: None, via });
    }

    /// A share of the members crash at once.
    pub(super) fn domain_fail(&mut self) {
        let Some(spec) = self.domain_scenario() else { return };
        self.domain.results.connected_before = self.largest_component_share();
        self.domain.results.joined = (0..self.scenario.nodes)
            .filter(|n| self.topology(*n).is_some_and(|t| t.overlays().next().is_some()))
            .count() as u32;
        let members = self.scenario.nodes;
        let failing = ((f64::from(members)) * spec.fail_fraction.clamp(0.0, 1.0)).round() as u32;
        let mut order: Vec<u32> = (0..members).collect();
        for i in (1..order.len()).rev() {
            let j = (self.random.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &n in &order[..failing as usize] {
            self.crash(n);
        }
        self.domain.results.survivors = members - failing;
        self.domain.failed_at_us = Some(self.now_us);
        self.domain.at_failure = self.survivor_spending();
        for (k, after) in spec.broadcasts_after_s.iter().enumerate() {
            self.queue.push(self.now_us + (after * 1e6) as u64, Event::DomainBroadcast(k as u32));
        }
        self.domain.reached = vec![vec![false; members as usize]; spec.broadcasts_after_s.len()];
    }

    fn topology(&self, n: u32) -> Option<&Topology> {
        let node = &self.nodes[n as usize];
        node.alive.then(|| node.core.engine::<Topology>()).flatten()
    }

    /// Each alive node's active neighbours, as node indexes.
    fn active_of(&self, n: u32) -> Vec<u32> {
        let Some(topology) = self.topology(n) else { return Vec::new() };
        topology
            .overlays()
            .flat_map(|o| o.active().collect::<Vec<_>>())
            .filter_map(|peer| self.index_by_id.get(&peer).copied())
            .collect()
    }

    /// The share of alive members in the largest connected component of
    /// the active views (taken as undirected: a connection carries both
    /// ways).
    fn largest_component_share(&self) -> f64 {
        let members = self.scenario.nodes as usize;
        let alive: Vec<bool> = (0..members).map(|n| self.nodes[n].alive).collect();
        let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); members];
        for n in 0..members as u32 {
            if !alive[n as usize] {
                continue;
            }
            for m in self.active_of(n) {
                if (m as usize) < members && alive[m as usize] {
                    adjacency[n as usize].push(m);
                    adjacency[m as usize].push(n);
                }
            }
        }
        let mut seen = vec![false; members];
        let mut best = 0usize;
        for start in 0..members {
            if !alive[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start as u32];
            let mut size = 0;
            while let Some(n) = stack.pop() {
                size += 1;
                for &m in &adjacency[n as usize] {
                    if !seen[m as usize] {
                        seen[m as usize] = true;
                        stack.push(m);
                    }
                }
            }
            best = best.max(size);
        }
        let total = alive.iter().filter(|a| **a).count();
        if total == 0 {
            0.0
        } else {
            best as f64 / total as f64
        }
    }

    pub(super) fn domain_measure(&mut self) {
        if let Some(failed) = self.domain.failed_at_us {
            let after = (self.now_us - failed) as f64 / 1e6;
            let share = self.largest_component_share();
            self.domain.results.connected.push((after, share));
            if share >= 1.0 && self.domain.results.all_connected_after_s.is_none() {
                self.domain.results.all_connected_after_s = Some(after);
            }
            // Right after the failure, before anyone could notice.
            if self.domain.results.connected.len() == 1 && after > 0.0 {
                self.domain.results.connected.insert(0, (0.0, share));
            }
        }
        self.queue.push(self.now_us + MEASURE_EVERY_US, Event::DomainMeasure);
    }

    /// A broadcast starts at a random survivor.
    pub(super) fn domain_broadcast(&mut self, k: u32) {
        let alive: Vec<u32> = (0..self.scenario.nodes).filter(|n| self.nodes[*n as usize].alive).collect();
        if alive.is_empty() {
            return;
        }
        let source = alive[(self.random.next_u64() % alive.len() as u64) as usize];
        self.flood_arrives(k, source);
    }

    /// A broadcast reaches node `n`: the first time, it forwards it to its
    /// active neighbours of this moment.
    pub(super) fn flood_arrives(&mut self, k: u32, n: u32) {
        if !self.nodes[n as usize].alive {
            return;
        }
        let Some(reached) = self.domain.reached.get_mut(k as usize) else { return };
        if std::mem::replace(&mut reached[n as usize], true) {
            return;
        }
        for m in self.active_of(n) {
            let at = self.now_us + self.latency_us();
            self.queue.push(at, Event::DomainFlood { broadcast: k, node: m });
        }
    }

    /// Messages, neighbour requests and dials of the alive members.
    fn survivor_spending(&self) -> (u64, u64, u64) {
        let mut messages = 0;
        let mut requests = 0;
        for n in 0..self.scenario.nodes {
            if let Some(topology) = self.topology(n) {
                for overlay in topology.overlays() {
                    let c = overlay.counters();
                    messages += c.sent.iter().sum::<u64>();
                    requests += c.repair_requests;
                }
            }
        }
        (messages, requests, self.results.connects + self.results.connect_failures)
    }

    /// The domain results at the end of the run.
    pub(super) fn finish_domain(&mut self) -> Option<DomainResults> {
        let spec = self.domain_scenario()?;
        let survivors = f64::from(self.domain.results.survivors.max(1));
        let (messages, requests, dials) = self.survivor_spending();
        let (m0, r0, d0) = self.domain.at_failure;
        let results = &mut self.domain.results;
        results.topology_messages_per_survivor = messages.saturating_sub(m0) as f64 / survivors;
        results.neighbor_requests_per_survivor = requests.saturating_sub(r0) as f64 / survivors;
        results.dials_per_survivor = dials.saturating_sub(d0) as f64 / survivors;
        let alive: Vec<bool> = (0..self.scenario.nodes as usize).map(|n| self.nodes[n].alive).collect();
        let total = alive.iter().filter(|a| **a).count().max(1) as f64;
        results.broadcasts = spec
            .broadcasts_after_s
            .iter()
            .zip(&self.domain.reached)
            .map(|(after, reached)| {
                let got = reached.iter().zip(&alive).filter(|(r, a)| **r && **a).count() as f64;
                (*after, got / total)
            })
            .collect();
        Some(results.clone())
    }
}
