//! Which peers hold a valid membership certificate for which domain, as
//! the overlays checked them: what a domain-scoped message from a peer is
//! judged by. Each entry lasts until its certificate expires; the table
//! holds at most a fixed number, and when full the entry expiring first
//! makes room.

use std::collections::{BTreeSet, HashMap};

use netmachine_domain::{DomainIdentity, NodeIdentity, Timestamp};

/// Members remembered at once, across every domain.
pub const MAX_CERTIFIED: usize = 4096;

#[derive(Debug, Default)]
pub struct CertifiedMembers {
    until: HashMap<(DomainIdentity, NodeIdentity), Timestamp>,
    by_expiry: BTreeSet<(Timestamp, DomainIdentity, NodeIdentity)>,
}

impl CertifiedMembers {
    /// Notes that `peer` holds a certificate for `domain` until `expires`.
    pub fn certify(&mut self, domain: DomainIdentity, peer: NodeIdentity, expires: Timestamp) {
        if let Some(old) = self.until.get(&(domain, peer)).copied() {
            if old >= expires {
                return;
            }
            self.by_expiry.remove(&(old, domain, peer));
        } else if self.until.len() >= MAX_CERTIFIED {
            if let Some((at, d, p)) = self.by_expiry.pop_first() {
                self.until.remove(&(d, p));
                if at > expires {
                    // What is held outlasts the newcomer: keep it instead.
                    self.until.insert((d, p), at);
                    self.by_expiry.insert((at, d, p));
                    return;
                }
            }
        }
        self.until.insert((domain, peer), expires);
        self.by_expiry.insert((expires, domain, peer));
    }

    pub fn uncertify(&mut self, domain: DomainIdentity, peer: NodeIdentity) {
        if let Some(at) = self.until.remove(&(domain, peer)) {
            self.by_expiry.remove(&(at, domain, peer));
        }
    }

    pub fn holds(&self, domain: &DomainIdentity, peer: &NodeIdentity, now: Timestamp) -> bool {
        self.until.get(&(*domain, *peer)).is_some_and(|until| *until > now)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_until_its_certificate_expires_and_the_table_stays_bounded() {
        let domain = DomainIdentity::ed25519([1; 32]);
        let node = |i: u32| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            NodeIdentity::ed25519(key)
        };
        let mut table = CertifiedMembers::default();
        table.certify(domain, node(1), Timestamp(100));
        assert!(table.holds(&domain, &node(1), Timestamp(99)));
        assert!(!table.holds(&domain, &node(1), Timestamp(100)));
        assert!(!table.holds(&DomainIdentity::ed25519([2; 32]), &node(1), Timestamp(0)));
        table.certify(domain, node(1), Timestamp(50));
        assert!(table.holds(&domain, &node(1), Timestamp(99)), "an earlier expiry does not shorten it");
        for i in 2..(MAX_CERTIFIED as u32 + 10) {
            table.certify(domain, node(i), Timestamp(1_000 + u64::from(i)));
        }
        assert_eq!(table.len(), MAX_CERTIFIED);
        assert!(!table.holds(&domain, &node(1), Timestamp(0)), "the first to expire made room");
    }
}
