//! The Router: routes every message by its destination.
//!
//! It is a synchronous state machine over a table of local engines (each
//! with its local address `A`: a mailbox in the runtime, anything in tests),
//! local topics, domain memberships and banned nodes. Routing a message only
//! reads that table, so a runtime may route from many tasks at once; every
//! change to the table goes through `&mut self`.

mod certified;
mod error;
mod subscriptions;
mod topics;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use netmachine_domain::{
    Body, DestinationIdentity, DomainIdentity, EngineIdentity, EngineMessage, EngineName, MessageId, NodeIdentity,
    NodeMessage, NodePayload, ProtocolId, RoutingScope, Signed, Timestamp, TopicAdvert, TopicIdentity,
};

pub use error::{InboundRejection, RegistryError, RouteError, TopicError};
pub use subscriptions::{
    decode_notice, undeliverable_notice_of, DropReason, SubscriptionOp, SUBSCRIPTION_PROTOCOL, SUBSCRIPTION_VERSION,
    UNDELIVERABLE_PROTOCOL,
};

use crate::engine::Input;
use crate::ports::{verify_if_signed, verify_signed, Signer, Verifier};
use topics::TopicTable;

/// The engine name that receives messages addressed to a node as a whole.
pub const NODE_ENGINE_NAME: &str = "router";

/// Tunables of a Router. Every table it keeps is bounded.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Sign every engine message that leaves this node. When false (the
    /// default), a direct message is signed only if its sender asked for it
    /// (non-repudiation): the mutually authenticated channel vouches for
    /// the rest. Pub/sub events are always signed.
    pub sign_remote: bool,
    pub max_remote_subscribers_per_topic: usize,
    pub max_engines: usize,
    pub max_topics: usize,
    pub max_subscribers_per_topic: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            sign_remote: false,
            max_engines: 4096,
            max_topics: 65_536,
            max_subscribers_per_topic: 4096,
            max_remote_subscribers_per_topic: 4096,
        }
    }
}

/// Where a routed message goes next.
#[derive(Debug)]
pub enum Routed<A> {
    /// To one local engine's address.
    Local { to: A, message: EngineMessage },
    /// To every local subscriber of a topic, in subscription order; for a
    /// topic this node publishes, also to each remote subscriber node
    /// (`remote`, one message per node, for the transport).
    Topic { to: Vec<A>, message: EngineMessage, remote: Vec<NodeMessage> },
    /// A peer asks to receive (or stop receiving) a topic this node
    /// publishes; apply it with [`Router::apply_remote_subscription`].
    Subscription { peer: NodeIdentity, topic: TopicIdentity, op: SubscriptionOp },
    /// To another node: hand it to the transport for `message.dst`.
    Remote(NodeMessage),
    /// To the engine the node core hosts for the message's protocol.
    Protocol(Input),
}

/// The kind of place a destination resolves to on this node.
enum Target {
    LocalEngine(EngineName),
    NodeEngine,
    Topic(TopicIdentity),
    Remote(NodeIdentity),
    Unsupported(&'static str),
}

#[derive(Debug)]
pub struct Router<A> {
    node: NodeIdentity,
    config: RouterConfig,
    engines: HashMap<EngineName, A>,
    topics: TopicTable,
    domain_members: HashMap<DomainIdentity, HashSet<NodeIdentity>>,
    /// Peers whose certificates the overlays checked.
    certified: certified::CertifiedMembers,
    banned: HashSet<NodeIdentity>,
    remote_subscribers: HashMap<TopicIdentity, BTreeSet<NodeIdentity>>,
    /// Protocols whose messages to this node go to an engine the node core
    /// hosts.
    served: HashSet<String>,
    control_ids: AtomicU64,
}

impl<A: Clone> Router<A> {
    pub fn new(node: NodeIdentity, config: RouterConfig) -> Self {
        let topics = TopicTable::new(config.max_topics, config.max_subscribers_per_topic);
        Self {
            node,
            config,
            engines: HashMap::new(),
            topics,
            domain_members: HashMap::new(),
            certified: certified::CertifiedMembers::default(),
            banned: HashSet::new(),
            remote_subscribers: HashMap::new(),
            served: HashSet::new(),
            control_ids: AtomicU64::new(0),
        }
    }

