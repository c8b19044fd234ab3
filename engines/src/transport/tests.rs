use std::collections::HashMap;

use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::engine::Timed;
use crate::testing::SeededRandom;

const T0: Timestamp = Timestamp(1_000_000);

mod early;

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
    t.handle_timeout(T0.saturating_add_millis(1));
    assert!(dials(&drain(&mut t)).is_empty());
    t.handle_timeout(T0.saturating_add_millis(10_000));
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
    t.handle_timeout(T0.saturating_add_millis(100));
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
    t.handle_timeout(T0.saturating_add_millis(20_000));
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
    t.handle_timeout(T0.saturating_add_millis(t.config().idle_timeout_ms + 1));
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
                    t.handle_timeout(now);
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
                    TransportEffect::Event(_) | TransportEffect::Forgotten { .. } => {}
                }
            }
            let queued: usize = t.peer_summaries().iter().map(|s| s.queued).sum();
            prop_assert!(queued <= 16 + 4, "queue exceeded its bound of queue + window");
            prop_assert!(t.timers.len() <= 4 * t.peers.len(), "timers outlived their peers or piled up");
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

/// One sweep forgets every idle peer: each is forgotten once quiet for the
/// forget time (and at most a sixteenth of it later), with one timer for
/// the whole table.
#[test]
fn idle_peers_are_forgotten_by_one_sweep_each_in_its_own_time() {
    let mut t = transport(1);
    let forget = t.config().forget_after_ms;
    let (early, late) = (node(2), node(3));
    t.set_addresses(early, vec![addr("quic://127.0.0.1:1", 1)], T0);
    let half = T0.saturating_add_millis(forget / 2);
    t.set_addresses(late, vec![addr("quic://127.0.0.1:2", 1)], half);
    for p in 4..20 {
        t.set_addresses(node(p), vec![addr("quic://127.0.0.1:3", 1)], half);
    }
    drain(&mut t);
    assert_eq!(t.timers.len(), 1, "one sweep, not a timer per idle peer");
    let first = T0.saturating_add_millis(forget);
    assert_eq!(t.poll_timeout(), Some(first));
    t.handle_timeout(first);
    assert!(!t.knows(&early), "quiet for the forget time");
    assert!(t.knows(&late), "not yet quiet long enough");
    let due = half.saturating_add_millis(forget);
    let next = t.poll_timeout().expect("a sweep for the others");
    assert!(next >= due && next <= due.saturating_add_millis(forget / 16), "{next:?}");
    t.handle_timeout(next);
    assert!(!t.knows(&late));
    assert!(t.timers.is_empty(), "an empty table needs no sweep");
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
    t.handle_timeout(later);
    assert!(!t.knows(&ephemeral), "an idle ephemeral peer is forgotten");
    assert!(drain(&mut t).contains(&TransportEffect::Forgotten { peer: ephemeral }), "and its host is told");
    assert!(t.knows(&permanent), "a permanent peer is kept");
    // A forgotten peer needs its address again before anything can be sent.
    assert_eq!(
        t.send(ephemeral, message(node(1), ephemeral, 1, None), later),
        Err(OutboundError::NoAddress { peer: ephemeral })
    );
}

/// A generator that gives the values it was handed, in turn.
struct Scripted(Vec<u64>, usize);

impl Randomness for Scripted {
    fn next_u64(&mut self) -> u64 {
        let value = self.0[self.1 % self.0.len()];
        self.1 += 1;
        value
    }
}

fn summary(t: &Transport, peer: NodeIdentity) -> PeerSummary {
    t.peer_summaries().into_iter().find(|s| s.peer == peer).expect("tracked")
}

fn connect(t: &mut Transport, peer: NodeIdentity) -> ConnId {
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1_000, None), T0).expect("queued");
    let d = dials(&drain(t));
    t.dial_succeeded(d[0].0, 42, T0);
    drain(t);
    t.acked(d[0].0, 1, message_cost(&message(node(1), peer, 1_000, None)), T0);
    drain(t);
    d[0].0
}

