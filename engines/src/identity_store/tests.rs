use netmachine_domain::strategies;
use netmachine_domain::*;
use proptest::prelude::*;

use super::*;
use crate::ports::Signer;
use crate::testing::{TestSigner, TestVerifier};

const NOW: Timestamp = Timestamp(10_000_000);

fn own() -> NodeIdentity {
    NodeIdentity::new(TestSigner::node(1).0)
}

/// What the host has made durable.
type Disk = std::collections::BTreeMap<RecordKey, IdentityRecord>;

fn open(disk: &Disk) -> IdentityStore {
    IdentityStore::open(own(), IdentityStoreConfig::default(), disk.values().cloned().collect())
}

/// Does what the node does with a change: write it, then commit it.
fn persist(
    ids: &mut IdentityStore,
    disk: &mut Disk,
    change: impl FnOnce(&mut IdentityStore) -> Result<Persist, UpdateError>,
) -> Result<Accepted, UpdateError> {
    let change = change(ids)?;
    disk.insert(change.record().key(), change.record().clone());
    ids.commit(change)
}

fn node_advert(seed: u8, version: u64) -> NodeAdvert {
    let signer = TestSigner::node(seed);
    let addr: TransportAddress = "quic://127.0.0.1:4100".parse().expect("valid");
    let body = NodeAdvertBody::new(
        NodeIdentity::new(signer.0),
        vec![WeightedAddress { address: addr, weight: 10 }],
        Some("test"),
        version,
        NOW,
    )
    .expect("valid");
    let sig = signer.sign(&NodeAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

fn topic_advert(seed: u8, version: u64) -> TopicAdvert {
    let signer = TestSigner::node(seed);
    let body = TopicAdvertBody::new(TopicIdentity::new(signer.0), vec![own()], vec![], vec!["t"], version, NOW)
        .expect("valid");
    let sig = signer.sign(&TopicAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

fn domain_advert(seed: u8, version: u64) -> DomainAdvert {
    let signer = TestSigner::node(seed);
    let body = DomainAdvertBody::new(DomainIdentity::new(signer.0), vec![own()], JoinPolicy::Open, version, NOW)
        .expect("valid");
    let sig = signer.sign(&DomainAdvert::signing_bytes_of(&body));
    Advert::from_parts(body, sig)
}

#[test]
fn a_valid_advert_is_stored_persisted_and_announced() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    assert!(ids.subscribe(EngineName::new("watcher").expect("valid")));
    let advert = node_advert(2, 1);
    let accepted =
        persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier))
            .expect("ok");
    assert_eq!(accepted.notify, vec![EngineName::new("watcher").expect("valid")]);
    assert_eq!(accepted.event.key, RecordKey::Node(advert.id));
    let record = ids.node(&advert.id).expect("stored");
    assert_eq!(record.advert.as_ref(), Some(&advert));
    assert_eq!(record.trust, Trust::DEFAULT);
    assert_eq!(disk.len(), 1);
}

#[test]
fn every_kind_of_advert_is_kept() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    let t = topic_advert(3, 1);
    let d = domain_advert(4, 1);
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Topic(t.clone()), NOW, &TestVerifier))
        .expect("topic");
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Domain(d.clone()), NOW, &TestVerifier))
        .expect("domain");
    let engine = EngineRecord { engine: EngineIdentity::new(own(), EngineName::new("app").expect("valid")), key: None };
    persist(&mut ids, &mut disk, |ids| ids.put_engine(engine.clone())).expect("engine");
    assert_eq!(ids.lookup(&RecordKey::Topic(t.topic)), Some(&IdentityRecord::Topic(t)));
    assert_eq!(ids.lookup(&RecordKey::Domain(d.id)), Some(&IdentityRecord::Domain(d)));
    assert_eq!(ids.lookup(&RecordKey::Engine(engine.engine.clone())), Some(&IdentityRecord::Engine(engine)));
}

