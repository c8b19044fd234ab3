//! `netmachine devnet`: N nodes on loopback, every one a permanent peer of
//! every other, with a small workload (each node greets the next one every
//! second; node-0 publishes a topic the others subscribe to), and a live
//! table of what they do. Each node serves its control API, so the other
//! subcommands work against it with `--control`. With `--domains K`,
//! node k owns domain k and every node joins two overlapping domains; the
//! table shows each node's domains with their view sizes.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::domains::PolicySpec;
use netmachine_adapters::runtime::{EngineHandle, Inbound};
use netmachine_domain::{
    DestinationIdentity, DomainIdentity, EngineIdentity, EngineName, ProtocolId, TopicIdentity, TransportAddress,
    TransportProtocol,
};
use thiserror::Error;

use crate::cli::DevnetProtocol;
use crate::config::{BindAddressText, Config, ListenEntry};
use crate::host::{Host, HostError};

#[derive(Debug, Error)]
pub enum DevnetError {
    #[error("cannot make the devnet directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("node-{index}: {source}")]
    Host { index: usize, source: HostError },
    #[error(transparent)]
    Node(#[from] netmachine_adapters::runtime::NodeError),
    #[error(transparent)]
    Key(#[from] netmachine_adapters::crypto::KeyError),
    #[error("cannot listen for stop signals: {0}")]
    Signal(String),
    #[error("domain {index}: {source}")]
    Domain { index: usize, source: netmachine_adapters::domains::DomainError },
}

/// What the workload has seen on one node.
#[derive(Debug, Default)]
struct Seen {
    greetings: AtomicU64,
    events: AtomicU64,
}

fn protocol() -> ProtocolId {
    ProtocolId::new("netmachine/devnet", 1).unwrap_or_else(|_| unreachable!("a valid constant protocol"))
}

/// Whether node `node` is in domain `domain` of `domains`: domain k is
/// owned by node k, and node i is in domains i mod K and i + 1 mod K, so
/// that every node is in two domains (one, when K is 1) and they overlap.
fn in_domain(node: usize, domain: usize, domains: usize) -> bool {
    node == domain || node % domains == domain || (node + 1) % domains == domain
}

pub async fn run(
    nodes: u16,
    domains: u16,
    protocol_choice: DevnetProtocol,
    duration: Option<u64>,
    dir: Option<PathBuf>,
    json: bool,
) -> Result<(), DevnetError> {
    let (dir, temporary) = match dir {
        Some(dir) => (dir, false),
        None => (std::env::temp_dir().join(format!("netmachine-devnet-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&dir).map_err(|source| DevnetError::Dir { path: dir.clone(), source })?;
    let transport = match protocol_choice {
        DevnetProtocol::Quic => TransportProtocol::Quic,
        DevnetProtocol::TlsTcp => TransportProtocol::TlsTcp,
    };
    let scheme = transport.scheme();
    // Listening before any node starts: a stop signal sent once the table
    // shows stops the devnet cleanly, and removes its temporary folder.
    let mut stop = crate::signals::StopSignals::listen().map_err(|e| DevnetError::Signal(e.to_string()))?;

    let mut hosts = Vec::new();
    for index in 0..usize::from(nodes) {
        // Port 0: the system picks a free port, which the advert carries.
        let address = BindAddressText(TransportAddress::new(transport, SocketAddr::from(([127, 0, 0, 1], 0))));
        let config = Config {
            name: Some(format!("node-{index}")),
            listen: vec![ListenEntry { address, weight: 100, advertise: None }],
            control_socket: Some(dir.join(format!("node-{index}.sock"))),
            // Port 0: the system picks a free one, printed below.
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Config::default()
        };
        let host = Host::start(&config, Ed25519Keys::generate()?, None)
            .await
            .map_err(|source| DevnetError::Host { index, source })?;
        hosts.push(host);
    }
    // Every node knows every other's advert and keeps it connected.
    for a in &hosts {
        for b in &hosts {
            let (a, b) = (&a.networked.node, &b.networked.node);
            if a.identity() != b.identity() {
                if let Some(advert) = b.advert() {
                    a.add_permanent_peer(advert).await?;
                }
            }
        }
    }

    // Node k creates domain k; the others join the domains they are in.
    let domains = usize::from(domains).min(hosts.len());
    let mut adverts = Vec::new();
    for (index, host) in hosts.iter().enumerate().take(domains) {
        let ttl = netmachine_domain::membership::DEFAULT_CERT_TTL_S;
        let (advert, _) = host
            .domains
            .create(PolicySpec::Open, ttl, false)
            .await
            .map_err(|source| DevnetError::Domain { index, source })?;
        adverts.push(advert);
    }
    for (index, host) in hosts.iter().enumerate() {
        for (d, advert) in adverts.iter().enumerate() {
            if index != d && in_domain(index, d, domains) {
                let owner = Some(hosts[d].networked.node.identity());
                host.domains
                    .join(advert.clone(), None, owner)
                    .await
                    .map_err(|source| DevnetError::Domain { index: d, source })?;
            }
        }
    }

    let seen: Vec<Arc<Seen>> = hosts.iter().map(|_| Arc::new(Seen::default())).collect();
    let mut tasks = Vec::new();
    let identities: Vec<_> = hosts.iter().map(|h| h.networked.node.identity()).collect();
    for (index, host) in hosts.iter().enumerate() {
        let chat = host.networked.node.register_engine("chat")?;
        let next = identities[(index + 1) % identities.len()];
        tasks.push(tokio::spawn(greet(chat, next, index, Arc::clone(&seen[index]))));
    }
    let publisher = hosts[0].networked.node.register_engine("news")?;
    let topic = publisher.create_topic(&["devnet"]).await?;
    for (index, host) in hosts.iter().enumerate().skip(1) {
        let reader = host.networked.node.register_engine("reader")?;
        tasks.push(tokio::spawn(read_events(reader, topic, Arc::clone(&seen[index]))));
    }
    tasks.push(tokio::spawn(publish_ticks(publisher, topic)));

    let domain_ids: Vec<DomainIdentity> = adverts.iter().map(|a| a.id).collect();
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal() && !json;
    if !json {
        println!("devnet: {nodes} nodes over {scheme} on loopback; control sockets in {}", dir.display());
        // The binary's own path, so the hint works as printed under
        // `cargo run` too, where `netmachine` is not on the PATH.
        let me = std::env::current_exe().map_or_else(|_| "netmachine".to_string(), |p| p.display().to_string());
        let node0 = dir.join("node-0.sock");
        println!("try, from another terminal:");
        println!("  {me} --control {} peers", node0.display());
        println!("  {me} --control {} send {} hello", node0.display(), identities[1]);
        println!("  {me} --control {} inbox", dir.join("node-1.sock").display());
        if let Some(advert) = adverts.first() {
            println!("  {me} --control {} domain view {}", node0.display(), advert.id);
            println!("  {me} --control {} domain request {} echo hi", dir.join("node-1.sock").display(), advert.id);
        }
        if let Some(metrics) = hosts[0].metrics_address {
            println!("  curl http://{metrics}/metrics");
        }
    }
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            result = stop.recv() => {
                result.map_err(|e| DevnetError::Signal(e.to_string()))?;
                break;
            }
            _ = interval.tick() => {
                show(&hosts, &domain_ids, &seen, started.elapsed(), scheme, terminal, json);
                if duration.is_some_and(|d| started.elapsed() >= Duration::from_secs(d)) {
                    break;
                }
            }
        }
    }
    for task in tasks {
        task.abort();
    }
    for host in hosts {
        host.shutdown().await;
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn greet(mut chat: EngineHandle, next: netmachine_domain::NodeIdentity, index: usize, seen: Arc<Seen>) {
    let Ok(name) = EngineName::new("chat") else { return };
    let to = DestinationIdentity::Engine(EngineIdentity::new(next, name));
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                n += 1;
                let body = format!("hello #{n} from node-{index}");
                if let Err(err) = chat.send(to.clone(), protocol(), body.into_bytes()).await {
                    tracing::warn!(%err, "greeting not sent");
                }
            }
            inbound = chat.recv() => match inbound {
                Some(Inbound::Message(_)) => { seen.greetings.fetch_add(1, Ordering::Relaxed); }
                Some(_) => {}
                None => return,
            },
        }
    }
}

async fn read_events(reader: EngineHandle, topic: TopicIdentity, seen: Arc<Seen>) {
    let mut reader = reader;
    // The topic's advert reaches this node once the connection is up.
    for _ in 0..600 {
        if reader.subscribe(&topic).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(inbound) = reader.recv().await {
        if let Inbound::Message(_) = inbound {
            seen.events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn publish_ticks(mut publisher: EngineHandle, topic: TopicIdentity) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        interval.tick().await;
        n += 1;
        if let Err(err) = publisher.publish(topic, protocol(), format!("tick {n}").into_bytes()).await {
            tracing::warn!(%err, "tick not published");
        }
    }
}

fn show(
    hosts: &[Host],
    domain_ids: &[DomainIdentity],
    seen: &[Arc<Seen>],
    up: Duration,
    scheme: &str,
    terminal: bool,
    json: bool,
) {
    let rows: Vec<serde_json::Value> = hosts
        .iter()
        .zip(seen)
        .enumerate()
        .map(|(index, (host, seen))| {
            let node = &host.networked.node;
            let stats = node.stats();
            // Each domain by its number, with its active and passive views.
            let views: Vec<String> = host
                .domains
                .list()
                .iter()
                .map(|d| {
                    let number =
                        domain_ids.iter().position(|id| *id == d.advert.id).map_or("?".into(), |n| n.to_string());
                    format!("d{number}:{}/{}", d.active.len(), d.passive.len())
                })
                .collect();
            serde_json::json!({
                "domains": views.join(" "),
                "name": format!("node-{index}"),
                "node": node.identity().to_string(),
                "peers": host.networked.transport.connections().len(),
                "sent_remote": stats.sent_remote,
                "received_remote": stats.inbound_delivered,
                "local_delivered": stats.local_delivered,
                "topics": stats.topics,
                "greetings": seen.greetings.load(Ordering::Relaxed),
                "events": seen.events.load(Ordering::Relaxed),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::json!({ "up_s": up.as_secs(), "nodes": rows }));
        return;
    }
    let mut out = String::new();
    if terminal {
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "netmachine devnet: {} nodes over {scheme}, up {} s (Ctrl-C stops)\n",
        hosts.len(),
        up.as_secs()
    ));
    out.push_str(
        "NAME     NODE              PEERS  SENT  RECEIVED  LOCAL  TOPICS  GREETINGS  EVENTS  DOMAINS (active/passive)\n",
    );
    for row in &rows {
        let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
        let num = |k: &str| row[k].as_u64().unwrap_or(0);
        let node: String = text("node").chars().take(16).collect();
        out.push_str(&format!(
            "{:<8} {:<17} {:>5} {:>5} {:>9} {:>6} {:>7} {:>10} {:>7}  {}\n",
            text("name"),
            format!("{node}…"),
            num("peers"),
            num("sent_remote"),
            num("received_remote"),
            num("local_delivered"),
            num("topics"),
            num("greetings"),
            num("events"),
            text("domains"),
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}
