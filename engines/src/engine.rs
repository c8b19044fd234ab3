//! What every engine shares: time comes in with each call, and an engine
//! that must act later schedules a timer instead of being polled on a fixed
//! tick. Its host asks [`Timed::poll_timeout`] when to come back, sleeps
//! until then (or until other input arrives), and calls
//! [`Timed::handle_timeout`]; the engine fires only the timers that are due.
//!
//! [`Timers`] is the schedule itself: at most one deadline per key, so an
//! engine that re-arms a timer for the same peer replaces it rather than
//! piling up entries, and the schedule never holds more entries than the
//! engine holds keys.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use std::sync::Arc;

use netmachine_domain::{
    Body, DomainIdentity, EngineMessage, EngineName, MessageId, NodeAdvert, NodeIdentity, ProtocolId, Timestamp,
};

use crate::ports::{Signer, Verifier};

/// An engine with timers.
pub trait Timed {
    /// The earliest moment the engine needs [`Timed::handle_timeout`], if any.
    fn poll_timeout(&self) -> Option<Timestamp>;
    /// Fires every timer due at `now`.
    fn handle_timeout(&mut self, now: Timestamp);
}

/// An engine the node core hosts: it serves one protocol, and takes the
/// messages addressed to this node (not to a named engine) under that
/// protocol's name. It never performs an effect itself: the core polls
/// [`ProtocolEngine::poll_effect`] after every input and timer, builds the
/// messages and carries them out. Engines are listed in
/// [`crate::registry`].
pub trait ProtocolEngine: Timed + Send {
    /// The protocol it serves; the core picks it by the name, and hands
    /// it every version of that name (the engine decides which it speaks).
    fn protocol(&self) -> &ProtocolId;
    fn handle(&mut self, input: Input, now: Timestamp);
    fn poll_effect(&mut self) -> Option<Effect>;
    /// The engine itself, so that its host (a status display, the
    /// simulator) can read its state.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What reaches a [`ProtocolEngine`] (a timer that fired comes through
/// [`Timed::handle_timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message from a peer, whose node identity its connection proved.
    FromPeer {
        peer: NodeIdentity,
        message: EngineMessage,
    },
    /// A message from a local engine of this node.
    Command {
        from: EngineName,
        message: EngineMessage,
    },
    Notice(Notice),
    /// What another protocol engine of this node told this one.
    FromEngine {
        protocol: String,
        body: Body,
    },
    /// The node's own advert, at every change: what peers dial it by.
    OwnAdvert(NodeAdvert),
}

/// What happened elsewhere in the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    PeerConnected(NodeIdentity),
    PeerGone(NodeIdentity),
    /// A connection to the peer could not be opened.
    PeerUnreachable(NodeIdentity),
    /// A domain's overlay took the peer as an active neighbour.
    PeerAddedToView {
        domain: DomainIdentity,
        peer: NodeIdentity,
    },
    PeerRemovedFromView {
        domain: DomainIdentity,
        peer: NodeIdentity,
    },
}

/// What a [`ProtocolEngine`] asks its node core to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `body` to the engine serving the same protocol on `peer`.
    SendToPeer { peer: NodeIdentity, body: Body },
    /// Deliver `body` to a local engine, as its answer to `reply_to`.
    Deliver { to: EngineName, reply_to: Option<MessageId>, body: Body },
    /// Close the connection to `peer`, for the reason given.
    Disconnect { peer: NodeIdentity, why: String },
    /// Hand `body` to this node's engine serving `protocol`.
    Tell { protocol: &'static str, body: Body },
    /// A peer's advert learnt from another peer: the identity store checks
    /// it and keeps it if it is newer, so the node can dial the peer.
    LearnAdvert(NodeAdvert),
    /// Keep the connection to `peer` open (`true`) or let it close when
    /// idle (`false`).
    Keep { peer: NodeIdentity, permanent: bool },
    /// Tell every engine of the node (the one announcing too).
    Announce(Notice),
    /// `peer` showed a valid certificate for `domain`, until `expires`:
    /// the Router takes domain-scoped messages from it until then (`None`:
    /// no longer).
    Certified { domain: DomainIdentity, peer: NodeIdentity, expires: Option<Timestamp> },
}

/// What an engine is built with.
#[derive(Clone)]
pub struct EngineSetup {
    pub node: NodeIdentity,
    /// The node's seed for its hosted engines: a seeded node replays.
    pub seed: u64,
    /// The node's key.
    pub signer: Arc<dyn Signer>,
    pub verifier: Arc<dyn Verifier>,
}

impl std::fmt::Debug for EngineSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSetup").field("node", &self.node).field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl EngineSetup {
    /// A setup with the test signature scheme, for driving engines alone.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests(node: NodeIdentity, seed: u64) -> Self {
        let signer = crate::testing::TestSigner(*node.key());
        Self { node, seed, signer: Arc::new(signer), verifier: Arc::new(crate::testing::TestVerifier) }
    }

    /// The seed of the engine serving `protocol`: each engine draws from a
    /// stream of its own.
    pub fn seed_for(&self, protocol: &str) -> u64 {
        // FNV-1a over the name, folded into the node's seed.
        let name =
            protocol.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        self.seed ^ name
    }
}

