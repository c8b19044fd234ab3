//! What a node keeps of its domains on disk, under `<data dir>/domains/`,
//! one folder per domain named by its identity:
//! - `domain.key`: the domain's secret key, for a domain this node owns
//!   (mode 0600, as the node key);
//! - `advert`: the newest signed domain advert this node holds;
//! - `certificate`: this node's membership certificate;
//! - `psk`: the pre-shared key, for a domain that asks for one.
//!
//! Every file is private (mode 0600) and written whole or not at all.

use std::path::{Path, PathBuf};

use netmachine_domain::canonical::CanonicalWriter;
use netmachine_domain::wire::{write_domain_advert, WireReader};
use netmachine_domain::{DomainAdvert, DomainIdentity, MembershipCertificate};
use thiserror::Error;

use crate::crypto::Ed25519Keys;
use crate::keyfile::{read_key, read_private, write_private, KeyFileError};

/// The largest advert or certificate file read back.
const MAX_RECORD_FILE: u64 = 256 * 1024;
/// The largest pre-shared key.
const MAX_PSK_FILE: u64 = 1024;

#[derive(Debug, Error)]
pub enum DomainFilesError {
    #[error(transparent)]
    File(#[from] KeyFileError),
    #[error("{path} does not hold a valid {what}: {reason}; remove the domain's folder and join again")]
    Corrupt { path: PathBuf, what: &'static str, reason: String },
    #[error("cannot list {path}: {source}")]
    List { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
}

/// A domain as read back from disk.
#[derive(Debug)]
pub struct StoredDomain {
    pub advert: DomainAdvert,
    pub certificate: Option<MembershipCertificate>,
    pub psk: Option<Vec<u8>>,
    /// The domain key, when this node owns the domain.
    pub key: Option<Ed25519Keys>,
    /// The owner left the domain: its key and advert are kept, but a
    /// restart does not bring it back in.
    pub left: bool,
}

/// The file whose presence says an owner left its domain.
const LEFT_MARK: &str = "left";

#[derive(Debug, Clone)]
pub struct DomainFiles {
    root: PathBuf,
}

impl DomainFiles {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("domains") }
    }

    fn folder(&self, domain: &DomainIdentity) -> PathBuf {
        self.root.join(domain.to_string())
    }

    pub fn key_path(&self, domain: &DomainIdentity) -> PathBuf {
        self.folder(domain).join("domain.key")
    }

    pub fn save_key(&self, domain: &DomainIdentity, keys: &Ed25519Keys) -> Result<(), DomainFilesError> {
        Ok(write_private(&self.key_path(domain), keys.pkcs8())?)
    }

    pub fn load_key(&self, domain: &DomainIdentity) -> Result<Option<Ed25519Keys>, DomainFilesError> {
        let path = self.key_path(domain);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(read_key(&path)?))
    }

    pub fn save_advert(&self, advert: &DomainAdvert) -> Result<(), DomainFilesError> {
        let mut w = CanonicalWriter::untagged();
        write_domain_advert(&mut w, advert);
        Ok(write_private(&self.folder(&advert.id).join("advert"), &w.finish())?)
    }

    pub fn save_membership(
        &self,
        advert: &DomainAdvert,
        certificate: &MembershipCertificate,
        psk: Option<&[u8]>,
    ) -> Result<(), DomainFilesError> {
        self.save_advert(advert)?;
        let mut w = CanonicalWriter::untagged();
        certificate.write_wire(&mut w);
        let folder = self.folder(&advert.id);
        let left = folder.join(LEFT_MARK);
        if left.exists() {
            std::fs::remove_file(&left).map_err(|source| DomainFilesError::Remove { path: left, source })?;
        }
        write_private(&folder.join("certificate"), &w.finish())?;
        if let Some(psk) = psk {
            write_private(&folder.join("psk"), psk)?;
        }
        Ok(())
    }

    /// Forgets a membership; a domain this node owns keeps its key and
    /// advert, so that the owner can join it again, and is marked as left
    /// so that a restart does not serve it again by itself.
    pub fn remove_membership(&self, domain: &DomainIdentity) -> Result<(), DomainFilesError> {
        let folder = self.folder(domain);
        if self.key_path(domain).exists() {
            write_private(&folder.join(LEFT_MARK), b"")?;
            for name in ["certificate", "psk"] {
                let path = folder.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|source| DomainFilesError::Remove { path, source })?;
                }
            }
            return Ok(());
        }
        if folder.exists() {
            std::fs::remove_dir_all(&folder).map_err(|source| DomainFilesError::Remove { path: folder, source })?;
        }
        Ok(())
    }

    fn load_one(&self, folder: &Path) -> Result<Option<StoredDomain>, DomainFilesError> {
        let advert_path = folder.join("advert");
        if !advert_path.exists() {
            return Ok(None);
        }
        let bytes = read_private(&advert_path, MAX_RECORD_FILE)?;
        let mut r = WireReader::new("domain advert", &bytes);
        let advert = r.domain_advert().and_then(|a| r.finish().map(|()| a)).map_err(|e| DomainFilesError::Corrupt {
            path: advert_path.clone(),
            what: "domain advert",
            reason: e.to_string(),
        })?;
        let cert_path = folder.join("certificate");
        let certificate = if cert_path.exists() {
            let bytes = read_private(&cert_path, MAX_RECORD_FILE)?;
            let mut r = WireReader::new("certificate", &bytes);
            Some(MembershipCertificate::read_wire(&mut r).and_then(|c| r.finish().map(|()| c)).map_err(|e| {
                DomainFilesError::Corrupt { path: cert_path.clone(), what: "certificate", reason: e.to_string() }
            })?)
        } else {
            None
        };
        let psk_path = folder.join("psk");
        let psk = if psk_path.exists() { Some(read_private(&psk_path, MAX_PSK_FILE)?) } else { None };
        let key = self.load_key(&advert.id)?;
        let left = folder.join(LEFT_MARK).exists();
        Ok(Some(StoredDomain { advert, certificate, psk, key, left }))
    }

    /// Every domain kept, in the order of their identities; a folder that
    /// cannot be read is logged and left out.
    pub fn load_all(&self) -> Result<Vec<StoredDomain>, DomainFilesError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(&self.root)
            .map_err(|source| DomainFilesError::List { path: self.root.clone(), source })?;
        let mut folders: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        folders.sort();
        let mut domains = Vec::new();
        for folder in folders {
            // One damaged folder does not keep the node from its other
            // domains.
            match self.load_one(&folder) {
                Ok(Some(domain)) => domains.push(domain),
                Ok(None) => {}
                Err(err) => tracing::error!(%err, "a domain kept on disk was not read; the node is not back in it"),
            }
        }
        Ok(domains)
    }
}
