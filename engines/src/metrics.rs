//! What the node core counts for its operator: messages in and out per
//! engine and per peer class, drops by reason, handshake failures by
//! reason; and, read when asked, queue and window depth and connections by
//! state. Plain numbers: the host decides how to show them (the node serves
//! them in the Prometheus text format, the simulator does not read them).
//!
//! Every label set is fixed and small: a peer cannot grow the metrics by
//! its identity. Only the engines of this node (registered by its
//! operator's own code) add a row each, while they are registered, and at
//! most [`MAX_ENGINE_ROWS`] of them.

use std::collections::BTreeMap;

use netmachine_domain::HandshakeStatus;

use crate::router::InboundRejection;
use crate::transport::{ConnectFailure, OutboundError, Undeliverable};

/// Engines with a row of their own; any further engine's counts are summed
/// under [`OTHER_ENGINES`].
pub const MAX_ENGINE_ROWS: usize = 256;
/// The row of the engines beyond [`MAX_ENGINE_ROWS`] (no engine name has
/// parentheses).
pub const OTHER_ENGINES: &str = "(other)";

/// Who is at the other end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerClass {
    /// An engine of this node.
    Local,
    /// A peer the operator asked this node to keep connected.
    Permanent,
    /// Any other peer: connected while in use.
    Ephemeral,
}

impl PeerClass {
    pub const ALL: [PeerClass; 3] = [Self::Local, Self::Permanent, Self::Ephemeral];

