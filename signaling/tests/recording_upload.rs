//! Issue 4, "The store failing for a while loses nothing": segments stay in the local spool
//! while the object store fails, are retried with backoff, and all arrive intact once it
//! recovers; manifests of sealed recordings and uploaded segments then leave the spool, the
//! chain stays. Also with a real recording: a call relayed and recorded while the store fails,
//! whose every segment, manifest and chain reach the store once it recovers and verify there,
//! with the retry waits doubling up to the configured maximum; and whose retention deletion,
//! interrupted by the store refusing deletes, is completed by the next sweep without a second
//! tombstone.
//!
//! The second test does WebRTC media on 127.0.0.1: run it inside a loopback-only network
//! namespace (`unshare -n`, see `recordings.rs`).

mod sfu_support;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use futures_util::TryStreamExt;
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
    /// When each refused put was attempted.
    refused_puts: Mutex<Vec<std::time::Instant>>,
    /// Refuse deletes (only).
    deletes_fail: std::sync::atomic::AtomicBool,
}

impl FlakyStore {
    fn new() -> Self {
        Self { inner: InMemory::new(), failing: true.into(), refused: AtomicU64::new(0), refused_puts: Mutex::new(Vec::new()), deletes_fail: false.into() }
    }
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
        if self.failing.load(Ordering::SeqCst) {
            self.refused_puts.lock().unwrap().push(std::time::Instant::now());
        }
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
        if self.deletes_fail.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic { store: "flaky", source: "delete refused".into() });
        }
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

    let flaky = Arc::new(FlakyStore::new());
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

