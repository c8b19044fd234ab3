//! The overlay driven alone: many overlays exchanging messages in memory,
//! in any order, with failures and hostile messages.

use std::collections::{BTreeSet, VecDeque};

use netmachine_domain::{
    Advert, CertificateBody, DomainAdvert, DomainAdvertBody, DomainIdentity, ExternalIdentity, JoinPolicy,
    MembershipRules, NodeAdvert, NodeAdvertBody, NodeIdentity, Timestamp, WeightedAddress,
};
use proptest::prelude::*;

use super::*;
use crate::ports::Signer;
use crate::testing::{TestSigner, TestVerifier};

const T0: Timestamp = Timestamp(1_000_000);

fn signer(index: u32) -> TestSigner {
    let mut key = [7u8; 32];
    key[..4].copy_from_slice(&index.to_be_bytes());
    TestSigner(ExternalIdentity::ed25519(key))
}

fn id(index: u32) -> NodeIdentity {
    NodeIdentity::new(signer(index).0)
}

fn domain_signer() -> TestSigner {
    TestSigner(ExternalIdentity::ed25519([0xd0; 32]))
}

fn domain_advert(version: u64, revoked: Vec<NodeIdentity>) -> DomainAdvert {
    let rules = MembershipRules::new(vec![id(0)], 3600, revoked, false).expect("valid");
    let body =
        DomainAdvertBody::new(DomainIdentity::new(domain_signer().0), vec![id(0)], JoinPolicy::Open, version, T0)
            .expect("valid")
            .with_rules(rules);
    let sig = domain_signer().sign(&DomainAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

fn node_advert(index: u32) -> NodeAdvert {
    let address =
        WeightedAddress { address: format!("quic://10.0.0.{}:4100", index % 250).parse().expect("valid"), weight: 1 };
    let body = NodeAdvertBody::new(id(index), vec![address], None, 1, T0).expect("valid");
    let sig = signer(index).sign(&NodeAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

/// Node `index`'s entry, certified by `approver` until `expires`.
fn info_by(index: u32, approver: u32, expires: Timestamp) -> PeerInfo {
    let body = CertificateBody {
        domain: DomainIdentity::new(domain_signer().0),
        member: id(index),
        approver: id(approver),
        epoch: 1,
        issued: T0,
        expires,
    };
    let sig = signer(approver).sign(&body.signing_bytes());
    PeerInfo { advert: node_advert(index), cert: body.signed(sig) }
}

fn info(index: u32) -> PeerInfo {
    info_by(index, 0, Timestamp(T0.0 + 3_600_000))
}

fn config() -> OverlayConfig {
    OverlayConfig { shuffle_interval_ms: 10_000, neighbor_timeout_ms: 500, ..OverlayConfig::default() }
}

/// Overlays that send each other messages through one queue.
struct Net {
    overlays: Vec<Overlay>,
    alive: Vec<bool>,
    queue: VecDeque<(u32, u32, Message)>,
    now: Timestamp,
}

impl Net {
    fn new(nodes: u32, config: OverlayConfig) -> Self {
        Self::with_advert(nodes, config, domain_advert(1, vec![]))
    }

    fn with_advert(nodes: u32, config: OverlayConfig, advert: DomainAdvert) -> Self {
        let overlays = (0..nodes)
            .map(|n| {
                let contact = (n != 0).then(|| id(0));
                Overlay::new(advert.clone(), info(n), contact, config, u64::from(n) + 1, T0)
            })
            .collect();
        let mut net = Self { overlays, alive: vec![true; nodes as usize], queue: VecDeque::new(), now: T0 };
        for n in 0..nodes {
            net.collect(n);
        }
        net
    }

    fn index(&self, node: &NodeIdentity) -> Option<u32> {
        (0..self.overlays.len() as u32).find(|n| id(*n) == *node)
    }

    /// Takes what overlay `n` asked for: a send to a dead node fails at
    /// once, as a dial to it would.
    fn collect(&mut self, n: u32) {
        let mut failed = Vec::new();
        while let Some(out) = self.overlays[n as usize].poll_out() {
            if let Out::Send(to, message) = out {
                match self.index(&to) {
                    Some(to) if self.alive[to as usize] => self.queue.push_back((n, to, message)),
                    _ => failed.push(to),
                }
            }
        }
        for peer in failed {
            self.overlays[n as usize].peer_failed(&peer, self.now);
            self.collect(n);
        }
    }

    fn deliver(&mut self, pick: usize) {
        if self.queue.is_empty() {
            return;
        }
        let (from, to, message) = self.queue.remove(pick % self.queue.len()).expect("in range");
        if !self.alive[to as usize] {
            return;
        }
        self.overlays[to as usize].on_message(id(from), message, self.now, &TestVerifier);
        self.collect(to);
    }

    fn settle(&mut self, budget: usize) {
        for _ in 0..budget {
            if self.queue.is_empty() {
                return;
            }
            self.deliver(0);
        }
    }

    fn kill(&mut self, n: u32) {
        self.alive[n as usize] = false;
        // Its neighbours notice as the node core would tell them: the
        // connection closed.
        for m in 0..self.overlays.len() as u32 {
            if self.alive[m as usize] && self.overlays[m as usize].is_active(&id(n)) {
                self.overlays[m as usize].peer_failed(&id(n), self.now);
                self.collect(m);
            }
        }
    }

    fn tick(&mut self, advance_ms: u64) {
        self.now = self.now.saturating_add_millis(advance_ms);
        for n in 0..self.overlays.len() as u32 {
            if self.alive[n as usize] {
                self.overlays[n as usize].handle_timeout(self.now);
                self.collect(n);
            }
        }
    }

    /// The nodes alive in the largest connected part of the active views.
    fn largest_component(&self) -> usize {
        let alive: Vec<u32> = (0..self.overlays.len() as u32).filter(|n| self.alive[*n as usize]).collect();
        let mut seen = BTreeSet::new();
        let mut best = 0;
        for &start in &alive {
            if seen.contains(&start) {
                continue;
            }
            let mut size = 0;
            let mut stack = vec![start];
            seen.insert(start);
            while let Some(n) = stack.pop() {
                size += 1;
                for peer in self.overlays[n as usize].active() {
                    if let Some(m) = self.index(&peer) {
                        if self.alive[m as usize] && seen.insert(m) {
                            stack.push(m);
                        }
                    }
                }
            }
            best = best.max(size);
        }
        best
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        for (n, overlay) in self.overlays.iter().enumerate() {
            if !self.alive[n] {
                continue;
            }
            let me = id(n as u32);
            let active: Vec<NodeIdentity> = overlay.active().collect();
            let passive: Vec<NodeIdentity> = overlay.passive().collect();
            prop_assert!(active.len() <= overlay.active_capacity(), "active view over its bound");
            prop_assert!(passive.len() <= overlay.passive_capacity(), "passive view over its bound");
            prop_assert!(!active.contains(&me) && !passive.contains(&me), "a view holds its own node");
            let distinct: BTreeSet<_> = active.iter().chain(&passive).collect();
            prop_assert_eq!(distinct.len(), active.len() + passive.len(), "an entry twice, or in both views");
            for entry in overlay.active_entries().iter().chain(overlay.passive_entries()) {
                prop_assert!(overlay.admit(entry, self.now, &TestVerifier).is_ok(), "an uncertified entry");
            }
            let recent: Vec<(&PeerInfo, NodeIdentity)> = overlay.recent().iter().collect();
            prop_assert!(recent.len() <= config().recent, "members met lately over their bound");
            for (entry, from) in &recent {
                prop_assert!(entry.id() != me, "its own node among the members met lately");
                prop_assert!(overlay.admit(entry, self.now, &TestVerifier).is_ok(), "an uncertified member met");
                let supplied = recent.iter().filter(|(_, f)| f == from).count();
                prop_assert!(supplied <= 8, "one neighbour supplied {supplied} members met lately");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Deliver(usize),
    Kill(u32),
    Tick(u64),
    /// A hostile shuffle from node `from` to node `to` whose entries are
    /// forged, expired, or certified for another domain.
    Hostile {
        from: u32,
        to: u32,
        kind: u8,
    },
}

fn op(nodes: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => any::<usize>().prop_map(Op::Deliver),
        1 => (1..nodes).prop_map(Op::Kill),
        2 => (100u64..20_000).prop_map(Op::Tick),
        2 => (0..nodes, 0..nodes, 0u8..4).prop_map(|(from, to, kind)| Op::Hostile { from, to, kind }),
    ]
}

/// An entry that must never be taken: `kind` picks how it is wrong.
fn bad_entry(index: u32, kind: u8, now: Timestamp) -> PeerInfo {
    match kind {
        // Signed by a node that is no approver.
        0 => info_by(index, index, Timestamp(now.0 + 3_600_000)),
        // Expired.
        1 => info_by(index, 0, now),
        // A certificate of another member under this advert.
        2 => {
            let mut entry = info(index);
            entry.advert = node_advert(index + 1000);
            entry
        }
        // A signature that does not verify.
        _ => {
            let mut entry = info(index);
            entry.cert.expires = Timestamp(entry.cert.expires.0 + 1);
            entry
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the order of messages, failures, shuffles and hostile
    /// entries, no view exceeds its bound, holds its own node, holds an
    /// entry twice, or holds an entry without a valid certificate.
    #[test]
    fn views_stay_bounded_certified_and_free_of_self(ops in proptest::collection::vec(op(16), 1..300)) {
        // Small views, so that the bounds are reached often.
        let small = OverlayConfig { active: 3, passive: 6, ..config() };
        let mut net = Net::new(16, small);
        net.check_invariants()?;
        for op in ops {
            match op {
                Op::Deliver(pick) => net.deliver(pick),
                Op::Kill(n) => net.kill(n),
                Op::Tick(ms) => net.tick(ms),
                Op::Hostile { from, to, kind } => {
                    let entries = (0..MAX_ENTRIES as u32).map(|k| bad_entry(100 + k, kind, net.now)).collect();
                    // A real member starts it: only its entries are bad.
                    let origin = info(from);
                    let shuffle = Message::Shuffle { origin, entries, ttl: 0, id: 1 };
                    if net.alive[to as usize] {
                        // From a neighbour, where one is: shuffles are taken
                        // only from neighbours.
                        let from = net.overlays[to as usize].active().next().unwrap_or(id(from));
                        net.overlays[to as usize].on_message(from, shuffle, net.now, &TestVerifier);
                        let join = Message::Join(bad_entry(200 + u32::from(kind), kind, net.now));
                        net.overlays[to as usize].on_message(id(200 + u32::from(kind)), join, net.now, &TestVerifier);
                        net.collect(to);
                    }
                }
            }
            net.check_invariants()?;
        }
    }
}

#[test]
fn joiners_form_one_overlay_that_repairs_itself_after_failures() {
    let mut net = Net::new(60, config());
    net.settle(100_000);
    for _ in 0..6 {
        net.tick(10_000);
        net.settle(100_000);
    }
    assert_eq!(net.largest_component(), 60, "every joiner is in one overlay");
    for n in 0..60 {
        let active = net.overlays[n].active().count();
        assert!((1..=5).contains(&active), "node {n} has {active} neighbours");
    }
    // Half fail at once; the survivors notice and repair from their
    // passive views, within one shuffle period.
    for n in (1..60).step_by(2) {
        net.kill(n);
    }
    net.settle(100_000);
    net.tick(1_000);
    net.settle(100_000);
    assert_eq!(net.largest_component(), 30, "the survivors are one overlay again");
}

#[test]
fn without_reactive_repair_the_overlay_waits_for_its_period() {
    let periodic = OverlayConfig { repair: Repair::PeriodicOnly, ..config() };
    let mut net = Net::new(40, periodic);
    net.settle(100_000);
    for _ in 0..6 {
        net.tick(10_000);
        net.settle(100_000);
    }
    let before: usize = (0..40).map(|n| net.overlays[n].active().count()).sum();
    for n in (1..40).step_by(2) {
        net.kill(n);
    }
    net.settle(100_000);
    let survivors: usize = (0..40).step_by(2).map(|n| net.overlays[n].active().count()).sum();
    assert!(survivors < before / 2, "no neighbour replaced before the period ({survivors} of {before})");
    let requests: u64 = (0..40).step_by(2).map(|n| net.overlays[n].counters().repair_requests).sum();
    net.tick(10_000);
    net.settle(100_000);
    let after: u64 = (0..40).step_by(2).map(|n| net.overlays[n].counters().repair_requests).sum();
    assert!(after > requests, "the period refills the views");
}

#[test]
fn a_revoking_advert_removes_the_member_from_every_view() {
    let mut net = Net::new(20, config());
    net.settle(100_000);
    for _ in 0..4 {
        net.tick(10_000);
        net.settle(100_000);
    }
    let revoked = id(7);
    for n in 0..20 {
        if n != 7 {
            let own = net.overlays[n].own().clone();
            net.overlays[n].set_advert(domain_advert(2, vec![revoked]), own, net.now);
            net.collect(n as u32);
        }
    }
    for n in 0..20 {
        if n != 7 {
            assert!(!net.overlays[n].active().any(|p| p == revoked), "node {n} keeps a revoked neighbour");
            assert!(!net.overlays[n].passive().any(|p| p == revoked), "node {n} keeps a revoked member");
        }
    }
}

#[test]
fn a_shuffle_stuffed_past_the_cap_does_not_decode() {
    let domain = DomainIdentity::new(domain_signer().0);
    let entries: Vec<PeerInfo> = (0..MAX_ENTRIES as u32 + 1).map(info).collect();
    let stuffed = Message::ShuffleReply { entries, id: 1 }.encode(&domain);
    assert!(Message::decode(&stuffed).is_err());
    let entries: Vec<PeerInfo> = (0..MAX_ENTRIES as u32).map(info).collect();
    let fits = Message::Shuffle { origin: info(1), entries, ttl: 3, id: 9 };
    assert_eq!(Message::decode(&fits.encode(&domain)).expect("decodes"), (domain, fits));
}

#[test]
fn the_engine_counts_and_drops_what_it_cannot_take() {
    let setup = crate::engine::EngineSetup::for_tests(id(1), 5);
    let mut engine = Topology::new(&setup, config());
    engine.handle(Input::OwnAdvert(node_advert(1)), T0);
    let member =
        FromDomain::Member { advert: Box::new(domain_advert(1, vec![])), cert: info(1).cert, contact: Some(id(0)) };
    engine.handle(Input::FromEngine { protocol: DOMAIN_PROTOCOL.into(), body: member.encode() }, T0);
    let overlay = engine.overlay(&DomainIdentity::new(domain_signer().0)).expect("runs");
    assert_eq!(overlay.active().count(), 0);
    // The first join went to the contact.
    let mut sent = Vec::new();
    while let Some(effect) = engine.poll_effect() {
        sent.push(effect);
    }
    assert!(sent.iter().any(|e| matches!(e, Effect::SendToPeer { peer, .. } if *peer == id(0))));
    let domain = DomainIdentity::new(domain_signer().0);
    let entries: Vec<PeerInfo> = (0..MAX_ENTRIES as u32 + 1).map(info).collect();
    let stuffed = Message::ShuffleReply { entries, id: 1 }.encode(&domain);
    let protocol = ProtocolId::new(TOPOLOGY_PROTOCOL, TOPOLOGY_VERSION).expect("valid");
    let from = |body| Input::FromPeer {
        peer: id(2),
        message: netmachine_domain::EngineMessage::new(
            netmachine_domain::EngineIdentity::new(id(2), netmachine_domain::EngineName::new("x").expect("valid")),
            netmachine_domain::DestinationIdentity::Node(id(1)),
            netmachine_domain::MessageId(1),
            protocol.clone(),
            body,
        ),
    };
    engine.handle(from(stuffed), T0);
    assert_eq!(engine.counters().malformed, 1);
    let other = DomainIdentity::new(ExternalIdentity::ed25519([0xd1; 32]));
    engine.handle(from(Message::Disconnect { alive: true }.encode(&other)), T0);
    assert_eq!(engine.counters().not_member, 1);
    // A join whose certificate another member's approver never signed.
    let forged = Message::Join(bad_entry(2, 0, T0)).encode(&domain);
    engine.handle(from(forged), T0);
    let overlay = engine.overlay(&domain).expect("runs");
    assert_eq!(overlay.active().count(), 0, "no state changed");
    assert_eq!(overlay.counters().refused_uncertified, 1);
}

#[test]
fn a_passive_member_whose_idle_connection_closes_stays_in_reserve() {
    let mut net = Net::new(12, config());
    net.settle(100_000);
    for _ in 0..3 {
        net.tick(10_000);
        net.settle(100_000);
    }
    let overlay = &mut net.overlays[3];
    let Some(reserve) = overlay.passive().next() else { panic!("node 3 holds members in reserve") };
    let now = net.now;
    overlay.peer_gone(&reserve, now);
    assert!(overlay.passive().any(|p| p == reserve), "an idle close is no failure");
    overlay.peer_failed(&reserve, now);
    assert!(!overlay.passive().any(|p| p == reserve), "a failed dial is");
}

#[test]
fn a_renewed_certificate_reaches_the_neighbours() {
    let mut net = Net::new(10, config());
    net.settle(100_000);
    let neighbours: Vec<NodeIdentity> = net.overlays[4].active().collect();
    assert!(!neighbours.is_empty());
    let renewed = info_by(4, 0, Timestamp(T0.0 + 7_200_000));
    let now = net.now;
    net.overlays[4].set_advert(domain_advert(1, vec![]), renewed, now);
    net.collect(4);
    net.settle(100_000);
    for peer in neighbours {
        let m = net.index(&peer).expect("a node of the test") as usize;
        let entry = net.overlays[m].active_entries().iter().find(|e| e.id() == id(4)).expect("still a neighbour");
        assert_eq!(entry.cert.expires, Timestamp(T0.0 + 7_200_000), "node {m} holds the renewed certificate");
    }
}

#[test]
fn walks_from_the_wire_are_no_longer_than_this_nodes_own() {
    let mut net = Net::new(8, config());
    net.settle(100_000);
    let from = net.overlays[2].active().next().expect("a neighbour");
    let joiner = info(7);
    let now = net.now;
    net.overlays[2].on_message(from, Message::ForwardJoin { joiner, ttl: 255 }, now, &TestVerifier);
    let mut forwarded = Vec::new();
    while let Some(out) = net.overlays[2].poll_out() {
        if let Out::Send(_, Message::ForwardJoin { ttl, .. }) = out {
            forwarded.push(ttl);
        }
    }
    assert!(forwarded.iter().all(|ttl| *ttl < config().active_walk), "{forwarded:?}");
}

#[test]
fn a_node_whose_views_all_fail_asks_the_members_it_met_lately() {
    let nodes = 200u32;
    let mut net = Net::new(nodes, config());
    net.settle(1_000_000);
    for _ in 0..12 {
        net.tick(10_000);
        net.settle(1_000_000);
    }
    let lone = 7u32;
    let overlay = &net.overlays[lone as usize];
    let mut doomed: BTreeSet<NodeIdentity> = overlay.active().chain(overlay.passive()).collect();
    // The member the advert names, through which a node alone joins anew.
    doomed.insert(id(0));
    // Nobody else keeps it in a view: only its own reserve can help it.
    for n in (0..nodes).filter(|n| *n != lone) {
        let overlay = &net.overlays[n as usize];
        if overlay.active().chain(overlay.passive()).any(|p| p == id(lone)) {
            doomed.insert(id(n));
        }
    }
    let met = net.overlays[lone as usize].recent().iter().filter(|(p, _)| !doomed.contains(&p.id())).count();
    let recent = net.overlays[lone as usize].recent().iter().count();
    assert!(
        met > 0,
        "node {lone} met members beyond its views and those that hold it: {recent} met, {} doomed",
        doomed.len()
    );
    for peer in &doomed {
        let n = net.index(peer).expect("a node of the test");
        net.kill(n);
    }
    net.settle(1_000_000);
    net.tick(1_000);
    net.settle(1_000_000);
    let neighbours: Vec<NodeIdentity> = net.overlays[lone as usize].active().collect();
    assert!(!neighbours.is_empty(), "node {lone} found a neighbour among the {met} members it met");
    assert!(neighbours.iter().all(|p| !doomed.contains(p)));
}

#[test]
fn two_nodes_that_hold_only_each_other_join_the_overlay_at_their_period() {
    let mut net = Net::new(32, config());
    // Nodes 30 and 31 lose their joins and meet only each other.
    net.queue.retain(|(from, _, _)| *from < 30);
    let now = net.now;
    net.overlays[31].on_message(id(30), Message::Neighbor { info: info(30), high: true }, now, &TestVerifier);
    net.collect(31);
    net.settle(100_000);
    assert_eq!(net.overlays[30].active().collect::<Vec<_>>(), vec![id(31)]);
    for _ in 0..4 {
        net.tick(10_000);
        net.settle(100_000);
    }
    assert_eq!(net.largest_component(), 32, "the island joined the overlay");
}

#[test]
fn one_neighbour_supplies_at_most_its_share_of_the_members_met_lately() {
    let mut net = Net::new(8, config());
    net.settle(100_000);
    let from = net.overlays[2].active().next().expect("a neighbour");
    let now = net.now;
    for joiner in 100..140 {
        let message = Message::ForwardJoin { joiner: info(joiner), ttl: 2 };
        net.overlays[2].on_message(from, message, now, &TestVerifier);
    }
    let supplied = net.overlays[2].recent().iter().filter(|(_, source)| *source == from).count();
    assert_eq!(supplied, 8, "a neighbour's walks fill no more than its share");
    assert!(net.overlays[2].recent().iter().count() <= config().recent);
}

#[test]
fn a_domain_whose_advert_asks_for_a_full_mesh_keeps_every_member_a_neighbour() {
    let rules = MembershipRules::new(vec![id(0)], 3600, vec![], true).expect("valid");
    let body = DomainAdvertBody::new(DomainIdentity::new(domain_signer().0), vec![id(0)], JoinPolicy::Open, 1, T0)
        .expect("valid")
        .with_rules(rules);
    let sig = domain_signer().sign(&DomainAdvert::signing_bytes_of(&body));
    let mesh: DomainAdvert = Advert::from_parts(body, sig);
    let nodes = 12u32;
    let mut net = Net::with_advert(nodes, config(), mesh);
    net.settle(100_000);
    for _ in 0..4 {
        net.tick(10_000);
        net.settle(100_000);
    }
    for n in 0..nodes as usize {
        assert!(net.overlays[n].active_capacity() > config().active);
        let active = net.overlays[n].active().count();
        assert_eq!(active, nodes as usize - 1, "node {n} is a neighbour of every other member");
    }
    // The same members under an ordinary advert keep views of 5.
    let mut sparse = Net::new(nodes, config());
    sparse.settle(100_000);
    assert!((0..nodes as usize).all(|n| sparse.overlays[n].active().count() <= config().active));
}
