//! The connection protocol, one connection at a time: the handshake, then
//! messages and their acknowledgements. Frames come in; what to deliver,
//! what was acknowledged and which acknowledgement to write go out. The
//! host moves the frames (sockets in the node, simulated links in the
//! simulator) and never interprets them itself.
//!
//! Acknowledgements are cumulative: `Ack { received: n }` says the peer
//! has taken the first `n` messages of this connection. A message is
//! taken once it has been delivered or dropped (as a repeat, or refused by
//! the Router), so an acknowledgement never covers a message the node
//! might still lose. What was sent and not acknowledged when the
//! connection ends goes back to the Transport engine to be sent again;
//! the peer's repeat filter drops the copies it already had.

use std::collections::{BTreeMap, VecDeque};

use netmachine_domain::{
    Ack, Frame, HandshakeStatus, Hello, HelloReply, NodeIdentity, NodeMessage, NodePayload, VersionRange,
};

use super::{message_cost, CloseReason, ConnectFailure, RecentIds};
use crate::identity_store::AdvertUpdate;

/// Acknowledge at least every this many messages, even while more arrive.
pub const ACK_EVERY: u64 = 64;

/// What this node says about itself in a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeOffer {
    pub versions: VersionRange,
    /// Changes at every start, so the peer can tell a restart from a
    /// second connection.
    pub boot: u64,
    pub own_advert_version: u64,
    /// The version of the peer's advert this node holds (0 for none).
    pub held_advert_version_of_peer: u64,
}

/// What both ends agreed, and what the peer needs from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub peer_boot: u64,
    /// The peer holds an older advert of this node (or none): send it.
    pub send_own_advert: bool,
}

impl HandshakeOffer {
    /// The dialler's first frame.
    pub fn hello(&self) -> Frame {
        Frame::Hello(Hello {
            versions: self.versions,
            boot: self.boot,
            own_advert_version: self.own_advert_version,
            held_advert_version_of_peer: self.held_advert_version_of_peer,
        })
    }

    /// The listener's answer, once it has decided whether to admit.
    pub fn reply(&self, status: HandshakeStatus) -> Frame {
        Frame::HelloReply(HelloReply {
            status,
            versions: self.versions,
            boot: self.boot,
            own_advert_version: self.own_advert_version,
            held_advert_version_of_peer: self.held_advert_version_of_peer,
        })
    }

    /// The dialler reads the listener's answer.
    pub fn accept_reply(&self, frame: Frame) -> Result<Agreed, ConnectFailure> {
        let reply = match frame {
            Frame::HelloReply(reply) => reply,
            other => {
                return Err(ConnectFailure::Unreachable(format!("expected a hello reply, got {:?}", other.kind())));
            }
        };
        if reply.status != HandshakeStatus::Ok {
            return Err(ConnectFailure::Refused(reply.status));
        }
        if self.versions.best_common(reply.versions).is_none() {
            return Err(ConnectFailure::Refused(HandshakeStatus::Incompatible));
        }
        Ok(Agreed {
            peer_boot: reply.boot,
            send_own_advert: reply.held_advert_version_of_peer < self.own_advert_version,
        })
    }

    /// What the listener owes a dialler whose hello it admitted.
    pub fn agreed_with(&self, hello: &Hello) -> Agreed {
        Agreed { peer_boot: hello.boot, send_own_advert: hello.held_advert_version_of_peer < self.own_advert_version }
    }
}

/// The listener reads the dialler's first frame: anything but a hello is
/// a violation.
pub fn expect_hello(frame: Frame) -> Result<Hello, CloseReason> {
    match frame {
        Frame::Hello(hello) => Ok(hello),
        other => Err(CloseReason::Violation(format!("the first frame was a {:?}, not a hello", other.kind()))),
    }
}

/// What a frame from the peer amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message to route. Call [`Connection::taken`] once it has been
    /// delivered or dropped.
    Message(NodeMessage),
    /// A message this node already took from the peer (over this
    /// connection or an earlier one): dropped, and counted as taken.
    Repeat,
    /// The peer took `count` more messages, which together weigh `bytes`
    /// (as [`message_cost`] counts); `messages` holds them, oldest first,
    /// while [`Connection::keep_acknowledged`] is on.
    Acknowledged { count: usize, bytes: usize, messages: Vec<NodeMessage> },
    /// An advert to offer to the identity store.
    Advert(AdvertUpdate),
}

/// One established connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    peer: NodeIdentity,
    /// Sent and not yet acknowledged, oldest first.
    unacked: VecDeque<NodeMessage>,
    sent: u64,
    acked: u64,
    /// Messages taken from the peer.
    taken: u64,
    /// The count this node last acknowledged to the peer.
    acked_to_peer: u64,
    /// Messages taken since an acknowledgement was last asked for.
    since_ack_wanted: u64,
    /// Messages taken but held by the host (their engine's mailbox was
    /// full), by number, with how many deliveries of each wait (a topic
    /// event may wait for several engines). The peer is told of nothing
    /// from the first of them on, so its window bounds what is held.
    held: BTreeMap<u64, u32>,
    /// Whether acknowledged messages are handed back, or dropped where
    /// they lie (nobody waits for them).
    keep_acknowledged: bool,
}

impl Connection {
    pub fn new(peer: NodeIdentity) -> Self {
        Self {
            peer,
            unacked: VecDeque::new(),
            sent: 0,
            acked: 0,
            taken: 0,
            acked_to_peer: 0,
            since_ack_wanted: 0,
            held: BTreeMap::new(),
            keep_acknowledged: true,
        }
    }

