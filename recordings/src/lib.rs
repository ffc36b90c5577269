//! Audit recordings: every call written to WebM segment files (Matroska when
//! the video is H.264) from its RTP packets, every segment hashed, every recording's manifest signed, and every
//! finished recording linked into an append-only hash chain, with a
//! [`verify_recording`]/[`verify_chain`] that says exactly what is wrong.
//!
//! The server's media relay feeds a [`Recording`] the RTP packets it receives,
//! exactly as received; nothing is transcoded. The crate does no networking and
//! reads no clock: every call takes `now`, so tests are deterministic.
//!
//! # Example
//!
//! ```
//! use recordings::*;
//! use time::macros::datetime;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let root = std::env::temp_dir().join(format!("rec-doc-{}", uuid::Uuid::new_v4()));
//! let signer = Signer::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
//! let t0 = datetime!(2024-05-01 09:00 UTC);
//! let call = CallId::from_uuid(uuid::Uuid::new_v4());
//! let resident = ParticipantId::from_uuid(uuid::Uuid::new_v4());
//!
//! let mut rec = Recording::start(RecordingConfig::new(&root), RecordingId::new_v7(), call, t0, signer.clone())?;
//! rec.add_participant(resident, ParticipantRole::Resident, &[TrackSpec::new(Codec::Opus)], t0)?;
//! for i in 0..100u16 {
//!     let mut rtp = vec![0x80, 111];
//!     rtp.extend_from_slice(&i.to_be_bytes());
//!     rtp.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
//!     rtp.extend_from_slice(&0x1234u32.to_be_bytes());
//!     rtp.extend_from_slice(&[0xF8, 0xFF, 0xFE]); // an Opus packet (20 ms)
//!     let now = t0 + time::Duration::milliseconds(20 * i64::from(i));
//!     rec.push_rtp(resident, TrackKind::Audio, &rtp, now)?;
//!     while let Some(event) = rec.poll_event() {
//!         // RecordingEvent::KeyframeWanted => send a PLI; SegmentFinished => upload it
//!         let _ = event;
//!     }
//! }
//! let finished = rec.finish(t0 + time::Duration::seconds(2))?;
//!
//! let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(FsStore::new(&root));
//! let mut chain = Chain::open(store.clone(), signer.clone())?;
//! chain.seal(&finished, t0 + time::Duration::seconds(2))?;
//!
//! let keyring = Keyring::new([signer.verifying_key()]);
//! let report = verify_chain(store.as_ref(), &keyring, chain.head());
//! assert!(report.is_ok(), "{report}");
//! # std::fs::remove_dir_all(&root)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! Source modules, in the order a packet meets them:
//!
//! | module | does |
//! |---|---|
//! | [`rtp`] | parses the RTP header: version, marker, payload type, seq, timestamp, SSRC, CSRCs, header extensions, padding |
//! | `seq` | unwraps seq (16 bit) and timestamp (32 bit) to 64 bits; the bounded reorder buffer ([`ReorderConfig`]) |
//! | `depacketize` | VP8 (RFC 7741), VP9 (RFC 9628) payload descriptors, H.264 (RFC 6184: single NAL, STAP-A, FU-A; SPS parsing, avcC), Opus; keyframe and size from the bitstream |
//! | `assemble` | joins packets into frames by timestamp and marker, drops incomplete frames, builds VP9 superframes and length-prefixed H.264 access units |
//! | `participant` | per participant: tracks, RTP→media clock, keyframe gating, interleaving, segment roll-over |
//! | [`webm`] | writes one WebM file incrementally with `webm-iterable`, then finalizes it (size, Duration, SeekHead, Cues) |
//! | [`recording`] | one call: participants, the signed manifest rewritten after every segment, crash recovery |
//! | [`manifest`] | the manifest types and their canonical, signed encoding |
//! | [`chain`] | the append-only, signed hash chain of sealed recordings and tombstones |
//! | [`verify`] | checks a recording or the whole chain and reports every problem |
//! | [`export`] | joins one participant's verified segments into a single seekable WebM |
//! | [`store`] | the [`Store`] trait and the local-directory [`FsStore`] |
//! | [`keys`] | Ed25519 [`Signer`] and [`Keyring`] |
//!
//! Files, under the store root:
//!
//! ```text
//! chain.jsonl                                   one signed entry per line
//! recordings/<recording>/manifest.json          {"manifest":{..},"signature":{..}}
//! recordings/<recording>/<participant>/000001.webm
//! recordings/<recording>/<participant>/000002.webm
//! recordings/<recording>/<participant>/000003.webm.part   being written
//! recordings/<recording>/<participant>/000001.mkv    H.264 video: Matroska
//! ```
//!
//! Each `.webm` is a self-contained WebM file (EBML header, Segment, Info,
//! Tracks, Clusters, Cues) holding the participant's video (track 1) and audio
//! (track 2) for about [`MediaConfig::segment_duration`]; video segments start
//! at a keyframe. A segment is written as `.part`; once finalized it is hashed,
//! listed in the re-signed manifest, and renamed. A crash loses at most the
//! segment being written, and even that one stays playable up to its last
//! complete cluster. `docs/recordings.md` describes the formats in full.
#![deny(missing_docs)]

mod assemble;
pub mod chain;
pub mod codec;
mod depacketize;
pub mod digest;
mod error;
pub mod export;
pub mod ids;
pub mod keys;
pub mod manifest;
mod participant;
pub mod recording;
pub mod rtp;
mod seq;
pub mod store;
pub mod verify;
pub mod webm;

pub use chain::{
    Chain, ChainEntry, ChainError, ChainEvent, ChainHead, DeletionReason, SignedChainEntry,
};
pub use codec::{Codec, Container, TrackKind};
pub use digest::Sha256Digest;
pub use error::RecordError;
pub use export::{export_participant, ExportError, ExportSummary};
pub use ids::{CallId, ParticipantId, ParticipantRole, RecordingId};
pub use keys::{KeyId, Keyring, Signer};
pub use manifest::{
    Manifest, ParticipantEntry, RecordingStatus, SegmentEntry, TrackEntry, TrackStats,
};
pub use participant::{MediaConfig, TrackSpec};
pub use recording::{
    recover_interrupted, FinishedRecording, Recording, RecordingConfig, RecordingEvent,
};
pub use rtp::{RtpError, RtpPacket};
pub use seq::ReorderConfig;
pub use store::{FsStore, ObjectKey, Store, StoreError};
pub use verify::{
    verify_chain, verify_recording, ChainProblem, ChainReport, RecordingProblem, RecordingReport,
};
