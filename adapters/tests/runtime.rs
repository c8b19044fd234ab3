//! The embedding API end to end on one node: unicast, topics, identity
//! updates, errors and backpressure.

use netmachine_adapters::crypto::{Ed25519Keys, RingVerifier};
use netmachine_adapters::runtime::{Inbound, Node, NodeError, SendError, SendOptions};
use netmachine_adapters::store::{RecordStore, StoreError};
use netmachine_domain::*;
use netmachine_engines::ports::{verify_signed, Signer};
use netmachine_engines::{InboundRejection, RouteError};

fn proto() -> ProtocolId {
    ProtocolId::new("test", 1).expect("valid")
}

fn engine_dst(node: &Node, name: &str) -> DestinationIdentity {
    DestinationIdentity::Engine(EngineIdentity::new(node.identity(), EngineName::new(name).expect("valid")))
}

/// The next message; fails after 30 s rather than hanging.
async fn next_message(handle: &mut netmachine_adapters::runtime::EngineHandle) -> EngineMessage {
    let wait = async {
        loop {
            match handle.recv().await {
                Some(Inbound::Message(m)) => return m,
                Some(Inbound::IdentityUpdated(_) | Inbound::Undeliverable { .. }) => continue,
                None => panic!("mailbox closed"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait).await.expect("a message within 30 s")
}

#[tokio::test]
async fn unicast_and_reply_between_local_engines() {
    let node = Node::builder().start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    let mut b = node.register_engine("b").expect("b");
    let id = a.send(engine_dst(&node, "b"), proto(), &b"ping"[..]).await.expect("sent");
    let got = next_message(&mut b).await;
    assert_eq!(got.id, id);
    assert_eq!(&got.body.as_bytes()[..], b"ping");
    assert_eq!(got.src, *a.identity());
    b.reply(&got, &b"pong"[..]).await.expect("reply");
    let answer = next_message(&mut a).await;
    assert_eq!(answer.reply_to, Some(id));
    assert_eq!(&answer.body.as_bytes()[..], b"pong");
    assert_eq!(node.stats().local_delivered, 2);
}

#[tokio::test]
async fn duplicate_engine_names_are_refused() {
    let node = Node::builder().start().await.expect("start");
    let _a = node.register_engine("a").expect("a");
    assert!(matches!(node.register_engine("a"), Err(NodeError::Registry(_))));
    assert!(matches!(node.register_engine("Bad Name"), Err(NodeError::Invalid(_))));
}

#[tokio::test]
async fn a_dropped_engine_is_no_longer_routable() {
    let node = Node::builder().start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    drop(node.register_engine("b").expect("b"));
    let err = a.send(engine_dst(&node, "b"), proto(), &b"x"[..]).await.expect_err("gone");
    assert!(matches!(err, SendError::Route(RouteError::NoRoute { .. })), "{err}");
    assert!(err.to_string().contains("b@node1"));
}

#[tokio::test]
async fn publish_reaches_current_subscribers_only_in_order() {
    let node = Node::builder().start().await.expect("start");
    let mut owner = node.register_engine("owner").expect("owner");
    let mut s1 = node.register_engine("s1").expect("s1");
    let mut s2 = node.register_engine("s2").expect("s2");
    let topic = owner.create_topic(&["news"]).await.expect("topic");
    s1.subscribe(&topic).expect("sub");
    owner.publish(topic, proto(), &b"1"[..]).await.expect("publish");
    s2.subscribe(&topic).expect("sub");
    owner.publish(topic, proto(), &b"2"[..]).await.expect("publish");
    assert!(s1.unsubscribe(&topic).expect("unsub"));
    owner.publish(topic, proto(), &b"3"[..]).await.expect("publish");

    let body = |m: EngineMessage| m.body.as_bytes().to_vec();
    assert_eq!(body(next_message(&mut s1).await), b"1");
    assert_eq!(body(next_message(&mut s1).await), b"2");
    assert!(s1.try_recv().is_none());
    assert_eq!(body(next_message(&mut s2).await), b"2");
    assert_eq!(body(next_message(&mut s2).await), b"3");
    assert!(s2.try_recv().is_none());

    // The topic's advert reached the identity store.
    let record = node.lookup(RecordKey::Topic(topic)).await.expect("lookup");
    assert!(matches!(record, Some(IdentityRecord::Topic(_))));
    // Only the creator deletes.
    assert!(s2.delete_topic(&topic).is_err());
    owner.delete_topic(&topic).expect("creator deletes");
    assert!(owner.publish(topic, proto(), &b"4"[..]).await.is_err());
}

#[tokio::test]
async fn remote_sends_without_a_transport_fail_clearly() {
    let node = Node::builder().start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    let peer = NodeIdentity::ed25519([3; 32]);
    let err = a.send(DestinationIdentity::Node(peer), proto(), &b"x"[..]).await.expect_err("no transport");
    assert!(err.to_string().contains("no transport"), "{err}");
}

#[tokio::test]
async fn expired_messages_are_refused_at_the_sender() {
    let node = Node::builder().start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    let _b = node.register_engine("b").expect("b");
    let options = SendOptions { ttl: Some(std::time::Duration::ZERO), ..Default::default() };
    let err = a.send_with(engine_dst(&node, "b"), proto(), &b"x"[..], options).await.expect_err("expired");
    assert!(matches!(err, SendError::Route(RouteError::Expired { .. })));
}

#[tokio::test]
async fn signed_sends_carry_a_verifiable_signature() {
    let node = Node::builder().start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    let mut b = node.register_engine("b").expect("b");
    let options = SendOptions { sign: true, ..Default::default() };
    a.send_with(engine_dst(&node, "b"), proto(), &b"x"[..], options).await.expect("sent");
    let got = next_message(&mut b).await;
    verify_signed(&RingVerifier, &got).expect("valid signature");
}

#[tokio::test]
async fn a_full_mailbox_holds_the_sender_back() {
    let node = Node::builder().mailbox_capacity(2).start().await.expect("start");
    let mut a = node.register_engine("a").expect("a");
    let mut b = node.register_engine("b").expect("b");
    for _ in 0..2 {
        a.send(engine_dst(&node, "b"), proto(), &b"x"[..]).await.expect("room");
    }
    let dst = engine_dst(&node, "b");
    let blocked = tokio::select! {
        biased;
        _ = a.send(dst.clone(), proto(), &b"x"[..]) => false,
        _ = std::future::ready(()) => true,
    };
    assert!(blocked, "a third message must wait for room in a mailbox of two");
    next_message(&mut b).await;
    a.send(dst, proto(), &b"x"[..]).await.expect("room again");
}

#[tokio::test]
async fn identity_updates_reach_subscribers_and_bad_adverts_do_not() {
    let node = Node::builder().start().await.expect("start");
    let mut watcher = node.register_engine("watcher").expect("watcher");
    assert!(watcher.subscribe_identity_updates().await.expect("subscribed"));
    let peer = Ed25519Keys::generate().expect("keys");
    let address = "quic://127.0.0.1:4200".parse().expect("valid");
    let body =
        NodeAdvertBody::new(peer.node_identity(), vec![WeightedAddress { address, weight: 1 }], None, 2, node.now())
            .expect("valid");
    let good = Advert::from_parts(body.clone(), peer.sign(&NodeAdvert::signing_bytes_of(&body)));
    node.offer_node_advert(good.clone()).await.expect("accepted");
    match tokio::time::timeout(std::time::Duration::from_secs(30), watcher.recv()).await.expect("within 30 s") {
        Some(Inbound::IdentityUpdated(update)) => {
            assert_eq!(update.key, RecordKey::Node(peer.node_identity()))
        }
        other => panic!("expected an identity update, got {other:?}"),
    }
    // Stale: same version again.
    assert!(node.offer_node_advert(good).await.is_err());
    // Forged: signed by another key.
    let mut forged_body = body;
    forged_body.version = 3;
    let other = Ed25519Keys::generate().expect("keys");
    let forged = Advert::from_parts(forged_body.clone(), other.sign(&NodeAdvert::signing_bytes_of(&forged_body)));
    assert!(node.offer_node_advert(forged).await.is_err());
    assert!(watcher.try_recv().is_none(), "refused adverts announce nothing");
}

/// A record store whose writes can be made to fail, as a full disk's do.
#[derive(Clone, Default)]
struct BreakableDisk {
    records: std::sync::Arc<parking_lot::Mutex<Vec<IdentityRecord>>>,
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RecordStore for BreakableDisk {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        Ok(self.records.lock().clone())
    }
    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io("disk full (simulated)".into()));
        }
        self.records.lock().push(record.clone());
        Ok(())
    }
    fn remove(&mut self, _key: &RecordKey) -> Result<(), StoreError> {
        Err(StoreError::Io("not used here".into()))
    }
}