/// Between half and all of `initial * 2^(failures - 1)`, capped, for every
/// draw of the generator.
#[test]
fn backoff_is_exponential_with_jitter_and_capped() {
    let draws = [0, 7, 200, 300, 12_345, u64::MAX];
    for failures in [1u32, 2, 3, 10, 30] {
        for r in draws {
            let config = TransportConfig { backoff_initial_ms: 100, backoff_max_ms: 10_000, ..Default::default() };
            let mut t = Transport::new(node(1), config, Box::new(Scripted(vec![r], 0)));
            let full = (100u64 << (failures - 1).min(20)).min(10_000);
            let half = full / 2;
            let expected = half + r % (full - half + 1);
            assert_eq!(t.backoff_delay(failures), expected, "failures {failures}, draw {r}");
            assert!((half..=full).contains(&expected));
        }
    }
}

#[test]
fn the_state_of_a_peer_can_be_read() {
    let config = TransportConfig { window: 7, ..Default::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    assert_eq!(t.config().window, 7);
    let peer = node(2);
    assert!(!t.is_connected(&peer));
    connect(&mut t, peer);
    assert!(t.is_connected(&peer));
    assert!(!t.is_connected(&node(3)));
}

#[test]
fn a_full_peer_table_still_serves_the_peers_it_holds() {
    let config = TransportConfig { max_peers: 1, ..Default::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let (known, stranger) = (node(2), node(3));
    t.set_addresses(known, vec![addr("quic://127.0.0.1:1", 1)], T0);
    // Trusted: it keeps its place however quiet it is.
    t.set_trusted(known, true);
    t.set_addresses(stranger, vec![addr("quic://127.0.0.1:2", 1)], T0);
    assert!(t.knows(&known));
    assert!(!t.knows(&stranger), "no room for a second peer");
    t.set_addresses(known, vec![addr("quic://127.0.0.1:3", 1)], T0);
    t.send(known, message(node(1), known, 1, None), T0).expect("a held peer is served");
    assert_eq!(dials(&drain(&mut t))[0].1.socket.port(), 3, "its addresses were updated");
    assert_eq!(
        t.send(stranger, message(node(1), stranger, 2, None), T0),
        Err(OutboundError::QueueFull { peer: stranger })
    );
    let (_, status) = t.admit_inbound(stranger, None, PROTOCOL_VERSIONS, 42, false, T0);
    assert_eq!(status, HandshakeStatus::OverCapacity);
    let (_, status) = t.admit_inbound(known, None, PROTOCOL_VERSIONS, 42, false, T0);
    assert_eq!(status, HandshakeStatus::Ok, "a held peer may dial in");
    assert_eq!(t.peers_evicted(), 0);
}

/// Guards the peer table: strangers that came and went cannot lock out a
/// newcomer. The quietest peer holding nothing of value makes room; a
/// permanent peer, a trusted one and one with a connection never do.
#[test]
fn a_full_peer_table_forgets_its_quietest_stranger_for_a_newcomer() {
    let config = TransportConfig { max_peers: 4, ..Default::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let ip: IpAddr = "10.0.0.1".parse().expect("ip");
    let at = |s: u64| T0.saturating_add_millis(s * 1000);
    t.set_addresses(node(2), vec![addr("quic://127.0.0.1:2", 1)], at(0));
    t.set_addresses(node(3), vec![addr("quic://127.0.0.1:3", 1)], at(1));
    t.set_permanent(node(4), true, at(0));
    t.set_addresses(node(5), vec![addr("quic://127.0.0.1:5", 1)], at(0));
    t.set_trusted(node(5), true);
    drain(&mut t);
    let (_, status) = t.admit_inbound(node(6), Some(ip), PROTOCOL_VERSIONS, 42, false, at(2));
    assert_eq!(status, HandshakeStatus::Ok);
    assert!(!t.knows(&node(2)), "the quietest stranger made room");
    assert!(t.knows(&node(3)) && t.knows(&node(4)) && t.knows(&node(5)));
    assert!(drain(&mut t).contains(&TransportEffect::Forgotten { peer: node(2) }), "its host forgets it too");
    let (_, status) = t.admit_inbound(node(7), Some(ip), PROTOCOL_VERSIONS, 42, false, at(3));
    assert_eq!(status, HandshakeStatus::Ok);
    assert!(!t.knows(&node(3)));
    let (_, status) = t.admit_inbound(node(8), Some(ip), PROTOCOL_VERSIONS, 42, false, at(4));
    assert_eq!(status, HandshakeStatus::OverCapacity, "permanent, trusted and connecting peers stay");
    assert_eq!(t.peers_evicted(), 2);
}

/// Guards the peer table against identities minted on one machine: past
/// its share, an address's newcomers push out its own strangers, and
/// another address's peers keep their places.
#[test]
fn one_address_holds_only_its_share_of_the_table() {
    let config = TransportConfig { max_peers: 100, max_peers_per_ip: 2, ..Default::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(1)));
    let (botnet, honest): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
    let at = |s: u64| T0.saturating_add_millis(s * 1000);
    let (conn, _) = t.admit_inbound(node(50), Some(honest), PROTOCOL_VERSIONS, 42, false, at(0));
    t.closed(conn, CloseReason::Idle, Vec::new(), at(0));
    for n in 2..12u8 {
        let (conn, status) = t.admit_inbound(node(n), Some(botnet), PROTOCOL_VERSIONS, 42, false, at(u64::from(n)));
        assert_eq!(status, HandshakeStatus::Ok);
        t.closed(conn, CloseReason::Idle, Vec::new(), at(u64::from(n)));
    }
    assert!(t.knows(&node(50)), "another address keeps its peer");
    let from_botnet: Vec<u8> = (2..12u8).filter(|n| t.knows(&node(*n))).collect();
    assert_eq!(from_botnet, [10, 11], "the address holds its share and no more, its newest");
    assert_eq!(t.peers_evicted(), 8);
    // With both of its entries connected, the address has no stranger to
    // give up: the next identity from it is refused.
    for n in [20, 21] {
        let (_, status) = t.admit_inbound(node(n), Some(botnet), PROTOCOL_VERSIONS, 42, false, at(20));
        assert_eq!(status, HandshakeStatus::Ok);
    }
    let (_, status) = t.admit_inbound(node(22), Some(botnet), PROTOCOL_VERSIONS, 42, false, at(21));
    assert_eq!(status, HandshakeStatus::OverCapacity);
    // A banned peer's entry leaves its address's count.
    t.ban(node(20));
    let (_, status) = t.admit_inbound(node(23), Some(botnet), PROTOCOL_VERSIONS, 42, false, at(22));
    assert_eq!(status, HandshakeStatus::Ok);
}

#[test]
fn an_ephemeral_peer_is_not_dialled_for_nothing() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.set_permanent(peer, false, T0);
    t.handle_timeout(T0.saturating_add_millis(1));
    assert!(drain(&mut t).is_empty(), "nothing to send, not permanent: no dial");
    // A message whose dials all fail, then expires: once the backoff is
    // over there is nothing to dial for.
    t.send(peer, message(node(1), peer, 1, Some(T0.0 + 50)), T0).expect("queued");
    let d = dials(&drain(&mut t));
    t.dial_failed(d[0].0, ConnectFailure::Unreachable("refused".into()), Some(d[0].1), T0);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(100));
    assert!(drain(&mut t).iter().all(|e| matches!(e, TransportEffect::GiveUp { .. })));
    t.handle_timeout(T0.saturating_add_millis(60_000));
    assert!(dials(&drain(&mut t)).is_empty(), "the queue is empty: no redial");
    // Its backoff over and nothing to send, the peer is idle, and forgotten
    // once quiet for long enough.
    t.handle_timeout(T0.saturating_add_millis(2 * t.config().forget_after_ms));
    assert!(!t.knows(&peer));
}

