//! One simulated node: the real Router and Transport engines, with the
//! in-memory ports of `netmachine_engines::testing`.

use std::collections::HashMap;

use netmachine_domain::{EngineName, NodeIdentity};
use netmachine_engines::random::SplitMix;
use netmachine_engines::testing::TestSigner;
use netmachine_engines::transport::{RecentIds, Transport, TransportConfig};
use netmachine_engines::{Router, RouterConfig};

use super::scenario::Behaviour;

/// The engine every simulated node hosts; its address in the Router.
pub const APP: u32 = 0;
pub const APP_NAME: &str = "app";

#[derive(Debug)]
pub struct SimNode {
    pub id: NodeIdentity,
    pub signer: TestSigner,
    pub router: Router<u32>,
    pub transport: Transport,
    pub alive: bool,
    /// Changes at every restart: events of an earlier life are ignored.
    pub generation: u64,
    pub boot: u64,
    pub recent: HashMap<NodeIdentity, RecentIds>,
    pub next_message_id: u64,
    pub behaviour: Option<Behaviour>,
    /// Whether it takes part in the workload (nodes that join later start
    /// out absent).
    pub present: bool,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub peak_buffered_bytes: usize,
    /// When a wake-up for the engines' next timeout is queued (virtual µs).
    pub wake_at_us: Option<u64>,
}

pub fn identity_of(index: u32) -> (NodeIdentity, TestSigner) {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&index.to_be_bytes());
    key[4] = 0x5a;
    let signer = TestSigner(netmachine_domain::ExternalIdentity::ed25519(key));
    (NodeIdentity::new(signer.0), signer)
}

impl SimNode {
    pub fn new(index: u32, seed: u64, config: TransportConfig) -> Self {
        let (id, signer) = identity_of(index);
        let mut node = Self {
            id,
            signer,
            router: Router::new(id, RouterConfig::default()),
            transport: Transport::new(id, config, Box::new(SplitMix::new(seed))),
            alive: true,
            generation: 0,
            boot: seed,
            recent: HashMap::new(),
            next_message_id: 1,
            behaviour: None,
            present: true,
            messages_sent: 0,
            bytes_sent: 0,
            messages_received: 0,
            bytes_received: 0,
            peak_buffered_bytes: 0,
            wake_at_us: None,
        };
        node.register_app();
        node
    }

    fn register_app(&mut self) {
        if let Ok(name) = EngineName::new(APP_NAME) {
            let _ = self.router.register_engine(name, APP);
        }
    }

    /// A restart: the identity stays, everything in memory is new.
    pub fn restart(&mut self, seed: u64, config: TransportConfig) {
        self.router = Router::new(self.id, RouterConfig::default());
        self.register_app();
        self.transport = Transport::new(self.id, config, Box::new(SplitMix::new(seed)));
        self.recent.clear();
        self.wake_at_us = None;
        self.alive = true;
        self.generation += 1;
        self.boot = seed;
        // Ids keep rising across lives, as the real node's clock-based ids do.
        self.next_message_id += 1 << 32;
    }
}

/// The transport configuration of a simulated node.
pub fn transport_config(window: usize, buffers: crate::sim::scenario::BufferLimits) -> TransportConfig {
    TransportConfig {
        window,
        window_bytes: buffers.window_bytes,
        max_queue_bytes_per_peer: buffers.queue_bytes_per_peer,
        ..TransportConfig::default()
    }
}
