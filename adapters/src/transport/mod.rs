//! Transports between nodes: QUIC (s2n-quic), TLS 1.3 over TCP, and an
//! in-memory transport for tests, all carrying the same frames over one
//! mutually authenticated byte stream per connection, and the driver that
//! hosts the Transport engine over them.

pub mod driver;
pub mod frame_memory;
pub mod framing;
pub mod identity_tls;
pub mod inbound_failures;
pub mod memory;
pub mod quic;
pub mod stream;
pub mod tcp;

pub use driver::{ConnectionSummary, TransportCounters, TransportDriver};
pub use frame_memory::{FrameLimits, FrameMemory};
pub use identity_tls::{RecordCrypto, RecordLayer, TlsConfigs};
pub use inbound_failures::{InboundFailureCounts, InboundFailures};
pub use memory::{MemoryConnector, MemoryNetwork};
pub use quic::{QuicCongestion, QuicConnector, QuicTuning};
pub use stream::{Connector, DialError, SecuredStream};
pub use tcp::{dial_tls, TlsTcpConnector};
