//! Messages sent behind the dialler's hello, before the listener's reply.

use super::*;

/// `a` knows `b` and has sent it messages `ids`; `a` dialled, and the
/// stream is open. Returns (a, b, a's attempt, b's connection).
fn dialled_with(ids: &[u64]) -> (Node, Node, ConnId, ConnId) {
    let mut a = Node::start(1, BTreeMap::new(), 11);
    let mut b = Node::start(2, BTreeMap::new(), 22);
    a.core.offer_advert(AdvertUpdate::Node(advert(2)), T0).expect("valid advert");
    a.run();
    for n in ids {
        a.core.send(a.message_to(&b, *n), T0).expect("routed");
        a.run();
    }
    let (attempt, _) = a.dials.pop().expect("a asked to dial");
    let theirs = b.core.accepted(id(1), None);
    a.core.dialled(attempt, Ok(()), T0);
    a.run();
    (a, b, attempt, theirs)
}

/// Runs `a`'s timers until it dials again (after its backoff); the attempt.
fn redial(a: &mut Node) -> ConnId {
    for _ in 0..16 {
        if let Some((attempt, _)) = a.dials.pop() {
            return attempt;
        }
        let at = a.core.poll_timeout().expect("a redial is due");
        a.core.handle_timeout(at);
        a.run();
    }
    panic!("no redial after 16 timeouts")
}

fn node_message_ids(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Node(NodeMessage { payload: NodePayload::Engine(m), .. }) => Some(m.id.0),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_follow_the_hello_at_once_and_arrive_before_the_reply_is_read() {
    let (mut a, mut b, attempt, theirs) = dialled_with(&[1, 2, 3]);
    let written = take_writes(&mut a, attempt);
    assert!(matches!(written.first(), Some(Frame::Hello(_))), "the hello first: {written:?}");
    assert_eq!(node_message_ids(&written), vec![1, 2, 3], "behind it, in order, with no reply yet");
    for frame in written {
        b.core.frame(theirs, frame, false, T0);
        b.run();
    }
    assert_eq!(messages(&b), vec![1, 2, 3], "the listener took them on its side of the handshake");
    shuttle(&mut b, theirs, &mut a, attempt);
    assert_eq!(messages(&b), vec![1, 2, 3], "each once");
    let summary = &a.core.transport().peer_summaries()[0];
    assert!(summary.connected);
    assert_eq!((summary.queued, summary.inflight), (0, 0), "all acknowledged on the window they took");
    assert!(a.closes.is_empty() && b.closes.is_empty(), "{:?} {:?}", a.closes, b.closes);
}

#[test]
fn what_followed_a_refused_hello_waits_again_in_order_and_its_sender_is_not_told() {
    let (mut a, _, attempt, _) = dialled_with(&[1, 2]);
    let written = take_writes(&mut a, attempt);
    assert_eq!(node_message_ids(&written), vec![1, 2]);
    // b is at its limit: its reply refuses, and it reads nothing more.
    let refusal = HelloReply {
        status: HandshakeStatus::OverCapacity,
        versions: crate::transport::PROTOCOL_VERSIONS,
        boot: 22,
        own_advert_version: 0,
        held_advert_version_of_peer: 0,
    };
    a.core.frame(attempt, Frame::HelloReply(refusal), true, T0);
    a.run();
    assert!(a.closes.iter().any(|(c, _)| *c == attempt));
    // The writer, still emptying its queue, could not frame message 1:
    // it is back in the queue already, so nobody is told yet.
    let Some(Frame::Node(unframed)) = written.into_iter().nth(1) else { panic!("message 1 follows the hello") };
    a.core.unwritable(attempt, unframed, "too large to frame", T0);
    a.run();
    a.core.closed(attempt, CloseReason::Lost("refused".into()), T0);
    a.run();
    let summary = &a.core.transport().peer_summaries()[0];
    assert_eq!((summary.connected, summary.queued, summary.inflight), (false, 2, 0), "both back in the queue");
    assert!(a.inbox.is_empty(), "nothing was given up: {:?}", a.inbox);
    // The next connection carries them, in their order.
    let again = redial(&mut a);
    a.core.dialled(again, Ok(()), T0);
    a.run();
    assert_eq!(node_message_ids(&take_writes(&mut a, again)), vec![1, 2]);
}

#[test]
fn what_followed_a_hello_whose_reply_was_lost_is_sent_again_and_delivered_once() {
    let (mut a, mut b, attempt, theirs) = dialled_with(&[1, 2]);
    // b takes the hello and both messages; its reply never reaches a.
    for frame in take_writes(&mut a, attempt) {
        b.core.frame(theirs, frame, false, T0);
        b.run();
    }
    assert_eq!(messages(&b), vec![1, 2]);
    b.writes.clear();
    a.core.closed(attempt, CloseReason::Lost("reset".into()), T0);
    a.run();
    b.core.closed(theirs, CloseReason::Lost("reset".into()), T0);
    b.run();
    assert_eq!(a.core.transport().peer_summaries()[0].queued, 2, "unanswered: queued again, in order");
    // a redials after its backoff; the same two go behind the new hello.
    let again = redial(&mut a);
    let theirs_again = b.core.accepted(id(1), None);
    a.core.dialled(again, Ok(()), T0);
    a.run();
    let written = take_writes(&mut a, again);
    assert_eq!(node_message_ids(&written), vec![1, 2]);
    for frame in written {
        b.core.frame(theirs_again, frame, false, T0);
        b.run();
    }
    shuttle(&mut b, theirs_again, &mut a, again);
    assert_eq!(messages(&b), vec![1, 2], "the repeat filter dropped the copies");
    assert_eq!(b.core.counters().repeats_dropped, 2);
    assert_eq!(a.core.transport().peer_summaries()[0].inflight, 0, "the copies were acknowledged too");
}

#[test]
fn a_message_behind_the_hello_that_could_not_be_framed_leaves_the_window_and_its_sender_hears() {
    let (mut a, mut b, attempt, theirs) = dialled_with(&[1, 2]);
    let mut written = take_writes(&mut a, attempt);
    // The host could not frame message 1: it never reached the wire.
    let unframed = match written.remove(1) {
        Frame::Node(message) => message,
        other => panic!("expected message 1, got {other:?}"),
    };
    a.core.unwritable(attempt, unframed, "too large to frame", T0);
    a.run();
    for frame in written {
        b.core.frame(theirs, frame, false, T0);
        b.run();
    }
    shuttle(&mut b, theirs, &mut a, attempt);
    assert_eq!(messages(&b), vec![2]);
    assert_eq!(a.core.transport().peer_summaries()[0].inflight, 0, "no room held for what never left");
    assert!(a.inbox.iter().any(|(_, d)| matches!(d, Delivery::Undeliverable { id: MessageId(1), .. })));
    assert!(a.closes.is_empty() && b.closes.is_empty());
}
