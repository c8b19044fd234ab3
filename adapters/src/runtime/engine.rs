//! An engine's handle on its node: its bounded mailbox, and the means to
//! send, publish, subscribe and create topics.

use std::time::Duration;

use bytes::Bytes;
use netmachine_domain::{
    Advert, Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, MessageId, ProtocolId, RoutingScope,
    Signed, TopicAdvert, TopicAdvertBody, TopicIdentity, TransportPrefs,
};
use netmachine_engines::ports::Signer;
use netmachine_engines::transport::OutboundError;
use netmachine_engines::RouteError;
use tokio::sync::mpsc;

use super::delivery::Delivery;
use super::error::{NodeError, SendError};
use super::mailbox::{Inbound, Mailbox};
use super::node::Node;
use crate::crypto::Ed25519Keys;

/// How a message is sent; the defaults suit most messages.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// The message is dropped (and the sender told) once this has passed.
    pub ttl: Option<Duration>,
    pub scope: RoutingScope,
    pub reply_to: Option<MessageId>,
    pub prefs: Option<TransportPrefs>,
    /// Sign the message with the node key on this engine's behalf, so its
    /// receivers can prove who sent it (non-repudiation).
    pub sign: bool,
}

/// One engine attached to a node. Dropping it detaches the engine.
#[derive(Debug)]
pub struct EngineHandle {
    node: Node,
    identity: EngineIdentity,
    inbox: mpsc::Receiver<Inbound>,
    /// Taken from the mailbox in one go, newest first. Taking several at
    /// once frees their room at once, so a connection reader blocked on a
    /// full mailbox wakes once per batch instead of once per message.
    taken: Vec<Inbound>,
    next_id: u64,
}

/// How many waiting messages an engine takes from its mailbox at once.
const TAKE_AT_ONCE: usize = 64;

impl EngineHandle {
    pub(crate) fn new(node: Node, identity: EngineIdentity, inbox: mpsc::Receiver<Inbound>) -> Self {
        // Ids start from the clock so that they stay unique across restarts
        // of the node (up to 65,536 messages per millisecond of uptime).
        let next_id = node.now().as_millis().wrapping_shl(16);
        Self { node, identity, inbox, taken: Vec::new(), next_id }
    }

