//! `netmachine-sim`: run a scenario, or compare two runs.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netmachine_harness::sim::metrics::Results;
use netmachine_harness::sim::plot::{line_chart, Series};
use netmachine_harness::sim::scenario::Scenario;
use netmachine_harness::sim::Simulation;

/// The netmachine simulator: real engines, virtual time, simulated links.
#[derive(Debug, Parser)]
#[command(name = "netmachine-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a scenario and writes results.json and plots to --out.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Writes one line per event to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Puts two runs' results side by side.
    Compare { a: PathBuf, b: PathBuf },
    /// Measures message delivery latency through three real `netmachine`
    /// processes on loopback, and in the simulator with a link of the given
    /// one-way latency, and prints both.
    Calibrate {
        /// Messages to time in each setting.
        #[arg(long, default_value_t = 300)]
        messages: u32,
        /// The simulated link's one-way latency in microseconds (measured
        /// raw QUIC loopback: half the round trip of the transport bench).
        #[arg(long, default_value_t = 40.0)]
        link_us: f64,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { scenario, out, seed, trace } => run(&scenario, &out, seed, trace.as_deref()),
        Command::Compare { a, b } => compare(&a, &b),
        Command::Calibrate { messages, link_us } => calibrate(messages, link_us),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("netmachine-sim: {message}");
    ExitCode::FAILURE
}

fn run(path: &Path, out: &Path, seed: Option<u64>, trace: Option<&Path>) -> ExitCode {
    let mut scenario = match Scenario::load(path) {
        Ok(s) => s,
        Err(err) => return fail(err),
    };
    let seed_override = seed;
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    let seed = scenario.seed;
    if let Err(err) = std::fs::create_dir_all(out) {
        return fail(format!("cannot create {}: {err}", out.display()));
    }
    if let Some(domain) = scenario.domain.as_mut() {
        if let Some(seed) = seed_override {
            domain.seeds = vec![seed];
        }
        return run_domain(&scenario, out);
    }
    let mut sim = Simulation::new(scenario.clone());
    if let Some(trace) = trace {
        match std::fs::File::create(trace) {
            Ok(file) => sim = sim.with_trace(Box::new(std::io::BufWriter::new(file))),
            Err(err) => return fail(format!("cannot create {}: {err}", trace.display())),
        }
    }
    let terminal = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let results = sim.run(|done| {
        let width = 40;
        let filled = (done * f64::from(width)) as usize;
        let line = format!(
            "[{}{}] {:>3.0}%  {:.0} s simulated  {:.1} s wall",
            "#".repeat(filled),
            " ".repeat(width as usize - filled.min(width as usize)),
            done * 100.0,
            done * scenario.duration_s,
            started.elapsed().as_secs_f64()
        );
        if terminal {
            eprint!("\r{line}");
        } else if ((done * 100.0) as u64).is_multiple_of(10) {
            eprintln!("{line}");
        }
    });
    if terminal {
        eprintln!();
    }
    if let Err(err) = write_outputs(out, &results) {
        return fail(format!("cannot write results to {}: {err}", out.display()));
    }
    print_summary(&results);
    if results.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        for v in &results.violations {
            eprintln!("violation: {v}");
        }
        eprintln!(
            "seed {seed}; replay with: netmachine-sim run {} --out {} --seed {seed} --trace trace.txt",
            path.display(),
            out.display()
        );
        ExitCode::FAILURE
    }
}

/// Runs a domain scenario's matrix and writes its table and plots.
fn run_domain(scenario: &Scenario, out: &Path) -> ExitCode {
    use netmachine_harness::sim::domain_runs::{run_matrix, table_header, table_row, write_plots};
    let broadcasts = scenario.domain.as_ref().map(|d| d.broadcasts_after_s.clone()).unwrap_or_default();
    let header = table_header(&broadcasts);
    println!("{header}");
    let rows = run_matrix(scenario, |row| println!("{}", table_row(row)));
    let table: Vec<String> = std::iter::once(header).chain(rows.iter().map(table_row)).collect();
    let written = serde_json::to_string_pretty(&rows)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(out.join("domain-results.json"), json))
        .and_then(|()| std::fs::write(out.join("summary.md"), table.join("\n") + "\n"))
        .and_then(|()| write_plots(out, &rows));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(format!("cannot write results to {}: {err}", out.display())),
    }
}

