use netmachine_domain::strategies;
use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::testing::{RecordingOutbound, TestSigner, TestVerifier};

const NOW: Timestamp = Timestamp(1_000_000);

fn name(s: &str) -> EngineName {
    EngineName::new(s).expect("valid test name")
}

struct Fixture {
    router: Router<EngineName>,
    signer: TestSigner,
    outbound: RecordingOutbound,
}

impl Fixture {
    fn new(engines: &[&str]) -> Self {
        let signer = TestSigner::node(1);
        let node = NodeIdentity::new(signer.0);
        let mut router = Router::new(node, RouterConfig::default());
        for e in engines {
            router.register_engine(name(e), name(e)).expect("fresh name");
        }
        Self { router, signer, outbound: RecordingOutbound::default() }
    }

    fn node(&self) -> NodeIdentity {
        self.router.node()
    }

    fn ports(&self) -> RouterPorts<'_> {
        RouterPorts { signer: &self.signer, outbound: &self.outbound }
    }

    fn message(&self, from: &str, dst: DestinationIdentity, id: u64) -> EngineMessage {
        EngineMessage {
            src: EngineIdentity::new(self.node(), name(from)),
            dst,
            id: MessageId(id),
            reply_to: None,
            expiry: None,
            scope: RoutingScope::Any,
            prefs: None,
            protocol: ProtocolId::new("test", 1).expect("valid"),
            body: Body::new(id.to_be_bytes().to_vec()).expect("small"),
            sig: None,
        }
    }

    fn to_engine(&self, to: &str) -> DestinationIdentity {
        DestinationIdentity::Engine(EngineIdentity::new(self.node(), name(to)))
    }

    fn topic_advert(&self, seed: u8, publishers: Vec<NodeIdentity>) -> TopicAdvert {
        let topic_signer = TestSigner(ExternalIdentity::ed25519([seed; 32]));
        let body = TopicAdvertBody::new(TopicIdentity::new(topic_signer.0), publishers, vec![], vec![], 1, NOW)
            .expect("valid advert");
        let sig = topic_signer.sign(&TopicAdvert::signing_bytes_of(&body));
        Advert::from_parts(body, sig)
    }
}

use crate::ports::Signer;

#[test]
fn local_unicast_reaches_the_named_engine() {
    let f = Fixture::new(&["a", "b"]);
    let msg = f.message("a", f.to_engine("b"), 7);
    match f.router.route_local(msg.clone(), NOW, f.ports()) {
        Ok(Routed::Local { to, message }) => {
            assert_eq!(to, name("b"));
            assert_eq!(message, msg);
        }
        other => panic!("expected local delivery, got {other:?}"),
    }
}

#[test]
fn no_route_names_the_destination() {
    let f = Fixture::new(&["a"]);
    let dst = f.to_engine("nobody");
    let err = f.router.route_local(f.message("a", dst.clone(), 1), NOW, f.ports()).expect_err("no such engine");
    assert_eq!(err, RouteError::NoRoute { dst: dst.clone() });
    assert!(err.to_string().contains("nobody@node1"), "{err}");
}

#[test]
fn an_unregistered_source_cannot_send() {
    let f = Fixture::new(&["a"]);
    let err = f.router.route_local(f.message("ghost", f.to_engine("a"), 1), NOW, f.ports()).expect_err("ghost");
    assert!(matches!(err, RouteError::UnknownSource { .. }));
}

#[test]
fn expired_messages_are_not_routed() {
    let f = Fixture::new(&["a", "b"]);
    let mut msg = f.message("a", f.to_engine("b"), 1);
    msg.expiry = Some(NOW);
    assert!(matches!(f.router.route_local(msg, NOW, f.ports()), Err(RouteError::Expired { .. })));
}

