//! The core's side of each connection: the handshake, then frames through
//! the connection protocol, and what they mean for the other engines.

use std::net::IpAddr;

use netmachine_domain::{
    Ack, EngineName, Frame, IdentityRecord, MessageId, NodeIdentity, NodeMessage, NodePayload, RecordKey, Timestamp,
    TransportAddress,
};

use super::{AwaitingReply, CoreEffect, NodeCore, Phase, Receipt};
use crate::log_budget::LogKind;
use crate::metrics::{DropReason, HandshakeFailure, Side};
use crate::transport::connection::{expect_hello, Agreed, Connection, HandshakeOffer, Incoming};
use crate::transport::{CloseReason, ConnId, ConnectFailure, RecentIds};
use crate::InboundRejection;

impl<A: Clone> NodeCore<A> {
    /// What this node offers `peer` in a handshake.
    fn offer_to(&self, peer: &NodeIdentity) -> HandshakeOffer {
        HandshakeOffer {
            versions: self.transport.config().versions,
            boot: self.config.boot,
            own_advert_version: self.own_advert.as_ref().map_or(0, |a| a.version),
            held_advert_version_of_peer: self
                .identities
                .node(peer)
                .and_then(|r| r.advert.as_ref())
                .map_or(0, |a| a.version),
        }
    }

    /// A dial this core asked for ended: with a secured stream to the peer
    /// (`Ok`; the handshake starts) or without.
    pub fn dialled(&mut self, attempt: ConnId, outcome: Result<(), ConnectFailure>, now: Timestamp) {
        let Some(Phase::Dialling { peer, address }) = self.phases.remove(&attempt) else { return };
        match outcome {
            Ok(()) => {
                let offer = self.offer_to(&peer);
                let connection = Connection::new(peer);
                let awaiting = AwaitingReply { offer, address, connection };
                self.phases.insert(attempt, Phase::AwaitingReply(Box::new(awaiting)));
                self.effects.push_back(CoreEffect::Write { conn: attempt, frame: offer.hello() });
                self.transport.hello_sent(attempt, now);
            }
            Err(failure) => {
                self.count_dial_failure(&failure);
                self.transport.dial_failed(attempt, failure, Some(address), now)
            }
        }
        self.pump(now);
    }

    /// A peer opened a secured stream to this node (its identity proven by
    /// the channel); its hello is awaited. Returns the connection's number.
    pub fn accepted(&mut self, peer: NodeIdentity, ip: Option<IpAddr>) -> ConnId {
        let conn = self.transport.reserve_conn_id();
        self.phases.insert(conn, Phase::AwaitingHello { peer, ip });
        conn
    }

    /// Whether `conn` is open and its handshake not yet done.
    pub fn is_handshaking(&self, conn: ConnId) -> bool {
        matches!(self.phases.get(&conn), Some(Phase::AwaitingHello { .. } | Phase::AwaitingReply(_)))
    }

    /// Whether `conn`'s handshake is done and messages may flow on it.
    pub fn is_established(&self, conn: ConnId) -> bool {
        matches!(self.phases.get(&conn), Some(Phase::Established(_)))
    }

    /// A message the host was asked to write on `conn` could not be framed
    /// and never reached the wire: the peer will not count it, its room in
    /// the window is free again, and its sender hears why.
    pub fn unwritable(&mut self, conn: ConnId, message: NodeMessage, reason: &str, now: Timestamp) {
        let connection = match self.phases.get_mut(&conn) {
            Some(Phase::Established(connection)) => &mut **connection,
            Some(Phase::AwaitingReply(awaiting)) => &mut awaiting.connection,
            // Only a dial refused before its reply leaves a writer with
            // messages and no phase: the refusal put this one back in the
            // peer's queue, so the next connection carries or reports it.
            _ => return,
        };
        if connection.unwrote(&message) {
            self.transport.acked(conn, 1, crate::transport::message_cost(&message), now);
        }
        self.given_up(message, reason);
        self.pump(now);
    }

