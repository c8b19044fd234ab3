//! The engines of netmachine: synchronous, deterministic state machines that
//! take an input and the current time, change their state, and reach the
//! world only through the port traits in [`ports`]. [`engine`] holds what
//! they share: timers instead of a fixed tick.

pub mod domain;
pub mod engine;
pub mod identity_store;
pub mod log_budget;
pub mod metrics;
pub mod node_core;
pub mod ping;
pub mod ports;
pub mod random;
pub mod registry;
pub mod router;
pub mod topology;
pub mod transport;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use identity_store::{AdvertUpdate, IdentityStore, IdentityStoreConfig, IdentityUpdated, UpdateError};
pub use router::{InboundRejection, RegistryError, RouteError, Routed, Router, RouterConfig, TopicError};
