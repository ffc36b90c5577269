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
/// (tests), or `s3://bucket/prefix` (see [`S3Location::parse`]; credentials, and unless given
/// in the URL the region and an S3-compatible endpoint, from the usual `AWS_*` environment
/// variables: `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...).
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
        let loc = S3Location::parse(url)?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&loc.bucket);
        if let Some(region) = &loc.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &loc.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(allow) = loc.allow_http {
            builder = builder.with_allow_http(allow);
        }
        let s3 = builder.build().context("configuring the S3 recordings store")?;
        return Ok(match loc.prefix {
            Some(p) => Arc::new(object_store::prefix::PrefixStore::new(s3, p)),
            None => Arc::new(s3),
        });
    }
    anyhow::bail!("unsupported recordings store URL (use file:///dir, s3://bucket/prefix or memory://)")
}

/// Where an `s3://` store URL points:
/// `s3://bucket[/prefix/...][?region=R&endpoint=https://host:port&allow_http=true|false]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket (3 to 63 characters: lowercase letters, digits, `-` and `.`).
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: Option<String>,
    /// Region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service (else `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Allow plain HTTP to the endpoint (else `AWS_ALLOW_HTTP`).
    pub allow_http: Option<bool>,
}

impl S3Location {
    /// Parses an `s3://` URL. Errors say what is wrong with it.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").context("an S3 store URL starts with s3://")?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = match path.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (path, ""),
        };
        if bucket.is_empty() {
            anyhow::bail!("the S3 store URL names no bucket (s3://bucket/prefix)");
        }
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            anyhow::bail!(
                "invalid S3 bucket name {bucket:?}: 3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
            );
        }
        if !prefix.is_empty() {
            for part in prefix.split('/') {
                if part.is_empty() || part == "." || part == ".." {
                    anyhow::bail!("invalid S3 key prefix {prefix:?}: empty, '.' or '..' path segments");
                }
                if part.chars().any(char::is_control) {
                    anyhow::bail!("invalid S3 key prefix {prefix:?}: control characters");
                }
            }
        }
        let mut loc = S3Location {
            bucket: bucket.to_string(),
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            region: None,
            endpoint: None,
            allow_http: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if v.is_empty() {
                anyhow::bail!("S3 store URL option {k:?} has no value");
            }
            match k {
                "region" => loc.region = Some(v.to_string()),
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() <= "https://".len() {
                        anyhow::bail!("S3 store URL option endpoint must be an http:// or https:// URL, not {v:?}");
                    }
                    loc.endpoint = Some(v.to_string());
                }
                "allow_http" => {
                    loc.allow_http = Some(match v {
                        "true" => true,
                        "false" => false,
                        _ => anyhow::bail!("S3 store URL option allow_http must be true or false, not {v:?}"),
                    })
                }
                _ => anyhow::bail!("unknown S3 store URL option {k:?} (known: region, endpoint, allow_http)"),
            }
        }
        Ok(loc)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        format!("{:#}", S3Location::parse(url).expect_err(url))
    }

    #[test]
    fn s3_urls_name_bucket_prefix_and_options() {
        let l = S3Location::parse("s3://cw-recordings").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix), ("cw-recordings", None));
        let l = S3Location::parse("s3://cw-recordings/").unwrap();
        assert_eq!(l.prefix, None, "a trailing slash is no prefix");
        let l = S3Location::parse("s3://cw.recordings-2/site/a/").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_deref()), ("cw.recordings-2", Some("site/a")));
        assert_eq!((l.region, l.endpoint, l.allow_http), (None, None, None), "from the environment");
        let l = S3Location::parse("s3://rec/p?region=cn-north-1&endpoint=http://127.0.0.1:9000&allow_http=true").unwrap();
        assert_eq!(l.prefix.as_deref(), Some("p"));
        assert_eq!(l.region.as_deref(), Some("cn-north-1"));
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(l.allow_http, Some(true));
        assert_eq!(S3Location::parse("s3://rec?allow_http=false").unwrap().allow_http, Some(false));
    }

    #[test]
    fn bad_s3_urls_say_what_is_wrong() {
        assert!(err("s3://").contains("names no bucket"));
        assert!(err("s3:///prefix").contains("names no bucket"));
        assert!(err("s3://My_Bucket/x").contains("invalid S3 bucket name"));
        assert!(err("s3://ab").contains("invalid S3 bucket name"), "too short");
        assert!(err("s3://-rec").contains("invalid S3 bucket name"));
        assert!(err("s3://rec/a//b").contains("invalid S3 key prefix"));
        assert!(err("s3://rec/a/../b").contains("invalid S3 key prefix"));
        assert!(err("s3://rec?colour=blue").contains("unknown S3 store URL option \"colour\""));
        assert!(err("s3://rec?region=").contains("has no value"));
        assert!(err("s3://rec?endpoint=minio:9000").contains("http:// or https://"));
        assert!(err("s3://rec?allow_http=yes").contains("true or false"));
        assert!(err("http://rec").contains("starts with s3://"));
    }

    #[test]
    fn open_builds_s3_stores_offline_and_refuses_other_schemes() {
        // Building an S3 client does no network I/O.
        let store = open_object_store("s3://cw-rec?region=eu-west-1&endpoint=http://127.0.0.1:9&allow_http=true").unwrap();
        assert_eq!(store.to_string(), "AmazonS3(cw-rec)");
        let store = open_object_store("s3://cw-rec/site/a?region=eu-west-1").unwrap();
        assert_eq!(store.to_string(), "PrefixObjectStore(site/a)", "keys go under the prefix");
        let e = open_object_store("s3://Bad_Bucket").err().expect("refused");
        assert!(format!("{e:#}").contains("invalid S3 bucket name"), "{e:#}");
        let e = open_object_store("ftp://host/dir").err().expect("refused");
        assert!(e.to_string().contains("unsupported recordings store URL"), "{e}");
        assert!(open_object_store("memory://").is_ok());
    }
}
