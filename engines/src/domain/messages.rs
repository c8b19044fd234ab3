//! The bytes of the domain protocol: between nodes (joins, their answers,
//! leaves, adverts, external requests) and between a local engine and this
//! one (commands and their outcomes). Every length is capped before it is
//! read.

use netmachine_domain::canonical::CanonicalWriter;
use netmachine_domain::wire::{write_domain_advert, WireReader};
use netmachine_domain::{
    Body, DomainAdvert, DomainIdentity, JoinRefusal, JoinRequest, Leave, MembershipCertificate, NodeIdentity,
    ParseError,
};

/// The largest body of an external request or its answer.
pub const MAX_EXTERNAL_BODY: usize = 64 * 1024;
/// The longest protocol name an external request may carry.
pub const MAX_PROTOCOL_NAME: usize = 64;
/// The longest pre-shared key accepted.
pub const MAX_PSK_BYTES: usize = 1024;

/// How an external request ended, when it did not end in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ExternalError {
    #[error("no engine on the member serves this protocol for the domain")]
    UnknownProtocol,
    #[error("the member is not in the domain")]
    NotMember,
    #[error("too many requests; slow down and try again")]
    RateLimited,
    #[error("the request got no answer in time")]
    TimedOut,
    #[error("too many requests are waiting for an answer")]
    Busy,
}

impl ExternalError {
    const ALL: [Self; 5] = [Self::UnknownProtocol, Self::NotMember, Self::RateLimited, Self::TimedOut, Self::Busy];

    fn code(self) -> u8 {
        Self::ALL.iter().position(|e| *e == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// How a join ended, as the approver said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAnswer {
    Accepted(MembershipCertificate),
    Refused(JoinRefusal),
    /// The owner must approve: the answer comes when it does.
    Pending,
}

/// What domain engines tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Join(JoinRequest),
    Answer {
        domain: DomainIdentity,
        answer: JoinAnswer,
    },
    Leave(Leave),
    /// A newer advert, spread over the domain's overlay.
    Advert(DomainAdvert),
    Request {
        id: u64,
        domain: DomainIdentity,
        protocol: String,
        body: Vec<u8>,
    },
    Response {
        id: u64,
        result: Result<Vec<u8>, ExternalError>,
    },
}

fn malformed(what: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError::Malformed { what, reason: reason.into() }
}

fn body_of(w: CanonicalWriter) -> Body {
    Body::new(w.finish()).unwrap_or_else(|_| unreachable!("every domain message is capped far under the body limit"))
}

fn read_text(r: &mut WireReader<'_>, max: usize) -> Result<String, ParseError> {
    let bytes = r.bytes(max)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("domain message", "text that is not UTF-8"))
}

impl Wire {
    pub fn encode(&self) -> Body {
        let mut w = CanonicalWriter::untagged();
        match self {
            Self::Join(request) => {
                w.u8(0);
                request.write_wire(&mut w);
            }
            Self::Answer { domain, answer } => {
                w.u8(1).field(domain);
                match answer {
                    JoinAnswer::Accepted(cert) => {
                        w.u8(0);
                        cert.write_wire(&mut w);
                    }
                    JoinAnswer::Refused(refusal) => {
                        w.u8(1).u8(refusal.code());
                    }
                    JoinAnswer::Pending => {
                        w.u8(2);
                    }
                }
            }
            Self::Leave(leave) => {
                w.u8(2);
                leave.write_wire(&mut w);
            }
            Self::Advert(advert) => {
                w.u8(3);
                write_domain_advert(&mut w, advert);
            }
            Self::Request { id, domain, protocol, body } => {
                w.u8(4).u64(*id).field(domain).str(protocol).bytes(body);
            }
            Self::Response { id, result } => {
                w.u8(5).u64(*id);
                match result {
                    Ok(body) => w.u8(0).bytes(body),
                    Err(err) => w.u8(1).u8(err.code()),
                };
            }
        }
        body_of(w)
    }