    pub fn node(&self) -> NodeIdentity {
        self.node
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    // ---- the engine table -------------------------------------------------

    pub fn register_engine(&mut self, name: EngineName, address: A) -> Result<(), RegistryError> {
        if self.engines.contains_key(&name) {
            return Err(RegistryError::NameTaken(name));
        }
        if self.engines.len() >= self.config.max_engines {
            return Err(RegistryError::Full(self.config.max_engines));
        }
        self.engines.insert(name, address);
        Ok(())
    }

    /// Removes an engine and its subscriptions; topics it created stay.
    pub fn unregister_engine(&mut self, name: &EngineName) -> Option<A> {
        self.topics.forget_engine(name);
        self.engines.remove(name)
    }

    pub fn engine_address(&self, name: &EngineName) -> Option<&A> {
        self.engines.get(name)
    }

    pub fn engine_names(&self) -> impl Iterator<Item = &EngineName> {
        self.engines.keys()
    }

    // ---- topics -----------------------------------------------------------

    /// Creates a topic owned by a local engine. The advert must carry a
    /// valid signature of the topic key.
    pub fn create_topic(
        &mut self,
        creator: &EngineName,
        advert: TopicAdvert,
        verifier: &dyn Verifier,
    ) -> Result<(), TopicError> {
        if !self.engines.contains_key(creator) {
            return Err(TopicError::UnknownEngine(creator.clone()));
        }
        if verify_signed(verifier, &advert).is_err() {
            return Err(TopicError::BadAdvert { topic: advert.topic });
        }
        self.topics.create(creator.clone(), advert)
    }

    /// Takes note of a topic advert that the identity store has verified.
    pub fn learn_topic(&mut self, advert: TopicAdvert) -> Result<(), TopicError> {
        self.topics.learn(advert)
    }

    /// Whether a local engine created or subscribes to `topic`.
    pub fn topic_in_use(&self, topic: &TopicIdentity) -> bool {
        self.topics.get(topic).is_some_and(|t| t.creator.is_some() || !t.subscribers.is_empty())
    }

    /// Forgets a topic known only from its advert (the identity store gave
    /// the advert up), unless a local engine subscribes to it.
    pub fn forget_learned_topic(&mut self, topic: &TopicIdentity) {
        self.topics.forget_learned(topic);
    }

    /// Forgets a domain's members (the identity store gave its advert up).
    pub fn forget_domain(&mut self, domain: &DomainIdentity) {
        self.domain_members.remove(domain);
    }

    /// Deletes a topic; only the local engine that created it may.
    pub fn delete_topic(&mut self, by: &EngineName, topic: &TopicIdentity) -> Result<(), TopicError> {
        self.topics.delete(by, topic).map(|_| ())
    }

    pub fn subscribe(&mut self, engine: &EngineName, topic: &TopicIdentity) -> Result<(), TopicError> {
        if !self.engines.contains_key(engine) {
            return Err(TopicError::UnknownEngine(engine.clone()));
        }
        self.topics.subscribe(engine.clone(), topic)
    }

    /// Returns whether the engine was subscribed.
    pub fn unsubscribe(&mut self, engine: &EngineName, topic: &TopicIdentity) -> Result<bool, TopicError> {
        self.topics.unsubscribe(engine, topic)
    }

    pub fn topic_advert(&self, topic: &TopicIdentity) -> Option<&TopicAdvert> {
        self.topics.get(topic).map(|t| &t.advert)
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Each known topic with its local subscriber count.
    pub fn topic_summaries(&self) -> Vec<(TopicIdentity, usize)> {
        self.topics.iter().map(|(id, t)| (*id, t.subscribers.len())).collect()
    }

    // ---- scope and trust --------------------------------------------------

    pub fn set_domain_members(&mut self, domain: DomainIdentity, members: impl IntoIterator<Item = NodeIdentity>) {
        self.domain_members.insert(domain, members.into_iter().collect());
    }

    /// Notes that `peer` holds a valid certificate for `domain` until
    /// `expires`: domain-scoped messages from it are taken until then.
    pub fn certify(&mut self, domain: DomainIdentity, peer: NodeIdentity, expires: Timestamp) {
        self.certified.certify(domain, peer, expires);
    }

    /// `peer` no longer counts as a member of `domain` (it left the
    /// overlay's active view, or was revoked).
    pub fn uncertify(&mut self, domain: DomainIdentity, peer: NodeIdentity) {
        self.certified.uncertify(domain, peer);
    }

    pub fn set_banned(&mut self, node: NodeIdentity, banned: bool) {
        if banned {
            self.banned.insert(node);
        } else {
            self.banned.remove(&node);
        }
    }

    pub fn is_banned(&self, node: &NodeIdentity) -> bool {
        self.banned.contains(node)
    }

    /// Whether a message of this scope may go to `node`: for a domain, a
    /// member its advert names, or a peer whose certificate for it was
    /// checked and has not expired by `now`.
    fn scope_allows_remote(&self, scope: &RoutingScope, node: &NodeIdentity, now: Timestamp) -> bool {
        match scope {
            RoutingScope::Local => false,
            RoutingScope::Any => true,
            RoutingScope::Domain(domain) => {
                self.domain_members.get(domain).is_some_and(|m| m.contains(node))
                    || self.certified.holds(domain, node, now)
            }
        }
    }

    /// Routes messages addressed to this node under `protocol` to the
    /// engine that serves it ([`Routed::Protocol`]).
    pub fn serve_protocol(&mut self, protocol: &str) -> Result<(), RegistryError> {
        let reserved = [SUBSCRIPTION_PROTOCOL, UNDELIVERABLE_PROTOCOL].contains(&protocol);
        if reserved || !self.served.insert(protocol.to_string()) {
            return Err(RegistryError::ProtocolTaken(protocol.to_string()));
        }
        Ok(())
    }

    // ---- routing ----------------------------------------------------------

    /// Routes a message sent by a local engine.
    pub fn route_local(
        &self,
        mut message: EngineMessage,
        now: Timestamp,
        signer: &dyn Signer,
    ) -> Result<Routed<A>, RouteError> {
        let own_router = message.src.name.as_str() == NODE_ENGINE_NAME;
        if message.src.node != self.node || !(own_router || self.engines.contains_key(&message.src.name)) {
            return Err(RouteError::UnknownSource { src: message.src.to_string() });
        }
        if let Err(rule) = message.check_not_expired(now) {
            return Err(RouteError::Expired { dst: message.dst.clone(), rule });
        }
        let remote = match self.target_of(&message.dst) {
            Target::LocalEngine(name) => return self.to_local_engine(&name, message),
            Target::NodeEngine if self.served.contains(message.protocol.name.as_str()) => {
                return Ok(Routed::Protocol(Input::Command { from: message.src.name.clone(), message }))
            }
            Target::NodeEngine => return self.to_node_engine(message),
            Target::Topic(topic) => return self.publish(topic, message, now, signer),
            Target::Remote(node) => node,
            Target::Unsupported(what) => return Err(RouteError::Unsupported { dst: message.dst, what }),
        };
        if !self.scope_allows_remote(&message.scope, &remote, now) {
            return Err(RouteError::OutOfScope { dst: message.dst, scope: message.scope });
        }
        if self.banned.contains(&remote) {
            return Err(RouteError::Banned { dst: message.dst });
        }
        if self.config.sign_remote && message.sig.is_none() {
            message.sig = Some(signer.sign(&message.signing_bytes()));
        }
        Ok(Routed::Remote(NodeMessage::carrying(self.node, remote, message)))
    }

    /// Routes a message that arrived from `peer` over a mutually
    /// authenticated connection: the channel proves the peer's identity, so
    /// a peer may speak only for itself and its own engines.
    pub fn route_inbound(
        &self,
        peer: NodeIdentity,
        message: NodeMessage,
        now: Timestamp,
        verifier: &dyn Verifier,
    ) -> Result<Routed<A>, InboundRejection> {
        if self.banned.contains(&peer) {
            return Err(InboundRejection::Banned { peer });
        }
        if message.dst != self.node {
            return Err(InboundRejection::NotForThisNode { dst: message.dst });
        }
        if message.src != peer {
            return Err(InboundRejection::Impersonation { peer, claimed: message.src.to_string() });
        }
        verify_if_signed(verifier, &message).map_err(|bad| InboundRejection::from((peer, bad)))?;
        let engine_message = match message.payload {
            NodePayload::Engine(inner) => inner,
            NodePayload::Relay(_) => return Err(InboundRejection::Unsupported { peer, what: "relay messages" }),
        };
        if engine_message.src.node != peer {
            return Err(InboundRejection::Impersonation { peer, claimed: engine_message.src.to_string() });
        }
        verify_if_signed(verifier, &engine_message).map_err(|bad| InboundRejection::from((peer, bad)))?;
        if let Err(rule) = engine_message.check_not_expired(now) {
            return Err(InboundRejection::Expired { peer, rule });
        }
        match &engine_message.scope {
            RoutingScope::Local => return Err(InboundRejection::OutOfScope { peer }),
            // A domain-scoped message only from a peer whose certificate
            // for the domain was checked, or a member its advert names.
            RoutingScope::Domain(domain)
                if !self.certified.holds(domain, &peer, now)
                    && !self.domain_members.get(domain).is_some_and(|m| m.contains(&peer)) =>
            {
                return Err(InboundRejection::OutOfScope { peer })
            }
            _ => {}
        }
        let no_route = |dst: &DestinationIdentity| InboundRejection::NoRoute { peer, dst: dst.clone() };
        match self.target_of(&engine_message.dst) {
            Target::LocalEngine(name) => self.to_local_engine(&name, engine_message).map_err(|e| match e {
                RouteError::NoRoute { dst } => no_route(&dst),
                _ => no_route(&DestinationIdentity::Node(self.node)),
            }),
            Target::NodeEngine if engine_message.protocol.name.as_str() == SUBSCRIPTION_PROTOCOL => {
                match subscriptions::decode_request(engine_message.body.as_bytes()) {
                    Some((op, topic)) => Ok(Routed::Subscription { peer, topic, op }),
                    None => Err(InboundRejection::Unsupported { peer, what: "a malformed subscription request" }),
                }
            }
            Target::NodeEngine if self.served.contains(engine_message.protocol.name.as_str()) => {
                Ok(Routed::Protocol(Input::FromPeer { peer, message: engine_message }))
            }
            Target::NodeEngine => {
                let dst = engine_message.dst.clone();
                self.to_node_engine(engine_message).map_err(|_| no_route(&dst))
            }
            // Events travel signed by their publisher, so that they can be
            // checked by whoever they are forwarded to.
            Target::Topic(_) if engine_message.sig.is_none() => {
                Err(InboundRejection::Unsupported { peer, what: "an unsigned pub/sub event" })
            }
            Target::Topic(topic) => self.to_local_subscribers(topic, peer, engine_message).map_err(|e| match e {
                RouteError::NotAPublisher { topic } => InboundRejection::NotAPublisher { peer, topic },
                _ => no_route(&DestinationIdentity::Topic(topic)),
            }),
            // Forwarding to a third node is relaying, which comes later.
            Target::Remote(_) => Err(InboundRejection::Unsupported { peer, what: "forwarding to another node" }),
            Target::Unsupported(what) => Err(InboundRejection::Unsupported { peer, what }),
        }
    }

    fn target_of(&self, dst: &DestinationIdentity) -> Target {
        match dst {
            DestinationIdentity::Engine(engine) if engine.node == self.node => Target::LocalEngine(engine.name.clone()),
            DestinationIdentity::Node(node) if *node == self.node => Target::NodeEngine,
            DestinationIdentity::Topic(topic) => Target::Topic(*topic),
            DestinationIdentity::Engine(engine) => Target::Remote(engine.node),
            DestinationIdentity::Node(node) => Target::Remote(*node),
            DestinationIdentity::Relay(_) => Target::Unsupported("relay routing"),
            DestinationIdentity::Domain(_) => Target::Unsupported("domain anycast"),
        }
    }

    fn to_local_engine(&self, name: &EngineName, message: EngineMessage) -> Result<Routed<A>, RouteError> {
        match self.engines.get(name) {
            Some(address) => Ok(Routed::Local { to: address.clone(), message }),
            None => Err(RouteError::NoRoute { dst: message.dst }),
        }
    }

    fn to_node_engine(&self, message: EngineMessage) -> Result<Routed<A>, RouteError> {
        let name = EngineName::new(NODE_ENGINE_NAME).map_err(|_| RouteError::NoRoute { dst: message.dst.clone() })?;
        self.to_local_engine(&name, message)
    }

    /// The local subscribers' addresses, once the topic is known here and
    /// `publisher` is named in its advert.
    fn subscriber_addresses(
        &self,
        topic: TopicIdentity,
        publisher: NodeIdentity,
        dst: &DestinationIdentity,
    ) -> Result<Vec<A>, RouteError> {
        let Some(entry) = self.topics.get(&topic) else {
            return Err(RouteError::NoRoute { dst: dst.clone() });
        };
        if !entry.advert.allows_publisher(&publisher) {
            return Err(RouteError::NotAPublisher { topic });
        }
        Ok(entry.subscribers.iter().filter_map(|name| self.engines.get(name).cloned()).collect())
    }

    fn to_local_subscribers(
        &self,
        topic: TopicIdentity,
        publisher: NodeIdentity,
        message: EngineMessage,
    ) -> Result<Routed<A>, RouteError> {
        let to = self.subscriber_addresses(topic, publisher, &message.dst)?;
        Ok(Routed::Topic { to, message, remote: Vec::new() })
    }

    /// A local engine publishes: local subscribers, then each remote
    /// subscriber node, with one signature made for all of them.
    fn publish(
        &self,
        topic: TopicIdentity,
        mut message: EngineMessage,
        now: Timestamp,
        signer: &dyn Signer,
    ) -> Result<Routed<A>, RouteError> {
        let to = self.subscriber_addresses(topic, self.node, &message.dst)?;
        let remote_nodes: Vec<NodeIdentity> = self
            .remote_subscribers
            .get(&topic)
            .map(|nodes| {
                nodes
                    .iter()
                    .copied()
                    .filter(|node| !self.banned.contains(node) && self.scope_allows_remote(&message.scope, node, now))
                    .collect()
            })
            .unwrap_or_default();
        if !remote_nodes.is_empty() && message.sig.is_none() {
            message.sig = Some(signer.sign(&message.signing_bytes()));
        }
        let remote =
            remote_nodes.into_iter().map(|node| NodeMessage::carrying(self.node, node, message.clone())).collect();
        Ok(Routed::Topic { to, message, remote })
    }

    // ---- remote subscriptions ---------------------------------------------

    /// Local engines subscribed to `topic`.
    pub fn local_subscriber_count(&self, topic: &TopicIdentity) -> usize {
        self.topics.get(topic).map_or(0, |t| t.subscribers.len())
    }

    /// Local engines subscribed to `topic`, in subscription order.
    pub fn local_subscribers(&self, topic: &TopicIdentity) -> &[EngineName] {
        self.topics.get(topic).map_or(&[], |t| t.subscribers.as_slice())
    }

    /// Remote nodes subscribed to `topic` here.
    pub fn remote_subscribers(&self, topic: &TopicIdentity) -> Vec<NodeIdentity> {
        self.remote_subscribers.get(topic).map(|n| n.iter().copied().collect()).unwrap_or_default()
    }

    /// Records a peer's request for a topic this node publishes.
    pub fn apply_remote_subscription(
        &mut self,
        peer: NodeIdentity,
        topic: TopicIdentity,
        op: SubscriptionOp,
    ) -> Result<(), TopicError> {
        let entry = self.topics.get(&topic).ok_or(TopicError::Unknown(topic))?;
        if !entry.advert.allows_publisher(&self.node) {
            return Err(TopicError::NotCreator { topic, creator: "another node".into() });
        }
        match op {
            SubscriptionOp::Subscribe => {
                let max = self.config.max_remote_subscribers_per_topic;
                let nodes = self.remote_subscribers.entry(topic).or_default();
                if !nodes.contains(&peer) && nodes.len() >= max {
                    return Err(TopicError::TooManySubscribers { topic, max });
                }
                nodes.insert(peer);
            }
            SubscriptionOp::Unsubscribe => {
                if let Some(nodes) = self.remote_subscribers.get_mut(&topic) {
                    nodes.remove(&peer);
                }
            }
        }
        Ok(())
    }

    /// The requests this node sends to a topic's publisher nodes when its
    /// first local engine subscribes (or its last one leaves).
    pub fn subscription_requests(
        &self,
        topic: &TopicIdentity,
        op: SubscriptionOp,
        now: Timestamp,
    ) -> Vec<EngineMessage> {
        let Some(entry) = self.topics.get(topic) else { return Vec::new() };
        entry
            .advert
            .publishers
            .iter()
            .filter(|publisher| **publisher != self.node)
            .map(|publisher| self.control_message(*publisher, subscriptions::encode_request(op, topic), now))
            .collect()
    }

    /// The notice to send back to the source engine of a message that this
    /// node had to drop, so its sender hears of it. None for the node's own
    /// control messages (no notice about a notice) and for other reasons.
    pub fn undeliverable_notice(
        &self,
        source: &EngineIdentity,
        id: MessageId,
        protocol: &ProtocolId,
        rejection: &InboundRejection,
        now: Timestamp,
    ) -> Option<EngineMessage> {
        let reason = match rejection {
            InboundRejection::Expired { .. } => DropReason::Expired,
            InboundRejection::NoRoute { .. } => DropReason::NoRoute,
            _ => return None,
        };
        self.drop_notice(source, id, protocol, reason, now)
    }

    /// The notice to send back to the source engine of a message this node
    /// dropped for `reason`; None for control messages and local sources.
    pub fn drop_notice(
        &self,
        source: &EngineIdentity,
        id: MessageId,
        protocol: &ProtocolId,
        reason: DropReason,
        now: Timestamp,
    ) -> Option<EngineMessage> {
        // The node's own engines (control messages, hosted protocols) hear
        // of no drop: nobody waits on them, and a notice could answer a
        // notice.
        let own_engines = source.name.as_str() == NODE_ENGINE_NAME;
        let control = [SUBSCRIPTION_PROTOCOL, UNDELIVERABLE_PROTOCOL].contains(&protocol.name.as_str());
        if own_engines || control || source.node == self.node {
            return None;
        }
        let protocol = ProtocolId::new(UNDELIVERABLE_PROTOCOL, 1).ok()?;
        let body = Body::new(subscriptions::encode_notice(reason, id.0)).ok()?;
        Some(self.node_message(DestinationIdentity::Engine(source.clone()), protocol, body, now))
    }

    /// Subscriptions to renew with `peer` (after it connects, it may have
    /// restarted and forgotten them).
    pub fn resubscriptions_for(&self, peer: &NodeIdentity, now: Timestamp) -> Vec<EngineMessage> {
        let mut topics: Vec<&TopicIdentity> = self
            .topics
            .iter()
            .filter(|(_, t)| !t.subscribers.is_empty() && t.advert.allows_publisher(peer) && *peer != self.node)
            .map(|(topic, _)| topic)
            .collect();
        // In topic order, so that the same state always asks the same way.
        topics.sort_unstable();
        topics
            .into_iter()
            .map(|topic| {
                self.control_message(*peer, subscriptions::encode_request(SubscriptionOp::Subscribe, topic), now)
            })
            .collect()
    }

    fn control_message(&self, to: NodeIdentity, body: Vec<u8>, now: Timestamp) -> EngineMessage {
        let protocol = ProtocolId::new(SUBSCRIPTION_PROTOCOL, SUBSCRIPTION_VERSION)
            .unwrap_or_else(|_| unreachable!("a valid constant protocol"));
        let body = Body::new(body).unwrap_or_else(|_| unreachable!("34 bytes fit"));
        self.node_message(DestinationIdentity::Node(to), protocol, body, now)
    }

    /// A message the node sends as a whole (its control messages, and what
    /// the engines the node core hosts send), valid for a minute.
    pub fn node_message(
        &self,
        dst: DestinationIdentity,
        protocol: ProtocolId,
        body: Body,
        now: Timestamp,
    ) -> EngineMessage {
        // Ids rise with the clock so that a restarted node never repeats one
        // its peers still remember.
        let n = self.control_ids.fetch_add(1, Ordering::Relaxed);
        let id = now.as_millis().wrapping_shl(16).wrapping_add(n & 0xffff);
        let src = EngineIdentity::new(
            self.node,
            EngineName::new(NODE_ENGINE_NAME).unwrap_or_else(|_| unreachable!("a valid constant name")),
        );
        let mut message = EngineMessage::new(src, dst, MessageId(id), protocol, body);
        message.expiry = Some(now.saturating_add_millis(60_000));
        message
    }
}

#[cfg(test)]
mod tests;
