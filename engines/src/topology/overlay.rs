//! One domain's overlay: HyParView (Leitão et al. 2007) in the manner of
//! iroh-gossip's sans-IO version. An active view of connected neighbours,
//! a passive view of members in reserve, random walks that spread joiners,
//! shuffles that mix the passive views, and reactive repair: a neighbour
//! noticed gone (its connection closed or could not be opened) is replaced
//! at once by a passive member that answers a neighbour request.
//!
//! Every entry holds a membership certificate valid for the domain at the
//! moment it is taken; expired and revoked entries leave at the next
//! shuffle period or the next advert. The overlay never holds itself.

use std::collections::{HashMap, VecDeque};

use netmachine_domain::{DomainAdvert, DomainIdentity, NodeAdvert, NodeIdentity, Timestamp};

use super::config::{OverlayConfig, Repair};
use super::messages::{Message, PeerInfo, MAX_ENTRIES};
use super::met_lately::MetLately;
use crate::ports::{verify_signed, Randomness, Verifier};
use crate::random::SplitMix;

/// What the overlay asks of its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send(NodeIdentity, Message),
    /// A member's advert, so that the node can dial it.
    Learn(NodeAdvert),
    /// The peer joined (`true`) or left (`false`) the active view.
    Active(NodeIdentity, bool),
    /// An active neighbour, whose certificate for the domain holds until
    /// then: its domain-scoped messages are taken.
    Certified(NodeIdentity, Timestamp),
    /// No longer an active neighbour.
    Uncertified(NodeIdentity),
}

/// Why an entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid certificate for this domain, or an advert that does not
    /// match it.
    Uncertified,
    /// The entry is this node.
    Itself,
}

/// What the overlay counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayCounters {
    /// Messages sent, by kind: join, forward-join, neighbour, disconnect,
    /// shuffle, shuffle reply.
    pub sent: [u64; 6],
    /// Neighbour requests sent to fill the active view.
    pub repair_requests: u64,
    pub refused_uncertified: u64,
    /// Messages that only a neighbour may send, from a peer that is not.
    pub refused_not_neighbor: u64,
    /// Shuffles past a neighbour's allowance in one period.
    pub refused_rate: u64,
}

fn kind_index(message: &Message) -> usize {
    match message {
        Message::Join(_) => 0,
        Message::ForwardJoin { .. } => 1,
        Message::Neighbor { .. } => 2,
        Message::Disconnect { .. } => 3,
        Message::Shuffle { .. } => 4,
        Message::ShuffleReply { .. } => 5,
    }
}

/// Joins a node alone sends per period, through members the advert names.
const MAX_JOINS_ALONE: u32 = 8;

/// A node left with a single neighbour at its period joins anew. Two nodes
/// that hold only each other, whose passive members all have full views,
/// would otherwise stay an island for good: every low-priority request
/// they send is refused, and their shuffles never leave the island. A
/// join's walks end at nodes that take the joiner with high priority.
const JOIN_BELOW: usize = 2;

#[derive(Debug)]
pub struct Overlay {
    advert: DomainAdvert,
    own: PeerInfo,
    config: OverlayConfig,
    /// Where the first join goes.
    contact: Option<NodeIdentity>,
    /// Where this node's last join went, while it is alone, and how many
    /// joins it sent alone this period.
    join_target: Option<NodeIdentity>,
    joins_alone: u32,
    active: Vec<PeerInfo>,
    passive: Vec<PeerInfo>,
    /// The last resort of a node left alone (see `met_lately`).
    recent: MetLately,
    /// Neighbour requests waiting for an answer, with their deadlines.
    pending: HashMap<NodeIdentity, Timestamp>,
    next_shuffle: Timestamp,
    /// The shuffle this node sent last, whose reply it still takes.
    shuffle_sent: Option<u64>,
    /// Shuffles taken from each neighbour this period.
    shuffles_taken: HashMap<NodeIdentity, u32>,
    random: SplitMix,
    counters: OverlayCounters,
    out: VecDeque<Out>,
}

