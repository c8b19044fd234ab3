//! Two and three nodes talking over each transport: in-memory, QUIC and
//! TLS over TCP on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::networked::{NetworkedNode, NetworkedNodeConfig};
use netmachine_adapters::runtime::{EngineHandle, Inbound};
use netmachine_adapters::transport::MemoryNetwork;
use netmachine_domain::*;
use netmachine_engines::transport::{ConnectFailure, TransportEvent};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Quic,
    TlsTcp,
}

struct Net {
    kind: Kind,
    memory: MemoryNetwork,
    next_port: u16,
}

impl Net {
    fn new(kind: Kind) -> Self {
        Self { kind, memory: MemoryNetwork::new(), next_port: 40_000 }
    }

    async fn node(&mut self) -> NetworkedNode {
        self.node_with_keys(Ed25519Keys::generate().expect("keys")).await
    }

    async fn node_with_keys(&mut self, keys: Ed25519Keys) -> NetworkedNode {
        self.next_port += 1;
        let (protocol, port) = match self.kind {
            Kind::Memory => (TransportProtocol::Quic, self.next_port),
            Kind::Quic => (TransportProtocol::Quic, 0),
            Kind::TlsTcp => (TransportProtocol::TlsTcp, 0),
        };
        let address = TransportAddress::new(protocol, SocketAddr::from(([127, 0, 0, 1], port)));
        let mut config = NetworkedNodeConfig::new(keys, vec![WeightedAddress { address, weight: 1 }]);
        if let Kind::Memory = self.kind {
            config.memory = Some(self.memory.clone());
        }
        NetworkedNode::start(config).await.expect("node starts")
    }
}

