//! Issue 4, "The store failing for a while loses nothing": segments stay in the local spool
//! while the object store fails, are retried with backoff, and all arrive intact once it
//! recovers; manifests of sealed recordings and uploaded segments then leave the spool, the
//! chain stays.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use signaling::recorder::objects::TieredStore;
use signaling::recorder::upload::Uploader;
use tokio::sync::Notify;

/// An object store that refuses every write while `failing` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: InMemory,
    failing: std::sync::atomic::AtomicBool,
    refused: AtomicU64,
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore")
    }
}

impl FlakyStore {
    fn check(&self) -> object_store::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic { store: "flaky", source: "store unavailable".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.check()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.check()?;
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.check()?;
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_failing_for_a_while_loses_nothing() {
    let spool = std::env::temp_dir().join(format!("cw-upload-{}", uuid::Uuid::new_v4().simple()));
    let rec = uuid::Uuid::new_v4();
    let part = uuid::Uuid::new_v4();
    let dir = spool.join("recordings").join(rec.to_string()).join(part.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut segments = Vec::new();
    for i in 1..=5u8 {
        let name = format!("{i:06}.webm");
        let bytes: Vec<u8> = (0..20_000u32).map(|b| (b as u8) ^ i).collect();
        std::fs::write(dir.join(&name), &bytes).unwrap();
        segments.push((format!("recordings/{rec}/{part}/{name}"), bytes));
    }
    // Being written: must stay local and never be uploaded.
    std::fs::write(dir.join("000006.webm.part"), b"partial").unwrap();
    let manifest = br#"{"manifest":{"status":"complete"},"signature":{}}"#.to_vec();
    std::fs::write(spool.join("recordings").join(rec.to_string()).join("manifest.json"), &manifest).unwrap();
    std::fs::write(spool.join("chain.jsonl"), b"{\"entry\":1}\n").unwrap();

    let flaky = Arc::new(FlakyStore {
        inner: InMemory::new(),
        failing: true.into(),
        refused: AtomicU64::new(0),
    });
    let tiered = TieredStore::new(&spool, flaky.clone(), tokio::runtime::Handle::current());
    let uploader = Uploader::new(tiered, Arc::new(Mutex::new(HashSet::new())), Arc::new(Notify::new()), Duration::from_secs(1));
    let handle = uploader.spawn();

    // Failing: nothing leaves the spool, uploads are retried.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let refused = flaky.refused.load(Ordering::SeqCst);
    assert!(refused >= 7 * 2, "retried while failing ({refused} refusals)");
    for (key, bytes) in &segments {
        assert_eq!(&std::fs::read(spool.join(key)).unwrap(), bytes, "{key} is still in the spool");
    }
    assert!(handle.pending() > 0);

    // Recovers: everything arrives, byte for byte.
    flaky.failing.store(false, Ordering::SeqCst);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = segments.iter().filter(|(k, _)| spool.join(k).exists()).collect();
        if left.is_empty() && handle.pending() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "uploads did not finish after the store recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (key, bytes) in &segments {
        let got = flaky.inner.get(&Path::from(key.as_str())).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], &bytes[..], "{key} stored intact");
    }
    let m = flaky.inner.get(&Path::from(format!("recordings/{rec}/manifest.json"))).await.unwrap().bytes().await.unwrap();
    assert_eq!(&m[..], &manifest[..]);
    assert!(!spool.join("recordings").join(rec.to_string()).join("manifest.json").exists(), "a sealed manifest leaves the spool");
    assert!(spool.join("chain.jsonl").exists(), "the chain stays local");
    assert!(flaky.inner.get(&Path::from("chain.jsonl")).await.is_ok(), "and is copied");
    assert!(dir.join("000006.webm.part").exists(), "a segment being written is not touched");
    assert!(flaky.inner.get(&Path::from(format!("recordings/{rec}/{part}/000006.webm.part"))).await.is_err());
    let _ = std::fs::remove_dir_all(&spool);
}
