//! Verification: do the files match the manifests, the manifests their
//! signatures, and the chain its links?
//!
//! Verification never stops at the first problem and never returns an error:
//! storage failures become problems in the report. A report serializes to JSON
//! (for the API) and prints one line per problem (for the command line).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;

use crate::chain::{list_recordings, parse_lines, ChainEvent, ChainHead, CHAIN_KEY};
use crate::codec::Container;
use crate::digest::Sha256Digest;
use crate::ids::{ParticipantId, RecordingId};
use crate::keys::{KeyId, Keyring, SignatureCheck, CHAIN_DOMAIN};
use crate::manifest::{
    check_signature, decode_signed, Manifest, RecordingKeys, RecordingStatus, MANIFEST_FORMAT,
};
use crate::store::{ObjectKey, Store};

/// Something wrong with one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordingProblem {
    /// The store could not list the recording's files.
    StoreUnreadable {
        /// The store's error.
        detail: String,
    },
    /// There is no `manifest.json`.
    ManifestMissing,
    /// `manifest.json` is not a readable signed manifest.
    ManifestUnreadable {
        /// The parser's error.
        detail: String,
    },
    /// The signature does not match the manifest bytes (altered or forged).
    SignatureInvalid {
        /// The key the signature claims.
        key_id: KeyId,
    },
    /// Signed by a key that is not in the keyring.
    UnknownSigningKey {
        /// The key the signature claims.
        key_id: KeyId,
    },
    /// The manifest bytes are not in canonical form.
    ManifestNotCanonical,
    /// The manifest belongs to another recording (substituted).
    ManifestForOtherRecording {
        /// The recording id inside the manifest.
        found: RecordingId,
    },
    /// The manifest contradicts itself.
    ManifestInconsistent {
        /// What is contradictory.
        detail: String,
    },
    /// A listed segment file does not exist.
    SegmentMissing {
        /// Whose segment.
        participant: ParticipantId,
        /// Its index.
        index: u32,
        /// Its key.
        file: ObjectKey,
    },
    /// A listed segment file exists but its content differs.
    SegmentHashMismatch {
        /// Whose segment.
        participant: ParticipantId,
        /// Its index.
        index: u32,
        /// Its key.
        file: ObjectKey,
        /// Hash in the manifest.
        expected_sha256: Sha256Digest,
        /// Hash of the file.
        actual_sha256: Sha256Digest,
        /// Size in the manifest.
        expected_size: u64,
        /// Size of the file.
        actual_size: u64,
    },
    /// Two segment files hold each other's content (order swapped).
    SegmentsSwapped {
        /// One file.
        first: ObjectKey,
        /// The other.
        second: ObjectKey,
    },
    /// A segment file holds the content listed for another segment.
    SegmentMisplaced {
        /// The file.
        file: ObjectKey,
        /// The segment whose content it holds.
        holds_content_of: ObjectKey,
    },
    /// A listed segment file could not be read.
    SegmentUnreadable {
        /// Its key.
        file: ObjectKey,
        /// The store's error.
        detail: String,
    },
    /// A file in the recording's directory that the manifest does not list.
    UnexpectedFile {
        /// Its key.
        file: ObjectKey,
    },
}

/// Something worth knowing about a recording that is not tampering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordingNotice {
    /// A `.part` file: a segment that was being written when recording
    /// stopped; not covered by the manifest.
    UnfinishedSegment {
        /// Its key.
        file: ObjectKey,
    },
}

/// The verdict on one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingReport {
    /// The recording.
    pub recording_id: RecordingId,
    /// Status in the manifest, if it could be read.
    pub status: Option<RecordingStatus>,
    /// Segments the manifest lists.
    pub segments_listed: usize,
    /// Segments whose file matched size and hash.
    pub segments_ok: usize,
    /// What is wrong (empty: nothing).
    pub problems: Vec<RecordingProblem>,
    /// What is worth knowing.
    pub notices: Vec<RecordingNotice>,
}

