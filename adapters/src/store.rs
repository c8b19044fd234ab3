//! The identity store's records on disk, in redb. Every `put` is its own
//! durable transaction: redb's copy-on-write commits mean a crash in the
//! middle of a write leaves the previous state readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netmachine_domain::{IdentityRecord, RecordKey};
use redb::{Database, ReadableTable, TableDefinition};

use thiserror::Error;

use crate::codec::{from_cbor, to_cbor};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("identity_records");
/// The layout of stored values; a change of layout gets a new number.
const RECORD_SCHEMA: u8 = 1;

/// A failure of the persistent record store.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("record store I/O failed: {0}")]
    Io(String),
    #[error("record store holds a corrupt record for {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Where the identity store keeps its records across restarts. Every call
/// is durable when it returns `Ok`.
pub trait RecordStore: Send {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError>;
    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError>;
    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError>;
}

#[derive(Debug)]
pub struct RedbRecordStore {
    db: Database,
    path: PathBuf,
}

fn io(err: impl std::fmt::Display) -> StoreError {
    StoreError::Io(err.to_string())
}

fn key_bytes(key: &RecordKey) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(48);
    to_cbor(key, &mut out).map_err(io)?;
    Ok(out)
}

impl RedbRecordStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(RECORDS).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Self { db, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RedbRecordStore {
    /// Reads every record, and says which values could not be read and
    /// why. An unreadable value is left on disk untouched.
    pub fn scan(&self) -> Result<(Vec<IdentityRecord>, Vec<StoreError>), StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(RECORDS).map_err(io)?;
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for entry in table.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let corrupt = |reason: String| StoreError::Corrupt { key: format!("{:02x?}", key.value()), reason };
            let bytes = value.value();
            match bytes.split_first() {
                Some((&RECORD_SCHEMA, body)) => match from_cbor::<IdentityRecord>(body) {
                    Ok(record) => records.push(record),
                    Err(err) => unreadable.push(corrupt(err.to_string())),
                },
                Some((schema, _)) => unreadable.push(corrupt(format!(
                    "unknown record layout {schema} (this version reads layout {RECORD_SCHEMA})"
                ))),
                None => unreadable.push(corrupt("empty value".into())),
            }
        }
        Ok((records, unreadable))
    }
}

