//! The local control API's wire format, and a client for it.
//!
//! A Unix stream socket carries JSON lines: the client writes one request
//! line, the node answers with one response line, except `subscribe` and
//! `inbox`, which answer with one line per event until the client closes
//! the socket. Bodies travel as base64 (standard alphabet, padded).
//! `docs/control-api.md` describes every request and response.

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The largest request or response line read (bodies are base64 inside).
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    Peers,
    /// Sends `body` to an engine (`name@node1...`) or to a node's `inbox`
    /// engine (`node1...`). With `wait` (the default), the answer is the
    /// outcome; without, it comes as soon as the message is queued.
    Send {
        to: String,
        body: String,
        #[serde(default)]
        ttl_ms: Option<u64>,
        #[serde(default)]
        sign: bool,
        #[serde(default = "waits_by_default")]
        wait: bool,
    },
    Publish {
        topic: String,
        body: String,
    },
    CreateTopic {
        #[serde(default)]
        tags: Vec<String>,
    },
    Subscribe {
        topic: String,
    },
    /// Streams what arrives at this node's `inbox` engine.
    Inbox,
    /// Adds a peer from its advert text, as a permanent peer.
    AddPeer {
        advert: String,
    },
    /// Makes a permanent peer ephemeral again and closes its connection;
    /// the node no longer keeps it connected.
    RemovePeer {
        node: String,
    },
    /// Sets a node's trust, 0 to 255: 0 bans it (its connection is closed
    /// and it is refused), 128 is the default.
    SetTrust {
        node: String,
        trust: u8,
    },
    /// Ends every `subscribe` stream of this topic on this node.
    Unsubscribe {
        topic: String,
    },
    /// Creates a domain this node owns: `policy` is `open`, `psk` (with
    /// `psk`, base64), `allow-list` (with `allow`) or `owner`.
    DomainCreate {
        policy: String,
        #[serde(default)]
        psk: Option<String>,
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        cert_ttl_s: Option<u32>,
        #[serde(default)]
        full_mesh: bool,
    },
    /// The advert text of a domain this node is in.
    DomainAdvert {
        domain: String,
    },
    /// Joins the domain of this advert text.
    DomainJoin {
        advert: String,
        #[serde(default)]
        psk: Option<String>,
        #[serde(default)]
        via: Option<String>,
    },
    DomainLeave {
        domain: String,
    },
    /// The owner admits (or refuses) a join that waits for it.
    DomainApprove {
        domain: String,
        node: String,
        #[serde(default = "waits_by_default")]
        accept: bool,
    },
    /// The owner signs a newer advert that revokes a member.
    DomainRevoke {
        domain: String,
        node: String,
    },
    DomainList,
    /// A domain's active and passive views.
    DomainView {
        domain: String,
    },
    /// Sends an outsider's request: `domain` is advert text, or the
    /// identity of a domain this node is in.
    DomainRequest {
        domain: String,
        protocol: String,
        body: String,
    },
}

/// A domain as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub domain: String,
    pub policy: String,
    pub owner: bool,
    pub approver: bool,
    /// When this node's certificate expires (UNIX ms).
    pub expires_ms: u64,
    pub active: Vec<String>,
    pub passive: Vec<String>,
}

fn waits_by_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node: String,
    pub connected: bool,
    pub protocol: Option<String>,
    pub remote: Option<String>,
    pub permanent: bool,
    pub queued: usize,
    pub inflight: usize,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub topic: String,
    pub local_subscribers: usize,
    pub remote_subscribers: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub node: String,
    pub name: Option<String>,
    pub addresses: Vec<String>,
    pub advert: String,
    pub engines: usize,
    pub peers_connected: usize,
    pub topics: Vec<TopicInfo>,
    pub local_delivered: u64,
    pub sent_remote: u64,
    pub inbound_delivered: u64,
    pub inbound_rejected: u64,
    pub undeliverable: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub duplicates_dropped: u64,
    pub violations: u64,
    /// Where the node serves `/metrics`, when it does.
    #[serde(default)]
    pub metrics: Option<String>,
    #[serde(default)]
    pub connections_established: u64,
    #[serde(default)]
    pub connections_handshaking: u64,
    #[serde(default)]
    pub connections_dialling: u64,
    /// Messages queued for peers, and on connections unacknowledged.
    #[serde(default)]
    pub queued_messages: u64,
    #[serde(default)]
    pub window_messages: u64,
    /// Deliveries waiting in (or for room in) the engines' mailboxes.
    #[serde(default)]
    pub mailbox_depth: u64,
    /// Messages dropped, for every reason (`/metrics` has them by reason).
    #[serde(default)]
    pub drops: u64,
}

