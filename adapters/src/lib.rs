//! Adapters: the ports of the engines implemented for the real world (ring,
//! ciborium, redb, the system clock) and for tests, and the tokio runtime
//! that hosts a node's engines behind an embedding API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netmachine_adapters::runtime::{Inbound, Node};
//! use netmachine_domain::{DestinationIdentity, EngineIdentity, EngineName, ProtocolId};
//!
//! let node = Node::builder().start().await?;
//! let mut ping = node.register_engine("ping")?;
//! let mut pong = node.register_engine("pong")?;
//! let to_pong = DestinationIdentity::Engine(EngineIdentity::new(node.identity(), EngineName::new("pong")?));
//! ping.send(to_pong, ProtocolId::new("demo", 1)?, &b"hello"[..]).await?;
//! if let Some(Inbound::Message(message)) = pong.recv().await {
//!     assert_eq!(&message.body.as_bytes()[..], b"hello");
//! }
//! # Ok(()) }
//! ```

pub mod clock;
pub mod codec;
pub mod control;
pub mod crypto;
pub mod domains;
pub mod keyfile;
pub mod metrics;
pub mod networked;
pub mod pending_slots;
pub mod random;
pub mod runtime;
pub mod store;
pub mod text_forms;
pub mod transport;