#[test]
fn stale_versions_are_refused_and_change_nothing() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 5)), NOW, &TestVerifier))
        .expect("v5");
    let before = disk.clone();
    for stale in [5, 4, 0] {
        let err = persist(&mut ids, &mut disk, |ids| {
            ids.apply_advert(AdvertUpdate::Node(node_advert(2, stale)), NOW, &TestVerifier)
        });
        assert!(matches!(err, Err(UpdateError::Rule { source: RuleError::StaleVersion { .. }, .. })), "{err:?}");
    }
    assert_eq!(disk, before);
    let held = ids.node(&node_advert(2, 5).id).and_then(|r| r.advert.clone()).expect("held");
    assert_eq!(held.version, 5);
}

#[test]
fn forged_adverts_are_refused_and_change_nothing() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    let mut forged = node_advert(2, 1);
    forged.body.version = 2;
    let err = persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(forged), NOW, &TestVerifier));
    assert!(matches!(err, Err(UpdateError::Signature { .. })));
    assert!(ids.is_empty());
    assert!(disk.is_empty());
}

#[test]
fn adverts_from_the_future_are_refused() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    let advert = node_advert(2, 1);
    let long_before = Timestamp(NOW.0 - netmachine_domain::limits::MAX_CLOCK_SKEW_MS - 1);
    let err =
        persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(advert), long_before, &TestVerifier));
    assert!(matches!(err, Err(UpdateError::Rule { source: RuleError::FromTheFuture { .. }, .. })));
}

#[test]
fn trust_zero_bans_and_banned_adverts_are_refused() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    let advert = node_advert(2, 1);
    assert_eq!(ids.trust(&advert.id), Trust::DEFAULT);
    persist(&mut ids, &mut disk, |ids| ids.set_trust(advert.id, Trust::BANNED)).expect("ban");
    assert!(ids.is_banned(&advert.id));
    let err = persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(advert), NOW, &TestVerifier));
    assert!(matches!(err, Err(UpdateError::Banned { .. })));
}

#[test]
fn own_record_has_full_trust_and_cannot_be_replaced_from_outside() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    let mine = node_advert(1, 1);
    persist(&mut ids, &mut disk, |ids| ids.set_own_advert(mine.clone(), &TestVerifier)).expect("own");
    assert_eq!(ids.trust(&own()), Trust::OWN);
    let newer = node_advert(1, 9);
    let err = persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(newer), NOW, &TestVerifier));
    assert!(matches!(err, Err(UpdateError::OwnRecord { .. })));
    assert_eq!(ids.node(&own()).and_then(|r| r.advert.clone()), Some(mine));
}

#[test]
fn nothing_changes_or_is_announced_until_the_change_is_committed() {
    let mut ids = open(&Disk::new());
    assert!(ids.subscribe(EngineName::new("watcher").expect("valid")));
    let advert = node_advert(2, 1);
    let change = ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier).expect("valid");
    assert!(ids.is_empty(), "a checked change is not applied before it is persisted");
    assert_eq!(change.record().key(), RecordKey::Node(advert.id));
    // The host's write failed: it hands the change back, and the store is
    // as it was.
    ids.abandon(&change);
    assert!(ids.is_empty());
    assert_eq!(ids.staged_count(), 0);
    let change = ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier).expect("valid");
    let accepted = ids.commit(change).expect("fits");
    assert_eq!(accepted.notify, vec![EngineName::new("watcher").expect("valid")]);
    assert_eq!(ids.node(&advert.id).and_then(|r| r.advert.as_ref()), Some(&advert));
}

#[test]
fn new_records_waiting_for_the_disk_count_against_the_table() {
    let config = IdentityStoreConfig { max_records: 1, ..Default::default() };
    let mut ids = IdentityStore::open(own(), config, Vec::new());
    let first = ids.apply_advert(AdvertUpdate::Node(node_advert(2, 1)), NOW, &TestVerifier).expect("fits");
    let second = ids.apply_advert(AdvertUpdate::Node(node_advert(3, 1)), NOW, &TestVerifier);
    assert!(matches!(second, Err(UpdateError::Full { max: 1, .. })), "{second:?}");
    // The first never reached the disk: its room is free again.
    ids.abandon(&first);
    assert_eq!(ids.staged_count(), 0);
    let third = ids.apply_advert(AdvertUpdate::Node(node_advert(3, 1)), NOW, &TestVerifier).expect("fits now");
    ids.commit(third).expect("commits");
    assert_eq!(ids.len(), 1);
}

