use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::transport::PROTOCOL_VERSIONS;

fn node(seed: u8) -> NodeIdentity {
    NodeIdentity::ed25519([seed; 32])
}

fn message(id: u64) -> NodeMessage {
    let src = EngineIdentity::new(node(2), EngineName::new("a").expect("valid"));
    let dst = DestinationIdentity::Node(node(1));
    let body = Body::new(vec![0u8; 10]).expect("small");
    let inner = EngineMessage::new(src, dst, MessageId(id), ProtocolId::new("t", 1).expect("valid"), body);
    NodeMessage::carrying(node(2), node(1), inner)
}

fn offer(own: u64, held: u64) -> HandshakeOffer {
    HandshakeOffer { versions: PROTOCOL_VERSIONS, boot: 7, own_advert_version: own, held_advert_version_of_peer: held }
}

#[test]
fn the_handshake_agrees_and_says_who_needs_an_advert() {
    let dialler = offer(5, 0);
    let listener = offer(9, 5);
    let hello = expect_hello(dialler.hello()).expect("a hello");
    assert_eq!(listener.agreed_with(&hello), Agreed { peer_boot: 7, send_own_advert: true });
    let agreed = dialler.accept_reply(listener.reply(HandshakeStatus::Ok)).expect("agreed");
    assert_eq!(agreed, Agreed { peer_boot: 7, send_own_advert: false }, "the listener holds version 5 already");
    let up_to_date = expect_hello(offer(1, 9).hello()).expect("a hello");
    assert!(!listener.agreed_with(&up_to_date).send_own_advert, "the dialler holds version 9, the one sent");
}

#[test]
fn a_refusal_or_an_odd_reply_fails_the_dial() {
    let dialler = offer(1, 0);
    let refused = dialler.accept_reply(offer(1, 0).reply(HandshakeStatus::OverCapacity));
    assert_eq!(refused, Err(ConnectFailure::Refused(HandshakeStatus::OverCapacity)));
    let mut other = offer(1, 0);
    other.versions = VersionRange { min: 9, max: 9 };
    assert_eq!(
        dialler.accept_reply(other.reply(HandshakeStatus::Ok)),
        Err(ConnectFailure::Refused(HandshakeStatus::Incompatible))
    );
    assert!(matches!(dialler.accept_reply(dialler.hello()), Err(ConnectFailure::Unreachable(_))));
    assert!(matches!(expect_hello(Frame::Ack(Ack { received: 0 })), Err(CloseReason::Violation(_))));
}

#[test]
fn acknowledgements_release_messages_in_order_and_may_not_lie() {
    let mut c = Connection::new(node(2));
    for id in 1..=3 {
        c.wrote(message(id));
    }
    assert_eq!(c.unacknowledged(), 3);
    let mut recent = RecentIds::new(16);
    match c.receive(Frame::Ack(Ack { received: 2 }), &mut recent) {
        Ok(Incoming::Acknowledged { count, messages, bytes }) => {
            assert_eq!(count, 2);
            assert_eq!(messages, vec![message(1), message(2)]);
            assert_eq!(bytes, 2 * message_cost(&message(1)));
        }
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
    assert_eq!(c.unacknowledged(), 1);
    assert!(matches!(c.receive(Frame::Ack(Ack { received: 1 }), &mut recent), Err(CloseReason::Violation(_))));
    assert!(matches!(c.receive(Frame::Ack(Ack { received: 4 }), &mut recent), Err(CloseReason::Violation(_))));
    assert!(matches!(
        c.receive(Frame::Ack(Ack { received: 2 }), &mut recent),
        Ok(Incoming::Acknowledged { count: 0, messages, bytes: 0 }) if messages.is_empty()
    ));
    assert_eq!(c.into_unacknowledged(), vec![message(3)]);
}

#[test]
fn acknowledged_messages_nobody_waits_for_are_counted_and_dropped() {
    let mut c = Connection::new(node(2));
    c.keep_acknowledged(false);
    for id in 1..=3 {
        c.wrote(message(id));
    }
    let mut recent = RecentIds::new(16);
    match c.receive(Frame::Ack(Ack { received: 2 }), &mut recent) {
        Ok(Incoming::Acknowledged { count, messages, bytes }) => {
            assert_eq!((count, messages.len()), (2, 0));
            assert_eq!(bytes, 2 * message_cost(&message(1)));
        }
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
    assert_eq!(c.into_unacknowledged(), vec![message(3)], "the two acknowledged are gone, the third kept");
}

#[test]
fn repeats_are_dropped_but_acknowledged() {
    let mut c = Connection::new(node(2));
    let mut recent = RecentIds::new(16);
    assert_eq!(c.receive(Frame::Node(message(1)), &mut recent), Ok(Incoming::Message(message(1))));
    assert_eq!(c.ack_owed(), None, "not taken until delivered");
    c.taken();
    assert_eq!(c.receive(Frame::Node(message(1)), &mut recent), Ok(Incoming::Repeat));
    assert_eq!(c.ack_owed(), Some(2));
    c.ack_written(2);
    assert_eq!(c.ack_owed(), None);
}

#[test]
fn acknowledgements_are_asked_for_every_64_messages_and_when_caught_up() {
    let mut c = Connection::new(node(2));
    assert!(!c.ack_wanted(true), "nothing taken, nothing to acknowledge");
    for _ in 0..ACK_EVERY - 1 {
        c.taken();
        assert!(!c.ack_wanted(false));
    }
    c.taken();
    assert!(c.ack_wanted(false), "the 64th message asks even in a burst");
    c.taken();
    assert!(!c.ack_wanted(false));
    assert!(c.ack_wanted(true), "caught up with one taken");
    assert!(!c.ack_wanted(true), "asked once");
}

#[test]
fn adverts_are_offered_and_handshakes_or_foreign_adverts_close() {
    let mut c = Connection::new(node(2));
    let mut recent = RecentIds::new(16);
    let own = advert_of(node(2));
    assert_eq!(c.receive(Frame::NodeAdvert(own.clone()), &mut recent), Ok(Incoming::Advert(AdvertUpdate::Node(own))));
    assert!(matches!(c.receive(Frame::NodeAdvert(advert_of(node(3))), &mut recent), Err(CloseReason::Violation(_))));
    assert!(matches!(c.receive(offer(1, 0).hello(), &mut recent), Err(CloseReason::Violation(_))));
}

fn advert_of(id: NodeIdentity) -> NodeAdvert {
    let mut body = samples::node_advert_body();
    body.id = id;
    Advert::from_parts(body, Signature::Ed25519(Box::new([0; 64])))
}

proptest! {
    /// Whatever the peer acknowledges, a message is released at most once,
    /// in the order written, and what is left is exactly what was not
    /// released.
    #[test]
    fn every_message_is_released_once_or_returned(steps in proptest::collection::vec((any::<bool>(), 0u64..12), 0..80)) {
        let mut c = Connection::new(node(2));
        let mut recent = RecentIds::new(16);
        let mut written = Vec::new();
        let mut released = Vec::new();
        for (write, n) in steps {
            if write {
                let m = message(written.len() as u64);
                written.push(m.clone());
                c.wrote(m);
            } else {
                match c.receive(Frame::Ack(Ack { received: n }), &mut recent) {
                    Ok(Incoming::Acknowledged { messages, .. }) => released.extend(messages),
                    Ok(other) => prop_assert!(false, "unexpected {:?}", other),
                    Err(_) => prop_assert!(n > written.len() as u64 || n < released.len() as u64),
                }
            }
        }
        let mut all = released;
        all.extend(c.into_unacknowledged());
        prop_assert_eq!(all, written);
    }
}
