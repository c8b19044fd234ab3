//! QUIC with s2n-quic and rustls: a server endpoint on the advertised
//! address accepts, a client endpoint on an ephemeral port dials. Inbound
//! connections are known by the identity in the dialler's certificate,
//! never by their source port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netmachine_domain::{NodeIdentity, TransportProtocol};
use s2n_quic::client::Connect;
use s2n_quic::provider::event::events::{self, ConnectionInfo, ConnectionMeta, Subscriber};
use s2n_quic::provider::limits::Limits;
use s2n_quic::{Client, Server};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};

use super::identity_tls::{identity_of_certificate, server_name_of, TlsConfigs, ALPN};
use super::inbound_failures::{InboundFailure, InboundFailures};
use super::stream::{BoxFuture, Connector, DialError, SecuredStream, StreamWriter};
use crate::pending_slots::{PendingSlots, MAX_PENDING, MAX_PENDING_PER_ADDRESS};

/// How long a connection may be silent before it is considered dead. Keep
/// alives are sent at half of it, so only a vanished peer hits it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted connection has to open its stream.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Captures the peer's certificate when the handshake completes, because
/// the rustls provider does not expose it on the connection.
#[derive(Debug, Default)]
pub struct PeerCertificate {
    leaf: Option<Vec<u8>>,
    waiter: Option<oneshot::Sender<Vec<u8>>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PeerCertificateSubscriber;

impl Subscriber for PeerCertificateSubscriber {
    type ConnectionContext = PeerCertificate;

    fn create_connection_context(&mut self, _meta: &ConnectionMeta, _info: &ConnectionInfo) -> PeerCertificate {
        PeerCertificate::default()
    }

    fn on_tls_exporter_ready(
        &mut self,
        context: &mut PeerCertificate,
        _meta: &ConnectionMeta,
        event: &events::TlsExporterReady,
    ) {
        let Some(leaf) = event.session.peer_cert_chain_der().ok().and_then(|chain| chain.into_iter().next()) else {
            return;
        };
        match context.waiter.take() {
            Some(waiter) => {
                let _ = waiter.send(leaf);
            }
            None => context.leaf = Some(leaf),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("cannot start QUIC on {address}: {reason}")]
    Start { address: SocketAddr, reason: String },
}

/// A node's QUIC transport.
pub struct QuicConnector {
    local: SocketAddr,
    client_v4: Option<Client>,
    client_v6: Option<Client>,
    tls: TlsConfigs,
}

impl std::fmt::Debug for QuicConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConnector").field("local", &self.local).finish_non_exhaustive()
    }
}

/// QUIC's packet size, flow control and send buffers. What a peer can make
/// a node hold is bounded by them (`docs/limits.md`); larger windows
/// showed no gain in bulk on loopback (`docs/benchmarks.md`), so the
/// defaults stay near s2n-quic's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicTuning {
    /// Largest UDP payload (1500 by default; 9000 helps on loopback and
    /// jumbo-frame networks).
    pub max_mtu: u16,
    /// Bytes a peer may have in flight to this node beyond what it has
    /// read, per connection and per stream (QUIC's flow-control windows).
    pub receive_window: u32,
    /// Bytes this node keeps per stream until the peer acknowledges them.
    pub send_buffer: u32,
    /// Hands the kernel several packets in one call (UDP segmentation
    /// offload), where the platform has it.
    pub segmentation_offload: bool,
    /// The congestion controller. s2n-quic paces packets under either and
    /// has no switch to send unpaced; this is the choice it offers.
    pub congestion: QuicCongestion,
}

/// The congestion controllers s2n-quic offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuicCongestion {
    /// CUBIC (RFC 8312), s2n-quic's own default.
    Cubic,
    /// BBRv2, which paces by the bandwidth it measures: netmachine's
    /// default: up to 18% faster than CUBIC in raw s2n-quic bulk, and up
    /// to 11% in netmachine's, never slower (`docs/benchmarks.md`).
    #[default]
    Bbr,
}

impl Default for QuicTuning {
    fn default() -> Self {
        Self {
            max_mtu: 1500,
            receive_window: 4 * MIB32,
            send_buffer: 4 * MIB32,
            segmentation_offload: true,
            congestion: QuicCongestion::default(),
        }
    }
}

const MIB32: u32 = 1024 * 1024;

fn limits(tuning: &QuicTuning) -> Result<Limits, String> {
    let window = u64::from(tuning.receive_window);
    Limits::new()
        .with_max_idle_timeout(IDLE_TIMEOUT)
        .and_then(|l| l.with_data_window(window))
        .and_then(|l| l.with_bidirectional_local_data_window(window))
        .and_then(|l| l.with_bidirectional_remote_data_window(window))
        .and_then(|l| l.with_max_send_buffer_size(tuning.send_buffer))
        .map_err(|e| e.to_string())
}

