//! Transport benchmark: prints tables, asserts nothing.
//!
//! cargo bench -p netmachine-adapters --bench transport
//!
//! First the configurations of raw s2n-quic (one bidirectional stream,
//! no netmachine framing, acknowledgements or signatures) that matter for
//! bulk: the record layer's crypto library (ring, aws-lc-rs), the cipher
//! suite order, flow-control windows and send buffers, and segmentation
//! offload; the fastest is the raw baseline below. Then two nodes on
//! loopback QUIC beside that baseline and beside raw quinn (the same
//! windows and MTU, one stream): (a) bulk, 1 GiB in 1 MiB bodies; (b)
//! 256-byte bodies, channel-authenticated and signed; (c) request-response
//! round trips; (d) connection setup; then one node receiving from 16
//! nodes at once (beside raw s2n-quic doing the same) and sending to 16.
//! Then (a) and (b) over TLS 1.3 over TCP,
//! beside raw tokio-rustls on the same kind of sockets (the same connector,
//! its TLS handshake and identity checks, then raw bytes).
//! NETMACHINE_BENCH_MTU sets QUIC's maximum MTU for all (default 1500).
//! Bulk rows alternate their contenders round by round and report medians
//! and the spread, and (c) pools two alternating runs, because this
//! machine's speed drifts. NETMACHINE_BENCH_ONLY_SMALL=1 runs only (b)
//! channel-authenticated, for profiling; NETMACHINE_BENCH_ONLY_BULK=1 only
//! (a), netmachine alone, three times on the same two nodes (=tls-tcp: over
//! TLS over TCP, then raw tokio-rustls);
//! NETMACHINE_BENCH_ONLY_MANY=1 only receiving from 16, netmachine and raw;
//! NETMACHINE_BENCH_ONLY_SETUP=1 only (d), netmachine and raw, three times.

