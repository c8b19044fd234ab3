//! Many peers at once: one node receiving bulk from 16 nodes, and one node
//! sending bulk to 16, all in this process on loopback QUIC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use netmachine_adapters::networked::NetworkedNode;
use netmachine_adapters::runtime::EngineHandle;
use netmachine_domain::{NodeIdentity, TransportProtocol};

use crate::{node, proto, recv_message, to, MIB};

/// What one run measured: the seconds until every byte arrived, and the
/// bytes each peer had moved when the first peer finished (while all were
/// still busy, so each could have had a fair share).
pub struct ManyPeers {
    pub total_secs: f64,
    pub bytes_per_peer: usize,
    pub peers: usize,
    pub moved_while_all_busy: Vec<usize>,
}

impl ManyPeers {
    pub fn aggregate_gbit(&self) -> f64 {
        (self.bytes_per_peer * self.peers * 8) as f64 / self.total_secs / 1e9
    }

    /// The peer that moved least while all were busy, as a share of the
    /// mean.
    pub fn slowest_share_of_fair(&self) -> f64 {
        let total: usize = self.moved_while_all_busy.iter().sum();
        let least = self.moved_while_all_busy.iter().copied().min().unwrap_or(0);
        if total == 0 {
            return 0.0;
        }
        least as f64 / (total as f64 / self.moved_while_all_busy.len() as f64)
    }
}

async fn introduce(a: &NetworkedNode, b: &NetworkedNode) {
    a.node.offer_node_advert(b.node.advert().expect("advert")).await.expect("advert");
    b.node.offer_node_advert(a.node.advert().expect("advert")).await.expect("advert");
}

async fn nodes(count: usize) -> Vec<NetworkedNode> {
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        nodes.push(node(TransportProtocol::Quic).await);
    }
    nodes
}

/// Receives until `expected` messages came from each of `senders`; the
/// messages each had delivered when the first of them was done.
async fn count_until_done(rx: &mut EngineHandle, senders: usize, expected: usize) -> Vec<usize> {
    let mut got: HashMap<NodeIdentity, usize> = HashMap::new();
    let mut when_first_done = None;
    let mut done = 0;
    while done < senders {
        let message = recv_message(rx).await;
        let n = got.entry(message.src.node).or_insert(0);
        *n += 1;
        if *n == expected {
            done += 1;
            if when_first_done.is_none() {
                let mut counts: Vec<usize> = got.values().copied().collect();
                counts.resize(senders, 0);
                when_first_done = Some(counts);
            }
        }
    }
    when_first_done.unwrap_or_default()
}

/// `peers` nodes each send `messages` bodies of 1 MiB to one node at once.
pub async fn receive_from(peers: usize, messages: usize) -> ManyPeers {
    let hub = node(TransportProtocol::Quic).await;
    let senders = nodes(peers).await;
    let mut rx = hub.node.register_engine("many-rx").expect("engine");
    let mut txs = Vec::new();
    for sender in &senders {
        introduce(&hub, sender).await;
        let mut tx = sender.node.register_engine("many-tx").expect("engine");
        tx.send(to(&hub, "many-rx"), proto(), Bytes::from_static(b"warm")).await.expect("send");
        recv_message(&mut rx).await;
        txs.push(tx);
    }
    let body = Bytes::from(vec![3u8; MIB]);
    let start = Instant::now();
    let dst = to(&hub, "many-rx");
    let sending: Vec<_> = txs
        .into_iter()
        .map(|mut tx| {
            let (dst, body) = (dst.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..messages {
                    tx.send(dst.clone(), proto(), body.clone()).await.expect("send");
                }
                tx
            })
        })
        .collect();
    let counts = count_until_done(&mut rx, peers, messages).await;
    let total_secs = start.elapsed().as_secs_f64();
    for task in sending {
        drop(task.await.expect("sender"));
    }
    for sender in senders {
        sender.shutdown().await;
    }
    hub.shutdown().await;
    let moved_while_all_busy = counts.into_iter().map(|n| n * MIB).collect();
    ManyPeers { total_secs, bytes_per_peer: messages * MIB, peers, moved_while_all_busy }
}

/// One node sends `messages` bodies of 1 MiB to each of `peers` nodes,
/// in turn.
pub async fn send_to(peers: usize, messages: usize) -> ManyPeers {
    let hub = node(TransportProtocol::Quic).await;
    let receivers = nodes(peers).await;
    let mut tx = hub.node.register_engine("many-tx").expect("engine");
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..peers).map(|_| AtomicUsize::new(0)).collect());
    let snapshot: Arc<OnceLock<Vec<usize>>> = Arc::default();
    let mut waiting = Vec::new();
    for (i, receiver) in receivers.iter().enumerate() {
        introduce(&hub, receiver).await;
        let mut rx = receiver.node.register_engine("many-rx").expect("engine");
        tx.send(to(receiver, "many-rx"), proto(), Bytes::from_static(b"warm")).await.expect("send");
        recv_message(&mut rx).await;
        let (counts, snapshot) = (Arc::clone(&counts), Arc::clone(&snapshot));
        waiting.push(tokio::spawn(async move {
            for _ in 0..messages {
                recv_message(&mut rx).await;
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
            // The first receiver done notes what every other had then.
            let _ = snapshot.set(counts.iter().map(|c| c.load(Ordering::Relaxed) * MIB).collect());
        }));
    }
    let body = Bytes::from(vec![3u8; MIB]);
    let dsts: Vec<_> = receivers.iter().map(|r| to(r, "many-rx")).collect();
    let start = Instant::now();
    for _ in 0..messages {
        for dst in &dsts {
            tx.send(dst.clone(), proto(), body.clone()).await.expect("send");
        }
    }
    for task in waiting {
        task.await.expect("receiver");
    }
    let total_secs = start.elapsed().as_secs_f64();
    for receiver in receivers {
        receiver.shutdown().await;
    }
    hub.shutdown().await;
    let moved_while_all_busy = snapshot.get().cloned().unwrap_or_default();
    ManyPeers { total_secs, bytes_per_peer: messages * MIB, peers, moved_while_all_busy }
}
