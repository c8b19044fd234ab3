//! Reading back what [`crate::canonical::CanonicalWriter`] wrote: the
//! binary form of the values that engines carry in message bodies
//! (membership certificates, node adverts, overlay entries). Every read is
//! bounded by the bytes present and by a caller's limit on each length or
//! count, so a hostile body can make a reader fail but never allocate more
//! than the body's own size.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::address::{TransportAddress, TransportProtocol, WeightedAddress};
use crate::advert::{Advert, DomainAdvert, DomainAdvertBody, JoinPolicy, NodeAdvert, NodeAdvertBody};
use crate::bounded::{BoundedText, BoundedVec};
use crate::canonical::CanonicalWriter;
use crate::error::ParseError;
use crate::identity::{DomainIdentity, ExternalIdentity, NodeIdentity, Signature};
use crate::limits::{MAX_ADVERT_ADDRESSES, MAX_NODE_NAME_BYTES};
use crate::membership::{write_proof, JoinProof, JoinRequest, Leave, MembershipCertificate};
use crate::rules::{MembershipRules, MAX_DOMAIN_APPROVERS, MAX_DOMAIN_REVOKED};
use crate::time::Timestamp;

/// Reads fields in the layout of [`CanonicalWriter`].
#[derive(Debug)]
pub struct WireReader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    /// A reader of `bytes`, which hold a value named `what` in errors.
    pub fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, rest: bytes }
    }

    fn malformed(&self, reason: impl Into<String>) -> ParseError {
        ParseError::Malformed { what: self.what, reason: reason.into() }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ParseError> {
        if self.rest.len() < len {
            return Err(self.malformed(format!("needs {len} more bytes, {} are left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool, ParseError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.malformed(format!("{other} is no boolean"))),
        }
    }

    pub fn timestamp(&mut self) -> Result<Timestamp, ParseError> {
        Ok(Timestamp(self.u64()?))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], ParseError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.malformed(format!("a field of {len} bytes is over the limit of {max}")));
        }
        self.take(len)
    }

    /// A length-prefixed string of exactly the bytes given.
    pub fn tag(&mut self, expected: &str) -> Result<(), ParseError> {
        let found = self.bytes(expected.len())?;
        if found != expected.as_bytes() {
            return Err(self.malformed(format!("expected the tag {expected:?}")));
        }
        Ok(())
    }

    /// A sequence count of at most `max`.
    pub fn count(&mut self, max: usize) -> Result<usize, ParseError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.malformed(format!("{len} items are over the limit of {max}")));
        }
        Ok(len)
    }

    pub fn identity(&mut self) -> Result<ExternalIdentity, ParseError> {
        let bytes = self.bytes(33)?;
        ExternalIdentity::from_tagged_bytes(self.what, bytes)
    }

    pub fn node(&mut self) -> Result<NodeIdentity, ParseError> {
        Ok(NodeIdentity::new(self.identity()?))
    }

    pub fn domain(&mut self) -> Result<DomainIdentity, ParseError> {
        Ok(DomainIdentity::new(self.identity()?))
    }

    pub fn signature(&mut self) -> Result<Signature, ParseError> {
        let bytes = self.bytes(65)?;
        Signature::from_tagged_bytes(bytes).ok_or_else(|| self.malformed("not a signature of a known scheme"))
    }

    pub fn transport_address(&mut self) -> Result<TransportAddress, ParseError> {
        let protocol = TransportProtocol::from_tag(self.u8()?).ok_or_else(|| self.malformed("unknown transport"))?;
        let family = self.u8()?;
        let ip = self.bytes(16)?;
        let socket = match (family, ip.len()) {
            (4, 4) => {
                let octets: [u8; 4] = ip.try_into().map_err(|_| self.malformed("an IPv4 address is 4 bytes"))?;
                SocketAddr::from((Ipv4Addr::from(octets), self.u16()?))
            }
            (6, 16) => {
                let octets: [u8; 16] = ip.try_into().map_err(|_| self.malformed("an IPv6 address is 16 bytes"))?;
                SocketAddr::from((Ipv6Addr::from(octets), self.u16()?))
            }
            _ => return Err(self.malformed("an address is IPv4 or IPv6")),
        };
        Ok(TransportAddress::new(protocol, socket))
    }

    /// A node advert as [`write_node_advert`] wrote it. Its signature is
    /// read, not checked: that is a verifier's work.
    pub fn node_advert(&mut self) -> Result<NodeAdvert, ParseError> {
        let id = self.node()?;
        let count = self.count(MAX_ADVERT_ADDRESSES)?;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let address = self.transport_address()?;
            addrs.push(WeightedAddress { address, weight: self.u8()? });
        }
        let name = match self.u8()? {
            0 => None,
            1 => {
                let bytes = self.bytes(MAX_NODE_NAME_BYTES)?;
                let text = std::str::from_utf8(bytes).map_err(|_| self.malformed("a node name is UTF-8"))?;
                Some(BoundedText::new("node name", text)?)
            }
            _ => return Err(self.malformed("bad presence byte")),
        };
        let version = self.u64()?;
        let created = self.timestamp()?;
        let body = NodeAdvertBody { id, addrs: BoundedVec::new("advert addresses", addrs)?, name, version, created };
        Ok(Advert::from_parts(body, self.signature()?))
    }

    fn nodes<const MAX: usize>(&mut self, field: &'static str) -> Result<BoundedVec<NodeIdentity, MAX>, ParseError> {
        let count = self.count(MAX)?;
        let nodes = (0..count).map(|_| self.node()).collect::<Result<Vec<_>, _>>()?;
        Ok(BoundedVec::new(field, nodes)?)
    }

    /// A domain advert as [`write_domain_advert`] wrote it; its signature
    /// is read, not checked.
    pub fn domain_advert(&mut self) -> Result<DomainAdvert, ParseError> {
        let id = self.domain()?;
        let nodes = self.nodes("domain contact nodes")?;
        let join = match self.u8()? {
            0 => JoinPolicy::Open,
            1 => {
                let key_hash: [u8; 32] =
                    self.bytes(32)?.try_into().map_err(|_| self.malformed("a key hash is 32 bytes"))?;
                JoinPolicy::PreSharedKey { key_hash }
            }
            2 => JoinPolicy::AllowList(self.nodes("allow-list")?),
            3 => JoinPolicy::OwnerApproves,
            other => return Err(self.malformed(format!("unknown join policy {other}"))),
        };
        let approvers = self.nodes::<MAX_DOMAIN_APPROVERS>("domain approvers")?;
        let cert_ttl_s = self.u32()?;
        let revoked = self.nodes::<MAX_DOMAIN_REVOKED>("revoked members")?;
        let full_mesh = self.bool()?;
        let rules = MembershipRules::new(approvers.into_inner(), cert_ttl_s, revoked.into_inner(), full_mesh)?;
        let version = self.u64()?;
        let created = self.timestamp()?;
        let body = DomainAdvertBody { id, nodes, join, rules, version, created };
        Ok(Advert::from_parts(body, self.signature()?))
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), ParseError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} bytes follow the value", self.rest.len())))
        }
    }
}

