use netmachine_domain::strategies;
use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::testing::{TestSigner, TestVerifier};

const NOW: Timestamp = Timestamp(1_000_000);

fn name(s: &str) -> EngineName {
    EngineName::new(s).expect("valid test name")
}

/// What the Router said should go to other nodes, in order.
#[derive(Default)]
struct Outbox(std::cell::RefCell<Vec<(NodeIdentity, NodeMessage)>>);

impl Outbox {
    fn take(&self) -> Vec<(NodeIdentity, NodeMessage)> {
        self.0.take()
    }
}

struct Fixture {
    router: Router<EngineName>,
    signer: TestSigner,
    outbound: Outbox,
}

impl Fixture {
    fn new(engines: &[&str]) -> Self {
        let signer = TestSigner::node(1);
        let node = NodeIdentity::new(signer.0);
        let mut router = Router::new(node, RouterConfig::default());
        for e in engines {
            router.register_engine(name(e), name(e)).expect("fresh name");
        }
        Self { router, signer, outbound: Outbox::default() }
    }

    fn node(&self) -> NodeIdentity {
        self.router.node()
    }

    /// Routes a local engine's message and keeps what goes to other nodes.
    fn route(&self, message: EngineMessage) -> Result<Routed<EngineName>, RouteError> {
        let routed = self.router.route_local(message, NOW, &self.signer)?;
        match &routed {
            Routed::Remote(m) => self.outbound.0.borrow_mut().push((m.dst, m.clone())),
            Routed::Topic { remote, .. } => {
                self.outbound.0.borrow_mut().extend(remote.iter().map(|m| (m.dst, m.clone())));
            }
            _ => {}
        }
        Ok(routed)
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
        self.topic_advert_version(seed, publishers, 1)
    }

