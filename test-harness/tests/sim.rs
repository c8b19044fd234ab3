//! The simulator: deterministic, its scenarios hold the invariants, and
//! random topologies, faults and traffic never break them.

use std::path::PathBuf;
use std::process::Command;

use netmachine_harness::sim::model::{Latency, LinkModel};
use netmachine_harness::sim::scenario::{Behaviour, BufferLimits, Fault, FaultKind, Scenario, Workload};
use netmachine_harness::sim::Simulation;
use proptest::prelude::*;

fn small(seed: u64) -> Scenario {
    Scenario {
        name: "small".into(),
        description: String::new(),
        seed,
        nodes: 30,
        duration_s: 60.0,
        sample_ms: 500,
        link: LinkModel {
            latency: Latency::Normal { mean_ms: 20.0, sd_ms: 5.0 },
            jitter_ms: 2.0,
            loss: 0.02,
            bandwidth_bps: None,
            processing_ms: 0.0,
            handshake_ms: 0.0,
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
        buffers: BufferLimits::default(),
        domain: None,
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

/// [`small`] with no faults, and links of exactly 20 ms that lose nothing.
fn steady(seed: u64) -> Scenario {
    let mut scenario = small(seed);
    scenario.faults.clear();
    scenario.link.latency = Latency::Constant { ms: 20.0 };
    scenario.link.jitter_ms = 0.0;
    scenario.link.loss = 0.0;
    scenario
}

/// Connections are set up by the real handshake: the secured stream (two
/// one-way latencies), then the hello and its reply (two more).
#[test]
fn connection_setup_takes_the_stream_and_the_hello() {
    let mut scenario = steady(7);
    let results = Simulation::new(scenario.clone()).run(|_| {});
    let setup = &results.connection_setup;
    assert!(setup.samples > 10, "{setup:?}");
    assert!((setup.p50_ms - 80.0).abs() < 1.0, "four one-way latencies of 20 ms: {setup:?}");
    // The handshakes' own cost comes on top (calibrate fits it).
    scenario.link.handshake_ms = 5.0;
    let setup = Simulation::new(scenario).run(|_| {}).connection_setup;
    assert!((setup.p50_ms - 85.0).abs() < 1.0, "and 5 ms of handshakes: {setup:?}");
}

/// The ping engine each node core hosts answers across the simulated
/// network, with no code for it in the simulator beyond the workload.
#[test]
fn the_ping_engines_the_cores_host_answer_across_the_network_and_time_out_on_crashed_nodes() {
    let mut scenario = steady(7);
    scenario.workload = Workload { unicast_per_node_per_s: 0.0, pings_per_node_per_s: 0.5, ..scenario.workload };
    let results = Simulation::new(scenario.clone()).run(|_| {});
    let pings = &results.pings;
    assert!(pings.asked > 200, "{pings:?}");
    assert_eq!(pings.answered, pings.asked, "{pings:?}");
    assert!(
        pings.rtt.p50_ms >= 40.0 && pings.rtt.p50_ms < 130.0,
        "two one-way latencies, and a setup at most: {pings:?}"
    );
    // Crashed for longer than a ping waits: some pings time out, and every
    // ping ends.
    scenario.faults = vec![Fault { at_s: 5.0, kind: FaultKind::Crash { nodes: 5, restart_after_s: Some(20.0) } }];
    let results = Simulation::new(scenario).run(|_| {});
    let pings = &results.pings;
    assert!(pings.timed_out > 0, "{pings:?}");
    assert_eq!(pings.answered + pings.timed_out + pings.refused + pings.lost_in_crash, pings.asked, "{pings:?}");
    assert!(results.violations.is_empty(), "{:?}", results.violations);
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
        let scenario_has_traffic = scenario.workload.unicast_per_node_per_s > 0.0;
        let results = Simulation::new(scenario).run(|_| {});
        assert!(results.violations.is_empty(), "{}: {:?}", path.display(), results.violations);
        // A domain scenario sends no unicasts: its overlay is measured by
        // tests/domains.rs.
        if scenario_has_traffic {
            assert!(results.unicast.delivered > 0, "{}: nothing delivered", path.display());
        }
        ran += 1;
    }
    assert!(ran >= 4, "the four scenarios for what exists now");
}

/// `scale-100k` scaled down to 1,000 nodes and its first 150 s: views with
/// churn (crashes for good, joins) keep the invariants, the ledger settles
/// as it goes, and most traffic stays within the views.
#[test]
fn the_scale_100k_workload_holds_the_invariants_at_a_thousand_nodes() {
    let mut scenario = Scenario::load(&scenarios_dir().join("scale-100k.toml")).expect("parses");
    assert_eq!(scenario.nodes, 100_000);
    assert_eq!(scenario.workload.view_size, 20);
    scenario.nodes = 1000;
    scenario.duration_s = 150.0;
    scenario.workload.unicast_per_node_per_s = 0.5;
    for fault in &mut scenario.faults {
        if let FaultKind::Crash { nodes, .. } | FaultKind::Join { nodes } = &mut fault.kind {
            *nodes /= 100;
        }
    }
    let results = Simulation::new(scenario).run(|_| {});
    assert!(results.violations.is_empty(), "{:?}", results.violations);
    let unicast = &results.unicast;
    assert!(unicast.delivered > 50_000, "{unicast:?}");
    assert_eq!(unicast.lost, 0);
    // Crashes for good: a sender to a crashed node is told, once its
    // message expires waiting for a connection that never comes, unless
    // the sender crashes first and takes the message with it (excused:
    // 2 in this run); every other message is delivered.
    assert!(unicast.told_undeliverable > 0, "{unicast:?}");
    assert_eq!(unicast.delivered + unicast.told_undeliverable + unicast.excused, unicast.expected, "{unicast:?}");
    // Ten nodes crash at 120 s; a sender has a message or two pending at most.
    assert!(unicast.excused <= 20, "{unicast:?}");
    // A record is settled 30 s past its message's 30 s expiry, so the
    // ledger holds about a minute of traffic (500 messages a second), not
    // all that was sent.
    assert!(results.peak_open_records <= 33_000, "{} of {}", results.peak_open_records, unicast.expected);
    // With 90% of the traffic to 20 peers, a node keeps few connections:
    // about 20 inbound at the end, where the same traffic to random peers
    // leaves about 40.
    let degree = results.per_node.in_degree.iter().sum::<u64>() as f64 / 1000.0;
    assert!(degree < 30.0, "{degree}");
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
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(dir).join("results.json")).expect("json"))
                .expect("json");
        let nodes = results["nodes"].as_u64().expect("nodes") as usize;
        let read = |file: &str| std::fs::read_to_string(out.path().join(dir).join(file)).expect(file);
        // Each plot draws the run's own numbers: one line per series, with
        // as many points as the results hold, and not all of them flat.
        let cdf = polylines(&read("latency_cdf.svg"));
        let cdf_points = results["unicast"]["latency_cdf"].as_array().expect("cdf").len();
        assert_eq!(cdf.len(), 2);
        assert!(cdf_points > 1);
        assert_eq!(cdf[0].len(), cdf_points);
        assert!(rises(&cdf[0]), "a CDF rises");
        for file in ["load_messages.svg", "load_bytes.svg"] {
            let lines = polylines(&read(file));
            assert_eq!(lines.len(), 2, "{file}");
            assert!(lines.iter().all(|l| l.len() == nodes), "{file}: one point per node");
            assert!(lines.iter().all(|l| rises(l)), "{file}: sorted load is not flat");
        }
        // The two lines of a chart share its scale: their peaks stand in the
        // ratio of the largest loads in the results.
        let load = polylines(&read("load_messages.svg"));
        let most = |key: &str| {
            results["per_node"][key].as_array().expect(key).iter().filter_map(serde_json::Value::as_u64).max()
        };
        let (sent, received) = (most("messages_sent").expect("sent"), most("messages_received").expect("received"));
        let drawn = peak(&load[0]) / peak(&load[1]);
        let actual = sent as f64 / received as f64;
        assert!((drawn - actual).abs() < 0.02 * actual, "drawn ratio {drawn}, results {actual}");
        let series = polylines(&read("timeseries.svg"));
        let seconds = results["series"]["sent"].as_array().expect("series").len();
        assert_eq!(series.len(), 6);
        assert!(series.iter().all(|l| l.len() == seconds));
        assert!(rises(&series[0]), "messages were sent");
        assert_eq!(polylines(&read("in_degree.svg")).len(), 1);
        assert_eq!(polylines(&read("duplicates.svg")).len(), 2);
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
            sample_ms: 250,
            link: LinkModel {
                latency: Latency::Constant { ms: latency_ms },
                jitter_ms: latency_ms / 4.0,
                loss,
                bandwidth_bps: None,
                processing_ms: 0.0,
                handshake_ms: 0.0,
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
            buffers: SMALL_BUFFERS,
            domain: None,
        })
}

