//! The six attacks of a hostile peer, each driven against a real
//! `netmachine run` process (node-0 of a two-node cluster over TLS over
//! TCP; node-1 is its honest, permanent peer), with what it cost the
//! victim, whether an honest newcomer got through during and after it, and
//! whether the attacker was slowed or cut off. `tests/hostile.rs` asserts
//! the budgets on these figures; `netmachine-attacks` prints them (against
//! any binary, for before-and-after tables).

use std::time::{Duration, Instant};

use netmachine_adapters::control::{decode_body, encode_body, ControlRequest, ControlResponse};
use netmachine_domain::{Frame, HandshakeStatus, TransportProtocol};
use tokio::io::AsyncWriteExt;

use crate::cluster::{Cluster, Metrics};
use crate::hostile::{botnet_address, closed_within, Honest, Hostile, Target};

/// What one attack cost, and what it could not take.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub attack: &'static str,
    /// The resource the attack went for, and how much of it the victim
    /// spent (in `unit`).
    pub resource: &'static str,
    pub spent: u64,
    pub unit: &'static str,
    /// An honest newcomer's message acknowledged while the attack ran,
    /// and after it.
    pub honest_during: Result<(), String>,
    pub honest_after: Result<(), String>,
    /// The attacker was slowed (its excess dropped, held back or refused)
    /// or disconnected.
    pub attacker_stopped: bool,
    /// Further figures, for the record.
    pub notes: Vec<(String, u64)>,
}

impl Outcome {
    pub fn note(&self, name: &str) -> u64 {
        self.notes.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }
}

/// The attacks, by name.
pub const ATTACKS: [&str; 6] =
    ["frame-lengths", "advert-flood", "identity-churn", "log-flood", "half-open", "mailbox-flood"];

/// Runs the attack `name`; `limits` writes the `[limits]` the tests use
/// (shorter deadlines, a smaller peer table), which a binary from before
/// those keys would refuse.
pub async fn run(name: &str, limits: bool) -> Option<Outcome> {
    Some(match name {
        "frame-lengths" => frame_lengths(limits).await,
        "advert-flood" => advert_flood(limits).await,
        "identity-churn" => identity_churn(limits).await,
        "log-flood" => log_flood(limits).await,
        "half-open" => half_open(limits).await,
        "mailbox-flood" => mailbox_flood(limits).await,
        _ => return None,
    })
}

async fn victim(limits: &str, with_limits: bool) -> Cluster {
    let limits = if with_limits { format!("[limits]\n{limits}") } else { String::new() };
    Cluster::start_with(2, TransportProtocol::TlsTcp, move |i| if i == 0 { limits.clone() } else { String::new() })
        .await
}

/// One honest newcomer's exchange with node-0.
async fn newcomer(cluster: &Cluster, body: &str) -> Result<(), String> {
    let mut honest = Honest::start(&cluster.nodes[0]).await;
    let result = honest.exchange(&cluster.nodes[0], body).await;
    honest.stop().await;
    result
}

/// How many of `frames` are notices that a message was not delivered.
fn undeliverable(frames: &[Frame]) -> u64 {
    let is_notice = |frame: &Frame| match frame {
        Frame::Node(message) => match &message.payload {
            netmachine_domain::NodePayload::Engine(inner) => inner.protocol.name.as_str() == "netmachine/undeliverable",
            _ => false,
        },
        _ => false,
    };
    frames.iter().filter(|f| is_notice(f)).count() as u64
}

/// A series of a scrape, 0 when absent.
fn series(metrics: &Metrics, name: &str) -> u64 {
    metrics.get(name).unwrap_or(0.0) as u64
}