fn io(address: SocketAddr, tuning: &QuicTuning) -> Result<s2n_quic::provider::io::tokio::Provider, String> {
    s2n_quic::provider::io::tokio::Builder::default()
        .with_receive_address(address)
        .and_then(|b| b.with_max_mtu(tuning.max_mtu))
        .and_then(|b| b.with_gso(tuning.segmentation_offload))
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())
}

/// Ends a client or server builder: the congestion controller `tuning`
/// names, then start. The two controllers are two types, hence a macro.
macro_rules! start_with_congestion {
    ($builder:expr, $tuning:expr) => {
        match $tuning.congestion {
            QuicCongestion::Cubic => $builder
                .with_congestion_controller(s2n_quic::provider::congestion_controller::Cubic::default())
                .map_err(|e| e.to_string())?
                .start(),
            QuicCongestion::Bbr => $builder
                .with_congestion_controller(s2n_quic::provider::congestion_controller::Bbr::default())
                .map_err(|e| e.to_string())?
                .start(),
        }
        .map_err(|e| e.to_string())
    };
}

fn client(bind: SocketAddr, tls: &TlsConfigs, tuning: &QuicTuning) -> Result<Client, String> {
    let builder = Client::builder()
        .with_tls(s2n_quic::provider::tls::rustls::Client::from(Arc::clone(&tls.client)))
        .map_err(|e| e.to_string())?
        .with_io(io(bind, tuning)?)
        .map_err(|e| e.to_string())?
        .with_limits(limits(tuning)?)
        .map_err(|e| e.to_string())?
        .with_event(PeerCertificateSubscriber)
        .map_err(|e| e.to_string())?;
    start_with_congestion!(builder, tuning)
}

fn server(listen: SocketAddr, tls: &TlsConfigs, tuning: &QuicTuning) -> Result<Server, String> {
    let builder = Server::builder()
        .with_tls(s2n_quic::provider::tls::rustls::Server::from((*tls.server).clone()))
        .map_err(|e| e.to_string())?
        .with_io(io(listen, tuning)?)
        .map_err(|e| e.to_string())?
        .with_limits(limits(tuning)?)
        .map_err(|e| e.to_string())?
        .with_event(PeerCertificateSubscriber)
        .map_err(|e| e.to_string())?;
    start_with_congestion!(builder, tuning)
}

impl QuicConnector {
    /// Listens on `listen` and hands every authenticated inbound stream to
    /// `accepted`.
    pub fn bind(
        listen: SocketAddr,
        tls: TlsConfigs,
        tuning: QuicTuning,
        accepted: mpsc::Sender<SecuredStream>,
    ) -> Result<Self, QuicSetupError> {
        Self::bind_counting(listen, tls, tuning, accepted, Arc::default())
    }

    /// As [`QuicConnector::bind`], counting the inbound connections that
    /// fail before they are handed on in `failures`.
    pub fn bind_counting(
        listen: SocketAddr,
        tls: TlsConfigs,
        tuning: QuicTuning,
        accepted: mpsc::Sender<SecuredStream>,
        failures: Arc<InboundFailures>,
    ) -> Result<Self, QuicSetupError> {
        let fail = |reason: String| QuicSetupError::Start { address: listen, reason };
        let server = server(listen, &tls, &tuning).map_err(fail)?;
        let local = server.local_addr().map_err(|e| fail(e.to_string()))?;
        let client_v4 = client(SocketAddr::from(([0, 0, 0, 0], 0)), &tls, &tuning).ok();
        let client_v6 = client(SocketAddr::from(([0u16; 8], 0)), &tls, &tuning).ok();
        if client_v4.is_none() && client_v6.is_none() {
            return Err(fail("cannot open a UDP socket to dial from".into()));
        }
        tokio::spawn(accept_loop(server, accepted, failures));
        Ok(Self { local, client_v4, client_v6, tls })
    }
}

async fn accept_loop(mut server: Server, accepted: mpsc::Sender<SecuredStream>, failures: Arc<InboundFailures>) {
    // Connections that have not yet opened their stream: as on TLS over
    // TCP, a few per address and the oldest pushed out when full.
    let pending = Arc::new(PendingSlots::new(MAX_PENDING_PER_ADDRESS, MAX_PENDING));
    while let Some(connection) = server.accept().await {
        let address = connection.remote_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let Ok(mut slot) = pending.admit(address) else {
            failures.count(InboundFailure::TooManyPending);
            tracing::debug!(%address, "inbound QUIC connection refused: its address has connections in setup");
            continue;
        };
        let accepted = accepted.clone();
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            let setup = tokio::time::timeout(ACCEPT_TIMEOUT, secure_inbound(connection));
            let outcome = tokio::select! {
                outcome = setup => outcome,
                _ = &mut slot.pushed_out => {
                    failures.count(InboundFailure::PushedOut);
                    tracing::debug!(%address, "inbound QUIC connection pushed out by newer ones");
                    return;
                }
            };
            drop(slot);
            match outcome {
                Ok(Ok(stream)) => {
                    let _ = accepted.send(stream).await;
                }
                Ok(Err((failure, reason))) => {
                    failures.count(failure);
                    tracing::debug!(%reason, "inbound QUIC connection refused")
                }
                Err(_) => {
                    failures.count(InboundFailure::TimedOut);
                    tracing::debug!("inbound QUIC connection did not open a stream in time")
                }
            }
        });
    }
}