mod many_peers;
mod quinn_raw;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netmachine_adapters::crypto::{Ed25519Keys, RingVerifier};
use netmachine_adapters::networked::{NetworkedNode, NetworkedNodeConfig};
use netmachine_adapters::runtime::{EngineHandle, Inbound, SendOptions};
use netmachine_adapters::transport::{
    Connector, QuicCongestion, QuicConnector, QuicTuning, RecordCrypto, RecordLayer, SecuredStream, TlsConfigs,
    TlsTcpConnector,
};
use netmachine_domain::*;
use netmachine_engines::ports::{Signer, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub(crate) const MIB: usize = 1024 * 1024;
const BULK_MESSAGES: usize = 1024;
/// Bodies of 1 MiB each of 16 peers sends or receives: 1 GiB in all.
const MANY_PEERS: usize = 16;
const MANY_MESSAGES: usize = 64;
const SMALL: usize = 256;
const SMALL_MESSAGES: usize = 300_000;
const SIGNED_MESSAGES: usize = 30_000;
const RTT_ROUNDS: usize = 3_000;
const SETUP_ROUNDS: usize = 20;
const VERIFY_OPS: usize = 20_000;
const ROUNDS: usize = 3;

fn mtu() -> u16 {
    std::env::var("NETMACHINE_BENCH_MTU").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub(crate) fn proto() -> ProtocolId {
    ProtocolId::new("bench", 1).expect("valid")
}

pub(crate) async fn node(protocol: TransportProtocol) -> NetworkedNode {
    node_with(protocol, RawConfig::product()).await
}

async fn node_with(protocol: TransportProtocol, setup: RawConfig) -> NetworkedNode {
    let keys = Ed25519Keys::generate().expect("keys");
    let address = TransportAddress::new(protocol, loopback());
    let mut config = NetworkedNodeConfig::new(keys, vec![WeightedAddress { address, weight: 1 }]);
    config.quic = setup.tuning;
    config.record = setup.record;
    NetworkedNode::start(config).await.expect("node")
}

async fn pair() -> (NetworkedNode, NetworkedNode) {
    pair_over(TransportProtocol::Quic).await
}

async fn pair_over(protocol: TransportProtocol) -> (NetworkedNode, NetworkedNode) {
    pair_with(protocol, RawConfig::product()).await
}

async fn pair_with(protocol: TransportProtocol, setup: RawConfig) -> (NetworkedNode, NetworkedNode) {
    let (a, b) = (node_with(protocol, setup).await, node_with(protocol, setup).await);
    a.node.offer_node_advert(b.node.advert().expect("advert")).await.expect("advert");
    b.node.offer_node_advert(a.node.advert().expect("advert")).await.expect("advert");
    (a, b)
}

pub(crate) fn to(node: &NetworkedNode, engine: &str) -> DestinationIdentity {
    DestinationIdentity::Engine(EngineIdentity::new(node.node.identity(), EngineName::new(engine).expect("valid")))
}

pub(crate) async fn recv_message(engine: &mut EngineHandle) -> EngineMessage {
    loop {
        match engine.recv().await {
            Some(Inbound::Message(m)) => return m,
            Some(_) => continue,
            None => panic!("mailbox closed"),
        }
    }
}

/// Sends `count` bodies from a to b and returns (seconds, bytes delivered).
async fn netmachine_stream(
    a: &NetworkedNode,
    b: &NetworkedNode,
    name: &str,
    body: Bytes,
    count: usize,
    sign: bool,
) -> f64 {
    let mut tx = a.node.register_engine(&format!("{name}-tx")).expect("engine");
    let mut rx = b.node.register_engine(&format!("{name}-rx")).expect("engine");
    // Warm the connection up first.
    tx.send(to(b, &format!("{name}-rx")), proto(), Bytes::from_static(b"warm")).await.expect("send");
    recv_message(&mut rx).await;
    let dst = to(b, &format!("{name}-rx"));
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        for _ in 0..count {
            recv_message(&mut rx).await;
        }
    });
    let options = SendOptions { sign, ..SendOptions::default() };
    for _ in 0..count {
        tx.send_with(dst.clone(), proto(), body.clone(), options.clone()).await.expect("send");
    }
    receiver.await.expect("receiver");
    start.elapsed().as_secs_f64()
}

/// A raw endpoint configuration: the record layer and QUIC's tuning.
#[derive(Debug, Clone, Copy)]
struct RawConfig {
    record: RecordLayer,
    tuning: QuicTuning,
}

impl RawConfig {
    /// What netmachine itself uses.
    fn product() -> Self {
        Self { record: RecordLayer::default(), tuning: QuicTuning { max_mtu: mtu(), ..QuicTuning::default() } }
    }

    /// netmachine's own setup on CUBIC, s2n-quic's default controller.
    fn product_on_cubic() -> Self {
        let product = Self::product();
        Self { tuning: QuicTuning { congestion: QuicCongestion::Cubic, ..product.tuning }, ..product }
    }

    /// What netmachine used before: ring, AES-256-GCM first, s2n-quic's
    /// own windows and send buffer, CUBIC.
    fn earlier() -> Self {
        let tuning = QuicTuning {
            max_mtu: mtu(),
            receive_window: S2N_WINDOW,
            send_buffer: S2N_SEND_BUFFER,
            segmentation_offload: true,
            congestion: QuicCongestion::Cubic,
        };
        Self { record: RecordLayer { crypto: RecordCrypto::Ring, aes_128_first: false }, tuning }
    }

    fn describe(&self) -> String {
        let crypto = match self.record.crypto {
            RecordCrypto::Ring => "ring",
            #[cfg(feature = "aws-lc")]
            RecordCrypto::AwsLc => "aws-lc-rs",
        };
        let order = if self.record.aes_128_first { "AES-128 first" } else { "AES-256 first" };
        let window = if self.tuning.receive_window == S2N_WINDOW {
            "s2n defaults".to_string()
        } else {
            format!("{} MiB", self.tuning.receive_window as usize / MIB)
        };
        let gso = if self.tuning.segmentation_offload { "on" } else { "off" };
        let congestion = match self.tuning.congestion {
            QuicCongestion::Cubic => "CUBIC",
            QuicCongestion::Bbr => "BBR",
        };
        format!("{crypto}, {order}, windows {window}, GSO {gso}, {congestion}")
    }
}

