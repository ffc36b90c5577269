//! The server's audit recorder: the glue between the media relay, the `recordings` crate, the
//! database and the recordings store. `docs/recordings.md` describes operation, access,
//! retention and verification.
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Recorder`]: start-up (key, stores, chain, crash recovery), the relay's [`TapFactory`], sealing, shutdown |
//! | `writer.rs` | one thread per recorded call owning its `recordings::Recording`, fed by bounded channels |
//! | `upload.rs` | [`upload::Uploader`]: spool → object store, retried with backoff until stored |
//! | `sweep.rs` | the retention sweeper: deletes what is past retention and not on hold, tombstoned in the chain |
//! | `objects.rs` | the object store from a URL, and [`objects::TieredStore`] (spool over object store) |
//! | `keys.rs` | the Ed25519 signing key in the data directory |
//! | `cli.rs` | `cloud-window verify` |
//!
//! # Channels and what happens when they are full
//!
//! Each tap (one per published track, running inline on the relay's forwarding task) sends to
//! its call's writer thread over a bounded `sync_channel` ([`TAP_QUEUE`] messages) with
//! `try_send`: the forwarding path never waits. If the writer is that far behind (a stalled
//! disk), the packet is dropped and counted ([`Recorder::dropped_packets`]); the recording then
//! shows the loss in its track statistics (lost packets, a video freeze until the next
//! keyframe) instead of the call stalling for everyone.

pub mod cli;
pub mod keys;
pub mod objects;
pub mod sweep;
pub mod upload;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use recordings::{Chain, ChainHead, FinishedRecording, Keyring, RecordingStatus, Signer};
use rtc::rtp;
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::Settings;
use crate::domain::clock::Clock;
use crate::sfu::{PacketTap, TapFactory, TrackInfo, WeakRelay};
use crate::store::recordings::{RecordingState, StoredChainHead};
use crate::store::Store;
use objects::TieredStore;
use writer::{CallWriter, TapMsg};

/// Capacity of each call's tap → writer channel, in messages (about 8 s of a two-party call).
pub const TAP_QUEUE: usize = 4_096;

/// The recorder's settings.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Local spool: segments are written here first.
    pub spool: PathBuf,
    /// The object store URL.
    pub store_url: String,
    /// Target segment length.
    pub segment: Duration,
    /// How long a recording whose tracks all ended waits for a participant to come back
    /// before it is finished (it finishes at once when the call is ended).
    pub linger: Duration,
    /// Default retention, days.
    pub retention_days: u32,
    /// Wait before the first upload retry (doubles after each failed pass).
    pub upload_retry_first: Duration,
    /// Longest wait between upload retries.
    pub upload_retry_max: Duration,
    /// Time between retention sweeps.
    pub sweep_every: Duration,
}

impl RecorderConfig {
    /// From the server settings.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&s.data_dir)?;
        let data = std::fs::canonicalize(&s.data_dir).context("resolving the data directory")?;
        Ok(Self {
            spool: data.join("recordings-spool"),
            store_url: s
                .recordings_store_url
                .clone()
                .unwrap_or_else(|| format!("file://{}", data.join("recordings").display())),
            segment: Duration::from_secs(s.recording_segment_secs.max(1)),
            linger: Duration::from_secs(s.reconnect_grace_secs + 5),
            retention_days: s.retention_days,
            upload_retry_first: upload::FIRST_RETRY,
            upload_retry_max: Duration::from_secs(s.recording_upload_retry_max_secs.max(1)),
            sweep_every: Duration::from_secs(s.recording_sweep_secs.max(1)),
        })
    }
}

/// State shared by the recorder, its writer threads and its background tasks.
pub(crate) struct Shared {
    pub(crate) config: RecorderConfig,
    pub(crate) signer: Signer,
    pub(crate) keyring: Keyring,
    pub(crate) db: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rt: Handle,
    pub(crate) relay: OnceLock<WeakRelay>,
    /// The chain; one appender at a time.
    pub(crate) chain: Mutex<Chain>,
    pub(crate) tiered: TieredStore,
    /// Wakes the uploader.
    pub(crate) uploads: Arc<Notify>,
    /// Recordings being written (the uploader keeps their manifests in the spool).
    pub(crate) active: Arc<Mutex<HashSet<Uuid>>>,
    calls: Mutex<HashMap<Uuid, CallEntry>>,
    dropped: AtomicU64,
}

struct CallEntry {
    tx: SyncSender<TapMsg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shared {
    /// Retention in days for a call about `matter` (the matter's, else the default).
    pub(crate) async fn retention_for(&self, matter: Option<&str>) -> u32 {
        if let Some(code) = matter {
            if let Ok(Some(m)) = self.db.matter(code).await {
                if let Some(days) = m.spec.retention_days {
                    return days;
                }
            }
        }
        self.config.retention_days
    }

    /// Seals a finished recording in the chain and records it in the database. Blocking.
    pub(crate) fn seal(&self, finished: FinishedRecording) {
        let id = *finished.recording_id.as_uuid();
        let head = {
            let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
            chain.seal(&finished, OffsetDateTime::now_utc())
        };
        let state = match finished.status {
            RecordingStatus::Complete => RecordingState::Complete,
            _ => RecordingState::Interrupted,
        };
        match head {
            Ok(head) => {
                let db = self.db.clone();
                let now = self.clock.now_ms();
                let sha = finished.manifest_sha256.to_string();
                let segments = finished.segments;
                let res = self.rt.block_on(async move {
                    db.set_chain_head(&stored_head(&head), now).await?;
                    db.finish_recording(id, state, now, segments, &sha).await
                });
                if let Err(e) = res {
                    tracing::error!(error = %e, recording = %id, "sealed recording could not be recorded in the database");
                }
            }
            Err(e) => tracing::error!(error = %e, recording = %id, "recording could not be sealed in the chain"),
        }
        self.active.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        self.uploads.notify_one();
    }
}

fn stored_head(h: &ChainHead) -> StoredChainHead {
    StoredChainHead { seq: h.seq, hash: h.hash.to_string() }
}

/// The recorder: records every call the relay carries.
pub struct Recorder {
    shared: Arc<Shared>,
    uploader: upload::UploaderHandle,
    sweeper: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl Recorder {
    /// Opens the key, the stores and the chain, recovers recordings a previous process left
    /// unfinished (sealed as `interrupted`), and starts the uploader and the sweeper.
    pub async fn start(settings: &Settings, db: Arc<dyn Store>, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let config = RecorderConfig::from_settings(settings)?;
        let signer = keys::load_or_create(&settings.data_dir)?;
        Self::start_with(config, signer, db, clock, None).await
    }

    /// As [`Recorder::start`] with explicit parts (`remote` replaces the store named by the
    /// URL: tests, benchmarks).
    pub async fn start_with(
        config: RecorderConfig,
        signer: Signer,
        db: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        remote: Option<Arc<dyn object_store::ObjectStore>>,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.spool)?;
        let remote = match remote {
            Some(r) => r,
            None => objects::open_object_store(&config.store_url)?,
        };
        let rt = Handle::current();
        let tiered = TieredStore::new(&config.spool, remote, rt.clone());
        let keyring = keys::keyring_of(&signer);
        let (chain, recovered) = {
            let (tiered, signer, keyring, spool) = (tiered.clone(), signer.clone(), keyring.clone(), config.spool.clone());
            tokio::task::spawn_blocking(move || open_and_recover(tiered, signer, keyring, spool)).await??
        };
        let now = clock.now_ms();
        if let Some(head) = chain.head() {
            match db.chain_head().await? {
                Some(h) if h.seq > head.seq => tracing::error!(
                    recorded = h.seq,
                    found = head.seq,
                    "the recordings chain is shorter than the head recorded in the database: entries were removed; run `cloud-window verify --chain`"
                ),
                _ => db.set_chain_head(&stored_head(&head), now).await?,
            }
        }
        for f in &recovered {
            let state = match f.status {
                RecordingStatus::Complete => RecordingState::Complete,
                _ => RecordingState::Interrupted,
            };
            let id = *f.recording_id.as_uuid();
            // It ended with its last finished segment, not now (the restart).
            let ended = recovered_end_ms(&config.spool, id, db.as_ref()).await.unwrap_or(now);
            if let Err(e) = db.finish_recording(id, state, ended, f.segments, &f.manifest_sha256.to_string()).await {
                tracing::warn!(error = %e, recording = %id, "recovered recording has no database row");
            }
            tracing::warn!(recording = %id, segments = f.segments, "recovered an interrupted recording and sealed it");
        }
        let active = Arc::new(Mutex::new(HashSet::new()));
        let uploads = Arc::new(Notify::new());
        let uploader = upload::Uploader::new(tiered.clone(), active.clone(), uploads.clone(), config.upload_retry_max)
            .with_first_retry(config.upload_retry_first)
            .spawn();
        let shared = Arc::new(Shared {
            config,
            signer,
            keyring,
            db,
            clock,
            rt,
            relay: OnceLock::new(),
            chain: Mutex::new(chain),
            tiered,
            uploads,
            active,
            calls: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        });
        let sweeper = tokio::spawn(sweep::run(shared.clone()));
        Ok(Arc::new(Recorder { shared, uploader, sweeper: Mutex::new(Some(sweeper)) }))
    }

    /// Lets the recorder ask publishers for keyframes (PLI) through `relay`.
    pub fn attach_relay(&self, relay: WeakRelay) {
        let _ = self.shared.relay.set(relay);
    }

    /// The view of the spool over the object store (blocking).
    pub fn store(&self) -> &TieredStore {
        &self.shared.tiered
    }

    /// Trusted public keys for verification.
    pub fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// The signing key's public half.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.shared.signer.verifying_key()
    }

    /// Its key id.
    pub fn key_id(&self) -> recordings::KeyId {
        self.shared.signer.key_id()
    }

    /// The settings in effect.
    pub fn config(&self) -> &RecorderConfig {
        &self.shared.config
    }

    /// Packets dropped because a writer fell behind (process lifetime).
    pub fn dropped_packets(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Files in the spool waiting for the object store (after the last upload pass).
    pub fn pending_uploads(&self) -> u64 {
        self.uploader.pending()
    }

    /// Calls being recorded now.
    pub fn active_recordings(&self) -> usize {
        self.shared.active.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Runs one retention sweep now; returns how many recordings were deleted.
    pub async fn sweep_now(&self) -> anyhow::Result<usize> {
        sweep::sweep_once(&self.shared).await
    }

    /// Finishes every recording in progress (sealing them), stops the sweeper and makes a last
    /// upload attempt. Called on shutdown.
    pub async fn shutdown(&self) {
        let entries: Vec<CallEntry> = {
            let mut calls = self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls.drain().map(|(_, e)| e).collect()
        };
        for mut e in entries {
            let tx = e.tx.clone();
            let thread = e.thread.take();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = tx.send(TapMsg::Shutdown);
                if let Some(t) = thread {
                    let _ = t.join();
                }
            })
            .await;
        }
        if let Some(s) = self.shared_sweeper() {
            s.abort();
        }
        self.uploader.flush(Duration::from_secs(5)).await;
    }

    fn shared_sweeper(&self) -> Option<JoinHandle<()>> {
        self.sweeper.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The sender of `call`'s writer, starting the writer thread if there is none (or the
    /// previous one finished).
    fn writer_for(&self, call: Uuid, force_new: bool) -> Option<SyncSender<TapMsg>> {
        let mut calls = self.shared.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if !force_new {
            if let Some(e) = calls.get(&call) {
                if e.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                    return Some(e.tx.clone());
                }
            }
        }
        let (tx, rx) = sync_channel(TAP_QUEUE);
        let writer = CallWriter::new(self.shared.clone(), call, rx);
        let thread = std::thread::Builder::new()
            .name(format!("rec-{}", &call.simple().to_string()[..8]))
            .spawn(move || writer.run())
            .map_err(|e| tracing::error!(error = %e, "could not start a recording thread"))
            .ok()?;
        if let Some(mut old) = calls.insert(call, CallEntry { tx: tx.clone(), thread: Some(thread) }) {
            // A finished writer: reap it off the forwarding path.
            if let Some(t) = old.thread.take() {
                std::thread::spawn(move || {
                    let _ = t.join();
                });
            }
        }
        Some(tx)
    }
}

/// When a recovered recording ended, in the database's time: its row's start plus the
/// manifest's `ended_at - started_at` (the end of its last finished segment), or the manifest's
/// `ended_at` itself if there is no row. `None` if the manifest cannot be read.
async fn recovered_end_ms(spool: &std::path::Path, id: Uuid, db: &dyn Store) -> Option<i64> {
    let path = spool.join("recordings").join(id.to_string()).join("manifest.json");
    let bytes = tokio::fs::read(&path).await.ok()?;
    let manifest = recordings::Manifest::from_signed_file(&bytes).ok()?;
    let (started, ended) = (manifest.started_at, manifest.ended_at?);
    let length_ms = i64::try_from((ended - started).whole_milliseconds()).ok()?.max(0);
    match db.recording_by_id(id).await {
        Ok(Some(row)) => Some(row.started_at + length_ms),
        _ => i64::try_from(ended.unix_timestamp_nanos() / 1_000_000).ok(),
    }
}

/// Opens the chain and seals every recording a previous process left unsealed.
fn open_and_recover(
    tiered: TieredStore,
    signer: Signer,
    keyring: Keyring,
    spool: PathBuf,
) -> anyhow::Result<(Chain, Vec<FinishedRecording>)> {
    let mut chain = Chain::open(Arc::new(tiered), signer.clone()).context("opening the recordings chain")?;
    let mut recovered = Vec::new();
    for id in chain.unsealed().context("listing unsealed recordings")? {
        match recordings::recover_interrupted(&spool, id, &signer, &keyring) {
            Ok(f) => {
                chain.seal(&f, OffsetDateTime::now_utc()).context("sealing a recovered recording")?;
                recovered.push(f);
            }
            Err(e) => tracing::error!(error = %e, recording = %id, "an interrupted recording could not be recovered; verify reports it"),
        }
    }
    Ok((chain, recovered))
}

impl TapFactory for Recorder {
    fn open(&self, track: &TrackInfo) -> Option<Box<dyn PacketTap>> {
        let tx = self.writer_for(track.call_id, false)?;
        Some(Box::new(Tap {
            recorder: self.shared.clone(),
            info: track.clone(),
            tx,
            announced: false,
        }))
    }
}

/// One published track's tap.
struct Tap {
    recorder: Arc<Shared>,
    info: TrackInfo,
    tx: SyncSender<TapMsg>,
    announced: bool,
}

impl Tap {
    fn send(&mut self, msg: TapMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.recorder.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl PacketTap for Tap {
    fn on_rtp(&mut self, packet: &rtp::Packet, arrival: Instant) {
        if !self.announced {
            let info = self.info.clone();
            if !self.send(TapMsg::Opened { info, at: arrival }) {
                return;
            }
            self.announced = true;
        }
        let msg = TapMsg::Rtp { participant: self.info.participant_id, kind: self.info.kind, packet: packet.clone(), at: arrival };
        self.send(msg);
    }

    fn on_end(&mut self) {
        if !self.announced {
            return;
        }
        let msg = TapMsg::Ended { participant: self.info.participant_id, kind: self.info.kind, at: Instant::now() };
        if let Err(TrySendError::Full(msg)) = self.tx.try_send(msg) {
            // The end must arrive: wait for room off the forwarding task.
            let tx = self.tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(msg);
            });
        }
    }
}
