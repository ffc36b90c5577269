//! The manifest: what a recording holds, signed.
//!
//! A manifest is serialized canonically: `serde_json` compact output of these
//! structs, whose fields are written in declaration order, with no maps and no
//! floats. `manifest.json` holds those exact bytes as its `manifest` value next
//! to a `signature` over them, so one atomic file replacement updates both.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::codec::{Codec, Container, TrackKind};
use crate::digest::Sha256Digest;
use crate::ids::{CallId, ParticipantId, ParticipantRole, RecordingId};
use crate::keys::{KeyId, Keyring, SignatureBytes, SignatureCheck, Signer, MANIFEST_DOMAIN};
use crate::store::ObjectKey;

/// The manifest format version written by this crate.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where a recording stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Still being written; the manifest is rewritten after every segment.
    Recording,
    /// Finished normally.
    Complete,
    /// The writer stopped without finishing (crash); sealed by recovery.
    Interrupted,
}

/// Counters for one track of one participant: what arrived and what was kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackStats {
    /// RTP packets accepted for this track.
    pub packets: u64,
    /// Payload bytes of those packets.
    pub bytes: u64,
    /// Packets that were not valid RTP or did not follow the payload format.
    pub malformed: u64,
    /// Packets with another payload type than the declared one (FEC, RTX...).
    pub foreign_payload_type: u64,
    /// Packets that arrived after their place in the sequence was given up.
    pub late: u64,
    /// Packets received twice.
    pub duplicate: u64,
    /// Sequence numbers never received.
    pub lost: u64,
    /// Frames written to segment files.
    pub frames_written: u64,
    /// Frames not written: incomplete, undecodable until the next keyframe, or
    /// out of time order.
    pub frames_dropped: u64,
    /// Times the sender's SSRC changed (reconnects) or its sequence restarted.
    pub stream_restarts: u64,
    /// Times the RTP clock was re-anchored to arrival time after a jump.
    pub clock_rebases: u64,
}

/// A track a participant published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackEntry {
    /// Video or audio.
    pub kind: TrackKind,
    /// Codec as declared by signaling.
    pub codec: Codec,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// What happened to its packets.
    pub stats: TrackStats,
}

/// One participant of the recorded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantEntry {
    /// Participant id.
    pub id: ParticipantId,
    /// Role in the call.
    pub role: ParticipantRole,
    /// When recording of this participant began.
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    /// Tracks declared for this participant, in the order declared.
    pub tracks: Vec<TrackEntry>,
}

/// One finished segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Whose media.
    pub participant: ParticipantId,
    /// 1-based position among this participant's segments.
    pub index: u32,
    /// Storage key, always `recordings/<recording>/<participant>/<index:06>.webm`
    /// (`.mkv` when a codec needs Matroska, see [`crate::codec::Container`]).
    pub file: ObjectKey,
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
    /// Codecs of the tracks in the file (video first).
    pub codecs: Vec<Codec>,
    /// Media time of the first frame, ms since the recording started.
    pub media_start_ms: u64,
    /// Media time of the end of the last frame, ms since the recording started.
    pub media_end_ms: u64,
    /// Arrival time of the first frame.
    #[serde(with = "time::serde::rfc3339")]
    pub wall_start: OffsetDateTime,
    /// Arrival time of the last frame.
    #[serde(with = "time::serde::rfc3339")]
    pub wall_end: OffsetDateTime,
}

/// Everything a recording holds. See the crate docs for the file layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// This recording.
    pub recording_id: RecordingId,
    /// The recorded call.
    pub call_id: CallId,
    /// Recording, complete or interrupted.
    pub status: RecordingStatus,
    /// When recording began (media time 0).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When recording ended (set when complete or interrupted).
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Participants, in the order they were first recorded.
    pub participants: Vec<ParticipantEntry>,
    /// Finished segments, in the order they were finished.
    pub segments: Vec<SegmentEntry>,
}

/// The signature part of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    /// Always `"ed25519"`.
    pub algorithm: String,
    /// Which key signed.
    pub key_id: KeyId,
    /// Signature over the domain prefix and the exact bytes of the `manifest` value.
    pub signature: SignatureBytes,
}

