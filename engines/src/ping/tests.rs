use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::testing::TestSigner;

const T0: Timestamp = Timestamp(5_000);

fn node(seed: u8) -> NodeIdentity {
    NodeIdentity::new(TestSigner::node(seed).0)
}

fn engine(max_pending: usize) -> Ping {
    Ping::new(&EngineSetup::for_tests(node(1), 7), PingConfig { timeout_ms: 1_000, max_pending })
}

fn message(body: Body, id: u64) -> EngineMessage {
    let src = EngineIdentity::new(node(1), EngineName::new("asker").expect("valid"));
    let protocol = ProtocolId::new(PING_PROTOCOL, PING_VERSION).expect("valid");
    EngineMessage::new(src, DestinationIdentity::Node(node(1)), MessageId(id), protocol, body)
}

fn ask(ping: &mut Ping, peer: NodeIdentity, id: u64, now: Timestamp) {
    let from = EngineName::new("asker").expect("valid");
    ping.handle(Input::Command { from, message: message(request(peer), id) }, now);
}

fn effects(ping: &mut Ping) -> Vec<Effect> {
    std::iter::from_fn(|| ping.poll_effect()).collect()
}

/// The nonce of the one ping sent to `peer`.
fn sent_nonce(effects: &[Effect], to: NodeIdentity) -> u64 {
    match effects {
        [Effect::SendToPeer { peer, body }] if *peer == to => match Wire::decode(body) {
            Some(Wire::Ping(nonce)) => nonce,
            other => panic!("not a ping: {other:?}"),
        },
        other => panic!("expected one ping, got {other:?}"),
    }
}

fn outcome(effects: &[Effect]) -> (MessageId, Outcome) {
    match effects {
        [Effect::Deliver { to, reply_to: Some(id), body }] if to.as_str() == "asker" => {
            (*id, Outcome::decode(body).expect("an outcome"))
        }
        other => panic!("expected one answer, got {other:?}"),
    }
}

fn from_peer(ping: &mut Ping, peer: NodeIdentity, wire: Wire, now: Timestamp) {
    ping.handle(Input::FromPeer { peer, message: message(wire.encode(), 0) }, now);
}

#[test]
fn a_pong_from_the_pinged_peer_answers_the_asker_with_the_round_trip() {
    let mut ping = engine(8);
    ask(&mut ping, node(2), 41, T0);
    assert_eq!(ping.pending(), 1);
    let nonce = sent_nonce(&effects(&mut ping), node(2));
    assert_eq!(ping.poll_timeout(), Some(T0.saturating_add_millis(1_000)));
    // Another node's pong with the same nonce answers nothing.
    from_peer(&mut ping, node(3), Wire::Pong(nonce), T0);
    assert!(effects(&mut ping).is_empty());
    from_peer(&mut ping, node(2), Wire::Pong(nonce), T0.saturating_add_millis(37));
    assert_eq!(outcome(&effects(&mut ping)), (MessageId(41), Outcome::Answered { peer: node(2), rtt_ms: 37 }));
    assert_eq!((ping.pending(), ping.poll_timeout()), (0, None), "nothing waits");
    // A second pong for it is ignored.
    from_peer(&mut ping, node(2), Wire::Pong(nonce), T0);
    assert!(effects(&mut ping).is_empty());
}

#[test]
fn a_ping_from_a_peer_is_answered_with_its_nonce_and_keeps_no_state() {
    let mut ping = engine(8);
    from_peer(&mut ping, node(4), Wire::Ping(99), T0);
    assert_eq!(effects(&mut ping), vec![Effect::SendToPeer { peer: node(4), body: Wire::Pong(99).encode() }]);
    assert_eq!((ping.pending(), ping.poll_timeout()), (0, None));
}

