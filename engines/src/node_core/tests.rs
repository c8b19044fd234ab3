//! Two cores joined by a wire made of their own effects: what one writes,
//! the other reads, in order.

use std::collections::BTreeMap;

use netmachine_domain::*;

use super::*;
use crate::identity_store::{AdvertUpdate, IdentityStoreConfig};
use crate::metrics::Guarded;
use crate::random::SplitMix;
use crate::router::RouterConfig;
use crate::testing::{TestSigner, TestVerifier};
use crate::transport::{ConnectFailure, TransportConfig};

const T0: Timestamp = Timestamp(1_000_000);

mod early;

fn signer(seed: u8) -> TestSigner {
    TestSigner::node(seed)
}

fn id(seed: u8) -> NodeIdentity {
    NodeIdentity::new(signer(seed).0)
}

fn address(seed: u8) -> TransportAddress {
    format!("quic://127.0.0.1:{}", 4000 + u16::from(seed)).parse().expect("valid")
}

fn advert(seed: u8) -> NodeAdvert {
    advert_version(seed, 1)
}

fn advert_version(seed: u8, version: u64) -> NodeAdvert {
    let body =
        NodeAdvertBody::new(id(seed), vec![WeightedAddress { address: address(seed), weight: 1 }], None, version, T0)
            .expect("valid");
    let sig = signer(seed).sign(&NodeAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

/// One node: its core and what it has on disk.
struct Node {
    seed: u8,
    core: NodeCore<&'static str>,
    disk: BTreeMap<RecordKey, IdentityRecord>,
    inbox: Vec<(&'static str, Delivery)>,
    dials: Vec<(ConnId, NodeIdentity)>,
    writes: Vec<(ConnId, Frame)>,
    closes: Vec<(ConnId, CloseReason)>,
    /// Whether this host holds every message from a peer (as if every
    /// mailbox were full), and what it holds.
    hold_deliveries: bool,
    held: Vec<Receipt>,
    /// Whether this host keeps records off the disk for now, and which.
    hold_persists: bool,
    held_persists: Vec<Persist>,
}

impl Node {
    fn start(seed: u8, disk: BTreeMap<RecordKey, IdentityRecord>, boot: u64) -> Self {
        Self::start_with(seed, disk, boot, AdvertRateConfig::default())
    }

    fn start_with(seed: u8, disk: BTreeMap<RecordKey, IdentityRecord>, boot: u64, adverts: AdvertRateConfig) -> Self {
        let mut router = Router::new(id(seed), RouterConfig::default());
        router.register_engine(EngineName::new("app").expect("valid"), "app").expect("fresh");
        let transport = Transport::new(id(seed), TransportConfig::default(), Box::new(SplitMix::new(boot)));
        let identities =
            IdentityStore::open(id(seed), IdentityStoreConfig::default(), disk.values().cloned().collect());
        let config = CoreConfig {
            boot,
            repeat_window: 64,
            seed: boot,
            adverts,
            logs: Default::default(),
            engines: Default::default(),
        };
        let core =
            NodeCore::new(config, router, transport, identities, Box::new(signer(seed)), Box::new(TestVerifier), T0);
        let mut node = Self {
            seed,
            core,
            disk,
            inbox: Vec::new(),
            dials: Vec::new(),
            writes: Vec::new(),
            closes: Vec::new(),
            hold_deliveries: false,
            held: Vec::new(),
            hold_persists: false,
            held_persists: Vec::new(),
        };
        // A restart signs a newer advert, as the node does.
        node.core.set_own_advert(advert_version(seed, boot)).expect("own advert");
        node.run();
        node
    }

    /// Carries out effects; persisting is immediate.
    fn run(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                CoreEffect::Deliver { to, delivery, receipt } => {
                    if let (true, Some(receipt)) = (self.hold_deliveries, receipt) {
                        self.core.hold(receipt);
                        self.held.push(receipt);
                    }
                    self.inbox.push((to, delivery));
                }
                CoreEffect::Dial { attempt, peer, .. } => self.dials.push((attempt, peer)),
                CoreEffect::Write { conn, frame } => self.writes.push((conn, frame)),
                CoreEffect::Close { conn, reason } => self.closes.push((conn, reason)),
                CoreEffect::Persist(change) if self.hold_persists => self.held_persists.push(change),
                CoreEffect::Persist(change) => {
                    self.disk.insert(change.record().key(), change.record().clone());
                    self.core.persisted(change, T0).expect("fits");
                }
                CoreEffect::Forget(key) => {
                    self.disk.remove(&key);
                }
                CoreEffect::Notice(_) | CoreEffect::Acknowledged { .. } => {}
            }
        }
    }

    fn app(&self) -> EngineIdentity {
        EngineIdentity::new(id(self.seed), EngineName::new("app").expect("valid"))
    }

    fn message_to(&self, to: &Node, n: u64) -> EngineMessage {
        let body = Body::new(n.to_be_bytes().to_vec()).expect("small");
        EngineMessage::new(
            self.app(),
            DestinationIdentity::Engine(to.app()),
            MessageId(n),
            ProtocolId::new("t", 1).expect("valid"),
            body,
        )
    }
}

/// Dials `b` from `a` (which must have asked to) and runs the handshake.
/// Returns (a's connection, b's connection).
fn connect(a: &mut Node, b: &mut Node) -> (ConnId, ConnId) {
    let (attempt, peer) = a.dials.pop().expect("a asked to dial");
    assert_eq!(peer, id(b.seed));
    let theirs = b.core.accepted(id(a.seed), None);
    a.core.dialled(attempt, Ok(()), T0);
    a.run();
    shuttle(a, attempt, b, theirs);
    (attempt, theirs)
}

/// Moves frames both ways until neither side writes more.
fn shuttle(a: &mut Node, a_conn: ConnId, b: &mut Node, b_conn: ConnId) {
    for _ in 0..32 {
        let from_a: Vec<Frame> = take_writes(a, a_conn);
        let from_b: Vec<Frame> = take_writes(b, b_conn);
        if from_a.is_empty() && from_b.is_empty() {
            return;
        }
        let n = from_a.len();
        for (i, frame) in from_a.into_iter().enumerate() {
            b.core.frame(b_conn, frame, i + 1 == n, T0);
            b.run();
        }
        let n = from_b.len();
        for (i, frame) in from_b.into_iter().enumerate() {
            a.core.frame(a_conn, frame, i + 1 == n, T0);
            a.run();
        }
    }
    panic!("the two cores kept writing");
}

fn take_writes(node: &mut Node, conn: ConnId) -> Vec<Frame> {
    let (mine, rest): (Vec<_>, Vec<_>) = node.writes.drain(..).partition(|(c, _)| *c == conn);
    node.writes = rest;
    mine.into_iter().map(|(_, f)| f).collect()
}

/// Two nodes, `a` told of `b`, after a's message 1 to b has crossed a real
/// handshake: (a, b, a's connection, b's connection).
fn connected_pair() -> (Node, Node, ConnId, ConnId) {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut b = Node::start(2, BTreeMap::new(), 22);
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    a.core.send(a.message_to(&b, 1), T0).expect("routed");
    a.run();
    let (a_conn, b_conn) = connect(&mut a, &mut b);
    (a, b, a_conn, b_conn)
}

fn messages(node: &Node) -> Vec<u64> {
    node.inbox
        .iter()
        .filter_map(|(_, d)| match d {
            Delivery::Message(m) => Some(m.id.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_crosses_a_real_handshake_and_is_acknowledged() {
    let (a, b, _, _) = connected_pair();
    assert_eq!(messages(&b), vec![1]);
    let summary = a.core.transport().peer_summaries();
    assert_eq!(summary[0].inflight, 0, "acknowledged");
    assert!(a.core.transport().is_connected(&id(2)));
    // b holds no advert of a: a sent it in the handshake.
    assert!(b.core.identities().node(&id(1)).and_then(|r| r.advert.as_ref()).is_some());
    assert!(a.closes.is_empty() && b.closes.is_empty());
}

#[test]
fn a_restarted_node_relearns_its_records_from_its_own_disk() {
    let mut b = Node::start(2, BTreeMap::new(), 22);
    b.core.offer_advert(AdvertUpdate::Node(advert(3)), T0).expect("valid advert");
    b.core.set_trust(id(4), Trust(0)).expect("ban");
    b.run();
    let disk = b.disk.clone();
    let mut restarted = Node::start(2, disk, 23);
    // Its addresses came back from the store: a message to it dials.
    let body = Body::new(vec![1]).expect("small");
    let to = DestinationIdentity::Node(id(3));
    let message = EngineMessage::new(restarted.app(), to, MessageId(1), ProtocolId::new("t", 1).expect("valid"), body);
    restarted.core.send(message, T0).expect("routed");
    restarted.run();
    assert_eq!(restarted.dials.iter().map(|(_, peer)| *peer).collect::<Vec<_>>(), vec![id(3)]);
    assert!(restarted.core.router().is_banned(&id(4)), "the ban came back from the store");
}

#[test]
fn a_peer_that_impersonates_another_is_disconnected_and_its_sender_not_told() {
    let (a, mut b, _, b_conn) = connected_pair();
    let mut forged = a.message_to(&b, 2);
    forged.src.node = id(9);
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), forged)), true, T0);
    b.run();
    assert!(matches!(b.closes.as_slice(), [(c, CloseReason::Violation(_))] if *c == b_conn));
    assert_eq!(b.core.counters().violations, 1);
    assert_eq!(messages(&b), vec![1]);
}

#[test]
fn a_message_given_up_is_reported_to_its_sender() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    let b = Node::start(2, BTreeMap::new(), 22);
    let mut message = a.message_to(&b, 5);
    message.expiry = Some(T0.saturating_add_millis(50));
    a.core.send(message, T0).expect("queued");
    a.run();
    let (attempt, _) = a.dials.pop().expect("dialling");
    a.core.dialled(attempt, Err(ConnectFailure::Unreachable("no answer".into())), T0);
    a.run();
    a.core.handle_timeout(T0.saturating_add_millis(100));
    a.run();
    assert!(a
        .inbox
        .iter()
        .any(|(to, d)| *to == "app" && matches!(d, Delivery::Undeliverable { id: MessageId(5), .. })));
}