    /// A frame arrived on `conn`. `drained` says whether the host has no
    /// more frames of this connection at hand (an acknowledgement is then
    /// due for what was taken).
    pub fn frame(&mut self, conn: ConnId, frame: Frame, drained: bool, now: Timestamp) {
        match self.phases.remove(&conn) {
            Some(Phase::AwaitingHello { peer, ip }) => self.hello(conn, peer, ip, frame, now),
            Some(Phase::AwaitingReply(awaiting)) => self.reply(conn, *awaiting, frame, now),
            Some(Phase::Established(connection)) => self.established_frame(conn, connection, frame, drained, now),
            Some(dialling @ Phase::Dialling { .. }) => {
                self.phases.insert(conn, dialling);
            }
            None => {}
        }
        self.pump(now);
    }

    fn hello(&mut self, conn: ConnId, peer: NodeIdentity, ip: Option<IpAddr>, frame: Frame, now: Timestamp) {
        let hello = match expect_hello(frame) {
            Ok(hello) => hello,
            Err(reason) => {
                self.counters.violations += 1;
                self.metrics.count_handshake_failure(Side::Inbound, HandshakeFailure::BadHello);
                self.effects.push_back(CoreEffect::Close { conn, reason });
                return;
            }
        };
        let banned = self.identities.is_banned(&peer);
        let status = self.transport.admit_inbound_as(conn, peer, ip, hello.versions, hello.boot, banned, now);
        let offer = self.offer_to(&peer);
        self.effects.push_back(CoreEffect::Write { conn, frame: offer.reply(status) });
        if let Some(failure) = HandshakeFailure::of_refusal(status) {
            self.metrics.count_handshake_failure(Side::Inbound, failure);
            if self.logs.allow(LogKind::ConnectionRefused, Some(peer), now) {
                tracing::info!(%peer, ?status, "inbound connection refused");
            }
            self.effects
                .push_back(CoreEffect::Close { conn, reason: CloseReason::Lost(format!("refused: {status:?}")) });
            return;
        }
        self.established(conn, Connection::new(peer), offer.agreed_with(&hello));
        self.transport.inbound_established(conn, now);
    }

    fn reply(&mut self, conn: ConnId, awaiting: AwaitingReply, frame: Frame, now: Timestamp) {
        let AwaitingReply { offer, address, connection } = awaiting;
        match offer.accept_reply(frame) {
            Ok(agreed) => {
                self.established(conn, connection, agreed);
                // If the attempt was abandoned meanwhile, the Transport
                // closes the connection.
                self.transport.dial_succeeded(conn, agreed.peer_boot, now);
            }
            Err(failure) => {
                self.count_dial_failure(&failure);
                // What went behind the hello is not known to be taken: it
                // goes again, and the listener's repeat filter drops any
                // copy it had.
                self.transport.requeue_early(conn, connection.into_unacknowledged(), now);
                self.transport.dial_failed(conn, failure.clone(), Some(address), now);
                self.effects.push_back(CoreEffect::Close { conn, reason: CloseReason::Lost(failure.to_string()) });
            }
        }
    }

    /// The handshake is done: messages may flow. The peer is given this
    /// node's advert if it holds an older one, and the adverts of the
    /// topics created here.
    /// `connection` holds what the dialler sent behind its hello (the
    /// listener passes a new one).
    fn established(&mut self, conn: ConnId, connection: Connection, agreed: Agreed) {
        let peer = connection.peer();
        self.phases.insert(conn, Phase::Established(Box::new(connection)));
        let window = self.config.repeat_window;
        self.recent.entry(peer).or_insert_with(|| Box::new(RecentIds::new(window)));
        if agreed.send_own_advert {
            if let Some(advert) = self.own_advert.clone() {
                self.effects.push_back(CoreEffect::Write { conn, frame: Frame::NodeAdvert(advert) });
            }
        }
        // Only what the store holds: an advert still on its way to the
        // disk is spread to every peer once it is there. Sent earlier, it
        // could come back from the peer before this node's own copy
        // commits, and that copy would be refused as stale.
        for topic in self.local_topics.clone() {
            if let Some(IdentityRecord::Topic(advert)) = self.identities.lookup(&RecordKey::Topic(topic)) {
                let frame = Frame::TopicAdvert(advert.clone());
                self.effects.push_back(CoreEffect::Write { conn, frame });
            }
        }
    }

