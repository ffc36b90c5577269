//! A recording of one call: participants' pipelines, the signed manifest kept
//! up to date after every segment, and crash recovery.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::codec::TrackKind;
use crate::digest::Sha256Digest;
use crate::error::RecordError;
use crate::ids::{CallId, ParticipantId, ParticipantRole, RecordingId};
use crate::keys::{Keyring, SignatureCheck, Signer};
use crate::manifest::{
    check_signature, decode_signed, encode_signed, normalize_time, Manifest, RecordingKeys,
    RecordingStatus, MANIFEST_FORMAT,
};
use crate::participant::{
    MediaConfig, ParticipantEvent, ParticipantRecorder, SegmentContext, TrackSpec,
};
use crate::rtp::RtpPacket;
use crate::store::{sync_dir, FsStore, ObjectKey, Store};

/// Where and how to record.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Local directory holding `recordings/` (and usually `chain.jsonl`).
    pub root: PathBuf,
    /// Media pipeline tuning.
    pub media: MediaConfig,
}

impl RecordingConfig {
    /// Default media settings under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            media: MediaConfig::default(),
        }
    }
}

/// Something the owner of a [`Recording`] should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordingEvent {
    /// Ask this participant's video sender for a keyframe (send a PLI). Already
    /// rate-limited by [`MediaConfig::keyframe_request_interval`].
    KeyframeWanted {
        /// Whose video.
        participant: ParticipantId,
    },
    /// A segment file was finished, hashed and listed in the signed manifest.
    SegmentFinished {
        /// Whose media.
        participant: ParticipantId,
        /// 1-based index among the participant's segments.
        index: u32,
        /// Storage key of the file.
        file: ObjectKey,
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the file.
        sha256: Sha256Digest,
    },
}

/// A recording whose manifest is final, ready for [`crate::chain::Chain::seal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRecording {
    /// The recording.
    pub recording_id: RecordingId,
    /// The recorded call.
    pub call_id: CallId,
    /// Complete or interrupted.
    pub status: RecordingStatus,
    /// SHA-256 of the final `manifest.json` file.
    pub manifest_sha256: Sha256Digest,
    /// Number of segments.
    pub segments: u32,
}

/// Records one call. Sans-IO in time: every method takes `now`; the owner
/// feeds packets and calls [`Recording::handle_timeout`] when
/// [`Recording::poll_timeout`] says so.
#[derive(Debug)]
pub struct Recording {
    config: RecordingConfig,
    store: FsStore,
    keys: RecordingKeys,
    signer: Signer,
    manifest: Manifest,
    participants: Vec<ParticipantRecorder>,
    pending_renames: Vec<(PathBuf, PathBuf)>,
    events: VecDeque<RecordingEvent>,
}

impl Recording {
    /// Starts recording call `call_id` at `started_at` (media time 0) and
    /// writes the first signed manifest (status `recording`, no segments).
    ///
    /// # Errors
    /// [`RecordError::AlreadyExists`] if `recording_id` has a manifest; I/O.
    pub fn start(
        config: RecordingConfig,
        recording_id: RecordingId,
        call_id: CallId,
        started_at: OffsetDateTime,
        signer: Signer,
    ) -> Result<Self, RecordError> {
        let store = FsStore::new(config.root.clone());
        let keys = RecordingKeys::new(recording_id);
        if store.get(&keys.manifest)?.is_some() || store.path(&keys.dir).exists() {
            return Err(RecordError::AlreadyExists(recording_id));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            recording_id,
            call_id,
            status: RecordingStatus::Recording,
            started_at: normalize_time(started_at),
            ended_at: None,
            participants: Vec::new(),
            segments: Vec::new(),
        };
        let mut rec = Self {
            config,
            store,
            keys,
            signer,
            manifest,
            participants: Vec::new(),
            pending_renames: Vec::new(),
            events: VecDeque::new(),
        };
        rec.write_manifest()?;
        Ok(rec)
    }

    /// This recording's id.
    pub fn id(&self) -> RecordingId {
        self.manifest.recording_id
    }