/// s2n-quic's own flow-control window (150 Mbit/s over 100 ms, doubled)
/// and stream send buffer; netmachine's defaults are 4 MiB of each.
const S2N_WINDOW: u32 = 3_750_000;
const S2N_SEND_BUFFER: u32 = 4 * 1024 * 1024;

/// The configurations of raw s2n-quic compared for bulk, all on BBR but
/// the last: each crypto library and suite order on s2n-quic's windows,
/// then netmachine's record layer with 4 MiB and 16 MiB windows, with
/// segmentation offload off, and with CUBIC (s2n-quic's own default) in
/// place of BBR.
fn raw_configs() -> Vec<RawConfig> {
    let cryptos = [
        RecordCrypto::Ring,
        #[cfg(feature = "aws-lc")]
        RecordCrypto::AwsLc,
    ];
    let tuning = |receive_window, send_buffer, segmentation_offload| QuicTuning {
        max_mtu: mtu(),
        receive_window,
        send_buffer,
        segmentation_offload,
        congestion: QuicCongestion::Bbr,
    };
    let mut configs = Vec::new();
    for crypto in cryptos {
        for aes_128_first in [false, true] {
            let record = RecordLayer { crypto, aes_128_first };
            configs.push(RawConfig { record, tuning: tuning(S2N_WINDOW, S2N_SEND_BUFFER, true) });
        }
    }
    let record = RecordLayer::default();
    for (window, offload) in [(4 * MIB as u32, true), (16 * MIB as u32, true), (4 * MIB as u32, false)] {
        configs.push(RawConfig { record, tuning: tuning(window, window, offload) });
    }
    let cubic = QuicTuning { congestion: QuicCongestion::Cubic, ..tuning(4 * MIB as u32, 4 * MIB as u32, true) };
    configs.push(RawConfig { record, tuning: cubic });
    configs
}

/// A raw endpoint: s2n-quic, or tokio-rustls over TCP; the server's
/// inbound streams arrive on the receiver.
async fn raw_endpoint(
    protocol: TransportProtocol,
    config: RawConfig,
) -> (Box<dyn Connector>, mpsc::Receiver<SecuredStream>, NodeIdentity) {
    let keys = Ed25519Keys::generate().expect("keys");
    let (accepted, accepted_rx) = mpsc::channel(16);
    let tls = TlsConfigs::with_record_layer(&keys, config.record).expect("tls");
    let connector: Box<dyn Connector> = match protocol {
        TransportProtocol::Quic => {
            Box::new(QuicConnector::bind(loopback(), tls, config.tuning, accepted).expect("bind"))
        }
        TransportProtocol::TlsTcp => Box::new(TlsTcpConnector::bind(loopback(), tls, accepted).await.expect("bind")),
    };
    (connector, accepted_rx, keys.node_identity())
}

/// Two raw s2n-quic endpoints with the nodes' TLS setup.
async fn raw_pair() -> (Box<dyn Connector>, mpsc::Receiver<SecuredStream>, NodeIdentity) {
    raw_endpoint(TransportProtocol::Quic, RawConfig::product()).await
}

async fn raw_client() -> Box<dyn Connector> {
    raw_endpoint(TransportProtocol::Quic, RawConfig::product()).await.0
}

/// Raw: `count` writes of `size` bytes on one stream; seconds until the
/// reader has them all.
async fn raw_stream(config: RawConfig, size: usize, count: usize) -> f64 {
    raw_stream_over(TransportProtocol::Quic, config, size, count).await
}

