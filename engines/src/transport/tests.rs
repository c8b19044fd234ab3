use std::collections::HashMap;

use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::testing::SeededRandom;

const T0: Timestamp = Timestamp(1_000_000);

fn node(seed: u8) -> NodeIdentity {
    NodeIdentity::ed25519([seed; 32])
}

fn addr(text: &str, weight: u8) -> WeightedAddress {
    WeightedAddress { address: text.parse().expect("valid"), weight }
}

fn transport(local: u8) -> Transport {
    Transport::new(node(local), TransportConfig::default(), Box::new(SeededRandom::new(7)))
}

fn message(from: NodeIdentity, to: NodeIdentity, id: u64, expiry: Option<u64>) -> NodeMessage {
    let inner = EngineMessage {
        src: EngineIdentity::new(from, EngineName::new("a").expect("valid")),
        dst: DestinationIdentity::Node(to),
        id: MessageId(id),
        reply_to: None,
        expiry: expiry.map(Timestamp),
        scope: RoutingScope::Any,
        prefs: None,
        protocol: ProtocolId::new("t", 1).expect("valid"),
        body: Body::default(),
        sig: None,
    };
    NodeMessage { src: from, dst: to, payload: NodePayload::Engine(inner), sig: None }
}

fn id_of(m: &NodeMessage) -> u64 {
    match &m.payload {
        NodePayload::Engine(e) => e.id.0,
        NodePayload::Relay(_) => u64::MAX,
    }
}

fn drain(t: &mut Transport) -> Vec<TransportEffect> {
    std::iter::from_fn(|| t.poll_effect()).collect()
}

fn dials(effects: &[TransportEffect]) -> Vec<(ConnId, TransportAddress)> {
    effects
        .iter()
        .filter_map(|e| match e {
            TransportEffect::Dial { attempt, address, .. } => Some((*attempt, *address)),
            _ => None,
        })
        .collect()
}

fn transmitted(effects: &[TransportEffect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            TransportEffect::Transmit { message, .. } => Some(id_of(message)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_message_dials_by_weight_and_queued_messages_follow_the_handshake() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1), addr("quic://127.0.0.1:2", 9)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    t.send(peer, message(node(1), peer, 2, None), T0).expect("queued");
    let effects = drain(&mut t);
    let d = dials(&effects);
    assert_eq!(d.len(), 1, "one dial for two messages");
    assert_eq!(d[0].1.socket.port(), 2, "the heavier address first");
    t.dial_succeeded(d[0].0, 42, T0);
    let effects = drain(&mut t);
    assert_eq!(transmitted(&effects), vec![1, 2]);
    assert!(effects
        .contains(&TransportEffect::Event(TransportEvent::NodeConnected { peer, direction: Direction::Outbound })));
    // Reused: the next message goes straight out.
    t.send(peer, message(node(1), peer, 3, None), T0).expect("sent");
    assert_eq!(transmitted(&drain(&mut t)), vec![3]);
}

#[test]
fn a_failed_address_falls_back_to_the_next_then_backs_off() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 9), addr("tls-tcp://127.0.0.1:2", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let first = dials(&drain(&mut t));
    t.dial_failed(first[0].0, ConnectFailure::Unreachable("refused".into()), Some(first[0].1), T0);
    let second = dials(&drain(&mut t));
    assert_eq!(second[0].1.protocol, TransportProtocol::TlsTcp);
    t.dial_failed(second[0].0, ConnectFailure::Unreachable("refused".into()), Some(second[0].1), T0);
    let effects = drain(&mut t);
    assert!(matches!(
        effects.as_slice(),
        [TransportEffect::Event(TransportEvent::NodeConnectFailed { reason: ConnectFailure::Unreachable(_), .. })]
    ));
    // Backing off: nothing at once, a redial after the backoff.
    t.tick(T0.saturating_add_millis(1));
    assert!(dials(&drain(&mut t)).is_empty());
    t.tick(T0.saturating_add_millis(10_000));
    assert_eq!(dials(&drain(&mut t)).len(), 1);
}

#[test]
fn unknown_peers_are_refused_with_no_address() {
    let mut t = transport(1);
    let err = t.send(node(2), message(node(1), node(2), 1, None), T0).expect_err("no address");
    assert_eq!(err, OutboundError::NoAddress { peer: node(2) });
}

