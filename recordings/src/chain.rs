//! The append-only chain of sealed recordings and deletions.
//!
//! `chain.jsonl` holds one signed entry per line. Each entry names the SHA-256
//! of the previous entry (all zeros for the first), so removing, altering,
//! reordering or inserting an entry breaks a link; each entry is signed, so the
//! chain cannot be rebuilt without the server's key. Cutting entries off the
//! end is only detectable against a head kept elsewhere (the database): pass it
//! to [`crate::verify::verify_chain`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::ids::{CallId, RecordingId};
use crate::keys::{KeyId, SignatureBytes, Signer, CHAIN_DOMAIN};
use crate::manifest::{normalize_time, RecordingKeys, RecordingStatus, RECORDINGS_DIR};
use crate::recording::FinishedRecording;
use crate::store::{ObjectKey, Store, StoreError};

/// Storage key of the chain.
pub const CHAIN_KEY: &str = "chain.jsonl";

/// Why a recording was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// Past its retention period and not on legal hold.
    RetentionExpired,
    /// Ordered by a court or authority.
    LegalOrder,
    /// Anything else; the detail says what.
    Other,
}

/// What an entry records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChainEvent {
    /// A recording was finished (or recovered) and its manifest fixed.
    Sealed {
        /// The recorded call.
        call_id: CallId,
        /// Complete or interrupted.
        status: RecordingStatus,
        /// SHA-256 of the exact `manifest.json` bytes.
        manifest_sha256: Sha256Digest,
        /// Number of segments in that manifest.
        segments: u32,
    },
    /// A recording was deleted.
    Tombstone {
        /// SHA-256 of the manifest of the deleted recording.
        manifest_sha256: Sha256Digest,
        /// Why.
        reason: DeletionReason,
        /// Who or what decided, free text (e.g. the retention rule applied).
        detail: String,
    },
}

/// One chain entry (the signed part).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// SHA-256 of the previous entry's canonical JSON ([`Sha256Digest::ZERO`] for the first).
    pub prev: Sha256Digest,
    /// When the entry was appended.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The recording concerned.
    pub recording_id: RecordingId,
    /// What happened.
    pub event: ChainEvent,
}

impl ChainEntry {
    /// SHA-256 of the canonical JSON of this entry: what the next entry links to.
    pub fn hash(&self) -> Sha256Digest {
        Sha256Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// One line of `chain.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedChainEntry {
    /// The entry.
    pub entry: ChainEntry,
    /// Which key signed.
    pub key_id: KeyId,
    /// Signature over the domain prefix and the entry hash.
    pub signature: SignatureBytes,
}

/// The last entry of a chain: store it outside the chain (database) to detect
/// truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash.
    pub hash: Sha256Digest,
}

/// Appending to the chain failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The last line of the chain cannot be read, so nothing can be linked to it.
    #[error("chain is corrupt at line {line}: {detail}")]
    Corrupt {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The recording to delete has no manifest.
    #[error("recording {0} has no manifest")]
    NoManifest(RecordingId),
}

/// Parses the lines of a chain file: `(line number, result)`.
pub(crate) fn parse_lines(bytes: &[u8]) -> Vec<(usize, Result<SignedChainEntry, String>)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_slice::<SignedChainEntry>(l).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

/// The writer's handle on the chain: knows the head and appends signed entries.
///
/// One process appends at a time; with several nodes, appends must be
/// serialized by the caller (a database lock or a conditional put).
pub struct Chain {
    store: Arc<dyn Store>,
    signer: Signer,
    key: ObjectKey,
    head: Option<ChainHead>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("signer", &self.signer)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// Opens the chain in `store` (empty if absent) and reads its head.
    ///
    /// # Errors
    /// [`ChainError::Corrupt`] if the last line is unreadable; store errors.
    pub fn open(store: Arc<dyn Store>, signer: Signer) -> Result<Self, ChainError> {
        let key = ObjectKey::trusted(CHAIN_KEY.to_owned());
        let bytes = store.get(&key)?.unwrap_or_default();
        let head = match parse_lines(&bytes).pop() {
            None => None,
            Some((_, Ok(last))) => Some(ChainHead {
                seq: last.entry.seq,
                hash: last.entry.hash(),
            }),
            Some((line, Err(detail))) => return Err(ChainError::Corrupt { line, detail }),
        };
        Ok(Self {
            store,
            signer,
            key,
            head,
        })
    }

    /// The last entry, if any.
    pub fn head(&self) -> Option<ChainHead> {
        self.head
    }