#[test]
fn a_change_builds_on_the_changes_still_waiting_for_the_disk() {
    let mut ids = IdentityStore::open(own(), IdentityStoreConfig::default(), Vec::new());
    let advert = node_advert(2, 5);
    let first = ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier).expect("new");
    // The same version again, before the first is committed: stale.
    let again = ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier);
    assert!(matches!(again, Err(UpdateError::Rule { .. })), "{again:?}");
    // A trust change made meanwhile keeps the advert waiting before it.
    let trust = ids.set_trust(advert.id, Trust(7)).expect("trust");
    ids.commit(first).expect("first");
    ids.commit(trust).expect("trust");
    let held = ids.node(&advert.id).expect("held");
    assert_eq!(held.advert.as_ref(), Some(&advert));
    assert_eq!(held.trust, Trust(7));
    assert_eq!(ids.staged_count(), 0, "committed changes wait no more");
}

#[test]
fn committed_state_is_what_readers_see() {
    let mut ids = IdentityStore::open(own(), IdentityStoreConfig::default(), Vec::new());
    let advert = node_advert(2, 5);
    let change = ids.apply_advert(AdvertUpdate::Node(advert.clone()), NOW, &TestVerifier).expect("new");
    assert!(ids.node(&advert.id).is_none(), "not on disk yet, so not announced or read");
    ids.abandon(&change);
    let again = ids.apply_advert(AdvertUpdate::Node(advert), NOW, &TestVerifier);
    assert!(again.is_ok(), "an abandoned change does not block the same one later");
}

#[test]
fn the_store_is_bounded() {
    let mut disk = Disk::new();
    let config = IdentityStoreConfig { max_records: 2, ..Default::default() };
    let mut ids = IdentityStore::open(own(), config, disk.values().cloned().collect());
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 1)), NOW, &TestVerifier))
        .expect("1");
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(3, 1)), NOW, &TestVerifier))
        .expect("2");
    let err =
        persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(4, 1)), NOW, &TestVerifier));
    assert!(matches!(err, Err(UpdateError::Full { .. })));
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 2)), NOW, &TestVerifier))
        .expect("update fits");
}

#[test]
fn reopening_restores_every_record() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 3)), NOW, &TestVerifier))
        .expect("node");
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Topic(topic_advert(3, 1)), NOW, &TestVerifier))
        .expect("topic");
    persist(&mut ids, &mut disk, |ids| ids.set_trust(NodeIdentity::ed25519([7; 32]), Trust(200))).expect("trust");
    let reopened = open(&disk);
    assert_eq!(reopened.len(), 3);
    assert_eq!(reopened.trust(&NodeIdentity::ed25519([7; 32])), Trust(200));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Node,
    Topic,
    Domain,
}

#[derive(Debug, Clone)]
enum Offer {
    Valid { kind: Kind, seed: u8, version: u64 },
    Forged { kind: Kind, seed: u8, version: u64 },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Node), Just(Kind::Topic), Just(Kind::Domain)]
}

fn offer() -> impl Strategy<Value = Offer> {
    prop_oneof![
        (kind(), 2u8..6, 0u64..20).prop_map(|(kind, seed, version)| Offer::Valid { kind, seed, version }),
        (kind(), 2u8..6, 0u64..20).prop_map(|(kind, seed, version)| Offer::Forged { kind, seed, version }),
    ]
}

/// A validly signed advert of `kind`, or one whose version was changed
/// after signing.
fn advert_of(kind: Kind, seed: u8, version: u64, forged: bool) -> AdvertUpdate {
    let signed_version = if forged { version + 1 } else { version };
    match kind {
        Kind::Node => {
            let mut a = node_advert(seed, signed_version);
            a.body.version = version;
            AdvertUpdate::Node(a)
        }
        Kind::Topic => {
            let mut a = topic_advert(seed, signed_version);
            a.body.version = version;
            AdvertUpdate::Topic(a)
        }
        Kind::Domain => {
            let mut a = domain_advert(seed, signed_version);
            a.body.version = version;
            AdvertUpdate::Domain(a)
        }
    }
}

fn held_version(ids: &IdentityStore, update: &AdvertUpdate) -> Option<u64> {
    match ids.lookup(&update.key())? {
        IdentityRecord::Node(r) => r.advert.as_ref().map(|a| a.version),
        IdentityRecord::Topic(a) => Some(a.version),
        IdentityRecord::Domain(a) => Some(a.version),
        IdentityRecord::Engine(_) => None,
    }
}