/// Dials `server` from `client` and moves one byte across, so that what
/// is timed next starts on an open stream: the dialled end and the
/// accepted end.
pub(crate) async fn warm_stream(
    client: &dyn Connector,
    server: &dyn Connector,
    server_id: NodeIdentity,
    accepted: &mut mpsc::Receiver<SecuredStream>,
) -> (SecuredStream, SecuredStream) {
    let address = server.local_address().expect("bound");
    let mut out = client.dial(address, server_id).await.expect("dial");
    out.writer.write_all(b"w").await.expect("warm");
    out.writer.flush().await.expect("flush");
    let mut inbound = accepted.recv().await.expect("accepted");
    let mut one = [0u8; 1];
    inbound.reader.read_exact(&mut one).await.expect("warm");
    (out, inbound)
}

async fn raw_stream_over(protocol: TransportProtocol, config: RawConfig, size: usize, count: usize) -> f64 {
    let (server, mut accepted, server_id) = raw_endpoint(protocol, config).await;
    let client = raw_endpoint(protocol, config).await.0;
    let (out, mut inbound) = warm_stream(&*client, &*server, server_id, &mut accepted).await;
    let total = size * count;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        // Reads as large as the writes, as netmachine reads a large frame.
        let mut buf = vec![0u8; size.max(256 * 1024)];
        let mut got = 0;
        while got < total {
            let n = inbound.reader.read(&mut buf).await.expect("read");
            assert!(n > 0, "raw stream ended early");
            got += n;
        }
    });
    // The writer runs on a tokio worker, as a node's writers do.
    let mut writer = out.writer;
    let writing = tokio::spawn(async move {
        let chunk = vec![7u8; size];
        for _ in 0..count {
            writer.write_all(&chunk).await.expect("write");
        }
        writer.flush().await.expect("flush");
        writer
    });
    let writer = writing.await.expect("writer");
    reader.await.expect("reader");
    let secs = start.elapsed().as_secs_f64();
    drop((client, server, writer, out.reader, out.keepalive));
    secs
}

/// The median and the spread (lowest, highest) of some figures.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

fn median(values: Vec<f64>) -> f64 {
    spread(values).0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn netmachine_rtt(a: &NetworkedNode, b: &NetworkedNode, round: usize) -> Vec<Duration> {
    let mut client = a.node.register_engine(&format!("rtt-client-{round}")).expect("engine");
    let mut echo = b.node.register_engine(&format!("rtt-echo-{round}")).expect("engine");
    tokio::spawn(async move {
        while let Some(Inbound::Message(m)) = echo.recv().await {
            let body = m.body.as_bytes().clone();
            if echo.reply(&m, body).await.is_err() {
                return;
            }
        }
    });
    let dst = to(b, &format!("rtt-echo-{round}"));
    let body = Bytes::from(vec![1u8; 64]);
    let mut times = Vec::with_capacity(RTT_ROUNDS);
    for i in 0..RTT_ROUNDS + 100 {
        let start = Instant::now();
        client.send(dst.clone(), proto(), body.clone()).await.expect("send");
        recv_message(&mut client).await;
        if i >= 100 {
            times.push(start.elapsed());
        }
    }
    times
}

async fn raw_rtt() -> Vec<Duration> {
    let (server, mut accepted, server_id) = raw_pair().await;
    let client = raw_client().await;
    let mut out = client.dial(server.local_address().expect("bound"), server_id).await.expect("dial");
    out.writer.write_all(&[0u8; 64]).await.expect("write");
    out.writer.flush().await.expect("flush");
    let mut inbound = accepted.recv().await.expect("accepted");
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            if inbound.reader.read_exact(&mut buf).await.is_err() {
                return;
            }
            if inbound.writer.write_all(&buf).await.is_err() || inbound.writer.flush().await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 64];
    out.reader.read_exact(&mut buf).await.expect("first echo");
    let mut times = Vec::with_capacity(RTT_ROUNDS);
    for i in 0..RTT_ROUNDS + 100 {
        let start = Instant::now();
        out.writer.write_all(&buf).await.expect("write");
        out.writer.flush().await.expect("flush");
        out.reader.read_exact(&mut buf).await.expect("read");
        if i >= 100 {
            times.push(start.elapsed());
        }
    }
    drop((client, server));
    times
}