/// A permanent peer whose connection ended without a backoff (this side
/// closed it) is dialled again at its next timeout, once it has an address.
#[test]
fn an_idle_permanent_peer_is_redialled_at_its_next_timeout() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    t.set_permanent(peer, true, T0);
    t.closed(conn, CloseReason::Shutdown, Vec::new(), T0);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(1));
    assert_eq!(dials(&drain(&mut t)).len(), 1);
    // Without an address there is nothing to try.
    let mut t = transport(1);
    let other = node(3);
    t.set_permanent(other, true, T0);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(60_000));
    assert!(dials(&drain(&mut t)).is_empty());
}

#[test]
fn a_failed_address_is_tried_after_its_equals() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 5), addr("quic://127.0.0.1:2", 5)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let mut now = T0;
    let mut first_tried = Vec::new();
    // Round one: both fail once. Round two starts with the same address
    // (a tie), which fails again, and the other is not reached: the
    // first attempt refuses the whole round.
    for round in 0..3 {
        if round > 0 {
            now = now.saturating_add_millis(60_000);
            t.handle_timeout(now);
        }
        let d = dials(&drain(&mut t));
        first_tried.push(d[0].1);
        if round == 2 {
            break;
        }
        t.dial_failed(d[0].0, ConnectFailure::Unreachable("refused".into()), Some(d[0].1), now);
        let next = dials(&drain(&mut t));
        if round == 0 {
            t.dial_failed(next[0].0, ConnectFailure::Unreachable("refused".into()), Some(next[0].1), now);
        } else {
            t.dial_failed(next[0].0, ConnectFailure::Refused(HandshakeStatus::OverCapacity), None, now);
        }
        drain(&mut t);
    }
    assert_eq!(first_tried[0], first_tried[1], "equal weights and failures: the same order");
    assert_ne!(first_tried[2], first_tried[0], "the address that failed twice now comes second");
}