#[tokio::test]
async fn a_record_the_disk_refuses_is_neither_kept_nor_announced() {
    let disk = BreakableDisk::default();
    let node = Node::builder().record_store(Box::new(disk.clone())).start().await.expect("start");
    let mut watcher = node.register_engine("watcher").expect("watcher");
    assert!(watcher.subscribe_identity_updates().await.expect("subscribed"));
    let written = disk.records.lock().len();
    disk.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let peer = Ed25519Keys::generate().expect("keys");
    let body = NodeAdvertBody::new(peer.node_identity(), vec![], None, 1, node.now()).expect("valid");
    let advert = Advert::from_parts(body.clone(), peer.sign(&NodeAdvert::signing_bytes_of(&body)));
    let err = node.offer_node_advert(advert.clone()).await.expect_err("the write failed");
    assert!(matches!(err, NodeError::Store(StoreError::Io(_))), "{err}");
    assert_eq!(node.lookup(RecordKey::Node(peer.node_identity())).await.expect("lookup"), None);
    assert!(watcher.try_recv().is_none(), "nothing announced");
    assert_eq!(disk.records.lock().len(), written);
    // Once the disk takes writes again, the same advert goes in.
    disk.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    node.offer_node_advert(advert).await.expect("accepted");
    assert!(node.lookup(RecordKey::Node(peer.node_identity())).await.expect("lookup").is_some());
}

