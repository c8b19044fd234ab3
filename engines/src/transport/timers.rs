//! The Transport's timers. Each peer has at most one of each kind; a timer
//! that fires checks the peer's state as it is then, since the state may
//! have moved on since it was set, and sets itself again if its work is
//! not yet due.

use netmachine_domain::{NodeIdentity, Timestamp};

use super::types::PeerTimer;
use super::{CloseReason, Link, Transport, TransportEffect, Undeliverable};
use crate::engine::Timed;

impl Timed for Transport {
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                PeerTimer::Redial(peer) => self.redial_due(peer, now),
                PeerTimer::Expire(peer) => self.expiry_due(peer, now),
                PeerTimer::Sweep => self.sweep_due(now),
            }
        }
    }
}

impl Transport {
    /// Whether the engine's next timeout moved sooner since this was last
    /// asked: a host sleeping until [`Timed::poll_timeout`] must look again.
    pub fn take_sooner_timeout(&mut self) -> bool {
        self.timers.take_sooner()
    }

    pub(super) fn cancel_timers(&mut self, peer: NodeIdentity) {
        for timer in [PeerTimer::Redial(peer), PeerTimer::Expire(peer)] {
            self.timers.cancel(&timer);
        }
        if self.peers.is_empty() {
            self.timers.cancel(&PeerTimer::Sweep);
        }
    }

    fn redial_due(&mut self, id: NodeIdentity, now: Timestamp) {
        // What expired while waiting is not worth a dial.
        self.expiry_due(id, now);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        // A peer enters its backoff with this timer set to the backoff's
        // end, so a backoff found here is over.
        match peer.link {
            Link::Backoff { .. } if peer.wants_connection() => self.start_dial(id, now),
            Link::Backoff { .. } => peer.link = Link::Idle,
            Link::Idle if peer.wants_connection() && !peer.addresses.is_empty() => self.start_dial(id, now),
            _ => {}
        }
    }

    /// Messages waiting for a connection that expired are given up; on an
    /// open connection the flush gives them up as it reaches them.
    fn expiry_due(&mut self, id: NodeIdentity, now: Timestamp) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if matches!(peer.link, Link::Connected { .. }) || peer.queue.is_empty() {
            return;
        }
        let dead = peer.queue.take_expired(now);
        if let Some(next) = peer.queue.first_expiry() {
            self.timers.set(PeerTimer::Expire(id), next);
        }
        for message in dead {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Expired });
        }
    }

    /// The sweep: an ephemeral connection quiet for `idle_timeout_ms`
    /// (nothing queued, nothing in flight) is closed; a peer with no
    /// connection, nothing queued and not permanent, quiet for
    /// `forget_after_ms`, leaves the table. The sweep comes back when the
    /// next peer may be due, but no sooner than a sixteenth of the shorter
    /// time: a peer may wait up to that much longer.
    fn sweep_due(&mut self, now: Timestamp) {
        let (idle, forget) = (self.config.idle_timeout_ms, self.config.forget_after_ms);
        let mut closing = Vec::new();
        let mut gone = Vec::new();
        let mut next: Option<Timestamp> = None;
        for (id, peer) in &self.peers {
            let quiet = |ms: u64| peer.last_activity.saturating_add_millis(ms);
            // Once quiet long enough but busy, looked at a whole period later.
            let forget_due = if now < quiet(forget) { quiet(forget) } else { later(now, forget) };
            let due = match peer.link {
                Link::Connected { .. } if peer.permanent => continue,
                Link::Connected { conn } => {
                    let in_flight = self.conns.get(&conn).is_some_and(|c| c.inflight > 0);
                    if !peer.queue.is_empty() || in_flight {
                        later(now, idle)
                    } else if now < quiet(idle) {
                        quiet(idle)
                    } else {
                        closing.push((*id, conn));
                        // Closed, it is looked at again to be forgotten.
                        forget_due
                    }
                }
                Link::Idle if !peer.permanent && peer.queue.is_empty() && now >= quiet(forget) => {
                    gone.push(*id);
                    continue;
                }
                _ => forget_due,
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        // In a fixed order: the table's is not.
        closing.sort_unstable();
        for (_, conn) in closing {
            self.effects.push_back(TransportEffect::Close { conn, reason: CloseReason::Idle });
        }
        gone.sort_unstable();
        for id in gone {
            self.remove_peer(id);
        }
        match next {
            Some(next) => self.timers.set(PeerTimer::Sweep, next.max(later(now, idle.min(forget) / 16))),
            None => self.timers.cancel(&PeerTimer::Sweep),
        }
    }
}

/// `ms` after `now`, and never `now` itself: a timer set again while it
/// fires must not be due in the same round (a setting of 0 would spin).
fn later(now: Timestamp, ms: u64) -> Timestamp {
    now.saturating_add_millis(ms.max(1))
}
