//! Domain membership: the rules a domain advert sets (who approves, for how
//! long, who is out), the membership certificate an approver signs, and
//! the signed join and leave requests. Membership is proved by a
//! certificate, not kept in a replicated list: a certificate is valid while
//! it has not expired, its approver is one the advert names, and the advert
//! has not revoked its member.

use serde::{Deserialize, Serialize};

pub use crate::rules::{MembershipRules, DEFAULT_CERT_TTL_S, MAX_DOMAIN_APPROVERS, MAX_DOMAIN_REVOKED, MIN_CERT_TTL_S};

use crate::advert::DomainAdvertBody;
use crate::canonical::CanonicalWriter;

use crate::identity::{DomainIdentity, ExternalIdentity, NodeIdentity, Signature};
use crate::limits::MAX_CLOCK_SKEW_MS;
use crate::signed::Signed;
use crate::time::Timestamp;

/// Why a certificate does not prove membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the certificate is for another domain")]
    WrongDomain,
    #[error("the certificate names another member")]
    WrongMember,
    #[error("the certificate was signed by a node the domain advert does not name as an approver")]
    NotAnApprover,
    #[error("the domain advert revokes this member")]
    Revoked,
    #[error("the certificate expired at {expires} ms (now {now} ms); the member must renew it")]
    Expired { expires: u64, now: u64 },
    #[error("the certificate is issued in the future ({issued} ms, now {now} ms); check the clocks")]
    FromTheFuture { issued: u64, now: u64 },
    #[error("the certificate's signature does not verify")]
    BadSignature,
}

/// An approver's signed statement that `member` belongs to `domain` until
/// `expires`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MembershipCertificate {
    pub domain: DomainIdentity,
    pub member: NodeIdentity,
    pub approver: NodeIdentity,
    /// The advert version it was issued under.
    pub epoch: u64,
    pub issued: Timestamp,
    pub expires: Timestamp,
    pub sig: Signature,
}

/// A certificate before its approver signs it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CertificateBody {
    pub domain: DomainIdentity,
    pub member: NodeIdentity,
    pub approver: NodeIdentity,
    pub epoch: u64,
    pub issued: Timestamp,
    pub expires: Timestamp,
}

impl CertificateBody {
    pub const SIGNING_TAG: &'static str = "netmachine/MembershipCertificate/1";

    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = CanonicalWriter::new(Self::SIGNING_TAG);
        w.field(&self.domain).field(&self.member).field(&self.approver);
        w.u64(self.epoch).u64(self.issued.0).u64(self.expires.0);
        w.finish()
    }

    pub fn signed(self, sig: Signature) -> MembershipCertificate {
        let Self { domain, member, approver, epoch, issued, expires } = self;
        MembershipCertificate { domain, member, approver, epoch, issued, expires, sig }
    }
}

impl MembershipCertificate {
    pub fn body(&self) -> CertificateBody {
        CertificateBody {
            domain: self.domain,
            member: self.member,
            approver: self.approver,
            epoch: self.epoch,
            issued: self.issued,
            expires: self.expires,
        }
    }

    /// Checks everything but the signature against the domain's advert at
    /// `now`.
    pub fn check(&self, advert: &DomainAdvertBody, now: Timestamp) -> Result<(), CertificateError> {
        if self.domain != advert.id {
            return Err(CertificateError::WrongDomain);
        }
        if !advert.rules.is_approver(&self.approver) {
            return Err(CertificateError::NotAnApprover);
        }
        if advert.rules.is_revoked(&self.member) {
            return Err(CertificateError::Revoked);
        }
        if self.expires <= now {
            return Err(CertificateError::Expired { expires: self.expires.0, now: now.0 });
        }
        if self.issued.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(CertificateError::FromTheFuture { issued: self.issued.0, now: now.0 });
        }
        Ok(())
    }
}