#[test]
fn a_drop_notice_goes_out_before_the_acknowledgement_that_covers_its_message() {
    let (a, mut b, _, b_conn) = connected_pair();
    let mut expired = a.message_to(&b, 2);
    expired.expiry = Some(T0);
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), expired)), true, T0);
    b.run();
    let kinds: Vec<&'static str> = take_writes(&mut b, b_conn)
        .iter()
        .map(|f| match f {
            Frame::Node(_) => "notice",
            Frame::Ack(_) => "ack",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["notice", "ack"]);
}

fn topic_advert(seed: u8, publisher: NodeIdentity) -> TopicAdvert {
    let signer = TestSigner::node(seed);
    let body =
        TopicAdvertBody::new(TopicIdentity::new(signer.0), vec![publisher], vec![], vec!["t"], 1, T0).expect("valid");
    let sig = signer.sign(&TopicAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

#[test]
fn a_dial_is_awaited_until_it_ends() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let b = Node::start(2, BTreeMap::new(), 22);
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    a.core.send(a.message_to(&b, 1), T0).expect("routed");
    a.run();
    let (attempt, _) = a.dials[0];
    assert!(a.core.is_dialling(attempt));
    // The core wakes when its Transport needs to (here: to forget b).
    assert!(a.core.poll_timeout().is_some_and(|due| due > T0));
    assert_eq!(a.core.poll_timeout(), a.core.transport().poll_timeout());
    a.core.dialled(attempt, Ok(()), T0);
    assert!(!a.core.is_dialling(attempt), "the stream is open: the handshake runs");
    assert!(!a.core.is_dialling(attempt + 100));
}

#[test]
fn the_first_local_subscriber_asks_the_publisher_and_a_connecting_peer_learns_the_topic() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut b = Node::start(2, BTreeMap::new(), 22);
    let app = EngineName::new("app").expect("valid");
    // A creates a topic it publishes; B knows A and the topic.
    let advert = a.create_topic(40);
    let topic = advert.topic;
    a.core.created_topic(topic);
    b.core.offer_advert(AdvertUpdate::Node(advert_of_a()), T0).expect("valid advert");
    b.core.offer_advert(AdvertUpdate::Topic(advert), T0).expect("valid advert");
    b.run();
    assert!(b.core.subscribe(&EngineName::new("ghost").expect("valid"), &topic, T0).is_err(), "no such engine");
    b.core.subscribe(&app, &topic, T0).expect("subscribed");
    b.run();
    assert_eq!(b.dials.len(), 1, "the first subscriber asks the publisher node");
    let sent_before = b.core.counters().sent_remote;
    assert_eq!(sent_before, 1);
    b.core.subscribe(&app, &topic, T0).expect("subscribed again");
    b.run();
    assert_eq!(b.core.counters().sent_remote, sent_before, "subscribing again asks nothing more");
    // A second local engine subscribing asks nothing more.
    b.core.router_mut().register_engine(EngineName::new("other").expect("valid"), "other").expect("fresh");
    b.core.subscribe(&EngineName::new("other").expect("valid"), &topic, T0).expect("subscribed");
    b.run();
    assert_eq!(b.core.counters().sent_remote, sent_before);
    let (b_conn, a_conn) = connect(&mut b, &mut a);
    // A took the request.
    assert_eq!(a.core.router().remote_subscribers(&topic), vec![id(2)]);
    let published = a.message_to_topic(topic, 9);
    a.core.send(published, T0).expect("published");
    a.run();
    shuttle(&mut b, b_conn, &mut a, a_conn);
    assert_eq!(messages(&b).iter().filter(|id| **id == 9).count(), 2, "both local subscribers");
    assert!(b.core.counters().local_delivered >= 2);
}