    /// Appends an entry for `recording_id`.
    ///
    /// # Errors
    /// Store errors; the head is unchanged then.
    pub fn append(
        &mut self,
        recording_id: RecordingId,
        event: ChainEvent,
        now: OffsetDateTime,
    ) -> Result<ChainHead, ChainError> {
        let entry = ChainEntry {
            seq: self.head.map_or(0, |h| h.seq + 1),
            prev: self.head.map_or(Sha256Digest::ZERO, |h| h.hash),
            at: normalize_time(now),
            recording_id,
            event,
        };
        let hash = entry.hash();
        let signed = SignedChainEntry {
            key_id: self.signer.key_id(),
            signature: self.signer.sign(CHAIN_DOMAIN, &hash.0),
            entry,
        };
        let mut line = serde_json::to_vec(&signed).unwrap_or_default();
        line.push(b'\n');
        self.store.append(&self.key, &line)?;
        let head = ChainHead {
            seq: signed.entry.seq,
            hash,
        };
        self.head = Some(head);
        Ok(head)
    }

    /// Seals a finished (or recovered) recording: appends its manifest hash.
    ///
    /// # Errors
    /// Store errors.
    pub fn seal(
        &mut self,
        recording: &FinishedRecording,
        now: OffsetDateTime,
    ) -> Result<ChainHead, ChainError> {
        self.append(
            recording.recording_id,
            ChainEvent::Sealed {
                call_id: recording.call_id,
                status: recording.status,
                manifest_sha256: recording.manifest_sha256,
                segments: recording.segments,
            },
            now,
        )
    }

    /// Recordings in the store that the chain neither seals nor tombstones:
    /// unfinished ones, or ones whose writer died. Recover them with
    /// [`crate::recover_interrupted`] and seal them.
    ///
    /// # Errors
    /// Store errors.
    pub fn unsealed(&self) -> Result<Vec<RecordingId>, ChainError> {
        let bytes = self.store.get(&self.key)?.unwrap_or_default();
        let known: std::collections::HashSet<RecordingId> = parse_lines(&bytes)
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .map(|e| e.entry.recording_id)
            .collect();
        Ok(list_recordings(self.store.as_ref())?
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect())
    }

    /// Deletes a recording for retention (or another reason): appends a
    /// tombstone naming its manifest hash first, then removes its files, so the
    /// deletion is on record even if removal is interrupted.
    ///
    /// A recording the chain already tombstones (an earlier deletion failed
    /// part way through removing files) gets no second tombstone: only its
    /// remaining files are removed, and the current head is returned.
    ///
    /// # Errors
    /// [`ChainError::NoManifest`] if the recording has no manifest (and no
    /// tombstone); store errors.
    pub fn delete_recording(
        &mut self,
        recording_id: RecordingId,
        reason: DeletionReason,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<ChainHead, ChainError> {
        let keys = RecordingKeys::new(recording_id);
        if let (true, Some(head)) = (self.is_tombstoned(recording_id)?, self.head) {
            for key in self.store.list(&keys.dir)? {
                self.store.delete(&key)?;
            }
            return Ok(head);
        }
        let manifest = self
            .store
            .get(&keys.manifest)?
            .ok_or(ChainError::NoManifest(recording_id))?;
        let head = self.append(
            recording_id,
            ChainEvent::Tombstone {
                manifest_sha256: Sha256Digest::of(&manifest),
                reason,
                detail: detail.to_owned(),
            },
            now,
        )?;
        for key in self.store.list(&keys.dir)? {
            self.store.delete(&key)?;
        }
        Ok(head)
    }
}

impl Chain {
    /// Whether the chain holds a tombstone for `recording_id`.
    fn is_tombstoned(&self, recording_id: RecordingId) -> Result<bool, ChainError> {
        let bytes = self.store.get(&self.key)?.unwrap_or_default();
        Ok(parse_lines(&bytes)
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .any(|e| {
                e.entry.recording_id == recording_id
                    && matches!(e.entry.event, ChainEvent::Tombstone { .. })
            }))
    }
}

/// Ids of the recordings that have a directory in `store`, sorted.
pub(crate) fn list_recordings(store: &dyn Store) -> Result<Vec<RecordingId>, StoreError> {
    let dir = ObjectKey::trusted(RECORDINGS_DIR.to_owned());
    let mut ids: Vec<RecordingId> = store
        .list(&dir)?
        .iter()
        .filter_map(|k| k.strip_prefix(&dir)?.split('/').next()?.parse().ok())
        .collect();
    ids.dedup();
    Ok(ids)
}
