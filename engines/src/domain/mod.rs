//! Domain membership: joins under the domain's policy, the certificates
//! that prove membership, their renewal, leaving, revocation by a newer
//! advert, and requests from outsiders to a domain's protocols.
//!
//! A node runs one such engine, which keeps one membership per joined
//! domain. Local engines (the control API, an embedder's engine) drive it
//! with [`Command`]s and hear back [`Outcome`]s; it tells the topology
//! engine of every membership, so that an overlay runs for each.
//!
//! What a peer can make it spend: an approver keeps at most
//! [`guard::GuardConfig`]'s joiners and nonces, [`DomainConfig::max_approvals`]
//! joins waiting for the owner, and [`DomainConfig::max_external_pending`]
//! external requests handed to local engines; each requester gets a share
//! of the external request rate, each domain a total.

mod approver;
mod external;
pub mod guard;
pub mod messages;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use netmachine_domain::{
    CertificateBody, DomainAdvert, DomainIdentity, EngineName, JoinPolicy, JoinProof, JoinRefusal, JoinRequest, Leave,
    MembershipCertificate, MessageId, NodeIdentity, ProtocolId, Timestamp,
};

use crate::engine::{Effect, EngineSetup, Input, Notice, ProtocolEngine, Timed, Timers};
use crate::ports::{verify_signed, Randomness, Signer, Verifier};
use crate::random::SplitMix;
use crate::topology::{FromDomain, TOPOLOGY_PROTOCOL};

pub use external::ExternalLimits;
pub use guard::{GuardConfig, JoinGuard};
pub use messages::{Command, ExternalError, JoinAnswer, Outcome, Wire};

pub const DOMAIN_PROTOCOL: &str = crate::topology::DOMAIN_PROTOCOL;
pub const DOMAIN_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainConfig {
    /// How long a join waits for its answer, per attempt.
    pub join_timeout_ms: u64,
    pub join_attempts: u32,
    /// How long a join waits for the owner's approval.
    pub approval_wait_ms: u64,
    /// Joins waiting for the owner's approval, in every domain together.
    pub max_approvals: usize,
    /// Domains this node is in at most.
    pub max_domains: usize,
    pub guard: GuardConfig,
    pub external: ExternalLimits,
    /// External requests handed to local engines and not yet answered,
    /// and requests of local engines waiting for their answer.
    pub max_external_pending: usize,
    pub external_timeout_ms: u64,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self {
            join_timeout_ms: 10_000,
            join_attempts: 3,
            approval_wait_ms: 60_000,
            max_approvals: 256,
            max_domains: 64,
            guard: GuardConfig::default(),
            external: ExternalLimits::default(),
            max_external_pending: 1024,
            external_timeout_ms: 10_000,
        }
    }
}

/// What the engine counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainCounters {
    pub joins_accepted: u64,
    pub joins_refused: u64,
    pub certificates_renewed: u64,
    pub leaves_heard: u64,
    pub malformed: u64,
    pub external_served: u64,
    pub external_refused: u64,
}

/// One domain this node is in.
#[derive(Debug, Clone)]
pub struct Membership {
    pub advert: DomainAdvert,
    pub cert: MembershipCertificate,
    /// The pre-shared key, held by an approver of a domain that asks for
    /// one.
    psk: Option<Vec<u8>>,
    /// The overlay's active neighbours, which newer adverts spread to.
    pub neighbours: BTreeSet<NodeIdentity>,
}

/// A join under way.
#[derive(Debug)]
struct Joining {
    advert: DomainAdvert,
    psk: Option<Vec<u8>>,
    /// Approvers to ask, in turn.
    approvers: Vec<NodeIdentity>,
    attempt: u32,
    asked: NodeIdentity,
    asker: Option<(EngineName, MessageId)>,
    /// A renewal of this certificate.
    renewing: Option<MembershipCertificate>,
}

/// A join that waits for the owner.
#[derive(Debug)]
struct Approval {
    request: JoinRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Join(DomainIdentity),
    Renew(DomainIdentity),
    Approval(DomainIdentity, NodeIdentity),
    /// A local engine's external request waits for its answer.
    Outgoing(u64),
    /// An outsider's request waits for a local engine's answer.
    Incoming(u64),
}

