//! An in-memory transport for tests: listeners keyed by address in a shared
//! network, connections as in-process pipes. Identities are those the nodes
//! register, so tests can also make a listener claim a false one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use netmachine_domain::{NodeIdentity, TransportProtocol};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::stream::{BoxFuture, Connector, DialError, SecuredStream};

const PIPE_BYTES: usize = 256 * 1024;

/// Who listens at an address, and where its inbound streams go.
type Listener = (NodeIdentity, mpsc::Sender<SecuredStream>);

#[derive(Debug, Default, Clone)]
pub struct MemoryNetwork {
    listeners: Arc<Mutex<HashMap<SocketAddr, Listener>>>,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes a listener, as if its node had vanished.
    pub fn unplug(&self, address: &SocketAddr) {
        self.listeners.lock().remove(address);
    }
}

#[derive(Debug)]
pub struct MemoryConnector {
    network: MemoryNetwork,
    local: SocketAddr,
    identity: NodeIdentity,
    protocol: TransportProtocol,
}

impl MemoryConnector {
    /// Listens at `local` as `identity` (which a test may make a lie).
    pub fn bind(
        network: &MemoryNetwork,
        local: SocketAddr,
        identity: NodeIdentity,
        protocol: TransportProtocol,
        accepted: mpsc::Sender<SecuredStream>,
    ) -> Self {
        network.listeners.lock().insert(local, (identity, accepted));
        Self { network: network.clone(), local, identity, protocol }
    }
}

impl Connector for MemoryConnector {
    fn protocol(&self) -> TransportProtocol {
        self.protocol
    }

    fn local_address(&self) -> Option<SocketAddr> {
        Some(self.local)
    }

    fn dial(
        &self,
        address: SocketAddr,
        expected: NodeIdentity,
    ) -> BoxFuture<'static, Result<SecuredStream, DialError>> {
        let listener = self.network.listeners.lock().get(&address).cloned();
        let (me, local, protocol) = (self.identity, self.local, self.protocol);
        Box::pin(async move {
            let (presented, accepted) =
                listener.ok_or_else(|| DialError::Unreachable(format!("nothing listens at {address}")))?;
            if presented != expected {
                return Err(DialError::WrongIdentity { presented });
            }
            let (near, far) = tokio::io::duplex(PIPE_BYTES);
            let (far_reader, far_writer) = tokio::io::split(far);
            let inbound = SecuredStream {
                peer: me,
                remote: Some(local),
                protocol,
                reader: Box::new(far_reader),
                writer: Box::new(far_writer),
                keepalive: None,
            };
            accepted.send(inbound).await.map_err(|_| DialError::Unreachable(format!("{address} stopped listening")))?;
            let (reader, writer) = tokio::io::split(near);
            Ok(SecuredStream {
                peer: expected,
                remote: Some(address),
                protocol,
                reader: Box::new(reader),
                writer: Box::new(writer),
                keepalive: None,
            })
        })
    }
}