#[test]
fn activity_from_the_peer_keeps_an_ephemeral_connection_open() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    let idle = t.config().idle_timeout_ms;
    t.activity(peer, T0.saturating_add_millis(idle - 1));
    t.handle_timeout(T0.saturating_add_millis(idle + 1));
    assert!(drain(&mut t).is_empty(), "the peer spoke recently");
    t.handle_timeout(T0.saturating_add_millis(2 * idle));
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn, reason: CloseReason::Idle }]);
}

#[test]
fn an_idle_permanent_connection_stays_open() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    t.set_permanent(peer, true, T0);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(10 * t.config().idle_timeout_ms));
    assert!(drain(&mut t).is_empty());
    t.set_permanent(peer, false, T0);
    assert!(drain(&mut t).is_empty(), "making a peer ephemeral dials nothing");
    t.handle_timeout(T0.saturating_add_millis(11 * t.config().idle_timeout_ms));
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn, reason: CloseReason::Idle }]);
}

#[test]
fn setting_an_idle_peer_ephemeral_dials_nothing() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.set_permanent(peer, false, T0);
    assert!(drain(&mut t).is_empty());
}

/// Two connections from the same process of a peer, both inbound: the
/// newer replaces the older, whichever identity is smaller.
#[test]
fn a_newer_connection_in_the_same_direction_replaces_the_older() {
    for (local, remote) in [(1u8, 2u8), (2, 1)] {
        let mut t = transport(local);
        let peer = node(remote);
        let (old, _) = t.admit_inbound(peer, None, PROTOCOL_VERSIONS, 42, false, T0);
        t.inbound_established(old, T0);
        drain(&mut t);
        let (new, _) = t.admit_inbound(peer, None, PROTOCOL_VERSIONS, 42, false, T0);
        t.inbound_established(new, T0);
        assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn: old, reason: CloseReason::Duplicate }]);
        t.send(peer, message(node(local), peer, 1, None), T0).expect("sent");
        match drain(&mut t).as_slice() {
            [TransportEffect::Transmit { conn, .. }] => assert_eq!(*conn, new, "the new connection carries traffic"),
            other => panic!("expected a transmit, got {other:?}"),
        }
    }
}

#[test]
fn returned_messages_are_counted_in_the_queue_again() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    let returned = vec![message(node(1), peer, 1, None), message(node(1), peer, 2, None)];
    let cost: usize = returned.iter().map(message_cost).sum();
    t.closed(conn, CloseReason::Lost("reset".into()), returned, T0);
    let s = summary(&t, peer);
    assert_eq!((s.queued, s.queued_bytes), (2, cost));
}

#[test]
fn only_a_lost_connection_a_peer_still_needs_counts_as_a_failure() {
    // Ephemeral, nothing queued: a closed connection is no failure.
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    t.closed(conn, CloseReason::Lost("reset".into()), Vec::new(), T0);
    assert_eq!(summary(&t, peer).failures, 0);
    // Permanent: a lost connection backs off before the redial.
    let mut t = transport(1);
    let conn = connect(&mut t, peer);
    t.set_permanent(peer, true, T0);
    t.closed(conn, CloseReason::Lost("reset".into()), Vec::new(), T0);
    assert_eq!(summary(&t, peer).failures, 1);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(1));
    assert!(dials(&drain(&mut t)).is_empty(), "backing off");
    // Permanent, but this node is stopping: no backoff, no failure.
    let mut t = transport(1);
    let conn = connect(&mut t, peer);
    t.set_permanent(peer, true, T0);
    t.closed(conn, CloseReason::Shutdown, Vec::new(), T0);
    assert_eq!(summary(&t, peer).failures, 0);
}