impl MembershipCertificate {
    pub fn write_wire(&self, w: &mut CanonicalWriter) {
        w.field(&self.domain).field(&self.member).field(&self.approver);
        w.u64(self.epoch).u64(self.issued.0).u64(self.expires.0);
        w.bytes(&self.sig.to_tagged_bytes());
    }

    pub fn read_wire(r: &mut WireReader<'_>) -> Result<Self, ParseError> {
        Ok(Self {
            domain: r.domain()?,
            member: r.node()?,
            approver: r.node()?,
            epoch: r.u64()?,
            issued: r.timestamp()?,
            expires: r.timestamp()?,
            sig: r.signature()?,
        })
    }
}

impl JoinRequest {
    pub fn write_wire(&self, w: &mut CanonicalWriter) {
        w.field(&self.requestor).field(&self.domain).u64(self.nonce).u64(self.created.0);
        write_proof(w, &self.proof);
        w.bytes(&self.sig.to_tagged_bytes());
    }

    pub fn read_wire(r: &mut WireReader<'_>) -> Result<Self, ParseError> {
        let requestor = r.node()?;
        let domain = r.domain()?;
        let nonce = r.u64()?;
        let created = r.timestamp()?;
        let proof = match r.u8()? {
            0 => JoinProof::Nothing,
            1 => {
                let mac: [u8; 32] = r.bytes(32)?.try_into().map_err(|_| ParseError::Malformed {
                    what: "join request",
                    reason: "a key proof is 32 bytes".into(),
                })?;
                JoinProof::PreSharedKey(mac)
            }
            2 => JoinProof::Renewal(Box::new(MembershipCertificate::read_wire(r)?)),
            other => {
                return Err(ParseError::Malformed { what: "join request", reason: format!("unknown proof {other}") })
            }
        };
        Ok(Self { requestor, domain, nonce, created, proof, sig: r.signature()? })
    }
}

impl Leave {
    pub fn write_wire(&self, w: &mut CanonicalWriter) {
        w.field(&self.member).field(&self.domain).u64(self.created.0).bytes(&self.sig.to_tagged_bytes());
    }

    pub fn read_wire(r: &mut WireReader<'_>) -> Result<Self, ParseError> {
        Ok(Self { member: r.node()?, domain: r.domain()?, created: r.timestamp()?, sig: r.signature()? })
    }
}