    pub fn decode(body: &Body) -> Result<Self, ParseError> {
        let mut r = WireReader::new("domain message", body.as_bytes());
        let wire = match r.u8()? {
            0 => Self::Join(JoinRequest::read_wire(&mut r)?),
            1 => {
                let domain = r.domain()?;
                let answer = match r.u8()? {
                    0 => JoinAnswer::Accepted(MembershipCertificate::read_wire(&mut r)?),
                    1 => JoinAnswer::Refused(
                        JoinRefusal::from_code(r.u8()?).ok_or_else(|| malformed("join answer", "unknown refusal"))?,
                    ),
                    2 => JoinAnswer::Pending,
                    other => return Err(malformed("join answer", format!("unknown answer {other}"))),
                };
                Self::Answer { domain, answer }
            }
            2 => Self::Leave(Leave::read_wire(&mut r)?),
            3 => Self::Advert(r.domain_advert()?),
            4 => Self::Request {
                id: r.u64()?,
                domain: r.domain()?,
                protocol: read_text(&mut r, MAX_PROTOCOL_NAME)?,
                body: r.bytes(MAX_EXTERNAL_BODY)?.to_vec(),
            },
            5 => {
                let id = r.u64()?;
                let result = match r.u8()? {
                    0 => Ok(r.bytes(MAX_EXTERNAL_BODY)?.to_vec()),
                    1 => Err(ExternalError::from_code(r.u8()?)
                        .ok_or_else(|| malformed("external response", "unknown error"))?),
                    other => return Err(malformed("external response", format!("unknown result {other}"))),
                };
                Self::Response { id, result }
            }
            other => return Err(malformed("domain message", format!("unknown kind {other}"))),
        };
        r.finish()?;
        Ok(wire)
    }
}

/// What a local engine (the control API, an embedder's) asks of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Runs a domain this node owns or approves for: it certifies itself.
    /// `psk` is the pre-shared key, for a domain that asks for one.
    Serve {
        advert: DomainAdvert,
        psk: Option<Vec<u8>>,
    },
    /// Joins through `via`, or an approver the advert names.
    Join {
        advert: DomainAdvert,
        psk: Option<Vec<u8>>,
        via: Option<NodeIdentity>,
    },
    /// Back in a domain after a restart, with what was kept on disk.
    Restore {
        advert: DomainAdvert,
        cert: MembershipCertificate,
        psk: Option<Vec<u8>>,
    },
    Leave(DomainIdentity),
    /// A newer advert of a domain this node is in (a revocation).
    Advert(DomainAdvert),
    /// The owner approves (or refuses) a join that waits for it.
    Approve {
        domain: DomainIdentity,
        node: NodeIdentity,
        accept: bool,
    },
    /// The asking engine answers external requests for `protocol`.
    ServeProtocol {
        domain: DomainIdentity,
        protocol: String,
    },
    /// Sends an external request to a member of `advert`'s domain.
    Request {
        advert: DomainAdvert,
        protocol: String,
        body: Vec<u8>,
    },
    /// A local engine's answer to an external request handed to it.
    Answer {
        id: u64,
        body: Vec<u8>,
    },
    /// The asking engine hears of every membership change from now on
    /// (renewals, newer adverts, removals), to keep them on disk.
    Watch,
}

impl Command {
    pub fn encode(&self) -> Body {
        let mut w = CanonicalWriter::untagged();
        let psk_of = |w: &mut CanonicalWriter, psk: &Option<Vec<u8>>| {
            w.option(psk.as_ref(), |w, k| {
                w.bytes(k);
            });
        };
        match self {
            Self::Serve { advert, psk } => {
                w.u8(0);
                write_domain_advert(&mut w, advert);
                psk_of(&mut w, psk);
            }
            Self::Join { advert, psk, via } => {
                w.u8(1);
                write_domain_advert(&mut w, advert);
                psk_of(&mut w, psk);
                w.option(via.as_ref(), |w, v| {
                    w.field(v);
                });
            }
            Self::Restore { advert, cert, psk } => {
                w.u8(2);
                write_domain_advert(&mut w, advert);
                cert.write_wire(&mut w);
                psk_of(&mut w, psk);
            }
            Self::Leave(domain) => {
                w.u8(3).field(domain);
            }
            Self::Advert(advert) => {
                w.u8(4);
                write_domain_advert(&mut w, advert);
            }
            Self::Approve { domain, node, accept } => {
                w.u8(5).field(domain).field(node).bool(*accept);
            }
            Self::ServeProtocol { domain, protocol } => {
                w.u8(6).field(domain).str(protocol);
            }
            Self::Request { advert, protocol, body } => {
                w.u8(7);
                write_domain_advert(&mut w, advert);
                w.str(protocol).bytes(body);
            }
            Self::Answer { id, body } => {
                w.u8(8).u64(*id).bytes(body);
            }
            Self::Watch => {
                w.u8(9);
            }
        }
        body_of(w)
    }

