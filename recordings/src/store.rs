//! Where recordings, manifests and the chain are kept.
//!
//! [`Store`] is a small blocking key/value interface over `/`-separated keys, so
//! the same verification code runs over a local directory ([`FsStore`], the
//! default) or, later, an `object_store` bucket. Segment files are always
//! written to a local directory first (the writer needs to seek to finalize
//! them); uploading finished segments is the store's business.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A validated storage key: `/`-separated components of `[A-Za-z0-9._-]`,
/// none empty, `.` or `..`. Cannot escape the store's root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

/// A string that is not a valid [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid object key {0:?}")]
pub struct InvalidKey(pub String);

impl ObjectKey {
    /// Validates `key`.
    ///
    /// # Errors
    /// [`InvalidKey`] for empty components, `.`/`..`, or other characters.
    pub fn parse(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            });
        if ok {
            Ok(Self(key))
        } else {
            Err(InvalidKey(key))
        }
    }

    /// A key built from parts known to be valid (UUIDs, fixed names).
    pub(crate) fn trusted(key: String) -> Self {
        debug_assert!(
            Self::parse(key.clone()).is_ok(),
            "invalid trusted key {key}"
        );
        Self(key)
    }

    /// `self/child`.
    ///
    /// # Errors
    /// [`InvalidKey`] if `child` is not a valid key.
    pub fn join(&self, child: &str) -> Result<Self, InvalidKey> {
        Self::parse(format!("{}/{}", self.0, child))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `prefix/`, if the key is under `prefix`.
    pub fn strip_prefix(&self, prefix: &ObjectKey) -> Option<&str> {
        self.0.strip_prefix(prefix.as_str())?.strip_prefix('/')
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = InvalidKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> Self {
        k.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

/// A storage operation failed.
#[derive(Debug, Error)]
#[error("store: {op} {key}: {source}")]
pub struct StoreError {
    /// What was being done.
    pub op: &'static str,
    /// On which key.
    pub key: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Blocking key/value storage for recordings. Implementations must make
/// [`Store::put`] atomic (readers see the old or the new value, never a mix).
pub trait Store: Send + Sync {
    /// The value at `key`, or `None` if absent.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces the value at `key` atomically and durably.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError>;

    /// Appends `bytes` to the value at `key` (creating it) durably.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    fn append(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        let mut current = self.get(key)?.unwrap_or_default();
        current.extend_from_slice(bytes);
        self.put(key, &current)
    }

    /// Every key under `prefix` (recursively), sorted.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectKey>, StoreError>;

    /// Removes `key`; absent keys are not an error.
    ///
    /// # Errors
    /// [`StoreError`] on I/O failure.
    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;
}

/// A [`Store`] over a local directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `key`.
    pub fn path(&self, key: &ObjectKey) -> PathBuf {
        let mut p = self.root.clone();
        for c in key.as_str().split('/') {
            p.push(c);
        }
        p
    }

    fn err(op: &'static str, key: &ObjectKey) -> impl FnOnce(io::Error) -> StoreError {
        let key = key.to_string();
        move |source| StoreError { op, key, source }
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent"))?;
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Best-effort fsync of a directory (makes a rename durable on Linux).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Store for FsStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err("get", key)(e)),
        }
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.path(key), bytes).map_err(Self::err("put", key))
    }

    fn append(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        (|| {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(bytes)?;
            f.sync_all()
        })()
        .map_err(Self::err("append", key))
    }

    fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectKey>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.path(prefix), prefix.clone())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    continue
                }
                Err(e) => return Err(Self::err("list", &key)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(Self::err("list", &key))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let Ok(child) = key.join(&name) else {
                    continue;
                };
                let ft = entry.file_type().map_err(Self::err("list", &child))?;
                if ft.is_dir() {
                    stack.push((entry.path(), child));
                } else {
                    out.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Self::err("delete", key)(e)),
        }
        // Remove directories left empty, up to the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/./b", "a b", "a\\b", "a/..", "ä",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        let k = ObjectKey::parse("recordings/x-1/000001.webm").expect("valid");
        let prefix = ObjectKey::parse("recordings").expect("valid");
        assert_eq!(k.strip_prefix(&prefix), Some("x-1/000001.webm"));
        assert!(serde_json::from_str::<ObjectKey>("\"../etc\"").is_err());
    }
}
