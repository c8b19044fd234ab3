//! Local messaging benchmark: prints a table, asserts nothing.
//!
//! cargo bench -p netmachine-adapters --bench local_messaging
//!
//! 1. Engine-to-engine messages per second through the Router on the tokio
//!    runtime, beside a raw bounded tokio mpsc channel carrying the same
//!    messages, and their ratio.
//! 2. Signed EngineMessage encode+sign and decode+verify per second on one
//!    core.

use std::time::{Duration, Instant};

use bytes::Bytes;
use netmachine_adapters::codec::CborCodec;
use netmachine_adapters::codec::Codec;
use netmachine_adapters::crypto::{Ed25519Keys, RingVerifier};
use netmachine_adapters::runtime::{Inbound, Node};
use netmachine_domain::*;
use netmachine_engines::ports::{verify_signed, Signer};
use tokio::sync::mpsc;

const MESSAGES: u64 = 1_000_000;
const BODY_BYTES: usize = 64;
const MAILBOX: usize = 1024;
/// Rounds of each path, interleaved (router, raw, router, raw...), so that
/// the machine's drift touches both alike.
const ROUNDS: usize = 9;
const CRYPTO_OPS: usize = 20_000;

fn proto() -> ProtocolId {
    ProtocolId::new("bench", 1).expect("valid")
}

fn template(node: NodeIdentity) -> EngineMessage {
    EngineMessage {
        src: EngineIdentity::new(node, EngineName::new("sender").expect("valid")),
        dst: DestinationIdentity::Engine(EngineIdentity::new(node, EngineName::new("receiver").expect("valid"))),
        id: MessageId(0),
        reply_to: None,
        expiry: None,
        scope: RoutingScope::Any,
        prefs: None,
        protocol: proto(),
        body: Body::new(Bytes::from(vec![7u8; BODY_BYTES])).expect("small"),
        sig: None,
    }
}

async fn router_rate(node: &Node) -> f64 {
    let mut sender = node.register_engine("sender").expect("sender");
    let mut receiver = node.register_engine("receiver").expect("receiver");
    let dst =
        DestinationIdentity::Engine(EngineIdentity::new(node.identity(), EngineName::new("receiver").expect("valid")));
    let body = Bytes::from(vec![7u8; BODY_BYTES]);
    // Made once, as an engine keeps its protocol: the raw path below also
    // clones prepared values.
    let protocol = proto();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while n < MESSAGES {
            match receiver.recv().await {
                Some(Inbound::Message(_)) => n += 1,
                Some(_) => {}
                None => break,
            }
        }
        n
    });
    for _ in 0..MESSAGES {
        sender.send(dst.clone(), protocol.clone(), body.clone()).await.expect("routed");
    }
    let received = consumer.await.expect("consumer");
    assert_eq!(received, MESSAGES);
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

async fn raw_channel_rate(node: NodeIdentity) -> f64 {
    let (tx, mut rx) = mpsc::channel::<Inbound>(MAILBOX);
    let message = template(node);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(Inbound::Message(_)) = rx.recv().await {
            n += 1;
            if n == MESSAGES {
                break;
            }
        }
        n
    });
    for i in 0..MESSAGES {
        let mut m = message.clone();
        m.id = MessageId(i);
        tx.send(Inbound::Message(m)).await.expect("open");
    }
    assert_eq!(consumer.await.expect("consumer"), MESSAGES);
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn crypto_rates() -> (f64, f64, usize) {
    let keys = Ed25519Keys::generate().expect("keys");
    let codec = CborCodec::default();
    let base = template(keys.node_identity());
    let start = Instant::now();
    let mut frames = Vec::with_capacity(CRYPTO_OPS);
    for i in 0..CRYPTO_OPS {
        let mut m = base.clone();
        m.id = MessageId(i as u64);
        m.sig = Some(keys.sign(&m.signing_bytes()));
        let frame = NodeMessage {
            src: keys.node_identity(),
            dst: keys.node_identity(),
            payload: NodePayload::Engine(m),
            sig: None,
        };
        frames.push(codec.encode(&Frame::Node(frame)).expect("encodes"));
    }
    let encode_sign = CRYPTO_OPS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for bytes in &frames {
        let Ok(Frame::Node(NodeMessage { payload: NodePayload::Engine(m), .. })) = codec.decode(bytes) else {
            panic!("decodes")
        };
        verify_signed(&RingVerifier, &m).expect("verifies");
    }
    let decode_verify = CRYPTO_OPS as f64 / start.elapsed().as_secs_f64();
    (encode_sign, decode_verify, frames[0].len())
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How far a figure moved over the rounds: (lowest, highest) / median.
fn spread(values: &[f64]) -> (f64, f64) {
    let mid = median(values);
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    (low / mid, high / mid)
}

fn main() {
    // `cargo bench` passes flags such as --bench; nothing here takes any.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (router, raw) = runtime.block_on(async {
        let node = Node::builder().mailbox_capacity(MAILBOX).start().await.expect("node");
        let mut router = Vec::new();
        let mut raw = Vec::new();
        for _ in 0..ROUNDS {
            router.push(router_rate(&node).await);
            raw.push(raw_channel_rate(node.identity()).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.shutdown().await;
        (router, raw)
    });
    // The ratio of each round's pair, whose median is the figure judged:
    // both halves of a pair ran back to back, under the same conditions.
    let ratios: Vec<f64> = router.iter().zip(&raw).map(|(r, w)| r / w).collect();
    let (router_spread, raw_spread, ratio_spread) = (spread(&router), spread(&raw), spread(&ratios));
    let (router, raw, ratio) = (median(&router), median(&raw), median(&ratios));
    let (encode_sign, decode_verify, frame_len) = crypto_rates();

    println!("local messaging, {MESSAGES} messages of {BODY_BYTES}-byte bodies, mailbox {MAILBOX}, {ROUNDS} interleaved rounds of each, 2 tokio workers");
    println!();
    println!("| path                                  | messages/s (median) | lowest / highest round, of the median |");
    println!("|---------------------------------------|--------------------:|---------------------------------------|");
    println!("| raw bounded tokio mpsc                | {:>19.0} | {:.2} / {:.2} |", raw, raw_spread.0, raw_spread.1);
    println!(
        "| engine -> Router -> engine mailbox    | {:>19.0} | {:.2} / {:.2} |",
        router, router_spread.0, router_spread.1
    );
    println!();
    println!(
        "ratio to raw, median of the {ROUNDS} rounds' ratios: {ratio:.2} (lowest {:.2}, highest {:.2})",
        ratio * ratio_spread.0,
        ratio * ratio_spread.1
    );
    println!();
    println!("signed EngineMessage ({frame_len}-byte frame), one core, {CRYPTO_OPS} operations");
    println!();
    println!("| operation          | per second |");
    println!("|--------------------|-----------:|");
    println!("| encode + sign      | {:>10.0} |", encode_sign);
    println!("| decode + verify    | {:>10.0} |", decode_verify);
    let target = if ratio >= 0.5 { "met" } else { "NOT met" };
    println!();
    println!("target: Router path at least half the raw channel's rate: {target}");
}