proptest! {
    /// Whatever adverts of nodes, topics and domains arrive, in any order,
    /// the store holds for each subject the highest version among the
    /// validly signed ones, a forged or stale offer is always refused, and
    /// a store reopened from disk holds exactly the same records.
    #[test]
    fn the_store_keeps_the_highest_valid_version(offers in proptest::collection::vec(offer(), 0..60)) {
        let mut disk = Disk::new();
        let mut ids = open(&disk);
        let mut highest: std::collections::HashMap<(Kind, u8), u64> = Default::default();
        for offer in offers {
            match offer {
                Offer::Valid { kind, seed, version } => {
                    let outcome = persist(&mut ids, &mut disk, |ids| ids.apply_advert(advert_of(kind, seed, version, false), NOW, &TestVerifier));
                    let should_accept = highest.get(&(kind, seed)).is_none_or(|h| version > *h);
                    prop_assert_eq!(outcome.is_ok(), should_accept, "{:?} {} v{}: {:?}", kind, seed, version, outcome);
                    if should_accept {
                        highest.insert((kind, seed), version);
                    }
                }
                Offer::Forged { kind, seed, version } => {
                    let outcome = persist(&mut ids, &mut disk, |ids| ids.apply_advert(advert_of(kind, seed, version, true), NOW, &TestVerifier));
                    prop_assert!(outcome.is_err());
                }
            }
        }
        for ((kind, seed), version) in &highest {
            let probe = advert_of(*kind, *seed, *version, false);
            prop_assert_eq!(held_version(&ids, &probe), Some(*version));
        }
        prop_assert_eq!(ids.len(), highest.len());
        let reopened = open(&disk);
        let mut in_memory: Vec<&IdentityRecord> = ids.records().collect();
        let mut from_disk: Vec<&IdentityRecord> = reopened.records().collect();
        prop_assert_eq!(in_memory.len(), highest.len());
        in_memory.sort_by_key(|r| r.key());
        from_disk.sort_by_key(|r| r.key());
        prop_assert_eq!(in_memory, from_disk);
    }

    /// Adverts with random signatures never get in.
    #[test]
    fn random_signatures_never_verify(body in strategies::node_advert_body(), sig in strategies::signature()) {
        let mut disk = Disk::new();
        let mut ids = open(&disk);
        let advert = Advert::from_parts(body, sig);
        prop_assert!(persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(advert), Timestamp(u64::MAX / 2), &TestVerifier)).is_err());
        prop_assert!(ids.is_empty());
    }
}

#[test]
fn subscribers_are_bounded_and_leave_when_they_unsubscribe() {
    let mut disk = Disk::new();
    let config = IdentityStoreConfig { max_subscribers: 1, ..Default::default() };
    let mut ids = IdentityStore::open(own(), config, disk.values().cloned().collect());
    let watcher = EngineName::new("watcher").expect("valid");
    let late = EngineName::new("late").expect("valid");
    assert!(ids.subscribe(watcher.clone()));
    assert!(ids.subscribe(watcher.clone()), "subscribing again takes no new room");
    assert!(!ids.subscribe(late.clone()), "the table is full");
    let accepted =
        persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 1)), NOW, &TestVerifier))
            .expect("ok");
    assert_eq!(accepted.notify, vec![watcher.clone()]);
    ids.unsubscribe(&watcher);
    let accepted =
        persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 2)), NOW, &TestVerifier))
            .expect("ok");
    assert!(accepted.notify.is_empty(), "{:?}", accepted.notify);
    assert!(ids.subscribe(late), "room again");
}

#[test]
fn before_its_own_advert_is_set_the_node_takes_other_adverts_as_usual() {
    let mut disk = Disk::new();
    let mut ids = open(&disk);
    assert!(ids.is_empty());
    // Another node's advert while this node has none of its own yet, and
    // after it has one: both accepted.
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(2, 1)), NOW, &TestVerifier))
        .expect("before");
    assert!(!ids.is_empty());
    persist(&mut ids, &mut disk, |ids| ids.set_own_advert(node_advert(1, 1), &TestVerifier)).expect("own");
    persist(&mut ids, &mut disk, |ids| ids.apply_advert(AdvertUpdate::Node(node_advert(3, 1)), NOW, &TestVerifier))
        .expect("after");
    assert_eq!(ids.len(), 3);
}