impl Overlay {
    pub fn new(
        advert: DomainAdvert,
        own: PeerInfo,
        contact: Option<NodeIdentity>,
        config: OverlayConfig,
        seed: u64,
        now: Timestamp,
    ) -> Self {
        let mut random = SplitMix::new(seed);
        // Spread the nodes' periods so that they do not shuffle in step.
        let first = random.next_u64() % config.shuffle_interval_ms.max(1);
        let mut overlay = Self {
            advert,
            own,
            config,
            contact,
            join_target: None,
            joins_alone: 0,
            active: Vec::new(),
            passive: Vec::new(),
            recent: MetLately::default(),
            pending: HashMap::new(),
            next_shuffle: now.saturating_add_millis(first),
            shuffle_sent: None,
            shuffles_taken: HashMap::new(),
            random,
            counters: OverlayCounters::default(),
            out: VecDeque::new(),
        };
        overlay.join_contact();
        overlay
    }

    pub fn domain(&self) -> DomainIdentity {
        self.advert.id
    }

    pub fn own(&self) -> &PeerInfo {
        &self.own
    }

    pub fn active(&self) -> impl Iterator<Item = NodeIdentity> + '_ {
        self.active.iter().map(PeerInfo::id)
    }

    pub fn passive(&self) -> impl Iterator<Item = NodeIdentity> + '_ {
        self.passive.iter().map(PeerInfo::id)
    }

    pub fn active_entries(&self) -> &[PeerInfo] {
        &self.active
    }

    pub fn passive_entries(&self) -> &[PeerInfo] {
        &self.passive
    }

    /// The members met lately, each with the neighbour that passed it on.
    pub fn recent(&self) -> &MetLately {
        &self.recent
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn is_active(&self, peer: &NodeIdentity) -> bool {
        self.active.iter().any(|p| p.id() == *peer)
    }

    pub fn counters(&self) -> OverlayCounters {
        self.counters
    }

    /// The active view's bound: larger in a full mesh.
    pub fn active_capacity(&self) -> usize {
        if self.advert.full_mesh(self.config.full_mesh_max) {
            self.config.full_mesh_active
        } else {
            self.config.active
        }
    }

    pub fn passive_capacity(&self) -> usize {
        self.config.passive
    }

    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let pending = self.pending.values().min().copied();
        Some(pending.map_or(self.next_shuffle, |p| p.min(self.next_shuffle)))
    }

    /// Whether `info` may enter a view of this domain at `now`.
    pub fn admit(&self, info: &PeerInfo, now: Timestamp, verifier: &dyn Verifier) -> Result<(), Refusal> {
        if info.id() == self.own.id() {
            return Err(Refusal::Itself);
        }
        let cert = &info.cert;
        let certified = cert.member == info.id()
            && cert.check(&self.advert, now).is_ok()
            && verify_signed(verifier, cert).is_ok()
            && verify_signed(verifier, &info.advert).is_ok();
        if certified {
            Ok(())
        } else {
            Err(Refusal::Uncertified)
        }
    }

    /// Whether `info`, passed on by `from`, may enter a view; kept among
    /// the members met lately if so.
    fn admitted(&mut self, info: &PeerInfo, from: NodeIdentity, now: Timestamp, verifier: &dyn Verifier) -> bool {
        match self.admit(info, now, verifier) {
            Ok(()) => {
                if info.id() != self.own.id() {
                    self.recent.remember(info, from, self.config.recent, &mut self.random);
                }
                true
            }
            Err(Refusal::Uncertified) => {
                self.counters.refused_uncertified += 1;
                false
            }
            Err(Refusal::Itself) => false,
        }
    }

    fn send(&mut self, peer: NodeIdentity, message: Message) {
        self.counters.sent[kind_index(&message)] += 1;
        self.out.push_back(Out::Send(peer, message));
    }

    /// Sends a join to the contact the domain engine named, or else to a
    /// member the advert names (an approver or an external-facing node):
    /// how a node gets into the overlay, and back into it when it finds
    /// itself alone.
    fn join_contact(&mut self) {
        let me = self.own.id();
        let named = self.contact.filter(|c| *c != me);
        let target = named.or_else(|| {
            let mut known: Vec<NodeIdentity> = self
                .advert
                .rules
                .approvers
                .iter()
                .chain(self.advert.nodes.iter())
                .copied()
                .filter(|n| *n != me)
                .collect();
            known.sort_unstable();
            known.dedup();
            (!known.is_empty()).then(|| known[(self.random.next_u64() % known.len() as u64) as usize])
        });
        if let Some(target) = target {
            self.join_target = Some(target);
            self.joins_alone += 1;
            self.send(target, Message::Join(self.own.clone()));
        }
    }

    /// A message from `from`, whose identity its connection proved.
    pub fn on_message(&mut self, from: NodeIdentity, message: Message, now: Timestamp, verifier: &dyn Verifier) {
        match message {
            Message::Join(info) if info.id() == from => {
                // A repeated join spreads nothing more.
                if self.is_active(&from) || !self.admitted(&info, from, now, verifier) {
                    return;
                }
                self.add_active(info.clone(), now);
                let others: Vec<NodeIdentity> = self.active().filter(|p| *p != from).collect();
                for peer in others {
                    let ttl = self.config.active_walk;
                    self.send(peer, Message::ForwardJoin { joiner: info.clone(), ttl });
                }
            }
            Message::ForwardJoin { joiner, ttl } => {
                // A walk is never longer than this node's own.
                let ttl = ttl.min(self.config.active_walk);
                if !self.is_active(&from) {
                    self.counters.refused_not_neighbor += 1;
                    return;
                }
                if !self.admitted(&joiner, from, now, verifier) || self.is_active(&joiner.id()) {
                    return;
                }
                if ttl == 0 || self.active.len() <= 1 {
                    self.request_neighbor(joiner, true, now);
                    return;
                }
                if ttl == self.config.passive_walk {
                    self.add_passive(joiner.clone());
                }
                match self.random_active(&[from, joiner.id()]) {
                    Some(next) => self.send(next, Message::ForwardJoin { joiner, ttl: ttl - 1 }),
                    None => self.request_neighbor(joiner, true, now),
                }
            }
            Message::Neighbor { info, high } if info.id() == from => {
                if !self.admitted(&info, from, now, verifier) {
                    return;
                }
                let asked = self.pending.remove(&from).is_some();
                if let Some(held) = self.active.iter_mut().find(|p| p.id() == from) {
                    // A neighbour's newer entry: a renewed certificate.
                    if info.cert.expires > held.cert.expires {
                        self.out.push_back(Out::Certified(from, info.cert.expires));
                        *held = info;
                    }
                    return;
                }
                if high || asked || self.active.len() < self.active_capacity() {
                    self.add_active(info, now);
                } else {
                    // Full: refuse, and keep it in reserve.
                    self.send(from, Message::Disconnect { alive: true });
                    self.add_passive(info);
                }
            }
            Message::Disconnect { alive } => {
                let refused = self.pending.remove(&from).is_some();
                let was_active = self.remove_active(&from, alive);
                if !alive {
                    self.recent.forget(&from);
                }
                if refused && !alive {
                    self.passive.retain(|p| p.id() != from);
                }
                // A lost neighbour is replaced at once. A refused request
                // is retried at once only by a node left with no neighbour
                // (its requests cannot be refused); otherwise the next period
                // tries again, so that a node one short of a full view in a
                // full overlay does not ask peer after peer without pause.
                if was_active || (refused && self.active.is_empty()) {
                    self.repair(now);
                }
            }
            Message::Shuffle { origin, entries, ttl, id } => {
                let ttl = ttl.min(self.config.shuffle_walk);
                if !self.is_active(&from) {
                    self.counters.refused_not_neighbor += 1;
                    return;
                }
                let taken = self.shuffles_taken.entry(from).or_insert(0);
                if *taken >= self.config.shuffles_per_neighbor {
                    self.counters.refused_rate += 1;
                    return;
                }
                *taken += 1;
                if !self.admitted(&origin, from, now, verifier) {
                    return;
                }
                if ttl > 0 && self.active.len() > 1 {
                    if let Some(next) = self.random_active(&[from, origin.id()]) {
                        self.send(next, Message::Shuffle { origin, entries, ttl: ttl - 1, id });
                        return;
                    }
                }
                let reply = self.sample_passive(entries.len().min(MAX_ENTRIES));
                self.out.push_back(Out::Learn(origin.advert.clone()));
                self.send(origin.id(), Message::ShuffleReply { entries: reply, id });
                self.merge(std::iter::once(origin).chain(entries), from, now, verifier);
            }
            Message::ShuffleReply { entries, id } => {
                if self.shuffle_sent != Some(id) {
                    return;
                }
                self.shuffle_sent = None;
                self.merge(entries.into_iter(), from, now, verifier);
            }
            // A join or neighbour request that names another node than its
            // sender.
            Message::Join(_) | Message::Neighbor { .. } => self.counters.refused_uncertified += 1,
        }
    }

    /// The connection to `peer` closed. An active neighbour's connection
    /// is kept open, so it closing means the neighbour failed; a passive
    /// member's may close for being idle, and it stays in reserve.
    pub fn peer_gone(&mut self, peer: &NodeIdentity, now: Timestamp) {
        if self.remove_active(peer, false) {
            // A neighbour that failed is no last resort either.
            self.recent.forget(peer);
            self.repair(now);
        }
    }

    /// No connection to `peer` could be opened: it leaves both views.
    pub fn peer_failed(&mut self, peer: &NodeIdentity, now: Timestamp) {
        let was_pending = self.pending.remove(peer).is_some();
        let was_active = self.remove_active(peer, false);
        self.passive.retain(|p| p.id() != *peer);
        self.recent.forget(peer);
        if was_active || was_pending {
            self.repair(now);
        } else if self.join_target == Some(*peer) {
            // The member it asked to join through is unreachable.
            self.rejoin_if_alone(now);
        }
    }

    /// Left alone with nobody left to ask. First a join through a member
    /// the advert names, at once rather than next period (a join's walk
    /// gives it several neighbours); a few per period, as those members may
    /// all be down. Then the members it met lately, one at a time.
    fn rejoin_if_alone(&mut self, now: Timestamp) {
        if !self.active.is_empty() || !self.pending.is_empty() {
            return;
        }
        if self.joins_alone < MAX_JOINS_ALONE {
            self.contact = None;
            self.join_contact();
            return;
        }
        // The last resort is repair: the baseline waits for its period.
        if self.config.repair != Repair::Reactive {
            return;
        }
        if let Some(info) = self.recent.take(&self.advert, now, &mut self.random) {
            self.counters.repair_requests += 1;
            self.request_neighbor(info, true, now);
        }
    }

    /// A newer advert of the domain: members it revokes leave both views.
    pub fn set_advert(&mut self, advert: DomainAdvert, own: PeerInfo, now: Timestamp) {
        let renewed = own.cert.expires > self.own.cert.expires;
        self.advert = advert;
        self.own = own;
        self.drop_invalid(now);
        // A smaller bound (a full mesh no more): the excess goes to reserve.
        while self.active.len() > self.active_capacity() {
            let Some(evicted) = self.random_active(&[]) else { break };
            self.send(evicted, Message::Disconnect { alive: true });
            self.remove_active(&evicted, true);
        }
        if renewed {
            let active: Vec<NodeIdentity> = self.active().collect();
            for peer in active {
                self.send(peer, Message::Neighbor { info: self.own.clone(), high: false });
            }
        }
    }

    /// Leaves the domain: every neighbour is told, nothing is kept.
    pub fn leave(&mut self) {
        let active: Vec<NodeIdentity> = self.active().collect();
        for peer in active {
            self.send(peer, Message::Disconnect { alive: false });
            self.out.push_back(Out::Active(peer, false));
        }
        self.active.clear();
        self.passive.clear();
        self.recent.clear();
        self.pending.clear();
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        let expired: Vec<NodeIdentity> = self.pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| *p).collect();
        let any_expired = !expired.is_empty();
        for peer in expired {
            self.pending.remove(&peer);
            self.passive.retain(|p| p.id() != peer);
            self.recent.forget(&peer);
        }
        if any_expired {
            self.repair(now);
        }
        if self.next_shuffle <= now {
            self.next_shuffle = now.saturating_add_millis(self.config.shuffle_interval_ms);
            self.period(now);
        }
    }

    /// Once a shuffle period: drop what is no longer valid, fill the
    /// active view, shuffle.
    fn period(&mut self, now: Timestamp) {
        self.shuffles_taken.clear();
        self.joins_alone = 0;
        self.drop_invalid(now);
        // Not in a full mesh: there a lone neighbour may be all the domain has.
        let mesh = self.active_capacity() > self.config.active;
        if !mesh && self.active.len() < JOIN_BELOW && !self.active.is_empty() && self.pending.is_empty() {
            self.contact = None;
            self.join_contact();
        }
        self.fill(now);
        if self.active.is_empty() && self.pending.is_empty() {
            // Alone: the named contact may be gone; any member the advert
            // names will do from now on.
            self.join_contact();
            self.contact = None;
        }
        let Some(target) = self.random_active(&[]) else { return };
        let mut entries = Vec::new();
        let mut actives: Vec<PeerInfo> = self.active.iter().filter(|p| p.id() != target).cloned().collect();
        self.shuffle_in_place(&mut actives);
        entries.extend(actives.into_iter().take(self.config.shuffle_active));
        entries.extend(self.sample_passive(self.config.shuffle_passive));
        entries.truncate(MAX_ENTRIES);
        let id = self.random.next_u64();
        self.shuffle_sent = Some(id);
        let ttl = self.config.shuffle_walk;
        self.send(target, Message::Shuffle { origin: self.own.clone(), entries, ttl, id });
    }

    fn drop_invalid(&mut self, now: Timestamp) {
        let advert = &self.advert;
        let valid = |p: &PeerInfo| p.cert.check(advert, now).is_ok();
        let gone: Vec<NodeIdentity> = self.active.iter().filter(|p| !valid(p)).map(PeerInfo::id).collect();
        self.passive.retain(valid);
        self.recent.keep_valid(advert, now);
        for peer in gone {
            self.send(peer, Message::Disconnect { alive: false });
            self.remove_active(&peer, false);
        }
    }

    /// Reactive repair, unless this overlay waits for its period: the
    /// active view refills from the passive view, and a node left with
    /// nobody to ask joins anew or asks the members it met lately.
    fn repair(&mut self, now: Timestamp) {
        if self.config.repair == Repair::Reactive {
            self.fill(now);
            self.rejoin_if_alone(now);
        }
    }

    /// Asks passive members to become neighbours until the requests out
    /// would fill the active view.
    fn fill(&mut self, now: Timestamp) {
        let capacity = self.active_capacity();
        let mut guard = self.passive.len();
        while self.active.len() + self.pending.len() < capacity && guard > 0 {
            guard -= 1;
            let candidates: Vec<usize> =
                (0..self.passive.len()).filter(|i| !self.pending.contains_key(&self.passive[*i].id())).collect();
            if candidates.is_empty() {
                return;
            }
            let pick = candidates[(self.random.next_u64() % candidates.len() as u64) as usize];
            let info = self.passive[pick].clone();
            let high = self.active.is_empty();
            self.counters.repair_requests += 1;
            self.request_neighbor(info, high, now);
        }
    }

    fn request_neighbor(&mut self, info: PeerInfo, high: bool, now: Timestamp) {
        let peer = info.id();
        if peer == self.own.id() || self.is_active(&peer) || self.pending.contains_key(&peer) {
            return;
        }
        // At most one request out per active slot: beyond, a candidate
        // waits in reserve.
        if self.pending.len() >= self.active_capacity() {
            self.add_passive(info);
            return;
        }
        self.out.push_back(Out::Learn(info.advert));
        self.pending.insert(peer, now.saturating_add_millis(self.config.neighbor_timeout_ms));
        self.send(peer, Message::Neighbor { info: self.own.clone(), high });
    }

    fn add_active(&mut self, info: PeerInfo, now: Timestamp) {
        let peer = info.id();
        if peer == self.own.id() || self.is_active(&peer) {
            return;
        }
        while self.active.len() >= self.active_capacity() {
            let Some(evicted) = self.random_active(&[]) else { break };
            self.send(evicted, Message::Disconnect { alive: true });
            self.remove_active(&evicted, true);
        }
        self.passive.retain(|p| p.id() != peer);
        self.pending.remove(&peer);
        self.out.push_back(Out::Learn(info.advert.clone()));
        self.out.push_back(Out::Certified(peer, info.cert.expires));
        self.active.push(info);
        self.out.push_back(Out::Active(peer, true));
        // The other side takes this node in too, so that the view is
        // symmetric. Not with high priority: a peer that asked, or has room,
        // accepts; one that filled up meanwhile refuses rather than evict a
        // neighbour, which would evict another in turn.
        self.send(peer, Message::Neighbor { info: self.own.clone(), high: false });
        let _ = now;
    }

    /// Removes `peer` from the active view; keeps it in reserve when
    /// `alive`. Returns whether it was there.
    fn remove_active(&mut self, peer: &NodeIdentity, alive: bool) -> bool {
        let Some(index) = self.active.iter().position(|p| p.id() == *peer) else { return false };
        let info = self.active.remove(index);
        self.out.push_back(Out::Active(*peer, false));
        self.out.push_back(Out::Uncertified(*peer));
        if alive {
            self.add_passive(info);
        }
        true
    }

    fn add_passive(&mut self, info: PeerInfo) {
        let peer = info.id();
        if peer == self.own.id() || self.is_active(&peer) {
            return;
        }
        if let Some(held) = self.passive.iter_mut().find(|p| p.id() == peer) {
            if info.cert.expires > held.cert.expires {
                *held = info;
            }
            return;
        }
        if self.passive.len() >= self.config.passive {
            // Room: a random entry that no request waits on.
            let free: Vec<usize> =
                (0..self.passive.len()).filter(|i| !self.pending.contains_key(&self.passive[*i].id())).collect();
            if free.is_empty() {
                return;
            }
            let evict = free[(self.random.next_u64() % free.len() as u64) as usize];
            self.passive.swap_remove(evict);
        }
        self.passive.push(info);
    }

    fn merge(
        &mut self,
        entries: impl Iterator<Item = PeerInfo>,
        from: NodeIdentity,
        now: Timestamp,
        verifier: &dyn Verifier,
    ) {
        for entry in entries.take(MAX_ENTRIES + 1) {
            if self.is_active(&entry.id()) || !self.admitted(&entry, from, now, verifier) {
                continue;
            }
            self.add_passive(entry);
        }
    }

    fn random_active(&mut self, except: &[NodeIdentity]) -> Option<NodeIdentity> {
        let choices: Vec<NodeIdentity> = self.active().filter(|p| !except.contains(p)).collect();
        if choices.is_empty() {
            return None;
        }
        Some(choices[(self.random.next_u64() % choices.len() as u64) as usize])
    }

    fn sample_passive(&mut self, count: usize) -> Vec<PeerInfo> {
        let mut sample = self.passive.clone();
        self.shuffle_in_place(&mut sample);
        sample.truncate(count);
        sample
    }

    fn shuffle_in_place(&mut self, items: &mut [PeerInfo]) {
        for i in (1..items.len()).rev() {
            let j = (self.random.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