    pub fn identity(&self) -> &EngineIdentity {
        &self.identity
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Waits for the next message or notice. Cancel safe.
    pub async fn recv(&mut self) -> Option<Inbound> {
        if let Some(next) = self.taken.pop() {
            return Some(next);
        }
        if self.inbox.recv_many(&mut self.taken, TAKE_AT_ONCE).await == 0 {
            return None;
        }
        self.taken.reverse();
        self.taken.pop()
    }

    /// Drops a message this engine took but has no room to keep: its
    /// sender is told, as it would be for a full mailbox, and the drop is
    /// counted (`mailbox_full`).
    pub fn give_up(&self, message: &netmachine_domain::EngineMessage) {
        let host = &self.node.inner;
        let ((), pending) = host.with_core(|core, now| core.mailbox_full(message, now));
        host.finish_later(pending);
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        self.taken.pop().or_else(|| self.inbox.try_recv().ok())
    }

    /// Sends `body` to `dst` with default options.
    pub async fn send(
        &mut self,
        dst: DestinationIdentity,
        protocol: ProtocolId,
        body: impl Into<Bytes>,
    ) -> Result<MessageId, SendError> {
        self.send_with(dst, protocol, body, SendOptions::default()).await
    }

    pub async fn send_with(
        &mut self,
        dst: DestinationIdentity,
        protocol: ProtocolId,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let message = self.build(dst, protocol, body, options)?;
        self.send_built(message).await
    }

    /// Sends `body` as [`send_with`](Self::send_with) does (waiting for
    /// room in a full queue or mailbox), then waits at most `wait` to hear
    /// what became of it: delivered here, acknowledged by the receiving
    /// node, or given up and why. A drop that the receiving node reports
    /// before its acknowledgement is reported as undeliverable. A topic, or
    /// a domain, counts as delivered here once this node has handed the
    /// message on: no receiver confirms it.
    pub async fn send_and_confirm(
        &mut self,
        dst: DestinationIdentity,
        protocol: ProtocolId,
        body: impl Into<Bytes>,
        options: SendOptions,
        wait: Duration,
    ) -> Result<(MessageId, Delivery), SendError> {
        let me = self.node.identity();
        let remote = match &dst {
            DestinationIdentity::Engine(engine) if engine.node != me => Some(engine.node),
            DestinationIdentity::Node(node) if *node != me => Some(*node),
            _ => None,
        };
        let message = self.build(dst, protocol, body, options)?;
        let Some(to) = remote else {
            let id = self.send_built(message).await?;
            return Ok((id, Delivery::Local));
        };
        // Watched before it is routed: the acknowledgement may come at once.
        let mut watch = self
            .node
            .inner
            .watches
            .watch(self.identity.name.clone(), message.id, to)
            .ok_or(SendError::TooManyWaiting { max: super::delivery::MAX_WAITING_SENDERS })?;
        self.node.inner.with_core(|core, _| core.report_acknowledgements(true)).1.discard();
        let id = self.send_built(message).await?;
        let outcome = match tokio::time::timeout(wait, &mut watch.outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Delivery::Undeliverable { reason: "the node stopped".into() },
            Err(_) => Delivery::Waiting,
        };
        Ok((id, outcome))
    }

    async fn send_built(&mut self, message: EngineMessage) -> Result<MessageId, SendError> {
        let id = message.id;
        let host = &self.node.inner;
        let remote = match &message.dst {
            DestinationIdentity::Engine(engine) => engine.node != host.identity,
            DestinationIdentity::Node(node) => *node != host.identity,
            _ => false,
        };
        if !remote {
            // Only a peer's queue can be full: a local send routes once,
            // and the message moves into the core without a copy.
            let (routed, pending) = host.with_core(|core, now| core.send(message, now));
            let delivered = if pending.is_empty() { Ok(()) } else { host.finish(pending).await };
            routed?;
            return delivered.map(|()| id);
        }
        if !host.has_transport() {
            let source = OutboundError::NoTransport;
            return Err(SendError::Route(RouteError::Outbound { dst: message.dst, source }));
        }
        // A full transport queue is backpressure, not failure: wait for
        // room and try again, until the message expires (or 30 s pass).
        let deadline = message.expiry.unwrap_or_else(|| self.node.now().saturating_add_millis(30_000));
        loop {
            let room = host.room.notified();
            let (routed, pending) = host.with_core(|core, now| core.send(message.clone(), now));
            // A future is awaited only if a local mailbox is full.
            let delivered = if pending.is_empty() { Ok(()) } else { host.finish(pending).await };
            match routed {
                Err(RouteError::Outbound { source: OutboundError::QueueFull { .. }, .. })
                    if self.node.now() < deadline =>
                {
                    let _ = tokio::time::timeout(Duration::from_millis(100), room).await;
                }
                Err(err) => return Err(err.into()),
                Ok(()) => return delivered.map(|()| id),
            }
        }
    }

    /// Replies to a message: to its source, marked as a reply to its id.
    pub async fn reply(&mut self, to: &EngineMessage, body: impl Into<Bytes>) -> Result<MessageId, SendError> {
        let options = SendOptions { reply_to: Some(to.id), ..SendOptions::default() };
        self.send_with(DestinationIdentity::Engine(to.src.clone()), to.protocol.clone(), body, options).await
    }

    /// Publishes to every subscriber of a topic this node may publish on.
    pub async fn publish(
        &mut self,
        topic: TopicIdentity,
        protocol: ProtocolId,
        body: impl Into<Bytes>,
    ) -> Result<MessageId, SendError> {
        self.send(DestinationIdentity::Topic(topic), protocol, body).await
    }

    fn build(
        &mut self,
        dst: DestinationIdentity,
        protocol: ProtocolId,
        body: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<EngineMessage, SendError> {
        let id = MessageId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let expiry = options
            .ttl
            .map(|ttl| self.node.now().saturating_add_millis(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
        let mut message = EngineMessage::new(self.identity.clone(), dst, id, protocol, Body::new(body)?);
        message.reply_to = options.reply_to;
        message.expiry = expiry;
        message.scope = options.scope;
        message.prefs = options.prefs;
        if options.sign {
            message.sig = Some(self.node.inner.keys.sign(&message.signing_bytes()));
        }
        Ok(message)
    }

    /// Creates a topic owned by this engine: makes a topic key, signs an
    /// advert naming this node as the publisher, and registers it with the
    /// Router and the identity store.
    pub async fn create_topic(&self, tags: &[&str]) -> Result<TopicIdentity, NodeError> {
        let keys = Ed25519Keys::generate()?;
        let topic = TopicIdentity::new(keys.public());
        let body = TopicAdvertBody::new(
            topic,
            vec![self.node.identity()],
            Vec::new(),
            tags.to_vec(),
            self.node.now().as_millis(),
            self.node.now(),
        )?;
        let sig = keys.sign(&TopicAdvert::signing_bytes_of(&body));
        let advert: TopicAdvert = Advert::from_parts(body, sig);
        let name = &self.identity.name;
        let (created, pending) = self.node.inner.with_core(|core, _| {
            core.router_mut().create_topic(name, advert.clone(), &crate::crypto::RingVerifier)?;
            core.created_topic(topic);
            Ok::<(), NodeError>(())
        });
        pending.discard();
        created?;
        self.node.inner.topic_keys.insert(topic, keys);
        self.node.offer_topic_advert(advert).await?;
        Ok(topic)
    }

    /// Deletes a topic this engine created.
    pub fn delete_topic(&self, topic: &TopicIdentity) -> Result<(), NodeError> {
        let (deleted, pending) =
            self.node.inner.with_core(|core, _| core.router_mut().delete_topic(&self.identity.name, topic));
        pending.discard();
        deleted?;
        self.node.inner.topic_keys.remove(topic);
        Ok(())
    }

    /// Subscribes to a topic whose advert this node knows.
    /// The first local subscriber of a topic published elsewhere makes
    /// this node ask the publisher nodes for its events.
    pub fn subscribe(&self, topic: &TopicIdentity) -> Result<(), NodeError> {
        let (subscribed, pending) =
            self.node.inner.with_core(|core, now| core.subscribe(&self.identity.name, topic, now));
        pending.discard();
        Ok(subscribed?)
    }

    /// Returns whether this engine was subscribed. The last local
    /// subscriber leaving tells the publisher nodes to stop.
    pub fn unsubscribe(&self, topic: &TopicIdentity) -> Result<bool, NodeError> {
        let (was, pending) = self.node.inner.with_core(|core, now| core.unsubscribe(&self.identity.name, topic, now));
        pending.discard();
        Ok(was?)
    }

    /// Asks for an `IdentityUpdated` notice after every accepted change to
    /// the identity store.
    pub async fn subscribe_identity_updates(&self) -> Result<bool, NodeError> {
        let name = self.identity.name.clone();
        let (subscribed, pending) = self.node.inner.with_core(|core, _| core.subscribe_identity_updates(name));
        pending.discard();
        Ok(subscribed)
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        let name = &self.identity.name;
        let ((), pending) = self.node.inner.with_core(|core, _| {
            core.unregister_engine(name);
            core.unsubscribe_identity_updates(name);
        });
        pending.discard();
    }
}

impl Node {
    /// Attaches an application engine under `name` and returns its handle:
    /// its bounded mailbox and the means to send, publish and subscribe.
    pub fn register_engine(&self, name: &str) -> Result<EngineHandle, NodeError> {
        let name = EngineName::new(name)?;
        let (tx, rx) = mpsc::channel(self.inner.mailbox_capacity);
        let mailbox = Mailbox::new(name.clone(), tx);
        let (registered, pending) =
            self.inner.with_core(|core, _| core.router_mut().register_engine(name.clone(), mailbox));
        pending.discard();
        registered?;
        Ok(EngineHandle::new(self.clone(), EngineIdentity::new(self.identity(), name), rx))
    }

    /// Registers an engine and runs `body` as its task on the tokio runtime.
    pub fn spawn_engine<F, Fut>(&self, name: &str, body: F) -> Result<tokio::task::JoinHandle<Fut::Output>, NodeError>
    where
        F: FnOnce(EngineHandle) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let handle = self.register_engine(name)?;
        Ok(tokio::spawn(body(handle)))
    }
}
