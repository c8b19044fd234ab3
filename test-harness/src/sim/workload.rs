//! The workload: unicasts between random nodes, topics with subscribers
//! and their events, and what was delivered of them. A node told to reach
//! a peer gets the peer's advert from the simulator's directory, as a real
//! node gets it from its configuration or from another peer.

use netmachine_domain::{
    Advert, Body, DestinationIdentity, EngineIdentity, EngineMessage, EngineName, MessageId, ProtocolId, Signature,
    Timestamp, TopicAdvert, TopicAdvertBody, TopicIdentity,
};
use netmachine_engines::identity_store::AdvertUpdate;
use netmachine_engines::ports::{Randomness, Signer};
use netmachine_engines::testing::{TestSigner, TestVerifier};

use super::ledger::{Sent, SETTLE_GRACE_US};
use super::model::unit;
use super::node::APP_NAME;
use super::scenario::Behaviour;
use super::{ms, Event, Simulation, Topic};

impl Simulation {
    pub(super) fn exponential_us(&mut self, per_second: f64) -> u64 {
        let u = 1.0 - unit(&mut self.random);
        ((-u.ln() / per_second) * 1e6) as u64 + 1
    }

    /// Gives node `n` the advert of node `peer` unless it holds one.
    pub(super) fn introduce(&mut self, n: u32, peer: u32) {
        let id = self.nodes[peer as usize].id;
        let held = self.nodes[n as usize].core.identities().node(&id).is_some_and(|r| r.advert.is_some());
        if !held {
            let advert = self.nodes[peer as usize].advert.clone();
            let _ = self.nodes[n as usize].core.offer_advert(AdvertUpdate::Node(advert), ms(self.now_us));
            self.drain(n);
        }
    }

    pub(super) fn setup_topics(&mut self) {
        let workload = self.scenario.workload.clone();
        let present = self.scenario.nodes;
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        for t in 0..workload.topics {
            let publisher = (self.random.next_u64() % u64::from(present)) as u32;
            let topic_signer = TestSigner(netmachine_domain::ExternalIdentity::ed25519({
                let mut key = [0xc0u8; 32];
                key[..4].copy_from_slice(&t.to_be_bytes());
                key
            }));
            let id = TopicIdentity::new(topic_signer.0);
            let Ok(body) =
                TopicAdvertBody::new(id, vec![self.nodes[publisher as usize].id], vec![], vec![], 1, Timestamp(0))
            else {
                continue;
            };
            let sig = topic_signer.sign(&TopicAdvert::signing_bytes_of(&body));
            let advert: TopicAdvert = Advert::from_parts(body, sig);
            {
                let core = &mut self.nodes[publisher as usize].core;
                let _ = core.router_mut().create_topic(&app, advert.clone(), &TestVerifier);
                core.created_topic(id);
                let _ = core.offer_advert(AdvertUpdate::Topic(advert.clone()), Timestamp(0));
            }
            self.drain(publisher);
            let mut subs = Vec::new();
            while subs.len() < workload.subscribers_per_topic.min(present - 1) as usize {
                let s = (self.random.next_u64() % u64::from(present)) as u32;
                if s != publisher && !subs.contains(&s) {
                    subs.push(s);
                }
            }
            self.topics.push(Topic { id, publisher });
            self.subscribers.push(subs.clone());
            for &s in &subs {
                self.introduce(s, publisher);
                let _ = self.nodes[s as usize].core.offer_advert(AdvertUpdate::Topic(advert.clone()), Timestamp(0));
                self.drain(s);
                self.subscribe(s, id);
            }
            if workload.events_per_topic_per_s > 0.0 {
                let first = self.exponential_us(workload.events_per_topic_per_s);
                self.queue.push(first + 2_000_000, Event::Publish(t));
            }
        }
    }

    /// Node `n`'s application subscribes to a topic (at the start, and
    /// again after a restart: subscriptions live in memory).
    pub(super) fn subscribe(&mut self, n: u32, topic: TopicIdentity) {
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let _ = self.nodes[n as usize].core.subscribe(&app, &topic, ms(self.now_us));
        self.drain(n);
    }

    /// A node other than `n`, chosen at random.
    pub(super) fn random_peer_of(&mut self, n: u32) -> u32 {
        let total = self.nodes.len() as u64;
        let to = (self.random.next_u64() % total) as u32;
        if to == n {
            (to + 1) % total as u32
        } else {
            to
        }
    }