    fn topic_advert_version(&self, seed: u8, publishers: Vec<NodeIdentity>, version: u64) -> TopicAdvert {
        let topic_signer = TestSigner(ExternalIdentity::ed25519([seed; 32]));
        let body = TopicAdvertBody::new(TopicIdentity::new(topic_signer.0), publishers, vec![], vec![], version, NOW)
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
    match f.route(msg.clone()) {
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
    let err = f.route(f.message("a", dst.clone(), 1)).expect_err("no such engine");
    assert_eq!(err, RouteError::NoRoute { dst: dst.clone() });
    assert!(err.to_string().contains("nobody@node1"), "{err}");
}

#[test]
fn an_unregistered_source_cannot_send() {
    let f = Fixture::new(&["a"]);
    let err = f.route(f.message("ghost", f.to_engine("a"), 1)).expect_err("ghost");
    assert!(matches!(err, RouteError::UnknownSource { .. }));
}

#[test]
fn expired_messages_are_not_routed() {
    let f = Fixture::new(&["a", "b"]);
    let mut msg = f.message("a", f.to_engine("b"), 1);
    msg.expiry = Some(NOW);
    assert!(matches!(f.route(msg), Err(RouteError::Expired { .. })));
}

#[test]
fn remote_messages_go_out_through_the_transport_port_signed_when_asked() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let dst = DestinationIdentity::Engine(EngineIdentity::new(peer, name("b")));
    let routed = f.route(f.message("a", dst.clone(), 3)).expect("routed");
    assert!(matches!(&routed, Routed::Remote(m) if m.dst == peer));
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
    f.route(signed.clone()).expect("routed");
    let mut always = Fixture::new(&["a"]);
    always.router = Router::new(always.node(), RouterConfig { sign_remote: true, ..RouterConfig::default() });
    always.router.register_engine(name("a"), name("a")).expect("fresh");
    always.route(always.message("a", dst, 5)).expect("routed");
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
    b.route(requests[0].clone()).expect("sent");
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
    let routed = a.route(a.message("owner", DestinationIdentity::Topic(topic), 7));
    assert!(matches!(routed, Ok(Routed::Topic { ref remote, .. }) if remote.len() == 1));
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
    let routed = a.route(a.message("owner", DestinationIdentity::Topic(topic), 9));
    assert!(matches!(routed, Ok(Routed::Topic { ref remote, .. }) if remote.is_empty()));
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
    assert!(matches!(f.route(msg), Err(RouteError::OutOfScope { .. })));
    assert!(f.outbound.take().is_empty());
    let mut local = f.message("a", f.to_engine("b"), 2);
    local.scope = RoutingScope::Local;
    assert!(matches!(f.route(local), Ok(Routed::Local { .. })));
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
    assert!(matches!(f.route(to_member), Ok(Routed::Remote(_))));
    assert!(matches!(f.route(to_outsider), Err(RouteError::OutOfScope { .. })));
}

#[test]
fn a_domain_scoped_message_goes_to_a_certified_peer_only_while_its_certificate_holds() {
    let mut f = Fixture::new(&["a"]);
    let domain = DomainIdentity::ed25519([5; 32]);
    let peer = NodeIdentity::ed25519([6; 32]);
    let scoped = |f: &Fixture, id| {
        let mut message = f.message("a", DestinationIdentity::Node(peer), id);
        message.scope = RoutingScope::Domain(domain);
        message
    };
    assert!(matches!(f.route(scoped(&f, 1)), Err(RouteError::OutOfScope { .. })), "no certificate seen");
    f.router.certify(domain, peer, Timestamp(NOW.0 + 1_000));
    assert!(matches!(f.route(scoped(&f, 2)), Ok(Routed::Remote(_))), "certified: sent");
    let later = Timestamp(NOW.0 + 1_000);
    let outcome = f.router.route_local(scoped(&f, 3), later, &f.signer);
    assert!(matches!(outcome, Err(RouteError::OutOfScope { .. })), "its certificate expired: not sent");
}

#[test]
fn a_domain_scoped_message_is_taken_only_from_a_certified_member() {
    let mut f = Fixture::new(&["a"]);
    let domain = DomainIdentity::ed25519([5; 32]);
    let peer = NodeIdentity::ed25519([6; 32]);
    let me = f.node();
    let scoped = || {
        let mut message = inbound_from(peer, me, "a", 1);
        if let NodePayload::Engine(inner) = &mut message.payload {
            inner.scope = RoutingScope::Domain(domain);
        }
        message
    };
    let outcome = f.router.route_inbound(peer, scoped(), NOW, &TestVerifier);
    assert!(matches!(outcome, Err(InboundRejection::OutOfScope { .. })), "no certificate seen: dropped");
    f.router.certify(domain, peer, Timestamp(NOW.0 + 1_000));
    assert!(f.router.route_inbound(peer, scoped(), NOW, &TestVerifier).is_ok(), "certified: taken");
    let later = Timestamp(NOW.0 + 1_000);
    let outcome = f.router.route_inbound(peer, scoped(), later, &TestVerifier);
    assert!(matches!(outcome, Err(InboundRejection::OutOfScope { .. })), "its certificate expired: dropped");
}

#[test]
fn banned_nodes_are_neither_sent_to_nor_heard() {
    let mut f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    f.router.set_banned(peer, true);
    let err = f.route(f.message("a", DestinationIdentity::Node(peer), 1));
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
    match f.route(f.message("owner", DestinationIdentity::Topic(topic), 1)) {
        Ok(Routed::Topic { to, .. }) => assert_eq!(to, vec![name("s2"), name("s1")]),
        other => panic!("expected topic delivery, got {other:?}"),
    }
    assert!(matches!(f.router.delete_topic(&name("s1"), &topic), Err(TopicError::NotCreator { .. })));
    f.router.delete_topic(&name("owner"), &topic).expect("creator deletes");
    let err = f.route(f.message("owner", DestinationIdentity::Topic(topic), 2));
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
    let err = f.route(f.message("owner", DestinationIdentity::Topic(topic), 1));
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
                    let Ok(Routed::Topic { to, message, .. }) = f.route(msg) else {
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

    /// Every destination, in every scope, gets the decision the routing
    /// rules give it: local engines by name, this node's own engine, topics,
    /// remote nodes within scope, and the kinds not routed yet.
    #[test]
    fn every_destination_gets_the_decision_its_kind_and_scope_require(
        dst in destination_near(NodeIdentity::new(TestSigner::node(1).0)),
        scope in strategies::routing_scope(),
    ) {
        let f = Fixture::new(&["a"]);
        let me = f.node();
        let mut msg = f.message("a", dst.clone(), 1);
        msg.scope = scope;
        let outcome = f.route(msg);
        let sent = f.outbound.take();
        let remote_in_scope = matches!(scope, RoutingScope::Any);
        match (&dst, outcome) {
            (DestinationIdentity::Engine(e), Ok(Routed::Local { to, .. })) if e.node == me => {
                prop_assert_eq!(e.name.as_str(), "a");
                prop_assert_eq!(to, name("a"));
            }
            (DestinationIdentity::Engine(e), Err(RouteError::NoRoute { .. })) if e.node == me => {
                prop_assert_ne!(e.name.as_str(), "a");
            }
            // No engine named "router" is registered in this fixture.
            (DestinationIdentity::Node(n), Err(RouteError::NoRoute { .. })) if *n == me => {}
            // No topic is known.
            (DestinationIdentity::Topic(_), Err(RouteError::NoRoute { .. })) => {}
            (DestinationIdentity::Engine(_) | DestinationIdentity::Node(_), Ok(Routed::Remote(m))) => {
                let to = m.dst;
                prop_assert!(remote_in_scope, "sent out of scope {:?}", scope);
                prop_assert_eq!(sent.len(), 1);
                prop_assert_eq!(sent[0].0, to);
                let expected = match &dst {
                    DestinationIdentity::Engine(e) => e.node,
                    DestinationIdentity::Node(n) => *n,
                    _ => unreachable!(),
                };
                prop_assert_eq!(to, expected);
            }
            (DestinationIdentity::Engine(_) | DestinationIdentity::Node(_), Err(RouteError::OutOfScope { .. })) => {
                prop_assert!(!remote_in_scope);
            }
            (DestinationIdentity::Relay(_) | DestinationIdentity::Domain(_), Err(RouteError::Unsupported { .. })) => {}
            (dst, other) => prop_assert!(false, "{:?} in scope {:?} got {:?}", dst, scope, other),
        }
        if !sent.is_empty() {
            prop_assert!(remote_in_scope);
        }
    }

    /// Inbound messages for this node whose claimed source is not the
    /// channel peer are always rejected as impersonation, whatever else they
    /// carry: at the node level or inside the engine message.
    #[test]
    fn inbound_from_the_wrong_source_is_always_rejected(
        mut message in strategies::node_message(),
        peer in strategies::node_identity(),
        inner_only in any::<bool>(),
    ) {
        let f = Fixture::new(&["a"]);
        message.dst = f.node();
        if inner_only {
            // The node-level source is honest; the engine message lies.
            message.src = peer;
            match &mut message.payload {
                NodePayload::Engine(inner) => prop_assume!(inner.src.node != peer),
                NodePayload::Relay(_) => prop_assume!(false),
            }
        } else {
            prop_assume!(message.src != peer);
        }
        // Unsigned, so that the verdict cannot come from a bad signature.
        message.sig = None;
        if let NodePayload::Engine(inner) = &mut message.payload {
            inner.sig = None;
        }
        let verdict = f.router.route_inbound(peer, message, NOW, &TestVerifier);
        prop_assert!(matches!(verdict, Err(InboundRejection::Impersonation { .. })), "{:?}", verdict);
    }
}

/// Destinations of every kind, often on the node `me`.
fn destination_near(me: NodeIdentity) -> impl Strategy<Value = DestinationIdentity> {
    prop_oneof![
        strategies::destination(),
        Just(DestinationIdentity::Engine(EngineIdentity::new(me, name("a")))),
        strategies::engine_name().prop_map(move |n| DestinationIdentity::Engine(EngineIdentity::new(me, n))),
        Just(DestinationIdentity::Node(me)),
    ]
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
    assert!(matches!(f.route(notice.clone()), Ok(Routed::Remote(_))));
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

#[test]
fn bans_are_reported_and_lifted() {
    let mut f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let other = NodeIdentity::ed25519([10; 32]);
    assert!(!f.router.is_banned(&peer));
    f.router.set_banned(peer, true);
    assert!(f.router.is_banned(&peer));
    assert!(!f.router.is_banned(&other), "a ban names one node");
    f.router.set_banned(peer, false);
    assert!(!f.router.is_banned(&peer));
    let routed = f.route(f.message("a", DestinationIdentity::Node(peer), 1));
    assert!(matches!(routed, Ok(Routed::Remote(_))), "a lifted ban lets messages through: {routed:?}");
}

#[test]
fn a_reconnecting_publisher_is_asked_again_for_subscribed_topics_only() {
    let mut f = Fixture::new(&["reader"]);
    let publisher = NodeIdentity::ed25519([40; 32]);
    let stranger = NodeIdentity::ed25519([41; 32]);
    let watched = f.topic_advert(50, vec![publisher]);
    let ignored = f.topic_advert(51, vec![publisher]);
    let own = f.topic_advert(52, vec![f.node()]);
    for advert in [&watched, &ignored, &own] {
        f.router.learn_topic(advert.clone()).expect("room");
    }
    f.router.subscribe(&name("reader"), &watched.topic).expect("known");
    f.router.subscribe(&name("reader"), &own.topic).expect("known");

    let again = f.router.resubscriptions_for(&publisher, NOW);
    assert_eq!(again.len(), 1, "only the topic with a local subscriber: {again:?}");
    assert_eq!(again[0].dst, DestinationIdentity::Node(publisher));
    assert_eq!(again[0].protocol.name.as_str(), SUBSCRIPTION_PROTOCOL);
    assert_eq!(
        subscriptions::decode_request(again[0].body.as_bytes()),
        Some((SubscriptionOp::Subscribe, watched.topic))
    );
    assert!(f.router.resubscriptions_for(&stranger, NOW).is_empty(), "not a publisher of anything");
    assert!(f.router.resubscriptions_for(&f.node(), NOW).is_empty(), "never ask ourselves");
    f.router.unsubscribe(&name("reader"), &watched.topic).expect("known");
    assert!(f.router.resubscriptions_for(&publisher, NOW).is_empty(), "no subscriber left");
}

#[test]
fn the_topic_table_is_bounded_for_learned_and_created_topics() {
    let signer = TestSigner::node(1);
    let config = RouterConfig { max_topics: 1, ..RouterConfig::default() };
    let mut f = Fixture::new(&["owner"]);
    f.router = Router::new(NodeIdentity::new(signer.0), config);
    f.router.register_engine(name("owner"), name("owner")).expect("fresh");
    let first = f.topic_advert(60, vec![f.node()]);
    let second = f.topic_advert(61, vec![f.node()]);
    f.router.learn_topic(first.clone()).expect("room for one");
    assert_eq!(f.router.learn_topic(second.clone()), Err(TopicError::TooManyTopics(1)));
    assert_eq!(f.router.create_topic(&name("owner"), second, &TestVerifier), Err(TopicError::TooManyTopics(1)));
    // A topic already held takes no new room.
    f.router.learn_topic(first.clone()).expect("already held");
    f.router.create_topic(&name("owner"), first, &TestVerifier).expect("adopting a known topic takes no room");
    assert_eq!(f.router.topic_count(), 1);
}

#[test]
fn only_a_newer_topic_advert_replaces_the_one_held() {
    let mut f = Fixture::new(&["owner"]);
    let other = NodeIdentity::ed25519([8; 32]);
    let v2 = f.topic_advert_version(70, vec![other], 2);
    let topic = v2.topic;
    f.router.learn_topic(v2.clone()).expect("room");
    // Older and equal versions change nothing, even with other content.
    f.router.learn_topic(f.topic_advert_version(70, vec![f.node()], 1)).expect("older");
    f.router.learn_topic(f.topic_advert_version(70, vec![f.node()], 2)).expect("equal");
    assert_eq!(f.router.topic_advert(&topic), Some(&v2));
    let v3 = f.topic_advert_version(70, vec![f.node()], 3);
    f.router.learn_topic(v3.clone()).expect("newer");
    assert_eq!(f.router.topic_advert(&topic), Some(&v3));

    // Adopting a learned topic as its creator follows the same rule.
    f.router.create_topic(&name("owner"), f.topic_advert_version(70, vec![other], 3), &TestVerifier).expect("adopt");
    assert_eq!(f.router.topic_advert(&topic), Some(&v3), "an equal version does not replace");
    let mut g = Fixture::new(&["owner"]);
    g.router.learn_topic(v3.clone()).expect("room");
    g.router.create_topic(&name("owner"), f.topic_advert_version(70, vec![other], 2), &TestVerifier).expect("adopt");
    assert_eq!(g.router.topic_advert(&topic), Some(&v3), "an older version does not replace");
    let v4 = f.topic_advert_version(70, vec![other], 4);
    g.router.create_topic(&name("owner"), v4.clone(), &TestVerifier).expect_err("already created here");
    let mut h = Fixture::new(&["owner"]);
    h.router.learn_topic(v3).expect("room");
    h.router.create_topic(&name("owner"), v4.clone(), &TestVerifier).expect("adopt");
    assert_eq!(h.router.topic_advert(&topic), Some(&v4), "a newer version replaces");
}

#[test]
fn the_engine_table_can_be_read_and_an_engine_removed_with_its_subscriptions() {
    let mut f = Fixture::new(&["a", "b"]);
    assert_eq!(f.router.config().max_engines, RouterConfig::default().max_engines);
    let custom =
        Router::<EngineName>::new(f.node(), RouterConfig { sign_remote: true, max_engines: 3, ..Default::default() });
    assert!(custom.config().sign_remote);
    assert_eq!(custom.config().max_engines, 3);
    assert_eq!(f.router.engine_address(&name("a")), Some(&name("a")));
    let mut names: Vec<String> = f.router.engine_names().map(|n| n.to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["a", "b"]);

    let advert = f.topic_advert(80, vec![f.node()]);
    let topic = advert.topic;
    f.router.create_topic(&name("a"), advert, &TestVerifier).expect("created");
    f.router.subscribe(&name("b"), &topic).expect("known");
    f.router.subscribe(&name("a"), &topic).expect("known");
    assert_eq!(f.router.local_subscriber_count(&topic), 2);
    assert_eq!(f.router.topic_summaries(), vec![(topic, 2)]);
    assert_eq!(f.router.unregister_engine(&name("b")), Some(name("b")));
    assert_eq!(f.router.engine_address(&name("b")), None);
    assert_eq!(f.router.local_subscriber_count(&topic), 1, "b's subscription went with it");
    assert_eq!(f.router.local_subscriber_count(&TopicIdentity::ed25519([1; 32])), 0);
    assert!(matches!(f.route(f.message("a", f.to_engine("b"), 1)), Err(RouteError::NoRoute { .. })));
    match f.route(f.message("a", DestinationIdentity::Topic(topic), 2)) {
        Ok(Routed::Topic { to, .. }) => assert_eq!(to, vec![name("a")]),
        other => panic!("expected the remaining subscriber, got {other:?}"),
    }
}

#[test]
fn a_node_message_in_another_protocol_is_no_subscription_request() {
    let f = Fixture::new(&["router"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let topic = TopicIdentity::ed25519([3; 32]);
    // A body that would read as a subscription request, sent in another
    // protocol to the node's own engine.
    let mut inbound = inbound_from(peer, f.node(), "router", 1);
    if let NodePayload::Engine(inner) = &mut inbound.payload {
        inner.dst = DestinationIdentity::Node(f.node());
        inner.body = Body::new(subscriptions::encode_request(SubscriptionOp::Subscribe, &topic)).expect("small");
    }
    match f.router.route_inbound(peer, inbound, NOW, &TestVerifier) {
        Ok(Routed::Local { to, .. }) => assert_eq!(to, name("router")),
        other => panic!("expected delivery to the node engine, got {other:?}"),
    }
}

#[test]
fn an_inbound_message_for_a_missing_engine_names_that_engine() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let inbound = inbound_from(peer, f.node(), "ghost", 1);
    let expected = f.to_engine("ghost");
    assert_eq!(
        f.router.route_inbound(peer, inbound, NOW, &TestVerifier).expect_err("no such engine"),
        InboundRejection::NoRoute { peer, dst: expected }
    );
}

#[test]
fn events_skip_banned_and_out_of_scope_subscribers_and_are_signed_only_for_peers() {
    let mut f = Fixture::new(&["owner", "local"]);
    let advert = f.topic_advert(81, vec![f.node()]);
    let topic = advert.topic;
    f.router.create_topic(&name("owner"), advert, &TestVerifier).expect("created");
    f.router.subscribe(&name("local"), &topic).expect("known");
    // Local subscribers only: nothing to sign.
    match f.route(f.message("owner", DestinationIdentity::Topic(topic), 1)) {
        Ok(Routed::Topic { message, remote, .. }) if remote.is_empty() => assert_eq!(message.sig, None),
        other => panic!("expected local delivery, got {other:?}"),
    }
    let (good, banned) = (NodeIdentity::ed25519([20; 32]), NodeIdentity::ed25519([21; 32]));
    for peer in [good, banned] {
        f.router.apply_remote_subscription(peer, topic, SubscriptionOp::Subscribe).expect("applied");
    }
    f.router.set_banned(banned, true);
    let routed = f.route(f.message("owner", DestinationIdentity::Topic(topic), 2));
    assert!(matches!(routed, Ok(Routed::Topic { ref remote, .. }) if remote.len() == 1), "{routed:?}");
    let sent: Vec<NodeIdentity> = f.outbound.take().into_iter().map(|(to, _)| to).collect();
    assert_eq!(sent, vec![good]);
    // A message kept to this node reaches no remote subscriber.
    let mut local_only = f.message("owner", DestinationIdentity::Topic(topic), 3);
    local_only.scope = RoutingScope::Local;
    let routed = f.route(local_only);
    assert!(matches!(routed, Ok(Routed::Topic { ref remote, .. }) if remote.is_empty()), "{routed:?}");
    assert!(f.outbound.take().is_empty());
}

#[test]
fn a_full_remote_subscriber_list_still_takes_a_repeat() {
    let mut f = Fixture::new(&["owner"]);
    f.router = Router::new(f.node(), RouterConfig { max_remote_subscribers_per_topic: 1, ..Default::default() });
    f.router.register_engine(name("owner"), name("owner")).expect("fresh");
    let advert = f.topic_advert(82, vec![f.node()]);
    let topic = advert.topic;
    f.router.create_topic(&name("owner"), advert, &TestVerifier).expect("created");
    let (a, b) = (NodeIdentity::ed25519([30; 32]), NodeIdentity::ed25519([31; 32]));
    f.router.apply_remote_subscription(a, topic, SubscriptionOp::Subscribe).expect("room for one");
    f.router.apply_remote_subscription(a, topic, SubscriptionOp::Subscribe).expect("a repeat takes no room");
    assert_eq!(
        f.router.apply_remote_subscription(b, topic, SubscriptionOp::Subscribe),
        Err(TopicError::TooManySubscribers { topic, max: 1 })
    );
}

#[test]
fn every_drop_reason_earns_a_notice_that_says_why() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let source = EngineIdentity::new(peer, name("remote"));
    let protocol = ProtocolId::new("test", 1).expect("valid");
    let no_route = InboundRejection::NoRoute { peer, dst: f.to_engine("ghost") };
    let notice = f.router.undeliverable_notice(&source, MessageId(5), &protocol, &no_route, NOW).expect("a notice");
    assert_eq!(decode_notice(notice.body.as_bytes()), Some((DropReason::NoRoute, 5)));
    assert!(DropReason::NoRoute.describe().contains("no such engine"));
    assert!(DropReason::Expired.describe().contains("expired"));
    assert!(!no_route.disconnects_peer(), "a missing engine is not the peer's fault");
    let expired = InboundRejection::Expired { peer, rule: RuleError::Expired { expiry: 1, now: 2 } };
    assert!(!expired.disconnects_peer());
    assert!(!InboundRejection::OutOfScope { peer }.disconnects_peer());
}

#[test]
fn control_messages_sent_in_one_millisecond_have_consecutive_ids() {
    let mut f = Fixture::new(&["reader"]);
    let publisher = NodeIdentity::ed25519([40; 32]);
    let advert = f.topic_advert(83, vec![publisher]);
    f.router.learn_topic(advert.clone()).expect("room");
    let first = f.router.subscription_requests(&advert.topic, SubscriptionOp::Subscribe, NOW);
    let second = f.router.subscription_requests(&advert.topic, SubscriptionOp::Subscribe, NOW);
    assert_eq!(second[0].id.0, first[0].id.0 + 1);
    assert_eq!(first[0].id.0 >> 16, NOW.as_millis(), "the id starts from the clock");
}

/// A message from `peer` to this node as a whole, under `protocol`.
fn to_node_from(peer: NodeIdentity, me: NodeIdentity, protocol: &str) -> NodeMessage {
    let mut message = inbound_from(peer, me, "unused", 7);
    if let NodePayload::Engine(inner) = &mut message.payload {
        inner.dst = DestinationIdentity::Node(me);
        inner.protocol = ProtocolId::new(protocol, 1).expect("valid");
    }
    message
}

#[test]
fn a_served_protocol_goes_to_its_engine_after_every_inbound_check() {
    let mut f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    // Not served: a message to the node goes to the engine named `router`,
    // and with none, nowhere.
    let unserved = to_node_from(peer, f.node(), "test/served");
    assert!(matches!(
        f.router.route_inbound(peer, unserved.clone(), NOW, &TestVerifier),
        Err(InboundRejection::NoRoute { .. })
    ));
    f.router.serve_protocol("test/served").expect("fresh");
    assert_eq!(f.router.serve_protocol("test/served"), Err(RegistryError::ProtocolTaken("test/served".into())));
    for reserved in [SUBSCRIPTION_PROTOCOL, UNDELIVERABLE_PROTOCOL] {
        assert!(f.router.serve_protocol(reserved).is_err(), "{reserved} is the Router's own");
    }
    match f.router.route_inbound(peer, unserved.clone(), NOW, &TestVerifier) {
        Ok(Routed::Protocol(Input::FromPeer { peer: from, message })) => {
            assert_eq!(from, peer);
            assert_eq!(message.protocol.name.as_str(), "test/served");
        }
        other => panic!("expected the served engine, got {other:?}"),
    }
    // A local engine's message to its own node under it is a command.
    let mut command = f.message("a", DestinationIdentity::Node(f.node()), 3);
    command.protocol = ProtocolId::new("test/served", 1).expect("valid");
    assert!(matches!(f.route(command), Ok(Routed::Protocol(Input::Command { from, .. })) if from == name("a")));
    // The checks every inbound message gets still come first.
    let mut forged = unserved.clone();
    if let NodePayload::Engine(inner) = &mut forged.payload {
        inner.src.node = NodeIdentity::ed25519([8; 32]);
    }
    assert!(matches!(
        f.router.route_inbound(peer, forged, NOW, &TestVerifier),
        Err(InboundRejection::Impersonation { .. })
    ));
    let mut expired = unserved.clone();
    if let NodePayload::Engine(inner) = &mut expired.payload {
        inner.expiry = Some(Timestamp(NOW.0 - 1));
    }
    assert!(matches!(f.router.route_inbound(peer, expired, NOW, &TestVerifier), Err(InboundRejection::Expired { .. })));
    f.router.set_banned(peer, true);
    assert!(matches!(f.router.route_inbound(peer, unserved, NOW, &TestVerifier), Err(InboundRejection::Banned { .. })));
}

#[test]
fn the_nodes_own_engines_hear_of_no_drop() {
    let f = Fixture::new(&["a"]);
    let peer = NodeIdentity::ed25519([9; 32]);
    let protocol = ProtocolId::new("test/served", 1).expect("valid");
    let own = EngineIdentity::new(peer, name(NODE_ENGINE_NAME));
    assert_eq!(f.router.drop_notice(&own, MessageId(1), &protocol, DropReason::MailboxFull, NOW), None);
    let app = EngineIdentity::new(peer, name("app"));
    assert!(f.router.drop_notice(&app, MessageId(1), &protocol, DropReason::MailboxFull, NOW).is_some());
}