/// 1. Length prefixes announcing the largest frame, from 240 connections
///    on 8 addresses, each followed by 512 KiB and silence. Guards memory
///    for frames.
async fn frame_lengths(limits: bool) -> Outcome {
    let cluster = victim("frame_deadline_secs = 5\n", limits).await;
    let (baseline, _) = cluster.nodes[0].memory();
    let hostile = Hostile::new();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for n in 0..240 {
        let Ok((reader, mut writer)) = hostile.dial(botnet_address(n % 8), &cluster.nodes[0]).await else { continue };
        // 4 MiB announced; 512 KiB of it sent, in the background.
        let _ = writer.write_all(&(4u32 << 20).to_be_bytes()).await;
        let _ = writer.flush().await;
        readers.push(reader);
        writers.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), writer.write_all(&vec![0u8; 512 * 1024])).await;
            let _ = writer.flush().await;
            writer
        }));
    }
    let connections = readers.len() as u64;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let honest_during = newcomer(&cluster, "during").await;
    let (during, _) = cluster.nodes[0].memory();
    let mut closed = 0;
    for reader in &mut readers {
        if closed_within(reader, 25).await {
            closed += 1;
        }
    }
    drop(writers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after, peak) = cluster.nodes[0].memory();
    let honest_after = newcomer(&cluster, "after").await;
    Outcome {
        attack: "frame-lengths",
        resource: "RSS growth at the peak (frame memory)",
        spent: peak.saturating_sub(baseline),
        unit: "bytes",
        honest_during,
        honest_after,
        attacker_stopped: closed == connections,
        notes: vec![
            ("connections".into(), connections),
            ("closed".into(), closed),
            ("rss_baseline".into(), baseline),
            ("rss_during".into(), during),
            ("rss_after".into(), after),
        ],
    }
}