    pub(super) fn unicast(&mut self, n: u32) {
        let rate = self.scenario.workload.unicast_per_node_per_s;
        let flood = self.nodes[n as usize].behaviour == Some(Behaviour::Flood);
        let next = self.exponential_us(if flood { rate * 100.0 } else { rate });
        if self.now_us + next < self.traffic_end_us {
            self.queue.push(self.now_us + next, Event::Unicast(n));
        }
        let node = &self.nodes[n as usize];
        if !node.alive || !node.present {
            return;
        }
        let to = self.destination_of(n);
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let ttl = self.scenario.workload.ttl_ms;
        let expiry = ms(self.now_us).saturating_add_millis(ttl);
        let node = &mut self.nodes[n as usize];
        let id = node.next_message_id;
        node.next_message_id += 1;
        let Ok(body) = Body::new(vec![0u8; self.scenario.workload.body_bytes]) else { return };
        let Ok(protocol) = ProtocolId::new("sim/unicast", 1) else { return };
        let src = EngineIdentity::new(node.id, app.clone());
        let dst = DestinationIdentity::Engine(EngineIdentity::new(self.nodes[to as usize].id, app));
        let mut message = EngineMessage::new(src, dst, MessageId(id), protocol, body);
        message.expiry = Some(expiry);
        if self.nodes[n as usize].behaviour == Some(Behaviour::BadSignatures) {
            message.sig = Some(Signature::Ed25519(Box::new([0x66; 64])));
        }
        let sent = Sent { at_us: self.now_us, to, expiry_ms: expiry.0, delivered: 0, told: false };
        let settle_at = expiry.0.saturating_mul(1000).saturating_add(SETTLE_GRACE_US);
        self.ledger.open(n, id, sent, settle_at);
        let second = self.second();
        Self::bump(&mut self.results.series.sent, second);
        self.introduce(n, to);
        self.send(n, message);
    }

    pub(super) fn publish(&mut self, t: u32) {
        let rate = self.scenario.workload.events_per_topic_per_s;
        let next = self.exponential_us(rate);
        if self.now_us + next < self.traffic_end_us {
            self.queue.push(self.now_us + next, Event::Publish(t));
        }
        let topic = self.topics[t as usize];
        let node = &mut self.nodes[topic.publisher as usize];
        if !node.alive {
            return;
        }
        let Ok(app) = EngineName::new(APP_NAME) else { return };
        let id = node.next_message_id;
        node.next_message_id += 1;
        let (Ok(body), Ok(protocol)) =
            (Body::new(vec![1u8; self.scenario.workload.body_bytes]), ProtocolId::new("sim/event", 1))
        else {
            return;
        };
        let src = EngineIdentity::new(node.id, app);
        let mut message = EngineMessage::new(src, DestinationIdentity::Topic(topic.id), MessageId(id), protocol, body);
        message.expiry = Some(ms(self.now_us).saturating_add_millis(self.scenario.workload.ttl_ms));
        let expected = self.subscribers[t as usize].len() as u64;
        self.events_published.insert((topic.publisher, id), (self.now_us, expected, t));
        self.send(topic.publisher, message);
    }

    /// Node `n`'s application sends; a message refused at once is one its
    /// sender was told about.
    fn send(&mut self, n: u32, message: EngineMessage) {
        let key = (n, message.id.0);
        if self.nodes[n as usize].core.send(message, ms(self.now_us)).is_err() {
            if let Some(sent) = self.ledger.get_mut(key.0, key.1) {
                sent.told = true;
            }
        }
        self.drain(n);
    }

    pub(super) fn unicast_delivered(&mut self, from: u32, id: u64) {
        let Some(sent) = self.ledger.get_mut(from, id) else {
            // Its record was settled, which is only done past its expiry.
            self.results.unicast.delivered_after_expiry += 1;
            return;
        };
        sent.delivered += 1;
        if self.now_us / 1000 >= sent.expiry_ms {
            self.results.unicast.delivered_after_expiry += 1;
        }
        if sent.delivered == 1 {
            self.unicast_latency_us.push(self.now_us - sent.at_us);
            Self::bump(&mut self.results.series.delivered, (self.now_us / 1_000_000) as usize);
        }
    }

    pub(super) fn event_delivered(&mut self, publisher: u32, id: u64, to: u32, expiry: Option<Timestamp>) {
        let entry = self.pubsub_delivered.entry((publisher, id, to)).or_insert(0);
        *entry += 1;
        if *entry == 1 {
            if let Some((at, _, _)) = self.events_published.get(&(publisher, id)) {
                self.pubsub_latency_us.push(self.now_us - at);
            }
        }
        if expiry.is_some_and(|e| ms(self.now_us) >= e) {
            self.results.pubsub.delivered_after_expiry += 1;
        }
    }
}