pub struct DomainEngine {
    node: NodeIdentity,
    protocol: ProtocolId,
    config: DomainConfig,
    signer: Arc<dyn Signer>,
    verifier: Arc<dyn Verifier>,
    random: SplitMix,
    memberships: BTreeMap<DomainIdentity, Membership>,
    joining: BTreeMap<DomainIdentity, Joining>,
    approvals: BTreeMap<(DomainIdentity, NodeIdentity), Approval>,
    guard: JoinGuard,
    external: external::External,
    timers: Timers<Timer>,
    /// The local engine that keeps memberships on disk.
    watcher: Option<EngineName>,
    counters: DomainCounters,
    effects: VecDeque<Effect>,
}

impl std::fmt::Debug for DomainEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainEngine").field("node", &self.node).field("domains", &self.memberships.len()).finish()
    }
}

impl DomainEngine {
    pub fn new(setup: &EngineSetup, config: DomainConfig) -> Self {
        Self {
            node: setup.node,
            protocol: ProtocolId::new(DOMAIN_PROTOCOL, DOMAIN_VERSION)
                .unwrap_or_else(|_| unreachable!("a valid constant protocol")),
            config,
            signer: setup.signer.clone(),
            verifier: setup.verifier.clone(),
            random: SplitMix::new(setup.seed_for(DOMAIN_PROTOCOL)),
            memberships: BTreeMap::new(),
            joining: BTreeMap::new(),
            approvals: BTreeMap::new(),
            guard: JoinGuard::new(config.guard),
            external: external::External::new(config.external),
            timers: Timers::new(),
            watcher: None,
            counters: DomainCounters::default(),
            effects: VecDeque::new(),
        }
    }

    pub fn memberships(&self) -> impl Iterator<Item = &Membership> {
        self.memberships.values()
    }

    pub fn membership(&self, domain: &DomainIdentity) -> Option<&Membership> {
        self.memberships.get(domain)
    }

    pub fn counters(&self) -> DomainCounters {
        self.counters
    }

    /// Joins waiting for the owner, by domain and node.
    pub fn awaiting_approval(&self) -> impl Iterator<Item = &(DomainIdentity, NodeIdentity)> {
        self.approvals.keys()
    }

    pub fn guard(&self) -> &JoinGuard {
        &self.guard
    }

    fn send(&mut self, peer: NodeIdentity, wire: &Wire) {
        self.effects.push_back(Effect::SendToPeer { peer, body: wire.encode() });
    }

    fn tell(&mut self, asker: &Option<(EngineName, MessageId)>, outcome: &Outcome) {
        if let Some((to, id)) = asker {
            self.effects.push_back(Effect::Deliver { to: to.clone(), reply_to: Some(*id), body: outcome.encode() });
        }
    }

    fn tell_topology(&mut self, notice: &FromDomain) {
        self.effects.push_back(Effect::Tell { protocol: TOPOLOGY_PROTOCOL, body: notice.encode() });
    }

    /// Checks an advert's signature by the domain key, and its rules (an
    /// advert decoded by a codec has not been through their checks).
    fn signed_by_domain(&self, advert: &DomainAdvert) -> bool {
        advert.rules.cert_ttl_s >= netmachine_domain::membership::MIN_CERT_TTL_S
            && verify_signed(self.verifier.as_ref(), advert).is_ok()
    }

    fn certificate_holds(&self, cert: &MembershipCertificate, advert: &DomainAdvert, now: Timestamp) -> bool {
        cert.check(advert, now).is_ok() && verify_signed(self.verifier.as_ref(), cert).is_ok()
    }

    /// Signs a certificate for `member` as an approver of `advert`.
    fn certify(&self, member: NodeIdentity, advert: &DomainAdvert, now: Timestamp) -> MembershipCertificate {
        let body = CertificateBody {
            domain: advert.id,
            member,
            approver: self.node,
            epoch: advert.version,
            issued: now,
            expires: now.saturating_add_millis(u64::from(advert.rules.cert_ttl_s) * 1000),
        };
        let sig = self.signer.sign(&body.signing_bytes());
        body.signed(sig)
    }