    pub fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Permanent => "permanent",
            Self::Ephemeral => "ephemeral",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A peer sent again a message this node already took (its
    /// acknowledgement was lost with a connection).
    Repeat,
    NotForThisNode,
    Impersonation,
    BadSignature,
    Expired,
    OutOfScope,
    NotAPublisher,
    NoRoute,
    Unsupported,
    Banned,
    /// A local engine's message found its peer's queue full.
    QueueFull,
    /// A local engine's message was for a peer with no known address.
    NoAddress,
    /// The Transport gave a message up: its expiry passed while it waited.
    ExpiredInQueue,
    /// The node stopped with the message still waiting.
    Shutdown,
    /// The destination node is banned here.
    DestinationBanned,
    /// The receiving engine's mailbox, and what the host holds beside it,
    /// were full.
    MailboxFull,
}

impl DropReason {
    pub const ALL: [DropReason; 16] = [
        Self::Repeat,
        Self::NotForThisNode,
        Self::Impersonation,
        Self::BadSignature,
        Self::Expired,
        Self::OutOfScope,
        Self::NotAPublisher,
        Self::NoRoute,
        Self::Unsupported,
        Self::Banned,
        Self::QueueFull,
        Self::NoAddress,
        Self::ExpiredInQueue,
        Self::Shutdown,
        Self::DestinationBanned,
        Self::MailboxFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Repeat => "repeat",
            Self::NotForThisNode => "not_for_this_node",
            Self::Impersonation => "impersonation",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::OutOfScope => "out_of_scope",
            Self::NotAPublisher => "not_a_publisher",
            Self::NoRoute => "no_route",
            Self::Unsupported => "unsupported",
            Self::Banned => "banned",
            Self::QueueFull => "queue_full",
            Self::NoAddress => "no_address",
            Self::ExpiredInQueue => "expired_in_queue",
            Self::Shutdown => "shutdown",
            Self::DestinationBanned => "destination_banned",
            Self::MailboxFull => "mailbox_full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a budget did to a peer that reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// An advert dropped unread: its peer sent adverts faster than its rate.
    AdvertOverRate,
    /// An advert refused: its peer is the source of its share of the cache.
    AdvertOverShare,
    /// An advert refused: the cache of its kind is full of records in use.
    AdvertCacheFull,
    /// A cached record given up to make room for a newer one.
    RecordEvicted,
    /// A peer disconnected for sending adverts beyond its budget.
    AdvertSenderDisconnected,
    /// A peer holding nothing of value forgotten to make room in the peer
    /// table (counted by the Transport).
    PeerEvicted,
    /// A log line a peer caused held back by the log budget (summarised).
    LogLineHeldBack,
}

impl Guarded {
    pub const ALL: [Guarded; 7] = [
        Self::AdvertOverRate,
        Self::AdvertOverShare,
        Self::AdvertCacheFull,
        Self::RecordEvicted,
        Self::AdvertSenderDisconnected,
        Self::PeerEvicted,
        Self::LogLineHeldBack,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::AdvertOverRate => "advert_over_rate",
            Self::AdvertOverShare => "advert_over_share",
            Self::AdvertCacheFull => "advert_cache_full",
            Self::RecordEvicted => "record_evicted",
            Self::AdvertSenderDisconnected => "advert_sender_disconnected",
            Self::PeerEvicted => "peer_evicted",
            Self::LogLineHeldBack => "log_line_held_back",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<&InboundRejection> for DropReason {
    fn from(rejection: &InboundRejection) -> Self {
        match rejection {
            InboundRejection::NotForThisNode { .. } => Self::NotForThisNode,
            InboundRejection::Impersonation { .. } => Self::Impersonation,
            InboundRejection::BadSignature { .. } => Self::BadSignature,
            InboundRejection::Expired { .. } => Self::Expired,
            InboundRejection::OutOfScope { .. } => Self::OutOfScope,
            InboundRejection::NotAPublisher { .. } => Self::NotAPublisher,
            InboundRejection::NoRoute { .. } => Self::NoRoute,
            InboundRejection::Unsupported { .. } => Self::Unsupported,
            InboundRejection::Banned { .. } => Self::Banned,
        }
    }
}

impl From<&Undeliverable> for DropReason {
    fn from(reason: &Undeliverable) -> Self {
        match reason {
            Undeliverable::Expired => Self::ExpiredInQueue,
            Undeliverable::Shutdown => Self::Shutdown,
            Undeliverable::Banned => Self::DestinationBanned,
        }
    }
}

impl DropReason {
    /// The drop a refused send is, if it is one (a node with no transport
    /// or a stopped one refuses every send: that is not a drop).
    pub fn of_outbound(error: &OutboundError) -> Option<Self> {
        match error {
            OutboundError::QueueFull { .. } => Some(Self::QueueFull),
            OutboundError::NoAddress { .. } => Some(Self::NoAddress),
            OutboundError::NoTransport | OutboundError::Stopped => None,
        }
    }
}

/// Why a connection's setup failed, as an operator groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeFailure {
    /// Dialling: no answer, the secured stream failed, or it closed before
    /// the hello's reply.
    Unreachable,
    /// Dialling: the responder proved another identity.
    WrongIdentity,
    /// The other end refused: at its connection limit.
    OverCapacity,
    /// The other end refused: no protocol version in common.
    Incompatible,
    /// The other end refused: banned there.
    Denied,
    /// Dialling: this node is at its own connection limit.
    LocalCapacity,
    /// Accepting: the first frame was not a hello.
    BadHello,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        Self::Unreachable,
        Self::WrongIdentity,
        Self::OverCapacity,
        Self::Incompatible,
        Self::Denied,
        Self::LocalCapacity,
        Self::BadHello,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::WrongIdentity => "wrong_identity",
            Self::OverCapacity => "over_capacity",
            Self::Incompatible => "incompatible",
            Self::Denied => "denied",
            Self::LocalCapacity => "local_capacity",
            Self::BadHello => "bad_hello",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The failure a dial ended with, if it is a failure of a connection's
    /// setup (no known address is not: nothing was tried).
    pub fn of_dial(failure: &ConnectFailure) -> Option<Self> {
        match failure {
            ConnectFailure::NoAddress => None,
            ConnectFailure::Unreachable(_) => Some(Self::Unreachable),
            ConnectFailure::WrongIdentity => Some(Self::WrongIdentity),
            ConnectFailure::Refused(status) => Self::of_refusal(*status),
            ConnectFailure::LocalCapacity => Some(Self::LocalCapacity),
        }
    }

    pub fn of_refusal(status: HandshakeStatus) -> Option<Self> {
        match status {
            HandshakeStatus::Ok => None,
            HandshakeStatus::OverCapacity => Some(Self::OverCapacity),
            HandshakeStatus::Incompatible => Some(Self::Incompatible),
            HandshakeStatus::Denied => Some(Self::Denied),
        }
    }
}

/// Which end started the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// This node dialled.
    Outbound,
    /// The peer dialled.
    Inbound,
}

impl Side {
    pub const ALL: [Side; 2] = [Self::Outbound, Self::Inbound];