fn advert_of_a() -> NodeAdvert {
    advert_version(1, 11)
}

impl Node {
    /// Its `app` creates a topic it publishes, as both hosts do: in the
    /// Router, as created here, and its advert offered to the store.
    fn create_topic(&mut self, seed: u8) -> TopicAdvert {
        let advert = topic_advert(seed, id(self.seed));
        let app = EngineName::new("app").expect("valid");
        self.core.router_mut().create_topic(&app, advert.clone(), &TestVerifier).expect("created");
        self.core.created_topic(advert.topic);
        self.core.offer_advert(AdvertUpdate::Topic(advert.clone()), T0).expect("valid advert");
        self.run();
        advert
    }

    /// Learns node `a`'s advert and sends it message 1, which dials it.
    fn reach_a(&mut self) {
        self.core.offer_advert(AdvertUpdate::Node(advert_of_a()), T0).expect("valid advert");
        self.run();
        let to_a = EngineMessage::new(
            self.app(),
            DestinationIdentity::Engine(EngineIdentity::new(id(1), EngineName::new("app").expect("valid"))),
            MessageId(1),
            ProtocolId::new("t", 1).expect("valid"),
            Body::new(1u64.to_be_bytes().to_vec()).expect("small"),
        );
        self.core.send(to_a, T0).expect("routed");
        self.run();
    }