#[tokio::test]
async fn inbound_messages_with_bad_signatures_are_rejected_and_change_nothing() {
    let node = Node::builder().start().await.expect("start");
    let mut b = node.register_engine("b").expect("b");
    let peer = Ed25519Keys::generate().expect("keys");
    let mut message = EngineMessage {
        src: EngineIdentity::new(peer.node_identity(), EngineName::new("x").expect("valid")),
        dst: engine_dst(&node, "b"),
        id: MessageId(1),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: proto(),
        body: Body::new(&b"hi"[..]).expect("small"),
        sig: None,
    };
    message.sig = Some(peer.sign(&message.signing_bytes()));
    let good = NodeMessage {
        src: peer.node_identity(),
        dst: node.identity(),
        payload: NodePayload::Engine(message.clone()),
        sig: None,
    };
    node.deliver_inbound(peer.node_identity(), good).await.expect("delivered");
    assert_eq!(next_message(&mut b).await, message);

    let mut tampered = message;
    tampered.body = Body::new(&b"HI"[..]).expect("small");
    let bad = NodeMessage {
        src: peer.node_identity(),
        dst: node.identity(),
        payload: NodePayload::Engine(tampered),
        sig: None,
    };
    let err = node.deliver_inbound(peer.node_identity(), bad).await.expect_err("bad signature");
    assert!(matches!(err, InboundRejection::BadSignature { .. }));
    assert!(err.disconnects_peer());
    assert!(b.try_recv().is_none());
    assert_eq!(node.stats().inbound_rejected, 1);
}

