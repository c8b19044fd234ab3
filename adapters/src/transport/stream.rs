//! What every transport adapter produces: an authenticated byte stream to
//! a known node. QUIC, TLS over TCP and the in-memory transport differ only
//! in how they make one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use netmachine_domain::{NodeIdentity, TransportProtocol};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWriter = Box<dyn StreamWriter>;

/// The writing half of a secured stream. One that can keep whole buffers
/// as they are (QUIC's send buffer holds `Bytes` until the peer has them)
/// says so, and is handed them instead of being copied from: a large
/// message body then goes out without a copy on this side.
pub trait StreamWriter: AsyncWrite + Send + Unpin {
    /// Whether [`StreamWriter::poll_write_chunks`] takes buffers.
    fn takes_chunks(&self) -> bool {
        false
    }

    /// Takes as many of `chunks`, from the front, as there is room for,
    /// leaving each one taken empty; says how many. Only called when
    /// [`StreamWriter::takes_chunks`].
    fn poll_write_chunks(&mut self, _cx: &mut Context<'_>, _chunks: &mut [Bytes]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }
}

impl<T: AsyncWrite + Send> StreamWriter for tokio::io::WriteHalf<T> {}

/// Writes all of `chunks` through [`StreamWriter::poll_write_chunks`].
pub async fn write_chunks(writer: &mut BoxWriter, chunks: &mut [Bytes]) -> std::io::Result<()> {
    let mut taken = 0;
    std::future::poll_fn(|cx| {
        while taken < chunks.len() {
            match std::task::ready!(writer.poll_write_chunks(cx, &mut chunks[taken..]))? {
                // Room for nothing is `Pending`, never none taken.
                0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                n => taken += n,
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// A mutually authenticated stream: `peer` is the identity the peer proved
/// in the TLS handshake, never an address.
pub struct SecuredStream {
    pub peer: NodeIdentity,
    pub remote: Option<SocketAddr>,
    pub protocol: TransportProtocol,
    pub reader: BoxReader,
    pub writer: BoxWriter,
    /// Whatever keeps the underlying connection open while the stream lives.
    pub keepalive: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for SecuredStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuredStream")
            .field("peer", &self.peer)
            .field("remote", &self.remote)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DialError {
    #[error("{0}")]
    Unreachable(String),
    #[error("the peer proved identity {presented}, not the one dialled")]
    WrongIdentity { presented: NodeIdentity },
    #[error("this node has no {0:?} transport")]
    Unsupported(TransportProtocol),
}

/// Dials one transport protocol. Listening is started when the connector
/// is built: inbound streams go to the channel it was given.
pub trait Connector: Send + Sync + 'static {
    fn protocol(&self) -> TransportProtocol;
    fn local_address(&self) -> Option<SocketAddr>;
    fn dial(&self, address: SocketAddr, expected: NodeIdentity)
        -> BoxFuture<'static, Result<SecuredStream, DialError>>;
}
