//! One simulated node: the node core every real node runs (the Router, the
//! Transport, the Identity Store and the connection protocol), with a
//! test signer, and a disk that outlives the process.

use std::collections::BTreeMap;

use netmachine_domain::{
    Advert, EngineName, IdentityRecord, NodeAdvert, NodeAdvertBody, NodeIdentity, RecordKey, Timestamp,
    TransportAddress, WeightedAddress,
};
use netmachine_engines::identity_store::{IdentityStore, IdentityStoreConfig};
use netmachine_engines::node_core::{CoreConfig, NodeCore};
use netmachine_engines::ports::Signer;
use netmachine_engines::random::SplitMix;
use netmachine_engines::registry::EngineSettings;
use netmachine_engines::testing::{TestSigner, TestVerifier};
use netmachine_engines::transport::{Transport, TransportConfig};
use netmachine_engines::{Router, RouterConfig};

use super::scenario::Behaviour;

/// The engine every simulated node hosts; its address in the Router.
pub const APP: u32 = 0;
pub const APP_NAME: &str = "app";

#[derive(Debug)]
pub struct SimNode {
    pub id: NodeIdentity,
    pub signer: TestSigner,
    pub core: NodeCore<u32>,
    /// What its identity store had written when it crashed: read back at
    /// its restart. While it runs, its disk holds exactly what its store
    /// holds (each change is written, then committed, at once), so the
    /// simulator keeps one copy and takes the disk's at the crash.
    pub disk: BTreeMap<RecordKey, IdentityRecord>,
    /// Its current advert, as the simulator's directory hands it out.
    pub advert: NodeAdvert,
    pub alive: bool,
    /// Changes at every restart: events of an earlier life are ignored.
    pub generation: u64,
    pub boot: u64,
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
    /// When a wake-up for the core's next timeout is queued (virtual µs).
    pub wake_at_us: Option<u64>,
    /// Repeats dropped by the cores of its earlier lives.
    pub repeats_dropped_before: u64,
    /// Its hosted engines' settings, the same in every life.
    pub settings: EngineSettings,
}

pub fn identity_of(index: u32) -> (NodeIdentity, TestSigner) {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&index.to_be_bytes());
    key[4] = 0x5a;
    let signer = TestSigner(netmachine_domain::ExternalIdentity::ed25519(key));
    (NodeIdentity::new(signer.0), signer)
}

/// The address a simulated node listens on.
pub fn address_of(index: u32) -> TransportAddress {
    let ip = std::net::Ipv4Addr::from((10u32 << 24) | (index & 0x00ff_ffff));
    TransportAddress::new(netmachine_domain::TransportProtocol::Quic, std::net::SocketAddr::from((ip, 4100)))
}

/// The node an address belongs to.
pub fn index_of(address: &TransportAddress) -> Option<u32> {
    match address.socket.ip() {
        std::net::IpAddr::V4(v4) => Some(u32::from(v4) & 0x00ff_ffff),
        std::net::IpAddr::V6(_) => None,
    }
}

/// A node's advert of `address`, at `version`.
fn signed_advert(id: NodeIdentity, signer: &TestSigner, address: TransportAddress, version: u64) -> NodeAdvert {
    let addresses = vec![WeightedAddress { address, weight: 1 }];
    let body = NodeAdvertBody::new(id, addresses, None, version, Timestamp(0))
        .unwrap_or_else(|_| unreachable!("one address and no name are valid"));
    let sig = signer.sign(&NodeAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

fn core_of(
    id: NodeIdentity,
    signer: TestSigner,
    seed: u64,
    config: TransportConfig,
    disk: &BTreeMap<RecordKey, IdentityRecord>,
    engines: EngineSettings,
) -> NodeCore<u32> {
    let mut router = Router::new(id, RouterConfig::default());
    if let Ok(name) = EngineName::new(APP_NAME) {
        let _ = router.register_engine(name, APP);
    }
    let repeat_window = 2 * config.window;
    let transport = Transport::new(id, config, Box::new(SplitMix::new(seed)));
    let identities = IdentityStore::open(id, IdentityStoreConfig::default(), disk.values().cloned().collect());
    let core_config =
        CoreConfig { boot: seed, repeat_window, seed, adverts: Default::default(), logs: Default::default(), engines };
    NodeCore::new(core_config, router, transport, identities, Box::new(signer), Box::new(TestVerifier), Timestamp(0))
}

impl SimNode {
    /// A node that advertises the address of node `advertised` (itself,
    /// unless it lies). Its core asks to persist its advert first.
    pub fn new(index: u32, seed: u64, config: TransportConfig, advertised: u32, settings: EngineSettings) -> Self {
        let (id, signer) = identity_of(index);
        let disk = BTreeMap::new();
        let advert = signed_advert(id, &signer, address_of(advertised), 1);
        let mut node = Self {
            id,
            signer,
            core: core_of(id, signer, seed, config, &disk, settings),
            disk,
            advert,
            alive: true,
            generation: 0,
            boot: seed,
            next_message_id: 1,
            behaviour: None,
            present: true,
            messages_sent: 0,
            bytes_sent: 0,
            messages_received: 0,
            bytes_received: 0,
            peak_buffered_bytes: 0,
            wake_at_us: None,
            repeats_dropped_before: 0,
            settings,
        };
        let _ = node.core.set_own_advert(node.advert.clone());
        node
    }

    /// A restart: the identity and the disk stay, the process is new. It
    /// signs a newer advert, as a real node does at every start.
    pub fn restart(&mut self, seed: u64, config: TransportConfig) {
        self.core = core_of(self.id, self.signer, seed, config, &self.disk, self.settings);
        self.disk.clear();
        self.wake_at_us = None;
        self.alive = true;
        self.generation += 1;
        self.boot = seed;
        // Ids keep rising across lives, as the real node's clock-based ids do.
        self.next_message_id += 1 << 32;
        self.readvertise(self.advertised_address());
    }

    /// Signs a newer advert of `address` and hands it to the core.
    pub fn readvertise(&mut self, address: TransportAddress) {
        self.advert = signed_advert(self.id, &self.signer, address, self.advert.version + 1);
        let _ = self.core.set_own_advert(self.advert.clone());
    }

    fn advertised_address(&self) -> TransportAddress {
        self.advert.addrs.first().map(|w| w.address).unwrap_or_else(|| address_of(0))
    }

    /// The process dies; what its store holds is what is on its disk. Its
    /// memory goes: an empty core stands in until it restarts.
    pub fn crash(&mut self, config: TransportConfig) {
        self.alive = false;
        self.disk = self.core.identities().records().map(|r| (r.key(), r.clone())).collect();
        self.repeats_dropped_before += self.core.counters().repeats_dropped;
        self.core = core_of(self.id, self.signer, self.boot, config, &BTreeMap::new(), self.settings);
    }

    pub fn repeats_dropped(&self) -> u64 {
        self.repeats_dropped_before + self.core.counters().repeats_dropped
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