    /// The manifest as last written.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn now_ms(&self, now: OffsetDateTime) -> u64 {
        let ms = (now - self.manifest.started_at).whole_milliseconds();
        u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
    }

    fn index_of(&self, participant: ParticipantId) -> Result<usize, RecordError> {
        if self.manifest.status != RecordingStatus::Recording {
            return Err(RecordError::Finished(self.manifest.recording_id));
        }
        self.participants
            .iter()
            .position(|p| p.id() == participant)
            .ok_or(RecordError::UnknownParticipant(participant))
    }

    /// Adds a participant with its tracks, or (same id again: a reconnect or a
    /// renegotiation) replaces its tracks. A change of codecs starts a new
    /// segment file; segment numbering continues.
    ///
    /// # Errors
    /// Two tracks of one kind; I/O.
    pub fn add_participant(
        &mut self,
        participant: ParticipantId,
        role: ParticipantRole,
        tracks: &[TrackSpec],
        now: OffsetDateTime,
    ) -> Result<(), RecordError> {
        let now_ms = self.now_ms(now);
        let idx = match self.index_of(participant) {
            Ok(i) => i,
            Err(e @ RecordError::Finished(_)) => return Err(e),
            Err(_) => {
                let ctx = SegmentContext {
                    recording_id: self.manifest.recording_id,
                    started_at: self.manifest.started_at,
                    store: self.store.clone(),
                    keys: self.keys.clone(),
                };
                self.participants.push(ParticipantRecorder::new(
                    participant,
                    role,
                    normalize_time(now),
                    ctx,
                    self.config.media,
                ));
                self.participants.len() - 1
            }
        };
        self.participants[idx].set_tracks(tracks, now_ms)?;
        self.pump(idx)?;
        self.write_manifest()?;
        Ok(())
    }

    /// Feeds one RTP packet, exactly as received, of `participant`'s `kind`
    /// track. Malformed packets are counted, not errors.
    ///
    /// # Errors
    /// Unknown participant or track; I/O while writing a segment.
    pub fn push_rtp(
        &mut self,
        participant: ParticipantId,
        kind: TrackKind,
        packet: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), RecordError> {
        let parsed = RtpPacket::parse(packet).ok();
        let now_ms = self.now_ms(now);
        let idx = self.index_of(participant)?;
        self.participants[idx].push_rtp(kind, parsed.as_ref(), now_ms)?;
        self.pump(idx)
    }

    /// Like [`Self::push_rtp`] for a packet the caller's RTP stack already
    /// parsed (build it with [`RtpPacket::new`]): saves serializing it again.
    ///
    /// # Errors
    /// Unknown participant or track; I/O while writing a segment.
    pub fn push_rtp_packet(
        &mut self,
        participant: ParticipantId,
        kind: TrackKind,
        packet: &RtpPacket<'_>,
        now: OffsetDateTime,
    ) -> Result<(), RecordError> {
        let now_ms = self.now_ms(now);
        let idx = self.index_of(participant)?;
        self.participants[idx].push_rtp(kind, Some(packet), now_ms)?;
        self.pump(idx)
    }

    /// When [`Self::handle_timeout`] should next be called, if packets wait
    /// in a reorder buffer.
    pub fn poll_timeout(&self) -> Option<OffsetDateTime> {
        let ms = self
            .participants
            .iter()
            .filter_map(ParticipantRecorder::deadline_ms)
            .min()?;
        let d = time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
        self.manifest.started_at.checked_add(d)
    }

    /// Gives up waiting for missing packets whose deadline passed.
    ///
    /// # Errors
    /// I/O while writing a segment.
    pub fn handle_timeout(&mut self, now: OffsetDateTime) -> Result<(), RecordError> {
        if self.manifest.status != RecordingStatus::Recording {
            return Ok(());
        }
        let now_ms = self.now_ms(now);
        for idx in 0..self.participants.len() {
            self.participants[idx].handle_timeout(now_ms)?;
            self.pump(idx)?;
        }
        Ok(())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<RecordingEvent> {
        self.events.pop_front()
    }

    /// A participant left: writes out what it buffered and finishes its
    /// segment. It stays in the manifest; adding it again continues it.
    ///
    /// # Errors
    /// Unknown participant; I/O.
    pub fn remove_participant(
        &mut self,
        participant: ParticipantId,
        now: OffsetDateTime,
    ) -> Result<(), RecordError> {
        let now_ms = self.now_ms(now);
        let idx = self.index_of(participant)?;
        self.participants[idx].flush(now_ms)?;
        self.participants[idx].finish_segment()?;
        self.pump(idx)
    }

    /// Ends the recording: finishes every segment and writes the final
    /// manifest (status `complete`). Seal the result with
    /// [`crate::chain::Chain::seal`]. Calling it again after success returns
    /// the same result.
    ///
    /// # Errors
    /// I/O; the recording can then be finished again or recovered.
    pub fn finish(&mut self, now: OffsetDateTime) -> Result<FinishedRecording, RecordError> {
        if self.manifest.status == RecordingStatus::Recording {
            let now_ms = self.now_ms(now);
            for idx in 0..self.participants.len() {
                self.participants[idx].flush(now_ms)?;
                self.participants[idx].finish_segment()?;
                self.pump(idx)?;
            }
            self.manifest.status = RecordingStatus::Complete;
            self.manifest.ended_at = Some(normalize_time(now));
        }
        let sha = self.write_manifest()?;
        Ok(finished(&self.manifest, sha))
    }

    /// Moves participant events into the manifest and the event queue.
    fn pump(&mut self, idx: usize) -> Result<(), RecordError> {
        let mut changed = false;
        while let Some(ev) = self.participants[idx].pop_event() {
            match ev {
                ParticipantEvent::KeyframeWanted => {
                    self.events.push_back(RecordingEvent::KeyframeWanted {
                        participant: self.participants[idx].id(),
                    })
                }
                ParticipantEvent::SegmentFinished(seg) => {
                    self.events.push_back(RecordingEvent::SegmentFinished {
                        participant: seg.entry.participant,
                        index: seg.entry.index,
                        file: seg.entry.file.clone(),
                        size: seg.entry.size,
                        sha256: seg.entry.sha256,
                    });
                    let seg = *seg;
                    self.manifest.segments.push(seg.entry);
                    self.pending_renames.push((seg.part_path, seg.final_path));
                    changed = true;
                }
            }
        }
        if changed {
            self.write_manifest()?;
        }
        Ok(())
    }

    /// Signs and writes the manifest, then gives finished segments their final
    /// names (so a listed segment is never missing for long: recovery renames
    /// any `.part` the manifest already lists).
    fn write_manifest(&mut self) -> Result<Sha256Digest, RecordError> {
        self.manifest.participants = self
            .participants
            .iter()
            .map(ParticipantRecorder::entry)
            .collect();
        let bytes = encode_signed(&self.manifest, &self.signer);
        self.store.put(&self.keys.manifest, &bytes)?;
        for (part, fin) in std::mem::take(&mut self.pending_renames) {
            fs::rename(&part, &fin).map_err(|e| RecordError::io("rename segment", &part, e))?;
            if let Some(dir) = fin.parent() {
                sync_dir(dir);
            }
        }
        Ok(Sha256Digest::of(&bytes))
    }
}