    fn message_to_topic(&self, topic: TopicIdentity, n: u64) -> EngineMessage {
        let body = Body::new(n.to_be_bytes().to_vec()).expect("small");
        EngineMessage::new(
            self.app(),
            DestinationIdentity::Topic(topic),
            MessageId(n),
            ProtocolId::new("t", 1).expect("valid"),
            body,
        )
    }
}

#[test]
fn a_peer_that_connects_learns_the_topics_created_here() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut c = Node::start(3, BTreeMap::new(), 33);
    let topic = a.create_topic(41).topic;
    c.reach_a();
    connect(&mut c, &mut a);
    assert!(c.core.identities().lookup(&RecordKey::Topic(topic)).is_some(), "learned in the handshake");
    assert!(c.core.router().topic_advert(&topic).is_some());
}

#[test]
fn a_topic_advert_still_on_its_way_to_the_disk_reaches_a_peer_once_it_is_there() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut c = Node::start(3, BTreeMap::new(), 33);
    a.hold_persists = true;
    let topic = a.create_topic(41).topic;
    c.reach_a();
    let (c_conn, a_conn) = connect(&mut c, &mut a);
    let learned = |c: &Node| c.core.identities().lookup(&RecordKey::Topic(topic)).is_some();
    assert!(!learned(&c), "not sent before a holds it: it could come back and make a's own copy stale");
    for change in std::mem::take(&mut a.held_persists) {
        a.core.persisted(change, T0).expect("commits");
    }
    a.run();
    shuttle(&mut c, c_conn, &mut a, a_conn);
    assert!(learned(&c), "spread once on disk");
}

#[test]
fn counters_say_what_happened() {
    let (a, mut b, _, b_conn) = connected_pair();
    let repeat = a.message_to(&b, 1);
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), repeat)), true, T0);
    let mut expired = a.message_to(&b, 2);
    expired.expiry = Some(T0);
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), expired)), true, T0);
    b.run();
    let counters = b.core.counters();
    assert_eq!((counters.inbound_delivered, counters.repeats_dropped, counters.inbound_rejected), (1, 1, 1));
    // A stream whose first frame is not a hello is a violation.
    let stray = b.core.accepted(id(9), None);
    b.core.frame(stray, Frame::Ack(Ack { received: 0 }), true, T0);
    b.run();
    assert_eq!(b.core.counters().violations, 1);
    assert!(matches!(b.closes.last(), Some((c, CloseReason::Violation(_))) if *c == stray));
}

