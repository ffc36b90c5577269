//! Spool → object store. The spool directory is the source of truth for what still has to be
//! uploaded: every pass walks it, puts each finished segment (`*.webm`, `*.mkv`) into the object store
//! and only then deletes the local copy; manifests are uploaded whenever they change and leave
//! the spool once their recording is sealed; the chain file is copied after every change and
//! stays. A failed pass keeps everything on local disk and is retried with exponential backoff
//! (1 s doubling up to the configured maximum) until the store takes it: nothing is lost
//! because an upload failed, and a restart resumes from the spool.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use object_store::{ObjectStore, PutPayload};
use recordings::chain::CHAIN_KEY;
use recordings::{ObjectKey, Sha256Digest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::objects::{object_path, TieredStore};

/// The default wait before the first retry of a failed pass.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The uploader's state (one per recorder).
pub struct Uploader {
    spool: PathBuf,
    remote: Arc<dyn ObjectStore>,
    active: Arc<Mutex<HashSet<Uuid>>>,
    wake: Arc<Notify>,
    retry_first: Duration,
    retry_max: Duration,
    /// Hash of the last uploaded version of files that stay in the spool (manifests, chain).
    uploaded: HashMap<String, Sha256Digest>,
    pending: Arc<AtomicU64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassSummary {
    /// Files put into the object store.
    pub uploaded: u64,
    /// Files that failed (still in the spool).
    pub failed: u64,
}

/// The running uploader.
pub struct UploaderHandle {
    wake: Arc<Notify>,
    pending: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl UploaderHandle {
    /// Files still waiting after the last pass.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Asks for a pass now, and waits (at most `limit`) until nothing is pending.
    pub async fn flush(&self, limit: Duration) {
        let end = tokio::time::Instant::now() + limit;
        self.wake.notify_one();
        tokio::time::sleep(Duration::from_millis(50)).await;
        while self.pending() > 0 && tokio::time::Instant::now() < end {
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for UploaderHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Uploader {
    /// An uploader from the spool of `tiered` to its object store. Recordings in `active` keep
    /// their manifest in the spool.
    pub fn new(tiered: TieredStore, active: Arc<Mutex<HashSet<Uuid>>>, wake: Arc<Notify>, retry_max: Duration) -> Self {
        Self {
            spool: tiered.local().root().to_path_buf(),
            remote: tiered.remote().clone(),
            active,
            wake,
            retry_first: FIRST_RETRY.min(retry_max),
            retry_max,
            uploaded: HashMap::new(),
            pending: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sets the wait before the first retry (default [`FIRST_RETRY`]); it doubles after each
    /// failed pass up to the maximum.
    #[must_use]
    pub fn with_first_retry(mut self, first: Duration) -> Self {
        self.retry_first = first.max(Duration::from_millis(1)).min(self.retry_max);
        self
    }

    /// Runs the uploader until the handle is dropped.
    pub fn spawn(self) -> UploaderHandle {
        let (wake, pending) = (self.wake.clone(), self.pending.clone());
        let task = tokio::spawn(self.run());
        UploaderHandle { wake, pending, task }
    }

    async fn run(mut self) {
        let mut backoff = self.retry_first;
        loop {
            let summary = self.pass().await;
            if summary.failed > 0 {
                tracing::warn!(
                    failed = summary.failed,
                    retry_in_ms = backoff.as_millis() as u64,
                    "recordings store unavailable: files stay in the spool and will be retried"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry_max);
            } else {
                backoff = self.retry_first;
                // New segments wake us; a periodic pass catches anything else.
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wake.notified()).await;
            }
        }
    }

    /// One pass over the spool.
    pub async fn pass(&mut self) -> PassSummary {
        let spool = self.spool.clone();
        let files = tokio::task::spawn_blocking(move || scan(&spool)).await.unwrap_or_default();
        let mut summary = PassSummary::default();
        let mut pending = 0;
        for (key, path) in files {
            let name = key.as_str().rsplit('/').next().unwrap_or("");
            let is_chain = key.as_str() == CHAIN_KEY;
            let is_manifest = name == "manifest.json";
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(_) => continue, // moved or deleted meanwhile
            };
            let digest = Sha256Digest::of(&bytes);
            let already = (is_chain || is_manifest) && self.uploaded.get(key.as_str()) == Some(&digest);
            if !already {
                match self.remote.put(&object_path(&key), PutPayload::from(bytes)).await {
                    Ok(_) => {
                        summary.uploaded += 1;
                        self.uploaded.insert(key.as_str().to_string(), digest);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, key = %key, "upload failed");
                        summary.failed += 1;
                        pending += 1;
                        continue;
                    }
                }
            }
            if is_chain {
                continue;
            }
            if is_manifest {
                // Keep the manifest of a recording still being written.
                let rid = key.as_str().split('/').nth(1).and_then(|s| s.parse::<Uuid>().ok());
                let live = rid.is_some_and(|id| self.active.lock().unwrap_or_else(PoisonError::into_inner).contains(&id));
                if live || still_recording(&path) {
                    continue;
                }
            }
            remove_local(&self.spool, &path).await;
            self.uploaded.remove(key.as_str());
        }
        self.pending.store(pending, Ordering::Relaxed);
        summary
    }
}

/// Whether a manifest file says `"status":"recording"` (a recording not yet recovered).
fn still_recording(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["manifest"]["status"] == "recording")
}

async fn remove_local(spool: &Path, path: &Path) {
    if tokio::fs::remove_file(path).await.is_err() {
        return;
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == spool || tokio::fs::remove_dir(d).await.is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Finished files in the spool: the chain, manifests and finished segments (not `.part`, not
/// temporary files).
fn scan(spool: &Path) -> Vec<(ObjectKey, PathBuf)> {
    let mut out = Vec::new();
    let chain = spool.join(CHAIN_KEY);
    if chain.is_file() {
        if let Ok(k) = ObjectKey::parse(CHAIN_KEY) {
            out.push((k, chain));
        }
    }
    let mut stack = vec![(spool.join("recordings"), "recordings".to_string())];
    while let Some((dir, key)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
            let child = format!("{key}/{name}");
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push((e.path(), child));
            } else if name.ends_with(".webm") || name.ends_with(".mkv") || name == "manifest.json" {
                if let Ok(k) = ObjectKey::parse(child) {
                    out.push((k, e.path()));
                }
            }
        }
    }
    // Segments before manifests: a manifest leaves the spool after what it lists.
    out.sort_by_key(|(k, _)| k.as_str().ends_with("manifest.json"));
    out
}