fn finished(manifest: &Manifest, manifest_sha256: Sha256Digest) -> FinishedRecording {
    FinishedRecording {
        recording_id: manifest.recording_id,
        call_id: manifest.call_id,
        status: manifest.status,
        manifest_sha256,
        segments: u32::try_from(manifest.segments.len()).unwrap_or(u32::MAX),
    }
}

/// Recovers a recording whose writer died (crash, SIGKILL): checks the last
/// signed manifest, gives listed segments still named `.part` their final name
/// if their hash matches, and marks the manifest `interrupted` (re-signed).
/// Segments that were not finished stay as `.part` files outside the manifest.
/// A recording already complete or interrupted is returned unchanged. Seal the
/// result with [`crate::chain::Chain::seal`].
///
/// # Errors
/// [`RecordError::BadManifest`] if the manifest is missing, unreadable or not
/// validly signed by a key in `keyring`; I/O.
pub fn recover_interrupted(
    root: &Path,
    recording_id: RecordingId,
    signer: &Signer,
    keyring: &Keyring,
) -> Result<FinishedRecording, RecordError> {
    let store = FsStore::new(root);
    let keys = RecordingKeys::new(recording_id);
    let bad = |detail: &str| RecordError::BadManifest {
        recording_id,
        detail: detail.to_owned(),
    };
    let bytes = store.get(&keys.manifest)?.ok_or_else(|| bad("missing"))?;
    let decoded = decode_signed(&bytes).map_err(|e| bad(&e))?;
    if check_signature(keyring, &decoded.raw, &decoded.signature) != SignatureCheck::Valid {
        return Err(bad("signature does not verify"));
    }
    let mut manifest = decoded.manifest.map_err(|e| bad(&e))?;
    if manifest.recording_id != recording_id {
        return Err(bad("manifest names another recording"));
    }
    if manifest.status != RecordingStatus::Recording {
        return Ok(finished(&manifest, Sha256Digest::of(&bytes)));
    }
    for seg in &manifest.segments {
        let fin = store.path(&seg.file);
        let mut part = fin.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        if !fin.exists() && part.exists() {
            let hash = File::open(&part)
                .and_then(Sha256Digest::of_reader)
                .map_err(|e| RecordError::io("hash segment", &part, e))?;
            if hash == seg.sha256 {
                fs::rename(&part, &fin).map_err(|e| RecordError::io("rename segment", &part, e))?;
            }
        }
    }
    manifest.status = RecordingStatus::Interrupted;
    manifest.ended_at = Some(
        manifest
            .segments
            .iter()
            .map(|s| s.wall_end)
            .max()
            .unwrap_or(manifest.started_at),
    );
    let bytes = encode_signed(&manifest, signer);
    store.put(&keys.manifest, &bytes)?;
    Ok(finished(&manifest, Sha256Digest::of(&bytes)))
}