#[tokio::test]
async fn banned_peers_are_not_heard() {
    let node = Node::builder().start().await.expect("start");
    let _b = node.register_engine("b").expect("b");
    let peer = NodeIdentity::ed25519([4; 32]);
    node.set_trust(peer, Trust::BANNED).await.expect("ban");
    let message = EngineMessage {
        src: EngineIdentity::new(peer, EngineName::new("x").expect("valid")),
        dst: engine_dst(&node, "b"),
        id: MessageId(1),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: proto(),
        body: Body::default(),
        sig: None,
    };
    let inbound = NodeMessage { src: peer, dst: node.identity(), payload: NodePayload::Engine(message), sig: None };
    assert!(matches!(node.deliver_inbound(peer, inbound).await, Err(InboundRejection::Banned { .. })));
}

#[tokio::test]
async fn spawned_engines_run_as_tasks() {
    let node = Node::builder().start().await.expect("start");
    let echo = node
        .spawn_engine("echo", |mut me| async move {
            let mut answered = 0;
            while let Some(Inbound::Message(m)) = me.recv().await {
                me.reply(&m, m.body.as_bytes().clone()).await.expect("reply");
                answered += 1;
                if answered == 3 {
                    break;
                }
            }
            answered
        })
        .expect("spawned");
    let mut client = node.register_engine("client").expect("client");
    for i in 0..3u8 {
        client.send(engine_dst(&node, "echo"), proto(), vec![i]).await.expect("sent");
        assert_eq!(&next_message(&mut client).await.body.as_bytes()[..], &[i]);
    }
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), echo).await.expect("ends within 30 s");
    assert_eq!(answered.expect("joined"), 3);
}

#[tokio::test]
async fn after_shutdown_identity_requests_fail_cleanly() {
    let node = Node::builder().start().await.expect("start");
    node.shutdown().await;
    assert!(matches!(node.identity_records().await, Err(NodeError::Stopped)));
}

/// An engine the embedder hosts in the node core: it answers each command
/// with the command's body reversed, after a timer of 20 ms.
struct Reverser {
    protocol: ProtocolId,
    waiting: Vec<(Timestamp, EngineName, MessageId, Vec<u8>)>,
    ready: Vec<netmachine_engines::engine::Effect>,
}

impl netmachine_engines::engine::Timed for Reverser {
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.waiting.iter().map(|(at, ..)| *at).min()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let (due, later) = self.waiting.drain(..).partition(|(at, ..)| *at <= now);
        self.waiting = later;
        for (_, to, id, mut bytes) in due {
            bytes.reverse();
            let body = Body::new(bytes).expect("as small as it came");
            self.ready.push(netmachine_engines::engine::Effect::Deliver { to, reply_to: Some(id), body });
        }
    }
}

impl netmachine_engines::engine::ProtocolEngine for Reverser {
    fn protocol(&self) -> &ProtocolId {
        &self.protocol
    }

    fn handle(&mut self, input: netmachine_engines::engine::Input, now: Timestamp) {
        if let netmachine_engines::engine::Input::Command { from, message } = input {
            let at = now.saturating_add_millis(20);
            self.waiting.push((at, from, message.id, message.body.as_bytes().to_vec()));
        }
    }