/// One test per transport (in memory, QUIC, TLS over TCP) of a scenario.
macro_rules! over_every_kind {
    ($scenario:ident, $memory:ident, $quic:ident, $tcp:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            $scenario(Kind::Memory).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $quic() {
            $scenario(Kind::Quic).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $tcp() {
            $scenario(Kind::TlsTcp).await;
        }
    };
}

fn proto() -> ProtocolId {
    ProtocolId::new("test", 1).expect("valid")
}

/// Makes each node know the others' adverts, as configuration would.
async fn introduce(nodes: &[&NetworkedNode]) {
    for a in nodes {
        for b in nodes {
            if a.node.identity() != b.node.identity() {
                a.node.offer_node_advert(b.node.advert().expect("advert")).await.expect("accepted");
            }
        }
    }
}

async fn next_message(engine: &mut EngineHandle) -> EngineMessage {
    let wait = async {
        loop {
            match engine.recv().await {
                Some(Inbound::Message(m)) => return m,
                Some(_) => continue,
                None => panic!("mailbox closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("a message within 30 s")
}

fn engine_dst(node: &NetworkedNode, name: &str) -> DestinationIdentity {
    DestinationIdentity::Engine(EngineIdentity::new(node.node.identity(), EngineName::new(name).expect("valid")))
}

async fn unicast_both_ways(kind: Kind) {
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    let mut ea = a.node.register_engine("app").expect("engine");
    let mut eb = b.node.register_engine("app").expect("engine");
    for i in 0..50u32 {
        ea.send(engine_dst(&b, "app"), proto(), i.to_be_bytes().to_vec()).await.expect("sent");
    }
    for i in 0..50u32 {
        let m = next_message(&mut eb).await;
        assert_eq!(&m.body.as_bytes()[..], &i.to_be_bytes(), "in order, exactly once");
        assert_eq!(m.src, *ea.identity());
    }
    let request = {
        eb.send(engine_dst(&a, "app"), proto(), &b"back"[..]).await.expect("sent");
        next_message(&mut ea).await
    };
    assert_eq!(&request.body.as_bytes()[..], b"back");
    assert_eq!(a.transport.connections().len(), 1, "one connection per peer, reused");
    assert_eq!(b.transport.connections().len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

over_every_kind!(
    unicast_both_ways,
    unicast_both_ways_in_memory,
    unicast_both_ways_over_quic,
    unicast_both_ways_over_tls_tcp
);

/// The ping engine the node core hosts answers a local engine's request
/// with the peer's pong: the same engine the simulator's nodes run.
async fn ping_a_peer(kind: Kind) {
    use netmachine_engines::ping::{self, Outcome, PING_PROTOCOL, PING_VERSION};
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    let mut ea = a.node.register_engine("app").expect("engine");
    let protocol = ProtocolId::new(PING_PROTOCOL, PING_VERSION).expect("valid");
    let own_node = DestinationIdentity::Node(a.node.identity());
    let asked = ea.send(own_node, protocol, ping::request(b.node.identity()).as_bytes().clone()).await.expect("sent");
    let answer = next_message(&mut ea).await;
    assert_eq!(answer.reply_to, Some(asked));
    match Outcome::decode(&answer.body) {
        Some(Outcome::Answered { peer, .. }) => assert_eq!(peer, b.node.identity()),
        other => panic!("expected a pong, got {other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

over_every_kind!(ping_a_peer, ping_a_peer_in_memory, ping_a_peer_over_quic, ping_a_peer_over_tls_tcp);

async fn wrong_identity_is_refused(kind: Kind) {
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    // A believes B's address belongs to a node whose key B does not hold.
    let impostor = Ed25519Keys::generate().expect("keys");
    let advert = raw_peer::advert_at(&impostor, b.node.advert().expect("advert").addrs.to_vec(), 1, a.node.now());
    let failure = first_connect_failure(&a, advert).await;
    assert_eq!(failure, ConnectFailure::WrongIdentity);
    assert!(a.transport.connections().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

over_every_kind!(
    wrong_identity_is_refused,
    wrong_identity_is_refused_in_memory,
    wrong_identity_is_refused_over_quic,
    wrong_identity_is_refused_over_tls_tcp
);

/// A node refusing a dialler reads nothing of what the dialler sent behind
/// its hello: the dialler hears the refusal itself, and the refusing node
/// counts no violation.
async fn a_refusal_reaches_a_dialler_that_sent_behind_its_hello(kind: Kind) {
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    a.node.set_trust(b.node.identity(), Trust::BANNED).await.expect("ban");
    let failure = first_connect_failure(&b, a.node.advert().expect("advert")).await;
    assert_eq!(failure, ConnectFailure::Refused(HandshakeStatus::Denied));
    assert_eq!(a.transport.counters().violations, 0);
    a.shutdown().await;
    b.shutdown().await;
}

over_every_kind!(
    a_refusal_reaches_a_dialler_that_sent_behind_its_hello,
    a_refusal_reaches_a_dialler_that_sent_behind_its_hello_in_memory,
    a_refusal_reaches_a_dialler_that_sent_behind_its_hello_over_quic,
    a_refusal_reaches_a_dialler_that_sent_behind_its_hello_over_tls_tcp
);

/// Gives `node` the advert, sends its node a message, and returns why the
/// first dial failed (within 30 s).
async fn first_connect_failure(node: &NetworkedNode, advert: NodeAdvert) -> ConnectFailure {
    let target = advert.id;
    node.node.offer_node_advert(advert).await.expect("accepted");
    let mut events = node.transport.events();
    let mut engine = node.node.register_engine("prober").expect("engine");
    engine.send(DestinationIdentity::Node(target), proto(), &b"x"[..]).await.expect("queued");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(TransportEvent::NodeConnectFailed { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("a connect failure within 30 s")
}

/// Polls `check` every 20 ms for at most 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 30 s");
}

async fn remote_pub_sub(kind: Kind) {
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    let c = net.node().await;
    introduce(&[&a, &b, &c]).await;
    // Connections carry the topic advert to the subscribers' nodes.
    let mut hello = a.node.register_engine("hello").expect("engine");
    for peer in [&b, &c] {
        hello.send(DestinationIdentity::Node(peer.node.identity()), proto(), &b"hi"[..]).await.expect("sent");
    }
    let mut publisher = a.node.register_engine("publisher").expect("engine");
    let topic = publisher.create_topic(&["news"]).await.expect("topic");
    let mut readers = Vec::new();
    for node in [&b, &c] {
        let reader = node.node.register_engine("reader").expect("engine");
        let n = node.node.clone();
        eventually("the topic advert reaching a subscriber node", || {
            n.topic_summaries().iter().any(|(t, _, _)| *t == topic)
        })
        .await;
        reader.subscribe(&topic).expect("subscribed");
        readers.push(reader);
    }
    let publisher_node = a.node.clone();
    eventually("both remote subscriptions reaching the publisher", || {
        publisher_node.topic_summaries().iter().any(|(t, _, remote)| *t == topic && *remote == 2)
    })
    .await;
    for i in 0..20u8 {
        publisher.publish(topic, proto(), vec![i]).await.expect("published");
    }
    for reader in &mut readers {
        for i in 0..20u8 {
            let event = next_message(reader).await;
            assert_eq!(&event.body.as_bytes()[..], &[i], "every event, in order, once");
            assert!(event.sig.is_some(), "events travel signed");
        }
    }
    // The last local subscriber leaving stops the events for that node.
    assert!(readers[0].unsubscribe(&topic).expect("unsubscribed"));
    eventually("the unsubscription reaching the publisher", || {
        publisher_node.topic_summaries().iter().any(|(t, _, remote)| *t == topic && *remote == 1)
    })
    .await;
    for node in [&a, &b, &c] {
        node.shutdown().await;
    }
}

over_every_kind!(remote_pub_sub, remote_pub_sub_in_memory, remote_pub_sub_over_quic, remote_pub_sub_over_tls_tcp);

mod raw_peer {
    //! A client that speaks the wire protocol by hand, to misbehave.

    use netmachine_adapters::codec::CborCodec;
    use netmachine_adapters::crypto::Ed25519Keys;
    use netmachine_adapters::networked::NetworkedNode;
    use netmachine_adapters::transport::framing::{encode_frame_into, FrameReader};
    use netmachine_adapters::transport::stream::{BoxReader, BoxWriter};
    use netmachine_adapters::transport::{Connector, TlsConfigs, TlsTcpConnector};
    use netmachine_domain::*;
    use tokio::io::AsyncWriteExt;

    pub struct RawPeer {
        pub keys: Ed25519Keys,
        pub reader: FrameReader<BoxReader>,
        pub writer: BoxWriter,
        _connector: TlsTcpConnector,
    }

    impl RawPeer {
        /// Connects over TLS over TCP and completes the hello exchange.
        pub async fn connect(target: &NetworkedNode) -> Self {
            let (peer, status) = Self::try_connect(target, Ed25519Keys::generate().expect("keys")).await;
            assert_eq!(status, HandshakeStatus::Ok);
            peer
        }

        /// Connects and says hello; returns the node's answer.
        pub async fn try_connect(target: &NetworkedNode, keys: Ed25519Keys) -> (Self, HandshakeStatus) {
            let (accepted, _rx) = tokio::sync::mpsc::channel(1);
            let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let connector =
                TlsTcpConnector::bind(local, TlsConfigs::new(&keys).expect("tls"), accepted).await.expect("bind");
            let address = target.node.advert().expect("advert").addrs[0].address;
            let stream = connector.dial(address.socket, target.node.identity()).await.expect("dial");
            let mut peer = Self {
                keys,
                reader: FrameReader::new(stream.reader, CborCodec::default()),
                writer: stream.writer,
                _connector: connector,
            };
            let hello = Hello {
                versions: VersionRange { min: 1, max: 1 },
                boot: 7,
                own_advert_version: 0,
                held_advert_version_of_peer: u64::MAX,
            };
            peer.send(&Frame::Hello(hello)).await;
            let status = match peer.reader.next_frame().await.expect("reply") {
                Some(Frame::HelloReply(reply)) => reply.status,
                other => panic!("expected a hello reply, got {other:?}"),
            };
            (peer, status)
        }

        pub async fn send(&mut self, frame: &Frame) {
            let mut buf = Vec::new();
            encode_frame_into(&CborCodec::default(), frame, &mut buf).expect("encode");
            self.writer.write_all(&buf).await.expect("write");
            self.writer.flush().await.expect("flush");
        }

        /// Reads until the node closes the connection (bounded).
        pub async fn closed_by_node(&mut self) -> bool {
            let wait = async {
                loop {
                    match self.reader.next_frame().await {
                        Ok(Some(_)) => continue,
                        _ => return,
                    }
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(30), wait).await.is_ok()
        }
    }

    pub fn advert_of(keys: &Ed25519Keys, version: u64, now: Timestamp) -> NodeAdvert {
        let address = "tls-tcp://127.0.0.1:9".parse().expect("valid");
        advert_at(keys, vec![WeightedAddress { address, weight: 1 }], version, now)
    }

    /// The advert of `keys`' node at these addresses, signed by it.
    pub fn advert_at(keys: &Ed25519Keys, addrs: Vec<WeightedAddress>, version: u64, now: Timestamp) -> NodeAdvert {
        let body = NodeAdvertBody::new(keys.node_identity(), addrs, None, version, now).expect("valid");
        let sig = netmachine_engines::ports::Signer::sign(keys, &NodeAdvert::signing_bytes_of(&body));
        Advert::from_parts(body, sig)
    }
}

/// A peer that stops reading: the node's memory for it stays within the
/// window and queue bounds, senders to it are told when their messages
/// cannot be taken, and other peers are served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_costs_bounded_memory_and_nobody_else_waits() {
    let mut net = Net::new(Kind::TlsTcp);
    let a = net.node().await;
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    let stalled = raw_peer::RawPeer::connect(&a).await;
    let stalled_id = stalled.keys.node_identity();
    // The node registers the connection just after answering the hello;
    // the stalled peer has no advert, so the connection is its only route.
    let driver = a.transport.clone();
    eventually("the stalled peer's connection registered", || {
        driver.peer_summaries().iter().any(|p| p.peer == stalled_id && p.connected)
    })
    .await;
    let mut sender = a.node.register_engine("flood").expect("engine");
    let body = bytes::Bytes::from(vec![0u8; 1024 * 1024]);
    let options = netmachine_adapters::runtime::SendOptions { ttl: Some(Duration::from_secs(2)), ..Default::default() };
    let mut refused = false;
    for _ in 0..400 {
        let sent =
            sender.send_with(DestinationIdentity::Node(stalled_id), proto(), body.clone(), options.clone()).await;
        if let Err(err) = sent {
            // It waited for room until its expiry passed.
            let text = err.to_string();
            assert!(text.contains("expired") || text.contains("full"), "refused for want of room, not {err}");
            refused = true;
            break;
        }
    }
    assert!(refused, "a peer that never reads cannot take 400 MiB");
    let config = netmachine_engines::transport::TransportConfig::default();
    let summary = a.transport.peer_summaries().into_iter().find(|p| p.peer == stalled_id).expect("tracked");
    let cost = 1024 * 1024 + 256;
    assert!(summary.inflight_bytes <= config.window_bytes + cost, "{summary:?}");
    assert!(summary.queued_bytes <= config.max_queue_bytes_per_peer + config.window_bytes + cost, "{summary:?}");
    // B is served meanwhile.
    let mut eb = b.node.register_engine("app").expect("engine");
    let mut ea = a.node.register_engine("app").expect("engine");
    ea.send(engine_dst(&b, "app"), proto(), &b"still served"[..]).await.expect("sent");
    assert_eq!(&next_message(&mut eb).await.body.as_bytes()[..], b"still served");
    drop(stalled);
    a.shutdown().await;
    b.shutdown().await;
}

/// A peer may send only its own advert; an advert of another node closes
/// the connection, and a stale advert changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_adverts_on_the_wire_are_refused() {
    let mut net = Net::new(Kind::TlsTcp);
    let a = net.node().await;
    let mut honest = raw_peer::RawPeer::connect(&a).await;
    let now = a.node.now();
    honest.send(&Frame::NodeAdvert(raw_peer::advert_of(&honest.keys, 5, now))).await;
    honest.send(&Frame::NodeAdvert(raw_peer::advert_of(&honest.keys, 3, now))).await;
    // A marker after them: frames of a connection are taken in order, so
    // once the marker is held, the stale advert has been dealt with.
    let marker_keys = Ed25519Keys::generate().expect("keys");
    let marker_body = TopicAdvertBody::new(
        TopicIdentity::new(marker_keys.public()),
        vec![honest.keys.node_identity()],
        vec![],
        vec!["marker"],
        1,
        now,
    )
    .expect("valid");
    let marker_sig =
        netmachine_engines::ports::Signer::sign(&marker_keys, &TopicAdvert::signing_bytes_of(&marker_body));
    let marker = Advert::from_parts(marker_body, marker_sig);
    honest.send(&Frame::TopicAdvert(marker.clone())).await;
    let id = honest.keys.node_identity();
    let node = a.node.clone();
    let mut marker_held = false;
    for _ in 0..1500 {
        if let Ok(Some(_)) = node.lookup(RecordKey::Topic(marker.topic)).await {
            marker_held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(marker_held, "the marker advert arrived within 30 s");
    let held = match node.lookup(RecordKey::Node(id)).await {
        Ok(Some(IdentityRecord::Node(r))) => r.advert.map(|a| a.version),
        _ => None,
    };
    assert_eq!(held, Some(5), "the stale version 3 did not replace version 5");

    let mut forger = raw_peer::RawPeer::connect(&a).await;
    let victim = Ed25519Keys::generate().expect("keys");
    forger.send(&Frame::NodeAdvert(raw_peer::advert_of(&victim, 1, now))).await;
    assert!(forger.closed_by_node().await, "an advert of another node closes the connection");
    assert!(a.transport.counters().violations >= 1);
    assert_eq!(node.lookup(RecordKey::Node(victim.node_identity())).await.expect("lookup"), None);
    a.shutdown().await;
}

/// Connection attempts beyond the per-IP cap are answered OverCapacity, a
/// banned node is answered Denied, and a known peer is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_connections_and_banned_nodes_are_refused_at_the_handshake() {
    let mut net = Net::new(Kind::TlsTcp);
    net.next_port += 100;
    let keys = Ed25519Keys::generate().expect("keys");
    let address = TransportAddress::new(TransportProtocol::TlsTcp, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut config = NetworkedNodeConfig::new(keys, vec![WeightedAddress { address, weight: 1 }]);
    config.transport.max_connections_per_ip = 6;
    let a = NetworkedNode::start(config).await.expect("node");
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    // B connects first and holds one of the six slots for 127.0.0.1.
    let mut ea = a.node.register_engine("app").expect("engine");
    let mut eb = b.node.register_engine("app").expect("engine");
    eb.send(engine_dst(&a, "app"), proto(), &b"first"[..]).await.expect("sent");
    assert_eq!(&next_message(&mut ea).await.body.as_bytes()[..], b"first");

    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (peer, status) = raw_peer::RawPeer::try_connect(&a, Ed25519Keys::generate().expect("keys")).await;
        statuses.push(status);
        held.push(peer);
    }
    let ok = statuses.iter().filter(|s| **s == HandshakeStatus::Ok).count();
    let over = statuses.iter().filter(|s| **s == HandshakeStatus::OverCapacity).count();
    assert_eq!((ok, over), (5, 5), "{statuses:?}");

    drop(held);
    let banned = Ed25519Keys::generate().expect("keys");
    a.node.set_trust(banned.node_identity(), Trust::BANNED).await.expect("ban");
    let mut status = HandshakeStatus::OverCapacity;
    for _ in 0..100 {
        let keys = Ed25519Keys::from_pkcs8(banned.pkcs8()).expect("same key");
        status = raw_peer::RawPeer::try_connect(&a, keys).await.1;
        if status != HandshakeStatus::OverCapacity {
            break;
        }
        // The dropped raw peers free their slots as their connections close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, HandshakeStatus::Denied);

    ea.send(engine_dst(&b, "app"), proto(), &b"still served"[..]).await.expect("sent");
    assert_eq!(&next_message(&mut eb).await.body.as_bytes()[..], b"still served");
    a.shutdown().await;
    b.shutdown().await;
}

/// A message to a peer that cannot be reached waits in its queue while the
/// transport retries, and its sender is told when its expiry passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_makes_the_sender_hear_of_expiry() {
    let mut net = Net::new(Kind::Memory);
    let a = net.node().await;
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    net.memory.unplug(&b.node.advert().expect("advert").addrs[0].address.socket);
    let mut sender = a.node.register_engine("app").expect("engine");
    let options =
        netmachine_adapters::runtime::SendOptions { ttl: Some(Duration::from_millis(300)), ..Default::default() };
    let id = sender.send_with(engine_dst(&b, "app"), proto(), &b"lost"[..], options).await.expect("queued");
    let notice = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match sender.recv().await {
                Some(Inbound::Undeliverable { id, reason, .. }) => return (id, reason),
                Some(_) => continue,
                None => panic!("mailbox closed"),
            }
        }
    })
    .await
    .expect("a notice within 30 s");
    assert_eq!(notice.0, id);
    assert!(notice.1.contains("expired"), "{}", notice.1);
    assert!(a.transport.connections().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

/// An idle peer is forgotten by the transport (so its table holds the peers
/// in use), and a later message to it still goes: the address comes back
/// from the identity store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_idle_peer_is_reached_again() {
    let memory = MemoryNetwork::new();
    let start = |port: u16| {
        let memory = memory.clone();
        async move {
            let address =
                TransportAddress::new(TransportProtocol::Quic, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let mut config = NetworkedNodeConfig::new(
                Ed25519Keys::generate().expect("keys"),
                vec![WeightedAddress { address, weight: 1 }],
            );
            config.memory = Some(memory);
            config.transport.idle_timeout_ms = 200;
            config.transport.forget_after_ms = 300;
            NetworkedNode::start(config).await.expect("node")
        }
    };
    let a = start(41_001).await;
    let b = start(41_002).await;
    introduce(&[&a, &b]).await;
    let mut ea = a.node.register_engine("app").expect("engine");
    let mut eb = b.node.register_engine("app").expect("engine");
    // B subscribes to a topic A publishes (the connection brings B its advert).
    let mut publisher = a.node.register_engine("publisher").expect("engine");
    let topic = publisher.create_topic(&["news"]).await.expect("topic");
    ea.send(engine_dst(&b, "app"), proto(), &b"first"[..]).await.expect("sent");
    assert_eq!(&next_message(&mut eb).await.body.as_bytes()[..], b"first");
    let b_node = b.node.clone();
    eventually("the topic known at B", || b_node.topic_summaries().iter().any(|(t, _, _)| *t == topic)).await;
    let mut reader = b.node.register_engine("reader").expect("engine");
    reader.subscribe(&topic).expect("subscribed");
    let a_node = a.node.clone();
    eventually("B subscribed at A", || a_node.topic_summaries().iter().any(|(t, _, r)| *t == topic && *r == 1)).await;

    let (driver, peer) = (a.transport.clone(), b.node.identity());
    eventually("the idle peer forgotten", || driver.peer_summaries().iter().all(|p| p.peer != peer)).await;
    ea.send(engine_dst(&b, "app"), proto(), &b"again"[..]).await.expect("sent to a forgotten peer");
    assert_eq!(&next_message(&mut eb).await.body.as_bytes()[..], b"again");
    // An event, which the node sends on its own, also finds the peer again.
    eventually("the idle peer forgotten again", || driver.peer_summaries().iter().all(|p| p.peer != peer)).await;
    publisher.publish(topic, proto(), &b"event"[..]).await.expect("published");
    assert_eq!(&next_message(&mut reader).await.body.as_bytes()[..], b"event");
    a.shutdown().await;
    b.shutdown().await;
}

/// A node message from a raw peer's engine `app` to `to`'s engine `app`.
fn raw_message(from: &raw_peer::RawPeer, to: &NetworkedNode, id: u64, body: &[u8]) -> Frame {
    let src = from.keys.node_identity();
    let message = EngineMessage {
        src: EngineIdentity::new(src, EngineName::new("app").expect("valid")),
        dst: engine_dst(to, "app"),
        id: MessageId(id),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: proto(),
        body: Body::new(body.to_vec()).expect("small"),
        sig: None,
    };
    Frame::Node(NodeMessage { src, dst: to.node.identity(), payload: NodePayload::Engine(message), sig: None })
}

/// A sender whose connection drops resends what was not acknowledged on
/// its next connection; what the receiver had already taken is dropped as
/// a repeat by the real driver, and the rest is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_resent_on_a_new_connection_are_dropped() {
    let mut net = Net::new(Kind::TlsTcp);
    let a = net.node().await;
    let mut app = a.node.register_engine("app").expect("engine");
    let keys = Ed25519Keys::generate().expect("keys");
    let (mut first, status) =
        raw_peer::RawPeer::try_connect(&a, Ed25519Keys::from_pkcs8(keys.pkcs8()).expect("same key")).await;
    assert_eq!(status, HandshakeStatus::Ok);
    first.send(&raw_message(&first, &a, 1, b"one")).await;
    first.send(&raw_message(&first, &a, 2, b"two")).await;
    assert_eq!(&next_message(&mut app).await.body.as_bytes()[..], b"one");
    assert_eq!(&next_message(&mut app).await.body.as_bytes()[..], b"two");
    let repeats_before = a.transport.counters().duplicates_dropped;

    // The same node, the same boot, on a new connection: a resend after a
    // connection was lost. The old connection is not even closed yet (a
    // dead peer's connection can take seconds to be found dead).
    let (mut second, status) = raw_peer::RawPeer::try_connect(&a, keys).await;
    assert_eq!(status, HandshakeStatus::Ok);
    second.send(&raw_message(&second, &a, 1, b"one")).await;
    second.send(&raw_message(&second, &a, 2, b"two")).await;
    second.send(&raw_message(&second, &a, 3, b"three")).await;
    assert_eq!(&next_message(&mut app).await.body.as_bytes()[..], b"three", "the repeats were not delivered");
    let repeats = a.transport.counters().duplicates_dropped - repeats_before;
    assert_eq!(repeats, 2);
    drop(first);
    a.shutdown().await;
}

/// A responder that answers every hello with Ok but a range of versions
/// this node does not speak: the dialler refuses the connection itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialler_refuses_a_responder_with_no_common_version() {
    use netmachine_adapters::codec::CborCodec;
    use netmachine_adapters::transport::framing::{encode_frame_into, FrameReader};
    use netmachine_adapters::transport::{Connector, TlsConfigs, TlsTcpConnector};
    use tokio::io::AsyncWriteExt;

    let mut net = Net::new(Kind::TlsTcp);
    let a = net.node().await;
    let keys = Ed25519Keys::generate().expect("keys");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(4);
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let responder =
        TlsTcpConnector::bind(local, TlsConfigs::new(&keys).expect("tls"), accepted_tx).await.expect("bind");
    let address = TransportAddress::new(TransportProtocol::TlsTcp, responder.local_address().expect("bound"));
    let answered = tokio::spawn(async move {
        let mut answered = 0;
        while let Some(stream) = accepted.recv().await {
            let mut reader = FrameReader::new(stream.reader, CborCodec::default());
            let mut writer = stream.writer;
            if let Ok(Some(Frame::Hello(_))) = reader.next_frame().await {
                let reply = HelloReply {
                    status: HandshakeStatus::Ok,
                    versions: VersionRange { min: 900, max: 901 },
                    boot: 1,
                    own_advert_version: 0,
                    held_advert_version_of_peer: 0,
                };
                let mut buf = Vec::new();
                encode_frame_into(&CborCodec::default(), &Frame::HelloReply(reply), &mut buf).expect("encode");
                let _ = writer.write_all(&buf).await;
                let _ = writer.flush().await;
                answered += 1;
            }
            if answered >= 1 {
                return answered;
            }
        }
        answered
    });
    let advert = raw_peer::advert_at(&keys, vec![WeightedAddress { address, weight: 1 }], 1, a.node.now());
    let failure = first_connect_failure(&a, advert).await;
    assert_eq!(failure, ConnectFailure::Refused(HandshakeStatus::Incompatible));
    assert_eq!(tokio::time::timeout(Duration::from_secs(30), answered).await.expect("answered").expect("task"), 1);
    assert!(a.transport.connections().is_empty(), "no connection was registered");
    a.shutdown().await;
}

/// The embedding API's confirmed send: acknowledged by the receiving
/// node, dropped there for want of the engine, or delivered locally.
async fn a_confirmed_send_hears_the_outcome(kind: Kind) {
    use netmachine_adapters::runtime::{Delivery, SendOptions};
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    let mut ea = a.node.register_engine("app").expect("engine");
    let mut eb = b.node.register_engine("app").expect("engine");
    // B dials: the connection is inbound at A.
    eb.send(engine_dst(&a, "app"), proto(), &b"warm"[..]).await.expect("sent");
    assert_eq!(&next_message(&mut ea).await.body.as_bytes()[..], b"warm");
    let wait = Duration::from_secs(30);
    let (_, outcome) = ea
        .send_and_confirm(engine_dst(&b, "app"), proto(), &b"hello"[..], SendOptions::default(), wait)
        .await
        .expect("sent");
    assert_eq!(outcome, Delivery::Acknowledged { by: b.node.identity() });
    assert_eq!(&next_message(&mut eb).await.body.as_bytes()[..], b"hello");

    let (_, outcome) = ea
        .send_and_confirm(engine_dst(&b, "ghost"), proto(), &b"lost"[..], SendOptions::default(), wait)
        .await
        .expect("sent");
    match outcome {
        Delivery::Undeliverable { reason } => assert!(reason.contains("no such engine"), "{reason}"),
        other => panic!("expected the far end's notice, got {other:?}"),
    }

    let (_, outcome) = ea
        .send_and_confirm(engine_dst(&a, "app"), proto(), &b"self"[..], SendOptions::default(), wait)
        .await
        .expect("sent");
    assert_eq!(outcome, Delivery::Local);
    a.shutdown().await;
    b.shutdown().await;
}

over_every_kind!(
    a_confirmed_send_hears_the_outcome,
    a_confirmed_send_hears_the_outcome_in_memory,
    a_confirmed_send_hears_the_outcome_over_quic,
    a_confirmed_send_hears_the_outcome_over_tls_tcp
);

/// One engine that never reads does not hold up a peer's traffic to
/// another engine on the same node: the reader parks what finds the slow
/// engine's mailbox full and reads on. Nothing is lost: the receiving node
/// holds back its acknowledgement of the parked messages, so the sender
/// keeps them in its window (and would slow down once that filled), and
/// the slow engine gets them all, in order, once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_engine_does_not_stall_a_fast_one_beside_it() {
    const CAPACITY: usize = 4;
    const SENT: u8 = 20;
    let mut net = Net::new(Kind::Memory);
    net.next_port += 301;
    let keys = Ed25519Keys::generate().expect("keys");
    let address = TransportAddress::new(TransportProtocol::Quic, SocketAddr::from(([127, 0, 0, 1], net.next_port)));
    let mut config = NetworkedNodeConfig::new(keys, vec![WeightedAddress { address, weight: 1 }]);
    config.memory = Some(net.memory.clone());
    config.mailbox_capacity = CAPACITY;
    let a = NetworkedNode::start(config).await.expect("node");
    let b = net.node().await;
    introduce(&[&a, &b]).await;
    let mut slow = a.node.register_engine("slow").expect("engine");
    let mut fast = a.node.register_engine("fast").expect("engine");
    let mut sender = b.node.register_engine("app").expect("engine");
    // In lockstep: the fast engine gets each message while the slow one,
    // sent to first over the same connection, reads nothing.
    for i in 0..SENT {
        sender.send(engine_dst(&a, "slow"), proto(), vec![i]).await.expect("sent");
        sender.send(engine_dst(&a, "fast"), proto(), vec![i]).await.expect("sent");
        assert_eq!(&next_message(&mut fast).await.body.as_bytes()[..], &[i]);
    }
    // What waits for the slow engine is still the sender's: unacknowledged.
    let parked = usize::from(SENT) - CAPACITY;
    let inflight =
        || b.transport.peer_summaries().iter().find(|p| p.peer == a.node.identity()).map_or(0, |p| p.inflight);
    assert!(inflight() >= parked, "{} unacknowledged, {parked} parked", inflight());
    for i in 0..SENT {
        assert_eq!(&next_message(&mut slow).await.body.as_bytes()[..], &[i]);
    }
    eventually("every message acknowledged once the slow engine read them", || inflight() == 0).await;
    assert!(sender.try_recv().is_none(), "nothing was dropped, so no notice came back");
    a.shutdown().await;
    b.shutdown().await;
}

/// A client that is not a node (here: one that speaks no TLS at all) is
/// dropped by the listener before the node hears of it, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_inbound_tls_handshake_is_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut net = Net::new(Kind::TlsTcp);
    let node = net.node().await;
    let address = node.node.advert().expect("an advert").addrs[0].address.socket;
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connects");
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("written");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    let mut counted = 0;
    for _ in 0..100 {
        counted = node.metrics().inbound.secure_channel;
        if counted > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted, 1);
    assert_eq!(node.metrics().inbound.timed_out, 0);
    node.shutdown().await;
}

/// A smoke test of each congestion setting a node can be given: two QUIC
/// nodes so set carry a large body (read straight into its frame's
/// buffer) and small ones after it, in order. Which controller s2n-quic
/// then runs is its business; the bench compares them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_congestion_setting_carries_large_and_small_bodies() {
    use netmachine_adapters::transport::{QuicCongestion, QuicTuning};
    for congestion in [QuicCongestion::Cubic, QuicCongestion::Bbr] {
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let address = TransportAddress::new(TransportProtocol::Quic, SocketAddr::from(([127, 0, 0, 1], 0)));
            let mut config = NetworkedNodeConfig::new(
                Ed25519Keys::generate().expect("keys"),
                vec![WeightedAddress { address, weight: 1 }],
            );
            config.quic = QuicTuning { congestion, ..QuicTuning::default() };
            nodes.push(NetworkedNode::start(config).await.expect("node starts"));
        }
        let (a, b) = (&nodes[0], &nodes[1]);
        introduce(&[a, b]).await;
        let mut ea = a.node.register_engine("app").expect("engine");
        let mut eb = b.node.register_engine("app").expect("engine");
        let large: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i: u32| (i % 251) as u8).collect();
        ea.send(engine_dst(b, "app"), proto(), large.clone()).await.expect("sent");
        for i in 0..20u32 {
            ea.send(engine_dst(b, "app"), proto(), i.to_be_bytes().to_vec()).await.expect("sent");
        }
        let first = next_message(&mut eb).await;
        assert!(first.body.as_bytes()[..] == large[..], "{congestion:?}: the large body arrives whole");
        for i in 0..20u32 {
            let m = next_message(&mut eb).await;
            assert_eq!(&m.body.as_bytes()[..], &i.to_be_bytes(), "{congestion:?}: in order after it");
        }
        for node in nodes {
            node.shutdown().await;
        }
    }
}