/// Time from the first message to an unconnected peer until it arrives:
/// dial, QUIC and TLS handshake, netmachine hello, delivery.
async fn netmachine_setup() -> Duration {
    let mut times = Vec::new();
    for _ in 0..SETUP_ROUNDS {
        let (a, b) = pair().await;
        let mut tx = a.node.register_engine("setup-tx").expect("engine");
        let mut rx = b.node.register_engine("setup-rx").expect("engine");
        let start = Instant::now();
        tx.send(to(&b, "setup-rx"), proto(), Bytes::from_static(b"x")).await.expect("send");
        recv_message(&mut rx).await;
        times.push(start.elapsed());
        a.shutdown().await;
        b.shutdown().await;
    }
    times.sort();
    percentile(&times, 0.5)
}

/// Raw: dial (QUIC and TLS handshake), open a stream, one byte across.
async fn raw_setup() -> Duration {
    let mut times = Vec::new();
    for _ in 0..SETUP_ROUNDS {
        let (server, mut accepted, server_id) = raw_pair().await;
        let client = raw_client().await;
        let address = server.local_address().expect("bound");
        let start = Instant::now();
        let mut out = client.dial(address, server_id).await.expect("dial");
        out.writer.write_all(b"x").await.expect("write");
        out.writer.flush().await.expect("flush");
        let mut inbound = accepted.recv().await.expect("accepted");
        let mut one = [0u8; 1];
        inbound.reader.read_exact(&mut one).await.expect("read");
        times.push(start.elapsed());
    }
    times.sort();
    percentile(&times, 0.5)
}

fn verify_rate() -> f64 {
    let keys = Ed25519Keys::generate().expect("keys");
    let message = vec![5u8; 300];
    let sig = keys.sign(&message);
    let start = Instant::now();
    for _ in 0..VERIFY_OPS {
        RingVerifier.verify(&keys.public(), &message, &sig).expect("verifies");
    }
    VERIFY_OPS as f64 / start.elapsed().as_secs_f64()
}

fn gbit(bytes: usize, secs: f64) -> f64 {
    (bytes * 8) as f64 / secs / 1e9
}