    fn poll_effect(&mut self) -> Option<netmachine_engines::engine::Effect> {
        self.ready.pop()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[tokio::test]
async fn an_engine_the_embedder_hosts_in_the_core_answers_on_its_own_timer() {
    let node = Node::builder().start().await.expect("start");
    let protocol = ProtocolId::new("test/reverse", 1).expect("valid");
    let reverser = || Box::new(Reverser { protocol: protocol.clone(), waiting: Vec::new(), ready: Vec::new() });
    node.add_engine(reverser()).await.expect("a fresh protocol");
    assert!(matches!(node.add_engine(reverser()).await, Err(NodeError::Registry(_))), "one engine per protocol");
    let mut app = node.register_engine("app").expect("app");
    let own = DestinationIdentity::Node(node.identity());
    let asked = app.send(own, protocol.clone(), &b"abc"[..]).await.expect("sent");
    let answer = next_message(&mut app).await;
    assert_eq!(answer.reply_to, Some(asked));
    assert_eq!(&answer.body.as_bytes()[..], b"cba");
    node.shutdown().await;
}

#[tokio::test]
async fn a_restarted_node_still_holds_its_topic_keys_and_re_signs_their_adverts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Ed25519Keys::generate().expect("keygen");
    let pkcs8 = key.pkcs8().to_vec();
    let node = Node::builder().keys(key).data_dir(dir.path()).start().await.expect("start");
    let engine = node.register_engine("news").expect("engine");
    let topic = engine.create_topic(&["a"]).await.expect("topic");
    let mut first = node.readvertise_topic(topic, &["a"]).await.expect("re-signed while running");
    // Re-signed again and again within the same few milliseconds: each
    // is newer than the one before.
    for _ in 0..5 {
        let again = node.readvertise_topic(topic, &["a"]).await.expect("re-signed at once");
        assert!(again.version > first.version);
        first = again;
    }
    node.shutdown().await;
    let file = dir.path().join("topics").join(format!("{topic}.key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("kept on disk").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private, as the node key");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let keys = Ed25519Keys::from_pkcs8(&pkcs8).expect("same key");
    let node = Node::builder().keys(keys).data_dir(dir.path()).start().await.expect("restart");
    assert!(node.holds_topic_key(&topic));
    let again = node.readvertise_topic(topic, &["a", "b"]).await.expect("re-signed after the restart");
    assert!(again.version > first.version, "a newer advert");
    let other = netmachine_domain::TopicIdentity::new(Ed25519Keys::generate().expect("keygen").public());
    assert!(matches!(node.readvertise_topic(other, &[]).await, Err(NodeError::NoTopicKey(_))));
    node.shutdown().await;
}

/// An owner that leaves its own domain is still out of it after a restart
/// (its key is kept), and back in once it joins again.
#[tokio::test]
async fn an_owner_that_left_its_domain_stays_out_after_a_restart() {
    use netmachine_adapters::domains::{DomainFiles, Domains, PolicySpec};
    let dir = tempfile::tempdir().expect("tempdir");
    let pkcs8 = Ed25519Keys::generate().expect("keygen").pkcs8().to_vec();
    let start = || async {
        let keys = Ed25519Keys::from_pkcs8(&pkcs8).expect("same key");
        let node = Node::builder().keys(keys).data_dir(dir.path()).start().await.expect("start");
        let domains = Domains::start(&node, Some(DomainFiles::new(dir.path()))).await.expect("domains");
        (node, domains)
    };
    let (node, domains) = start().await;
    let (advert, _) = domains.create(PolicySpec::Open, 3600, false).await.expect("created");
    node.shutdown().await;
    let (node, domains) = start().await;
    assert!(domains.summary(&advert.id).is_some(), "an owner is back in its domain after a restart");
    domains.leave(advert.id).await.expect("left");
    assert!(domains.summary(&advert.id).is_none());
    node.shutdown().await;
    let (node, domains) = start().await;
    assert!(domains.summary(&advert.id).is_none(), "an owner that left stays out after a restart");
    assert!(DomainFiles::new(dir.path()).key_path(&advert.id).exists(), "its key is kept");
    domains.join(advert.clone(), None, None).await.expect("joins again");
    assert!(domains.summary(&advert.id).is_some());
    node.shutdown().await;
    let (node, domains) = start().await;
    assert!(domains.summary(&advert.id).is_some(), "joined again: back in after a restart");
    node.shutdown().await;
}