    /// Becomes (or stays) a member with `cert`.
    fn enter(
        &mut self,
        advert: DomainAdvert,
        cert: MembershipCertificate,
        psk: Option<Vec<u8>>,
        contact: Option<NodeIdentity>,
    ) {
        let domain = advert.id;
        // At half its life, and never sooner than a minute after issue.
        let half = cert.expires.0.saturating_sub(cert.issued.0) / 2;
        let renew_at = Timestamp(cert.issued.0.saturating_add(half.max(60_000)));
        self.timers.set(Timer::Renew(domain), renew_at);
        let neighbours = self.memberships.remove(&domain).map(|m| m.neighbours).unwrap_or_default();
        self.tell_topology(&FromDomain::Member { advert: Box::new(advert.clone()), cert: cert.clone(), contact });
        self.tell_watcher(&Outcome::Joined { advert: advert.clone(), cert: cert.clone() });
        self.memberships.insert(domain, Membership { advert, cert, psk, neighbours });
    }

    fn leave(&mut self, domain: DomainIdentity, now: Timestamp) -> bool {
        let Some(membership) = self.memberships.remove(&domain) else { return false };
        self.timers.cancel(&Timer::Renew(domain));
        // A renewal under way must not bring the membership back.
        self.joining.remove(&domain);
        self.timers.cancel(&Timer::Join(domain));
        let sig = self.signer.sign(&Leave::signing_bytes_of(&self.node, &domain, now));
        let leave = Wire::Leave(Leave { member: self.node, domain, created: now, sig });
        for peer in membership.neighbours.iter().copied().chain(std::iter::once(membership.cert.approver)) {
            if peer != self.node {
                self.send(peer, &leave);
            }
        }
        self.tell_topology(&FromDomain::Left(domain));
        self.tell_watcher(&Outcome::Left(domain));
        true
    }

    fn tell_watcher(&mut self, outcome: &Outcome) {
        if let Some(to) = self.watcher.clone() {
            self.effects.push_back(Effect::Deliver { to, reply_to: None, body: outcome.encode() });
        }
    }

    fn command(&mut self, from: EngineName, id: MessageId, body: &netmachine_domain::Body, now: Timestamp) {
        let command = match Command::decode(body) {
            Ok(command) => command,
            Err(err) => {
                self.tell(&Some((from, id)), &Outcome::Failed(format!("the command does not decode: {err}")));
                return;
            }
        };
        let asker = Some((from.clone(), id));
        match command {
            Command::Serve { advert, psk } => {
                let outcome = self.serve(advert, psk, now);
                self.tell(&asker, &outcome);
            }
            Command::Join { advert, psk, via } => self.start_join(advert, psk, via, asker, now),
            Command::Restore { advert, cert, psk } => {
                let outcome = if !self.signed_by_domain(&advert) {
                    Outcome::Failed("the domain advert's signature does not verify".into())
                } else if cert.member != self.node || !self.certificate_holds(&cert, &advert, now) {
                    // An expired certificate is renewed by joining again.
                    Outcome::Failed("the certificate kept on disk is no longer valid; join the domain again".into())
                } else if self.room_for(&advert.id) {
                    self.enter(advert.clone(), cert.clone(), psk, Some(cert.approver));
                    Outcome::Joined { advert, cert }
                } else {
                    Outcome::Failed(format!("this node is in {} domains already", self.config.max_domains))
                };
                self.tell(&asker, &outcome);
            }
            Command::Leave(domain) => {
                let outcome = if self.leave(domain, now) {
                    Outcome::Done
                } else {
                    Outcome::Failed("this node is not in that domain".into())
                };
                self.tell(&asker, &outcome);
            }
            Command::Advert(advert) => {
                let outcome = self.newer_advert(advert, None, now);
                self.tell(&asker, &outcome);
            }
            Command::Approve { domain, node, accept } => {
                let outcome = match self.approvals.remove(&(domain, node)) {
                    Some(approval) => {
                        self.timers.cancel(&Timer::Approval(domain, node));
                        self.decide(approval.request, accept, now);
                        Outcome::Done
                    }
                    None => Outcome::Failed("no join from that node waits for approval in that domain".into()),
                };
                self.tell(&asker, &outcome);
            }
            Command::ServeProtocol { domain, protocol } => {
                let outcome = self.external.serve(domain, protocol, from);
                self.tell(&asker, &outcome);
            }
            Command::Request { advert, protocol, body } => self.request(advert, protocol, body, asker, now),
            Command::Answer { id, body } => self.answered(id, body),
            Command::Watch => {
                self.watcher = Some(from);
                self.tell(&asker, &Outcome::Done);
            }
        }
    }