impl RecordingReport {
    /// No problems.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies one recording: the manifest signature, its consistency, and every
/// segment file against it.
pub fn verify_recording(
    store: &dyn Store,
    keyring: &Keyring,
    recording_id: RecordingId,
) -> RecordingReport {
    let keys = RecordingKeys::new(recording_id);
    let mut r = RecordingReport {
        recording_id,
        status: None,
        segments_listed: 0,
        segments_ok: 0,
        problems: Vec::new(),
        notices: Vec::new(),
    };
    let files = store.list(&keys.dir).unwrap_or_else(|e| {
        r.problems.push(RecordingProblem::StoreUnreadable {
            detail: e.to_string(),
        });
        Vec::new()
    });
    let bytes = match store.get(&keys.manifest) {
        Ok(Some(b)) => b,
        Ok(None) => {
            r.problems.push(RecordingProblem::ManifestMissing);
            return r;
        }
        Err(e) => {
            r.problems.push(RecordingProblem::ManifestUnreadable {
                detail: e.to_string(),
            });
            return r;
        }
    };
    let decoded = match decode_signed(&bytes) {
        Ok(d) => d,
        Err(detail) => {
            r.problems
                .push(RecordingProblem::ManifestUnreadable { detail });
            return r;
        }
    };
    let key_id = decoded.signature.key_id;
    match check_signature(keyring, &decoded.raw, &decoded.signature) {
        SignatureCheck::Valid => {}
        SignatureCheck::UnknownKey => r
            .problems
            .push(RecordingProblem::UnknownSigningKey { key_id }),
        SignatureCheck::Invalid => r
            .problems
            .push(RecordingProblem::SignatureInvalid { key_id }),
    }
    let manifest = match decoded.manifest {
        Ok(m) => m,
        Err(detail) => {
            r.problems
                .push(RecordingProblem::ManifestUnreadable { detail });
            return r;
        }
    };
    if manifest.to_canonical_json() != decoded.raw {
        r.problems.push(RecordingProblem::ManifestNotCanonical);
    }
    if manifest.recording_id != recording_id {
        r.problems
            .push(RecordingProblem::ManifestForOtherRecording {
                found: manifest.recording_id,
            });
    }
    r.status = Some(manifest.status);
    r.segments_listed = manifest.segments.len();
    check_consistency(&manifest, &keys, &mut r.problems);
    check_segments(store, &manifest, &mut r);

    for file in files {
        let listed = file == keys.manifest || manifest.segments.iter().any(|s| s.file == file);
        if listed {
            continue;
        }
        let part = [Container::WebM, Container::Matroska]
            .iter()
            .any(|c| file.as_str().ends_with(&format!(".{}.part", c.extension())));
        if part && manifest.status != RecordingStatus::Complete {
            r.notices.push(RecordingNotice::UnfinishedSegment { file });
        } else {
            r.problems.push(RecordingProblem::UnexpectedFile { file });
        }
    }
    r
}

fn check_consistency(m: &Manifest, keys: &RecordingKeys, problems: &mut Vec<RecordingProblem>) {
    let mut bad = |detail: String| problems.push(RecordingProblem::ManifestInconsistent { detail });
    if m.format != MANIFEST_FORMAT {
        bad(format!("unsupported format {}", m.format));
    }
    match (m.status, m.ended_at) {
        (RecordingStatus::Recording, Some(_)) => bad("status recording with an end time".into()),
        (RecordingStatus::Complete | RecordingStatus::Interrupted, None) => {
            bad("finished without an end time".into())
        }
        _ => {}
    }
    let mut last: HashMap<ParticipantId, (u32, u64)> = HashMap::new();
    for s in &m.segments {
        if !m.participants.iter().any(|p| p.id == s.participant) {
            bad(format!(
                "segment {} of unknown participant {}",
                s.file, s.participant
            ));
        }
        if s.file != keys.segment(s.participant, s.index, Container::for_codecs(&s.codecs)) {
            bad(format!(
                "segment {} has a name that does not match participant {} index {}",
                s.file, s.participant, s.index
            ));
        }
        if s.media_end_ms < s.media_start_ms || s.wall_end < s.wall_start {
            bad(format!("segment {} ends before it starts", s.file));
        }
        if let Some((index, start)) = last.get(&s.participant) {
            if s.index <= *index {
                bad(format!(
                    "segment {} is listed after index {index} of the same participant",
                    s.file
                ));
            }
            if s.media_start_ms < *start {
                bad(format!(
                    "segment {} starts before the previous segment of the same participant",
                    s.file
                ));
            }
        }
        last.insert(s.participant, (s.index, s.media_start_ms));
    }
}

fn check_segments(store: &dyn Store, m: &Manifest, r: &mut RecordingReport) {
    let mut first_with_hash: HashMap<Sha256Digest, usize> = HashMap::new();
    for (i, s) in m.segments.iter().enumerate() {
        first_with_hash.entry(s.sha256).or_insert(i);
    }
    // (index, actual hash, actual size) of files whose content differs
    let mut differing: Vec<(usize, Sha256Digest, u64)> = Vec::new();
    for (i, s) in m.segments.iter().enumerate() {
        match store.get(&s.file) {
            Ok(None) => r.problems.push(RecordingProblem::SegmentMissing {
                participant: s.participant,
                index: s.index,
                file: s.file.clone(),
            }),
            Err(e) => r.problems.push(RecordingProblem::SegmentUnreadable {
                file: s.file.clone(),
                detail: e.to_string(),
            }),
            Ok(Some(bytes)) => {
                let hash = Sha256Digest::of(&bytes);
                let size = bytes.len() as u64;
                if hash == s.sha256 && size == s.size {
                    r.segments_ok += 1;
                } else {
                    differing.push((i, hash, size));
                }
            }
        }
    }
    let holds: HashMap<usize, usize> = differing
        .iter()
        .filter_map(|(i, h, _)| {
            first_with_hash
                .get(h)
                .filter(|j| **j != *i)
                .map(|j| (*i, *j))
        })
        .collect();
    let mut reported = vec![false; m.segments.len()];
    for (i, hash, size) in differing {
        if reported[i] {
            continue;
        }
        reported[i] = true;
        let s = &m.segments[i];
        match holds.get(&i) {
            Some(&j) if holds.get(&j) == Some(&i) => {
                reported[j] = true;
                r.problems.push(RecordingProblem::SegmentsSwapped {
                    first: s.file.clone(),
                    second: m.segments[j].file.clone(),
                });
            }
            Some(&j) => r.problems.push(RecordingProblem::SegmentMisplaced {
                file: s.file.clone(),
                holds_content_of: m.segments[j].file.clone(),
            }),
            None => r.problems.push(RecordingProblem::SegmentHashMismatch {
                participant: s.participant,
                index: s.index,
                file: s.file.clone(),
                expected_sha256: s.sha256,
                actual_sha256: hash,
                expected_size: s.size,
                actual_size: size,
            }),
        }
    }
}

/// Something wrong with the chain or what it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainProblem {
    /// The chain file could not be read from the store.
    ChainUnreadable {
        /// The store's error.
        detail: String,
    },
    /// A line is not a readable entry.
    EntryUnreadable {
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        detail: String,
    },
    /// An entry is not at the position its sequence number says (an entry
    /// before it was removed, or entries were reordered).
    SequenceMismatch {
        /// 1-based line number.
        line: usize,
        /// The sequence number this position should have.
        expected: u64,
        /// The one the entry has.
        found: u64,
    },
    /// An entry does not link to the hash of the entry before it.
    LinkBroken {
        /// The entry's sequence number.
        seq: u64,
        /// 1-based line number.
        line: usize,
        /// Hash of the previous entry.
        expected_prev: Sha256Digest,
        /// What the entry names.
        found_prev: Sha256Digest,
    },
    /// An entry's signature does not verify (the entry was altered or forged).
    EntrySignatureInvalid {
        /// The entry's sequence number.
        seq: u64,
        /// The key it claims.
        key_id: KeyId,
    },
    /// An entry is signed by a key not in the keyring.
    UnknownSigningKey {
        /// The entry's sequence number.
        seq: u64,
        /// The key it claims.
        key_id: KeyId,
    },
    /// The chain is shorter than the head recorded elsewhere (entries cut off).
    Truncated {
        /// The head recorded elsewhere.
        expected: ChainHead,
        /// The chain's last entry.
        found: Option<ChainHead>,
    },
    /// The entry at the recorded head position has another hash (rewritten).
    HeadMismatch {
        /// The head recorded elsewhere.
        expected: ChainHead,
        /// Hash of the entry at that position.
        found: Sha256Digest,
    },
    /// A sealed, never deleted recording has no manifest.
    RecordingMissing {
        /// The sealing entry.
        seq: u64,
        /// The recording.
        recording_id: RecordingId,
    },
    /// The manifest file is not the one that was sealed (altered, rolled back
    /// or substituted).
    ManifestHashMismatch {
        /// The sealing entry.
        seq: u64,
        /// The recording.
        recording_id: RecordingId,
        /// Hash in the chain.
        expected: Sha256Digest,
        /// Hash of the manifest file now.
        actual: Sha256Digest,
    },
    /// A recording is sealed twice.
    DuplicateSeal {
        /// The second sealing entry.
        seq: u64,
        /// The recording.
        recording_id: RecordingId,
        /// The first sealing entry.
        first_seq: u64,
    },
    /// A deletion of a recording the chain never sealed.
    TombstoneWithoutSeal {
        /// The tombstone entry.
        seq: u64,
        /// The recording.
        recording_id: RecordingId,
    },
    /// A finished recording in the store that the chain does not know
    /// (injected, or its entry was cut off).
    RecordingNotInChain {
        /// The recording.
        recording_id: RecordingId,
        /// Its manifest status, if readable.
        status: Option<RecordingStatus>,
    },
}

