//! The Transport's timers. Each peer has at most one of each kind; a timer
//! that fires checks the peer's state as it is then, since the state may
//! have moved on since it was set, and sets itself again if its work is
//! not yet due.

use std::collections::VecDeque;

use netmachine_domain::{NodeIdentity, Timestamp};

use super::types::PeerTimer;
use super::{is_expired, message_cost, CloseReason, Link, Transport, TransportEffect, Undeliverable};
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
                PeerTimer::Idle(peer) => self.idle_due(peer, now),
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
        for timer in [PeerTimer::Redial(peer), PeerTimer::Expire(peer), PeerTimer::Idle(peer)] {
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
        let (keep, dead): (VecDeque<_>, VecDeque<_>) = peer.queue.drain(..).partition(|m| !is_expired(m, now));
        peer.queue = keep;
        peer.queued_bytes = peer.queue.iter().map(message_cost).sum();
        if let Some(next) = peer.queue.iter().filter_map(super::expiry_of).min() {
            self.timers.set(PeerTimer::Expire(id), next);
        }
        for message in dead {
            self.effects.push_back(TransportEffect::GiveUp { message, reason: Undeliverable::Expired });
        }
    }

    fn idle_due(&mut self, id: NodeIdentity, now: Timestamp) {
        let Some(peer) = self.peers.get(&id) else { return };
        let Link::Connected { conn } = peer.link else { return };
        if peer.permanent {
            // Made ephemeral later, the timer is set again then.
            return;
        }
        let idle_timeout = self.config.idle_timeout_ms;
        let in_use = !peer.queue.is_empty() || self.conns.get(&conn).is_some_and(|c| c.inflight > 0);
        let quiet_until = peer.last_activity.saturating_add_millis(idle_timeout);
        if in_use {
            self.timers.set(PeerTimer::Idle(id), later(now, idle_timeout));
        } else if now < quiet_until {
            self.timers.set(PeerTimer::Idle(id), quiet_until);
        } else {
            self.effects.push_back(TransportEffect::Close { conn, reason: CloseReason::Idle });
        }
    }

    /// A peer with no connection, nothing queued and not permanent leaves
    /// the table after `forget_after_ms` without traffic. The sweep comes
    /// back when the next peer may be due, but no sooner than a sixteenth
    /// of that time: a peer may stay up to that much longer.
    fn sweep_due(&mut self, now: Timestamp) {
        let forget_after = self.config.forget_after_ms;
        let quiet_until = |peer: &super::Peer| peer.last_activity.saturating_add_millis(forget_after);
        let mut gone: Vec<NodeIdentity> = self
            .peers
            .iter()
            .filter(|(_, p)| now >= quiet_until(p) && p.link == Link::Idle && !p.permanent && p.queue.is_empty())
            .map(|(id, _)| *id)
            .collect();
        // In a fixed order: the table's is not.
        gone.sort_unstable();
        for id in gone {
            self.peers.remove(&id);
            self.cancel_timers(id);
            self.effects.push_back(TransportEffect::Forgotten { peer: id });
        }
        // A peer quiet long enough but busy (connected, queued, permanent)
        // is looked at again a whole period later.
        let next = self
            .peers
            .values()
            .map(|p| if now < quiet_until(p) { quiet_until(p) } else { later(now, forget_after) })
            .min();
        if let Some(next) = next {
            self.timers.set(PeerTimer::Sweep, next.max(later(now, forget_after / 16)));
        }
    }
}

/// `ms` after `now`, and never `now` itself: a timer set again while it
/// fires must not be due in the same round (a setting of 0 would spin).
fn later(now: Timestamp, ms: u64) -> Timestamp {
    now.saturating_add_millis(ms.max(1))
}