/// Deadlines by key, earliest first.
#[derive(Debug, Clone)]
pub struct Timers<K> {
    by_deadline: BTreeSet<(Timestamp, K)>,
    deadline_of: HashMap<K, Timestamp>,
    /// Whether a deadline was set sooner than every other since
    /// [`Timers::take_sooner`] was last asked: a host that sleeps until the
    /// next deadline must then wake to look again.
    sooner: bool,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Self { by_deadline: BTreeSet::new(), deadline_of: HashMap::new(), sooner: false }
    }
}

impl<K: Ord + Hash + Clone> Timers<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s deadline to `at`, replacing any earlier setting.
    pub fn set(&mut self, key: K, at: Timestamp) {
        // Sooner than what a host sleeping on the next deadline waits for.
        if self.by_deadline.first().is_none_or(|(first, _)| at < *first) {
            self.sooner = true;
        }
        if let Some(old) = self.deadline_of.insert(key.clone(), at) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((at, key));
    }

    /// Whether the next deadline moved sooner since this was last asked.
    pub fn take_sooner(&mut self) -> bool {
        std::mem::take(&mut self.sooner)
    }

    /// Sets `key`'s deadline to `at` unless it is already due sooner.
    pub fn set_earliest(&mut self, key: K, at: Timestamp) {
        match self.deadline_of.get(&key) {
            Some(held) if *held <= at => {}
            _ => self.set(key, at),
        }
    }

    pub fn cancel(&mut self, key: &K) {
        if let Some(at) = self.deadline_of.remove(key) {
            self.by_deadline.remove(&(at, key.clone()));
        }
    }

    pub fn deadline(&self, key: &K) -> Option<Timestamp> {
        self.deadline_of.get(key).copied()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns one timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<K> {
        let (at, _) = self.by_deadline.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_deadline.pop_first()?;
        self.deadline_of.remove(&key);
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.deadline_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadline_of.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timers_fire_in_deadline_order_and_only_when_due() {
        let mut timers = Timers::new();
        assert!(timers.is_empty());
        timers.set("b", Timestamp(20));
        assert!(!timers.is_empty());
        timers.set("a", Timestamp(10));
        timers.set("c", Timestamp(30));
        assert_eq!(timers.next_deadline(), Some(Timestamp(10)));
        assert_eq!(timers.pop_due(Timestamp(9)), None);
        assert_eq!(timers.pop_due(Timestamp(25)), Some("a"));
        assert_eq!(timers.pop_due(Timestamp(25)), Some("b"));
        assert_eq!(timers.pop_due(Timestamp(25)), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn setting_a_key_again_replaces_its_deadline() {
        let mut timers = Timers::new();
        timers.set("a", Timestamp(10));
        assert!(timers.take_sooner(), "the first deadline is the soonest");
        assert!(!timers.take_sooner(), "told once");
        timers.set("a", Timestamp(50));
        assert!(!timers.take_sooner(), "later than the one held");
        timers.set("b", Timestamp(50));
        assert!(!timers.take_sooner(), "no sooner than the next deadline");
        timers.set("b", Timestamp(20));
        assert!(timers.take_sooner(), "sooner than every other");
        timers.cancel(&"b");
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.pop_due(Timestamp(20)), None, "the earlier deadline is gone");
        timers.set_earliest("a", Timestamp(60));
        assert_eq!(timers.deadline(&"a"), Some(Timestamp(50)), "a later deadline does not replace a sooner one");
        timers.set_earliest("a", Timestamp(5));
        assert_eq!(timers.deadline(&"a"), Some(Timestamp(5)));
        timers.cancel(&"a");
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }

    proptest! {
        /// Whatever the sequence of settings, one deadline per key is held
        /// and every key fires once, at its last deadline, in order.
        #[test]
        fn every_key_fires_once_at_its_last_deadline(ops in proptest::collection::vec((0u8..8, 0u64..100, any::<bool>()), 0..64)) {
            let mut timers = Timers::new();
            let mut model: HashMap<u8, Timestamp> = HashMap::new();
            for (key, at, earliest) in ops {
                let at = Timestamp(at);
                if earliest {
                    timers.set_earliest(key, at);
                    let held = model.entry(key).or_insert(at);
                    *held = (*held).min(at);
                } else {
                    timers.set(key, at);
                    model.insert(key, at);
                }
            }
            prop_assert_eq!(timers.len(), model.len());
            let mut fired = Vec::new();
            while let Some(key) = timers.pop_due(Timestamp(u64::MAX)) {
                fired.push((model[&key], key));
            }
            let mut expected: Vec<(Timestamp, u8)> = model.into_iter().map(|(k, at)| (at, k)).collect();
            expected.sort();
            prop_assert_eq!(fired, expected);
        }
    }
}
