//! A hostile peer for tests: it speaks the wire protocol of
//! `docs/transport.md` (TLS over TCP with a node key, length-prefixed
//! frames, the Hello handshake) from any loopback address, and does what
//! an honest node never would. Beside it, an honest newcomer: a real node
//! in this process that dials the victim and waits for its messages to be
//! acknowledged.

use std::net::IpAddr;
use std::time::Duration;

use netmachine_adapters::codec::{CborCodec, ChannelEnds};
use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::networked::{ListenSpec, NetworkedNode, NetworkedNodeConfig};
use netmachine_adapters::runtime::{Delivery, EngineHandle, SendOptions};
use netmachine_adapters::text_forms::node_advert_from_text;
use netmachine_adapters::transport::framing::{encode_channel_frame_into, encode_frame_into, FrameReader};
use netmachine_adapters::transport::stream::{BoxReader, BoxWriter};
use netmachine_adapters::transport::{dial_tls, TlsConfigs};
use netmachine_domain::{
    Advert, Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, Frame, HandshakeStatus, Hello,
    MessageId, NodeIdentity, NodeMessage, NodePayload, ProtocolId, Timestamp, TopicAdvert, TopicAdvertBody,
    TopicIdentity, TransportAddress, VersionRange,
};
use netmachine_engines::ports::Signer;
use tokio::io::AsyncWriteExt;

use crate::cluster::ProcessNode;

/// The `n`th of the loopback addresses a botnet dials from (127.0.0.2 on).
pub fn botnet_address(n: usize) -> IpAddr {
    IpAddr::from([127, 0, (2 + n / 250) as u8, (2 + n % 250) as u8])
}

/// Where a hostile peer dials: a node's address and the identity it must
/// prove there.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub address: std::net::SocketAddr,
    pub identity: NodeIdentity,
}

impl From<&ProcessNode> for Target {
    fn from(node: &ProcessNode) -> Self {
        Self { address: node.address, identity: node.identity }
    }
}

/// One hostile identity.
pub struct Hostile {
    pub keys: Ed25519Keys,
    pub identity: NodeIdentity,
    tls: TlsConfigs,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hostile").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("ends", &self.ends).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Honest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Honest").field("node", &self.node.node.identity()).finish_non_exhaustive()
    }
}

impl Default for Hostile {
    fn default() -> Self {
        Self::new()
    }
}

impl Hostile {
    /// A fresh identity.
    pub fn new() -> Self {
        let keys = Ed25519Keys::generate().expect("keys");
        let tls = TlsConfigs::new(&keys).expect("tls");
        Self { identity: keys.node_identity(), keys, tls }
    }

    /// A TLS stream to `victim` from `from`, and nothing sent on it.
    pub async fn dial(&self, from: IpAddr, victim: impl Into<Target>) -> std::io::Result<(BoxReader, BoxWriter)> {
        let victim = victim.into();
        let stream = dial_tls(self.tls.clone(), Some(from), victim.address, victim.identity)
            .await
            .map_err(std::io::Error::other)?;
        Ok((stream.reader, stream.writer))
    }

    /// A connection that has done the handshake; the victim's answer.
    pub async fn connect(
        &self,
        from: IpAddr,
        victim: impl Into<Target>,
    ) -> std::io::Result<(Session, HandshakeStatus)> {
        let victim = victim.into();
        let (reader, mut writer) = self.dial(from, victim).await?;
        let hello = Hello {
            versions: VersionRange { min: 1, max: 1 },
            boot: rand_boot(),
            own_advert_version: 0,
            held_advert_version_of_peer: u64::MAX,
        };
        let mut buf = Vec::new();
        encode_frame_into(&CborCodec::default(), &Frame::Hello(hello), &mut buf).map_err(std::io::Error::other)?;
        writer.write_all(&buf).await?;
        writer.flush().await?;
        let mut reader = FrameReader::new(reader, CborCodec::default());
        let reply = tokio::time::timeout(Duration::from_secs(30), reader.next_frame())
            .await
            .map_err(|_| std::io::Error::other("no hello reply within 30 s"))?
            .map_err(std::io::Error::other)?;
        let status = match reply {
            Some(Frame::HelloReply(reply)) => reply.status,
            other => return Err(std::io::Error::other(format!("expected a hello reply, got {other:?}"))),
        };
        if status == HandshakeStatus::Ok {
            reader.enter_channel(ChannelEnds { local: self.identity, peer: victim.identity });
        }
        let ends = ChannelEnds { local: self.identity, peer: victim.identity };
        Ok((Session { reader, writer, ends, buf: Vec::new() }, status))
    }