impl Signed for MembershipCertificate {
    fn signing_bytes(&self) -> Vec<u8> {
        self.body().signing_bytes()
    }
    fn signature(&self) -> Option<&Signature> {
        Some(&self.sig)
    }
    fn signer(&self) -> ExternalIdentity {
        *self.approver.key()
    }
}

/// What a joiner shows beyond its signature.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum JoinProof {
    /// Nothing: for open and allow-list domains, and owner approval.
    Nothing,
    /// HMAC-SHA256 under the pre-shared key over [`JoinRequest::psk_input`].
    PreSharedKey([u8; 32]),
    /// A certificate still valid: a renewal.
    Renewal(Box<MembershipCertificate>),
}

/// A node's signed request to join (or stay in) a domain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JoinRequest {
    pub requestor: NodeIdentity,
    pub domain: DomainIdentity,
    /// Fresh for every request: an approver refuses one it has seen.
    pub nonce: u64,
    pub created: Timestamp,
    pub proof: JoinProof,
    pub sig: Signature,
}

impl JoinRequest {
    const SIGNING_TAG: &'static str = "netmachine/JoinRequest/1";

    /// The bytes the requestor signs.
    pub fn signing_bytes_of(
        requestor: &NodeIdentity,
        domain: &DomainIdentity,
        nonce: u64,
        created: Timestamp,
        proof: &JoinProof,
    ) -> Vec<u8> {
        let mut w = CanonicalWriter::new(Self::SIGNING_TAG);
        w.field(requestor).field(domain).u64(nonce).u64(created.0);
        write_proof(&mut w, proof);
        w.finish()
    }

    /// What the pre-shared key's HMAC covers: the key itself never travels,
    /// and a proof made for one request is worth nothing for another.
    pub fn psk_input(requestor: &NodeIdentity, domain: &DomainIdentity, nonce: u64, created: Timestamp) -> Vec<u8> {
        let mut w = CanonicalWriter::new("nm-join");
        w.field(domain).field(requestor).u64(nonce).u64(created.0);
        w.finish()
    }
}

pub(crate) fn write_proof(w: &mut CanonicalWriter, proof: &JoinProof) {
    match proof {
        JoinProof::Nothing => {
            w.u8(0);
        }
        JoinProof::PreSharedKey(mac) => {
            w.u8(1).bytes(mac);
        }
        JoinProof::Renewal(cert) => {
            w.u8(2);
            cert.write_wire(w);
        }
    }
}

impl Signed for JoinRequest {
    fn signing_bytes(&self) -> Vec<u8> {
        Self::signing_bytes_of(&self.requestor, &self.domain, self.nonce, self.created, &self.proof)
    }
    fn signature(&self) -> Option<&Signature> {
        Some(&self.sig)
    }
    fn signer(&self) -> ExternalIdentity {
        *self.requestor.key()
    }
}

/// A member's signed notice that it leaves a domain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Leave {
    pub member: NodeIdentity,
    pub domain: DomainIdentity,
    pub created: Timestamp,
    pub sig: Signature,
}

impl Leave {
    const SIGNING_TAG: &'static str = "netmachine/Leave/1";

    pub fn signing_bytes_of(member: &NodeIdentity, domain: &DomainIdentity, created: Timestamp) -> Vec<u8> {
        let mut w = CanonicalWriter::new(Self::SIGNING_TAG);
        w.field(member).field(domain).u64(created.0);
        w.finish()
    }
}

impl Signed for Leave {
    fn signing_bytes(&self) -> Vec<u8> {
        Self::signing_bytes_of(&self.member, &self.domain, self.created)
    }
    fn signature(&self) -> Option<&Signature> {
        Some(&self.sig)
    }
    fn signer(&self) -> ExternalIdentity {
        *self.member.key()
    }
}

