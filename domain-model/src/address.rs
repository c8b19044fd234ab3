//! Transport addresses: `quic://127.0.0.1:4100`, `tls-tcp://[::1]:4100`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, CanonicalWriter};
use crate::error::ParseError;

/// The transport protocol of an address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum TransportProtocol {
    /// QUIC over UDP, the default.
    Quic,
    /// TLS 1.3 over TCP, the fallback where UDP is blocked.
    TlsTcp,
}

impl TransportProtocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::TlsTcp => "tls-tcp",
        }
    }

    /// The protocol of a binary tag written by [`Self::tag`].
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Self::Quic),
            1 => Some(Self::TlsTcp),
            _ => None,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::Quic => 0,
            Self::TlsTcp => 1,
        }
    }
}

/// A protocol and an IP socket address. Host names are not accepted: an
/// advert must say exactly where to connect.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct TransportAddress {
    pub protocol: TransportProtocol,
    pub socket: SocketAddr,
}

impl TransportAddress {
    pub fn new(protocol: TransportProtocol, socket: SocketAddr) -> Self {
        Self { protocol, socket }
    }
}

impl fmt::Display for TransportAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.protocol.scheme(), self.socket)
    }
}

impl TransportAddress {
    /// Parses an address to listen on, where port 0 asks the system for a
    /// free port. Adverts never carry port 0: use `parse` for those.
    pub fn parse_bind(s: &str) -> Result<Self, ParseError> {
        let trimmed = s.trim();
        match trimmed.strip_suffix(":0") {
            Some(head) => {
                let mut address: TransportAddress = format!("{head}:1").parse()?;
                address.socket.set_port(0);
                Ok(address)
            }
            None => trimmed.parse(),
        }
    }
}

impl FromStr for TransportAddress {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "transport address";
        let s = s.trim();
        let (scheme, rest) = s.split_once("://").ok_or_else(|| ParseError::Malformed {
            what: WHAT,
            reason: format!("{s:?} has no scheme; write quic://IP:PORT or tls-tcp://IP:PORT"),
        })?;
        let protocol = match scheme {
            "quic" => TransportProtocol::Quic,
            "tls-tcp" => TransportProtocol::TlsTcp,
            other => {
                return Err(ParseError::Malformed {
                    what: WHAT,
                    reason: format!("unknown scheme {other:?}; the schemes are quic and tls-tcp"),
                })
            }
        };
        let socket: SocketAddr = rest.parse().map_err(|_| ParseError::Malformed {
            what: WHAT,
            reason: format!(
                "{rest:?} is not IP:PORT (an IPv6 address goes in brackets, e.g. [::1]:4100; host names are not accepted)"
            ),
        })?;
        if socket.port() == 0 {
            return Err(ParseError::Malformed { what: WHAT, reason: "port 0 cannot be dialled".into() });
        }
        Ok(Self { protocol, socket })
    }
}

impl Canonical for TransportAddress {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.u8(self.protocol.tag());
        match self.socket {
            SocketAddr::V4(v4) => writer.u8(4).bytes(&v4.ip().octets()).u16(v4.port()),
            SocketAddr::V6(v6) => writer.u8(6).bytes(&v6.ip().octets()).u16(v6.port()),
        };
    }
}

/// An address with the preference weight its node gives it (higher first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct WeightedAddress {
    pub address: TransportAddress,
    pub weight: u8,
}

impl Canonical for WeightedAddress {
    fn write_canonical(&self, writer: &mut CanonicalWriter) {
        writer.field(&self.address).u8(self.weight);
    }
}

impl fmt::Display for WeightedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} weight {}", self.address, self.weight)
    }
}