#[test]
fn remote_messages_go_out_through_the_transport_port_signed_when_asked() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let dst = DestinationIdentity::Engine(EngineIdentity::new(peer, name("b")));
    let routed = f.router.route_local(f.message("a", dst.clone(), 3), NOW, f.ports()).expect("routed");
    assert!(matches!(routed, Routed::Sent { to } if to == peer));
    let sent = f.outbound.take();
    assert_eq!(sent.len(), 1);
    let (to, node_message) = &sent[0];
    assert_eq!(*to, peer);
    assert_eq!(node_message.src, f.node());
    assert_eq!(node_message.dst, peer);
    let NodePayload::Engine(inner) = &node_message.payload else { panic!("engine payload expected") };
    assert_eq!(inner.sig, None, "one authenticated hop needs no signature by default");

    // A sender that signed keeps its signature; a router told to sign all does.
    let mut signed = f.message("a", dst.clone(), 4);
    signed.sig = Some(f.signer.sign(&signed.signing_bytes()));
    f.router.route_local(signed.clone(), NOW, f.ports()).expect("routed");
    let mut always = Fixture::new(&["a"]);
    always.router = Router::new(always.node(), RouterConfig { sign_remote: true, ..RouterConfig::default() });
    always.router.register_engine(name("a"), name("a")).expect("fresh");
    always.router.route_local(always.message("a", dst, 5), NOW, always.ports()).expect("routed");
    for (_, m) in f.outbound.take().into_iter().chain(always.outbound.take()) {
        let NodePayload::Engine(inner) = &m.payload else { panic!("engine payload expected") };
        crate::ports::verify_signed(&TestVerifier, inner).expect("signed by the node key");
    }
}

#[test]
fn remote_subscribers_receive_signed_events_from_the_publisher_node() {
    // A publishes a topic; B has a local subscriber.
    let mut a = Fixture::new(&["owner"]);
    let mut b = Fixture::new(&["reader"]);
    b.signer = TestSigner::node(2);
    b.router = Router::new(NodeIdentity::new(b.signer.0), RouterConfig::default());
    b.router.register_engine(name("reader"), name("reader")).expect("fresh");
    let advert = a.topic_advert(30, vec![a.node()]);
    let topic = advert.topic;
    a.router.create_topic(&name("owner"), advert.clone(), &TestVerifier).expect("created");
    b.router.learn_topic(advert).expect("known");
    b.router.subscribe(&name("reader"), &topic).expect("subscribed");
    assert_eq!(b.router.local_subscriber_count(&topic), 1);

    // B's request travels to A, which records B.
    let requests = b.router.subscription_requests(&topic, SubscriptionOp::Subscribe, NOW);
    assert_eq!(requests.len(), 1);
    b.router.route_local(requests[0].clone(), NOW, b.ports()).expect("sent");
    let (to, request) = b.outbound.take().pop().expect("request sent");
    assert_eq!(to, a.node());
    match a.router.route_inbound(b.node(), request, NOW, &TestVerifier) {
        Ok(Routed::Subscription { peer, topic: t, op: SubscriptionOp::Subscribe }) => {
            assert_eq!((peer, t), (b.node(), topic));
            a.router.apply_remote_subscription(peer, t, SubscriptionOp::Subscribe).expect("applied");
        }
        other => panic!("expected a subscription, got {other:?}"),
    }
    assert_eq!(a.router.remote_subscribers(&topic), vec![b.node()]);

    // A publishes: the event goes to B, signed once.
    let routed = a.router.route_local(a.message("owner", DestinationIdentity::Topic(topic), 7), NOW, a.ports());
    assert!(matches!(routed, Ok(Routed::Topic { remote: 1, .. })));
    let (to, event) = a.outbound.take().pop().expect("event sent");
    assert_eq!(to, b.node());
    match b.router.route_inbound(a.node(), event.clone(), NOW, &TestVerifier) {
        Ok(Routed::Topic { to, .. }) => assert_eq!(to, vec![name("reader")]),
        other => panic!("expected delivery to the reader, got {other:?}"),
    }

    // An unsigned event, or one from a node that is not a publisher, is refused.
    let mut unsigned = event.clone();
    if let NodePayload::Engine(inner) = &mut unsigned.payload {
        inner.sig = None;
    }
    assert!(b.router.route_inbound(a.node(), unsigned, NOW, &TestVerifier).is_err());
    let stranger = TestSigner::node(77);
    let stranger_id = NodeIdentity::new(stranger.0);
    let mut forged = a.message("owner", DestinationIdentity::Topic(topic), 8);
    forged.src.node = stranger_id;
    forged.sig = Some(stranger.sign(&forged.signing_bytes()));
    let forged = NodeMessage { src: stranger_id, dst: b.node(), payload: NodePayload::Engine(forged), sig: None };
    assert!(matches!(
        b.router.route_inbound(stranger_id, forged, NOW, &TestVerifier),
        Err(InboundRejection::NotAPublisher { .. })
    ));

    // Unsubscribing stops the events.
    a.router.apply_remote_subscription(b.node(), topic, SubscriptionOp::Unsubscribe).expect("applied");
    let routed = a.router.route_local(a.message("owner", DestinationIdentity::Topic(topic), 9), NOW, a.ports());
    assert!(matches!(routed, Ok(Routed::Topic { remote: 0, .. })));
    assert!(a.outbound.take().is_empty());
}