/// A message as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub src: String,
    pub dst: String,
    pub id: u64,
    pub protocol: String,
    pub body: String,
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlResponse {
    Status(StatusInfo),
    Peers {
        peers: Vec<PeerInfo>,
    },
    /// Queued, when the request did not wait for the outcome.
    Sent {
        id: u64,
    },
    /// Delivered: `by` is the node that acknowledged it, or this node for
    /// a local destination.
    Delivered {
        id: u64,
        dst: String,
        by: String,
    },
    /// Still queued or unacknowledged when the wait ended.
    Pending {
        id: u64,
        dst: String,
        waited_ms: u64,
    },
    TopicCreated {
        topic: String,
    },
    Subscribed {
        topic: String,
    },
    Listening {
        engine: String,
    },
    Message(MessageInfo),
    Undeliverable {
        id: u64,
        dst: String,
        reason: String,
    },
    PeerAdded {
        node: String,
    },
    PeerRemoved {
        node: String,
    },
    TrustSet {
        node: String,
        trust: u8,
    },
    /// Answers `unsubscribe` with how many streams it ended; each ended
    /// `subscribe` stream also gets it as its last line.
    Unsubscribed {
        topic: String,
        streams: usize,
    },
    DomainCreated {
        domain: String,
        advert: String,
    },
    DomainAdvertText {
        domain: String,
        advert: String,
    },
    DomainJoined {
        domain: String,
        approver: String,
        expires_ms: u64,
    },
    /// The join waits for the owner's approval.
    DomainPending {
        domain: String,
    },
    DomainLeft {
        domain: String,
    },
    DomainApproved {
        domain: String,
        node: String,
        accept: bool,
    },
    DomainRevoked {
        domain: String,
        node: String,
        advert: String,
    },
    Domains {
        domains: Vec<DomainInfo>,
    },
    DomainView(DomainInfo),
    DomainAnswer {
        body: String,
    },
    Error {
        message: String,
    },
}

pub fn encode_body(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

pub fn decode_body(text: &str) -> Result<Vec<u8>, String> {
    data_encoding::BASE64.decode(text.as_bytes()).map_err(|e| format!("body is not base64: {e}"))
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("cannot reach the node's control socket {path}: {source} (is the node running?)")]
    Connect { path: String, source: std::io::Error },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the node's answer is not valid: {0}")]
    BadResponse(String),
    #[error("the node closed the control connection")]
    Closed,
}

/// One connection to a node's control socket.
#[derive(Debug)]
pub struct ControlClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    line: String,
}

impl ControlClient {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect { path: path.display().to_string(), source })?;
        let (reader, writer) = stream.into_split();
        Ok(Self { reader: BufReader::new(reader), writer, line: String::new() })
    }

    pub async fn send(&mut self, request: &ControlRequest) -> Result<(), ControlError> {
        let mut line = serde_json::to_string(request).map_err(|e| ControlError::BadResponse(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next response line.
    pub async fn next(&mut self) -> Result<ControlResponse, ControlError> {
        self.line.clear();
        let read = (&mut self.reader).take(MAX_LINE_BYTES as u64).read_line(&mut self.line).await?;
        if read == 0 {
            return Err(ControlError::Closed);
        }
        serde_json::from_str(self.line.trim_end()).map_err(|e| ControlError::BadResponse(e.to_string()))
    }

    /// Sends a request and waits for its one response.
    pub async fn call(path: &Path, request: &ControlRequest) -> Result<ControlResponse, ControlError> {
        let mut client = Self::connect(path).await?;
        client.send(request).await?;
        client.next().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_form() {
        let send = ControlRequest::Send {
            to: "inbox@node1x".into(),
            body: encode_body(b"hi"),
            ttl_ms: None,
            sign: false,
            wait: false,
        };
        let text = serde_json::to_string(&send).expect("json");
        assert_eq!(text, r#"{"cmd":"send","to":"inbox@node1x","body":"aGk=","ttl_ms":null,"sign":false,"wait":false}"#);
        let parsed: ControlRequest = serde_json::from_str(r#"{"cmd":"send","to":"x","body":""}"#).expect("defaults");
        assert!(matches!(parsed, ControlRequest::Send { ttl_ms: None, sign: false, wait: true, .. }));
        assert_eq!(serde_json::to_string(&ControlRequest::Peers).expect("json"), r#"{"cmd":"peers"}"#);
        assert!(serde_json::from_str::<ControlRequest>(r#"{"cmd":"reboot"}"#).is_err());
        assert_eq!(decode_body(&encode_body(b"\x00\xff")).expect("b64"), b"\x00\xff");
    }
}