    fn room_for(&self, domain: &DomainIdentity) -> bool {
        self.memberships.contains_key(domain) || self.memberships.len() < self.config.max_domains
    }

    /// Runs a domain as one of its approvers: this node certifies itself.
    fn serve(&mut self, advert: DomainAdvert, psk: Option<Vec<u8>>, now: Timestamp) -> Outcome {
        if !self.signed_by_domain(&advert) {
            return Outcome::Failed("the domain advert's signature does not verify".into());
        }
        if !advert.rules.is_approver(&self.node) {
            return Outcome::Failed("this node is not an approver in the domain advert; name it there".into());
        }
        if matches!(advert.join, JoinPolicy::PreSharedKey { .. }) && psk.is_none() {
            return Outcome::Failed("the domain asks for a pre-shared key; give the approver the key".into());
        }
        if !self.room_for(&advert.id) {
            return Outcome::Failed(format!("this node is in {} domains already", self.config.max_domains));
        }
        let cert = self.certify(self.node, &advert, now);
        // Every approver joins the overlay through the first other one the
        // advert names: so they all meet, and the members each of them
        // admits end up in one overlay rather than one per approver.
        let contact = advert.rules.approvers.iter().copied().find(|a| *a != self.node);
        self.enter(advert.clone(), cert.clone(), psk, contact);
        Outcome::Joined { advert, cert }
    }

    fn start_join(
        &mut self,
        advert: DomainAdvert,
        psk: Option<Vec<u8>>,
        via: Option<NodeIdentity>,
        asker: Option<(EngineName, MessageId)>,
        now: Timestamp,
    ) {
        let refusal = if !self.signed_by_domain(&advert) {
            Some("the domain advert's signature does not verify")
        } else if self.memberships.contains_key(&advert.id) {
            Some("this node is a member of the domain already")
        } else if self.joining.contains_key(&advert.id) {
            Some("a join of this domain is under way")
        } else if !self.room_for(&advert.id) {
            Some("this node is in as many domains as it may be")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.tell(&asker, &Outcome::Failed(reason.into()));
            return;
        }
        let mut approvers: Vec<NodeIdentity> = via.into_iter().collect();
        approvers.extend(advert.rules.approvers.iter().copied().filter(|a| *a != self.node && Some(*a) != via));
        let Some(&first) = approvers.first() else {
            self.tell(&asker, &Outcome::Failed("the domain advert names no approver to ask".into()));
            return;
        };
        let domain = advert.id;
        let joining = Joining { advert, psk, approvers, attempt: 0, asked: first, asker, renewing: None };
        self.joining.insert(domain, joining);
        self.ask(domain, now);
    }

    /// Sends the join request of the join under way for `domain`.
    fn ask(&mut self, domain: DomainIdentity, now: Timestamp) {
        let nonce = self.random.next_u64();
        let Some(joining) = self.joining.get_mut(&domain) else { return };
        let asked = joining.approvers[joining.attempt as usize % joining.approvers.len()];
        joining.asked = asked;
        let proof = match (&joining.renewing, &joining.psk) {
            (Some(cert), _) => JoinProof::Renewal(Box::new(cert.clone())),
            (None, Some(psk)) => JoinProof::PreSharedKey(
                self.verifier.hmac_sha256(psk, &JoinRequest::psk_input(&self.node, &domain, nonce, now)),
            ),
            (None, None) => JoinProof::Nothing,
        };
        let sig = self.signer.sign(&JoinRequest::signing_bytes_of(&self.node, &domain, nonce, now, &proof));
        let request = JoinRequest { requestor: self.node, domain, nonce, created: now, proof, sig };
        self.timers.set(Timer::Join(domain), now.saturating_add_millis(self.config.join_timeout_ms));
        self.send(asked, &Wire::Join(request));
    }

