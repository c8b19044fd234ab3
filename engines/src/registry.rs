//! Every protocol engine a node runs, in one list. The node core hosts
//! what [`protocol_engines`] returns, in the tokio runtime and in the
//! simulator alike: adding an engine is its folder under `engines/src/`
//! and one line here. An embedder adds its own with
//! [`crate::node_core::NodeCore::add_engine`].

use crate::engine::{EngineSetup, ProtocolEngine};

pub fn protocol_engines(setup: &EngineSetup) -> Vec<Box<dyn ProtocolEngine>> {
    vec![Box::new(crate::ping::Ping::new(setup, crate::ping::PingConfig::default()))]
}