/// Why an approver refused a join. A wrong key, a node off the allow-list
/// and an owner's refusal all read [`JoinRefusal::Denied`]: a refusal must
/// not tell a guesser which part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the domain's join policy does not admit this node (check the pre-shared key, the allow-list, or ask the owner)")]
    Denied,
    #[error("the request's time is more than 300 s from the approver's clock; check this node's clock")]
    Stale,
    #[error("the approver has seen this request before; send a fresh one")]
    Replayed,
    #[error("too many join requests from this node; wait 10 s and try again")]
    RateLimited,
    #[error("the domain has revoked this node's membership")]
    Revoked,
    #[error("the node asked cannot approve joins; ask an approver the domain advert names")]
    NotAnApprover,
    #[error("the node asked does not know this domain; it needs the domain advert")]
    UnknownDomain,
    #[error("the request's signature does not verify")]
    BadSignature,
    #[error("too many joins wait for the owner's approval; try again later")]
    Busy,
}

impl JoinRefusal {
    const ALL: [Self; 9] = [
        Self::Denied,
        Self::Stale,
        Self::Replayed,
        Self::RateLimited,
        Self::Revoked,
        Self::NotAnApprover,
        Self::UnknownDomain,
        Self::BadSignature,
        Self::Busy,
    ];

    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::JoinPolicy;

    fn node(seed: u8) -> NodeIdentity {
        NodeIdentity::new(ExternalIdentity::ed25519([seed; 32]))
    }

    fn domain() -> DomainIdentity {
        DomainIdentity::new(ExternalIdentity::ed25519([200; 32]))
    }

    fn advert(revoked: Vec<NodeIdentity>) -> DomainAdvertBody {
        let mut body =
            DomainAdvertBody::new(domain(), vec![node(1)], JoinPolicy::Open, 1, Timestamp(0)).expect("valid");
        body.rules = MembershipRules::new(vec![node(1)], 3600, revoked, false).expect("valid");
        body
    }

    fn cert(member: NodeIdentity, approver: NodeIdentity) -> MembershipCertificate {
        CertificateBody {
            domain: domain(),
            member,
            approver,
            epoch: 1,
            issued: Timestamp(1_000),
            expires: Timestamp(10_000),
        }
        .signed(Signature::Ed25519(Box::new([1; 64])))
    }

    #[test]
    fn a_certificate_holds_only_within_its_rules() {
        let now = Timestamp(5_000);
        assert_eq!(cert(node(2), node(1)).check(&advert(vec![]), now), Ok(()));
        assert_eq!(cert(node(2), node(3)).check(&advert(vec![]), now), Err(CertificateError::NotAnApprover));
        assert_eq!(cert(node(2), node(1)).check(&advert(vec![node(2)]), now), Err(CertificateError::Revoked));
        assert!(matches!(
            cert(node(2), node(1)).check(&advert(vec![]), Timestamp(10_000)),
            Err(CertificateError::Expired { .. })
        ));
        let mut other = advert(vec![]);
        other.id = DomainIdentity::new(ExternalIdentity::ed25519([201; 32]));
        assert_eq!(cert(node(2), node(1)).check(&other, now), Err(CertificateError::WrongDomain));
        let mut early = cert(node(2), node(1));
        early.issued = Timestamp(now.0 + MAX_CLOCK_SKEW_MS + 1);
        early.expires = Timestamp(u64::MAX);
        assert!(matches!(early.check(&advert(vec![]), now), Err(CertificateError::FromTheFuture { .. })));
    }

    #[test]
    fn refusal_codes_round_trip() {
        for refusal in JoinRefusal::ALL {
            assert_eq!(JoinRefusal::from_code(refusal.code()), Some(refusal));
        }
        assert_eq!(JoinRefusal::from_code(200), None);
    }

    #[test]
    fn the_key_proof_input_binds_every_field() {
        let base = JoinRequest::psk_input(&node(1), &domain(), 1, Timestamp(1));
        assert_ne!(base, JoinRequest::psk_input(&node(2), &domain(), 1, Timestamp(1)));
        assert_ne!(base, JoinRequest::psk_input(&node(1), &domain(), 2, Timestamp(1)));
        assert_ne!(base, JoinRequest::psk_input(&node(1), &domain(), 1, Timestamp(2)));
    }
}