    /// An approver's answer to this node's join.
    fn answer(&mut self, peer: NodeIdentity, domain: DomainIdentity, answer: JoinAnswer, now: Timestamp) {
        let Some(joining) = self.joining.get(&domain) else { return };
        if joining.asked != peer {
            return;
        }
        match answer {
            JoinAnswer::Accepted(cert) => {
                let advert = joining.advert.clone();
                if cert.member != self.node || cert.approver != peer || !self.certificate_holds(&cert, &advert, now) {
                    tracing::warn!(%peer, %domain, "an approver's certificate does not hold; asking another");
                    self.retry(domain, now);
                    return;
                }
                let Some(joining) = self.joining.remove(&domain) else { return };
                self.timers.cancel(&Timer::Join(domain));
                if joining.renewing.is_some() {
                    self.counters.certificates_renewed += 1;
                }
                // A newer advert that came during the renewal stays.
                let advert = match self.memberships.get(&domain) {
                    Some(held) if held.advert.version > advert.version => held.advert.clone(),
                    _ => advert,
                };
                self.enter(advert.clone(), cert.clone(), joining.psk, Some(peer));
                self.tell(&joining.asker, &Outcome::Joined { advert, cert });
            }
            JoinAnswer::Pending => {
                let wait = self.config.approval_wait_ms + self.config.join_timeout_ms;
                self.timers.set(Timer::Join(domain), now.saturating_add_millis(wait));
                let asker = joining.asker.clone();
                self.tell(&asker, &Outcome::Pending(domain));
            }
            JoinAnswer::Refused(refusal) => {
                let Some(joining) = self.joining.remove(&domain) else { return };
                self.timers.cancel(&Timer::Join(domain));
                self.tell(&joining.asker, &Outcome::JoinRefused { domain, reason: refusal.to_string() });
                match (joining.renewing.is_some(), refusal) {
                    (true, JoinRefusal::Revoked | JoinRefusal::Denied) => {
                        self.leave(domain, now);
                    }
                    (true, _) => self.renew_later(domain, now),
                    (false, _) => {}
                }
            }
        }
    }

    fn retry(&mut self, domain: DomainIdentity, now: Timestamp) {
        let Some(joining) = self.joining.get_mut(&domain) else { return };
        joining.attempt += 1;
        if joining.attempt < self.config.join_attempts {
            self.ask(domain, now);
            return;
        }
        self.timers.cancel(&Timer::Join(domain));
        if let Some(joining) = self.joining.remove(&domain) {
            let reason = "no approver answered; check that the approvers the advert names are reachable";
            self.tell(&joining.asker, &Outcome::JoinRefused { domain, reason: reason.into() });
            if joining.renewing.is_some() {
                self.renew_later(domain, now);
            }
        }
    }

    /// A renewal that failed is tried again in a minute, while the
    /// certificate lasts; once it has expired the node leaves.
    fn renew_later(&mut self, domain: DomainIdentity, now: Timestamp) {
        let Some(membership) = self.memberships.get(&domain) else { return };
        if membership.cert.expires <= now {
            tracing::warn!(%domain, "the certificate expired before it could be renewed; leaving the domain");
            self.leave(domain, now);
            return;
        }
        self.timers.set(Timer::Renew(domain), now.saturating_add_millis(60_000));
    }

    /// A newer advert of a domain this node is in, from a local engine or
    /// a neighbour: adopted, passed on over the overlay, and obeyed.
    fn newer_advert(&mut self, advert: DomainAdvert, from: Option<NodeIdentity>, now: Timestamp) -> Outcome {
        let Some(membership) = self.memberships.get(&advert.id) else {
            return Outcome::Failed("this node is not in that domain".into());
        };
        if advert.version <= membership.advert.version {
            return Outcome::Failed(format!(
                "version {} is not newer than the version {} held",
                advert.version, membership.advert.version
            ));
        }
        if !self.signed_by_domain(&advert) {
            return Outcome::Failed("the domain advert's signature does not verify".into());
        }
        let domain = advert.id;
        let neighbours: Vec<NodeIdentity> =
            membership.neighbours.iter().copied().filter(|n| Some(*n) != from).collect();
        let cert = membership.cert.clone();
        let psk = membership.psk.clone();
        for peer in neighbours {
            self.send(peer, &Wire::Advert(advert.clone()));
        }
        if advert.rules.is_revoked(&self.node) {
            tracing::warn!(%domain, "the domain revoked this node's membership");
            self.leave(domain, now);
            return Outcome::Done;
        }
        self.enter(advert, cert, psk, None);
        Outcome::Done
    }