    /// Whether [`Incoming::Acknowledged`] hands back the messages (on by
    /// default).
    pub fn keep_acknowledged(&mut self, on: bool) {
        self.keep_acknowledged = on;
    }

    pub fn peer(&self) -> NodeIdentity {
        self.peer
    }

    /// A message was written to the peer: it is kept until acknowledged.
    pub fn wrote(&mut self, message: NodeMessage) {
        self.unacked.push_back(message);
        self.sent += 1;
    }

    /// A message handed to [`Connection::wrote`] never reached the wire
    /// (its host could not frame it): the peer will not count it.
    pub fn unwrote(&mut self, message: &NodeMessage) -> bool {
        match self.unacked.iter().rposition(|m| m == message) {
            Some(at) => {
                self.unacked.remove(at);
                self.sent -= 1;
                true
            }
            None => false,
        }
    }

    /// Messages written and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.unacked.len()
    }

    /// Reads one frame from the peer. An error is a protocol violation:
    /// the connection must close with it.
    pub fn receive(&mut self, frame: Frame, recent: &mut RecentIds) -> Result<Incoming, CloseReason> {
        match frame {
            Frame::Node(message) => {
                if let NodePayload::Engine(inner) = &message.payload {
                    if !recent.first_time(inner) {
                        self.taken();
                        return Ok(Incoming::Repeat);
                    }
                }
                Ok(Incoming::Message(message))
            }
            Frame::Ack(Ack { received }) => self.acknowledged(received),
            Frame::NodeAdvert(advert) if advert.id != self.peer => {
                Err(CloseReason::Violation("sent an advert of another node".into()))
            }
            Frame::NodeAdvert(advert) => Ok(Incoming::Advert(AdvertUpdate::Node(advert))),
            Frame::TopicAdvert(advert) => Ok(Incoming::Advert(AdvertUpdate::Topic(advert))),
            Frame::DomainAdvert(advert) => Ok(Incoming::Advert(AdvertUpdate::Domain(advert))),
            Frame::Hello(_) | Frame::HelloReply(_) => {
                Err(CloseReason::Violation("a second handshake on an open connection".into()))
            }
        }
    }

    fn acknowledged(&mut self, received: u64) -> Result<Incoming, CloseReason> {
        if received > self.sent || received < self.acked {
            return Err(CloseReason::Violation(format!("acknowledged {received} messages, {} were sent", self.sent)));
        }
        let count = usize::try_from(received - self.acked).unwrap_or(usize::MAX).min(self.unacked.len());
        self.acked = received;
        let bytes = self.unacked.range(..count).map(message_cost).sum();
        let messages = match self.keep_acknowledged {
            true => self.unacked.drain(..count).collect(),
            false => {
                // Dropped in place: a message is not moved only to be freed.
                self.unacked.drain(..count);
                Vec::new()
            }
        };
        if self.unacked.is_empty() {
            // A burst's buffer is not kept for the connection's life: most
            // connections are idle most of the time.
            self.unacked = VecDeque::new();
        }
        Ok(Incoming::Acknowledged { count, bytes, messages })
    }

    /// The message [`Connection::receive`] handed out was delivered or
    /// dropped: the peer may be told it was taken. Returns its number on
    /// this connection (1 for the first message), for [`Connection::hold`].
    pub fn taken(&mut self) -> u64 {
        self.taken += 1;
        self.since_ack_wanted += 1;
        self.taken
    }

    /// Message `number` waits for room in its engine's mailbox: the peer
    /// is not told of it, nor of any later message, until it is released.
    pub fn hold(&mut self, number: u64) {
        if number > self.acked_to_peer && number <= self.taken {
            *self.held.entry(number).or_insert(0) += 1;
        }
    }

    /// Message `number` reached its engine. Returns whether an
    /// acknowledgement is due: nothing is held any more, or the held
    /// messages let [`ACK_EVERY`] more be acknowledged.
    pub fn release(&mut self, number: u64) -> bool {
        let Some(count) = self.held.get_mut(&number) else { return false };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        self.held.remove(&number);
        match self.ack_owed() {
            Some(upto) => self.held.is_empty() || upto - self.acked_to_peer >= ACK_EVERY,
            None => false,
        }
    }

    /// The acknowledgement policy: ask for one every [`ACK_EVERY`]
    /// messages, and whenever the reader has caught up (`drained`), since
    /// the last message of a burst may be followed by nothing for a while.
    pub fn ack_wanted(&mut self, drained: bool) -> bool {
        let wanted = self.since_ack_wanted >= ACK_EVERY || (self.since_ack_wanted > 0 && drained);
        if wanted {
            self.since_ack_wanted = 0;
        }
        wanted
    }

    /// The count to acknowledge, if the peer has not been told of every
    /// message taken. Read it before gathering the frames it rides with:
    /// whatever the node wrote back about a message (a drop notice) before
    /// taking it is then written no later than its acknowledgement.
    pub fn ack_owed(&self) -> Option<u64> {
        let upto = self.held.keys().next().map_or(self.taken, |first| first - 1);
        (upto > self.acked_to_peer).then_some(upto)
    }

    /// The acknowledgement of `received` messages was written.
    pub fn ack_written(&mut self, received: u64) {
        self.acked_to_peer = self.acked_to_peer.max(received);
    }

    /// What was sent and never acknowledged, oldest first: the Transport
    /// engine sends it again on the next connection.
    pub fn into_unacknowledged(self) -> Vec<NodeMessage> {
        self.unacked.into()
    }
}

#[cfg(test)]
mod tests;
