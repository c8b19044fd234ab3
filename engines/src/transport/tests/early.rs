//! What follows the dialler's hello before the listener's reply.

use super::*;

fn to_topic(from: NodeIdentity, to: NodeIdentity, id: u64) -> NodeMessage {
    let mut m = message(from, to, id, None);
    if let NodePayload::Engine(inner) = &mut m.payload {
        inner.dst = DestinationIdentity::Topic(TopicIdentity::ed25519([40; 32]));
    }
    m
}

fn in_domain(from: NodeIdentity, to: NodeIdentity, id: u64) -> NodeMessage {
    let mut m = message(from, to, id, None);
    if let NodePayload::Engine(inner) = &mut m.payload {
        inner.scope = RoutingScope::Domain(DomainIdentity::ed25519([50; 32]));
    }
    m
}

fn with_window(window: usize) -> Transport {
    let config = TransportConfig { window, ..TransportConfig::default() };
    Transport::new(node(1), config, Box::new(SeededRandom::new(7)))
}

fn given_up(effects: &[TransportEffect]) -> Vec<(u64, Undeliverable)> {
    effects
        .iter()
        .filter_map(|e| match e {
            TransportEffect::GiveUp { message, reason } => Some((id_of(message), reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn only_messages_to_an_engine_or_a_node_scoped_anywhere_may_precede_the_reply() {
    let (a, b) = (node(1), node(2));
    assert!(crate::transport::early::may_precede_reply(&message(a, b, 1, None)));
    let mut to_engine = message(a, b, 2, None);
    if let NodePayload::Engine(inner) = &mut to_engine.payload {
        inner.dst = DestinationIdentity::Engine(EngineIdentity::new(b, EngineName::new("x").expect("valid")));
    }
    assert!(crate::transport::early::may_precede_reply(&to_engine));
    assert!(
        !crate::transport::early::may_precede_reply(&to_topic(a, b, 3)),
        "checked against a topic advert sent after the reply"
    );
    assert!(!crate::transport::early::may_precede_reply(&in_domain(a, b, 4)), "needs the dialler's certificate");
}

#[test]
fn messages_follow_the_hello_up_to_one_that_needs_the_handshake_and_the_rest_wait_for_the_reply() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    t.send(peer, message(node(1), peer, 2, None), T0).expect("queued");
    t.send(peer, to_topic(node(1), peer, 3), T0).expect("queued");
    t.send(peer, message(node(1), peer, 4, None), T0).expect("queued");
    let attempt = dials(&drain(&mut t))[0].0;
    t.hello_sent(attempt, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1, 2], "the topic event, and what is behind it, wait");
    t.hello_sent(attempt, T0);
    assert!(transmitted(&drain(&mut t)).is_empty(), "nothing twice");
    t.dial_succeeded(attempt, 42, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![3, 4]);
}

#[test]
fn what_goes_early_takes_room_in_the_window() {
    let mut t = with_window(2);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    for n in 1..=3 {
        t.send(peer, message(node(1), peer, n, None), T0).expect("queued");
    }
    let attempt = dials(&drain(&mut t))[0].0;
    t.hello_sent(attempt, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1, 2]);
    t.dial_succeeded(attempt, 42, T0);
    assert!(transmitted(&drain(&mut t)).is_empty(), "the window is full until an acknowledgement");
    t.acked(attempt, 1, message_cost(&message(node(1), peer, 1, None)), T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![3]);
}

#[test]
fn what_went_early_on_a_failed_attempt_goes_first_on_the_next() {
    let mut t = with_window(2);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 9), addr("quic://127.0.0.1:2", 1)], T0);
    for n in 1..=3 {
        t.send(peer, message(node(1), peer, n, None), T0).expect("queued");
    }
    let first = dials(&drain(&mut t))[0];
    t.hello_sent(first.0, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1, 2]);
    let back = vec![message(node(1), peer, 1, None), message(node(1), peer, 2, None)];
    t.requeue_early(first.0, back, T0);
    t.dial_failed(first.0, ConnectFailure::Unreachable("reset".into()), Some(first.1), T0);
    let second = dials(&drain(&mut t))[0];
    assert_eq!(second.1.socket.port(), 2);
    t.hello_sent(second.0, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1, 2], "in their order, on a fresh window");
    t.dial_succeeded(second.0, 42, T0);
    t.acked(second.0, 2, 0, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![3]);
}

#[test]
fn what_went_early_to_a_peer_banned_or_on_a_node_stopping_meanwhile_is_given_up_and_why() {
    // Each way the attempt can end: its reply refuses (the core requeues
    // what went early), or it is admitted and the Transport closes the
    // connection it no longer wants (the core returns what is unacknowledged).
    for (stop, refused) in [(false, true), (false, false), (true, true), (true, false)] {
        let mut t = transport(1);
        let peer = node(2);
        t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
        t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
        let first = dials(&drain(&mut t))[0];
        t.hello_sent(first.0, T0);
        assert_eq!(transmitted(&drain(&mut t)), vec![1]);
        let reason = match stop {
            true => {
                t.shutdown();
                Undeliverable::Shutdown
            }
            false => {
                t.ban(peer);
                Undeliverable::Banned
            }
        };
        drain(&mut t);
        let early = vec![message(node(1), peer, 1, None)];
        match refused {
            true => {
                t.requeue_early(first.0, early, T0);
                t.dial_failed(first.0, ConnectFailure::Refused(HandshakeStatus::Denied), Some(first.1), T0);
            }
            false => {
                t.dial_succeeded(first.0, 42, T0);
                t.closed(first.0, CloseReason::Duplicate, early, T0);
            }
        }
        let effects = drain(&mut t);
        assert_eq!(given_up(&effects), vec![(1, reason)], "stop {stop}, refused {refused}: {effects:?}");
        assert!(dials(&effects).is_empty(), "no dial after a ban or a stop");
    }
}

#[test]
fn an_expired_message_that_comes_back_from_an_early_send_is_given_up_as_expired() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    let soon = T0.0 + 10;
    t.send(peer, message(node(1), peer, 1, Some(soon)), T0).expect("queued");
    t.send(peer, message(node(1), peer, 2, None), T0).expect("queued");
    let attempt = dials(&drain(&mut t))[0].0;
    t.hello_sent(attempt, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1, 2]);
    let later = Timestamp(soon + 1);
    let back = vec![message(node(1), peer, 1, Some(soon)), message(node(1), peer, 2, None)];
    t.requeue_early(attempt, back, later);
    assert_eq!(given_up(&drain(&mut t)), vec![(1, Undeliverable::Expired)]);
    assert_eq!(t.peer_summaries()[0].queued, 1);
}