/// 2. Valid, maximal topic adverts from one authenticated peer, as fast as
///    it can send them, for up to 20 s. Guards records, disk and the
///    spread to other peers.
async fn advert_flood(limits: bool) -> Outcome {
    let cluster = victim("", limits).await;
    let (baseline, _) = cluster.nodes[0].memory();
    let store_before = cluster.nodes[0].store_bytes();
    let records_before = series(&cluster.scrape(0).await, "netmachine_identity_records{}");
    let hostile = Hostile::new();
    let (mut session, status) = hostile.connect(botnet_address(0), &cluster.nodes[0]).await.expect("connects");
    assert_eq!(status, HandshakeStatus::Ok);
    let publishers = [cluster.nodes[0].identity, cluster.nodes[1].identity];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut cut_off = false;
    let mut honest_during = Err("not tried".to_string());
    while started.elapsed() < Duration::from_secs(20) {
        for _ in 0..16 {
            session.push(&Frame::TopicAdvert(hostile.maximal_topic_advert(&publishers)));
        }
        if session.flush().await.is_err() {
            cut_off = true;
            break;
        }
        sent += 16;
        if sent == 1024 {
            honest_during = newcomer(&cluster, "during").await;
        }
    }
    let cut_off = cut_off || session.closed_within(10).await;
    if honest_during.is_err() && sent < 1024 {
        honest_during = newcomer(&cluster, "during").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim_metrics = cluster.scrape(0).await;
    let records = series(&victim_metrics, "netmachine_identity_records{}").saturating_sub(records_before);
    let spread = series(&cluster.scrape(1).await, "netmachine_identity_records{}");
    let (after, peak) = cluster.nodes[0].memory();
    let honest_after = newcomer(&cluster, "after").await;
    Outcome {
        attack: "advert-flood",
        resource: "identity store on disk",
        spent: cluster.nodes[0].store_bytes().saturating_sub(store_before),
        unit: "bytes",
        honest_during,
        honest_after,
        attacker_stopped: cut_off,
        notes: vec![
            ("adverts_sent".into(), sent),
            ("records_taken".into(), records),
            ("records_at_its_peer".into(), spread),
            ("rss_growth_peak".into(), peak.saturating_sub(baseline)),
            ("rss_after".into(), after),
            (
                "refused_over_rate".into(),
                series(&victim_metrics, "netmachine_budget_actions_total{action=\"advert_over_rate\"}"),
            ),
        ],
    }
}

/// 3. Fresh identities from 8 addresses, each completing a handshake and
///    leaving: 3,040 against a table of 1,024 (with limits), or 67,920
///    against the default 65,536. Guards the peer table.
async fn identity_churn(limits: bool) -> Outcome {
    let cluster = victim("max_peers = 1024\nmax_peers_per_ip = 256\n", limits).await;
    let target = Target::from(&cluster.nodes[0]);
    let churn = move |task: usize, count: usize| async move {
        let victim = target;
        let mut refused = 0u64;
        for _ in 0..count {
            match Hostile::new().connect(botnet_address(task), victim).await {
                Ok((_, HandshakeStatus::Ok)) => {}
                _ => refused += 1,
            }
        }
        refused
    };
    // Enough to fill the table (1024 with limits, else the default
    // 65,536), then more while the newcomer comes.
    let filling = if limits { 190 } else { 8_300 };
    let first: Vec<_> = (0..8).map(|task| tokio::spawn(churn(task, filling))).collect();
    let mut refused = 0;
    for task in first {
        refused += task.await.unwrap_or(0);
    }
    let second: Vec<_> = (0..8).map(|task| tokio::spawn(churn(task, 190))).collect();
    let honest_during = newcomer(&cluster, "during").await;
    for task in second {
        refused += task.await.unwrap_or(0);
    }
    let metrics = cluster.scrape(0).await;
    let table = series(&metrics, "netmachine_peers{class=\"ephemeral\"}")
        + series(&metrics, "netmachine_peers{class=\"permanent\"}");
    let evicted = series(&metrics, "netmachine_budget_actions_total{action=\"peer_evicted\"}");
    let honest_after = newcomer(&cluster, "after").await;
    Outcome {
        attack: "identity-churn",
        resource: "peer table entries",
        spent: table,
        unit: "entries",
        honest_during,
        honest_after,
        attacker_stopped: evicted > 0 || refused > 0,
        notes: vec![
            ("identities".into(), 8 * (filling as u64 + 190)),
            ("refused".into(), refused),
            ("evicted".into(), evicted),
        ],
    }
}

/// 4. Messages to an engine the victim does not have, 20,000 of them: each
///    is dropped, and was once logged. Guards log volume.
async fn log_flood(limits: bool) -> Outcome {
    let cluster = victim("", limits).await;
    let log_before = cluster.nodes[0].log_bytes();
    let hostile = Hostile::new();
    let (mut session, status) = hostile.connect(botnet_address(0), &cluster.nodes[0]).await.expect("connects");
    assert_eq!(status, HandshakeStatus::Ok);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut honest_during = Err("not tried".to_string());
    for batch in 0..40u64 {
        for n in 0..500 {
            session.push(&Frame::Node(hostile.message_to(cluster.nodes[0].identity, "nosuch", batch * 500 + n, b"x")));
        }
        if session.flush().await.is_err() {
            break;
        }
        sent += 500;
        // The victim's answers (acknowledgements, drop notices) are read
        // now and then, as a peer must to be heard.
        let _ = session.drain_for(5).await;
        if batch == 20 {
            honest_during = newcomer(&cluster, "during").await;
        }
    }
    let _ = session.drain_for(2000).await;
    let seconds = started.elapsed().as_secs().max(1);
    // The summaries of the window come when it ends.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let honest_after = newcomer(&cluster, "after").await;
    let log = cluster.log_of(0);
    let summarised = log.contains(&format!("peer {}:", hostile.identity));
    let held_back = series(&cluster.scrape(0).await, "netmachine_budget_actions_total{action=\"log_line_held_back\"}");
    Outcome {
        attack: "log-flood",
        resource: "log written at the default level",
        spent: cluster.nodes[0].log_bytes().saturating_sub(log_before),
        unit: "bytes",
        honest_during,
        honest_after,
        attacker_stopped: summarised,
        notes: vec![("messages_sent".into(), sent), ("seconds".into(), seconds), ("lines_held_back".into(), held_back)],
    }
}

/// 5. 200 TCP connections from 4 addresses that never start TLS, then a
///    connection that sends its Hello and half a frame and falls silent.
///    Guards pending handshakes and connection slots.
async fn half_open(limits: bool) -> Outcome {
    let cluster = victim("frame_deadline_secs = 5\n", limits).await;
    let victim_address = cluster.nodes[0].address;
    let opened = tokio::time::Instant::now();
    let mut silent = Vec::new();
    for n in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if socket.bind(std::net::SocketAddr::new(botnet_address(n % 4), 0)).is_err() {
            continue;
        }
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(victim_address)).await {
            silent.push(stream);
        }
    }
    let started = Instant::now();
    let honest_during = newcomer(&cluster, "during").await;
    let newcomer_ms = started.elapsed().as_millis() as u64;
    // A truncated frame after the handshake, then silence.
    let hostile = Hostile::new();
    let (mut session, _) = hostile.connect(botnet_address(10), &cluster.nodes[0]).await.expect("connects");
    session.writer.write_all(&[0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7]).await.expect("writes");
    session.writer.flush().await.expect("flushes");
    let truncated_closed = session.closed_within(25).await;
    // A silent socket has 10 s to finish TLS (if its address was not
    // refused at once); each is looked at after that.
    tokio::time::sleep_until(opened + Duration::from_secs(12)).await;
    let mut silent_closed = 0u64;
    for stream in silent.iter_mut() {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            silent_closed += 1;
        }
    }
    let metrics = cluster.scrape(0).await;
    let honest_after = newcomer(&cluster, "after").await;
    Outcome {
        attack: "half-open",
        resource: "time for an honest newcomer's first message",
        spent: newcomer_ms,
        unit: "ms",
        honest_during,
        honest_after,
        attacker_stopped: truncated_closed && silent_closed == silent.len() as u64,
        notes: vec![
            ("silent_sockets".into(), silent.len() as u64),
            ("silent_closed".into(), silent_closed),
            ("truncated_frame_closed".into(), u64::from(truncated_closed)),
            (
                "refused_address_busy".into(),
                series(
                    &metrics,
                    "netmachine_handshake_failures_total{side=\"inbound\",reason=\"too_many_pending_from_address\"}",
                ),
            ),
        ],
    }
}