    fn peer_said(&mut self, peer: NodeIdentity, body: &netmachine_domain::Body, now: Timestamp) {
        let wire = match Wire::decode(body) {
            Ok(wire) => wire,
            Err(err) => {
                self.counters.malformed += 1;
                tracing::debug!(%peer, %err, "domain message refused");
                return;
            }
        };
        match wire {
            Wire::Join(request) => self.join_request(peer, request, now),
            Wire::Answer { domain, answer } => self.answer(peer, domain, answer, now),
            Wire::Leave(leave) => {
                if leave.member == peer && verify_signed(self.verifier.as_ref(), &leave).is_ok() {
                    self.counters.leaves_heard += 1;
                    if let Some(membership) = self.memberships.get_mut(&leave.domain) {
                        membership.neighbours.remove(&peer);
                    }
                }
            }
            Wire::Advert(advert) => {
                if let Outcome::Failed(reason) = self.newer_advert(advert, Some(peer), now) {
                    tracing::trace!(%peer, reason, "a domain advert from a neighbour not taken");
                }
            }
            Wire::Request { id, domain, protocol, body } => self.incoming(peer, id, domain, protocol, body, now),
            Wire::Response { id, result } => self.response(peer, id, result),
        }
    }

    fn timer(&mut self, timer: Timer, now: Timestamp) {
        match timer {
            Timer::Join(domain) => self.retry(domain, now),
            Timer::Renew(domain) => self.renew(domain, now),
            Timer::Approval(domain, node) => {
                if let Some(approval) = self.approvals.remove(&(domain, node)) {
                    self.decide(approval.request, false, now);
                }
            }
            Timer::Outgoing(id) => self.outgoing_timed_out(id),
            Timer::Incoming(id) => self.incoming_timed_out(id),
        }
    }

    /// Renews this node's certificate at half its life.
    fn renew(&mut self, domain: DomainIdentity, now: Timestamp) {
        let Some(membership) = self.memberships.get(&domain) else { return };
        if membership.cert.expires <= now && !membership.advert.rules.is_approver(&self.node) {
            self.renew_later(domain, now);
            return;
        }
        let advert = membership.advert.clone();
        if advert.rules.is_approver(&self.node) {
            let cert = self.certify(self.node, &advert, now);
            let psk = membership.psk.clone();
            self.counters.certificates_renewed += 1;
            self.enter(advert, cert, psk, None);
            return;
        }
        let cert = membership.cert.clone();
        let mut approvers = vec![cert.approver];
        approvers.extend(advert.rules.approvers.iter().copied().filter(|a| *a != cert.approver && *a != self.node));
        let joining = Joining {
            advert,
            psk: membership.psk.clone(),
            asked: cert.approver,
            approvers,
            attempt: 0,
            asker: None,
            renewing: Some(cert),
        };
        self.joining.insert(domain, joining);
        self.ask(domain, now);
    }
}

impl ProtocolEngine for DomainEngine {
    fn protocol(&self) -> &ProtocolId {
        &self.protocol
    }

    fn handle(&mut self, input: Input, now: Timestamp) {
        match input {
            Input::FromPeer { message, .. } if message.protocol.version != DOMAIN_VERSION => {
                self.counters.malformed += 1;
            }
            Input::FromPeer { peer, message } => self.peer_said(peer, &message.body, now),
            Input::Command { from, message } => self.command(from, message.id, &message.body, now),
            Input::Notice(Notice::PeerAddedToView { domain, peer }) => {
                if let Some(membership) = self.memberships.get_mut(&domain) {
                    membership.neighbours.insert(peer);
                }
            }
            Input::Notice(Notice::PeerRemovedFromView { domain, peer }) => {
                if let Some(membership) = self.memberships.get_mut(&domain) {
                    membership.neighbours.remove(&peer);
                }
            }
            Input::Notice(_) | Input::OwnAdvert(_) | Input::FromEngine { .. } => {}
        }
    }

    fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Timed for DomainEngine {
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.timer(timer, now);
        }
    }
}