    pub fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Messages into and out of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InOut {
    /// Taken in: from a peer, or from a local engine.
    pub messages_in: u64,
    /// Passed on: to a peer's queue, or to a local engine.
    pub messages_out: u64,
}

/// The core's running counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreMetrics {
    by_class: [InOut; 3],
    /// Per engine of this node, by name (a hosted engine by its
    /// protocol's): `messages_out` is what it sent, `messages_in` what was
    /// delivered to it (messages, not notices).
    by_engine: BTreeMap<String, InOut>,
    drops: [u64; DropReason::ALL.len()],
    handshake_failures: [[u64; HandshakeFailure::ALL.len()]; 2],
    guarded: [u64; Guarded::ALL.len()],
}

impl CoreMetrics {
    pub fn count_in(&mut self, class: PeerClass) {
        self.by_class[class.index()].messages_in += 1;
    }

    pub fn count_out(&mut self, class: PeerClass) {
        self.by_class[class.index()].messages_out += 1;
    }

    /// A message `engine` sent (`sent`) or was handed (`!sent`). Only
    /// engines registered here are counted, so the table stays as small
    /// as the node's own engines.
    pub fn count_engine(&mut self, engine: &str, sent: bool) {
        let row = if self.by_engine.contains_key(engine) || self.by_engine.len() < MAX_ENGINE_ROWS {
            engine
        } else {
            OTHER_ENGINES
        };
        let counts = match self.by_engine.get_mut(row) {
            Some(counts) => counts,
            None => self.by_engine.entry(row.to_string()).or_default(),
        };
        if sent {
            counts.messages_out += 1;
        } else {
            counts.messages_in += 1;
        }
    }

    /// An engine left: its row goes (its series end).
    pub fn forget_engine(&mut self, engine: &str) {
        self.by_engine.remove(engine);
    }

    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub fn count_guarded(&mut self, action: Guarded) {
        self.guarded[action.index()] += 1;
    }

    /// Sets a count kept elsewhere (the Transport's evictions, the log
    /// budget's lines held back).
    pub fn set_guarded(&mut self, action: Guarded, count: u64) {
        self.guarded[action.index()] = count;
    }

    pub fn guarded(&self, action: Guarded) -> u64 {
        self.guarded[action.index()]
    }

    pub fn count_handshake_failure(&mut self, side: Side, failure: HandshakeFailure) {
        self.handshake_failures[side as usize][failure.index()] += 1;
    }

    pub fn by_class(&self, class: PeerClass) -> InOut {
        self.by_class[class.index()]
    }

