//! Where document bytes live. A small trait, [`BlobStore`], so object storage can replace the
//! local directory later; [`FsBlobStore`] keeps them under `<data_dir>/documents/`.
//!
//! An upload is written to a partial file at the offsets the client sends; finishing fsyncs it
//! and renames it into place, so a stored document is always complete.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// Bytes of the head of a file kept for the magic-byte check.
pub const HEAD_BYTES: usize = 16;

/// What a finished partial upload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Bytes on disk.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// The first bytes (up to [`HEAD_BYTES`]).
    pub head: Vec<u8>,
}

/// Storage of document bytes by key (`<case id>/<document id>`).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Writes `bytes` at `offset` of the partial upload `key` (created when missing).
    async fn write_part(&self, key: &str, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Size, SHA-256 and head of the partial upload.
    async fn inspect_part(&self, key: &str) -> io::Result<PartInfo>;
    /// Makes the partial upload durable (fsync) and moves it into place.
    async fn commit_part(&self, key: &str) -> io::Result<()>;
    /// Removes a partial upload (missing is fine).
    async fn discard_part(&self, key: &str) -> io::Result<()>;
    /// Reads a stored object.
    async fn read(&self, key: &str) -> io::Result<Vec<u8>>;
    /// Stores a small object whole (thumbnails), atomically.
    async fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()>;
    /// Removes a stored object (missing is fine).
    async fn delete(&self, key: &str) -> io::Result<()>;
}

/// Document bytes in a local directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Blobs under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsBlobStore { root: root.into() }
    }

    /// The documents directory of a data directory.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::new(data_dir.join("documents"))
    }

    fn path(&self, key: &str, suffix: &str) -> io::Result<PathBuf> {
        let ok = !key.is_empty()
            && key.len() <= 200
            && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '.' | '_'));
        if !ok {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad blob key"));
        }
        Ok(self.root.join(format!("{key}{suffix}")))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| io::Error::other(e.to_string()))?
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn write_part(&self, key: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(key, ".part")?;
        let bytes = bytes.to_vec();
        blocking(move || {
            use std::os::unix::fs::FileExt;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
            f.write_all_at(&bytes, offset)?;
            // Anything past the acknowledged end (a cut chunk written before) is dropped.
            f.set_len(offset + bytes.len() as u64)?;
            Ok(())
        })
        .await
    }

    async fn inspect_part(&self, key: &str) -> io::Result<PartInfo> {
        let path = self.path(key, ".part")?;
        blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::open(&path)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut head = Vec::with_capacity(HEAD_BYTES);
            let mut size = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if head.len() < HEAD_BYTES {
                    let take = (HEAD_BYTES - head.len()).min(n);
                    head.extend_from_slice(&buf[..take]);
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok(PartInfo { size, sha256: hex::encode(hasher.finalize()), head })
        })
        .await
    }

    async fn commit_part(&self, key: &str) -> io::Result<()> {
        let part = self.path(key, ".part")?;
        let done = self.path(key, "")?;
        blocking(move || {
            std::fs::File::open(&part)?.sync_all()?;
            std::fs::rename(&part, &done)?;
            if let Some(dir) = done.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    async fn discard_part(&self, key: &str) -> io::Result<()> {
        let part = self.path(key, ".part")?;
        match tokio::fs::remove_file(part).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn read(&self, key: &str) -> io::Result<Vec<u8>> {
        tokio::fs::read(self.path(key, "")?).await
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key, "")?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let done = self.path(key, "")?;
        let tmp = self.path(key, ".tmp")?;
        let bytes = bytes.to_vec();
        blocking(move || {
            if let Some(dir) = done.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_are_written_at_offsets_hashed_and_committed() {
        let dir = std::env::temp_dir().join(format!("cw-blobs-{}", uuid::Uuid::new_v4().simple()));
        let b = FsBlobStore::new(&dir);
        b.write_part("c/d", 0, b"%PDF-hello ").await.unwrap();
        b.write_part("c/d", 11, b"world, cut here").await.unwrap();
        // A resend from an earlier offset replaces what followed it.
        b.write_part("c/d", 11, b"world").await.unwrap();
        let info = b.inspect_part("c/d").await.unwrap();
        assert_eq!(info.size, 16);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(b"%PDF-hello world")));
        assert_eq!(&info.head[..5], b"%PDF-");
        b.commit_part("c/d").await.unwrap();
        assert_eq!(b.read("c/d").await.unwrap(), b"%PDF-hello world");
        assert!(b.inspect_part("c/d").await.is_err());
        assert!(b.read("../etc/passwd").await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