#[test]
fn disconnect_closes_one_peer_and_shutdown_closes_all_and_gives_up_the_queue() {
    let mut t = transport(1);
    let (a, b, c) = (node(2), node(3), node(4));
    let conn_a = connect(&mut t, a);
    let conn_b = connect(&mut t, b);
    t.disconnect(a, CloseReason::Removed);
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn: conn_a, reason: CloseReason::Removed }]);
    t.disconnect(c, CloseReason::Removed);
    assert!(drain(&mut t).is_empty(), "no connection, nothing to close");
    t.set_addresses(c, vec![addr("quic://127.0.0.1:9", 1)], T0);
    t.send(c, message(node(1), c, 7, None), T0).expect("queued");
    drain(&mut t);
    t.shutdown();
    let effects = drain(&mut t);
    let mut closed: Vec<ConnId> = effects
        .iter()
        .filter_map(|e| match e {
            TransportEffect::Close { conn, reason: CloseReason::Shutdown } => Some(*conn),
            _ => None,
        })
        .collect();
    closed.sort();
    assert!(closed.contains(&conn_a) && closed.contains(&conn_b), "{effects:?}");
    assert!(effects.iter().any(
        |e| matches!(e, TransportEffect::GiveUp { message, reason: Undeliverable::Shutdown } if id_of(message) == 7)
    ));
}

#[test]
fn a_banned_peer_loses_its_queue_and_connection_and_is_not_dialled_again() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    t.set_permanent(peer, true, T0);
    drain(&mut t);
    t.ban(peer);
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn, reason: CloseReason::Removed }]);
    assert!(!t.knows(&peer));
    // What was in flight comes back when the connection closes: given up.
    t.closed(conn, CloseReason::Removed, vec![message(node(1), peer, 5, None)], T0);
    assert!(matches!(
        drain(&mut t).as_slice(),
        [TransportEffect::GiveUp { message, reason: Undeliverable::Banned }] if id_of(message) == 5
    ));
    t.handle_timeout(T0.saturating_add_millis(60_000));
    assert!(dials(&drain(&mut t)).is_empty(), "never dialled again");

    // Queued messages go at once; a dial in progress is abandoned.
    let mut t = transport(1);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 6, None), T0).expect("queued");
    let d = dials(&drain(&mut t));
    t.ban(peer);
    assert!(matches!(
        drain(&mut t).as_slice(),
        [TransportEffect::GiveUp { message, reason: Undeliverable::Banned }] if id_of(message) == 6
    ));
    t.dial_succeeded(d[0].0, 42, T0);
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn: d[0].0, reason: CloseReason::Duplicate }]);
    assert!(!t.is_connected(&peer));
}

/// Messages that come back from a connection that had already lost its
/// place (the peer restarted and dialled in) are not stranded when the
/// connection that replaced it has died too: the peer is dialled again.
#[test]
fn messages_returned_by_a_replaced_connection_are_sent_on_the_next() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let first = dials(&drain(&mut t))[0].0;
    t.dial_succeeded(first, 1111, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1]);
    let (second, status) = t.admit_inbound(peer, None, PROTOCOL_VERSIONS, 2222, false, T0);
    assert_eq!(status, HandshakeStatus::Ok);
    t.inbound_established(second, T0);
    assert!(drain(&mut t).contains(&TransportEffect::Close { conn: first, reason: CloseReason::Duplicate }));
    t.closed(second, CloseReason::Lost("reset".into()), Vec::new(), T0);
    drain(&mut t);
    t.closed(first, CloseReason::Duplicate, vec![message(node(1), peer, 1, None)], T0);
    drain(&mut t);
    t.handle_timeout(T0);
    let d = dials(&drain(&mut t));
    assert_eq!(d.len(), 1, "dialled again for the returned message");
    t.dial_succeeded(d[0].0, 2222, T0);
    assert_eq!(transmitted(&drain(&mut t)), vec![1]);
}

