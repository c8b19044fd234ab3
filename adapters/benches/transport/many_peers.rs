//! Many peers at once: one node receiving bulk from 16 nodes, and one node
//! sending bulk to 16, all in this process on loopback QUIC. The 16 peers
//! run on tokio threads of their own, as peers in other processes would,
//! apart from the node's; the two cores are shared all the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use netmachine_adapters::networked::NetworkedNode;
use netmachine_adapters::runtime::EngineHandle;
use netmachine_domain::{NodeIdentity, TransportProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The runtime the 16 peers of a node run on: threads of their own, as
/// peers in other processes would have, so that the node's own tokio
/// workers do not also schedule its peers' endpoints. Never dropped.
fn peers_runtime() -> &'static tokio::runtime::Runtime {
    static PEERS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    PEERS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    })
}

/// `peers` nodes each send `messages` bodies of 1 MiB to one node at once.
pub async fn receive_from(peers: usize, messages: usize) -> ManyPeers {
    let hub = node(TransportProtocol::Quic).await;
    let senders = peers_runtime().spawn(nodes(peers)).await.expect("peers");
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
            let send = async move {
                for _ in 0..messages {
                    tx.send(dst.clone(), proto(), body.clone()).await.expect("send");
                }
                tx
            };
            peers_runtime().spawn(send)
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
    let receivers = peers_runtime().spawn(nodes(peers)).await.expect("peers");
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
        waiting.push(peers_runtime().spawn(async move {
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

/// The same as [`receive_from`] on raw s2n-quic with netmachine's setup:
/// `peers` endpoints each write `messages` MiB on one stream to one
/// endpoint at once, whose readers count bytes. What the stack and this
/// process's two cores give before any of netmachine is involved.
pub async fn raw_receive_from(peers: usize, messages: usize) -> ManyPeers {
    let (hub, mut accepted, hub_id) = crate::raw_pair().await;
    let mut writers = Vec::with_capacity(peers);
    let mut readers = Vec::with_capacity(peers);
    let mut clients = Vec::with_capacity(peers);
    for _ in 0..peers {
        let client = peers_runtime().spawn(crate::raw_client()).await.expect("peer");
        let (out, inbound) = crate::warm_stream(&*client, &*hub, hub_id, &mut accepted).await;
        writers.push(out.writer);
        readers.push(inbound.reader);
        clients.push(client);
    }
    let total = messages * MIB;
    let moved: Arc<Vec<AtomicUsize>> = Arc::new((0..peers).map(|_| AtomicUsize::new(0)).collect());
    let snapshot: Arc<OnceLock<Vec<usize>>> = Arc::default();
    let start = Instant::now();
    let reading: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, mut reader)| {
            let (moved, snapshot) = (Arc::clone(&moved), Arc::clone(&snapshot));
            tokio::spawn(async move {
                let mut buf = vec![0u8; MIB];
                let mut got = 0;
                while got < total {
                    let n = reader.read(&mut buf).await.expect("read");
                    assert!(n > 0, "raw stream ended early");
                    got += n;
                    moved[i].fetch_add(n, Ordering::Relaxed);
                }
                let _ = snapshot.set(moved.iter().map(|m| m.load(Ordering::Relaxed)).collect());
            })
        })
        .collect();
    let chunk = Bytes::from(vec![7u8; MIB]);
    let writing: Vec<_> = writers
        .into_iter()
        .map(|mut writer| {
            let chunk = chunk.clone();
            let write = async move {
                for _ in 0..messages {
                    writer.write_all(&chunk).await.expect("write");
                }
                writer.flush().await.expect("flush");
                writer
            };
            peers_runtime().spawn(write)
        })
        .collect();
    for task in reading {
        task.await.expect("reader");
    }
    let total_secs = start.elapsed().as_secs_f64();
    for task in writing {
        drop(task.await.expect("writer"));
    }
    drop((clients, hub));
    let moved_while_all_busy = snapshot.get().cloned().unwrap_or_default();
    ManyPeers { total_secs, bytes_per_peer: total, peers, moved_while_all_busy }
}