#[test]
fn queued_messages_expire_and_the_sender_is_told() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, Some(T0.0 + 50)), T0).expect("queued");
    t.send(peer, message(node(1), peer, 2, Some(T0.0 + 5_000)), T0).expect("queued");
    let d = dials(&drain(&mut t));
    t.tick(T0.saturating_add_millis(100));
    let effects = drain(&mut t);
    assert!(
        matches!(effects.as_slice(), [TransportEffect::GiveUp { reason: Undeliverable::Expired, message }] if id_of(message) == 1)
    );
    t.dial_succeeded(d[0].0, 42, T0.saturating_add_millis(200));
    assert_eq!(transmitted(&drain(&mut t)), vec![2]);
}

#[test]
fn the_window_bounds_unacknowledged_messages() {
    let config = TransportConfig { window: 2, ..TransportConfig::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    for i in 0..5 {
        t.send(peer, message(node(1), peer, i, None), T0).expect("accepted");
    }
    let d = dials(&drain(&mut t));
    t.dial_succeeded(d[0].0, 42, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![0, 1]);
    t.acked(d[0].0, 1, 256, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![2]);
    t.acked(d[0].0, 2, 512, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![3, 4]);
}

#[test]
fn the_queue_is_bounded() {
    let config = TransportConfig { max_queue_per_peer: 3, ..TransportConfig::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    for i in 0..3 {
        t.send(peer, message(node(1), peer, i, None), T0).expect("room");
    }
    assert_eq!(t.send(peer, message(node(1), peer, 9, None), T0), Err(OutboundError::QueueFull { peer }));
}

#[test]
fn unacknowledged_messages_return_to_the_queue_and_permanent_peers_reconnect() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.set_permanent(peer, true, T0);
    let d = dials(&drain(&mut t));
    assert_eq!(d.len(), 1, "a permanent peer is dialled at once");
    t.dial_succeeded(d[0].0, 42, T0);
    drain(&mut t);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("sent");
    t.send(peer, message(node(1), peer, 2, Some(T0.0 + 10)), T0).expect("sent");
    drain(&mut t);
    t.closed(
        d[0].0,
        CloseReason::Lost("reset".into()),
        vec![message(node(1), peer, 1, None), message(node(1), peer, 2, Some(T0.0 + 10))],
        T0.saturating_add_millis(20),
    );
    let effects = drain(&mut t);
    assert!(effects.iter().any(|e| matches!(e, TransportEffect::GiveUp { message, .. } if id_of(message) == 2)));
    assert!(effects.iter().any(|e| matches!(e, TransportEffect::Event(TransportEvent::NodeDisconnected { .. }))));
    t.tick(T0.saturating_add_millis(20_000));
    let redial = dials(&drain(&mut t));
    assert_eq!(redial.len(), 1, "permanent peers reconnect");
    t.dial_succeeded(redial[0].0, 42, T0.saturating_add_millis(20_001));
    assert_eq!(transmitted(&drain(&mut t)), vec![1], "the unacknowledged message is sent again");
}

#[test]
fn ephemeral_connections_close_when_idle_and_permanent_ones_stay() {
    let mut t = transport(1);
    let (ephemeral, permanent) = (node(2), node(3));
    for p in [ephemeral, permanent] {
        t.set_addresses(p, vec![addr("quic://127.0.0.1:1", 1)], T0);
    }
    t.set_permanent(permanent, true, T0);
    t.send(ephemeral, message(node(1), ephemeral, 1, None), T0).expect("queued");
    for (attempt, _) in dials(&drain(&mut t)) {
        t.dial_succeeded(attempt, 42, T0);
    }
    let sent: Vec<ConnId> = drain(&mut t)
        .iter()
        .filter_map(|e| match e {
            TransportEffect::Transmit { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    t.acked(sent[0], 1, 256, T0);
    drain(&mut t);
    t.tick(T0.saturating_add_millis(t.config().idle_timeout_ms + 1));
    let closes: Vec<_> = drain(&mut t)
        .into_iter()
        .filter(|e| matches!(e, TransportEffect::Close { reason: CloseReason::Idle, .. }))
        .collect();
    assert_eq!(closes, vec![TransportEffect::Close { conn: sent[0], reason: CloseReason::Idle }]);
}

/// Two nodes dial each other at once; each keeps exactly one connection,
/// and it is the same one on both sides.
#[test]
fn simultaneous_dials_keep_the_same_single_connection_on_both_sides() {
    for (a_seed, b_seed) in [(1u8, 2u8), (2, 1)] {
        let (a_id, b_id) = (node(a_seed), node(b_seed));
        let mut a = transport(a_seed);
        let mut b = transport(b_seed);
        a.set_addresses(b_id, vec![addr("quic://127.0.0.1:2", 1)], T0);
        b.set_addresses(a_id, vec![addr("quic://127.0.0.1:1", 1)], T0);
        a.set_permanent(b_id, true, T0);
        b.set_permanent(a_id, true, T0);
        let a_dial = dials(&drain(&mut a))[0].0;
        let b_dial = dials(&drain(&mut b))[0].0;
        // A's dial arrives at B, B's at A.
        let (b_in, status) = b.admit_inbound(a_id, None, PROTOCOL_VERSIONS, 42, false, T0);
        assert_eq!(status, HandshakeStatus::Ok);
        let (a_in, _) = a.admit_inbound(b_id, None, PROTOCOL_VERSIONS, 42, false, T0);
        // Connection X = A dialled B: A's a_dial, B's b_in. Y = B dialled A.
        a.dial_succeeded(a_dial, 42, T0);
        b.inbound_established(b_in, T0);
        b.dial_succeeded(b_dial, 42, T0);
        a.inbound_established(a_in, T0);
        let a_closes: Vec<ConnId> = drain(&mut a)
            .iter()
            .filter_map(|e| match e {
                TransportEffect::Close { conn, reason: CloseReason::Duplicate } => Some(*conn),
                _ => None,
            })
            .collect();
        let b_closes: Vec<ConnId> = drain(&mut b)
            .iter()
            .filter_map(|e| match e {
                TransportEffect::Close { conn, reason: CloseReason::Duplicate } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(a_closes.len(), 1);
        assert_eq!(b_closes.len(), 1);
        let smaller_dialled = a_id < b_id;
        // A keeps X (its own dial) iff A is the smaller; B must agree.
        let a_kept_x = a_closes[0] == a_in;
        let b_kept_x = b_closes[0] == b_dial;
        assert_eq!(a_kept_x, smaller_dialled);
        assert_eq!(a_kept_x, b_kept_x, "both sides keep the same connection");
    }
}

#[test]
fn admission_enforces_caps_bans_and_versions() {
    let config = TransportConfig { max_connections: 3, max_connections_per_ip: 2, ..TransportConfig::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let ip: IpAddr = "10.0.0.1".parse().expect("ip");
    let other_ip: IpAddr = "10.0.0.2".parse().expect("ip");
    assert_eq!(t.admit_inbound(node(2), Some(ip), PROTOCOL_VERSIONS, 42, true, T0).1, HandshakeStatus::Denied);
    let old = VersionRange { min: 9, max: 12 };
    assert_eq!(t.admit_inbound(node(2), Some(ip), old, 42, false, T0).1, HandshakeStatus::Incompatible);
    assert_eq!(t.admit_inbound(node(2), Some(ip), PROTOCOL_VERSIONS, 42, false, T0).1, HandshakeStatus::Ok);
    assert_eq!(t.admit_inbound(node(3), Some(ip), PROTOCOL_VERSIONS, 42, false, T0).1, HandshakeStatus::Ok);
    assert_eq!(t.admit_inbound(node(4), Some(ip), PROTOCOL_VERSIONS, 42, false, T0).1, HandshakeStatus::OverCapacity);
    assert_eq!(t.admit_inbound(node(4), Some(other_ip), PROTOCOL_VERSIONS, 42, false, T0).1, HandshakeStatus::Ok);
    assert_eq!(
        t.admit_inbound(node(5), Some(other_ip), PROTOCOL_VERSIONS, 42, false, T0).1,
        HandshakeStatus::OverCapacity
    );
    assert_eq!(t.connection_count(), 3);
}

#[test]
fn refusals_and_wrong_identities_stop_the_dial_round() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 2), addr("quic://127.0.0.1:2", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let d = dials(&drain(&mut t));
    t.dial_failed(d[0].0, ConnectFailure::WrongIdentity, Some(d[0].1), T0);
    let effects = drain(&mut t);
    assert!(dials(&effects).is_empty(), "another address of an impostor is not tried");
    assert!(effects.iter().any(|e| matches!(
        e,
        TransportEffect::Event(TransportEvent::NodeConnectFailed { reason: ConnectFailure::WrongIdentity, .. })
    )));
}

#[derive(Debug, Clone)]
enum Step {
    Send { expiry_in: Option<u64> },
    DialOk,
    DialFail,
    Ack(u8),
    Drop,
    Tick(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::option::of(1u64..5_000).prop_map(|expiry_in| Step::Send { expiry_in }),
        2 => Just(Step::DialOk),
        1 => Just(Step::DialFail),
        2 => (1u8..8).prop_map(Step::Ack),
        1 => Just(Step::Drop),
        2 => (1u16..3_000).prop_map(Step::Tick),
    ]
}

proptest! {
    /// Against a driver that dials, acknowledges and drops connections at
    /// random, no message is ever lost: each one taken is, at every moment,
    /// queued, in flight, acknowledged, or given up with a reason; nothing
    /// is transmitted after its expiry; the window and the queue are never
    /// exceeded.
    #[test]
    fn no_message_is_lost_and_bounds_hold(steps in proptest::collection::vec(step(), 1..150)) {
        let config = TransportConfig { window: 4, max_queue_per_peer: 16, ..TransportConfig::default() };
        let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(3)));
        let peer = node(2);
        t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1), addr("quic://127.0.0.1:2", 1)], T0);
        let mut now = T0;
        let mut next_id = 0u64;
        let mut taken: HashMap<u64, Option<u64>> = HashMap::new();
        let mut acked: Vec<u64> = Vec::new();
        let mut given_up: Vec<u64> = Vec::new();
        let mut pending_dials: Vec<(ConnId, TransportAddress)> = Vec::new();
        let mut in_flight: HashMap<ConnId, Vec<NodeMessage>> = HashMap::new();
        let mut live: Option<ConnId> = None;
        for step in steps {
            match step {
                Step::Send { expiry_in } => {
                    let m = message(node(1), peer, next_id, expiry_in.map(|e| now.0 + e));
                    if t.send(peer, m, now).is_ok() {
                        taken.insert(next_id, expiry_in.map(|e| now.0 + e));
                    }
                    next_id += 1;
                }
                Step::DialOk => {
                    if let Some((attempt, _)) = pending_dials.pop() {
                        t.dial_succeeded(attempt, 42, now);
                    }
                }
                Step::DialFail => {
                    if let Some((attempt, address)) = pending_dials.pop() {
                        t.dial_failed(attempt, ConnectFailure::Unreachable("x".into()), Some(address), now);
                    }
                }
                Step::Ack(n) => {
                    if let Some(conn) = live {
                        let flight = in_flight.entry(conn).or_default();
                        let n = (n as usize).min(flight.len());
                        let mut bytes = 0;
                        for m in flight.drain(..n) {
                            bytes += message_cost(&m);
                            acked.push(id_of(&m));
                        }
                        t.acked(conn, n as u64, bytes, now);
                    }
                }
                Step::Drop => {
                    if let Some(conn) = live.take() {
                        let returned = in_flight.remove(&conn).unwrap_or_default();
                        t.closed(conn, CloseReason::Lost("dropped".into()), returned, now);
                    }
                }
                Step::Tick(ms) => {
                    now = now.saturating_add_millis(u64::from(ms));
                    t.tick(now);
                }
            }
            while let Some(effect) = t.poll_effect() {
                match effect {
                    TransportEffect::Dial { attempt, address, .. } => pending_dials.push((attempt, address)),
                    TransportEffect::Transmit { conn, message } => {
                        if let Some(expiry) = taken.get(&id_of(&message)).copied().flatten() {
                            prop_assert!(now.0 < expiry, "transmitted after expiry");
                        }
                        live = Some(conn);
                        in_flight.entry(conn).or_default().push(message);
                        prop_assert!(in_flight[&conn].len() <= 4, "window exceeded");
                    }
                    TransportEffect::GiveUp { message, .. } => given_up.push(id_of(&message)),
                    TransportEffect::Close { conn, .. } => {
                        let returned = in_flight.remove(&conn).unwrap_or_default();
                        if live == Some(conn) { live = None; }
                        t.closed(conn, CloseReason::Duplicate, returned, now);
                    }
                    TransportEffect::Event(_) => {}
                }
            }
            let queued: usize = t.peer_summaries().iter().map(|s| s.queued).sum();
            prop_assert!(queued <= 16 + 4, "queue exceeded its bound of queue + window");
            let flying: usize = in_flight.values().map(Vec::len).sum();
            prop_assert_eq!(queued + flying + acked.len() + given_up.len(), taken.len(), "a message was lost or doubled");
        }
        let mut accounted: Vec<u64> = acked.iter().chain(given_up.iter()).copied().collect();
        accounted.sort_unstable();
        accounted.dedup();
        prop_assert_eq!(accounted.len(), acked.len() + given_up.len(), "a message was acknowledged or given up twice");
    }
}

#[test]
fn a_restarted_peer_replaces_the_stale_connection() {
    // A (smaller) dialled B earlier; B restarts and dials A. The tie-break
    // alone would keep A's old connection to a process that is gone.
    let (a_id, b_id) = (node(1), node(2));
    let mut a = transport(1);
    a.set_addresses(b_id, vec![addr("quic://127.0.0.1:2", 1)], T0);
    a.set_permanent(b_id, true, T0);
    let old = dials(&drain(&mut a))[0].0;
    a.dial_succeeded(old, 1111, T0);
    drain(&mut a);
    let (fresh, status) = a.admit_inbound(b_id, None, PROTOCOL_VERSIONS, 2222, false, T0);
    assert_eq!(status, HandshakeStatus::Ok);
    a.inbound_established(fresh, T0);
    let effects = drain(&mut a);
    assert!(effects.contains(&TransportEffect::Close { conn: old, reason: CloseReason::Duplicate }), "{effects:?}");
    assert!(a_id < b_id);
}

#[test]
fn large_messages_are_bounded_by_bytes_as_well_as_count() {
    let config =
        TransportConfig { window_bytes: 3 * 1024, max_queue_bytes_per_peer: 4 * 1024, ..TransportConfig::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    let big = |id: u64| {
        let mut m = message(node(1), peer, id, None);
        if let NodePayload::Engine(inner) = &mut m.payload {
            inner.body = Body::new(vec![0u8; 1024 - 256]).expect("small");
        }
        m
    };
    for id in 0..4 {
        t.send(peer, big(id), T0).expect("fits the byte bound");
    }
    assert!(matches!(t.send(peer, big(9), T0), Err(OutboundError::QueueFull { .. })), "queue bytes bound");
    let d = dials(&drain(&mut t));
    t.dial_succeeded(d[0].0, 42, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![0, 1, 2], "window bytes bound");
    t.acked(d[0].0, 1, 1024, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![3]);
}

#[test]
fn a_message_preference_and_local_measurements_order_the_addresses() {
    let mut t = transport(1);
    let peer = node(2);
    let quic = addr("quic://127.0.0.1:1", 5);
    let tcp = addr("tls-tcp://127.0.0.1:1", 5);
    let slow_quic = addr("quic://127.0.0.1:2", 5);
    t.set_addresses(peer, vec![quic, tcp, slow_quic], T0);
    t.record_rtt(peer, quic.address, 900);
    t.record_rtt(peer, slow_quic.address, 100);
    let mut m = message(node(1), peer, 1, None);
    if let NodePayload::Engine(inner) = &mut m.payload {
        inner.prefs = Some(TransportPrefs { protocol: Some(TransportProtocol::TlsTcp), ..TransportPrefs::default() });
    }
    t.send(peer, m, T0).expect("queued");
    let first = dials(&drain(&mut t));
    assert_eq!(first[0].1, tcp.address, "the message asked for TLS over TCP");
    t.dial_failed(first[0].0, ConnectFailure::Unreachable("x".into()), Some(first[0].1), T0);
    let second = dials(&drain(&mut t));
    assert_eq!(second[0].1, slow_quic.address, "then the faster of the equal-weight QUIC addresses");
}

#[test]
fn idle_ephemeral_peers_are_forgotten_and_permanent_ones_kept() {
    let mut t = transport(1);
    let (ephemeral, permanent) = (node(2), node(3));
    for p in [ephemeral, permanent] {
        t.set_addresses(p, vec![addr("quic://127.0.0.1:1", 1)], T0);
    }
    t.set_permanent(permanent, true, T0);
    drain(&mut t);
    let later = T0.saturating_add_millis(t.config().forget_after_ms + 1);
    t.tick(later);
    assert!(!t.knows(&ephemeral), "an idle ephemeral peer is forgotten");
    assert!(t.knows(&permanent), "a permanent peer is kept");
    // A forgotten peer needs its address again before anything can be sent.
    assert_eq!(
        t.send(ephemeral, message(node(1), ephemeral, 1, None), later),
        Err(OutboundError::NoAddress { peer: ephemeral })
    );
}