/// Writes a domain advert so that [`WireReader::domain_advert`] reads it
/// back: its body in canonical form, then its signature.
pub fn write_domain_advert(w: &mut CanonicalWriter, advert: &DomainAdvert) {
    w.field(&advert.body).bytes(&advert.sig.to_tagged_bytes());
}

/// Writes a node advert so that [`WireReader::node_advert`] reads it back:
/// its body in canonical form, then its signature.
pub fn write_node_advert(w: &mut CanonicalWriter, advert: &NodeAdvert) {
    w.field(&advert.body).bytes(&advert.sig.to_tagged_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert() -> NodeAdvert {
        let id = NodeIdentity::new(ExternalIdentity::ed25519([3; 32]));
        let addrs = vec![
            WeightedAddress { address: "quic://10.0.0.1:4100".parse().expect("valid"), weight: 2 },
            WeightedAddress { address: "tls-tcp://[::1]:4101".parse().expect("valid"), weight: 1 },
        ];
        let body = NodeAdvertBody::new(id, addrs, Some("n"), 7, Timestamp(9)).expect("valid");
        Advert::from_parts(body, Signature::Ed25519(Box::new([5; 64])))
    }

    #[test]
    fn a_node_advert_reads_back_as_written() {
        let mut w = CanonicalWriter::untagged();
        write_node_advert(&mut w, &advert());
        let bytes = w.finish();
        let mut r = WireReader::new("advert", &bytes);
        assert_eq!(r.node_advert().expect("reads"), advert());
        r.finish().expect("nothing left");
        // Every shorter prefix is refused, never read as something else.
        for len in 0..bytes.len() {
            let mut r = WireReader::new("advert", &bytes[..len]);
            assert!(r.node_advert().and_then(|_| r.finish()).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn a_domain_advert_reads_back_as_written() {
        let node = NodeIdentity::new(ExternalIdentity::ed25519([3; 32]));
        let id = DomainIdentity::new(ExternalIdentity::ed25519([4; 32]));
        for join in [
            JoinPolicy::Open,
            JoinPolicy::PreSharedKey { key_hash: [9; 32] },
            JoinPolicy::AllowList(BoundedVec::new("allow", vec![node]).expect("small")),
            JoinPolicy::OwnerApproves,
        ] {
            let rules = MembershipRules::new(vec![node], 600, vec![node], true).expect("valid");
            let body = DomainAdvertBody::new(id, vec![node], join, 3, Timestamp(8)).expect("valid").with_rules(rules);
            let advert = Advert::from_parts(body, Signature::Ed25519(Box::new([5; 64])));
            let mut w = CanonicalWriter::untagged();
            write_domain_advert(&mut w, &advert);
            let bytes = w.finish();
            let mut r = WireReader::new("domain advert", &bytes);
            assert_eq!(r.domain_advert().expect("reads"), advert);
            r.finish().expect("all read");
        }
    }

    #[test]
    fn requests_and_certificates_read_back_as_written() {
        let node = |seed: u8| NodeIdentity::new(ExternalIdentity::ed25519([seed; 32]));
        let domain = DomainIdentity::new(ExternalIdentity::ed25519([200; 32]));
        let sig = Signature::Ed25519(Box::new([2; 64]));
        let cert = crate::membership::CertificateBody {
            domain,
            member: node(4),
            approver: node(1),
            epoch: 1,
            issued: Timestamp(1),
            expires: Timestamp(9),
        }
        .signed(sig.clone());
        let request = JoinRequest {
            requestor: node(4),
            domain,
            nonce: 9,
            created: Timestamp(77),
            proof: JoinProof::Renewal(Box::new(cert)),
            sig: sig.clone(),
        };
        let mut w = CanonicalWriter::untagged();
        request.write_wire(&mut w);
        let bytes = w.finish();
        let mut r = WireReader::new("join", &bytes);
        assert_eq!(JoinRequest::read_wire(&mut r).expect("reads"), request);
        r.finish().expect("all read");
        let leave = Leave { member: node(4), domain, created: Timestamp(5), sig };
        let mut w = CanonicalWriter::untagged();
        leave.write_wire(&mut w);
        let bytes = w.finish();
        assert_eq!(Leave::read_wire(&mut WireReader::new("leave", &bytes)).expect("reads"), leave);
    }

    #[test]
    fn lengths_over_their_limit_are_refused_before_reading() {
        let mut w = CanonicalWriter::untagged();
        w.count(1_000_000);
        let bytes = w.finish();
        assert!(WireReader::new("list", &bytes).count(8).is_err());
        let mut w = CanonicalWriter::untagged();
        w.bytes(&[0; 40]);
        let bytes = w.finish();
        assert!(WireReader::new("key", &bytes).identity().is_err());
    }
}
