//! End to end: three real `netmachine` processes on loopback, over QUIC
//! and over TLS over TCP.

use std::collections::BTreeSet;
use std::time::Duration;

use netmachine_adapters::control::{decode_body, encode_body, ControlClient, ControlRequest, ControlResponse};
use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::text_forms::node_advert_to_text;
use netmachine_adapters::transport::{Connector, QuicConnector, TlsConfigs, TlsTcpConnector};
use netmachine_domain::*;
use netmachine_engines::ports::Signer;
use netmachine_harness::cluster::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn send(to: String, body: &str, ttl_ms: Option<u64>) -> ControlRequest {
    ControlRequest::Send { to, body: encode_body(body.as_bytes()), ttl_ms, sign: false }
}

fn inbox_of(cluster: &Cluster, index: usize) -> String {
    format!("inbox@{}", cluster.nodes[index].identity)
}

/// The next message on a stream, as text; panics after 30 s.
async fn next_body(stream: &mut ControlClient) -> String {
    let response = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("a message within 30 s");
    match response.expect("stream open") {
        ControlResponse::Message(m) => String::from_utf8(decode_body(&m.body).expect("base64")).expect("utf-8"),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Nothing more arrives within `ms`.
async fn assert_quiet(stream: &mut ControlClient, ms: u64) {
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(ms), stream.next()).await {
        panic!("unexpected extra message: {extra:?}");
    }
}

async fn sent_ok(cluster: &Cluster, index: usize, request: ControlRequest) {
    match cluster.call(index, request).await {
        ControlResponse::Sent { .. } => {}
        other => panic!("node-{index} did not send: {other:?}"),
    }
}

async fn unicast_both_ways(protocol: TransportProtocol) {
    let cluster = Cluster::start(3, protocol).await;
    let mut inbox0 = cluster.open_stream(0, ControlRequest::Inbox).await.expect("inbox");
    let mut inbox1 = cluster.open_stream(1, ControlRequest::Inbox).await.expect("inbox");
    sent_ok(&cluster, 0, send(inbox_of(&cluster, 1), "zero to one", None)).await;
    sent_ok(&cluster, 1, send(inbox_of(&cluster, 0), "one to zero", None)).await;
    sent_ok(&cluster, 2, send(inbox_of(&cluster, 0), "two to zero", None)).await;
    assert_eq!(next_body(&mut inbox1).await, "zero to one");
    let mut at_zero = BTreeSet::new();
    at_zero.insert(next_body(&mut inbox0).await);
    at_zero.insert(next_body(&mut inbox0).await);
    assert_eq!(at_zero, BTreeSet::from(["one to zero".to_string(), "two to zero".to_string()]));
    cluster
        .wait_until(0, 30, "both peers connected", |_, peers| peers.iter().filter(|p| p.connected).count() == 2)
        .await;
}

async fn pub_sub_to_remote_subscribers(protocol: TransportProtocol) {
    let cluster = Cluster::start(3, protocol).await;
    let topic = match cluster.call(0, ControlRequest::CreateTopic { tags: vec!["e2e".into()] }).await {
        ControlResponse::TopicCreated { topic } => topic,
        other => panic!("no topic: {other:?}"),
    };
    let mut streams = Vec::new();
    for index in [1, 2] {
        let t = topic.clone();
        cluster
            .wait_until(index, 30, "the topic advert arriving", move |s, _| s.topics.iter().any(|x| x.topic == t))
            .await;
        streams
            .push(cluster.open_stream(index, ControlRequest::Subscribe { topic: topic.clone() }).await.expect("sub"));
    }
    let t = topic.clone();
    cluster
        .wait_until(0, 30, "two remote subscribers", move |s, _| {
            s.topics.iter().any(|x| x.topic == t && x.remote_subscribers == 2)
        })
        .await;
    for i in 0..5 {
        let publish =
            ControlRequest::Publish { topic: topic.clone(), body: encode_body(format!("event {i}").as_bytes()) };
        sent_ok(&cluster, 0, publish).await;
    }
    for stream in &mut streams {
        for i in 0..5 {
            assert_eq!(next_body(stream).await, format!("event {i}"));
        }
        assert_quiet(stream, 500).await;
    }
}

/// SIGKILL node-1; messages sent to it meanwhile wait at node-0 and arrive
/// once, in order, after it restarts; the permanent peers reconnect.
async fn a_killed_node_restarts_and_gets_what_waited(protocol: TransportProtocol) {
    let mut cluster = Cluster::start(3, protocol).await;
    cluster
        .wait_until(0, 30, "both peers connected", |_, peers| peers.iter().filter(|p| p.connected).count() == 2)
        .await;
    {
        let mut inbox1 = cluster.open_stream(1, ControlRequest::Inbox).await.expect("inbox");
        sent_ok(&cluster, 0, send(inbox_of(&cluster, 1), "before", None)).await;
        assert_eq!(next_body(&mut inbox1).await, "before");
    }
    // A message delivered in the instant before a crash, whose
    // acknowledgement had not left, is sent again (at least once across a
    // receiver crash; see docs/transport.md). Wait for the acknowledgement
    // so this test checks the queued messages only.
    let one = cluster.nodes[1].identity.to_string();
    cluster
        .wait_until(0, 30, "\"before\" acknowledged", move |_, peers| {
            peers.iter().any(|p| p.node == one && p.inflight == 0 && p.queued == 0)
        })
        .await;
    cluster.kill(1);
    for i in 0..5 {
        sent_ok(&cluster, 0, send(inbox_of(&cluster, 1), &format!("while down {i}"), Some(120_000))).await;
    }
    // One that expires before node-1 is back must not arrive.
    sent_ok(&cluster, 0, send(inbox_of(&cluster, 1), "expires", Some(1))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.launch(1).await;
    let mut inbox1 = cluster.open_stream(1, ControlRequest::Inbox).await.expect("inbox");
    for i in 0..5 {
        assert_eq!(next_body(&mut inbox1).await, format!("while down {i}"));
    }
    assert_quiet(&mut inbox1, 1500).await;
    let one = cluster.nodes[1].identity.to_string();
    cluster
        .wait_until(0, 60, "node-1 reconnected", move |_, peers| peers.iter().any(|p| p.node == one && p.connected))
        .await;
    let zero = cluster.nodes[0].identity.to_string();
    cluster
        .wait_until(1, 60, "node-1 back with its peers", move |_, peers| {
            peers.iter().filter(|p| p.connected).count() == 2 && peers.iter().any(|p| p.node == zero)
        })
        .await;
}

/// node-0 is told that node-2's address belongs to another key: the TLS
/// handshake fails and no connection is made.
async fn a_peer_presenting_the_wrong_identity_is_refused(protocol: TransportProtocol) {
    let cluster = Cluster::start(3, protocol).await;
    let impostor = Ed25519Keys::generate().expect("keys");
    let address = TransportAddress::new(protocol, cluster.nodes[2].address);
    let body =
        NodeAdvertBody::new(
            impostor.node_identity(),
            vec![WeightedAddress { address, weight: 1 }],
            None,
            1,
            Timestamp(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
            ),
        )
        .expect("valid");
    let advert = Advert::from_parts(body.clone(), impostor.sign(&NodeAdvert::signing_bytes_of(&body)));
    let added = cluster.call(0, ControlRequest::AddPeer { advert: node_advert_to_text(&advert).expect("text") }).await;
    assert!(matches!(added, ControlResponse::PeerAdded { .. }), "{added:?}");
    let impostor_id = impostor.node_identity().to_string();
    cluster
        .wait_until(0, 60, "the impostor refused", move |_, peers| {
            peers.iter().any(|p| p.node == impostor_id && !p.connected && p.failures >= 1)
        })
        .await;
    assert!(cluster.log_of(0).contains("proved another identity"), "the refusal is logged with its reason");
}

/// A client with a valid identity sends garbage after the handshake: node-0
/// closes that connection and keeps serving the others.
async fn a_garbage_frame_closes_that_connection_only(protocol: TransportProtocol) {
    let cluster = Cluster::start(3, protocol).await;
    let keys = Ed25519Keys::generate().expect("keys");
    let tls = TlsConfigs::new(&keys).expect("tls");
    let (accepted, _rx) = tokio::sync::mpsc::channel(1);
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let connector: Box<dyn Connector> = match protocol {
        TransportProtocol::Quic => Box::new(QuicConnector::bind(local, tls, 1500, accepted).expect("quic")),
        TransportProtocol::TlsTcp => Box::new(TlsTcpConnector::bind(local, tls, accepted).await.expect("tcp")),
    };
    let mut stream = connector.dial(cluster.nodes[0].address, cluster.nodes[0].identity).await.expect("dial");
    // A length prefix then bytes that are no frame.
    stream.writer.write_all(&[0, 0, 0, 8, 9, 9, 9, 9, 9, 9, 9, 9]).await.expect("write");
    stream.writer.flush().await.expect("flush");
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "node-0 closes a connection that sends garbage");
    cluster.wait_until(0, 30, "the violation counted", |s, _| s.violations >= 1).await;
    let mut inbox0 = cluster.open_stream(0, ControlRequest::Inbox).await.expect("inbox");
    sent_ok(&cluster, 1, send(inbox_of(&cluster, 0), "still here", None)).await;
    assert_eq!(next_body(&mut inbox0).await, "still here");
}

macro_rules! over_both {
    ($scenario:ident, $quic:ident, $tcp:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $quic() {
            $scenario(TransportProtocol::Quic).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tcp() {
            $scenario(TransportProtocol::TlsTcp).await;
        }
    };
}

over_both!(unicast_both_ways, unicast_both_ways_over_quic, unicast_both_ways_over_tls_tcp);
over_both!(pub_sub_to_remote_subscribers, pub_sub_over_quic, pub_sub_over_tls_tcp);
over_both!(a_killed_node_restarts_and_gets_what_waited, kill_and_restart_over_quic, kill_and_restart_over_tls_tcp);
over_both!(a_peer_presenting_the_wrong_identity_is_refused, wrong_identity_over_quic, wrong_identity_over_tls_tcp);
over_both!(a_garbage_frame_closes_that_connection_only, garbage_frame_over_quic, garbage_frame_over_tls_tcp);