fn print_summary(r: &Results) {
    println!(
        "scenario {} (seed {}): {} nodes, {} s simulated in {:.1} s",
        r.scenario, r.seed, r.nodes, r.simulated_s, r.wall_s
    );
    println!("events {} ({:.0}/s), trace hash {}", r.events, r.events_per_wall_s, r.trace_hash);
    for (kind, m) in [("unicast", &r.unicast), ("pubsub", &r.pubsub)] {
        if m.expected == 0 {
            continue;
        }
        println!(
            "{kind}: delivered {}/{} ({:.4}), told {}, lost {}, excused {}, duplicates {}, latency p50 {:.1} ms p99 {:.1} ms",
            m.delivered, m.expected, m.delivery_ratio, m.told_undeliverable, m.lost, m.excused, m.duplicates, m.latency.p50_ms, m.latency.p99_ms
        );
    }
    println!(
        "connections: {} made, {} failed, {} lost; {} messages rejected; peak RSS per node {} bytes; at most {} unicast records open",
        r.connects, r.connect_failures, r.disconnects, r.rejected, r.peak_rss_bytes_per_node, r.peak_open_records
    );
}

fn write_outputs(out: &Path, r: &Results) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(out.join("results.json"), json)?;
    let cdf = line_chart(
        "Delivery latency CDF",
        "latency (ms)",
        "fraction delivered",
        &[
            Series { name: "unicast", points: r.unicast.latency_cdf.clone() },
            Series { name: "pub/sub", points: r.pubsub.latency_cdf.clone() },
        ],
        false,
    );
    std::fs::write(out.join("latency_cdf.svg"), cdf)?;
    let sorted = |v: &Vec<u64>| {
        let mut v = v.clone();
        v.sort_unstable();
        v.iter().enumerate().map(|(i, x)| (i as f64, *x as f64)).collect::<Vec<_>>()
    };
    let load = line_chart(
        "Load per node (nodes sorted by load)",
        "node rank",
        "messages",
        &[
            Series { name: "messages sent", points: sorted(&r.per_node.messages_sent) },
            Series { name: "messages received", points: sorted(&r.per_node.messages_received) },
        ],
        false,
    );
    std::fs::write(out.join("load_messages.svg"), load)?;
    let bytes = line_chart(
        "Bytes per node (nodes sorted by load)",
        "node rank",
        "bytes",
        &[
            Series { name: "bytes sent", points: sorted(&r.per_node.bytes_sent) },
            Series { name: "bytes received", points: sorted(&r.per_node.bytes_received) },
        ],
        false,
    );
    std::fs::write(out.join("load_bytes.svg"), bytes)?;
    let max_degree = r.per_node.in_degree.iter().copied().max().unwrap_or(0);
    let mut histogram = vec![0u64; max_degree as usize + 2];
    for d in &r.per_node.in_degree {
        histogram[*d as usize] += 1;
    }
    let hist_points = histogram.iter().enumerate().map(|(d, n)| (d as f64, *n as f64)).collect();
    std::fs::write(
        out.join("in_degree.svg"),
        line_chart(
            "In-degree at the end",
            "inbound connections",
            "nodes",
            &[Series { name: "nodes", points: hist_points }],
            true,
        ),
    )?;
    let per_second = |v: &Vec<u64>| v.iter().enumerate().map(|(s, x)| (s as f64, *x as f64)).collect::<Vec<_>>();
    std::fs::write(
        out.join("timeseries.svg"),
        line_chart(
            "Per second",
            "simulated time (s)",
            "count",
            &[
                Series { name: "unicast sent", points: per_second(&r.series.sent) },
                Series { name: "unicast delivered", points: per_second(&r.series.delivered) },
                Series { name: "open connections", points: per_second(&r.series.open_connections) },
                Series { name: "connects", points: per_second(&r.series.connects) },
                Series { name: "disconnects", points: per_second(&r.series.disconnects) },
                Series { name: "rejected", points: per_second(&r.series.rejected) },
            ],
            false,
        ),
    )?;
    std::fs::write(
        out.join("duplicates.svg"),
        line_chart(
            "Repeats and duplicates",
            "kind (0 unicast, 1 pub/sub)",
            "messages",
            &[
                Series {
                    name: "repeats dropped by the filter",
                    points: vec![(0.0, r.unicast.repeats_dropped as f64), (1.0, r.pubsub.repeats_dropped as f64)],
                },
                Series {
                    name: "duplicates delivered",
                    points: vec![(0.0, r.unicast.duplicates as f64), (1.0, r.pubsub.duplicates as f64)],
                },
            ],
            true,
        ),
    )?;
    Ok(())
}

fn load_results(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a results file: {e}", path.display()))
}