    pub fn by_engine(&self) -> impl Iterator<Item = (&str, InOut)> {
        self.by_engine.iter().map(|(name, counts)| (name.as_str(), *counts))
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn handshake_failures(&self, side: Side, failure: HandshakeFailure) -> u64 {
        self.handshake_failures[side as usize][failure.index()]
    }
}

/// Connections by where they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStates {
    /// This node dialled; the secured stream is being opened.
    pub dialling: u64,
    /// Secured; the hello or its reply is awaited.
    pub handshaking: u64,
    /// Messages flow.
    pub established: u64,
}

/// What waits, per peer class (permanent or ephemeral).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    /// Messages queued for peers, not yet on a connection.
    pub queued_messages: u64,
    pub queued_bytes: u64,
    /// Messages on connections, not yet acknowledged (the windows in use).
    pub inflight_messages: u64,
    pub inflight_bytes: u64,
    /// Peers in the table.
    pub peers: u64,
    pub connected_peers: u64,
}

/// The counts with the gauges read now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub counts: CoreMetrics,
    pub connections: ConnectionStates,
    pub permanent: Depths,
    pub ephemeral: Depths,
    /// Records in the identity store.
    pub identity_records: u64,
    /// Records peers sent unasked, and their bytes as the cache counts
    /// them, per kind: `(kind, records, bytes)`.
    pub cached_records: Vec<(&'static str, u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels are distinct snake_case words, as Prometheus label values
    /// are best kept.
    fn assert_labels(labels: &[&str]) {
        let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
        for label in labels {
            assert!(!label.is_empty() && label.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{label}");
        }
    }

    #[test]
    fn labels_are_distinct_and_indexes_follow_the_lists() {
        assert_labels(&DropReason::ALL.map(DropReason::label));
        assert_labels(&HandshakeFailure::ALL.map(HandshakeFailure::label));
        assert_labels(&PeerClass::ALL.map(PeerClass::label));
        assert_labels(&Side::ALL.map(Side::label));
        assert_eq!(PeerClass::Ephemeral.label(), "ephemeral");
        assert_eq!(Side::Inbound.label(), "inbound");
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        for (i, failure) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(failure.index(), i);
        }
        for (i, class) in PeerClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }

    #[test]
    fn failures_map_to_their_reasons() {
        assert_eq!(HandshakeFailure::of_refusal(HandshakeStatus::Ok), None);
        assert_eq!(HandshakeFailure::of_refusal(HandshakeStatus::Denied), Some(HandshakeFailure::Denied));
        assert_eq!(
            HandshakeFailure::of_dial(&ConnectFailure::Refused(HandshakeStatus::OverCapacity)),
            Some(HandshakeFailure::OverCapacity)
        );
        assert_eq!(HandshakeFailure::of_dial(&ConnectFailure::NoAddress), None);
        let peer = netmachine_domain::NodeIdentity::new(netmachine_domain::ExternalIdentity::ed25519([1; 32]));
        assert_eq!(DropReason::of_outbound(&OutboundError::QueueFull { peer }), Some(DropReason::QueueFull));
        assert_eq!(DropReason::of_outbound(&OutboundError::Stopped), None);
    }

    #[test]
    fn counts_land_in_their_own_row() {
        let mut m = CoreMetrics::default();
        m.count_drop(DropReason::QueueFull);
        m.count_drop(DropReason::QueueFull);
        m.count_handshake_failure(Side::Inbound, HandshakeFailure::BadHello);
        m.count_in(PeerClass::Ephemeral);
        m.count_out(PeerClass::Local);
        m.count_engine("app", true);
        m.count_engine("app", false);
        m.count_engine("app", false);
        assert_eq!(m.drops(DropReason::QueueFull), 2);
        assert_eq!(m.drops(DropReason::Repeat), 0);
        assert_eq!(m.handshake_failures(Side::Inbound, HandshakeFailure::BadHello), 1);
        assert_eq!(m.handshake_failures(Side::Outbound, HandshakeFailure::BadHello), 0);
        assert_eq!(m.by_class(PeerClass::Ephemeral), InOut { messages_in: 1, messages_out: 0 });
        assert_eq!(m.by_class(PeerClass::Local), InOut { messages_in: 0, messages_out: 1 });
        let rows: Vec<_> = m.by_engine().collect();
        assert_eq!(rows, vec![("app", InOut { messages_in: 2, messages_out: 1 })]);
        m.forget_engine("app");
        assert_eq!(m.by_engine().count(), 0, "a departed engine's row goes");
    }

    #[test]
    fn engines_beyond_the_limit_share_one_row() {
        let mut m = CoreMetrics::default();
        for i in 0..MAX_ENGINE_ROWS + 10 {
            m.count_engine(&format!("e{i}"), true);
        }
        assert_eq!(m.by_engine().count(), MAX_ENGINE_ROWS + 1);
        let other = m.by_engine().find(|(name, _)| *name == OTHER_ENGINES).map(|(_, io)| io);
        assert_eq!(other, Some(InOut { messages_in: 0, messages_out: 10 }));
    }
}
