//! Ping: asks a peer's ping engine to answer, and tells the local engine
//! that asked how long the round trip took. It is the smallest engine the
//! node core hosts, and a liveness check an operator or an engine can run
//! against any peer.
//!
//! A local engine sends [`request`]`(peer)` to its own node under
//! [`PING_PROTOCOL`]; the answer comes back as an [`Outcome`] replying to
//! that message. What a peer can make this engine spend: one pong per ping
//! it sends, and no state. What local engines can: at most
//! [`PingConfig::max_pending`] pings waiting, each for at most
//! [`PingConfig::timeout_ms`].

mod messages;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use netmachine_domain::{EngineName, MessageId, NodeIdentity, ProtocolId, Timestamp};

use crate::engine::{Effect, EngineSetup, Input, ProtocolEngine, Timed, Timers};
use crate::ports::Randomness;
use crate::random::SplitMix;

pub use messages::{request, Outcome, Wire};

pub const PING_PROTOCOL: &str = "netmachine/ping";
pub const PING_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy)]
pub struct PingConfig {
    /// How long a ping waits for its pong.
    pub timeout_ms: u64,
    /// Pings waiting at once, from every local engine together.
    pub max_pending: usize,
}

impl Default for PingConfig {
    fn default() -> Self {
        Self { timeout_ms: 10_000, max_pending: 256 }
    }
}

/// A ping sent and not yet answered.
#[derive(Debug)]
struct Pending {
    peer: NodeIdentity,
    asker: EngineName,
    request: MessageId,
    sent: Timestamp,
}

#[derive(Debug)]
pub struct Ping {
    node: NodeIdentity,
    protocol: ProtocolId,
    config: PingConfig,
    nonces: SplitMix,
    pending: HashMap<u64, Pending>,
    timers: Timers<u64>,
    effects: VecDeque<Effect>,
}

impl Ping {
    pub fn new(setup: &EngineSetup, config: PingConfig) -> Self {
        Self {
            node: setup.node,
            protocol: ProtocolId::new(PING_PROTOCOL, PING_VERSION)
                .unwrap_or_else(|_| unreachable!("a valid constant protocol")),
            config,
            nonces: SplitMix::new(setup.seed_for(PING_PROTOCOL)),
            pending: HashMap::new(),
            timers: Timers::new(),
            effects: VecDeque::new(),
        }
    }

    /// Pings waiting for their pong.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn command(&mut self, asker: EngineName, request: MessageId, body: &netmachine_domain::Body, now: Timestamp) {
        let Some(peer) = messages::decode_request(body) else {
            tracing::debug!(engine = %asker, "malformed ping request ignored");
            return;
        };
        let refuse = |reason: &str| Outcome::Refused { peer, reason: reason.into() };
        let refusal = if peer == self.node {
            Some(refuse("a node does not ping itself"))
        } else if self.pending.len() >= self.config.max_pending {
            Some(refuse("too many pings are waiting; try again when some are answered"))
        } else {
            None
        };
        if let Some(outcome) = refusal {
            self.answer(asker, request, &outcome);
            return;
        }
        // A nonce no waiting ping holds; the generator repeats a value only
        // after 2^64 draws, so one draw is enough in practice.
        let mut nonce = self.nonces.next_u64();
        while self.pending.contains_key(&nonce) {
            nonce = self.nonces.next_u64();
        }
        self.pending.insert(nonce, Pending { peer, asker, request, sent: now });
        self.timers.set(nonce, now.saturating_add_millis(self.config.timeout_ms));
        self.effects.push_back(Effect::SendToPeer { peer, body: Wire::Ping(nonce).encode() });
    }

    fn peer_said(&mut self, peer: NodeIdentity, body: &netmachine_domain::Body, now: Timestamp) {
        match Wire::decode(body) {
            Some(Wire::Ping(nonce)) => {
                self.effects.push_back(Effect::SendToPeer { peer, body: Wire::Pong(nonce).encode() })
            }
            // Only the peer that was pinged can answer its ping.
            Some(Wire::Pong(nonce)) if self.pending.get(&nonce).is_some_and(|p| p.peer == peer) => {
                self.timers.cancel(&nonce);
                if let Some(done) = self.pending.remove(&nonce) {
                    let rtt_ms = now.0.saturating_sub(done.sent.0);
                    self.answer(done.asker, done.request, &Outcome::Answered { peer, rtt_ms });
                }
            }
            Some(Wire::Pong(_)) => tracing::debug!(%peer, "pong for no ping of ours ignored"),
            None => tracing::debug!(%peer, "malformed ping message ignored"),
        }
    }

    fn answer(&mut self, to: EngineName, request: MessageId, outcome: &Outcome) {
        self.effects.push_back(Effect::Deliver { to, reply_to: Some(request), body: outcome.encode() });
    }
}

impl ProtocolEngine for Ping {
    fn protocol(&self) -> &ProtocolId {
        &self.protocol
    }

    fn handle(&mut self, input: Input, now: Timestamp) {
        match input {
            Input::Command { from, message } => self.command(from, message.id, &message.body, now),
            Input::FromPeer { message, .. } if message.protocol.version != PING_VERSION => {
                tracing::debug!(
                    version = message.protocol.version,
                    "ping of a version this node does not speak ignored"
                )
            }
            Input::FromPeer { peer, message } => self.peer_said(peer, &message.body, now),
            // A lost connection may come back before the timeout, and the
            // transport sends the ping again on it.
            Input::Notice(_) | Input::OwnAdvert(_) => {}
            Input::FromEngine { protocol, .. } => tracing::debug!(%protocol, "ping takes nothing from other engines"),
        }
    }

    fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Timed for Ping {
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(nonce) = self.timers.pop_due(now) {
            if let Some(lost) = self.pending.remove(&nonce) {
                self.answer(lost.asker, lost.request, &Outcome::TimedOut { peer: lost.peer });
            }
        }
    }
}