fn with_cache(budget: CacheBudget) -> IdentityStore {
    IdentityStore::open(own(), IdentityStoreConfig { cache: budget, ..IdentityStoreConfig::default() }, Vec::new())
}

fn topics_only(records: usize, per_source: usize) -> CacheBudget {
    CacheBudget { records: [100, records, 100], bytes: [1 << 20; 3], per_source }
}

fn peer(seed: u8) -> NodeIdentity {
    NodeIdentity::new(TestSigner::node(seed).0)
}

/// Offers a topic advert as `from` sent it, at `at` seconds.
fn topic_from(
    ids: &mut IdentityStore,
    disk: &mut Disk,
    from: u8,
    topic: u8,
    at: u64,
    evictable: &dyn Fn(&RecordKey) -> bool,
) -> Result<Accepted, UpdateError> {
    let when = NOW.saturating_add_millis(at * 1000);
    persist(ids, disk, |s| {
        s.apply_advert_from(
            AdvertUpdate::Topic(topic_advert(topic, 1)),
            Some(peer(from)),
            when,
            &TestVerifier,
            evictable,
        )
    })
}

fn topic_key(seed: u8) -> RecordKey {
    RecordKey::Topic(topic_advert(seed, 1).topic)
}

/// Guards records and disk: one peer's adverts (its own topics or those it
/// relays) fill only its share of the cache, and others still get in.
#[test]
fn a_peer_is_the_source_of_only_its_share_of_the_cache() {
    let (mut ids, mut disk) = (with_cache(topics_only(100, 2)), Disk::new());
    topic_from(&mut ids, &mut disk, 5, 10, 0, &|_| true).expect("within its share");
    topic_from(&mut ids, &mut disk, 5, 11, 0, &|_| true).expect("within its share");
    let err = topic_from(&mut ids, &mut disk, 5, 12, 0, &|_| true).expect_err("over its share");
    assert!(matches!(err, UpdateError::SourceOverShare { .. }), "{err}");
    // A newer version of a record it is the source of still comes in.
    persist(&mut ids, &mut disk, |s| {
        s.apply_advert_from(AdvertUpdate::Topic(topic_advert(10, 2)), Some(peer(5)), NOW, &TestVerifier, &|_| true)
    })
    .expect("an update is not a new record");
    topic_from(&mut ids, &mut disk, 6, 12, 0, &|_| true).expect("another peer has its own share");
    assert_eq!(ids.cache_usage(CachedKind::Topic).0, 3);
}

/// Guards records and disk: a full kind gives up its oldest record not in
/// use, and the host is told to delete it.
#[test]
fn a_full_kind_gives_up_its_oldest_record_not_in_use() {
    let (mut ids, mut disk) = (with_cache(topics_only(2, 100)), Disk::new());
    topic_from(&mut ids, &mut disk, 5, 10, 1, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 6, 11, 2, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 7, 12, 3, &|_| true).expect("room made");
    assert_eq!(ids.take_evicted(), [topic_key(10)]);
    assert!(ids.lookup(&topic_key(10)).is_none());
    // Topic 11, now the oldest, is in use: 12 goes instead.
    let in_use = topic_key(11);
    topic_from(&mut ids, &mut disk, 8, 13, 4, &|k| *k != in_use).expect("room made");
    assert_eq!(ids.take_evicted(), [topic_key(12)]);
    assert!(ids.lookup(&topic_key(11)).is_some() && ids.lookup(&topic_key(13)).is_some());
    // Nothing may go: the newcomer is refused.
    let err = topic_from(&mut ids, &mut disk, 8, 14, 5, &|_| false).expect_err("full");
    assert!(matches!(err, UpdateError::CacheFull { .. }), "{err}");
    assert_eq!(ids.cache_usage(CachedKind::Topic).0, 2);
}

