//! What a domain advert says about membership beyond its join policy:
//! who approves, how long a certificate lasts, who is out.

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedVec;
use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::ValidationError;
use crate::identity::NodeIdentity;

/// Nodes one advert names as approvers.
pub const MAX_DOMAIN_APPROVERS: usize = 64;
/// Members one advert names as revoked.
pub const MAX_DOMAIN_REVOKED: usize = 1024;
/// How long a certificate lasts unless the advert says otherwise: a day.
pub const DEFAULT_CERT_TTL_S: u32 = 24 * 60 * 60;
/// The shortest lifetime an advert may set: renewal at half of it must
/// leave time for a round trip.
pub const MIN_CERT_TTL_S: u32 = 60;

/// What a domain advert says about membership beyond the join policy.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MembershipRules {
    /// Members that may sign certificates.
    pub approvers: BoundedVec<NodeIdentity, MAX_DOMAIN_APPROVERS>,
    /// How long a certificate is valid, in seconds.
    pub cert_ttl_s: u32,
    /// Members whose certificates no longer count.
    pub revoked: BoundedVec<NodeIdentity, MAX_DOMAIN_REVOKED>,
    /// Whether every member keeps a connection to every other, whatever
    /// the domain's size.
    pub full_mesh: bool,
}

impl Default for MembershipRules {
    fn default() -> Self {
        Self {
            approvers: BoundedVec::empty(),
            cert_ttl_s: DEFAULT_CERT_TTL_S,
            revoked: BoundedVec::empty(),
            full_mesh: false,
        }
    }
}

impl MembershipRules {
    pub fn new(
        approvers: Vec<NodeIdentity>,
        cert_ttl_s: u32,
        revoked: Vec<NodeIdentity>,
        full_mesh: bool,
    ) -> Result<Self, ValidationError> {
        if cert_ttl_s < MIN_CERT_TTL_S {
            return Err(ValidationError::Invalid {
                field: "certificate lifetime",
                reason: format!("{cert_ttl_s} s is under the minimum of {MIN_CERT_TTL_S} s"),
            });
        }
        Ok(Self {
            approvers: BoundedVec::new("domain approvers", approvers)?,
            cert_ttl_s,
            revoked: BoundedVec::new("revoked members", revoked)?,
            full_mesh,
        })
    }

    pub fn is_approver(&self, node: &NodeIdentity) -> bool {
        self.approvers.contains(node)
    }

    pub fn is_revoked(&self, node: &NodeIdentity) -> bool {
        self.revoked.contains(node)
    }
}

impl Canonical for MembershipRules {
    fn write_canonical(&self, w: &mut CanonicalWriter) {
        w.field(&self.approvers).u32(self.cert_ttl_s).field(&self.revoked).bool(self.full_mesh);
    }
}