    fn established_frame(
        &mut self,
        conn: ConnId,
        mut connection: Box<Connection>,
        frame: Frame,
        drained: bool,
        now: Timestamp,
    ) {
        let peer = connection.peer();
        let window = self.config.repeat_window;
        let recent = self.recent.entry(peer).or_insert_with(|| Box::new(RecentIds::new(window)));
        connection.keep_acknowledged(self.report_acks);
        let incoming = connection.receive(frame, recent);
        let violation = match incoming {
            Err(reason) => Some(reason),
            Ok(Incoming::Message(message)) => {
                let receipt = Receipt { conn, number: connection.taken() };
                self.inbound(peer, message, now, receipt).err()
            }
            Ok(Incoming::Repeat) => {
                self.counters.repeats_dropped += 1;
                self.metrics.count_drop(DropReason::Repeat);
                None
            }
            Ok(Incoming::Acknowledged { count, bytes, messages }) => {
                if count > 0 {
                    self.transport.acked(conn, count as u64, bytes, now);
                    if self.report_acks {
                        self.report_acked(peer, &messages);
                    }
                }
                None
            }
            Ok(Incoming::Advert(update)) => self.advert_from(peer, update, now),
        };
        if let Some(reason) = violation {
            self.counters.violations += 1;
            self.phases.insert(conn, Phase::Established(connection));
            self.effects.push_back(CoreEffect::Close { conn, reason });
            return;
        }
        let ack_wanted = connection.ack_wanted(drained);
        // Back in its place before the Transport's effects are carried
        // out: they may write on this connection.
        self.phases.insert(conn, Phase::Established(connection));
        if ack_wanted {
            // Written once every other effect is out: what this frame made
            // the node send back (a drop notice) goes first, and a delivery
            // the host holds is not acknowledged.
            self.ack_due(conn);
            // The peer is in use, whichever way the traffic flows.
            self.transport.activity(peer, now);
        }
    }

    fn ack_due(&mut self, conn: ConnId) {
        if !self.acks_due.contains(&conn) {
            self.acks_due.push(conn);
        }
    }

    /// The acknowledgement `conn` owes its peer, if any; it counts as
    /// written.
    pub(super) fn ack(&mut self, conn: ConnId) -> Option<CoreEffect<A>> {
        let Some(Phase::Established(connection)) = self.phases.get_mut(&conn) else { return None };
        let received = connection.ack_owed()?;
        connection.ack_written(received);
        Some(CoreEffect::Write { conn, frame: Frame::Ack(Ack { received }) })
    }

    /// A delivery its host cannot make yet (the engine's mailbox is full):
    /// the peer is told of nothing from this message on until it is
    /// released, so the peer's window bounds what the host holds.
    pub fn hold(&mut self, receipt: Receipt) {
        if let Some(Phase::Established(connection)) = self.phases.get_mut(&receipt.conn) {
            connection.hold(receipt.number);
        }
    }

    /// A delivery the host held reached its engine.
    pub fn release(&mut self, receipt: Receipt) {
        if let Some(Phase::Established(connection)) = self.phases.get_mut(&receipt.conn) {
            if connection.release(receipt.number) {
                self.ack_due(receipt.conn);
            }
        }
    }

    fn report_acked(&mut self, by: NodeIdentity, messages: &[NodeMessage]) {
        let ours: Vec<(EngineName, MessageId)> = messages
            .iter()
            .filter_map(|m| match &m.payload {
                NodePayload::Engine(inner) if inner.src.node == self.node => Some((inner.src.name.clone(), inner.id)),
                _ => None,
            })
            .collect();
        if !ours.is_empty() {
            self.effects.push_back(CoreEffect::Acknowledged { by, messages: ours });
        }
    }

    /// A rejection that means the peer broke the rules comes back as the
    /// reason to close its connection.
    fn inbound(
        &mut self,
        peer: NodeIdentity,
        message: NodeMessage,
        now: Timestamp,
        receipt: Receipt,
    ) -> Result<(), CloseReason> {
        match self.route_from(peer, message, now, Some(receipt)) {
            Err(rejection) if rejection.disconnects_peer() => Err(CloseReason::Violation(rejection.to_string())),
            _ => Ok(()),
        }
    }