    /// A valid topic advert as large as the limits allow, for a fresh
    /// topic this identity publishes.
    pub fn maximal_topic_advert(&self, publishers: &[NodeIdentity]) -> TopicAdvert {
        let topic_keys = Ed25519Keys::generate().expect("keys");
        let topic = TopicIdentity::new(topic_keys.identity());
        let mut all = vec![self.identity];
        all.extend(publishers.iter().copied());
        let tags: Vec<String> = (0..32).map(|n| format!("{n:02}{}", "t".repeat(62))).collect();
        let body = TopicAdvertBody::new(
            topic,
            all.into_iter().cycle().take(256).collect(),
            std::iter::repeat_n(self.identity, 64).collect(),
            tags.iter().map(String::as_str).collect(),
            1,
            Timestamp(now_ms()),
        )
        .expect("within the limits");
        let sig = topic_keys.sign(&TopicAdvert::signing_bytes_of(&body));
        Advert::from_parts(body, sig)
    }

    /// A message from this identity to an engine of `victim`.
    pub fn message_to(&self, victim: NodeIdentity, engine: &str, id: u64, body: &[u8]) -> NodeMessage {
        let src = EngineIdentity::new(self.identity, EngineName::new("flood").expect("valid"));
        let dst = EngineIdentity::new(victim, EngineName::new(engine).expect("valid"));
        let inner = EngineMessage::new(
            src,
            DestinationIdentity::Engine(dst),
            MessageId(id),
            ProtocolId::new("hostile", 1).expect("valid"),
            Body::new(body.to_vec()).expect("small"),
        );
        NodeMessage { src: self.identity, dst: victim, payload: NodePayload::Engine(inner), sig: None }
    }
}

fn rand_boot() -> u64 {
    now_ms() ^ u64::from(std::process::id()) << 32
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An established hostile connection.
pub struct Session {
    reader: FrameReader<BoxReader>,
    pub writer: BoxWriter,
    ends: ChannelEnds,
    buf: Vec<u8>,
}

impl Session {
    /// Queues a frame (an advert, an acknowledgement) to write.
    pub fn push(&mut self, frame: &Frame) {
        let codec = CborCodec::default();
        match frame {
            Frame::Node(_) => encode_channel_frame_into(&codec, frame, self.ends, &mut self.buf),
            _ => encode_frame_into(&codec, frame, &mut self.buf),
        }
        .expect("encodes");
    }

    /// Writes what was queued; an error once the victim has closed.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.writer.write_all(&buf).await?;
        self.writer.flush().await
    }

    /// Reads until the victim closes the connection, for at most
    /// `seconds`: whether it did.
    pub async fn closed_within(&mut self, seconds: u64) -> bool {
        let read_to_end = async { while let Ok(Some(_)) = self.reader.next_frame().await {} };
        tokio::time::timeout(Duration::from_secs(seconds), read_to_end).await.is_ok()
    }

    /// Frames the victim sent that are waiting, read for at most `ms`.
    pub async fn drain_for(&mut self, ms: u64) -> Vec<Frame> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Ok(Some(frame))) = tokio::time::timeout_at(deadline, self.reader.next_frame()).await {
            frames.push(frame);
        }
        frames
    }
}

/// Whether a raw stream is closed by the other end within `seconds`.
pub async fn closed_within(reader: &mut BoxReader, seconds: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 4096];
    let read_to_end = async {
        loop {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(seconds), read_to_end).await.is_ok()
}

/// An honest node in this process: it dials the victim over TLS over TCP
/// and sends to its `inbox`.
pub struct Honest {
    pub node: NetworkedNode,
    engine: EngineHandle,
}

impl Honest {
    pub async fn start(victim: &ProcessNode) -> Self {
        let keys = Ed25519Keys::generate().expect("keys");
        let mut config = NetworkedNodeConfig::new(keys, Vec::new());
        // A listener brings the connector it dials with.
        let bind = TransportAddress::parse_bind("tls-tcp://127.0.0.1:0").expect("valid");
        config.listen = vec![ListenSpec { bind, advertise: None, weight: 100 }];
        let node = NetworkedNode::start(config).await.expect("honest node");
        let advert = node_advert_from_text(&victim.advert).expect("the victim's advert");
        node.node.offer_node_advert(advert).await.expect("advert taken");
        let engine = node.node.register_engine("honest").expect("engine");
        Self { node, engine }
    }

    /// Sends `body` to the victim's inbox and waits at most 30 s for the
    /// victim to acknowledge it: whether it did.
    pub async fn exchange(&mut self, victim: &ProcessNode, body: &str) -> Result<(), String> {
        let inbox = EngineIdentity::new(victim.identity, EngineName::new("inbox").expect("valid"));
        let sent = self
            .engine
            .send_and_confirm(
                DestinationIdentity::Engine(inbox),
                ProtocolId::new("honest", 1).expect("valid"),
                body.as_bytes().to_vec(),
                SendOptions::default(),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| e.to_string())?;
        match sent.1 {
            Delivery::Acknowledged { .. } => Ok(()),
            other => Err(format!("{other}")),
        }
    }

    pub async fn stop(self) {
        self.node.shutdown().await;
    }
}
