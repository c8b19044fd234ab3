//! The protocol engines the core hosts (listed in [`crate::registry`]):
//! each takes the messages to this node under its protocol's name, the
//! commands local engines send it, and the peers' comings and goings; the
//! core builds and carries out what it asks for.

use std::collections::{HashMap, HashSet};

use netmachine_domain::{DestinationIdentity, EngineIdentity, NodeIdentity, Permanence, ProtocolId, Timestamp};

use super::NodeCore;
use crate::engine::{Effect, Input, Notice, ProtocolEngine};
use crate::transport::CloseReason;
use crate::RegistryError;

#[derive(Default)]
pub(super) struct Hosted {
    engines: Vec<Box<dyn ProtocolEngine>>,
    by_protocol: HashMap<String, usize>,
    /// Notices not yet handed to every engine.
    notices: Vec<Notice>,
    /// Whether an engine's next timeout moved sooner since the host last
    /// asked.
    sooner: bool,
    /// Peers an engine made permanent (and may make ephemeral again).
    kept: HashSet<NodeIdentity>,
}

impl Hosted {
    /// Calls `f` on engine `index`, noting whether its next timeout moved
    /// sooner (a host sleeping on the old one must wake).
    fn call(&mut self, index: usize, f: impl FnOnce(&mut dyn ProtocolEngine)) {
        let Some(engine) = self.engines.get_mut(index) else { return };
        let before = engine.poll_timeout();
        f(engine.as_mut());
        let after = engine.poll_timeout();
        if after.is_some_and(|after| before.is_none_or(|before| after < before)) {
            self.sooner = true;
        }
    }

    /// Whether an engine keeps the connection to `peer` open.
    pub(super) fn keeps(&self, peer: &NodeIdentity) -> bool {
        self.kept.contains(peer)
    }

    pub(super) fn take_sooner(&mut self) -> bool {
        std::mem::take(&mut self.sooner)
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.engines.iter().filter_map(|engine| engine.poll_timeout()).min()
    }

    /// Hands `input` to every engine.
    pub(super) fn tell_all(&mut self, input: &Input, now: Timestamp) {
        for index in 0..self.engines.len() {
            self.call(index, |engine| engine.handle(input.clone(), now));
        }
    }

    pub(super) fn notify(&mut self, notice: Notice) {
        if !self.engines.is_empty() {
            self.notices.push(notice);
        }
    }

    /// Hands the waiting notices to every engine, and takes what the
    /// engines ask for, with the protocol of each.
    fn take_effects(&mut self, now: Timestamp) -> Vec<(ProtocolId, Effect)> {
        for notice in std::mem::take(&mut self.notices) {
            for index in 0..self.engines.len() {
                self.call(index, |engine| engine.handle(Input::Notice(notice), now));
            }
        }
        let mut taken = Vec::new();
        for engine in &mut self.engines {
            while let Some(effect) = engine.poll_effect() {
                taken.push((engine.protocol().clone(), effect));
            }
        }
        taken
    }
}

impl<A: Clone> NodeCore<A> {
    /// Hosts an engine beside those of [`crate::registry`]: messages to
    /// this node under its protocol go to it from now on, and it hears of
    /// the peers connected already.
    pub fn add_engine(&mut self, engine: Box<dyn ProtocolEngine>, now: Timestamp) -> Result<(), RegistryError> {
        let name = engine.protocol().name.as_str().to_string();
        self.router.serve_protocol(&name)?;
        let index = self.hosted.engines.len();
        self.hosted.by_protocol.insert(name, index);
        if engine.poll_timeout().is_some() {
            self.hosted.sooner = true;
        }
        self.hosted.engines.push(engine);
        let mut peers: Vec<_> = self
            .phases
            .values()
            .filter_map(|phase| match phase {
                super::Phase::Established(connection) => Some(connection.peer()),
                _ => None,
            })
            .collect();
        // In order, so that the same state always tells the same way.
        peers.sort_unstable();
        peers.dedup();
        let own = self.own_advert.clone();
        self.hosted.call(index, |engine| {
            if let Some(own) = own {
                engine.handle(Input::OwnAdvert(own), now);
            }
            for peer in peers {
                engine.handle(Input::Notice(Notice::PeerConnected(peer)), now);
            }
        });
        self.pump(now);
        Ok(())
    }

    /// Hands a routed input to the engine serving its protocol.
    pub(super) fn hand_to_engine(&mut self, input: Input, now: Timestamp) {
        let protocol = match &input {
            Input::FromPeer { message, .. } | Input::Command { message, .. } => message.protocol.name.as_str(),
            Input::FromEngine { .. } | Input::Notice(_) | Input::OwnAdvert(_) => return,
        };
        let Some(&index) = self.hosted.by_protocol.get(protocol) else {
            tracing::debug!(protocol, "no engine serves this protocol");
            return;
        };
        // From the core to one of its engines, as a delivery to a local one.
        self.metrics.count_out(crate::metrics::PeerClass::Local);
        self.metrics.count_engine(protocol, false);
        self.hosted.call(index, |engine| engine.handle(input, now));
    }