    /// Routes a message that came from `peer` over an authenticated channel
    /// (a host with a channel of its own, outside the connections the core
    /// runs, hands them here). The source of a message dropped here hears
    /// why.
    pub fn receive_from(
        &mut self,
        peer: NodeIdentity,
        message: NodeMessage,
        now: Timestamp,
    ) -> Result<(), InboundRejection> {
        let outcome = self.route_from(peer, message, now, None);
        self.pump(now);
        outcome
    }

    fn route_from(
        &mut self,
        peer: NodeIdentity,
        message: NodeMessage,
        now: Timestamp,
        receipt: Option<Receipt>,
    ) -> Result<(), InboundRejection> {
        let origin = match &message.payload {
            NodePayload::Engine(inner) => Some((inner.src.clone(), inner.id, inner.protocol.clone())),
            NodePayload::Relay(_) => None,
        };
        let class = self.class_of(&peer);
        self.metrics.count_in(class);
        let rejection = match self.router.route_inbound(peer, message, now, self.verifier.as_ref()) {
            Ok(routed) => {
                self.counters.inbound_delivered += 1;
                if let Err(err) = self.dispatch(routed, now, receipt) {
                    tracing::debug!(%peer, %err, "inbound message not passed on");
                }
                return Ok(());
            }
            Err(rejection) => rejection,
        };
        self.counters.inbound_rejected += 1;
        self.metrics.count_drop(DropReason::from(&rejection));
        if self.logs.allow(LogKind::MessageDropped, Some(peer), now) {
            tracing::info!(%peer, %rejection, "inbound message dropped");
        }
        if let Some((source, id, protocol)) = origin {
            if let Some(notice) = self.router.undeliverable_notice(&source, id, &protocol, &rejection, now) {
                self.send_control(notice, now);
            }
        }
        Err(rejection)
    }

    /// A message from a peer that its host could not hand to its engine:
    /// the engine's mailbox, and what the host may hold beside it, were
    /// full. Its source hears why.
    pub fn mailbox_full(&mut self, message: &netmachine_domain::EngineMessage, now: Timestamp) {
        self.counters.undeliverable += 1;
        self.metrics.count_drop(DropReason::MailboxFull);
        let reason = crate::router::DropReason::MailboxFull;
        if let Some(notice) = self.router.drop_notice(&message.src, message.id, &message.protocol, reason, now) {
            self.send_control(notice, now);
        }
        self.pump(now);
    }

    /// A connection this node dialled closed before its handshake was done.
    fn setup_lost(&mut self, conn: ConnId, address: TransportAddress, reason: &CloseReason, now: Timestamp) {
        if *reason != CloseReason::Shutdown {
            self.metrics.count_handshake_failure(Side::Outbound, HandshakeFailure::Unreachable);
        }
        self.transport.dial_failed(conn, ConnectFailure::Unreachable(reason.to_string()), Some(address), now);
    }

    /// A connection ended (closed by either end, or lost). What it had
    /// sent and not had acknowledged goes back to the Transport.
    pub fn closed(&mut self, conn: ConnId, reason: CloseReason, now: Timestamp) {
        match self.phases.remove(&conn) {
            Some(Phase::Established(connection)) => {
                self.transport.closed(conn, reason, connection.into_unacknowledged(), now);
            }
            Some(Phase::AwaitingReply(awaiting)) => {
                // Sent behind the hello, unanswered: whether the listener
                // took any is unknown, so all go again (its repeat filter
                // drops what it had).
                self.transport.requeue_early(conn, awaiting.connection.into_unacknowledged(), now);
                self.setup_lost(conn, awaiting.address, &reason, now)
            }
            Some(Phase::Dialling { address, .. }) => self.setup_lost(conn, address, &reason, now),
            // Not admitted yet, or already closed: the Transport holds nothing.
            Some(Phase::AwaitingHello { .. }) | None => self.transport.closed(conn, reason, Vec::new(), now),
        }
        self.pump(now);
    }
}