/// Something worth knowing about the chain that is not tampering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainNotice {
    /// A recording still in progress, or waiting for recovery and sealing.
    Unsealed {
        /// The recording.
        recording_id: RecordingId,
    },
    /// A deleted recording whose files are still (partly) present.
    TombstonedFilesRemain {
        /// The tombstone entry.
        seq: u64,
        /// The recording.
        recording_id: RecordingId,
    },
}

/// The verdict on the whole chain and every recording in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Lines in the chain file.
    pub entries: usize,
    /// The last readable entry.
    pub head: Option<ChainHead>,
    /// What is wrong with the chain (empty: nothing).
    pub problems: Vec<ChainProblem>,
    /// What is worth knowing.
    pub notices: Vec<ChainNotice>,
    /// One report per recording present in the store or sealed in the chain.
    pub recordings: Vec<RecordingReport>,
}

impl ChainReport {
    /// No problems in the chain nor in any recording.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.recordings.iter().all(RecordingReport::is_ok)
    }
}

/// Verifies the chain link by link, every sealed recording against its sealed
/// manifest hash, every recording's files, and looks for recordings the chain
/// does not know. `expected_head` (kept outside the chain, e.g. in the
/// database) detects entries cut off the end.
pub fn verify_chain(
    store: &dyn Store,
    keyring: &Keyring,
    expected_head: Option<ChainHead>,
) -> ChainReport {
    let mut report = ChainReport {
        entries: 0,
        head: None,
        problems: Vec::new(),
        notices: Vec::new(),
        recordings: Vec::new(),
    };
    let key = ObjectKey::trusted(CHAIN_KEY.to_owned());
    let bytes = store.get(&key).unwrap_or_else(|e| {
        report.problems.push(ChainProblem::ChainUnreadable {
            detail: e.to_string(),
        });
        None
    });
    let lines = parse_lines(&bytes.unwrap_or_default());
    report.entries = lines.len();

    let mut prev: Option<Sha256Digest> = Some(Sha256Digest::ZERO);
    let mut by_seq: BTreeMap<u64, Sha256Digest> = BTreeMap::new();
    let mut sealed: BTreeMap<RecordingId, (u64, Sha256Digest)> = BTreeMap::new();
    let mut tombstoned: BTreeMap<RecordingId, u64> = BTreeMap::new();
    for (position, (line, parsed)) in (0u64..).zip(lines) {
        let signed = match parsed {
            Ok(s) => s,
            Err(detail) => {
                report
                    .problems
                    .push(ChainProblem::EntryUnreadable { line, detail });
                prev = None;
                continue;
            }
        };
        let e = &signed.entry;
        let hash = e.hash();
        if e.seq != position {
            report.problems.push(ChainProblem::SequenceMismatch {
                line,
                expected: position,
                found: e.seq,
            });
        }
        if let Some(p) = prev {
            if e.prev != p {
                report.problems.push(ChainProblem::LinkBroken {
                    seq: e.seq,
                    line,
                    expected_prev: p,
                    found_prev: e.prev,
                });
            }
        }
        match keyring.check(signed.key_id, CHAIN_DOMAIN, &hash.0, &signed.signature) {
            SignatureCheck::Valid => {}
            SignatureCheck::UnknownKey => report.problems.push(ChainProblem::UnknownSigningKey {
                seq: e.seq,
                key_id: signed.key_id,
            }),
            SignatureCheck::Invalid => report.problems.push(ChainProblem::EntrySignatureInvalid {
                seq: e.seq,
                key_id: signed.key_id,
            }),
        }
        match &e.event {
            ChainEvent::Sealed {
                manifest_sha256, ..
            } => {
                if let Some((first_seq, _)) = sealed.get(&e.recording_id) {
                    report.problems.push(ChainProblem::DuplicateSeal {
                        seq: e.seq,
                        recording_id: e.recording_id,
                        first_seq: *first_seq,
                    });
                } else {
                    sealed.insert(e.recording_id, (e.seq, *manifest_sha256));
                }
            }
            ChainEvent::Tombstone { .. } => {
                if !sealed.contains_key(&e.recording_id) {
                    report.problems.push(ChainProblem::TombstoneWithoutSeal {
                        seq: e.seq,
                        recording_id: e.recording_id,
                    });
                }
                tombstoned.insert(e.recording_id, e.seq);
            }
        }
        prev = Some(hash);
        by_seq.insert(e.seq, hash);
        report.head = Some(ChainHead { seq: e.seq, hash });
    }

    if let Some(expected) = expected_head {
        match by_seq.get(&expected.seq) {
            None => report.problems.push(ChainProblem::Truncated {
                expected,
                found: report.head,
            }),
            Some(h) if *h != expected.hash => report.problems.push(ChainProblem::HeadMismatch {
                expected,
                found: *h,
            }),
            Some(_) => {}
        }
    }

    let mut seal_order: Vec<(&RecordingId, &(u64, Sha256Digest))> = sealed.iter().collect();
    seal_order.sort_by_key(|(_, (seq, _))| *seq);
    for (&recording_id, &(seq, expected)) in seal_order {
        let keys = RecordingKeys::new(recording_id);
        let manifest = store.get(&keys.manifest);
        if let Some(&tomb_seq) = tombstoned.get(&recording_id) {
            if matches!(store.list(&keys.dir), Ok(files) if !files.is_empty()) {
                report.notices.push(ChainNotice::TombstonedFilesRemain {
                    seq: tomb_seq,
                    recording_id,
                });
            }
            continue;
        }
        match manifest {
            Ok(Some(bytes)) => {
                let actual = Sha256Digest::of(&bytes);
                if actual != expected {
                    report.problems.push(ChainProblem::ManifestHashMismatch {
                        seq,
                        recording_id,
                        expected,
                        actual,
                    });
                }
            }
            Ok(None) => report
                .problems
                .push(ChainProblem::RecordingMissing { seq, recording_id }),
            Err(e) => report.problems.push(ChainProblem::ChainUnreadable {
                detail: e.to_string(),
            }),
        }
        report
            .recordings
            .push(verify_recording(store, keyring, recording_id));
    }

    match list_recordings(store) {
        Ok(ids) => {
            for recording_id in ids {
                if sealed.contains_key(&recording_id) || tombstoned.contains_key(&recording_id) {
                    continue;
                }
                let r = verify_recording(store, keyring, recording_id);
                match r.status {
                    Some(RecordingStatus::Recording) => {
                        report.notices.push(ChainNotice::Unsealed { recording_id })
                    }
                    status => report.problems.push(ChainProblem::RecordingNotInChain {
                        recording_id,
                        status,
                    }),
                }
                report.recordings.push(r);
            }
        }
        Err(e) => report.problems.push(ChainProblem::ChainUnreadable {
            detail: e.to_string(),
        }),
    }
    report
}