#[test]
fn metrics_count_each_message_once_where_it_goes() {
    use crate::metrics::{DropReason, HandshakeFailure, InOut, PeerClass, Side};
    let (a, mut b, _, b_conn) = connected_pair();
    let ma = a.core.metrics();
    // a: its app engine sent one message, which went to an ephemeral peer.
    assert_eq!(ma.counts.by_class(PeerClass::Local), InOut { messages_in: 1, messages_out: 0 });
    assert_eq!(ma.counts.by_class(PeerClass::Ephemeral), InOut { messages_in: 0, messages_out: 1 });
    assert_eq!(ma.counts.by_engine().collect::<Vec<_>>(), vec![("app", InOut { messages_in: 0, messages_out: 1 })]);
    assert_eq!(ma.connections.established, 1);
    assert_eq!(ma.ephemeral.connected_peers, 1);
    // b: taken in from the peer, handed to its app engine.
    let mb = b.core.metrics();
    assert_eq!(mb.counts.by_class(PeerClass::Ephemeral), InOut { messages_in: 1, messages_out: 0 });
    assert_eq!(mb.counts.by_class(PeerClass::Local), InOut { messages_in: 0, messages_out: 1 });
    assert_eq!(mb.counts.by_engine().collect::<Vec<_>>(), vec![("app", InOut { messages_in: 1, messages_out: 0 })]);

    // A repeat and an expired message are drops, each under its reason.
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), a.message_to(&b, 1))), true, T0);
    let mut expired = a.message_to(&b, 2);
    expired.expiry = Some(T0);
    b.core.frame(b_conn, Frame::Node(NodeMessage::carrying(id(1), id(2), expired)), true, T0);
    // A stream whose first frame is not a hello fails its handshake.
    let stray = b.core.accepted(id(9), None);
    assert_eq!(b.core.metrics().connections.handshaking, 1, "a stream awaiting its hello");
    b.core.frame(stray, Frame::Ack(Ack { received: 0 }), true, T0);
    b.run();
    let mb = b.core.metrics();
    assert_eq!(mb.counts.drops(DropReason::Repeat), 1);
    assert_eq!(mb.counts.drops(DropReason::Expired), 1);
    assert_eq!(mb.counts.drops(DropReason::QueueFull), 0);
    assert_eq!(mb.counts.handshake_failures(Side::Inbound, HandshakeFailure::BadHello), 1);
    // The expired one was taken in (then dropped); the repeat never reached the router.
    assert_eq!(mb.counts.by_class(PeerClass::Ephemeral).messages_in, 2);
    assert_eq!(mb.counts.by_class(PeerClass::Local).messages_out, 1);

    // A dial that fails is a handshake failure of this side.
    let mut c = Node::start(3, BTreeMap::new(), 33);
    c.core.offer_advert(AdvertUpdate::Node(advert(4)), T0).expect("valid advert");
    c.run();
    c.core.send(c.message_to(&Node::start(4, BTreeMap::new(), 44), 1), T0).expect("queued");
    c.run();
    assert_eq!(c.core.metrics().connections.dialling, 1);
    // A message for a node with no known address is refused: a drop.
    let nowhere = EngineMessage::new(
        c.app(),
        DestinationIdentity::Engine(EngineIdentity::new(id(7), EngineName::new("app").expect("valid"))),
        MessageId(9),
        ProtocolId::new("t", 1).expect("valid"),
        Body::new(vec![1]).expect("small"),
    );
    assert!(c.core.send(nowhere, T0).is_err());
    assert_eq!(c.core.metrics().counts.drops(DropReason::NoAddress), 1);
    let (attempt, _) = c.dials.pop().expect("dialling");
    c.core.dialled(attempt, Err(ConnectFailure::WrongIdentity), T0);
    c.run();
    assert_eq!(c.core.metrics().counts.handshake_failures(Side::Outbound, HandshakeFailure::WrongIdentity), 1);
    // An engine that leaves takes its row with it.
    let app = EngineName::new("app").expect("valid");
    assert_eq!(c.core.unregister_engine(&app), Some("app"));
    assert_eq!(c.core.metrics().counts.by_engine().count(), 0);
}

#[test]
fn a_topic_event_counts_once_for_each_local_subscriber() {
    use crate::metrics::{InOut, PeerClass};
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let topic = a.create_topic(41).topic;
    a.core.subscribe(&EngineName::new("app").expect("valid"), &topic, T0).expect("subscribed");
    a.core.send(a.message_to_topic(topic, 7), T0).expect("published");
    a.run();
    assert_eq!(messages(&a), vec![7]);
    let m = a.core.metrics();
    assert_eq!(m.counts.by_class(PeerClass::Local), InOut { messages_in: 1, messages_out: 1 });
    assert_eq!(m.counts.by_engine().collect::<Vec<_>>(), vec![("app", InOut { messages_in: 1, messages_out: 1 })]);
}

#[test]
fn a_closed_connection_gives_back_what_it_had_not_had_acknowledged() {
    let (mut a, b, a_conn, _) = connected_pair();
    // Written, then the connection is lost before it arrives.
    a.core.send(a.message_to(&b, 2), T0).expect("routed");
    a.run();
    assert!(!take_writes(&mut a, a_conn).is_empty());
    a.core.closed(a_conn, CloseReason::Lost("reset".into()), T0);
    a.run();
    assert!(!a.core.transport().is_connected(&id(2)));
    assert_eq!(a.core.transport().peer_summaries()[0].queued, 1, "back in the queue to be sent again");
    // Shutting down gives it up, and its sender hears so.
    a.core.shutdown(T0);
    a.run();
    assert!(a.inbox.iter().any(|(_, d)| matches!(d, Delivery::Undeliverable { id: MessageId(2), .. })));
    assert_eq!(a.core.counters().undeliverable, 1);
}

