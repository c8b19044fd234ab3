//! Requests from outsiders to a domain's protocols. A member named in the
//! domain advert takes a request for `(domain, protocol)`, hands it to the
//! local engine serving that protocol, and returns its answer. Each
//! requesting node gets a share of the rate, and each domain a total;
//! requests handed on and not yet answered are capped, and each waits at
//! most the external timeout.

use std::collections::HashMap;

use netmachine_domain::{DomainAdvert, DomainIdentity, EngineName, MessageId, NodeIdentity, Timestamp};

use super::messages::{ExternalError, Outcome, Wire};
use super::{DomainEngine, Timer};
use crate::engine::Effect;
use crate::ports::Randomness;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalLimits {
    /// Requests one node may send per second.
    pub per_requester_per_s: u32,
    /// Requests one domain takes per second, from every node together.
    pub per_domain_per_s: u32,
    /// Requesters whose rate is counted at once.
    pub max_requesters: usize,
    /// Protocols local engines serve, in every domain together.
    pub max_served: usize,
}

impl Default for ExternalLimits {
    fn default() -> Self {
        Self { per_requester_per_s: 10, per_domain_per_s: 100, max_requesters: 4096, max_served: 256 }
    }
}

/// A fixed one-second window and what it counted.
#[derive(Debug, Clone, Copy)]
struct Window {
    second: u64,
    count: u32,
}