async fn secure_inbound(mut connection: s2n_quic::Connection) -> Result<SecuredStream, (InboundFailure, String)> {
    let failed = |reason: String| (InboundFailure::SecureChannel, reason);
    let remote = connection.remote_addr().ok();
    let ready = connection
        .query_event_context_mut(|ctx: &mut PeerCertificate| match ctx.leaf.take() {
            Some(leaf) => Ok(leaf),
            None => {
                let (tx, rx) = oneshot::channel();
                ctx.waiter = Some(tx);
                Err(rx)
            }
        })
        .map_err(|e| failed(e.to_string()))?;
    let leaf = match ready {
        Ok(leaf) => leaf,
        Err(rx) => rx.await.map_err(|_| failed("the handshake ended without a certificate".into()))?,
    };
    let peer = identity_of_certificate(&leaf.into())
        .ok_or((InboundFailure::NoNodeKey, "the dialler's certificate is not a node key".to_string()))?;
    // RFC 9001 requires ALPN; a dialler that negotiated none (or another)
    // is not speaking netmachine.
    let protocol = connection.application_protocol().map_err(|e| failed(e.to_string()))?;
    if protocol.as_ref() != ALPN {
        return Err((InboundFailure::NoAlpn, "the dialler did not negotiate the netmachine/1 protocol".to_string()));
    }
    connection.keep_alive(true).map_err(|e| failed(e.to_string()))?;
    let stream = connection
        .accept_bidirectional_stream()
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("the connection closed before opening a stream".into()))?;
    let (reader, writer) = stream.split();
    Ok(SecuredStream {
        peer,
        remote,
        protocol: TransportProtocol::Quic,
        reader: Box::new(reader),
        writer: Box::new(QuicWriter(writer)),
        keepalive: Some(Box::new(connection)),
    })
}

/// The sending half of a QUIC stream, with a flush that does not wait.
///
/// s2n-quic sends whatever is written as soon as congestion control lets
/// it; its flush additionally waits until the peer has acknowledged every
/// byte, a full round trip. netmachine acknowledges messages itself, so a
/// writer that flushed after each batch would only stall for that round
/// trip while new messages queue behind it.
struct QuicWriter(s2n_quic::stream::SendStream);

impl AsyncWrite for QuicWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl StreamWriter for QuicWriter {
    fn takes_chunks(&self) -> bool {
        true
    }

    fn poll_write_chunks(&mut self, cx: &mut Context<'_>, chunks: &mut [Bytes]) -> Poll<std::io::Result<usize>> {
        self.0.poll_send_vectored(chunks, cx).map_err(std::io::Error::from)
    }
}

impl Connector for QuicConnector {
    fn protocol(&self) -> TransportProtocol {
        TransportProtocol::Quic
    }

    fn local_address(&self) -> Option<SocketAddr> {
        Some(self.local)
    }

    fn dial(
        &self,
        address: SocketAddr,
        expected: NodeIdentity,
    ) -> BoxFuture<'static, Result<SecuredStream, DialError>> {
        let client = if address.is_ipv4() { self.client_v4.clone() } else { self.client_v6.clone() };
        let mismatches = Arc::clone(&self.tls.mismatches);
        Box::pin(async move {
            let client = client.ok_or_else(|| DialError::Unreachable(format!("no UDP socket for {address}")))?;
            let connect = Connect::new(address).with_server_name(server_name_of(&expected).as_str());
            let mut connection = match client.connect(connect).await {
                Ok(connection) => connection,
                Err(err) => {
                    return Err(match mismatches.take(&expected) {
                        Some(presented) => DialError::WrongIdentity { presented },
                        None => DialError::Unreachable(err.to_string()),
                    })
                }
            };
            connection.keep_alive(true).map_err(|e| DialError::Unreachable(e.to_string()))?;
            let stream =
                connection.open_bidirectional_stream().await.map_err(|e| DialError::Unreachable(e.to_string()))?;
            let (reader, writer) = stream.split();
            Ok(SecuredStream {
                peer: expected,
                remote: Some(address),
                protocol: TransportProtocol::Quic,
                reader: Box::new(reader),
                writer: Box::new(QuicWriter(writer)),
                keepalive: Some(Box::new(connection)),
            })
        })
    }
}