/// Rounds of each configuration of raw s2n-quic, interleaved; the index
/// of the fastest by median.
async fn compare_raw_configs(configs: &[RawConfig]) -> usize {
    let mut rates = vec![Vec::new(); configs.len()];
    for _ in 0..ROUNDS {
        for (i, config) in configs.iter().enumerate() {
            rates[i].push(gbit(BULK_MESSAGES * MIB, raw_stream(*config, MIB, BULK_MESSAGES).await));
        }
    }
    println!("raw s2n-quic, 1 GiB over one stream, by configuration; median (lowest to highest) of {ROUNDS} interleaved rounds");
    println!();
    println!("| configuration | Gbit/s |");
    println!("|---|---:|");
    let mut best = (0, 0.0);
    for (i, config) in configs.iter().enumerate() {
        let (median, low, high) = spread(rates[i].clone());
        println!("| {} | {median:.2} ({low:.2} to {high:.2}) |", config.describe());
        if median > best.1 {
            best = (i, median);
        }
    }
    println!();
    best.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (a, b) = pair().await;
        if std::env::var_os("NETMACHINE_BENCH_ONLY_SMALL").is_some() {
            let secs = netmachine_stream(&a, &b, "small", Bytes::from(vec![3u8; SMALL]), SMALL_MESSAGES, false).await;
            println!("small: {:.0} msg/s", SMALL_MESSAGES as f64 / secs);
            return;
        }
        if std::env::var_os("NETMACHINE_BENCH_ONLY_SETUP").is_some() {
            for _ in 0..ROUNDS {
                let (ours, raw) = (netmachine_setup().await, raw_setup().await);
                println!("setup: netmachine {} us, raw {} us, {:.2}", ours.as_micros(), raw.as_micros(), ours.as_secs_f64() / raw.as_secs_f64());
            }
            return;
        }
        if std::env::var_os("NETMACHINE_BENCH_ONLY_MANY").is_some() {
            for _ in 0..ROUNDS {
                let (ours, raw) = (many_peers::receive_from(MANY_PEERS, MANY_MESSAGES).await, many_peers::raw_receive_from(MANY_PEERS, MANY_MESSAGES).await);
                println!("receiving from {MANY_PEERS}: netmachine {:.2} Gbit/s, slowest {:.2}; raw s2n-quic {:.2} Gbit/s, slowest {:.2}", ours.aggregate_gbit(), ours.slowest_share_of_fair(), raw.aggregate_gbit(), raw.slowest_share_of_fair());
            }
            return;
        }
        if let Some(which) = std::env::var_os("NETMACHINE_BENCH_ONLY_BULK") {
            let (a, b) = if which == "tls-tcp" { pair_over(TransportProtocol::TlsTcp).await } else { (a, b) };
            for round in 0..ROUNDS {
                let secs =
                    netmachine_stream(&a, &b, &format!("bulk{round}"), Bytes::from(vec![3u8; MIB]), BULK_MESSAGES, false)
                        .await;
                println!("bulk: {:.2} Gbit/s", gbit(BULK_MESSAGES * MIB, secs));
            }
            if which == "tls-tcp" {
                let raw = raw_stream_over(TransportProtocol::TlsTcp, RawConfig::product(), MIB, BULK_MESSAGES).await;
                println!("raw tokio-rustls: {:.2} Gbit/s", gbit(BULK_MESSAGES * MIB, raw));
            }
            return;
        }
        let configs = raw_configs();
        let fastest = configs[compare_raw_configs(&configs).await];
        let product = RawConfig::product();

        let (ea, eb) = pair_with(TransportProtocol::Quic, RawConfig::earlier()).await;
        let (ca, cb) = pair_with(TransportProtocol::Quic, RawConfig::product_on_cubic()).await;
        let (mut bulks, mut raw_bulks, mut quinn_bulks, mut earlier_bulks) = (vec![], vec![], vec![], vec![]);
        let mut cubic_bulks = vec![];
        let (mut smalls, mut raw_smalls) = (vec![], vec![]);
        for round in 0..ROUNDS {
            let secs = netmachine_stream(&a, &b, &format!("bulk{round}"), Bytes::from(vec![3u8; MIB]), BULK_MESSAGES, false).await;
            bulks.push(gbit(BULK_MESSAGES * MIB, secs));
            raw_bulks.push(gbit(BULK_MESSAGES * MIB, raw_stream(fastest, MIB, BULK_MESSAGES).await));
            quinn_bulks.push(gbit(BULK_MESSAGES * MIB, quinn_raw::stream(&product.tuning, MIB, BULK_MESSAGES).await));
            let secs = netmachine_stream(&ea, &eb, &format!("ebulk{round}"), Bytes::from(vec![3u8; MIB]), BULK_MESSAGES, false).await;
            earlier_bulks.push(gbit(BULK_MESSAGES * MIB, secs));
            let secs = netmachine_stream(&ca, &cb, &format!("cbulk{round}"), Bytes::from(vec![3u8; MIB]), BULK_MESSAGES, false).await;
            cubic_bulks.push(gbit(BULK_MESSAGES * MIB, secs));
            smalls.push(netmachine_stream(&a, &b, &format!("small{round}"), Bytes::from(vec![3u8; SMALL]), SMALL_MESSAGES, false).await);
            raw_smalls.push(raw_stream(fastest, SMALL, SMALL_MESSAGES).await);
        }
        for node in [ea, eb, ca, cb] {
            node.shutdown().await;
        }
        let (small, raw_small) = (median(smalls), median(raw_smalls));
        let signed = netmachine_stream(&a, &b, "signed", Bytes::from(vec![3u8; SMALL]), SIGNED_MESSAGES, true).await;
        let verify = verify_rate();
        let (mut rtts, mut raw_rtts) = (Vec::new(), Vec::new());
        for round in 0..2 {
            rtts.extend(netmachine_rtt(&a, &b, round).await);
            raw_rtts.extend(raw_rtt().await);
        }
        rtts.sort();
        raw_rtts.sort();
        let (rtt50, rtt99) = (percentile(&rtts, 0.5), percentile(&rtts, 0.99));
        let (raw50, raw99) = (percentile(&raw_rtts, 0.5), percentile(&raw_rtts, 0.99));
        a.shutdown().await;
        b.shutdown().await;
        let setup = netmachine_setup().await;
        let raw_setup = raw_setup().await;
        let (mut receiving, mut raw_receiving, mut sending) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            receiving.push(many_peers::receive_from(MANY_PEERS, MANY_MESSAGES).await);
            raw_receiving.push(many_peers::raw_receive_from(MANY_PEERS, MANY_MESSAGES).await);
            sending.push(many_peers::send_to(MANY_PEERS, MANY_MESSAGES).await);
        }

        let (ta, tb) = pair_over(TransportProtocol::TlsTcp).await;
        let (mut tcp_bulks, mut raw_tcp_bulks, mut tcp_smalls, mut raw_tcp_smalls) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let secs = netmachine_stream(&ta, &tb, &format!("tbulk{round}"), Bytes::from(vec![3u8; MIB]), BULK_MESSAGES, false).await;
            tcp_bulks.push(gbit(BULK_MESSAGES * MIB, secs));
            raw_tcp_bulks.push(gbit(BULK_MESSAGES * MIB, raw_stream_over(TransportProtocol::TlsTcp, product, MIB, BULK_MESSAGES).await));
            tcp_smalls.push(netmachine_stream(&ta, &tb, &format!("tsmall{round}"), Bytes::from(vec![3u8; SMALL]), SMALL_MESSAGES, false).await);
            raw_tcp_smalls.push(raw_stream_over(TransportProtocol::TlsTcp, product, SMALL, SMALL_MESSAGES).await);
        }
        ta.shutdown().await;
        tb.shutdown().await;
        let (tcp_small, raw_tcp_small) = (median(tcp_smalls), median(raw_tcp_smalls));

        let rate = |n: usize, secs: f64| n as f64 / secs;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        let show = |(m, lo, hi): (f64, f64, f64)| format!("{m:.2} ({lo:.2} to {hi:.2}) Gbit/s");

        let (g, rg, qg, eg) = (spread(bulks), spread(raw_bulks), spread(quinn_bulks), spread(earlier_bulks));
        let cg = spread(cubic_bulks);
        let (s, rs) = (rate(SMALL_MESSAGES, small), rate(SMALL_MESSAGES, raw_small));
        let sg = rate(SIGNED_MESSAGES, signed);
        println!(
            "transport benchmark: two nodes on loopback QUIC ({}), max MTU {}, 2 tokio workers; median (lowest to highest) of {ROUNDS} interleaved rounds",
            product.describe(),
            mtu()
        );
        println!("raw s2n-quic below is its fastest configuration above: {}", fastest.describe());
        println!();
        println!("| measure | netmachine | baseline | ratio | target |");
        println!("|---|---:|---:|---:|---|");
        println!("| (a) bulk, 1 GiB in 1 MiB bodies, against raw s2n-quic | {} | {} | {:.2} | >= 0.95: {} |", show(g), show(rg), g.0 / rg.0, met(g.0 / rg.0 >= 0.95));
        println!("| (a) bulk, 1 GiB in 1 MiB bodies, against raw quinn | {} | {} | {:.2} | >= 1.10: {} |", show(g), show(qg), g.0 / qg.0, met(g.0 / qg.0 >= 1.1));
        println!("| (a) bulk, against netmachine on its earlier setup ({}) | {} | {} | {:.2} | report |", RawConfig::earlier().describe(), show(g), show(eg), g.0 / eg.0);
        println!("| (a) bulk, against netmachine on CUBIC | {} | {} | {:.2} | report |", show(g), show(cg), g.0 / cg.0);
        println!("| (b) {SMALL}-byte bodies, channel-authenticated | {s:.0} msg/s | {rs:.0} frames/s | {:.2} | >= 0.50: {} |", s / rs, met(s / rs >= 0.5));
        println!("| (b) {SMALL}-byte bodies, signed and verified | {sg:.0} msg/s | {verify:.0} verifies/s (one core) | {:.2} | >= 0.80 of verify: {} |", sg / verify, met(sg / verify >= 0.8));
        println!("| (c) round trip p50, 64 bytes | {:.0} us | {:.0} us | {:.2} | <= 1.5x: {} |", us(rtt50), us(raw50), us(rtt50) / us(raw50), met(us(rtt50) <= 1.5 * us(raw50)));
        println!("| (c) round trip p99, 64 bytes | {:.0} us | {:.0} us | {:.2} | <= 1.5x: {} |", us(rtt99), us(raw99), us(rtt99) / us(raw99), met(us(rtt99) <= 1.5 * us(raw99)));
        println!("| (d) connection setup, p50 of {SETUP_ROUNDS} | {:.0} us | {:.0} us | {:.2} | <= 1.5x: {} |", us(setup), us(raw_setup), us(setup) / us(raw_setup), met(us(setup) <= 1.5 * us(raw_setup)));
        for (what, runs) in [("receiving from", &receiving), ("sending to", &sending)] {
            let aggregate = spread(runs.iter().map(many_peers::ManyPeers::aggregate_gbit).collect());
            let slowest = spread(runs.iter().map(many_peers::ManyPeers::slowest_share_of_fair).collect());
            let spread_text = runs.iter().map(|r| format!("{:.2}", r.slowest_share_of_fair())).collect::<Vec<_>>().join(", ");
            println!("| (e) {what} {MANY_PEERS} peers at once, {MANY_MESSAGES} MiB each: aggregate, against (a) | {} | {} | {:.2} | >= 0.80: {} |", show(aggregate), show(g), aggregate.0 / g.0, met(aggregate.0 / g.0 >= 0.8));
            println!("| (e) {what} {MANY_PEERS} peers: slowest peer's bytes while all were busy, of a fair share | {spread_text} | 1.00 | {:.2} | >= 0.50: {} |", slowest.1, met(slowest.1 >= 0.5));
        }
        let raw_aggregate = spread(raw_receiving.iter().map(many_peers::ManyPeers::aggregate_gbit).collect());
        let raw_slowest = raw_receiving.iter().map(|r| format!("{:.2}", r.slowest_share_of_fair())).collect::<Vec<_>>().join(", ");
        println!("| (e) raw s2n-quic receiving from {MANY_PEERS} at once (netmachine's setup): aggregate; slowest peer's share | {}; {raw_slowest} | | | report |", show(raw_aggregate));

        let (tg, rtg) = (spread(tcp_bulks), spread(raw_tcp_bulks));
        let (ts, rts) = (rate(SMALL_MESSAGES, tcp_small), rate(SMALL_MESSAGES, raw_tcp_small));
        println!();
        println!("TLS 1.3 over TCP on loopback ({}), beside raw tokio-rustls with the same record layer; median (lowest to highest) of {ROUNDS} interleaved rounds", product.describe().split(", windows").next().unwrap_or_default());
        println!();
        println!("| measure | netmachine | raw tokio-rustls | ratio | target |");
        println!("|---|---:|---:|---:|---|");
        println!("| (a) bulk, 1 GiB in 1 MiB bodies | {} | {} | {:.2} | >= 0.80: {} |", show(tg), show(rtg), tg.0 / rtg.0, met(tg.0 / rtg.0 >= 0.8));
        println!("| (b) {SMALL}-byte bodies, channel-authenticated | {ts:.0} msg/s | {rts:.0} frames/s | {:.2} | report |", ts / rts);
    });
}
