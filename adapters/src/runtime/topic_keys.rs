//! The secret keys of the topics this node created, kept as the node key
//! is: one file per topic, `<data dir>/topics/<topic>.key`, mode 0600,
//! written whole or not at all. A restarted node reads them back, so it can
//! still sign newer adverts of its topics. A node without a data directory
//! keeps them in memory only.

use std::collections::HashMap;
use std::path::PathBuf;

use netmachine_domain::{Signature, TopicIdentity};
use netmachine_engines::ports::Signer;
use parking_lot::Mutex;

use crate::crypto::Ed25519Keys;
use crate::keyfile::{read_key, write_private};

#[derive(Debug)]
pub(crate) struct TopicKeys {
    dir: Option<PathBuf>,
    keys: Mutex<HashMap<TopicIdentity, Ed25519Keys>>,
}

impl TopicKeys {
    /// The keys kept under `data_dir`, if any.
    pub(crate) fn open(data_dir: Option<PathBuf>) -> Self {
        let dir = data_dir.map(|d| d.join("topics"));
        let mut keys = HashMap::new();
        if let Some(entries) = dir.as_ref().and_then(|d| std::fs::read_dir(d).ok()) {
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if path.extension().is_none_or(|e| e != "key") {
                    continue;
                }
                match read_key(&path) {
                    Ok(key) => {
                        keys.insert(TopicIdentity::new(key.public()), key);
                    }
                    Err(err) => tracing::warn!(%err, "a topic key not read; its topic cannot be re-signed"),
                }
            }
        }
        Self { dir, keys: Mutex::new(keys) }
    }

    fn path_of(&self, topic: &TopicIdentity) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{topic}.key")))
    }

    pub(crate) fn insert(&self, topic: TopicIdentity, key: Ed25519Keys) {
        if let Some(path) = self.path_of(&topic) {
            if let Err(err) = write_private(&path, key.pkcs8()) {
                tracing::warn!(%topic, %err, "the topic key could not be kept on disk; a restart loses it");
            }
        }
        self.keys.lock().insert(topic, key);
    }

    pub(crate) fn remove(&self, topic: &TopicIdentity) {
        self.keys.lock().remove(topic);
        if let Some(path) = self.path_of(topic) {
            let _ = std::fs::remove_file(path);
        }
    }

    pub(crate) fn holds(&self, topic: &TopicIdentity) -> bool {
        self.keys.lock().contains_key(topic)
    }

    pub(crate) fn sign(&self, topic: &TopicIdentity, bytes: &[u8]) -> Option<Signature> {
        self.keys.lock().get(topic).map(|key| key.sign(bytes))
    }
}