#[test]
fn a_permanent_peer_is_dialled_unless_banned_and_watchers_hear_of_it() {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    assert!(a.core.subscribe_identity_updates(EngineName::new("app").expect("valid")));
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    assert!(a.dials.is_empty(), "an ephemeral peer is not dialled for nothing");
    assert!(a.inbox.iter().any(|(to, d)| *to == "app" && matches!(d, Delivery::IdentityUpdated(_))));
    a.core.set_permanence(id(2), Permanence::Permanent).expect("stored");
    a.run();
    assert_eq!(a.dials.iter().map(|(_, p)| *p).collect::<Vec<_>>(), vec![id(2)]);
    // A banned permanent peer is not dialled.
    a.core.offer_advert(AdvertUpdate::Node(advert(3)), T0).expect("valid advert");
    a.core.set_trust(id(3), Trust(0)).expect("stored");
    a.core.set_permanence(id(3), Permanence::Permanent).expect("stored");
    a.run();
    assert!(!a.dials.iter().any(|(_, p)| *p == id(3)));
}

#[test]
fn a_held_delivery_is_acknowledged_only_once_it_and_all_before_it_are_released() {
    let (mut a, mut b, a_conn, b_conn) = connected_pair();
    b.hold_deliveries = true;
    for n in [2, 3] {
        a.core.send(a.message_to(&b, n), T0).expect("routed");
        a.run();
    }
    shuttle(&mut a, a_conn, &mut b, b_conn);
    assert_eq!(messages(&b), vec![1, 2, 3]);
    let inflight = |a: &Node| a.core.transport().peer_summaries()[0].inflight;
    assert_eq!(inflight(&a), 2, "both held, neither acknowledged");
    let held = std::mem::take(&mut b.held);
    b.core.release(held[1]);
    b.run();
    shuttle(&mut a, a_conn, &mut b, b_conn);
    assert_eq!(inflight(&a), 2, "the first held one still holds back the count");
    b.core.release(held[0]);
    b.run();
    shuttle(&mut a, a_conn, &mut b, b_conn);
    assert_eq!(inflight(&a), 0, "both released: acknowledged");
}

// ---- hosted engines ---------------------------------------------------------

mod hosted {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::{Effect, Input, Notice, ProtocolEngine};
    use crate::ping::{self, Outcome, PING_PROTOCOL, PING_VERSION};
    use crate::RegistryError;

    fn ping_request(from: &Node, peer: NodeIdentity, n: u64) -> EngineMessage {
        let protocol = ProtocolId::new(PING_PROTOCOL, PING_VERSION).expect("valid");
        EngineMessage::new(
            from.app(),
            DestinationIdentity::Node(id(from.seed)),
            MessageId(n),
            protocol,
            ping::request(peer),
        )
    }

