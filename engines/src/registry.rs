//! Every protocol engine a node runs, in one list. The node core hosts
//! what [`protocol_engines`] returns, in the tokio runtime and in the
//! simulator alike: adding an engine is its folder under `engines/src/`
//! and one line here. An embedder adds its own with
//! [`crate::node_core::NodeCore::add_engine`].

use crate::domain::{DomainConfig, DomainEngine};
use crate::engine::{EngineSetup, ProtocolEngine};
use crate::ping::{Ping, PingConfig};
use crate::topology::{OverlayConfig, Topology};

/// The hosted engines' settings, defaults unless a host or the simulator
/// says otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSettings {
    pub ping: PingConfig,
    pub domain: DomainConfig,
    pub topology: OverlayConfig,
}

pub fn protocol_engines(setup: &EngineSetup, settings: &EngineSettings) -> Vec<Box<dyn ProtocolEngine>> {
    vec![
        Box::new(Ping::new(setup, settings.ping)),
        Box::new(DomainEngine::new(setup, settings.domain)),
        Box::new(Topology::new(setup, settings.topology)),
    ]
}