/// Buffer limits low enough that a flooding peer or a long partition
/// reaches them within a minute of simulated time.
const SMALL_BUFFERS: BufferLimits = BufferLimits { window_bytes: 16 * 1024, queue_bytes_per_peer: 32 * 1024 };

/// The most a node's transport may hold for one peer: its queue and its
/// window, each of which always takes one message however large.
fn per_peer_bound(body_bytes: usize) -> usize {
    let one_message = body_bytes + 1024;
    SMALL_BUFFERS.window_bytes + SMALL_BUFFERS.queue_bytes_per_peer + 2 * one_message
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
        let body_bytes = scenario.workload.body_bytes;
        let results = Simulation::new(scenario).run(|_| {});
        prop_assert!(results.violations.is_empty(), "seed {seed}: {:?}", results.violations);
        prop_assert_eq!(results.unicast.lost, 0, "seed {}", seed);
        prop_assert_eq!(results.unicast.duplicates, 0, "seed {}", seed);
        prop_assert_eq!(results.unicast.delivered_after_expiry, 0, "seed {}", seed);
        prop_assert_eq!(results.pubsub.duplicates, 0, "seed {}", seed);
        prop_assert_eq!(results.pubsub.delivered_after_expiry, 0, "seed {}", seed);
        let per_peer = per_peer_bound(body_bytes);
        let peers = results.nodes as usize - 1;
        for (node, peak) in results.per_node.peak_buffered_bytes.iter().enumerate() {
            prop_assert!((*peak as usize) <= per_peer * peers, "seed {seed}: node {node} buffered {peak}");
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

/// The buffer bound above is one a node really reaches: a flooder whose
/// peers are cut off fills their queues up to the limit and no further.
#[test]
fn a_flooder_cut_off_from_its_peers_fills_their_queues_to_the_limit() {
    let mut scenario = small(11);
    scenario.nodes = 4;
    scenario.buffers = SMALL_BUFFERS;
    scenario.workload.ttl_ms = 60_000;
    scenario.faults = vec![
        Fault { at_s: 1.0, kind: FaultKind::Adversary { nodes: 1, behaviour: Behaviour::Flood } },
        Fault { at_s: 2.0, kind: FaultKind::Partition { fraction: 0.5, heal_after_s: Some(15.0) } },
    ];
    let results = Simulation::new(scenario).run(|_| {});
    let peak = results.per_node.peak_buffered_bytes.iter().copied().max().unwrap_or(0) as usize;
    let bound = per_peer_bound(results_body_bytes()) * 3;
    assert!(peak <= bound, "peak {peak} over the bound {bound}");
    assert!(
        peak >= SMALL_BUFFERS.queue_bytes_per_peer,
        "the flooder filled at least one peer's queue: peak {peak}, {:?}",
        results.per_node.peak_buffered_bytes
    );
}

fn results_body_bytes() -> usize {
    Workload::default().body_bytes
}

/// The points of every polyline in an SVG, in SVG coordinates.
fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline")
        .skip(1)
        .map(|rest| {
            let points = rest.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
            points
                .split_whitespace()
                .filter_map(|pair| {
                    let (x, y) = pair.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect()
        })
        .collect()
}

/// The height of a line's highest point above the x axis (at y = 370).
fn peak(line: &[(f64, f64)]) -> f64 {
    line.iter().map(|(_, y)| 370.0 - y).fold(0.0, f64::max)
}

/// Whether a line goes up somewhere (SVG's y grows downwards).
fn rises(line: &[(f64, f64)]) -> bool {
    line.windows(2).any(|w| w[1].1 < w[0].1)
}