/// Zero idle and forget times close and forget at once; a timer set again
/// while firing is never due in the same round.
#[test]
fn zero_timeouts_do_not_spin() {
    let config = TransportConfig { idle_timeout_ms: 0, forget_after_ms: 0, ..TransportConfig::default() };
    let mut t = Transport::new(node(1), config, Box::new(SeededRandom::new(7)));
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let d = dials(&drain(&mut t));
    t.dial_succeeded(d[0].0, 42, T0);
    drain(&mut t);
    // The message is in flight: the connection is in use.
    t.handle_timeout(T0);
    assert!(t.poll_timeout().is_some_and(|due| due > T0), "nothing left due now");
    assert!(t.is_connected(&peer));
}

/// Once the node is stopping, what closing connections hand back is given
/// up, and nothing is dialled.
#[test]
fn a_stopping_node_gives_up_what_comes_back_and_dials_nothing() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let conn = dials(&drain(&mut t))[0].0;
    t.dial_succeeded(conn, 42, T0);
    drain(&mut t);
    t.shutdown();
    drain(&mut t);
    t.closed(conn, CloseReason::Shutdown, vec![message(node(1), peer, 1, None)], T0);
    let effects = drain(&mut t);
    assert!(effects.iter().any(
        |e| matches!(e, TransportEffect::GiveUp { message, reason: Undeliverable::Shutdown } if id_of(message) == 1)
    ));
    t.handle_timeout(T0.saturating_add_millis(60_000));
    assert!(dials(&drain(&mut t)).is_empty(), "no dial while stopping");
}

#[test]
fn the_host_hears_when_the_next_timeout_moves_sooner_and_a_banned_peer_leaves_no_timers() {
    let mut t = transport(1);
    let peer = node(2);
    assert!(!t.take_sooner_timeout());
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    assert!(t.take_sooner_timeout(), "a first timer");
    assert!(!t.take_sooner_timeout(), "told once");
    t.send(peer, message(node(1), peer, 1, Some(T0.0 + 50)), T0).expect("queued");
    assert!(t.take_sooner_timeout(), "the message's expiry is sooner than forgetting the peer");
    t.ban(peer);
    assert!(t.timers.is_empty(), "nothing is scheduled for a banned peer");
}

#[test]
fn an_ephemeral_connection_in_use_stays_open_and_an_idle_one_closes_on_time() {
    let mut t = transport(1);
    let peer = node(2);
    let conn = connect(&mut t, peer);
    let idle = t.config().idle_timeout_ms;
    t.send(peer, message(node(1), peer, 1, None), T0).expect("sent");
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(idle + 1));
    assert!(drain(&mut t).is_empty(), "a message in flight: in use");
    // Acknowledged at idle + 1: quiet from then on, closed exactly one idle
    // time later.
    let acked_at = T0.saturating_add_millis(idle + 1);
    t.acked(conn, 1, message_cost(&message(node(1), peer, 1, None)), acked_at);
    t.handle_timeout(acked_at.saturating_add_millis(idle - 1));
    assert!(drain(&mut t).is_empty());
    t.handle_timeout(acked_at.saturating_add_millis(idle));
    assert_eq!(drain(&mut t), vec![TransportEffect::Close { conn, reason: CloseReason::Idle }]);
}

/// Messages handed back with no connection left are dialled for only
/// while they are worth sending: expired by the time the redial is due,
/// they are given up and nothing is dialled.
#[test]
fn returned_messages_that_expire_before_the_redial_are_given_up_not_dialled_for() {
    let mut t = transport(1);
    let peer = node(2);
    t.set_addresses(peer, vec![addr("quic://127.0.0.1:1", 1)], T0);
    t.send(peer, message(node(1), peer, 1, None), T0).expect("queued");
    let first = dials(&drain(&mut t))[0].0;
    t.dial_succeeded(first, 1111, T0);
    drain(&mut t);
    let (second, _) = t.admit_inbound(peer, None, PROTOCOL_VERSIONS, 2222, false, T0);
    t.inbound_established(second, T0);
    t.closed(second, CloseReason::Lost("reset".into()), Vec::new(), T0);
    t.closed(first, CloseReason::Duplicate, vec![message(node(1), peer, 2, Some(T0.0 + 10))], T0);
    drain(&mut t);
    t.handle_timeout(T0.saturating_add_millis(20));
    let effects = drain(&mut t);
    assert!(dials(&effects).is_empty(), "{effects:?}");
    assert!(effects.iter().any(|e| matches!(e, TransportEffect::GiveUp { reason: Undeliverable::Expired, .. })));
}
