//! The node core hosted on tokio. Every input reaches the core under one
//! short lock: a local engine's send, a frame a connection read, a dial
//! that ended, a timer, a record the disk writer wrote. The effects the
//! core returns are carried out before the lock is released, so each
//! connection's frames reach its writer in the core's order: deliveries go
//! to mailboxes, frames to writers, dials to the transport driver, records
//! to the disk writer. Nothing under the lock waits: a delivery that finds
//! a full mailbox comes back as [`Pending`], for whoever caused it to wait
//! on without the lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use netmachine_domain::TransportProtocol;
use netmachine_domain::{DestinationIdentity, Frame, NodeIdentity, RecordKey, Timestamp, TransportAddress};
use netmachine_engines::engine::Timed;
use netmachine_engines::identity_store::{Persist, UpdateError};
use netmachine_engines::log_budget::LogKind;
use netmachine_engines::node_core::{CoreEffect, NodeCore, Receipt};
use netmachine_engines::transport::{CloseReason, ConnId, ConnMap, ConnectFailure, TransportEvent};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use super::delivery::{Delivery, Watches};
use super::disk::{DiskJob, DiskQueue, DiskWork, Reply};
use super::error::{NodeError, SendError};
use super::mailbox::{Inbound, Mailbox};
use super::overflow::{Overflow, Parking};
use crate::clock::Clock;
use crate::crypto::Ed25519Keys;
use crate::store::StoreError;

/// The longest the timer task sleeps without looking again (a clock that
/// jumps is noticed within this).
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

/// Adverts waiting in one connection's writer queue, at most; more are
/// not sent to that peer (they are best effort: the peer learns the
/// newest version later).
pub const MAX_QUEUED_ADVERTS: usize = 256;

/// Whether a frame is an advert (not part of the message window).
pub(crate) fn is_advert(frame: &Frame) -> bool {
    matches!(frame, Frame::NodeAdvert(_) | Frame::TopicAdvert(_) | Frame::DomainAdvert(_))
}

/// A dial the core asked for, for the transport driver.
#[derive(Debug)]
pub(crate) struct DialRequest {
    pub attempt: ConnId,
    pub peer: NodeIdentity,
    pub address: TransportAddress,
}

/// A connection's task, as the host reaches it.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// Frames for the writer, in the core's order. Messages in it are
    /// bounded by the Transport's window; other frames by the handshake,
    /// acknowledgements and adverts the core writes.
    pub writes: mpsc::UnboundedSender<Frame>,
    /// Adverts in `writes`, which the writer counts down as it writes
    /// them: the spread of topic adverts must not grow the queue of a
    /// peer that does not read.
    pub adverts_queued: Arc<AtomicUsize>,
    pub close: Option<oneshot::Sender<CloseReason>>,
    pub peer: NodeIdentity,
    pub protocol: TransportProtocol,
    pub remote: Option<SocketAddr>,
}

/// What sits under the host's lock.
pub(crate) struct HostState {
    pub core: NodeCore<Mailbox>,
    pub conns: ConnMap<ConnHandle>,
}

/// Frames and bytes moved, for status displays.
#[derive(Debug, Default)]
pub(crate) struct WireCounters {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Streams closed for frames that broke the framing rules (the core
    /// counts the violations it finds in frames itself).
    pub violations: AtomicU64,
}

/// Deliveries that found their mailbox full and wait for room, and a
/// unicast whose engine had left. Empty (and unallocated) in the common
/// case.
#[derive(Debug, Default)]
#[must_use = "a pending delivery is lost unless it is waited for"]
pub(crate) struct Pending {
    waiting: Vec<(Mailbox, Inbound)>,
    closed: Option<DestinationIdentity>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.closed.is_none()
    }

    /// For inputs that deliver no message to a local engine (changes to
    /// the tables, notices): nothing can be pending.
    pub(crate) fn discard(self) {
        debug_assert!(self.waiting.is_empty(), "a message delivery was pending");
    }
}