/// The least useful record goes first: one from a source the node trusts
/// no more than the default, before an older one from a trusted source.
#[test]
fn records_from_a_trusted_source_outlast_older_ones() {
    let (mut ids, mut disk) = (with_cache(topics_only(2, 100)), Disk::new());
    persist(&mut ids, &mut disk, |s| s.set_trust(peer(5), Trust(200))).expect("trust set");
    topic_from(&mut ids, &mut disk, 5, 10, 1, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 6, 11, 2, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 7, 12, 3, &|_| true).expect("room made");
    assert_eq!(ids.take_evicted(), [topic_key(11)]);
}

/// What this node offers itself is kept for good, whatever the budget.
#[test]
fn records_the_node_offers_are_not_cached() {
    let (mut ids, mut disk) = (with_cache(topics_only(1, 1)), Disk::new());
    for seed in 10..13 {
        persist(&mut ids, &mut disk, |s| {
            s.apply_advert(AdvertUpdate::Topic(topic_advert(seed, 1)), NOW, &TestVerifier)
        })
        .expect("kept");
    }
    assert_eq!(ids.cache_usage(CachedKind::Topic).0, 0);
    topic_from(&mut ids, &mut disk, 5, 20, 0, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 6, 21, 1, &|_| true).expect("room made");
    assert_eq!(ids.take_evicted(), [topic_key(20)]);
    assert_eq!(ids.len(), 4);
}

/// Guards disk: a store read back with more than the cache holds gives
/// up the excess at once, so the disk comes back within its cap.
#[test]
fn reopening_gives_up_what_is_beyond_the_budget() {
    let (mut ids, mut disk) = (with_cache(topics_only(100, 100)), Disk::new());
    for (n, seed) in (10..14).enumerate() {
        topic_from(&mut ids, &mut disk, 5 + n as u8, seed, n as u64, &|_| true).expect("room");
    }
    let config = IdentityStoreConfig { cache: topics_only(3, 100), ..IdentityStoreConfig::default() };
    let mut reopened = IdentityStore::open(own(), config, disk.values().cloned().collect());
    assert_eq!(reopened.take_evicted().len(), 1);
    assert_eq!(reopened.len(), 3);
    assert_eq!(reopened.cache_usage(CachedKind::Topic).0, 3);
}

/// The weight counts what a record carries: a byte budget fills with few
/// large records.
#[test]
fn a_kind_has_a_byte_budget_too() {
    let one = record_weight(&IdentityRecord::Topic(topic_advert(10, 1)));
    let budget = CacheBudget { records: [100; 3], bytes: [1 << 20, 2 * one, 1 << 20], per_source: 100 };
    let (mut ids, mut disk) = (with_cache(budget), Disk::new());
    for (n, seed) in (10..13).enumerate() {
        topic_from(&mut ids, &mut disk, 5 + n as u8, seed, n as u64, &|_| true).expect("room");
    }
    assert_eq!(ids.take_evicted(), [topic_key(10)]);
    assert_eq!(ids.cache_usage(CachedKind::Topic), (2, 2 * one));
}

/// Two identical changes staged before either is written leave the
/// record cached once, and still evictable.
#[test]
fn twin_changes_keep_the_cache_counts() {
    let budget = CacheBudget { records: [1, 100, 100], bytes: [1 << 20; 3], per_source: 100 };
    let (mut ids, mut disk) = (with_cache(budget), Disk::new());
    persist(&mut ids, &mut disk, |s| {
        s.apply_advert_from(AdvertUpdate::Node(node_advert(5, 1)), Some(peer(5)), NOW, &TestVerifier, &|_| true)
    })
    .expect("cached");
    let first = ids.set_trust(peer(5), Trust(96)).expect("staged");
    let second = ids.set_trust(peer(5), Trust(96)).expect("staged again");
    ids.commit(first).expect("commits");
    ids.commit(second).expect("commits");
    assert_eq!(ids.cache_usage(CachedKind::Node).0, 1);
    persist(&mut ids, &mut disk, |s| {
        s.apply_advert_from(AdvertUpdate::Node(node_advert(6, 1)), Some(peer(6)), NOW, &TestVerifier, &|_| true)
    })
    .expect("room made");
    assert_eq!(ids.take_evicted(), [RecordKey::Node(peer(5))]);
}