    fn ping_outcomes(node: &Node) -> Vec<(Option<MessageId>, Outcome)> {
        node.inbox
            .iter()
            .filter_map(|(to, d)| match d {
                Delivery::Message(m) if *to == "app" && m.protocol.name.as_str() == PING_PROTOCOL => {
                    Some((m.reply_to, Outcome::decode(&m.body).expect("an outcome")))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_local_engine_pings_a_peer_through_the_engines_both_cores_host() {
        let (mut a, mut b, a_conn, b_conn) = connected_pair();
        a.core.send(ping_request(&a, id(2), 70), T0).expect("routed to the ping engine");
        a.run();
        shuttle(&mut a, a_conn, &mut b, b_conn);
        assert_eq!(ping_outcomes(&a), vec![(Some(MessageId(70)), Outcome::Answered { peer: id(2), rtt_ms: 0 })]);
        assert!(ping_outcomes(&b).is_empty(), "b's engine answered its peer, not a local engine");
        let ping_deadline = T0.saturating_add_millis(10_000);
        assert!(a.core.poll_timeout().is_none_or(|at| at > ping_deadline), "the answered ping's timer is gone");
    }

    #[test]
    fn a_ping_of_an_unreachable_peer_times_out_on_the_cores_timer() {
        let mut a = Node::start(1, BTreeMap::new(), 11);
        a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
        a.run();
        let _ = a.core.take_sooner_timeout();
        a.core.send(ping_request(&a, id(2), 5), T0).expect("routed");
        a.run();
        assert!(a.core.take_sooner_timeout(), "the ping's timer is the soonest; a sleeping host must wake");
        let deadline = T0.saturating_add_millis(10_000);
        assert!(a.core.poll_timeout().is_some_and(|at| at <= deadline));
        for _ in 0..64 {
            let Some(at) = a.core.poll_timeout().filter(|at| *at <= deadline) else { break };
            a.core.handle_timeout(at);
            a.run();
        }
        assert_eq!(ping_outcomes(&a), vec![(Some(MessageId(5)), Outcome::TimedOut { peer: id(2) })]);
    }

    /// Records what reaches it; answers every message from a peer with a
    /// disconnect, and sets its one timer as many ms on as a command's
    /// first byte says; a command of 0 asks it to send to its own node, and
    /// of 0 then `n`, to node `n`.
    struct Recorder {
        protocol: ProtocolId,
        seen: Arc<Mutex<Vec<Input>>>,
        effects: Vec<Effect>,
        timer: Option<Timestamp>,
    }

    impl crate::engine::Timed for Recorder {
        fn poll_timeout(&self) -> Option<Timestamp> {
            self.timer
        }
        fn handle_timeout(&mut self, now: Timestamp) {
            if self.timer.is_some_and(|at| at <= now) {
                self.timer = None;
            }
        }
    }

    impl ProtocolEngine for Recorder {
        fn protocol(&self) -> &ProtocolId {
            &self.protocol
        }
        fn handle(&mut self, input: Input, now: Timestamp) {
            // Every engine hears the node's own advert; these tests look at
            // the rest.
            if matches!(input, Input::OwnAdvert(_)) {
                return;
            }
            match &input {
                Input::FromPeer { peer, .. } => {
                    self.effects.push(Effect::Disconnect { peer: *peer, why: "recorded".into() });
                }
                Input::Command { message, .. } => match message.body.as_bytes().first().copied().unwrap_or(5) {
                    0 => {
                        let peer = message.body.as_bytes().get(1).map_or(message.src.node, |n| id(*n));
                        self.effects.push(Effect::SendToPeer { peer, body: message.body.clone() })
                    }
                    after => self.timer = Some(now.saturating_add_millis(u64::from(after))),
                },
                Input::Notice(_) | Input::FromEngine { .. } | Input::OwnAdvert(_) => {}
            }
            self.seen.lock().expect("not poisoned").push(input);
        }
        fn poll_effect(&mut self) -> Option<Effect> {
            self.effects.pop()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn recorder(name: &str) -> (Box<Recorder>, Arc<Mutex<Vec<Input>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let protocol = ProtocolId::new(name, 1).expect("valid");
        (Box::new(Recorder { protocol, seen: seen.clone(), effects: Vec::new(), timer: None }), seen)
    }

    #[test]
    fn an_added_engine_hears_of_peers_and_takes_its_protocols_messages() {
        let mut a = Node::start(1, BTreeMap::new(), 11);
        let (engine, seen) = recorder("test/record");
        a.core.add_engine(engine, T0).expect("a fresh protocol");
        let (twice, _) = recorder("test/record");
        assert!(matches!(a.core.add_engine(twice, T0), Err(RegistryError::ProtocolTaken(_))));
        let (ping_again, _) = recorder(PING_PROTOCOL);
        assert!(matches!(a.core.add_engine(ping_again, T0), Err(RegistryError::ProtocolTaken(_))), "the registry's");
        let mut b = Node::start(2, BTreeMap::new(), 22);
        a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
        a.run();
        a.core.send(a.message_to(&b, 1), T0).expect("routed");
        a.run();
        let (a_conn, b_conn) = connect(&mut a, &mut b);
        assert_eq!(*seen.lock().expect("not poisoned"), vec![Input::Notice(Notice::PeerConnected(id(2)))]);
        // b sends under the recorder's protocol to node a as a whole.
        let body = Body::new(vec![7]).expect("small");
        let protocol = ProtocolId::new("test/record", 1).expect("valid");
        let to_a = EngineMessage::new(b.app(), DestinationIdentity::Node(id(1)), MessageId(3), protocol, body);
        b.core.send(to_a.clone(), T0).expect("routed");
        b.run();
        shuttle(&mut a, a_conn, &mut b, b_conn);
        assert_eq!(seen.lock().expect("not poisoned").get(1), Some(&Input::FromPeer { peer: id(2), message: to_a }));
        // Its disconnect closed the connection, for its reason.
        assert!(matches!(a.closes.as_slice(), [(c, CloseReason::Dropped(why))] if *c == a_conn && why == "recorded"));
        a.core.closed(a_conn, CloseReason::Dropped("recorded".into()), T0);
        a.run();
        assert_eq!(seen.lock().expect("not poisoned").get(2), Some(&Input::Notice(Notice::PeerGone(id(2)))));
    }

    #[test]
    fn an_engines_message_to_a_peer_with_no_address_known_is_unreachable_at_once() {
        let mut a = Node::start(1, BTreeMap::new(), 11);
        let (engine, seen) = recorder("test/record");
        a.core.add_engine(engine, T0).expect("a fresh protocol");
        let protocol = ProtocolId::new("test/record", 1).expect("valid");
        let send_to = |n: u8| {
            let body = Body::new(vec![0, n]).expect("small");
            EngineMessage::new(
                a.app(),
                DestinationIdentity::Node(id(1)),
                MessageId(u64::from(n)),
                protocol.clone(),
                body,
            )
        };
        let (unknown, known) = (send_to(9), send_to(2));
        a.core.send(unknown, T0).expect("routed to the engine");
        a.run();
        assert_eq!(seen.lock().expect("not poisoned").last(), Some(&Input::Notice(Notice::PeerUnreachable(id(9)))));
        // A peer whose advert is known is dialled instead: nothing is heard yet.
        a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
        a.run();
        a.core.send(known, T0).expect("routed to the engine");
        a.run();
        assert!(matches!(seen.lock().expect("not poisoned").last(), Some(Input::Command { .. })));
    }

    #[test]
    fn an_engine_added_later_hears_of_the_peers_connected_already() {
        let (mut a, _b, _, _) = connected_pair();
        let (engine, seen) = recorder("test/record");
        a.core.add_engine(engine, T0).expect("a fresh protocol");
        assert_eq!(*seen.lock().expect("not poisoned"), vec![Input::Notice(Notice::PeerConnected(id(2)))]);
    }

    #[test]
    fn an_engines_timer_wakes_the_host_and_fires_when_due() {
        let mut a = Node::start(1, BTreeMap::new(), 11);
        let (engine, _) = recorder("test/record");
        a.core.add_engine(engine, T0).expect("a fresh protocol");
        let _ = a.core.take_sooner_timeout();
        let app = a.app();
        let command = |after: u8| {
            let protocol = ProtocolId::new("test/record", 1).expect("valid");
            let body = Body::new(vec![after]).expect("small");
            EngineMessage::new(app.clone(), DestinationIdentity::Node(id(1)), MessageId(9), protocol, body)
        };
        // Nothing else changes here: whether the host must wake is the
        // engine's timer moving sooner, and only that.
        for (after, sooner) in [(5, true), (5, false), (9, false), (5, true)] {
            a.core.send(command(after), T0).expect("routed to the engine");
            a.run();
            assert_eq!(a.core.take_sooner_timeout(), sooner, "a timer {after} ms on");
        }
        let due = T0.saturating_add_millis(5);
        assert_eq!(a.core.poll_timeout(), Some(due));
        // An engine's message to its own node is dropped: it would come
        // back to the engine as a command, and could loop.
        a.core.send(command(0), T0).expect("routed to the engine");
        a.run();
        assert!(a.dials.is_empty() && a.writes.is_empty(), "nothing leaves the node");
        a.core.handle_timeout(T0.saturating_add_millis(4));
        assert_eq!(a.core.poll_timeout(), Some(due), "not due yet");
        a.core.handle_timeout(due);
        assert!(a.core.poll_timeout().is_none_or(|at| at > due), "fired");
    }
}

/// Guards the identity store, the disk and the spread: a peer sending
/// adverts faster than its rate has the excess dropped unread, and once it
/// keeps on it is disconnected and trusted less.
#[test]
fn a_peer_flooding_adverts_is_slowed_then_disconnected_and_trusted_less() {
    let adverts = AdvertRateConfig { burst: 4, per_second: 1, refusals_to_disconnect: 8, trust_penalty: 40 };
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut b = Node::start_with(2, BTreeMap::new(), 22, adverts);
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    a.core.send(a.message_to(&b, 1), T0).expect("routed");
    a.run();
    let (_, b_conn) = connect(&mut a, &mut b);
    let records = b.core.metrics().identity_records;
    // The handshake's own node advert took one of the four.
    for seed in 10..13 {
        b.core.frame(b_conn, Frame::TopicAdvert(topic_advert(seed, id(1))), true, T0);
        b.run();
    }
    assert_eq!(b.core.metrics().identity_records, records + 3, "the burst is taken");
    for seed in 13..20 {
        b.core.frame(b_conn, Frame::TopicAdvert(topic_advert(seed, id(1))), true, T0);
        b.run();
    }
    assert_eq!(b.core.metrics().identity_records, records + 3, "the rest are dropped unread");
    assert!(b.closes.is_empty(), "slowed, not yet disconnected");
    assert_eq!(b.core.metrics().counts.guarded(Guarded::AdvertOverRate), 7);
    b.core.frame(b_conn, Frame::TopicAdvert(topic_advert(20, id(1))), true, T0);
    b.run();
    assert!(
        matches!(b.closes.as_slice(), [(conn, CloseReason::Violation(_))] if *conn == b_conn),
        "disconnected: {:?}",
        b.closes
    );
    assert_eq!(b.core.metrics().counts.guarded(Guarded::AdvertSenderDisconnected), 1);
    assert_eq!(b.core.identities().trust(&id(1)), Trust(88), "its trust fell by the penalty");
}
