//! The simulator: deterministic, its scenarios hold the invariants, and
//! random topologies, faults and traffic never break them.

use std::path::PathBuf;
use std::process::Command;

use netmachine_harness::sim::model::{Latency, LinkModel};
use netmachine_harness::sim::scenario::{Behaviour, Fault, FaultKind, Scenario, Workload};
use netmachine_harness::sim::Simulation;
use proptest::prelude::*;

fn small(seed: u64) -> Scenario {
    Scenario {
        name: "small".into(),
        description: String::new(),
        seed,
        nodes: 30,
        duration_s: 60.0,
        tick_ms: 500,
        link: LinkModel {
            latency: Latency::Normal { mean_ms: 20.0, sd_ms: 5.0 },
            jitter_ms: 2.0,
            loss: 0.02,
            bandwidth_bps: None,
            processing_ms: 0.0,
        },
        workload: Workload {
            unicast_per_node_per_s: 2.0,
            topics: 2,
            subscribers_per_topic: 5,
            events_per_topic_per_s: 2.0,
            quiet_tail_s: 35.0,
            ..Workload::default()
        },
        faults: vec![
            Fault { at_s: 5.0, kind: FaultKind::Partition { fraction: 0.5, heal_after_s: Some(8.0) } },
            Fault { at_s: 7.0, kind: FaultKind::Crash { nodes: 3, restart_after_s: Some(5.0) } },
        ],
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let a = Simulation::new(small(7)).run(|_| {});
    let b = Simulation::new(small(7)).run(|_| {});
    let c = Simulation::new(small(8)).run(|_| {});
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.unicast, b.unicast);
    assert_eq!(a.per_node, b.per_node);
    assert_ne!(a.trace_hash, c.trace_hash);
    assert!(a.unicast.expected > 100, "traffic flowed: {:?}", a.unicast);
}

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn every_shipped_scenario_holds_the_invariants() {
    let mut ran = 0;
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let mut scenario = Scenario::load(&path).expect("parses");
        if scenario.nodes > 1000 {
            // The scale benchmark is run by hand (docs/simulation.md).
            continue;
        }
        scenario.duration_s = scenario.duration_s.min(150.0);
        let results = Simulation::new(scenario).run(|_| {});
        assert!(results.violations.is_empty(), "{}: {:?}", path.display(), results.violations);
        assert!(results.unicast.delivered > 0, "{}: nothing delivered", path.display());
        ran += 1;
    }
    assert!(ran >= 4, "the four scenarios for what exists now");
}

#[test]
fn the_cli_writes_results_and_plots_and_compares_runs() {
    let bin = env!("CARGO_BIN_EXE_netmachine-sim");
    let out = tempfile::tempdir().expect("tempdir");
    let scenario = scenarios_dir().join("bad-signatures.toml");
    for (dir, seed) in [("a", "4"), ("b", "5")] {
        let status = Command::new(bin)
            .args(["run", scenario.to_str().expect("utf-8"), "--out"])
            .arg(out.path().join(dir))
            .args(["--seed", seed])
            .output()
            .expect("runs");
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        for file in [
            "results.json",
            "latency_cdf.svg",
            "load_messages.svg",
            "load_bytes.svg",
            "in_degree.svg",
            "timeseries.svg",
            "duplicates.svg",
        ] {
            assert!(out.path().join(dir).join(file).exists(), "{file} written");
        }
    }
    let compare = Command::new(bin)
        .arg("compare")
        .arg(out.path().join("a/results.json"))
        .arg(out.path().join("b/results.json"))
        .output()
        .expect("runs");
    assert!(compare.status.success());
    let table = String::from_utf8_lossy(&compare.stdout);
    assert!(
        table.contains("unicast delivery ratio") && table.contains("seed 4") && table.contains("seed 5"),
        "{table}"
    );
    let rejected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("a/results.json")).expect("json")).expect("json");
    assert!(rejected["rejected"].as_u64().unwrap_or(0) > 0, "forged signatures were rejected");
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (1.0f64..20.0, 0.2f64..0.8, 1.0f64..15.0).prop_map(|(at_s, fraction, heal)| Fault {
            at_s,
            kind: FaultKind::Partition { fraction, heal_after_s: Some(heal) }
        }),
        (1.0f64..20.0, 1u32..3, proptest::option::of(1.0f64..10.0)).prop_map(|(at_s, nodes, restart_after_s)| Fault {
            at_s,
            kind: FaultKind::Crash { nodes, restart_after_s }
        }),
        (1.0f64..20.0, 1u32..3).prop_map(|(at_s, nodes)| Fault { at_s, kind: FaultKind::Join { nodes } }),
        (1.0f64..20.0)
            .prop_map(|at_s| Fault { at_s, kind: FaultKind::Adversary { nodes: 1, behaviour: Behaviour::Flood } }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        3u32..16,
        1.0f64..80.0,
        0.0f64..0.2,
        0.2f64..3.0,
        1_000u64..20_000,
        proptest::collection::vec(fault(), 0..3),
    )
        .prop_map(|(seed, nodes, latency_ms, loss, rate, ttl_ms, faults)| Scenario {
            name: "random".into(),
            description: String::new(),
            seed,
            nodes,
            duration_s: 60.0,
            tick_ms: 250,
            link: LinkModel {
                latency: Latency::Constant { ms: latency_ms },
                jitter_ms: latency_ms / 4.0,
                loss,
                bandwidth_bps: None,
                processing_ms: 0.0,
            },
            workload: Workload {
                unicast_per_node_per_s: rate,
                ttl_ms,
                topics: 1,
                subscribers_per_topic: nodes / 2,
                events_per_topic_per_s: 1.0,
                quiet_tail_s: 35.0,
                ..Workload::default()
            },
            faults,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the topology, faults and traffic: every message to a live,
    /// reachable, honest node arrives exactly once or its sender is told;
    /// nothing arrives after its expiry; a node's transport buffers stay
    /// within their bounds even beside a flooding peer; and after a healed
    /// partition connections are made again.
    #[test]
    fn invariants_hold_under_random_faults_and_traffic(scenario in scenario()) {
        let seed = scenario.seed;
        let long_ttl = scenario.workload.ttl_ms >= 5_000;
        let results = Simulation::new(scenario).run(|_| {});
        prop_assert!(results.violations.is_empty(), "seed {seed}: {:?}", results.violations);
        prop_assert_eq!(results.unicast.lost, 0, "seed {}", seed);
        prop_assert_eq!(results.unicast.duplicates, 0, "seed {}", seed);
        prop_assert_eq!(results.unicast.delivered_after_expiry, 0, "seed {}", seed);
        prop_assert_eq!(results.pubsub.duplicates, 0, "seed {}", seed);
        prop_assert_eq!(results.pubsub.delivered_after_expiry, 0, "seed {}", seed);
        let config = netmachine_engines::transport::TransportConfig::default();
        let per_peer = config.max_queue_bytes_per_peer + config.window_bytes + 4096;
        for (node, peak) in results.per_node.peak_buffered_bytes.iter().enumerate() {
            prop_assert!((*peak as usize) <= per_peer * results.nodes as usize, "seed {seed}: node {node} buffered {peak}");
        }
        // After a partition heals, traffic across the cut flows again:
        // the transports reconnected.
        let crossing = &results.across_healed_cut;
        if crossing.sent > 0 {
            prop_assert!(crossing.delivered > 0, "seed {}: nothing crossed the healed cut: {:?}", seed, crossing);
            if long_ttl {
                prop_assert_eq!(crossing.delivered, crossing.sent, "seed {}", seed);
            }
        }
    }
}