impl RecordStore for RedbRecordStore {
    /// Every readable record. A value that cannot be read is logged, left
    /// on disk, and skipped, so that one damaged record does not cost the
    /// others.
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        let (records, unreadable) = self.scan()?;
        for err in &unreadable {
            tracing::warn!(store = %self.path.display(), %err, "skipping an identity record that cannot be read");
        }
        Ok(records)
    }

    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError> {
        let key = key_bytes(&record.key())?;
        let mut value = vec![RECORD_SCHEMA];
        to_cbor(record, &mut value).map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(io)?;
            table.insert(key.as_slice(), value.as_slice()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        let key = key_bytes(key)?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(io)?;
            table.remove(key.as_slice()).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

/// Records in memory only, for nodes embedded without a data directory.
#[derive(Debug, Default, Clone)]
pub struct VolatileRecordStore {
    records: BTreeMap<RecordKey, IdentityRecord>,
}

impl RecordStore for VolatileRecordStore {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        Ok(self.records.values().cloned().collect())
    }

    fn put(&mut self, record: &IdentityRecord) -> Result<(), StoreError> {
        self.records.insert(record.key(), record.clone());
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.records.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netmachine_domain::{
        strategies, DomainIdentity, EngineIdentity, EngineName, NodeIdentity, NodeRecord, TopicIdentity, Trust,
    };
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every kind of record comes back from disk exactly as written,
        /// and a later write of the same identity replaces the earlier.
        /// Identities are drawn from three per kind, so most cases write
        /// some identity more than once.
        #[test]
        fn records_round_trip_through_redb(
            records in proptest::collection::vec((strategies::identity_record(), 0u8..3), 1..12),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("records.redb");
            let mut expected = BTreeMap::new();
            {
                let mut store = RedbRecordStore::open(&path).expect("open");
                for (record, slot) in records {
                    let record = with_identity(record, slot);
                    store.put(&record).expect("put");
                    expected.insert(record.key(), record);
                }
            }
            let store = RedbRecordStore::open(&path).expect("reopen");
            let mut loaded: Vec<IdentityRecord> = store.load_all().expect("load");
            loaded.sort_by_key(IdentityRecord::key);
            prop_assert_eq!(loaded, expected.into_values().collect::<Vec<_>>());
        }
    }

    /// The record about identity number `slot` of its kind.
    fn with_identity(record: IdentityRecord, slot: u8) -> IdentityRecord {
        let key = [slot + 1; 32];
        match record {
            IdentityRecord::Node(mut r) => {
                r.id = NodeIdentity::ed25519(key);
                IdentityRecord::Node(r)
            }
            IdentityRecord::Engine(mut r) => {
                r.engine = EngineIdentity::new(NodeIdentity::ed25519(key), EngineName::new("e").expect("valid"));
                IdentityRecord::Engine(r)
            }
            IdentityRecord::Topic(mut a) => {
                a.body.topic = TopicIdentity::ed25519(key);
                IdentityRecord::Topic(a)
            }
            IdentityRecord::Domain(mut a) => {
                a.body.id = DomainIdentity::ed25519(key);
                IdentityRecord::Domain(a)
            }
        }
    }

    #[test]
    fn a_later_write_replaces_the_earlier() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let id = NodeIdentity::ed25519([1; 32]);
        let mut first = NodeRecord::new(id);
        first.trust = Trust(10);
        let mut second = first.clone();
        second.trust = Trust(200);
        {
            let mut store = RedbRecordStore::open(&path).expect("open");
            store.put(&IdentityRecord::Node(first)).expect("put");
            store.put(&IdentityRecord::Node(second.clone())).expect("put");
        }
        let loaded = RedbRecordStore::open(&path).expect("reopen").load_all().expect("load");
        assert_eq!(loaded, vec![IdentityRecord::Node(second)]);
    }

    /// Values this version cannot read are named with the reason, and the
    /// readable records still load; nothing is deleted.
    #[test]
    fn unreadable_values_are_reported_and_the_rest_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let good = IdentityRecord::Node(NodeRecord::new(NodeIdentity::ed25519([1; 32])));
        {
            let mut store = RedbRecordStore::open(&path).expect("open");
            store.put(&good).expect("put");
            let txn = store.db.begin_write().expect("write");
            {
                let mut table = txn.open_table(RECORDS).expect("table");
                table.insert(&b"future"[..], &[RECORD_SCHEMA + 1, 0xa0][..]).expect("insert");
                table.insert(&b"empty"[..], &[][..]).expect("insert");
                table.insert(&b"garbage"[..], &[RECORD_SCHEMA, 0xff, 0x00][..]).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let store = RedbRecordStore::open(&path).expect("reopen");
        let (records, unreadable) = store.scan().expect("scan");
        assert_eq!(records, vec![good.clone()]);
        let reasons: Vec<String> = unreadable.iter().map(ToString::to_string).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("empty value")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("unknown record layout 2")), "{reasons:?}");
        assert!(reasons.iter().filter(|r| r.contains("unknown record layout") || r.contains("empty")).count() == 2);
        assert_eq!(store.load_all().expect("load"), vec![good]);
        let txn = store.db.begin_read().expect("read");
        let table = txn.open_table(RECORDS).expect("table");
        assert_eq!(redb::ReadableTableMetadata::len(&table).expect("len"), 4, "nothing was deleted");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        std::fs::write(&path, b"this is not a database, but a user's notes\n".repeat(200)).expect("write");
        let err = RedbRecordStore::open(&path).expect_err("foreign file");
        assert!(err.to_string().contains("records.redb"), "{err}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"this is not a database, but a user's notes\n".repeat(200),
            "the file is left as it was"
        );
    }

    #[test]
    fn removed_records_stay_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let record = IdentityRecord::Node(NodeRecord::new(NodeIdentity::ed25519([1; 32])));
        let mut store = RedbRecordStore::open(&path).expect("open");
        store.put(&record).expect("put");
        store.remove(&record.key()).expect("remove");
        drop(store);
        assert!(RedbRecordStore::open(&path).expect("reopen").load_all().expect("load").is_empty());
    }
}