    pub fn decode(body: &Body) -> Result<Self, ParseError> {
        let mut r = WireReader::new("domain command", body.as_bytes());
        let psk = |r: &mut WireReader<'_>| -> Result<Option<Vec<u8>>, ParseError> {
            Ok(match r.u8()? {
                0 => None,
                _ => Some(r.bytes(MAX_PSK_BYTES)?.to_vec()),
            })
        };
        let command = match r.u8()? {
            0 => Self::Serve { advert: r.domain_advert()?, psk: psk(&mut r)? },
            1 => {
                let advert = r.domain_advert()?;
                let psk = psk(&mut r)?;
                let via = match r.u8()? {
                    0 => None,
                    _ => Some(r.node()?),
                };
                Self::Join { advert, psk, via }
            }
            2 => Self::Restore {
                advert: r.domain_advert()?,
                cert: MembershipCertificate::read_wire(&mut r)?,
                psk: psk(&mut r)?,
            },
            3 => Self::Leave(r.domain()?),
            4 => Self::Advert(r.domain_advert()?),
            5 => Self::Approve { domain: r.domain()?, node: r.node()?, accept: r.bool()? },
            6 => Self::ServeProtocol { domain: r.domain()?, protocol: read_text(&mut r, MAX_PROTOCOL_NAME)? },
            7 => Self::Request {
                advert: r.domain_advert()?,
                protocol: read_text(&mut r, MAX_PROTOCOL_NAME)?,
                body: r.bytes(MAX_EXTERNAL_BODY)?.to_vec(),
            },
            8 => Self::Answer { id: r.u64()?, body: r.bytes(MAX_EXTERNAL_BODY)?.to_vec() },
            9 => Self::Watch,
            other => return Err(malformed("domain command", format!("unknown command {other}"))),
        };
        r.finish()?;
        Ok(command)
    }
}

/// What this engine tells a local engine: the outcome of its command, or
/// an external request for it to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A member now, with this certificate (kept on disk by the host).
    Joined {
        advert: DomainAdvert,
        cert: MembershipCertificate,
    },
    /// The join waits for the owner's approval.
    Pending(DomainIdentity),
    JoinRefused {
        domain: DomainIdentity,
        reason: String,
    },
    Done,
    /// The command could not be carried out, for the reason given.
    Failed(String),
    /// The answer to an external request.
    Answered(Vec<u8>),
    ExternalFailed(ExternalError),
    /// An outsider's request, for the engine serving its protocol; answer
    /// with [`Command::Answer`] and this id.
    Incoming {
        id: u64,
        domain: DomainIdentity,
        requester: NodeIdentity,
        protocol: String,
        body: Vec<u8>,
    },
    /// To the watcher: this node is no longer in the domain.
    Left(DomainIdentity),
}

impl Outcome {
    pub fn encode(&self) -> Body {
        let mut w = CanonicalWriter::untagged();
        match self {
            Self::Joined { advert, cert } => {
                w.u8(0);
                write_domain_advert(&mut w, advert);
                cert.write_wire(&mut w);
            }
            Self::Pending(domain) => {
                w.u8(1).field(domain);
            }
            Self::JoinRefused { domain, reason } => {
                w.u8(2).field(domain).str(reason);
            }
            Self::Done => {
                w.u8(3);
            }
            Self::Failed(reason) => {
                w.u8(4).str(reason);
            }
            Self::Answered(body) => {
                w.u8(5).bytes(body);
            }
            Self::ExternalFailed(err) => {
                w.u8(6).u8(err.code());
            }
            Self::Incoming { id, domain, requester, protocol, body } => {
                w.u8(7).u64(*id).field(domain).field(requester).str(protocol).bytes(body);
            }
            Self::Left(domain) => {
                w.u8(8).field(domain);
            }
        }
        body_of(w)
    }

    pub fn decode(body: &Body) -> Result<Self, ParseError> {
        let mut r = WireReader::new("domain outcome", body.as_bytes());
        let outcome = match r.u8()? {
            0 => Self::Joined { advert: r.domain_advert()?, cert: MembershipCertificate::read_wire(&mut r)? },
            1 => Self::Pending(r.domain()?),
            2 => Self::JoinRefused { domain: r.domain()?, reason: read_text(&mut r, 1024)? },
            3 => Self::Done,
            4 => Self::Failed(read_text(&mut r, 1024)?),
            5 => Self::Answered(r.bytes(MAX_EXTERNAL_BODY)?.to_vec()),
            6 => Self::ExternalFailed(
                ExternalError::from_code(r.u8()?).ok_or_else(|| malformed("domain outcome", "unknown error"))?,
            ),
            7 => Self::Incoming {
                id: r.u64()?,
                domain: r.domain()?,
                requester: r.node()?,
                protocol: read_text(&mut r, MAX_PROTOCOL_NAME)?,
                body: r.bytes(MAX_EXTERNAL_BODY)?.to_vec(),
            },
            8 => Self::Left(r.domain()?),
            other => return Err(malformed("domain outcome", format!("unknown outcome {other}"))),
        };
        r.finish()?;
        Ok(outcome)
    }
}