pub(crate) struct Host {
    pub identity: NodeIdentity,
    pub keys: Ed25519Keys,
    pub clock: Arc<dyn Clock>,
    pub mailbox_capacity: usize,
    state: Mutex<HostState>,
    runtime: tokio::runtime::Handle,
    pub watches: Arc<Watches>,
    pub topic_keys: super::topic_keys::TopicKeys,
    pub events: broadcast::Sender<TransportEvent>,
    /// Signalled when acknowledgements or a closed connection free room
    /// in the Transport's queues: a sender refused with a full queue waits
    /// on it.
    pub room: Notify,
    /// Woken when an input moves the core's next timeout earlier.
    timer_wake: Notify,
    disk: DiskQueue,
    dialer: OnceLock<mpsc::UnboundedSender<DialRequest>>,
    pub wire: WireCounters,
    stopped: AtomicBool,
    overflow: Arc<Overflow>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Host {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(
        core: NodeCore<Mailbox>,
        keys: Ed25519Keys,
        clock: Arc<dyn Clock>,
        mailbox_capacity: usize,
        disk: DiskQueue,
        topic_keys: super::topic_keys::TopicKeys,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            identity: core.node(),
            keys,
            clock,
            mailbox_capacity,
            state: Mutex::new(HostState { core, conns: ConnMap::default() }),
            runtime: tokio::runtime::Handle::current(),
            watches: Arc::default(),
            topic_keys,
            events,
            room: Notify::new(),
            timer_wake: Notify::new(),
            disk,
            dialer: OnceLock::new(),
            wire: WireCounters::default(),
            stopped: AtomicBool::new(false),
            overflow: Arc::default(),
        }
    }

