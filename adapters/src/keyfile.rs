//! The node key on disk: a PKCS#8 Ed25519 document, readable by its owner
//! only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::crypto::{Ed25519Keys, KeyError};

#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("key file {path} already exists; pass --force to replace it (the old identity is lost)")]
    Exists { path: PathBuf },
    #[error("key file {path} is readable or writable by others (mode {mode:o}); run `chmod 600 {path}`")]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} does not hold a node key: {source}")]
    BadContent { path: PathBuf, source: KeyError },
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_path_buf(), source }
}

/// Writes a new key to `path` with mode 0600. Refuses to replace an
/// existing file unless `force`.
pub fn write_new_key(path: &Path, force: bool) -> Result<Ed25519Keys, KeyFileError> {
    if path.exists() && !force {
        return Err(KeyFileError::Exists { path: path.to_path_buf() });
    }
    let keys = Ed25519Keys::generate()?;
    write_private(path, keys.pkcs8())?;
    Ok(keys)
}

/// Writes `bytes` to `path` with mode 0600, whole or not at all: a key, a
/// pre-shared key.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    // Write beside the target, then rename: a crash never leaves half a key.
    let tmp = path.with_extension("key.tmp");
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_error(path))?;
    Ok(())
}

/// Reads a private file of at most `max` bytes, refusing one others can
/// read or write.
pub fn read_private(path: &Path, max: u64) -> Result<Vec<u8>, KeyFileError> {
    let metadata = fs::metadata(path).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::LoosePermissions { path: path.to_path_buf(), mode });
        }
    }
    if metadata.len() > max {
        return Err(KeyFileError::BadContent {
            path: path.to_path_buf(),
            source: KeyError::Rejected(format!("{} bytes is over the {max} bytes such a file holds", metadata.len())),
        });
    }
    fs::read(path).map_err(io_error(path))
}

/// Reads the key at `path`, refusing a file others can read or write.
pub fn read_key(path: &Path) -> Result<Ed25519Keys, KeyFileError> {
    let metadata = fs::metadata(path).map_err(io_error(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::LoosePermissions { path: path.to_path_buf(), mode });
        }
    }
    if metadata.len() > 4096 {
        return Err(KeyFileError::BadContent {
            path: path.to_path_buf(),
            source: KeyError::Rejected(format!("{} bytes is far too long for a key", metadata.len())),
        });
    }
    let bytes = fs::read(path).map_err(io_error(path))?;
    Ed25519Keys::from_pkcs8(&bytes).map_err(|source| KeyFileError::BadContent { path: path.to_path_buf(), source })
}

/// Reads the key at `path`, or makes one there when no file exists.
pub fn read_or_create_key(path: &Path) -> Result<(Ed25519Keys, bool), KeyFileError> {
    if path.exists() {
        Ok((read_key(path)?, false))
    } else {
        Ok((write_new_key(path, false)?, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let keys = write_new_key(&path, false).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(read_key(&path).expect("read").public(), keys.public());
    }

    #[test]
    fn an_existing_key_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let first = write_new_key(&path, false).expect("write");
        assert!(matches!(write_new_key(&path, false), Err(KeyFileError::Exists { .. })));
        assert_eq!(read_key(&path).expect("read").public(), first.public());
        let second = write_new_key(&path, true).expect("forced");
        assert_ne!(second.public(), first.public());
    }

    #[cfg(unix)]
    #[test]
    fn loose_permissions_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        write_new_key(&path, false).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_key(&path).expect_err("loose");
        assert!(matches!(err, KeyFileError::LoosePermissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn wrong_content_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        fs::write(&path, b"this is not a key").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        assert!(matches!(read_key(&path), Err(KeyFileError::BadContent { .. })));
    }
}
