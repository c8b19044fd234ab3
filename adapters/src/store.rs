//! The identity store's records on disk, in redb. Every `put` is its own
//! durable transaction: redb's copy-on-write commits mean a crash in the
//! middle of a write leaves the previous state readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netmachine_domain::{IdentityRecord, RecordKey};
use netmachine_engines::ports::{RecordStore, StoreError};
use redb::{Database, ReadableTable, TableDefinition};

use crate::codec::{from_cbor, to_cbor};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("identity_records");
/// The layout of stored values; a change of layout gets a new number.
const RECORD_SCHEMA: u8 = 1;

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

impl RecordStore for RedbRecordStore {
    fn load_all(&self) -> Result<Vec<IdentityRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(RECORDS).map_err(io)?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let corrupt = |reason: String| StoreError::Corrupt { key: format!("{:02x?}", key.value()), reason };
            let bytes = value.value();
            match bytes.split_first() {
                Some((&RECORD_SCHEMA, body)) => {
                    records.push(from_cbor::<IdentityRecord>(body).map_err(|e| corrupt(e.to_string()))?);
                }
                Some((schema, _)) => return Err(corrupt(format!("unknown record layout {schema}"))),
                None => return Err(corrupt("empty value".into())),
            }
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
#[derive(Debug, Default)]
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
    use netmachine_domain::strategies;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every kind of record comes back from disk exactly as written,
        /// and a later write of the same identity replaces the earlier.
        #[test]
        fn records_round_trip_through_redb(records in proptest::collection::vec(strategies::identity_record(), 1..12)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("records.redb");
            let mut expected = BTreeMap::new();
            {
                let mut store = RedbRecordStore::open(&path).expect("open");
                for record in &records {
                    store.put(record).expect("put");
                    expected.insert(record.key(), record.clone());
                }
            }
            let store = RedbRecordStore::open(&path).expect("reopen");
            let mut loaded: Vec<IdentityRecord> = store.load_all().expect("load");
            loaded.sort_by_key(IdentityRecord::key);
            prop_assert_eq!(loaded, expected.into_values().collect::<Vec<_>>());
        }
    }

    #[test]
    fn removed_records_stay_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("records.redb");
        let record =
            IdentityRecord::Node(netmachine_domain::NodeRecord::new(netmachine_domain::NodeIdentity::ed25519([1; 32])));
        let mut store = RedbRecordStore::open(&path).expect("open");
        store.put(&record).expect("put");
        store.remove(&record.key()).expect("remove");
        drop(store);
        assert!(RedbRecordStore::open(&path).expect("reopen").load_all().expect("load").is_empty());
    }
}