/// What the byte budgets count: 256 bytes, 40 per identity listed, 64 per
/// address, and each tag's and name's length.
#[test]
fn record_weights_follow_what_a_record_carries() {
    let node = NodeRecord { advert: Some(node_advert(5, 1)), ..NodeRecord::new(peer(5)) };
    assert_eq!(record_weight(&IdentityRecord::Node(node)), 256 + 64 + 4, "one address, the name \"test\"");
    assert_eq!(record_weight(&IdentityRecord::Node(NodeRecord::new(peer(5)))), 256);
    assert_eq!(record_weight(&IdentityRecord::Topic(topic_advert(10, 1))), 256 + 40 + 3, "one publisher, tag \"t\"");
    assert_eq!(record_weight(&IdentityRecord::Domain(domain_advert(10, 1))), 256 + 40, "one contact node");
    let signer = TestSigner::node(12);
    let body = TopicAdvertBody::new(TopicIdentity::new(signer.0), vec![own()], vec![peer(5)], vec!["t"], 1, NOW)
        .expect("valid");
    let sig = signer.sign(&TopicAdvert::signing_bytes_of(&body));
    let relayed = Advert::from_parts(body, sig);
    assert_eq!(record_weight(&IdentityRecord::Topic(relayed)), 256 + 2 * 40 + 3, "a publisher and a relay");
    let signer = TestSigner::node(11);
    let allow = JoinPolicy::AllowList(BoundedVec::new("allow", vec![own(), peer(5)]).expect("small"));
    let body = DomainAdvertBody::new(DomainIdentity::new(signer.0), vec![own()], allow, 1, NOW).expect("valid");
    let sig = signer.sign(&DomainAdvert::signing_bytes_of(&body));
    let domain = Advert::from_parts(body, sig);
    assert_eq!(record_weight(&IdentityRecord::Domain(domain)), 256 + 3 * 40, "a contact node and two allowed");
}

/// A newer version of a cached record takes its old one's room: a full
/// byte budget gives nothing up for it.
#[test]
fn a_newer_version_takes_the_room_of_the_old() {
    let one = record_weight(&IdentityRecord::Topic(topic_advert(10, 1)));
    let budget = CacheBudget { records: [100; 3], bytes: [1 << 20, 2 * one, 1 << 20], per_source: 100 };
    let (mut ids, mut disk) = (with_cache(budget), Disk::new());
    topic_from(&mut ids, &mut disk, 5, 10, 0, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 6, 11, 1, &|_| true).expect("room");
    persist(&mut ids, &mut disk, |s| {
        s.apply_advert_from(AdvertUpdate::Topic(topic_advert(10, 2)), Some(peer(5)), NOW, &TestVerifier, &|_| true)
    })
    .expect("a newer version");
    assert!(ids.take_evicted().is_empty());
    assert_eq!(ids.cache_usage(CachedKind::Topic), (2, 2 * one));
}

/// A peer whose records were given up has its share back.
#[test]
fn a_share_comes_back_as_records_go() {
    let (mut ids, mut disk) = (with_cache(topics_only(2, 2)), Disk::new());
    topic_from(&mut ids, &mut disk, 5, 10, 0, &|_| true).expect("room");
    topic_from(&mut ids, &mut disk, 5, 11, 1, &|_| true).expect("room");
    let err = topic_from(&mut ids, &mut disk, 5, 12, 2, &|_| true).expect_err("over its share");
    assert_eq!(err, UpdateError::SourceOverShare { key: topic_key(12), peer: peer(5), max: 2 });
    topic_from(&mut ids, &mut disk, 6, 13, 3, &|_| true).expect("room made");
    assert_eq!(ids.take_evicted(), [topic_key(10)]);
    // Topic 11 stays in use: peer 6's topic 13 makes room for 12.
    let in_use = topic_key(11);
    topic_from(&mut ids, &mut disk, 5, 12, 4, &|k| *k != in_use).expect("its share has room again");
    assert_eq!(ids.take_evicted(), [topic_key(13)]);
    let err = topic_from(&mut ids, &mut disk, 5, 14, 5, &|_| true).expect_err("and is full again");
    assert!(matches!(err, UpdateError::SourceOverShare { .. }), "{err}");
    let err = topic_from(&mut ids, &mut disk, 7, 14, 5, &|_| false).expect_err("full");
    assert!(err.to_string().contains("topic records is full"), "{err}");
}
