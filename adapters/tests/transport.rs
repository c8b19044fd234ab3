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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_both_ways_in_memory() {
    unicast_both_ways(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_both_ways_over_quic() {
    unicast_both_ways(Kind::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_both_ways_over_tls_tcp() {
    unicast_both_ways(Kind::TlsTcp).await;
}

async fn wrong_identity_is_refused(kind: Kind) {
    let mut net = Net::new(kind);
    let a = net.node().await;
    let b = net.node().await;
    // A believes B's address belongs to a node whose key B does not hold.
    let impostor = Ed25519Keys::generate().expect("keys");
    let body = NodeAdvertBody::new(
        impostor.node_identity(),
        b.node.advert().expect("advert").addrs.to_vec(),
        None,
        1,
        a.node.now(),
    )
    .expect("valid");
    let sig = netmachine_engines::ports::Signer::sign(&impostor, &NodeAdvert::signing_bytes_of(&body));
    a.node.offer_node_advert(Advert::from_parts(body, sig)).await.expect("accepted");
    let mut events = a.transport.events();
    let mut ea = a.node.register_engine("app").expect("engine");
    let to = DestinationIdentity::Node(impostor.node_identity());
    ea.send(to, proto(), &b"x"[..]).await.expect("queued");
    let failure = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(TransportEvent::NodeConnectFailed { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("a connect failure within 30 s");
    assert_eq!(failure, ConnectFailure::WrongIdentity);
    assert!(a.transport.connections().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_identity_is_refused_in_memory() {
    wrong_identity_is_refused(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_identity_is_refused_over_quic() {
    wrong_identity_is_refused(Kind::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_identity_is_refused_over_tls_tcp() {
    wrong_identity_is_refused(Kind::TlsTcp).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pub_sub_in_memory() {
    remote_pub_sub(Kind::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pub_sub_over_quic() {
    remote_pub_sub(Kind::Quic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_pub_sub_over_tls_tcp() {
    remote_pub_sub(Kind::TlsTcp).await;
}