    /// Starts the disk writer, which reports each write back to this
    /// host, and connects the overflow's releases to the core.
    pub(crate) fn start(self: &Arc<Self>, disk: Box<dyn crate::store::RecordStore>) -> std::io::Result<()> {
        let host = Arc::downgrade(self);
        self.overflow.on_released(Box::new(move |receipts| {
            if let Some(host) = host.upgrade() {
                let ((), pending) = host.with_core(|core, _| {
                    for receipt in receipts {
                        core.release(receipt);
                    }
                });
                host.finish_later(pending);
            }
        }));
        let host = Arc::downgrade(self);
        self.disk.start(
            disk,
            Box::new(move |job, outcome| match host.upgrade() {
                Some(host) => host.written(job, outcome),
                None => {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(NodeError::Stopped));
                    }
                }
            }),
        )
    }

    /// Where the dials the core asks for go. Without a dialer, a dial
    /// fails at once: the node has no transport.
    pub(crate) fn set_dialer(&self, dialer: mpsc::UnboundedSender<DialRequest>) {
        let _ = self.dialer.set(dialer);
    }

    /// Whether the node has a transport to reach other nodes with.
    pub(crate) fn has_transport(&self) -> bool {
        self.dialer.get().is_some()
    }

    /// Whether [`Host::shutdown`] has run.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Hands the core an input and carries out what it asks for.
    pub(crate) fn with_core<T>(&self, input: impl FnOnce(&mut NodeCore<Mailbox>, Timestamp) -> T) -> (T, Pending) {
        self.with_state(|state, now| input(&mut state.core, now), None)
    }

    /// [`Host::with_core`] for inputs that also touch the connection table.
    /// `reply` is told the outcome of the record the input persists.
    pub(crate) fn with_state<T>(
        &self,
        input: impl FnOnce(&mut HostState, Timestamp) -> T,
        reply: Option<Reply>,
    ) -> (T, Pending) {
        let now = self.clock.now();
        let mut state = self.state.lock();
        let out = input(&mut state, now);
        let pending = self.carry_out(&mut state, now, reply);
        if state.core.take_sooner_timeout() {
            self.timer_wake.notify_one();
        }
        (out, pending)
    }

    /// Reads the core without giving it an input.
    pub(crate) fn parked_by_engine(&self) -> Vec<(netmachine_domain::EngineName, usize)> {
        self.overflow.parked_by_engine()
    }

    pub(crate) fn wire_counts(&self) -> crate::metrics::WireCounts {
        crate::metrics::WireCounts {
            frames_sent: self.wire.frames_sent.load(Ordering::Relaxed),
            frames_received: self.wire.frames_received.load(Ordering::Relaxed),
            bytes_sent: self.wire.bytes_sent.load(Ordering::Relaxed),
            framing_violations: self.wire.violations.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn read<T>(&self, read: impl FnOnce(&HostState) -> T) -> T {
        read(&self.state.lock())
    }

    /// Runs an identity change, then waits until it is on disk and taken.
    pub(crate) async fn change_identity(
        &self,
        change: impl FnOnce(&mut NodeCore<Mailbox>) -> Result<(), UpdateError>,
    ) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        let (checked, pending) = self.with_state(|state, _| change(&mut state.core), Some(tx));
        let _ = self.finish(pending).await;
        checked?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    fn carry_out(&self, state: &mut HostState, now: Timestamp, mut reply: Option<Reply>) -> Pending {
        let mut pending = Pending::default();
        while let Some(effect) = state.core.poll_effect() {
            match effect {
                CoreEffect::Deliver { to, delivery, receipt } => {
                    self.deliver(state, now, to, delivery, receipt, &mut pending)
                }
                CoreEffect::Write { conn, frame } => {
                    // No handle: the connection has closed, and the core
                    // hears of it from its task.
                    if let Some(handle) = state.conns.get(&conn) {
                        if is_advert(&frame) {
                            if handle.adverts_queued.load(Ordering::Acquire) >= MAX_QUEUED_ADVERTS {
                                tracing::debug!(peer = %handle.peer, "advert not queued: the peer's writer is behind");
                                continue;
                            }
                            handle.adverts_queued.fetch_add(1, Ordering::AcqRel);
                        }
                        let _ = handle.writes.send(frame);
                    }
                }
                CoreEffect::Close { conn, reason } => {
                    if let Some(close) = state.conns.get_mut(&conn).and_then(|h| h.close.take()) {
                        let _ = close.send(reason);
                    }
                }
                CoreEffect::Dial { attempt, peer, address } => {
                    let sent =
                        self.dialer.get().is_some_and(|d| d.send(DialRequest { attempt, peer, address }).is_ok());
                    if !sent {
                        let failure = ConnectFailure::Unreachable("this node has no transport".into());
                        state.core.dialled(attempt, Err(failure), now);
                    }
                }
                CoreEffect::Persist(change) => self.persist(state, change, reply.take()),
                CoreEffect::Forget(key) => self.forget_on_disk(key),
                CoreEffect::Notice(event) => {
                    // Peers can make these as often as they connect: each
                    // is written within the core's log budget.
                    match &event {
                        TransportEvent::NodeConnected { peer, direction } => {
                            if state.core.log_allowed(LogKind::Connected, Some(*peer), now) {
                                tracing::info!(%peer, ?direction, "connected to a peer")
                            }
                        }
                        TransportEvent::NodeConnectFailed { peer, reason } => {
                            if state.core.log_allowed(LogKind::ConnectFailed, Some(*peer), now) {
                                tracing::info!(%peer, %reason, "could not connect to a peer")
                            }
                        }
                        TransportEvent::NodeDisconnected { peer, reason } => {
                            if state.core.log_allowed(LogKind::Disconnected, Some(*peer), now) {
                                tracing::info!(%peer, %reason, "disconnected from a peer")
                            }
                        }
                    }
                    let _ = self.events.send(event);
                }
                CoreEffect::Acknowledged { by, messages } => {
                    if !self.watches.any() {
                        state.core.report_acknowledgements(false);
                    }
                    for (engine, id) in messages {
                        self.watches.settle(&engine, id, Some(by), Delivery::Acknowledged { by });
                    }
                }
            }
        }
        pending
    }

    fn deliver(
        &self,
        state: &mut HostState,
        now: Timestamp,
        to: Mailbox,
        delivery: Inbound,
        receipt: Option<Receipt>,
        pending: &mut Pending,
    ) {
        if let Inbound::Undeliverable { id, dst, reason } = &delivery {
            // Only the node the message went to may settle it.
            let from = match dst {
                DestinationIdentity::Node(node) => Some(*node),
                DestinationIdentity::Engine(engine) => Some(engine.node),
                _ => None,
            };
            self.watches.settle(&to.name, *id, from, Delivery::Undeliverable { reason: reason.clone() });
        }
        if let Some(receipt) = receipt {
            if matches!(delivery, Inbound::Message(_)) && self.overflow.holds(&to.name) {
                // Behind the messages parked for this engine, not before
                // them: those go first, as far as the mailbox has room.
                let (moved, emptied) = self.overflow.move_on(&to);
                for receipt in moved {
                    state.core.release(receipt);
                }
                if !emptied {
                    return self.park(state, now, to, delivery, receipt);
                }
            }
        }
        match to.tx.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message @ Inbound::Message(_))) => match receipt {
                // From a peer: parked, so the connection's reader reads on.
                Some(receipt) => self.park(state, now, to, message, receipt),
                // From a local sender: it waits for room.
                None => pending.waiting.push((to, message)),
            },
            // A notice must not hold up whoever caused it (the identity
            // store, a timer): one to a saturated engine is dropped.
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(engine = %to.name, "notice dropped: mailbox full")
            }
            Err(mpsc::error::TrySendError::Closed(Inbound::Message(message))) => {
                if !matches!(message.dst, DestinationIdentity::Topic(_)) {
                    pending.closed = Some(message.dst);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Parks a message from a peer; the core holds back its
    /// acknowledgement until it reaches the engine. Beyond the budget it
    /// is dropped, and its sender told.
    fn park(&self, state: &mut HostState, now: Timestamp, to: Mailbox, message: Inbound, receipt: Receipt) {
        match self.overflow.park(&to, message, receipt) {
            Parking::Parked(pushed_out) => {
                state.core.hold(receipt);
                // The largest holder's newest messages made room: they are
                // dropped, their senders told, their connections free to
                // acknowledge past them.
                for (out, out_receipt) in pushed_out {
                    state.core.release(out_receipt);
                    if let Inbound::Message(out) = out {
                        state.core.mailbox_full(&out, now);
                    }
                }
            }
            Parking::Refused(refused) => {
                if let Inbound::Message(message) = *refused {
                    tracing::debug!(engine = %to.name, src = %message.src, "message dropped: mailbox and overflow full");
                    state.core.mailbox_full(&message, now);
                }
            }
        }
    }

    /// Waits for room in the mailboxes a delivery found full, in order.
    /// Fails when a unicast's engine has left.
    pub(crate) async fn finish(&self, pending: Pending) -> Result<(), SendError> {
        for (to, delivery) in pending.waiting {
            let unicast = match &delivery {
                Inbound::Message(message) => {
                    (!matches!(message.dst, DestinationIdentity::Topic(_))).then(|| message.dst.clone())
                }
                _ => None,
            };
            if to.tx.send(delivery).await.is_err() {
                if let Some(dst) = unicast {
                    return Err(SendError::MailboxClosed { dst });
                }
            }
        }
        match pending.closed {
            Some(dst) => Err(SendError::MailboxClosed { dst }),
            None => Ok(()),
        }
    }

    /// Finishes pending deliveries from a task of their own, for callers
    /// that must not wait (the disk writer, the timer, a connection's
    /// reader: a hosted engine's answer to a full mailbox waits there).
    pub(crate) fn finish_later(self: &Arc<Self>, pending: Pending) {
        if pending.is_empty() {
            return;
        }
        let host = Arc::clone(self);
        self.runtime.spawn(async move {
            let _ = host.finish(pending).await;
        });
    }

    /// Queues a checked change for the disk writer; it is committed once
    /// A record the identity store gave up leaves the disk too, after the
    /// writes queued before it.
    fn forget_on_disk(&self, key: RecordKey) {
        if self.disk.push(DiskJob { work: DiskWork::Remove(key), reply: None }).is_err() {
            tracing::debug!("a record given up stays on disk until the next start: the disk queue is full");
        }
    }

    /// written. A change that cannot be queued (the node is stopping)
    /// never takes effect.
    fn persist(&self, state: &mut HostState, change: Persist, reply: Option<Reply>) {
        if let Err(job) = self.disk.push(DiskJob { work: DiskWork::Put(change), reply }) {
            if let DiskWork::Put(change) = &job.work {
                state.core.persist_failed(change);
            }
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(NodeError::Stopped));
            }
        }
    }

    /// The disk writer's report on one change (called on its thread).
    pub(crate) fn written(self: &Arc<Self>, job: DiskJob, outcome: Result<(), StoreError>) {
        let DiskJob { work, reply } = job;
        let change = match work {
            DiskWork::Put(change) => change,
            DiskWork::Remove(key) => {
                if let Err(err) = outcome {
                    tracing::warn!(%key, %err, "a record given up could not be deleted from disk");
                }
                return;
            }
        };
        let asked = reply.is_some();
        let (result, pending) = self.with_core(|core, now| {
            let result = match outcome {
                Ok(()) => core.persisted(change, now).map_err(NodeError::from),
                Err(err) => {
                    core.persist_failed(&change);
                    Err(NodeError::from(err))
                }
            };
            // A change a peer's advert caused is logged within the budget;
            // one asked for locally is reported to whoever asked.
            if let Err(err) = &result {
                if !asked && core.log_allowed(LogKind::AdvertNotTaken, None, now) {
                    tracing::info!(%err, "a record a peer sent was not stored");
                }
            }
            result
        });
        self.finish_later(pending);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    /// Closes every connection, gives up what waits, and stops the disk
    /// writer once it has written everything queued.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.stopped.store(true, Ordering::Release);
        let ((), pending) = self.with_core(|core, now| core.shutdown(now));
        self.finish_later(pending);
        self.disk.stop().await;
    }
}

/// Sleeps until the core's next timeout (or an input brings it closer),
/// then fires what is due. Ends when the node is gone.
pub(crate) async fn run_timers(host: Weak<Host>) {
    loop {
        let (wait, strong) = {
            let Some(host) = host.upgrade() else { return };
            let now = host.clock.now();
            let due = host.read(|state| state.core.poll_timeout());
            let wait = due.map_or(MAX_TIMER_SLEEP, |due| {
                Duration::from_millis(due.as_millis().saturating_sub(now.as_millis())).min(MAX_TIMER_SLEEP)
            });
            (wait, host)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = strong.timer_wake.notified() => continue,
        }
        drop(strong);
        let Some(host) = host.upgrade() else { return };
        let ((), pending) = host.with_core(|core, now| core.handle_timeout(now));
        host.finish_later(pending);
    }
}
