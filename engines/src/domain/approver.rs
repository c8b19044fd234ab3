//! What an approver does with a join request: check it (signature, clock,
//! replay, the joiner's share of joins, revocation, the policy), then
//! certify the joiner, refuse it, or hold it for the owner's approval.

use netmachine_domain::{DomainIdentity, JoinPolicy, JoinProof, JoinRefusal, JoinRequest, NodeIdentity, Timestamp};

use super::messages::{JoinAnswer, Wire};
use super::{Approval, DomainEngine, JoinGuard, Timer};
use crate::ports::verify_signed;

impl DomainEngine {
    /// A join request at this node as an approver.
    pub(super) fn join_request(&mut self, peer: NodeIdentity, request: JoinRequest, now: Timestamp) {
        let domain = request.domain;
        match self.check_join(peer, &request, now) {
            Ok(Some(())) => self.decide(request, true, now),
            Ok(None) => {
                // Owner approval: it waits, within the budget.
                let key = (domain, peer);
                if self.approvals.len() >= self.config.max_approvals && !self.approvals.contains_key(&key) {
                    self.refuse(peer, domain, JoinRefusal::Busy);
                    return;
                }
                self.timers.set(Timer::Approval(domain, peer), now.saturating_add_millis(self.config.approval_wait_ms));
                self.approvals.insert(key, Approval { request });
                self.send(peer, &Wire::Answer { domain, answer: JoinAnswer::Pending });
            }
            Err(refusal) => self.refuse(peer, domain, refusal),
        }
    }

    fn refuse(&mut self, peer: NodeIdentity, domain: DomainIdentity, refusal: JoinRefusal) {
        self.counters.joins_refused += 1;
        tracing::debug!(%peer, %domain, %refusal, "join refused");
        self.send(peer, &Wire::Answer { domain, answer: JoinAnswer::Refused(refusal) });
    }

    /// Whether a join is admitted now (`Some`), waits for the owner
    /// (`None`), or is refused.
    fn check_join(
        &mut self,
        peer: NodeIdentity,
        request: &JoinRequest,
        now: Timestamp,
    ) -> Result<Option<()>, JoinRefusal> {
        if request.requestor != peer {
            return Err(JoinRefusal::BadSignature);
        }
        let Some(membership) = self.memberships.get(&request.domain) else {
            return Err(JoinRefusal::UnknownDomain);
        };
        if !membership.advert.rules.is_approver(&self.node) {
            return Err(JoinRefusal::NotAnApprover);
        }
        let advert = membership.advert.clone();
        let psk = membership.psk.clone();
        self.guard.take_join(peer, now)?;
        if !JoinGuard::fresh(request.created, now) {
            return Err(JoinRefusal::Stale);
        }
        if self.guard.seen(&peer, request.nonce) {
            return Err(JoinRefusal::Replayed);
        }
        if verify_signed(self.verifier.as_ref(), request).is_err() {
            return Err(JoinRefusal::BadSignature);
        }
        self.guard.remember(peer, request.nonce, now)?;
        if advert.rules.is_revoked(&peer) {
            return Err(JoinRefusal::Revoked);
        }
        match (&request.proof, &advert.join) {
            (JoinProof::Renewal(cert), _) => {
                if cert.member == peer && self.certificate_holds(cert, &advert, now) {
                    Ok(Some(()))
                } else {
                    Err(JoinRefusal::Denied)
                }
            }
            (_, JoinPolicy::Open) => Ok(Some(())),
            (JoinProof::PreSharedKey(mac), JoinPolicy::PreSharedKey { .. }) => {
                let input = JoinRequest::psk_input(&peer, &request.domain, request.nonce, request.created);
                match psk {
                    Some(key) if self.verifier.hmac_sha256_matches(&key, &input, mac) => Ok(Some(())),
                    _ => Err(JoinRefusal::Denied),
                }
            }
            (_, JoinPolicy::AllowList(nodes)) if nodes.contains(&peer) => Ok(Some(())),
            (_, JoinPolicy::OwnerApproves) => Ok(None),
            _ => Err(JoinRefusal::Denied),
        }
    }

    /// Certifies the requestor, or refuses it.
    pub(super) fn decide(&mut self, request: JoinRequest, accept: bool, now: Timestamp) {
        let peer = request.requestor;
        let domain = request.domain;
        let Some(advert) = self.memberships.get(&domain).map(|m| m.advert.clone()) else {
            self.refuse(peer, domain, JoinRefusal::UnknownDomain);
            return;
        };
        if !accept {
            self.refuse(peer, domain, JoinRefusal::Denied);
            return;
        }
        let cert = self.certify(peer, &advert, now);
        self.counters.joins_accepted += 1;
        self.send(peer, &Wire::Answer { domain, answer: JoinAnswer::Accepted(cert) });
    }
}