#[test]
fn a_ping_of_a_version_this_node_does_not_speak_is_not_answered() {
    let mut ping = engine(8);
    let mut newer = message(Wire::Ping(5).encode(), 0);
    newer.protocol = ProtocolId::new(PING_PROTOCOL, PING_VERSION + 1).expect("valid");
    ping.handle(Input::FromPeer { peer: node(4), message: newer }, T0);
    assert!(effects(&mut ping).is_empty());
}

#[test]
fn a_ping_nobody_answers_times_out_at_its_deadline() {
    let mut ping = engine(8);
    ask(&mut ping, node(2), 1, T0);
    let _ = effects(&mut ping);
    ping.handle_timeout(T0.saturating_add_millis(999));
    assert!(effects(&mut ping).is_empty(), "not yet");
    ping.handle_timeout(T0.saturating_add_millis(1_000));
    assert_eq!(outcome(&effects(&mut ping)), (MessageId(1), Outcome::TimedOut { peer: node(2) }));
    assert_eq!(ping.pending(), 0);
}

#[test]
fn pings_beyond_the_budget_and_pings_of_itself_are_refused_with_a_reason() {
    let mut ping = engine(1);
    ask(&mut ping, node(2), 1, T0);
    let _ = effects(&mut ping);
    ask(&mut ping, node(3), 2, T0);
    let (id, refused) = outcome(&effects(&mut ping));
    assert_eq!(id, MessageId(2));
    assert!(matches!(refused, Outcome::Refused { peer, ref reason } if peer == node(3) && reason.contains("too many")));
    let mut ping = engine(8);
    ask(&mut ping, node(1), 3, T0);
    assert!(matches!(outcome(&effects(&mut ping)).1, Outcome::Refused { peer, .. } if peer == node(1)));
    assert_eq!(ping.pending(), 0);
}

#[test]
fn an_outcome_with_bytes_past_its_end_is_not_read() {
    let mut long = Outcome::TimedOut { peer: node(2) }.encode().as_bytes().to_vec();
    long.push(0);
    assert_eq!(Outcome::decode(&Body::new(long).expect("small")), None);
    let mut short = Outcome::Answered { peer: node(2), rtt_ms: 3 }.encode().as_bytes().to_vec();
    short.pop();
    assert_eq!(Outcome::decode(&Body::new(short).expect("small")), None);
}

#[test]
fn malformed_bodies_change_nothing() {
    let mut ping = engine(8);
    let from = EngineName::new("asker").expect("valid");
    let short = Body::new(vec![1; 32]).expect("small");
    ping.handle(Input::Command { from, message: message(short.clone(), 1) }, T0);
    ping.handle(Input::FromPeer { peer: node(2), message: message(short, 0) }, T0);
    let mut bad_kind = Wire::Ping(1).encode().as_bytes().to_vec();
    bad_kind[0] = 9;
    let bad_kind = Body::new(bad_kind).expect("small");
    ping.handle(Input::FromPeer { peer: node(2), message: message(bad_kind, 0) }, T0);
    assert!(effects(&mut ping).is_empty());
    assert_eq!(ping.pending(), 0);
}

proptest! {
    #[test]
    fn outcomes_and_wire_messages_decode_to_what_was_encoded(
        seed in 1u8..50, rtt in any::<u64>(), reason in "[ -~]{0,60}", nonce in any::<u64>(), kind in 0u8..3,
    ) {
        let peer = node(seed);
        let outcome = match kind {
            0 => Outcome::Answered { peer, rtt_ms: rtt },
            1 => Outcome::TimedOut { peer },
            _ => Outcome::Refused { peer, reason },
        };
        prop_assert_eq!(Outcome::decode(&outcome.encode()), Some(outcome));
        prop_assert_eq!(Wire::decode(&Wire::Ping(nonce).encode()), Some(Wire::Ping(nonce)));
        prop_assert_eq!(Wire::decode(&Wire::Pong(nonce).encode()), Some(Wire::Pong(nonce)));
        prop_assert_eq!(messages::decode_request(&request(peer)), Some(peer));
    }
}