/// 6. 10,000 messages to the victim's `inbox` from one peer while no client
///    reads it, between an honest peer's messages. Guards mailbox space.
async fn mailbox_flood(limits: bool) -> Outcome {
    let cluster = victim("", limits).await;
    let inbox0 = format!("inbox@{}", cluster.nodes[0].identity);
    let honest_send = |n: u32| ControlRequest::Send {
        to: inbox0.clone(),
        body: encode_body(format!("honest {n}").as_bytes()),
        ttl_ms: None,
        sign: false,
        wait: false,
    };
    for n in 0..10 {
        cluster.call(1, honest_send(n)).await;
    }
    let hostile = Hostile::new();
    let (mut session, status) = hostile.connect(botnet_address(0), &cluster.nodes[0]).await.expect("connects");
    assert_eq!(status, HandshakeStatus::Ok);
    let mut honest_during = Err("not tried".to_string());
    let mut notices = 0;
    for batch in 0..20u64 {
        for n in 0..500 {
            session.push(&Frame::Node(hostile.message_to(
                cluster.nodes[0].identity,
                "inbox",
                batch * 500 + n,
                b"flood",
            )));
        }
        if session.flush().await.is_err() {
            break;
        }
        notices += undeliverable(&session.drain_for(5).await);
        if batch == 10 {
            honest_during = newcomer(&cluster, "during").await;
        }
    }
    for n in 10..20 {
        cluster.call(1, honest_send(n)).await;
    }
    notices += undeliverable(&session.drain_for(3000).await);
    // What waits in the inbox, read by a client now.
    let mut client = cluster.open_stream(0, ControlRequest::Inbox).await.expect("inbox");
    let mut honest_kept = 0u64;
    let mut flood_kept = 0u64;
    while let Ok(Ok(ControlResponse::Message(m))) = tokio::time::timeout(Duration::from_secs(2), client.next()).await {
        let body = decode_body(&m.body).unwrap_or_default();
        if body.starts_with(b"honest") {
            honest_kept += 1;
        } else if body == b"flood" {
            flood_kept += 1;
        }
    }
    let metrics = cluster.scrape(0).await;
    let dropped = series(&metrics, "netmachine_drops_total{reason=\"mailbox_full\"}");
    let honest_after = newcomer(&cluster, "after").await;
    Outcome {
        attack: "mailbox-flood",
        resource: "honest messages lost from the inbox",
        spent: 20u64.saturating_sub(honest_kept),
        unit: "of 20",
        honest_during,
        honest_after,
        attacker_stopped: dropped > 0,
        notes: vec![
            ("flood_kept".into(), flood_kept),
            ("flood_dropped".into(), dropped),
            ("notices_to_the_attacker".into(), notices),
        ],
    }
}
