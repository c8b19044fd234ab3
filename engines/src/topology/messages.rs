//! The bytes of the topology protocol. Every message names its domain; an
//! entry for a member is its node advert (so the receiver can dial it) and
//! its membership certificate (so the receiver can tell it belongs).
//! Lists are capped at [`MAX_ENTRIES`]: a longer one fails to decode and is
//! counted, never read.

use netmachine_domain::canonical::CanonicalWriter;
use netmachine_domain::wire::{write_domain_advert, write_node_advert, WireReader};
use netmachine_domain::{
    Body, DomainAdvert, DomainIdentity, MembershipCertificate, NodeAdvert, NodeIdentity, ParseError,
};

/// Entries one shuffle or reply may carry (the paper's `ka` + `kp` + 1).
pub const MAX_ENTRIES: usize = 8;

/// A member as the overlay knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub advert: NodeAdvert,
    pub cert: MembershipCertificate,
}

impl PeerInfo {
    pub fn id(&self) -> NodeIdentity {
        self.advert.id
    }

    fn write(&self, w: &mut CanonicalWriter) {
        write_node_advert(w, &self.advert);
        self.cert.write_wire(w);
    }

    fn read(r: &mut WireReader<'_>) -> Result<Self, ParseError> {
        Ok(Self { advert: r.node_advert()?, cert: MembershipCertificate::read_wire(r)? })
    }
}

/// What topology engines tell each other, for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A new member asks to be taken into the overlay.
    Join(PeerInfo),
    /// A random walk that spreads a joiner.
    ForwardJoin {
        joiner: PeerInfo,
        ttl: u8,
    },
    /// Asks to become an active neighbour; `high` cannot be refused.
    Neighbor {
        info: PeerInfo,
        high: bool,
    },
    /// Leaves the active view; `alive` keeps the sender in the passive view.
    Disconnect {
        alive: bool,
    },
    /// A walk carrying a sample of views, answered by its last node.
    Shuffle {
        origin: PeerInfo,
        entries: Vec<PeerInfo>,
        ttl: u8,
        id: u64,
    },
    ShuffleReply {
        entries: Vec<PeerInfo>,
        id: u64,
    },
}

const JOIN: u8 = 0;
const FORWARD_JOIN: u8 = 1;
const NEIGHBOR: u8 = 2;
const DISCONNECT: u8 = 3;
const SHUFFLE: u8 = 4;
const SHUFFLE_REPLY: u8 = 5;

impl Message {
    /// A short name, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join(_) => "join",
            Self::ForwardJoin { .. } => "forward_join",
            Self::Neighbor { .. } => "neighbor",
            Self::Disconnect { .. } => "disconnect",
            Self::Shuffle { .. } => "shuffle",
            Self::ShuffleReply { .. } => "shuffle_reply",
        }
    }

    pub fn encode(&self, domain: &DomainIdentity) -> Body {
        let mut w = CanonicalWriter::untagged();
        match self {
            Self::Join(info) => {
                w.u8(JOIN).field(domain);
                info.write(&mut w);
            }
            Self::ForwardJoin { joiner, ttl } => {
                w.u8(FORWARD_JOIN).field(domain).u8(*ttl);
                joiner.write(&mut w);
            }
            Self::Neighbor { info, high } => {
                w.u8(NEIGHBOR).field(domain).bool(*high);
                info.write(&mut w);
            }
            Self::Disconnect { alive } => {
                w.u8(DISCONNECT).field(domain).bool(*alive);
            }
            Self::Shuffle { origin, entries, ttl, id } => {
                w.u8(SHUFFLE).field(domain).u8(*ttl).u64(*id);
                origin.write(&mut w);
                write_entries(&mut w, entries);
            }
            Self::ShuffleReply { entries, id } => {
                w.u8(SHUFFLE_REPLY).field(domain).u64(*id);
                write_entries(&mut w, entries);
            }
        }
        Body::new(w.finish()).unwrap_or_else(|_| unreachable!("at most nine entries of a few hundred bytes"))
    }

    pub fn decode(body: &Body) -> Result<(DomainIdentity, Self), ParseError> {
        let mut r = WireReader::new("topology message", body.as_bytes());
        let kind = r.u8()?;
        let domain = r.domain()?;
        let message = match kind {
            JOIN => Self::Join(PeerInfo::read(&mut r)?),
            FORWARD_JOIN => {
                let ttl = r.u8()?;
                Self::ForwardJoin { ttl, joiner: PeerInfo::read(&mut r)? }
            }
            NEIGHBOR => {
                let high = r.bool()?;
                Self::Neighbor { high, info: PeerInfo::read(&mut r)? }
            }
            DISCONNECT => Self::Disconnect { alive: r.bool()? },
            SHUFFLE => {
                let ttl = r.u8()?;
                let id = r.u64()?;
                let origin = PeerInfo::read(&mut r)?;
                Self::Shuffle { origin, ttl, id, entries: read_entries(&mut r)? }
            }
            SHUFFLE_REPLY => {
                let id = r.u64()?;
                Self::ShuffleReply { id, entries: read_entries(&mut r)? }
            }
            other => {
                return Err(ParseError::Malformed { what: "topology message", reason: format!("unknown kind {other}") })
            }
        };
        r.finish()?;
        Ok((domain, message))
    }
}

fn write_entries(w: &mut CanonicalWriter, entries: &[PeerInfo]) {
    w.count(entries.len());
    for entry in entries {
        entry.write(w);
    }
}

fn read_entries(r: &mut WireReader<'_>) -> Result<Vec<PeerInfo>, ParseError> {
    let count = r.count(MAX_ENTRIES)?;
    (0..count).map(|_| PeerInfo::read(r)).collect()
}

/// What the domain engine tells the topology engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromDomain {
    /// This node is a member (or renewed its certificate, or the advert
    /// changed): run or update the domain's overlay; `contact` is a member
    /// to send the first join to.
    Member { advert: Box<DomainAdvert>, cert: MembershipCertificate, contact: Option<NodeIdentity> },
    /// This node left the domain.
    Left(DomainIdentity),
}

impl FromDomain {
    /// Engines of one node hand each other bytes, as they do peers.
    pub fn encode(&self) -> Body {
        let mut w = CanonicalWriter::untagged();
        match self {
            Self::Member { advert, cert, contact } => {
                w.u8(0);
                write_domain_advert(&mut w, advert);
                cert.write_wire(&mut w);
                w.option(contact.as_ref(), |w, c| {
                    w.field(c);
                });
            }
            Self::Left(domain) => {
                w.u8(1).field(domain);
            }
        }
        Body::new(w.finish()).unwrap_or_else(|_| unreachable!("an advert and an entry are far under the body limit"))
    }

    pub fn decode(body: &Body) -> Result<Self, ParseError> {
        let mut r = WireReader::new("domain notice", body.as_bytes());
        let notice = match r.u8()? {
            0 => {
                let advert = Box::new(r.domain_advert()?);
                let cert = MembershipCertificate::read_wire(&mut r)?;
                let contact = match r.u8()? {
                    0 => None,
                    _ => Some(r.node()?),
                };
                Self::Member { advert, cert, contact }
            }
            1 => Self::Left(r.domain()?),
            other => {
                return Err(ParseError::Malformed { what: "domain notice", reason: format!("unknown kind {other}") })
            }
        };
        r.finish()?;
        Ok(notice)
    }
}
