//! Where finished recordings live: an `object_store` (a local directory by default, an
//! S3-compatible bucket by URL), and the local spool where segments are written first.
//!
//! [`TieredStore`] is the view verification, export and the chain use: a key is read from the
//! spool if it is still there (not uploaded yet), else from the object store; a listing is the
//! union of both. The chain file (`chain.jsonl`) lives in the spool (the data directory) and is
//! copied to the object store after every change.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use recordings::chain::CHAIN_KEY;
use recordings::{FsStore, ObjectKey, Store, StoreError};
use tokio::runtime::Handle;

/// Opens the object store named by `url`: `file:///abs/dir` (created if missing), `memory://`
/// (tests), or `s3://bucket/prefix` (credentials, region and an S3-compatible endpoint from the
/// usual `AWS_*` environment variables: `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...).
pub fn open_object_store(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .with_context(|| format!("opening {path}"))?;
        return Ok(Arc::new(fs));
    }
    if url == "memory://" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if url.starts_with("s3://") {
        let (bucket_url, prefix) = match url["s3://".len()..].split_once('/') {
            Some((bucket, prefix)) if !prefix.is_empty() => (format!("s3://{bucket}"), Some(prefix.trim_end_matches('/').to_string())),
            _ => (url.trim_end_matches('/').to_string(), None),
        };
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_url(bucket_url)
            .build()
            .context("configuring the S3 recordings store")?;
        return Ok(match prefix {
            Some(p) => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
            None => Arc::new(s3),
        });
    }
    anyhow::bail!("unsupported recordings store URL (use file:///dir, s3://bucket/prefix or memory://)")
}

/// The object path of a key.
pub fn object_path(key: &ObjectKey) -> ObjectPath {
    ObjectPath::from(key.as_str())
}

fn store_err(op: &'static str, key: &ObjectKey, e: impl std::fmt::Display) -> StoreError {
    StoreError { op, key: key.to_string(), source: io::Error::other(e.to_string()) }
}

/// The spool (local, written first) over the object store (durable). Blocking: call it from a
/// blocking thread (`spawn_blocking` or the recorder's own threads), never from async code.
#[derive(Clone)]
pub struct TieredStore {
    local: FsStore,
    remote: Arc<dyn ObjectStore>,
    rt: Handle,
}

impl std::fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStore").field("spool", &self.local.root()).field("remote", &self.remote.to_string()).finish()
    }
}

impl TieredStore {
    /// A view of `spool` over `remote`, running remote calls on `rt`.
    pub fn new(spool: &Path, remote: Arc<dyn ObjectStore>, rt: Handle) -> Self {
        Self { local: FsStore::new(spool), remote, rt }
    }

    /// The spool.
    pub fn local(&self) -> &FsStore {
        &self.local
    }

    /// The object store.
    pub fn remote(&self) -> &Arc<dyn ObjectStore> {
        &self.remote
    }
}

impl Store for TieredStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.local.get(key)? {
            return Ok(Some(bytes));
        }
        if key.as_str() == CHAIN_KEY {
            return Ok(None);
        }
        let remote = self.remote.clone();
        let path = object_path(key);
        self.rt.block_on(async move {
            match remote.get(&path).await {
                Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| store_err("get", key, e))
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        // Written to the spool; the uploader copies it to the object store.
        self.local.put(key, bytes)
    }

    fn append(&self, key: &ObjectKey, bytes: &[u8]) -> Result<(), StoreError> {
        self.local.append(key, bytes)
    }

    fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectKey>, StoreError> {
        let mut keys = self.local.list(prefix)?;
        let remote = self.remote.clone();
        let path = object_path(prefix);
        let listed: Vec<String> = self
            .rt
            .block_on(async move {
                remote.list(Some(&path)).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await
            })
            .map_err(|e| store_err("list", prefix, e))?;
        keys.extend(listed.into_iter().filter_map(|k| ObjectKey::parse(k).ok()));
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.local.delete(key)?;
        let remote = self.remote.clone();
        let path = object_path(key);
        self.rt
            .block_on(async move {
                match remote.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| store_err("delete", key, e))
    }
}