#[test]
fn only_a_publisher_node_takes_remote_subscriptions() {
    let mut a = Fixture::new(&["owner"]);
    let other = NodeIdentity::ed25519([8; 32]);
    let advert = a.topic_advert(31, vec![other]);
    let topic = advert.topic;
    a.router.learn_topic(advert).expect("known");
    assert!(a.router.apply_remote_subscription(other, topic, SubscriptionOp::Subscribe).is_err());
    let unknown = TopicIdentity::ed25519([99; 32]);
    assert_eq!(
        a.router.apply_remote_subscription(other, unknown, SubscriptionOp::Subscribe),
        Err(TopicError::Unknown(unknown))
    );
}

#[test]
fn local_scope_keeps_a_message_on_this_node() {
    let f = Fixture::new(&["a", "b"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let mut msg = f.message("a", DestinationIdentity::Node(peer), 1);
    msg.scope = RoutingScope::Local;
    assert!(matches!(f.router.route_local(msg, NOW, f.ports()), Err(RouteError::OutOfScope { .. })));
    assert!(f.outbound.take().is_empty());
    let mut local = f.message("a", f.to_engine("b"), 2);
    local.scope = RoutingScope::Local;
    assert!(matches!(f.router.route_local(local, NOW, f.ports()), Ok(Routed::Local { .. })));
}

#[test]
fn domain_scope_reaches_only_known_members() {
    let mut f = Fixture::new(&["a"]);
    let domain = DomainIdentity::ed25519([5; 32]);
    let member = NodeIdentity::ed25519([6; 32]);
    let outsider = NodeIdentity::ed25519([7; 32]);
    f.router.set_domain_members(domain, [member]);
    let mut to_member = f.message("a", DestinationIdentity::Node(member), 1);
    to_member.scope = RoutingScope::Domain(domain);
    let mut to_outsider = f.message("a", DestinationIdentity::Node(outsider), 2);
    to_outsider.scope = RoutingScope::Domain(domain);
    assert!(matches!(f.router.route_local(to_member, NOW, f.ports()), Ok(Routed::Sent { .. })));
    assert!(matches!(f.router.route_local(to_outsider, NOW, f.ports()), Err(RouteError::OutOfScope { .. })));
}

#[test]
fn a_refusing_transport_is_reported_to_the_sender() {
    let f = Fixture::new(&["a"]);
    f.outbound.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let peer = NodeIdentity::ed25519([9; 32]);
    let err = f.router.route_local(f.message("a", DestinationIdentity::Node(peer), 1), NOW, f.ports());
    assert!(matches!(err, Err(RouteError::Outbound { .. })));
}

#[test]
fn banned_nodes_are_neither_sent_to_nor_heard() {
    let mut f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    f.router.set_banned(peer, true);
    let err = f.router.route_local(f.message("a", DestinationIdentity::Node(peer), 1), NOW, f.ports());
    assert!(matches!(err, Err(RouteError::Banned { .. })));
    let inbound = inbound_from(peer, f.node(), "a", 1);
    assert!(matches!(f.router.route_inbound(peer, inbound, NOW, &TestVerifier), Err(InboundRejection::Banned { .. })));
}

#[test]
fn topics_deliver_to_subscribers_in_order_and_only_creator_deletes() {
    let mut f = Fixture::new(&["owner", "s1", "s2"]);
    let advert = f.topic_advert(3, vec![f.node()]);
    let topic = advert.topic;
    f.router.create_topic(&name("owner"), advert, &TestVerifier).expect("created");
    f.router.subscribe(&name("s2"), &topic).expect("subscribed");
    f.router.subscribe(&name("s1"), &topic).expect("subscribed");
    f.router.subscribe(&name("s1"), &topic).expect("idempotent");
    match f.router.route_local(f.message("owner", DestinationIdentity::Topic(topic), 1), NOW, f.ports()) {
        Ok(Routed::Topic { to, .. }) => assert_eq!(to, vec![name("s2"), name("s1")]),
        other => panic!("expected topic delivery, got {other:?}"),
    }
    assert!(matches!(f.router.delete_topic(&name("s1"), &topic), Err(TopicError::NotCreator { .. })));
    f.router.delete_topic(&name("owner"), &topic).expect("creator deletes");
    let err = f.router.route_local(f.message("owner", DestinationIdentity::Topic(topic), 2), NOW, f.ports());
    assert!(matches!(err, Err(RouteError::NoRoute { .. })));
}

#[test]
fn a_topic_with_a_forged_advert_is_refused() {
    let mut f = Fixture::new(&["owner"]);
    let mut advert = f.topic_advert(3, vec![f.node()]);
    advert.body.version += 1;
    let topic = advert.topic;
    assert_eq!(f.router.create_topic(&name("owner"), advert, &TestVerifier), Err(TopicError::BadAdvert { topic }));
    assert_eq!(f.router.topic_count(), 0);
}

#[test]
fn only_named_publishers_may_publish() {
    let mut f = Fixture::new(&["owner"]);
    let other = NodeIdentity::ed25519([8; 32]);
    let advert = f.topic_advert(3, vec![other]);
    let topic = advert.topic;
    f.router.create_topic(&name("owner"), advert, &TestVerifier).expect("created");
    let err = f.router.route_local(f.message("owner", DestinationIdentity::Topic(topic), 1), NOW, f.ports());
    assert_eq!(err.expect_err("not a publisher"), RouteError::NotAPublisher { topic });
}

fn inbound_from(peer: NodeIdentity, me: NodeIdentity, to: &str, id: u64) -> NodeMessage {
    let message = EngineMessage {
        src: EngineIdentity::new(peer, name("remote")),
        dst: DestinationIdentity::Engine(EngineIdentity::new(me, name(to))),
        id: MessageId(id),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: ProtocolId::new("test", 1).expect("valid"),
        body: Body::default(),
        sig: None,
    };
    NodeMessage { src: peer, dst: me, payload: NodePayload::Engine(message), sig: None }
}

#[test]
fn inbound_messages_are_attributed_to_the_channel_peer() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::new(TestSigner::node(9).0);
    let ok = inbound_from(peer, f.node(), "a", 1);
    assert!(matches!(f.router.route_inbound(peer, ok, NOW, &TestVerifier), Ok(Routed::Local { .. })));

    let liar = NodeIdentity::ed25519([10; 32]);
    let forged = inbound_from(liar, f.node(), "a", 2);
    let err = f.router.route_inbound(peer, forged, NOW, &TestVerifier).expect_err("impersonation");
    assert!(err.disconnects_peer());

    let mut foreign_engine = inbound_from(peer, f.node(), "a", 3);
    if let NodePayload::Engine(inner) = &mut foreign_engine.payload {
        inner.src.node = liar;
    }
    assert!(matches!(
        f.router.route_inbound(peer, foreign_engine, NOW, &TestVerifier),
        Err(InboundRejection::Impersonation { .. })
    ));
}

#[test]
fn inbound_bad_signatures_disconnect_and_good_ones_pass() {
    let f = Fixture::new(&["a"]);
    let peer_signer = TestSigner::node(9);
    let peer = NodeIdentity::new(peer_signer.0);
    let mut signed = inbound_from(peer, f.node(), "a", 1);
    if let NodePayload::Engine(inner) = &mut signed.payload {
        inner.sig = Some(peer_signer.sign(&inner.signing_bytes()));
    }
    assert!(f.router.route_inbound(peer, signed.clone(), NOW, &TestVerifier).is_ok());
    if let NodePayload::Engine(inner) = &mut signed.payload {
        inner.id = MessageId(99);
    }
    let err = f.router.route_inbound(peer, signed, NOW, &TestVerifier).expect_err("tampered");
    assert_eq!(err, InboundRejection::BadSignature { peer });
    assert!(err.disconnects_peer());
}

#[test]
fn inbound_local_scope_and_expired_are_dropped() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let mut local = inbound_from(peer, f.node(), "a", 1);
    let mut expired = local.clone();
    if let NodePayload::Engine(inner) = &mut local.payload {
        inner.scope = RoutingScope::Local;
    }
    if let NodePayload::Engine(inner) = &mut expired.payload {
        inner.expiry = Some(Timestamp(NOW.0 - 1));
    }
    assert!(matches!(
        f.router.route_inbound(peer, local, NOW, &TestVerifier),
        Err(InboundRejection::OutOfScope { .. })
    ));
    assert!(matches!(f.router.route_inbound(peer, expired, NOW, &TestVerifier), Err(InboundRejection::Expired { .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..2usize).prop_map(|(e, t)| Op::Subscribe(e, t)),
        (0..4usize, 0..2usize).prop_map(|(e, t)| Op::Unsubscribe(e, t)),
        (0..2usize).prop_map(Op::Publish),
    ]
}

proptest! {
    /// Every subscriber gets exactly the messages published on a topic while
    /// it was subscribed, in publication order.
    #[test]
    fn subscribers_get_exactly_what_was_published_while_subscribed(ops in proptest::collection::vec(op(), 0..200)) {
        let engines = ["e0", "e1", "e2", "e3"];
        let mut f = Fixture::new(&["owner", "e0", "e1", "e2", "e3"]);
        let topics: Vec<TopicIdentity> = (0..2u8)
            .map(|i| {
                let advert = f.topic_advert(20 + i, vec![f.node()]);
                let t = advert.topic;
                f.router.create_topic(&name("owner"), advert, &TestVerifier).expect("created");
                t
            })
            .collect();
        let mut subscribed = [[false; 2]; 4];
        let mut expected: Vec<Vec<u64>> = vec![Vec::new(); 4];
        let mut received: Vec<Vec<u64>> = vec![Vec::new(); 4];
        for (id, op) in ops.into_iter().enumerate() {
            match op {
                Op::Subscribe(e, t) => {
                    f.router.subscribe(&name(engines[e]), &topics[t]).expect("known topic");
                    subscribed[e][t] = true;
                }
                Op::Unsubscribe(e, t) => {
                    let was = f.router.unsubscribe(&name(engines[e]), &topics[t]).expect("known topic");
                    prop_assert_eq!(was, subscribed[e][t]);
                    subscribed[e][t] = false;
                }
                Op::Publish(t) => {
                    for e in 0..4 {
                        if subscribed[e][t] {
                            expected[e].push(id as u64);
                        }
                    }
                    let msg = f.message("owner", DestinationIdentity::Topic(topics[t]), id as u64);
                    let Ok(Routed::Topic { to, message, .. }) = f.router.route_local(msg, NOW, f.ports()) else {
                        return Err(TestCaseError::fail("publish must route to the topic"));
                    };
                    for engine in to {
                        let index = engines.iter().position(|n| name(n) == engine).expect("known engine");
                        received[index].push(message.id.0);
                    }
                }
            }
        }
        prop_assert_eq!(received, expected);
    }

    /// Routing never panics and a local source always gets an answer, for
    /// any destination.
    #[test]
    fn any_destination_gets_a_decision(dst in strategies::destination(), scope in strategies::routing_scope()) {
        let f = Fixture::new(&["a"]);
        let mut msg = f.message("a", dst, 1);
        msg.scope = scope;
        let outcome = f.router.route_local(msg, NOW, f.ports());
        let sent = f.outbound.take().len();
        match outcome {
            Ok(Routed::Sent { .. }) => prop_assert_eq!(sent, 1),
            _ => prop_assert_eq!(sent, 0),
        }
    }

    /// Inbound messages whose claimed source is not the channel peer are
    /// always rejected, whatever else they carry.
    #[test]
    fn inbound_from_the_wrong_source_is_always_rejected(message in strategies::node_message(), peer in strategies::node_identity()) {
        prop_assume!(message.src != peer);
        let f = Fixture::new(&["a"]);
        prop_assert!(f.router.route_inbound(peer, message, NOW, &TestVerifier).is_err());
    }
}

#[test]
fn a_dropped_message_earns_its_source_a_notice_but_a_notice_earns_none() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let source = EngineIdentity::new(peer, name("remote"));
    let protocol = ProtocolId::new("test", 1).expect("valid");
    let dropped = InboundRejection::Expired { peer, rule: RuleError::Expired { expiry: 1, now: 2 } };
    let notice = f.router.undeliverable_notice(&source, MessageId(77), &protocol, &dropped, NOW).expect("a notice");
    assert_eq!(notice.dst, DestinationIdentity::Engine(source.clone()));
    assert_eq!(decode_notice(notice.body.as_bytes()), Some((DropReason::Expired, 77)));
    // It travels like any message from this node's router.
    assert!(matches!(f.router.route_local(notice.clone(), NOW, f.ports()), Ok(Routed::Sent { .. })));
    assert!(f.router.undeliverable_notice(&source, MessageId(1), &notice.protocol, &dropped, NOW).is_none());
    let bad = InboundRejection::BadSignature { peer };
    assert!(f.router.undeliverable_notice(&source, MessageId(1), &protocol, &bad, NOW).is_none());
}

#[test]
fn a_full_engine_table_says_so_and_a_taken_name_says_so() {
    let signer = TestSigner::node(1);
    let config = RouterConfig { max_engines: 1, ..RouterConfig::default() };
    let mut router: Router<EngineName> = Router::new(NodeIdentity::new(signer.0), config);
    router.register_engine(name("a"), name("a")).expect("room for one");
    assert_eq!(router.register_engine(name("a"), name("a")), Err(RegistryError::NameTaken(name("a"))));
    assert_eq!(router.register_engine(name("b"), name("b")), Err(RegistryError::Full(1)));
}