impl fmt::Display for RecordingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StoreUnreadable { detail } => write!(f, "cannot list files: {detail}"),
            Self::ManifestMissing => write!(f, "manifest.json is missing"),
            Self::ManifestUnreadable { detail } => write!(f, "manifest.json is unreadable: {detail}"),
            Self::SignatureInvalid { key_id } => write!(f, "manifest signature (key {key_id}) does not verify"),
            Self::UnknownSigningKey { key_id } => write!(f, "manifest signed by unknown key {key_id}"),
            Self::ManifestNotCanonical => write!(f, "manifest is not in canonical form"),
            Self::ManifestForOtherRecording { found } => write!(f, "manifest belongs to recording {found}"),
            Self::ManifestInconsistent { detail } => write!(f, "manifest inconsistent: {detail}"),
            Self::SegmentMissing { file, .. } => write!(f, "segment {file} is missing"),
            Self::SegmentHashMismatch { file, expected_sha256, actual_sha256, expected_size, actual_size, .. } => write!(
                f,
                "segment {file} was altered: sha256 {actual_sha256} ({actual_size} bytes), manifest says {expected_sha256} ({expected_size} bytes)"
            ),
            Self::SegmentsSwapped { first, second } => write!(f, "segments {first} and {second} are swapped"),
            Self::SegmentMisplaced { file, holds_content_of } => write!(f, "segment {file} holds the content of {holds_content_of}"),
            Self::SegmentUnreadable { file, detail } => write!(f, "segment {file} is unreadable: {detail}"),
            Self::UnexpectedFile { file } => write!(f, "unexpected file {file} (not in the manifest)"),
        }
    }
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChainUnreadable { detail } => write!(f, "store unreadable: {detail}"),
            Self::EntryUnreadable { line, detail } => {
                write!(f, "chain line {line} is unreadable: {detail}")
            }
            Self::SequenceMismatch {
                line,
                expected,
                found,
            } => {
                write!(f, "chain line {line} has seq {found}, expected {expected} (entries removed or reordered)")
            }
            Self::LinkBroken { seq, line, .. } => {
                write!(f, "chain link broken at entry {seq} (line {line})")
            }
            Self::EntrySignatureInvalid { seq, key_id } => write!(
                f,
                "chain entry {seq}: signature (key {key_id}) does not verify"
            ),
            Self::UnknownSigningKey { seq, key_id } => {
                write!(f, "chain entry {seq}: signed by unknown key {key_id}")
            }
            Self::Truncated { expected, found } => write!(
                f,
                "chain truncated: expected an entry {} but the chain ends at {}",
                expected.seq,
                found.map_or("nothing".to_owned(), |h| h.seq.to_string())
            ),
            Self::HeadMismatch { expected, found } => {
                write!(
                    f,
                    "chain entry {} has hash {found}, expected {} (rewritten)",
                    expected.seq, expected.hash
                )
            }
            Self::RecordingMissing { seq, recording_id } => {
                write!(f, "recording {recording_id} sealed at entry {seq} is missing (deleted without tombstone)")
            }
            Self::ManifestHashMismatch {
                seq, recording_id, ..
            } => {
                write!(f, "manifest of recording {recording_id} differs from the one sealed at entry {seq}")
            }
            Self::DuplicateSeal {
                seq,
                recording_id,
                first_seq,
            } => {
                write!(
                    f,
                    "recording {recording_id} sealed again at entry {seq} (first at {first_seq})"
                )
            }
            Self::TombstoneWithoutSeal { seq, recording_id } => {
                write!(
                    f,
                    "entry {seq} deletes recording {recording_id}, which was never sealed"
                )
            }
            Self::RecordingNotInChain { recording_id, .. } => write!(
                f,
                "recording {recording_id} is finished but not in the chain"
            ),
        }
    }
}

impl fmt::Display for RecordingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        writeln!(
            f,
            "recording {}: {verdict} ({}/{} segments verified)",
            self.recording_id, self.segments_ok, self.segments_listed
        )?;
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        for n in &self.notices {
            match n {
                RecordingNotice::UnfinishedSegment { file } => {
                    writeln!(f, "  notice: unfinished segment {file} (not covered)")?
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for ChainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        writeln!(f, "chain: {verdict} ({} entries)", self.entries)?;
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        for n in &self.notices {
            match n {
                ChainNotice::Unsealed { recording_id } => {
                    writeln!(f, "  notice: recording {recording_id} is not sealed yet")?
                }
                ChainNotice::TombstonedFilesRemain { seq, recording_id } => writeln!(
                    f,
                    "  notice: recording {recording_id} deleted at entry {seq} still has files"
                )?,
            }
        }
        for r in &self.recordings {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}