fn compare(a: &Path, b: &Path) -> ExitCode {
    let (ra, rb) = match (load_results(a), load_results(b)) {
        (Ok(ra), Ok(rb)) => (ra, rb),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let rows: Vec<(&str, f64, f64)> = vec![
        ("nodes", f64::from(ra.nodes), f64::from(rb.nodes)),
        ("simulated s", ra.simulated_s, rb.simulated_s),
        ("events", ra.events as f64, rb.events as f64),
        ("events per wall s", ra.events_per_wall_s, rb.events_per_wall_s),
        ("unicast delivery ratio", ra.unicast.delivery_ratio, rb.unicast.delivery_ratio),
        ("unicast latency p50 ms", ra.unicast.latency.p50_ms, rb.unicast.latency.p50_ms),
        ("unicast latency p99 ms", ra.unicast.latency.p99_ms, rb.unicast.latency.p99_ms),
        ("unicast told undeliverable", ra.unicast.told_undeliverable as f64, rb.unicast.told_undeliverable as f64),
        ("unicast lost", ra.unicast.lost as f64, rb.unicast.lost as f64),
        ("unicast duplicates", ra.unicast.duplicates as f64, rb.unicast.duplicates as f64),
        ("pubsub delivery ratio", ra.pubsub.delivery_ratio, rb.pubsub.delivery_ratio),
        ("pubsub latency p50 ms", ra.pubsub.latency.p50_ms, rb.pubsub.latency.p50_ms),
        ("connects", ra.connects as f64, rb.connects as f64),
        ("disconnects", ra.disconnects as f64, rb.disconnects as f64),
        ("rejected", ra.rejected as f64, rb.rejected as f64),
        ("peak RSS per node", ra.peak_rss_bytes_per_node as f64, rb.peak_rss_bytes_per_node as f64),
    ];
    let mut out = std::io::stdout().lock();
    let _ =
        writeln!(out, "| metric | {} (seed {}) | {} (seed {}) | b / a |", ra.scenario, ra.seed, rb.scenario, rb.seed);
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (name, x, y) in rows {
        let ratio = if x == 0.0 { "-".to_string() } else { format!("{:.3}", y / x) };
        let _ = writeln!(out, "| {name} | {} | {} | {ratio} |", fmt(x), fmt(y));
    }
    ExitCode::SUCCESS
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn calibrate(messages: u32, link_us: f64) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(err) => return fail(err),
    };
    let (remote, local) = runtime.block_on(calibration::measure_cluster(messages));
    let real_setup = runtime.block_on(calibration::measure_setup());
    let (sim, _) = calibration::simulate(messages, link_us, 0.0, 0.0);
    let processing_us = ((remote.0 - local.0) * 1000.0 - link_us).max(0.0);
    let (fitted, fitted_setup) = calibration::simulate(messages, link_us, processing_us, 0.0);
    // What the real setup takes beyond the crossings the simulator counts:
    // the handshakes' cryptography, fitted as the link's handshake_ms. The
    // first message rides behind the hello: it arrives as the reply leaves,
    // one crossing before the dialler has a usable connection.
    let delivery_after_setup_ms = (processing_us - link_us) / 1000.0;
    let handshake_us = ((real_setup - fitted_setup - delivery_after_setup_ms) * 1000.0).max(0.0);
    let (_, handshake_setup) = calibration::simulate(messages, link_us, processing_us, handshake_us);
    println!("message delivery latency, {messages} messages sent one at a time, p50 / p90 (ms)");
    println!();
    println!("| setting | p50 | p90 |");
    println!("|---|---:|---:|");
    println!(
        "| real: 3 processes, QUIC loopback, control API to another node's inbox | {:.3} | {:.3} |",
        remote.0, remote.1
    );
    println!(
        "| real: the same path to the node's own inbox (control API overhead) | {:.3} | {:.3} |",
        local.0, local.1
    );
    println!("| real: difference (the network part) | {:.3} | {:.3} |", remote.0 - local.0, remote.1 - local.1);
    println!("| simulated: 3 nodes, {link_us:.0} us one-way links | {:.3} | {:.3} |", sim.0, sim.1);
    println!(
        "| simulated: the same with processing_ms = {:.3} (fitted to the real p50) | {:.3} | {:.3} |",
        processing_us / 1000.0,
        fitted.0,
        fitted.1
    );
    println!();
    println!("connection setup, p50 (ms)");
    println!();
    println!("| setting | p50 |");
    println!("|---|---:|");
    println!(
        "| real: first message to a peer never connected until it is delivered (QUIC and TLS handshakes, hello, delivery; 2 nodes in one process, loopback) | {:.3} |",
        real_setup
    );
    println!(
        "| simulated: dial until the connection is usable (secured stream, hello and reply), less the reply's link (the message rides behind the hello), plus the processing, with the fitted processing_ms | {:.3} |",
        fitted_setup + delivery_after_setup_ms
    );
    println!(
        "| simulated: the same with handshake_ms = {:.3} (fitted to the real p50) | {:.3} |",
        handshake_us / 1000.0,
        handshake_setup + delivery_after_setup_ms
    );
    ExitCode::SUCCESS
}

mod calibration {
    use std::time::{Duration, Instant};

    use netmachine_adapters::control::{encode_body, ControlRequest, ControlResponse};
    use netmachine_domain::TransportProtocol;
    use netmachine_harness::cluster::Cluster;
    use netmachine_harness::sim::model::{Latency, LinkModel};
    use netmachine_harness::sim::scenario::{Scenario, Workload};
    use netmachine_harness::sim::Simulation;

