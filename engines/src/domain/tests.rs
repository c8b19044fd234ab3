//! The domain engine driven alone: engines of several nodes exchanging
//! messages in memory, a local engine's commands, and hostile input.

use std::collections::VecDeque;

use netmachine_domain::{
    Advert, Body, CertificateBody, DestinationIdentity, DomainAdvert, DomainAdvertBody, DomainIdentity, EngineIdentity,
    EngineMessage, ExternalIdentity, JoinPolicy, MembershipRules, NodeIdentity, ProtocolId, Timestamp,
};

use super::*;
use crate::engine::EngineSetup;
use crate::ports::Signer;
use crate::testing::{TestSigner, TestVerifier};
use crate::topology::FromDomain;

const T0: Timestamp = Timestamp(10_000_000);
const PSK: &[u8] = b"correct horse battery staple";

fn id(seed: u8) -> NodeIdentity {
    NodeIdentity::new(TestSigner::node(seed).0)
}

fn domain_key(seed: u8) -> TestSigner {
    TestSigner(ExternalIdentity::ed25519([0xd0 ^ seed; 32]))
}

fn advert_of(key: u8, join: JoinPolicy, version: u64, revoked: Vec<NodeIdentity>) -> DomainAdvert {
    let rules = MembershipRules::new(vec![id(1)], 3600, revoked, false).expect("valid");
    let body = DomainAdvertBody::new(DomainIdentity::new(domain_key(key).0), vec![id(1)], join, version, T0)
        .expect("valid")
        .with_rules(rules);
    let sig = domain_key(key).sign(&DomainAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

fn advert(join: JoinPolicy) -> DomainAdvert {
    advert_of(0, join, 1, vec![])
}

fn psk_policy() -> JoinPolicy {
    JoinPolicy::PreSharedKey { key_hash: [0; 32] }
}

fn ctl() -> EngineName {
    EngineName::new("ctl").expect("valid")
}

/// Engines of nodes 1, 2, 3..., and what reached their local engines.
struct Nodes {
    engines: Vec<DomainEngine>,
    /// Messages between nodes: (from, to, body).
    wire: VecDeque<(u8, u8, Body)>,
    /// What each node's local engines were told: (node, engine, outcome).
    told: Vec<(u8, EngineName, Outcome)>,
    /// What each node told its topology engine.
    topology: Vec<(u8, FromDomain)>,
    now: Timestamp,
}

impl Nodes {
    fn new(count: u8) -> Self {
        let engines = (1..=count)
            .map(|n| DomainEngine::new(&EngineSetup::for_tests(id(n), u64::from(n)), DomainConfig::default()))
            .collect();
        Self { engines, wire: VecDeque::new(), told: Vec::new(), topology: Vec::new(), now: T0 }
    }

    fn engine(&mut self, n: u8) -> &mut DomainEngine {
        &mut self.engines[usize::from(n - 1)]
    }

    fn collect(&mut self, n: u8) {
        while let Some(effect) = self.engine(n).poll_effect() {
            match effect {
                Effect::SendToPeer { peer, body } => {
                    let to = (1..=self.engines.len() as u8).find(|m| id(*m) == peer).expect("a node of the test");
                    self.wire.push_back((n, to, body));
                }
                Effect::Deliver { to, body, .. } => {
                    self.told.push((n, to, Outcome::decode(&body).expect("decodes")));
                }
                Effect::Tell { body, .. } => self.topology.push((n, FromDomain::decode(&body).expect("decodes"))),
                other => panic!("unexpected effect {other:?}"),
            }
        }
    }

    fn command_from(&mut self, n: u8, engine: EngineName, command: &Command) {
        let message = EngineMessage::new(
            EngineIdentity::new(id(n), engine.clone()),
            DestinationIdentity::Node(id(n)),
            netmachine_domain::MessageId(1),
            ProtocolId::new(DOMAIN_PROTOCOL, DOMAIN_VERSION).expect("valid"),
            command.encode(),
        );
        let now = self.now;
        self.engine(n).handle(Input::Command { from: engine, message }, now);
        self.collect(n);
    }

    fn command(&mut self, n: u8, command: &Command) {
        self.command_from(n, ctl(), command);
    }

    /// Hands `body` to node `to` as from node `from`.
    fn arrive(&mut self, from: u8, to: u8, body: Body) {
        let message = EngineMessage::new(
            EngineIdentity::new(id(from), ctl()),
            DestinationIdentity::Node(id(to)),
            netmachine_domain::MessageId(2),
            ProtocolId::new(DOMAIN_PROTOCOL, DOMAIN_VERSION).expect("valid"),
            body,
        );
        let now = self.now;
        self.engine(to).handle(Input::FromPeer { peer: id(from), message }, now);
        self.collect(to);
    }

    /// Delivers every message on the wire, and returns them.
    fn run(&mut self) -> Vec<(u8, u8, Body)> {
        let mut delivered = Vec::new();
        for _ in 0..1000 {
            let Some((from, to, body)) = self.wire.pop_front() else { break };
            delivered.push((from, to, body.clone()));
            self.arrive(from, to, body);
        }
        delivered
    }

    fn last_told(&self, n: u8) -> Option<&Outcome> {
        self.told.iter().rev().find(|(m, _, _)| *m == n).map(|(_, _, o)| o)
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.saturating_add_millis(ms);
        for n in 1..=self.engines.len() as u8 {
            let now = self.now;
            self.engine(n).handle_timeout(now);
            self.collect(n);
        }
    }
}

/// Node 1 serves a domain under `join`; node 2 asks to join it.
fn served(join: JoinPolicy, nodes: u8) -> Nodes {
    let mut net = Nodes::new(nodes);
    let psk = matches!(join, JoinPolicy::PreSharedKey { .. }).then(|| PSK.to_vec());
    net.command(1, &Command::Serve { advert: advert(join), psk });
    assert!(matches!(net.last_told(1), Some(Outcome::Joined { .. })), "{:?}", net.last_told(1));
    net
}

fn join(net: &mut Nodes, n: u8, join: JoinPolicy, psk: Option<&[u8]>) -> Option<Outcome> {
    net.command(n, &Command::Join { advert: advert(join), psk: psk.map(<[u8]>::to_vec), via: None });
    net.run();
    net.last_told(n).cloned()
}

#[test]
fn an_open_domain_certifies_a_joiner_and_its_overlay_starts() {
    let mut net = served(JoinPolicy::Open, 2);
    let Some(Outcome::Joined { cert, .. }) = join(&mut net, 2, JoinPolicy::Open, None) else { panic!("joined") };
    assert_eq!((cert.member, cert.approver), (id(2), id(1)));
    assert!(cert.check(&advert(JoinPolicy::Open), net.now).is_ok());
    assert!(crate::ports::verify_signed(&TestVerifier, &cert).is_ok());
    assert!(net.engine(2).membership(&advert(JoinPolicy::Open).id).is_some());
    assert!(net
        .topology
        .iter()
        .any(|(n, t)| *n == 2 && matches!(t, FromDomain::Member { contact: Some(c), .. } if *c == id(1))));
}

#[test]
fn a_pre_shared_key_admits_and_a_wrong_one_is_refused_like_any_refusal() {
    let mut net = served(psk_policy(), 4);
    assert!(matches!(join(&mut net, 2, psk_policy(), Some(PSK)), Some(Outcome::Joined { .. })));
    let Some(Outcome::JoinRefused { reason: wrong_key, .. }) = join(&mut net, 3, psk_policy(), Some(b"guess")) else {
        panic!("refused")
    };
    let Some(Outcome::JoinRefused { reason: no_key, .. }) = join(&mut net, 4, psk_policy(), None) else {
        panic!("refused")
    };
    assert_eq!(wrong_key, JoinRefusal::Denied.to_string());
    assert_eq!(wrong_key, no_key, "a wrong key reads as any other refusal");
    // Nor does an allow-list refusal read differently.
    let mut listed =
        served(JoinPolicy::AllowList(netmachine_domain::BoundedVec::new("a", vec![id(2)]).expect("ok")), 3);
    let allow =
        advert(JoinPolicy::AllowList(netmachine_domain::BoundedVec::new("a", vec![id(2)]).expect("ok"))).join.clone();
    assert!(matches!(join(&mut listed, 2, allow.clone(), None), Some(Outcome::Joined { .. })));
    let Some(Outcome::JoinRefused { reason, .. }) = join(&mut listed, 3, allow, None) else { panic!("refused") };
    assert_eq!(reason, wrong_key);
    assert!(net.engine(3).membership(&advert(psk_policy()).id).is_none());
}

#[test]
fn a_replayed_join_is_refused_and_certifies_nobody() {
    let mut net = served(JoinPolicy::Open, 2);
    net.command(2, &Command::Join { advert: advert(JoinPolicy::Open), psk: None, via: None });
    let request = net.wire.front().cloned().expect("a join on the wire");
    net.run();
    let accepted = net.engine(1).counters().joins_accepted;
    net.arrive(request.0, request.1, request.2);
    let answer = net.wire.pop_back().expect("an answer");
    assert_eq!(
        Wire::decode(&answer.2).expect("decodes"),
        Wire::Answer { domain: advert(JoinPolicy::Open).id, answer: JoinAnswer::Refused(JoinRefusal::Replayed) }
    );
    assert_eq!(net.engine(1).counters().joins_accepted, accepted, "no second certificate");
}

#[test]
fn a_stale_join_is_refused_for_its_clock() {
    let mut net = served(JoinPolicy::Open, 2);
    net.command(2, &Command::Join { advert: advert(JoinPolicy::Open), psk: None, via: None });
    let request = net.wire.pop_front().expect("a join");
    net.now = net.now.saturating_add_millis(netmachine_domain::limits::MAX_CLOCK_SKEW_MS + 1);
    net.arrive(request.0, request.1, request.2);
    net.run();
    let nonces = net.engine(1).guard().nonces_held();
    assert_eq!(nonces, 0, "a stale request leaves nothing behind");
    assert!(
        matches!(net.last_told(2), Some(Outcome::JoinRefused { reason, .. }) if *reason == JoinRefusal::Stale.to_string())
    );
}

#[test]
fn a_join_flood_past_the_rate_limit_is_refused_with_no_state_changed() {
    let mut net = served(JoinPolicy::Open, 2);
    let mut refusals = Vec::new();
    for _ in 0..6 {
        net.command(2, &Command::Leave(advert(JoinPolicy::Open).id));
        let outcome = join(&mut net, 2, JoinPolicy::Open, None);
        refusals.push(matches!(outcome, Some(Outcome::JoinRefused { reason, .. }) if reason == JoinRefusal::RateLimited.to_string()));
    }
    assert_eq!(refusals, [false, false, false, true, true, true], "three joins per node per window");
    assert_eq!(net.engine(1).counters().joins_accepted, 3);
    assert_eq!(net.engine(1).guard().nonces_held(), 3, "refused requests are not remembered");
    // The approver keeps serving others.
    let mut other = served(JoinPolicy::Open, 3);
    assert!(matches!(join(&mut other, 3, JoinPolicy::Open, None), Some(Outcome::Joined { .. })));
}

fn certificate(
    domain_key_seed: u8,
    member: u8,
    approver: u8,
    issued: Timestamp,
    expires: Timestamp,
) -> MembershipCertificate {
    let body = CertificateBody {
        domain: DomainIdentity::new(domain_key(domain_key_seed).0),
        member: id(member),
        approver: id(approver),
        epoch: 1,
        issued,
        expires,
    };
    let sig = TestSigner::node(approver).sign(&body.signing_bytes());
    body.signed(sig)
}

#[test]
fn forged_expired_and_foreign_certificates_are_refused() {
    let mut net = Nodes::new(2);
    let open = advert(JoinPolicy::Open);
    let far = Timestamp(T0.0 + 3_600_000);
    let cases = [
        ("forged: its approver is no approver", certificate(0, 2, 2, T0, far)),
        ("expired", certificate(0, 2, 1, Timestamp(0), T0)),
        ("for another domain", certificate(9, 2, 1, T0, far)),
        ("for another member", certificate(0, 3, 1, T0, far)),
    ];
    for (what, cert) in cases {
        net.command(2, &Command::Restore { advert: open.clone(), cert, psk: None });
        assert!(matches!(net.last_told(2), Some(Outcome::Failed(_))), "{what}");
        assert!(net.engine(2).membership(&open.id).is_none(), "{what}: no state changed");
    }
    let mut bad_sig = certificate(0, 2, 1, T0, far);
    bad_sig.expires = Timestamp(far.0 + 1);
    net.command(2, &Command::Restore { advert: open.clone(), cert: bad_sig, psk: None });
    assert!(net.engine(2).membership(&open.id).is_none(), "a signature that does not verify");
    // A valid one restores the membership without asking anyone.
    net.command(2, &Command::Restore { advert: open.clone(), cert: certificate(0, 2, 1, T0, far), psk: None });
    assert!(matches!(net.last_told(2), Some(Outcome::Joined { .. })));
    assert!(net.wire.is_empty(), "no join sent");
    // A renewal that shows a forged certificate is refused too.
    let mut approver = served(JoinPolicy::OwnerApproves, 2);
    let forged = certificate(0, 2, 2, T0, far);
    approver.command(2, &Command::Restore { advert: advert(JoinPolicy::OwnerApproves), cert: forged, psk: None });
    assert!(approver.engine(2).membership(&open.id).is_none());
}

#[test]
fn a_revoked_member_is_refused_and_a_revoking_advert_removes_it() {
    let mut net = served(JoinPolicy::Open, 3);
    assert!(matches!(join(&mut net, 2, JoinPolicy::Open, None), Some(Outcome::Joined { .. })));
    let revoking = advert_of(0, JoinPolicy::Open, 2, vec![id(2), id(3)]);
    net.command(1, &Command::Advert(revoking.clone()));
    assert_eq!(net.last_told(1), Some(&Outcome::Done));
    let Some(Outcome::JoinRefused { reason, .. }) = join(&mut net, 3, JoinPolicy::Open, None) else {
        panic!("refused")
    };
    assert_eq!(reason, JoinRefusal::Revoked.to_string());
    // The member hears the newer advert and leaves.
    net.command(2, &Command::Advert(revoking.clone()));
    assert!(net.engine(2).membership(&revoking.id).is_none());
    assert!(net.topology.iter().any(|(n, t)| *n == 2 && *t == FromDomain::Left(revoking.id)));
    // An older advert changes nothing.
    net.command(1, &Command::Advert(advert(JoinPolicy::Open)));
    assert!(matches!(net.last_told(1), Some(Outcome::Failed(_))));
}

#[test]
fn the_owner_approves_a_waiting_join() {
    let mut net = served(JoinPolicy::OwnerApproves, 3);
    assert_eq!(
        join(&mut net, 2, JoinPolicy::OwnerApproves, None),
        Some(Outcome::Pending(advert(JoinPolicy::OwnerApproves).id))
    );
    let domain = advert(JoinPolicy::OwnerApproves).id;
    assert_eq!(net.engine(1).awaiting_approval().count(), 1);
    net.command(1, &Command::Approve { domain, node: id(2), accept: true });
    net.run();
    assert!(matches!(net.last_told(2), Some(Outcome::Joined { .. })));
    // Another waits, and is refused by the owner.
    assert!(matches!(join(&mut net, 3, JoinPolicy::OwnerApproves, None), Some(Outcome::Pending(_))));
    net.command(1, &Command::Approve { domain, node: id(3), accept: false });
    net.run();
    assert!(matches!(net.last_told(3), Some(Outcome::JoinRefused { .. })));
}

#[test]
fn a_certificate_is_renewed_at_half_its_life() {
    let mut net = served(JoinPolicy::Open, 2);
    let Some(Outcome::Joined { cert, .. }) = join(&mut net, 2, JoinPolicy::Open, None) else { panic!("joined") };
    net.advance(1_800_000);
    net.run();
    let renewed = net.engine(2).membership(&cert.domain).expect("member").cert.clone();
    assert!(renewed.expires > cert.expires, "a later expiry");
    assert_eq!(net.engine(2).counters().certificates_renewed, 1);
}

#[test]
fn an_outsider_request_is_answered_by_the_engine_serving_its_protocol() {
    let mut net = served(JoinPolicy::Open, 2);
    let domain = advert(JoinPolicy::Open).id;
    let service = EngineName::new("echo-service").expect("valid");
    net.command_from(1, service.clone(), &Command::ServeProtocol { domain, protocol: "echo".into() });
    // Node 2 is no member: it asks a member the advert names.
    let ask = |protocol: &str| Command::Request {
        advert: advert(JoinPolicy::Open),
        protocol: protocol.into(),
        body: b"hi".to_vec(),
    };
    net.command(2, &ask("echo"));
    net.run();
    let Some((_, to, Outcome::Incoming { id: request, body, requester, .. })) = net.told.last().cloned() else {
        panic!("handed to the service")
    };
    assert_eq!((to, requester, body.as_slice()), (service.clone(), id(2), &b"hi"[..]));
    net.command_from(1, service, &Command::Answer { id: request, body: b"HI".to_vec() });
    net.run();
    assert_eq!(net.last_told(2), Some(&Outcome::Answered(b"HI".to_vec())));
    net.command(2, &ask("nope"));
    net.run();
    assert_eq!(net.last_told(2), Some(&Outcome::ExternalFailed(ExternalError::UnknownProtocol)));
    // Past its share in one second, a requester is refused.
    for _ in 0..12 {
        net.command(2, &ask("nope"));
        net.run();
    }
    assert_eq!(net.last_told(2), Some(&Outcome::ExternalFailed(ExternalError::RateLimited)));
    // An unanswered request times out at both ends.
    net.advance(2_000);
    net.command(2, &ask("echo"));
    net.run();
    net.advance(10_000);
    net.run();
    assert_eq!(net.last_told(2), Some(&Outcome::ExternalFailed(ExternalError::TimedOut)));
}

#[test]
fn garbage_from_a_peer_is_counted_and_changes_nothing() {
    let mut net = served(JoinPolicy::Open, 2);
    net.arrive(2, 1, Body::new(vec![0, 1, 2, 3]).expect("small"));
    net.arrive(2, 1, Body::new(vec![77]).expect("small"));
    assert_eq!(net.engine(1).counters().malformed, 2);
    assert!(net.wire.is_empty());
    assert!(matches!(join(&mut net, 2, JoinPolicy::Open, None), Some(Outcome::Joined { .. })), "it keeps serving");
}

#[test]
fn leaving_during_a_renewal_is_not_undone_by_its_answer() {
    let mut net = served(JoinPolicy::Open, 2);
    assert!(matches!(join(&mut net, 2, JoinPolicy::Open, None), Some(Outcome::Joined { .. })));
    let domain = advert(JoinPolicy::Open).id;
    net.advance(1_800_000);
    // The renewal is on the wire; the member leaves before its answer.
    net.command(2, &Command::Leave(domain));
    net.run();
    assert!(net.engine(2).membership(&domain).is_none(), "left, and stays out");
}

#[test]
fn an_advert_whose_certificate_lifetime_is_under_the_minimum_is_refused() {
    let mut net = Nodes::new(1);
    let mut short = advert(JoinPolicy::Open);
    short.body.rules.cert_ttl_s = 0;
    let sig = domain_key(0).sign(&DomainAdvert::signing_bytes_of(&short.body));
    let short = Advert::from_parts(short.body, sig);
    net.command(1, &Command::Serve { advert: short, psk: None });
    assert!(matches!(net.last_told(1), Some(Outcome::Failed(_))));
    assert_eq!(net.engine(1).poll_timeout(), None, "no timer set");
}