/// Start times of the uploader's passes: refused puts more than 100 ms apart begin a new pass
/// (a pass tries every file at once; between passes it waits at least the first retry, 200 ms).
fn pass_starts(attempts: &[std::time::Instant]) -> Vec<std::time::Instant> {
    let mut starts: Vec<std::time::Instant> = Vec::new();
    let mut last: Option<std::time::Instant> = None;
    for t in attempts {
        if last.is_none_or(|l| t.duration_since(l) > Duration::from_millis(100)) {
            starts.push(*t);
        }
        last = Some(*t);
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_call_recorded_while_the_store_fails_reaches_the_store_intact_with_growing_backoff() {
    use recordings::{verify_chain, verify_recording, RecordingId};
    use signaling::recorder::{Recorder, RecorderConfig};
    use signaling::sfu::{Relay, RelayConfig, TapFactory};
    use sfu_support::{Client, MediaProfile};

    let dir = std::env::temp_dir().join(format!("cw-upload-call-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = signaling::store::connect(&format!("sqlite://{}", dir.join("db.sqlite").display())).await.unwrap();
    let (first, max) = (Duration::from_millis(200), Duration::from_millis(800));
    let config = RecorderConfig {
        spool: dir.join("spool"),
        store_url: "memory://".into(),
        segment: Duration::from_secs(2),
        linger: Duration::from_millis(500),
        retention_days: 180,
        upload_retry_first: first,
        upload_retry_max: max,
        sweep_every: Duration::from_secs(3600),
    };
    let flaky = Arc::new(FlakyStore::new());
    let signer = recordings::Signer::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let clock = Arc::new(signaling::domain::clock::FakeClock::at(now_ms));
    let recorder = Recorder::start_with(config, signer, db.clone(), clock.clone(), Some(flaky.clone() as Arc<dyn ObjectStore>))
        .await
        .unwrap();
    let relay = Relay::new(RelayConfig { tap: Some(recorder.clone() as Arc<dyn TapFactory>), ..Default::default() });
    recorder.attach_relay(relay.downgrade());

    // A two-party call, both publishing through the relay, recorded with 2 s segments.
    let call = uuid::Uuid::new_v4();
    let profile = MediaProfile { video_bps: 300_000, publish: true };
    let a = Client::join_on(&relay, call, uuid::Uuid::new_v4(), profile, None).await;
    let b = Client::join_on(&relay, call, uuid::Uuid::new_v4(), profile, None).await;
    let (ai, bi) = (a.id, b.id);
    a.wait_until(Duration::from_secs(30), "a receives b", |c| c.received_from(bi).video_packets > 0).await;
    b.wait_until(Duration::from_secs(30), "b receives a", |c| c.received_from(ai).video_packets > 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.leave().await;
    b.leave().await;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while recorder.active_recordings() > 0 {
        assert!(std::time::Instant::now() < end, "the recording did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep failing until the waits between passes have reached the maximum.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while pass_starts(&flaky.refused_puts.lock().unwrap()).len() < 6 {
        assert!(std::time::Instant::now() < end, "the uploader did not retry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spool = dir.join("spool");
    let spooled: Vec<std::path::PathBuf> = walk(&spool).into_iter().filter(|p| p.to_string_lossy().ends_with(".webm")).collect();
    assert!(spooled.len() >= 4, "the finished segments of both participants wait in the spool: {spooled:?}");
    assert!(recorder.pending_uploads() > 0);
    assert_eq!(flaky.inner.list(None).try_collect::<Vec<_>>().await.unwrap().len(), 0, "nothing reached the store");

    // The waits between passes double from the first retry up to the maximum, never beyond.
    let starts = pass_starts(&flaky.refused_puts.lock().unwrap());
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let slack = Duration::from_millis(400);
    assert!(gaps[0] >= first && gaps[0] < first * 2, "first retry after ≈{first:?}: {gaps:?}");
    assert!(gaps[1] >= first * 2 && gaps[1] < first * 2 + slack, "then ≈{:?}: {gaps:?}", first * 2);
    for w in gaps.windows(2) {
        assert!(w[1] + Duration::from_millis(50) >= w[0], "the waits do not shrink while failing: {gaps:?}");
    }
    for g in &gaps[2..] {
        assert!(*g >= max && *g < max + slack, "capped at {max:?}: {gaps:?}");
    }

    // The store recovers: everything arrives and leaves the spool (the chain stays).
    flaky.failing.store(false, Ordering::SeqCst);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = walk(&spool.join("recordings"));
        if left.is_empty() && recorder.pending_uploads() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "uploads did not finish after the store recovered: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored: Vec<String> = flaky.inner.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    let manifests: Vec<&String> = stored.iter().filter(|k| k.ends_with("/manifest.json")).collect();
    assert_eq!(manifests.len(), 1, "one recording: {stored:?}");
    let rec: uuid::Uuid = manifests[0].split('/').nth(1).unwrap().parse().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&flaky.inner.get(&Path::from(manifests[0].as_str())).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(m["manifest"]["status"], "complete");
    let listed = m["manifest"]["segments"].as_array().unwrap();
    assert_eq!(listed.len(), spooled.len(), "the manifest lists every segment that waited in the spool");
    for seg in listed {
        let key = seg["file"].as_str().unwrap();
        assert!(stored.iter().any(|k| k == key), "{key} reached the store: {stored:?}");
    }
    let chain = flaky.inner.get(&Path::from("chain.jsonl")).await.unwrap().bytes().await.unwrap();
    assert_eq!(&chain[..], &std::fs::read(spool.join("chain.jsonl")).unwrap()[..], "the chain is copied");

    // Verify over the object store alone: an empty directory holding only the chain copied
    // down from it, over the store.
    let remote_only = dir.join("remote-view");
    std::fs::create_dir_all(&remote_only).unwrap();
    std::fs::write(remote_only.join("chain.jsonl"), &chain).unwrap();
    let view = TieredStore::new(&remote_only, flaky.clone(), tokio::runtime::Handle::current());
    let head = signaling::recorder::cli::expected_head(db.as_ref()).await.unwrap();
    assert!(head.is_some(), "the chain head is recorded in the database");
    let keyring = recorder.keyring().clone();
    let (rec_report, chain_report) = tokio::task::spawn_blocking(move || {
        (verify_recording(&view, &keyring, RecordingId::from_uuid(rec)), verify_chain(&view, &keyring, head))
    })
    .await
    .unwrap();
    assert!(rec_report.is_ok(), "{rec_report}");
    assert_eq!(rec_report.segments_ok, rec_report.segments_listed);
    assert!(rec_report.segments_listed >= 4);
    assert!(chain_report.is_ok(), "{chain_report}");
    assert_eq!(chain_report.entries, 1);

    // Past retention, the sweep deletes it; the store fails in the middle of the deletion: the
    // tombstone is in the chain, the row is kept, and the next sweep finishes the deletion
    // without a second tombstone.
    clock.advance_ms(181 * 86_400_000);
    flaky.deletes_fail.store(true, Ordering::SeqCst);
    assert_eq!(recorder.sweep_now().await.unwrap(), 0, "the deletion failed");
    let row = db.recording_by_id(rec).await.unwrap().unwrap();
    assert_ne!(row.state, signaling::store::recordings::RecordingState::Deleted, "the row waits for the retry");
    let tombstones = || std::fs::read_to_string(spool.join("chain.jsonl")).unwrap().matches("\"tombstone\"").count();
    assert_eq!(tombstones(), 1, "the tombstone comes first");
    flaky.deletes_fail.store(false, Ordering::SeqCst);
    assert_eq!(recorder.sweep_now().await.unwrap(), 1, "the retry completes it");
    assert_eq!(tombstones(), 1, "no second tombstone");
    assert_eq!(db.recording_by_id(rec).await.unwrap().unwrap().state, signaling::store::recordings::RecordingState::Deleted);
    let left: Vec<String> = flaky.inner.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    assert!(left.iter().all(|k| !k.starts_with(&format!("recordings/{rec}"))), "files removed: {left:?}");
    assert_eq!(recorder.sweep_now().await.unwrap(), 0, "deleted once");
    let head = signaling::recorder::cli::expected_head(db.as_ref()).await.unwrap();
    let (store, keyring) = (recorder.store().clone(), recorder.keyring().clone());
    let report = tokio::task::spawn_blocking(move || verify_chain(&store, &keyring, head)).await.unwrap();
    assert!(report.is_ok(), "sealed + one tombstone verify: {report}");
    assert_eq!(report.entries, 2);
    recorder.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