    fn p(sorted: &[f64], q: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    async fn time_deliveries(cluster: &Cluster, from: usize, to: usize, n: u32) -> (f64, f64) {
        let mut inbox = cluster.open_stream(to, ControlRequest::Inbox).await.expect("inbox");
        let dst = format!("inbox@{}", cluster.nodes[to].identity);
        let mut times = Vec::new();
        for i in 0..n + 20 {
            let request = ControlRequest::Send {
                to: dst.clone(),
                body: encode_body(b"calibrate"),
                ttl_ms: None,
                sign: false,
                wait: false,
            };
            let start = Instant::now();
            let sent = cluster.call(from, request).await;
            assert!(matches!(sent, ControlResponse::Sent { .. }), "{sent:?}");
            let got = tokio::time::timeout(Duration::from_secs(30), inbox.next()).await;
            assert!(matches!(got, Ok(Ok(ControlResponse::Message(_)))), "{got:?}");
            if i >= 20 {
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        (p(&times, 0.5), p(&times, 0.9))
    }

    /// (to another node, to the same node), each (p50, p90) in ms.
    pub async fn measure_cluster(n: u32) -> ((f64, f64), (f64, f64)) {
        let cluster = Cluster::start(3, TransportProtocol::Quic).await;
        cluster.wait_until(0, 30, "connected", |_, peers| peers.iter().filter(|p| p.connected).count() == 2).await;
        let remote = time_deliveries(&cluster, 0, 1, n).await;
        let local = time_deliveries(&cluster, 1, 1, n).await;
        (remote, local)
    }

    /// Time from the first message to a peer this node never connected to
    /// until the peer's engine has it, p50 of 20, in ms.
    pub async fn measure_setup() -> f64 {
        use netmachine_adapters::crypto::Ed25519Keys;
        use netmachine_adapters::networked::{NetworkedNode, NetworkedNodeConfig};
        use netmachine_adapters::runtime::Inbound;
        use netmachine_domain::{
            DestinationIdentity, EngineIdentity, EngineName, ProtocolId, TransportAddress, WeightedAddress,
        };
        let node = || async {
            let keys = Ed25519Keys::generate().expect("keys");
            let address = TransportAddress::new(TransportProtocol::Quic, ([127, 0, 0, 1], 0).into());
            NetworkedNode::start(NetworkedNodeConfig::new(keys, vec![WeightedAddress { address, weight: 1 }]))
                .await
                .expect("node")
        };
        let mut times = Vec::new();
        for _ in 0..20 {
            let (a, b) = (node().await, node().await);
            a.node.offer_node_advert(b.node.advert().expect("advert")).await.expect("advert");
            let mut tx = a.node.register_engine("setup-tx").expect("engine");
            let mut rx = b.node.register_engine("setup-rx").expect("engine");
            let to = EngineName::new("setup-rx").expect("valid");
            let dst = DestinationIdentity::Engine(EngineIdentity::new(b.node.identity(), to));
            let start = Instant::now();
            tx.send(dst, ProtocolId::new("calibrate", 1).expect("valid"), &b"x"[..]).await.expect("sent");
            loop {
                match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                    Ok(Some(Inbound::Message(_))) => break,
                    Ok(Some(_)) => continue,
                    other => panic!("no delivery: {other:?}"),
                }
            }
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            a.shutdown().await;
            b.shutdown().await;
        }
        times.sort_by(f64::total_cmp);
        p(&times, 0.5)
    }

    /// The same traffic in the simulator: node 0 sends to node 1 over
    /// links of `link_us`. Returns (delivery p50, p90) and the p50 of
    /// connection setup, in ms.
    pub fn simulate(n: u32, link_us: f64, processing_us: f64, handshake_us: f64) -> ((f64, f64), f64) {
        let scenario = Scenario {
            name: "calibration".into(),
            description: String::new(),
            seed: 1,
            nodes: 3,
            duration_s: f64::from(n) / 10.0 + 60.0,
            sample_ms: 100,
            link: LinkModel {
                latency: Latency::Constant { ms: link_us / 1000.0 },
                jitter_ms: 0.0,
                loss: 0.0,
                bandwidth_bps: None,
                processing_ms: processing_us / 1000.0,
                handshake_ms: handshake_us / 1000.0,
            },
            workload: Workload { unicast_per_node_per_s: 10.0 / 3.0, quiet_tail_s: 40.0, ..Workload::default() },
            faults: Vec::new(),
            buffers: Default::default(),
            domain: None,
        };
        let results = Simulation::new(scenario).run(|_| {});
        ((results.unicast.latency.p50_ms, results.unicast.latency.p90_ms), results.connection_setup.p50_ms)
    }
}
