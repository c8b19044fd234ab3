//! The identity store survives restarts, and a crash in the middle of
//! writing leaves it readable.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use netmachine_adapters::crypto::Ed25519Keys;
use netmachine_adapters::runtime::{Node, IDENTITY_DB_FILE};
use netmachine_adapters::store::RecordStore;
use netmachine_adapters::store::RedbRecordStore;
use netmachine_domain::*;
use netmachine_engines::ports::Signer;

fn signed_node_advert(keys: &Ed25519Keys, version: u64) -> NodeAdvert {
    let address = "quic://127.0.0.1:4300".parse().expect("valid");
    let body = NodeAdvertBody::new(
        keys.node_identity(),
        vec![WeightedAddress { address, weight: 5 }],
        Some("peer"),
        version,
        Timestamp(1),
    )
    .expect("valid");
    Advert::from_parts(body.clone(), keys.sign(&NodeAdvert::signing_bytes_of(&body)))
}

#[tokio::test]
async fn a_restarted_node_keeps_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_keys = Ed25519Keys::generate().expect("keys");
    let pkcs8 = node_keys.pkcs8().to_vec();
    let peer = Ed25519Keys::generate().expect("keys");
    let banned = NodeIdentity::ed25519([9; 32]);

    let node = Node::builder().keys(node_keys).data_dir(dir.path()).start().await.expect("start");
    node.offer_node_advert(signed_node_advert(&peer, 7)).await.expect("accepted");
    node.set_trust(banned, Trust::BANNED).await.expect("ban");
    let engine = node.register_engine("owner").expect("engine");
    let topic = engine.create_topic(&["t"]).await.expect("topic");
    let first_own_version = node.advert().expect("own advert").version;
    let before = node.identity_records().await.expect("records").len();
    drop(engine);
    node.shutdown().await;
    drop(node);

    let again = Node::builder()
        .keys(Ed25519Keys::from_pkcs8(&pkcs8).expect("same key"))
        .data_dir(dir.path())
        .start()
        .await
        .expect("restart");
    let records = again.identity_records().await.expect("records");
    assert_eq!(records.len(), before);
    let peer_record = again.lookup(RecordKey::Node(peer.node_identity())).await.expect("lookup");
    match peer_record {
        Some(IdentityRecord::Node(r)) => assert_eq!(r.advert.map(|a| a.version), Some(7)),
        other => panic!("peer record lost: {other:?}"),
    }
    assert!(matches!(again.lookup(RecordKey::Topic(topic)).await.expect("lookup"), Some(IdentityRecord::Topic(_))));
    // The ban is remembered and applied to routing.
    match again.lookup(RecordKey::Node(banned)).await.expect("lookup") {
        Some(IdentityRecord::Node(r)) => assert!(r.trust.is_banned()),
        other => panic!("ban lost: {other:?}"),
    }
    // A stale advert is still stale after the restart.
    assert!(again.offer_node_advert(signed_node_advert(&peer, 7)).await.is_err());
    // The node's own advert version keeps rising across restarts.
    assert!(again.advert().expect("own advert").version > first_own_version);
    again.shutdown().await;
}

const CRASH_ENV: &str = "NETMACHINE_TEST_CRASH_WRITER_DB";

/// Run as a child process by `a_crash_mid_write_leaves_the_store_readable`
/// (which asks for ignored tests): writes records until killed, reporting
/// each committed one. It is not a test of its own.
#[test]
#[ignore = "the writer half of a_crash_mid_write_leaves_the_store_readable, run by it as a child"]
fn crash_writer_child() {
    let path = std::env::var(CRASH_ENV).expect("run by a_crash_mid_write_leaves_the_store_readable");
    let mut store = RedbRecordStore::open(std::path::Path::new(&path)).expect("open");
    for i in 0u32..100_000 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let mut record = NodeRecord::new(NodeIdentity::ed25519(key));
        record.trust = Trust((i % 250) as u8 + 1);
        store.put(&IdentityRecord::Node(record)).expect("put");
        println!("committed {i}");
    }
}

#[test]
fn a_crash_mid_write_leaves_the_store_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(IDENTITY_DB_FILE);
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_writer_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped");
    let mut committed = 0u32;
    for line in BufReader::new(stdout).lines().take(100_000) {
        let line = line.expect("utf-8 line");
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.parse::<u32>().expect("number") + 1;
            if committed >= 300 {
                break;
            }
        }
    }
    // SIGKILL: no destructor, no flush, possibly in the middle of a commit.
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(committed >= 300, "the writer stopped early after {committed} records");

    let store = RedbRecordStore::open(&path).expect("reopens after a crash");
    let (records, unreadable) = store.scan().expect("the table reads");
    assert!(unreadable.is_empty(), "every record decodes: {unreadable:?}");
    assert!(records.len() >= committed as usize, "{} records, {} committed", records.len(), committed);
    for record in &records {
        let IdentityRecord::Node(node) = record else { panic!("unexpected record") };
        let i = u32::from_be_bytes(node.id.key().as_ed25519().as_bytes()[..4].try_into().expect("4 bytes"));
        assert_eq!(node.trust, Trust((i % 250) as u8 + 1));
    }
}
