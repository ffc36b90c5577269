//! Joining a participant's segments into one WebM file (Matroska when the
//! video is H.264) for playback or download. Every segment is checked against the signed manifest first; the
//! export is derived data and is not itself part of the integrity chain.

use std::io::{Cursor, Seek, Write};

use thiserror::Error;
use webm_iterable::matroska_spec::{MatroskaSpec, SimpleBlock};
use webm_iterable::WebmIterator;

use crate::codec::{Codec, Container, TrackKind};
use crate::digest::Sha256Digest;
use crate::ids::{ParticipantId, RecordingId};
use crate::keys::{Keyring, SignatureCheck};
use crate::manifest::{check_signature, decode_signed, RecordingKeys};
use crate::store::{ObjectKey, Store, StoreError};
use crate::webm::{SegmentMeta, SegmentWriter, WebmError, WebmTrack, AUDIO_TRACK, VIDEO_TRACK};

/// Why an export was refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifest is missing, unreadable or not validly signed.
    #[error("manifest of recording {0} does not verify; run verify")]
    ManifestInvalid(RecordingId),
    /// The participant has no segments.
    #[error("participant {0} has no segments in this recording")]
    NoSegments(ParticipantId),
    /// A segment is missing or differs from the manifest.
    #[error("segment {0} does not match the manifest; run verify")]
    SegmentInvalid(ObjectKey),
    /// A segment could not be parsed.
    #[error("segment {file} is not readable WebM/Matroska: {detail}")]
    SegmentUnreadable {
        /// The segment.
        file: ObjectKey,
        /// The parser's error.
        detail: String,
    },
    /// The participant's codecs changed between segments; one file cannot
    /// hold both. Export up to the change, or play the segments.
    #[error("codecs change at segment {0}")]
    TracksChanged(ObjectKey),
    /// Writing the output failed.
    #[error(transparent)]
    Webm(#[from] WebmError),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Segments joined.
    pub segments: usize,
    /// Frames written.
    pub frames: u64,
    /// Duration written into the file, in ms.
    pub duration_ms: u64,
    /// Bytes written.
    pub bytes: u64,
    /// WebM, or Matroska for H.264: the file name extension and media type to
    /// serve the export with.
    pub container: Container,
}