    /// Carries out what the hosted engines asked for. Returns whether
    /// there was anything, which may have given the Transport work.
    pub(super) fn pump_engines(&mut self, now: Timestamp) -> bool {
        let effects = self.hosted.take_effects(now);
        let any = !effects.is_empty();
        for (protocol, effect) in effects {
            if matches!(effect, Effect::SendToPeer { .. } | Effect::Deliver { .. }) {
                self.metrics.count_in(crate::metrics::PeerClass::Local);
                self.metrics.count_engine(protocol.name.as_str(), true);
            }
            match effect {
                // Its own node is no peer: a message to it would come back
                // to the engine as a command, and could loop.
                Effect::SendToPeer { peer, .. } if peer == self.node => {
                    tracing::warn!(%protocol, "an engine's message to its own node dropped");
                }
                Effect::SendToPeer { peer, body } => {
                    let message =
                        self.router.node_message(DestinationIdentity::Node(peer), protocol.clone(), body, now);
                    // A peer with no address known is unreachable at once, as
                    // a failed dial makes it: the engines hear it now.
                    if let Err(err) = self.route_control(message, now) {
                        let no_address = matches!(
                            err,
                            crate::RouteError::Outbound {
                                source: crate::transport::OutboundError::NoAddress { .. },
                                ..
                            }
                        );
                        if no_address {
                            self.hosted.notify(Notice::PeerUnreachable(peer));
                        }
                        tracing::debug!(%peer, %protocol, %err, "an engine's message to a peer not sent");
                    }
                }
                Effect::Deliver { to, reply_to, body } => {
                    let dst = DestinationIdentity::Engine(EngineIdentity::new(self.node, to));
                    let mut message = self.router.node_message(dst, protocol, body, now);
                    message.reply_to = reply_to;
                    self.send_control(message, now);
                }
                Effect::Disconnect { peer, why } => self.transport.disconnect(peer, CloseReason::Dropped(why)),
                Effect::Tell { protocol: to, body } => {
                    let Some(&index) = self.hosted.by_protocol.get(to) else {
                        tracing::debug!(from = %protocol, to, "no engine serves the protocol told");
                        continue;
                    };
                    let input = Input::FromEngine { protocol: protocol.name.as_str().to_string(), body };
                    self.hosted.call(index, |engine| engine.handle(input, now));
                }
                Effect::LearnAdvert(advert) => {
                    let (peer, addresses) = (advert.id, advert.addrs.to_vec());
                    match self.offer_advert(crate::identity_store::AdvertUpdate::Node(advert), now) {
                        // Checked and newer: the engine's next message to
                        // the peer must find its addresses now, not once the
                        // record is on disk.
                        Ok(()) => self.transport.set_addresses(peer, addresses, now),
                        Err(err) => tracing::trace!(%protocol, %err, "an advert an engine passed on was not kept"),
                    }
                }
                Effect::Keep { peer, permanent } => self.keep_for_engines(peer, permanent, now),
                Effect::Announce(notice) => self.hosted.notify(notice),
                Effect::Certified { domain, peer, expires: Some(expires) } => {
                    self.router.certify(domain, peer, expires)
                }
                Effect::Certified { domain, peer, expires: None } => self.router.uncertify(domain, peer),
            }
        }
        any
    }

    /// An engine wants the connection to `peer` kept open, or no longer.
    /// It can only add to what the operator set: a peer permanent by the
    /// operator's choice stays so when the engine lets it go.
    fn keep_for_engines(&mut self, peer: NodeIdentity, permanent: bool, now: Timestamp) {
        // In the Transport only, never on disk: after a restart the overlays
        // choose their neighbours afresh.
        let operator = self.identities.node(&peer).is_some_and(|r| r.permanence == Permanence::Permanent);
        if operator {
            return;
        }
        let changed = if permanent { self.hosted.kept.insert(peer) } else { self.hosted.kept.remove(&peer) };
        if changed {
            self.transport.set_permanent(peer, permanent, now);
        }
    }

    /// A hosted engine, to read its state.
    pub fn engine<T: 'static>(&self) -> Option<&T> {
        self.hosted.engines.iter().find_map(|engine| engine.as_any().downcast_ref::<T>())
    }

    pub(super) fn engines_timeout(&self) -> Option<Timestamp> {
        self.hosted.poll_timeout()
    }

    /// Fires the hosted engines' timers due at `now`.
    pub(super) fn engines_handle_timeout(&mut self, now: Timestamp) {
        for index in 0..self.hosted.engines.len() {
            let due = self.hosted.engines[index].poll_timeout().is_some_and(|at| at <= now);
            if due {
                self.hosted.call(index, |engine| engine.handle_timeout(now));
            }
        }
    }
}