impl Window {
    fn take(&mut self, now: Timestamp, limit: u32) -> bool {
        let second = now.0 / 1000;
        if second != self.second {
            *self = Self { second, count: 0 };
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

#[derive(Debug)]
pub(super) struct External {
    limits: ExternalLimits,
    served: HashMap<(DomainIdentity, String), EngineName>,
    requesters: HashMap<NodeIdentity, Window>,
    domains: HashMap<DomainIdentity, Window>,
    /// Requests of local engines, waiting for a member's answer.
    outgoing: HashMap<u64, (NodeIdentity, EngineName, MessageId)>,
    /// Outsiders' requests handed to local engines: who asked, under
    /// which id.
    incoming: HashMap<u64, (NodeIdentity, u64)>,
}

impl External {
    pub(super) fn new(limits: ExternalLimits) -> Self {
        Self {
            limits,
            served: HashMap::new(),
            requesters: HashMap::new(),
            domains: HashMap::new(),
            outgoing: HashMap::new(),
            incoming: HashMap::new(),
        }
    }

    pub(super) fn serve(&mut self, domain: DomainIdentity, protocol: String, engine: EngineName) -> Outcome {
        let key = (domain, protocol);
        if !self.served.contains_key(&key) && self.served.len() >= self.limits.max_served {
            return Outcome::Failed(format!("{} protocols are served already", self.limits.max_served));
        }
        self.served.insert(key, engine);
        Outcome::Done
    }

    fn admit(&mut self, requester: NodeIdentity, domain: DomainIdentity, now: Timestamp) -> bool {
        if !self.requesters.contains_key(&requester) && self.requesters.len() >= self.limits.max_requesters {
            let second = now.0 / 1000;
            self.requesters.retain(|_, w| w.second == second);
            if self.requesters.len() >= self.limits.max_requesters {
                return false;
            }
        }
        let mine = self.requesters.entry(requester).or_insert(Window { second: now.0 / 1000, count: 0 });
        if !mine.take(now, self.limits.per_requester_per_s) {
            return false;
        }
        let total = self.domains.entry(domain).or_insert(Window { second: now.0 / 1000, count: 0 });
        total.take(now, self.limits.per_domain_per_s)
    }
}

impl DomainEngine {
    fn fresh_id(&mut self) -> u64 {
        let mut id = self.random.next_u64();
        while self.external.outgoing.contains_key(&id) || self.external.incoming.contains_key(&id) {
            id = self.random.next_u64();
        }
        id
    }

    fn pending_external(&self) -> usize {
        self.external.outgoing.len() + self.external.incoming.len()
    }

    /// A local engine's request to a member of `advert`'s domain.
    pub(super) fn request(
        &mut self,
        advert: DomainAdvert,
        protocol: String,
        body: Vec<u8>,
        asker: Option<(EngineName, MessageId)>,
        now: Timestamp,
    ) {
        let Some((engine, message)) = asker else { return };
        let asker = Some((engine.clone(), message));
        if !self.signed_by_domain(&advert) {
            self.tell(&asker, &Outcome::Failed("the domain advert's signature does not verify".into()));
            return;
        }
        let members: Vec<NodeIdentity> = advert.nodes.iter().copied().filter(|n| *n != self.node).collect();
        if members.is_empty() {
            self.tell(&asker, &Outcome::Failed("the domain advert names no member that answers requests".into()));
            return;
        }
        if self.pending_external() >= self.config.max_external_pending {
            self.tell(&asker, &Outcome::ExternalFailed(ExternalError::Busy));
            return;
        }
        let member = members[(self.random.next_u64() % members.len() as u64) as usize];
        let id = self.fresh_id();
        self.external.outgoing.insert(id, (member, engine, message));
        self.timers.set(Timer::Outgoing(id), now.saturating_add_millis(self.config.external_timeout_ms));
        self.send(member, &Wire::Request { id, domain: advert.id, protocol, body });
    }

    /// An outsider's request at this member.
    pub(super) fn incoming(
        &mut self,
        peer: NodeIdentity,
        id: u64,
        domain: DomainIdentity,
        protocol: String,
        body: Vec<u8>,
        now: Timestamp,
    ) {
        let refusal = if !self.memberships.contains_key(&domain) {
            Some(ExternalError::NotMember)
        } else if !self.external.admit(peer, domain, now) {
            Some(ExternalError::RateLimited)
        } else if !self.external.served.contains_key(&(domain, protocol.clone())) {
            Some(ExternalError::UnknownProtocol)
        } else if self.pending_external() >= self.config.max_external_pending {
            Some(ExternalError::Busy)
        } else {
            None
        };
        if let Some(err) = refusal {
            self.counters.external_refused += 1;
            self.send(peer, &Wire::Response { id, result: Err(err) });
            return;
        }
        let Some(engine) = self.external.served.get(&(domain, protocol.clone())).cloned() else { return };
        let local = self.fresh_id();
        self.external.incoming.insert(local, (peer, id));
        self.timers.set(Timer::Incoming(local), now.saturating_add_millis(self.config.external_timeout_ms));
        let outcome = Outcome::Incoming { id: local, domain, requester: peer, protocol, body };
        self.effects.push_back(Effect::Deliver { to: engine, reply_to: None, body: outcome.encode() });
    }

    /// A local engine answered an outsider's request.
    pub(super) fn answered(&mut self, id: u64, body: Vec<u8>) {
        let Some((peer, remote)) = self.external.incoming.remove(&id) else { return };
        self.timers.cancel(&Timer::Incoming(id));
        self.counters.external_served += 1;
        self.send(peer, &Wire::Response { id: remote, result: Ok(body) });
    }

    /// A member answered a local engine's request.
    pub(super) fn response(&mut self, peer: NodeIdentity, id: u64, result: Result<Vec<u8>, ExternalError>) {
        if self.external.outgoing.get(&id).is_none_or(|(member, _, _)| *member != peer) {
            return;
        }
        let Some((_, engine, message)) = self.external.outgoing.remove(&id) else { return };
        self.timers.cancel(&Timer::Outgoing(id));
        let outcome = match result {
            Ok(body) => Outcome::Answered(body),
            Err(err) => Outcome::ExternalFailed(err),
        };
        self.tell(&Some((engine, message)), &outcome);
    }

    pub(super) fn outgoing_timed_out(&mut self, id: u64) {
        if let Some((_, engine, message)) = self.external.outgoing.remove(&id) {
            self.tell(&Some((engine, message)), &Outcome::ExternalFailed(ExternalError::TimedOut));
        }
    }

    pub(super) fn incoming_timed_out(&mut self, id: u64) {
        if let Some((peer, remote)) = self.external.incoming.remove(&id) {
            self.send(peer, &Wire::Response { id: remote, result: Err(ExternalError::TimedOut) });
        }
    }
}