/// Writes all segments of `participant` in recording `recording_id`, in order,
/// as one WebM file to `out` (Matroska if the video is H.264:
/// [`ExportSummary::container`] says which) (timestamps from the recording's media time, with
/// the first segment at 0). Refuses if the manifest signature or any segment
/// hash does not verify.
///
/// # Errors
/// [`ExportError`].
pub fn export_participant<W: Write + Seek>(
    store: &dyn Store,
    keyring: &Keyring,
    recording_id: RecordingId,
    participant: ParticipantId,
    out: W,
) -> Result<(W, ExportSummary), ExportError> {
    let keys = RecordingKeys::new(recording_id);
    let invalid = || ExportError::ManifestInvalid(recording_id);
    let bytes = store.get(&keys.manifest)?.ok_or_else(invalid)?;
    let decoded = decode_signed(&bytes).map_err(|_| invalid())?;
    if check_signature(keyring, &decoded.raw, &decoded.signature) != SignatureCheck::Valid {
        return Err(invalid());
    }
    let manifest = decoded.manifest.map_err(|_| invalid())?;
    if manifest.recording_id != recording_id {
        return Err(invalid());
    }
    let segments: Vec<_> = manifest.segments_of(participant).collect();
    let first = segments
        .first()
        .ok_or(ExportError::NoSegments(participant))?;
    let codecs = first.codecs.clone();
    let origin = first.media_start_ms;

    let mut tracks: Vec<WebmTrack> = codecs.iter().map(|c| WebmTrack::new(*c)).collect();
    let mut uid = [0u8; 16];
    uid.copy_from_slice(
        &Sha256Digest::of(format!("export {recording_id} {participant}").as_bytes()).0[..16],
    );
    let epoch_2001 = time::macros::datetime!(2001-01-01 0:00 UTC);
    let meta = SegmentMeta {
        segment_uid: uid,
        date_utc_ns: i64::try_from((first.wall_start - epoch_2001).whole_nanoseconds())
            .unwrap_or(0),
        title: format!(
            "recording {recording_id} participant {participant} (export of {} segments)",
            segments.len()
        ),
    };
    let mut frames = 0u64;
    let mut end_ms = 0u64;
    let mut writer: Option<SegmentWriter<W>> = None;
    let mut out = Some(out);
    for seg in &segments {
        if seg.codecs != codecs {
            return Err(ExportError::TracksChanged(seg.file.clone()));
        }
        let data = store
            .get(&seg.file)?
            .ok_or_else(|| ExportError::SegmentInvalid(seg.file.clone()))?;
        if Sha256Digest::of(&data) != seg.sha256 || data.len() as u64 != seg.size {
            return Err(ExportError::SegmentInvalid(seg.file.clone()));
        }
        let blocks = read_blocks(&data).map_err(|detail| ExportError::SegmentUnreadable {
            file: seg.file.clone(),
            detail,
        })?;
        if writer.is_none() {
            if let Some((w, h)) = blocks.dimensions {
                for t in &mut tracks {
                    if t.codec.kind() == crate::codec::TrackKind::Video {
                        t.dimensions = Some((w, h));
                    }
                }
            }
            let Some(o) = out.take() else {
                return Err(ExportError::Webm(WebmError::Layout("output taken twice")));
            };
            writer = Some(SegmentWriter::new(o, tracks.clone(), meta.clone(), 2000));
        }
        let Some(w) = writer.as_mut() else {
            return Err(ExportError::Webm(WebmError::Layout("no writer")));
        };
        if let Some(c) = &blocks.codec_private {
            w.set_codec_private(c)?;
        }
        let offset = seg.media_start_ms.saturating_sub(origin);
        for b in blocks.blocks {
            let track = if b.track == blocks.video_track {
                VIDEO_TRACK
            } else {
                AUDIO_TRACK
            };
            w.write_frame(track, offset + b.ms, b.keyframe, &b.data)?;
            frames += 1;
        }
        end_ms = end_ms.max(seg.media_end_ms.saturating_sub(origin));
    }
    let Some(w) = writer else {
        return Err(ExportError::NoSegments(participant));
    };
    let (out, finished) = w.finish(end_ms)?;
    let bytes = finished.map_or(0, |f| f.bytes);
    Ok((
        out,
        ExportSummary {
            segments: segments.len(),
            frames,
            duration_ms: end_ms,
            bytes,
            container: Container::for_codecs(&codecs),
        },
    ))
}

struct Block {
    track: u64,
    ms: u64,
    keyframe: bool,
    data: Vec<u8>,
}

struct Blocks {
    video_track: u64,
    dimensions: Option<(u16, u16)>,
    codec_private: Option<Vec<u8>>,
    blocks: Vec<Block>,
}

fn read_blocks(bytes: &[u8]) -> Result<Blocks, String> {
    let mut src = Cursor::new(bytes);
    let mut out = Blocks {
        video_track: 0,
        dimensions: None,
        codec_private: None,
        blocks: Vec::new(),
    };
    let mut in_video = false;
    let mut number = 0u64;
    let (mut width, mut height) = (None, None);
    let mut cluster_ts = 0u64;
    for tag in WebmIterator::new(&mut src, &[]) {
        let tag = tag.map_err(|e| e.to_string())?;
        match &tag {
            MatroskaSpec::TrackEntry(_) => in_video = false,
            MatroskaSpec::TrackNumber(n) => number = *n,
            MatroskaSpec::CodecID(c)
                if Codec::from_matroska_id(c).is_some_and(|c| c.kind() == TrackKind::Video) =>
            {
                out.video_track = number;
                in_video = true;
            }
            MatroskaSpec::CodecPrivate(data) if in_video => {
                out.codec_private = Some(data.clone());
            }
            MatroskaSpec::PixelWidth(w) => width = u16::try_from(*w).ok(),
            MatroskaSpec::PixelHeight(h) => height = u16::try_from(*h).ok(),
            MatroskaSpec::Timestamp(t) => cluster_ts = *t,
            MatroskaSpec::SimpleBlock(_) => {
                let b = SimpleBlock::try_from(&tag).map_err(|e| e.to_string())?;
                let ms = cluster_ts.saturating_add_signed(i64::from(b.timestamp));
                out.blocks.push(Block {
                    track: b.track,
                    ms,
                    keyframe: b.keyframe,
                    data: b.raw_frame_data().to_vec(),
                });
            }
            _ => {}
        }
    }
    if let (Some(w), Some(h)) = (width, height) {
        out.dimensions = Some((w, h));
    }
    Ok(out)
}
