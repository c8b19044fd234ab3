//! TLS 1.3 over TCP (tokio + rustls): the same identity binding and the
//! same frames as QUIC, for networks that block UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netmachine_domain::{NodeIdentity, TransportProtocol};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::identity_tls::{identity_of_certificate, server_name_of, TlsConfigs, ALPN};
use super::inbound_failures::{InboundFailure, InboundFailures};
use super::stream::{BoxFuture, Connector, DialError, SecuredStream};
use crate::pending_slots::{PendingSlots, MAX_PENDING, MAX_PENDING_PER_ADDRESS};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct TlsTcpConnector {
    local: SocketAddr,
    tls: TlsConfigs,
}

impl TlsTcpConnector {
    pub async fn bind(
        listen: SocketAddr,
        tls: TlsConfigs,
        accepted: mpsc::Sender<SecuredStream>,
    ) -> std::io::Result<Self> {
        Self::bind_counting(listen, tls, accepted, Arc::default()).await
    }

    /// As [`TlsTcpConnector::bind`], counting the inbound connections that
    /// fail before they are handed on in `failures`.
    pub async fn bind_counting(
        listen: SocketAddr,
        tls: TlsConfigs,
        accepted: mpsc::Sender<SecuredStream>,
        failures: Arc<InboundFailures>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.server));
        tokio::spawn(accept_loop(listener, acceptor, accepted, failures));
        Ok(Self { local, tls })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<SecuredStream>,
    failures: Arc<InboundFailures>,
) {
    let pending = Arc::new(PendingSlots::new(MAX_PENDING_PER_ADDRESS, MAX_PENDING));
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Closed at once (dropped) when its address holds its share.
        let Ok(mut slot) = pending.admit(remote.ip()) else {
            failures.count(InboundFailure::TooManyPending);
            tracing::debug!(%remote, "inbound TCP connection refused: its address has handshakes in progress");
            continue;
        };
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        failures.count(InboundFailure::SecureChannel);
                        tracing::debug!(%remote, %err, "inbound TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        failures.count(InboundFailure::TimedOut);
                        tracing::debug!(%remote, "inbound TLS handshake timed out");
                        return;
                    }
                },
                _ = &mut slot.pushed_out => {
                    failures.count(InboundFailure::PushedOut);
                    tracing::debug!(%remote, "inbound TLS handshake pushed out by newer ones");
                    return;
                }
            };
            drop(slot);
            if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
                failures.count(InboundFailure::NoAlpn);
                tracing::debug!(%remote, "inbound TLS peer did not negotiate the netmachine/1 protocol");
                return;
            }
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(identity_of_certificate);
            let Some(peer) = peer else {
                failures.count(InboundFailure::NoNodeKey);
                tracing::debug!(%remote, "inbound TLS peer presented no node key");
                return;
            };
            let (reader, writer) = tokio::io::split(tls);
            let stream = SecuredStream {
                peer,
                remote: Some(remote),
                protocol: TransportProtocol::TlsTcp,
                reader: Box::new(reader),
                writer: Box::new(writer),
                keepalive: None,
            };
            let _ = accepted.send(stream).await;
        });
    }
}

impl Connector for TlsTcpConnector {
    fn protocol(&self) -> TransportProtocol {
        TransportProtocol::TlsTcp
    }

    fn local_address(&self) -> Option<SocketAddr> {
        Some(self.local)
    }

    fn dial(
        &self,
        address: SocketAddr,
        expected: NodeIdentity,
    ) -> BoxFuture<'static, Result<SecuredStream, DialError>> {
        Box::pin(dial_tls(self.tls.clone(), None, address, expected))
    }
}

/// Dials `address` over TLS over TCP from the local IP address `from`
/// (any when `None`), expecting the node `expected` there. Tests use a
/// source address to act as several machines on loopback.
pub async fn dial_tls(
    tls: TlsConfigs,
    from: Option<std::net::IpAddr>,
    address: SocketAddr,
    expected: NodeIdentity,
) -> Result<SecuredStream, DialError> {
    let connector = TlsConnector::from(Arc::clone(&tls.client));
    let mismatches = Arc::clone(&tls.mismatches);
    let unreachable = |e: String| DialError::Unreachable(e);
    let connect = async {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if let Some(from) = from {
            socket.bind(SocketAddr::new(from, 0))?;
        }
        socket.connect(address).await
    };
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(format!("TCP connect to {address} timed out")))?
        .map_err(|e| unreachable(format!("TCP connect to {address}: {e}")))?;
    let _ = socket.set_nodelay(true);
    let name = ServerName::try_from(server_name_of(&expected)).map_err(|e| unreachable(e.to_string()))?;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, socket)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            return Err(match mismatches.take(&expected) {
                Some(presented) => DialError::WrongIdentity { presented },
                None => unreachable(format!("TLS handshake with {address}: {err}")),
            })
        }
        Err(_) => return Err(unreachable(format!("TLS handshake with {address} timed out"))),
    };
    let (reader, writer) = tokio::io::split(tls);
    Ok(SecuredStream {
        peer: expected,
        remote: Some(address),
        protocol: TransportProtocol::TlsTcp,
        reader: Box::new(reader),
        writer: Box::new(writer),
        keepalive: None,
    })
}