#[derive(Serialize)]
struct SignedManifestOut<'a> {
    manifest: &'a RawValue,
    signature: &'a ManifestSignature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedManifestIn {
    manifest: Box<RawValue>,
    signature: ManifestSignature,
}

/// A `manifest.json` file taken apart: the signed bytes, the signature, and
/// the manifest parsed from those bytes.
#[derive(Debug)]
pub(crate) struct DecodedManifest {
    pub(crate) raw: Vec<u8>,
    pub(crate) signature: ManifestSignature,
    pub(crate) manifest: Result<Manifest, String>,
}

/// Encodes a signed `manifest.json`: `{"manifest":<canonical>,"signature":{..}}`.
pub(crate) fn encode_signed(manifest: &Manifest, signer: &Signer) -> Vec<u8> {
    let canonical = manifest.to_canonical_json();
    let signature = ManifestSignature {
        algorithm: "ed25519".into(),
        key_id: signer.key_id(),
        signature: signer.sign(MANIFEST_DOMAIN, &canonical),
    };
    let raw = String::from_utf8(canonical)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok());
    match raw {
        Some(raw) => serde_json::to_vec(&SignedManifestOut {
            manifest: &raw,
            signature: &signature,
        })
        .unwrap_or_default(),
        None => Vec::new(), // unreachable: serde_json output is valid UTF-8 JSON
    }
}

/// Splits a `manifest.json` file. `Err` if the outer structure is unreadable.
pub(crate) fn decode_signed(bytes: &[u8]) -> Result<DecodedManifest, String> {
    let outer: SignedManifestIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let raw = outer.manifest.get().as_bytes().to_vec();
    let manifest = serde_json::from_slice::<Manifest>(&raw).map_err(|e| e.to_string());
    Ok(DecodedManifest {
        raw,
        signature: outer.signature,
        manifest,
    })
}

/// Storage keys of one recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingKeys {
    /// `recordings/<id>`
    pub dir: ObjectKey,
    /// `recordings/<id>/manifest.json`
    pub manifest: ObjectKey,
}

/// The directory holding every recording.
pub const RECORDINGS_DIR: &str = "recordings";

impl RecordingKeys {
    /// Keys of recording `id`.
    pub fn new(id: RecordingId) -> Self {
        // A UUID prints as [0-9a-f-], so these keys are always valid.
        let dir = format!("{RECORDINGS_DIR}/{id}");
        Self {
            manifest: ObjectKey::trusted(format!("{dir}/manifest.json")),
            dir: ObjectKey::trusted(dir),
        }
    }

    /// Key of a participant's segment `index`, a file of `container`.
    pub fn segment(
        &self,
        participant: ParticipantId,
        index: u32,
        container: Container,
    ) -> ObjectKey {
        ObjectKey::trusted(format!(
            "{}/{participant}/{index:06}.{}",
            self.dir,
            container.extension()
        ))
    }
}

impl Manifest {
    /// The manifest inside the bytes of a `manifest.json` file, unchecked (its signature is
    /// not verified: `verify_recording` does that).
    pub fn from_signed_file(bytes: &[u8]) -> Result<Manifest, String> {
        decode_signed(bytes)?.manifest
    }

    /// The canonical bytes: compact JSON in field declaration order.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Segments of one participant, in index order as listed.
    pub fn segments_of(&self, participant: ParticipantId) -> impl Iterator<Item = &SegmentEntry> {
        self.segments
            .iter()
            .filter(move |s| s.participant == participant)
    }
}

/// Checks `sig` over the exact `bytes`.
pub(crate) fn check_signature(
    keyring: &Keyring,
    bytes: &[u8],
    sig: &ManifestSignature,
) -> SignatureCheck {
    if sig.algorithm != "ed25519" {
        return SignatureCheck::Invalid;
    }
    keyring.check(sig.key_id, MANIFEST_DOMAIN, bytes, &sig.signature)
}

/// Milliseconds precision, UTC: the form every time in a manifest takes.
pub(crate) fn normalize_time(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let ms = t.millisecond();
    t.replace_millisecond(ms).unwrap_or(t)
}
