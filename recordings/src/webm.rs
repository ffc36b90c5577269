//! One WebM file (one recording segment), written incrementally; a Matroska
//! file (DocType "matroska", `.mkv`) when a track is H.264, which WebM cannot
//! hold. Everything else is the same for both.
//!
//! Layout of a segment file:
//!
//! ```text
//! EBML header                      DocType "webm" (or "matroska")
//! Segment (size: 8-byte field, "unknown" until finalized)
//!   Void (96 bytes)                reserved; becomes SeekHead (Info, Tracks, Cues) + Void
//!   Info                           TimestampScale 1 ms, DateUTC, SegmentUID, apps,
//!     Void (11 bytes)              reserved; becomes Duration (float) when finalized
//!   Tracks                         video = track 1, audio = track 2
//!                                  (H.264: CodecPrivate = avcC; if the header is written
//!                                  before the first keyframe, a Void reserved for it)
//!   Cluster, Cluster, ...          each written whole (known size) when it closes
//!   Cues                           written when finalized
//! ```
//!
//! Until the writer finishes, the file is a valid streaming WebM
//! (unknown-size Segment, no Duration, no Cues): a crash leaves every complete
//! cluster playable. `finish` appends Cues, then patches the reserved Voids and
//! the Segment size in place.

use std::io::{Seek, SeekFrom, Write};

use thiserror::Error;
use webm_iterable::matroska_spec::{Master, MatroskaSpec};
use webm_iterable::{WebmWriter, WriteOptions};

use crate::codec::{Codec, Container, TrackKind};

/// Matroska track number of the video track.
pub(crate) const VIDEO_TRACK: u64 = 1;
/// Matroska track number of the audio track.
pub(crate) const AUDIO_TRACK: u64 = 2;

const SEEKHEAD_RESERVE: usize = 96;
const DURATION_RESERVE: usize = 11;
/// The 8-byte "unknown" size of an EBML element.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
const DEFAULT_DIMENSIONS: (u16, u16) = (640, 480);
/// Bytes reserved in an H.264 track entry for its CodecPrivate (the avcC)
/// when the header has to be written before the first keyframe.
const CODEC_PRIVATE_RESERVE: usize = 512;
const ID_VOID: u8 = 0xEC;

const ID_INFO: [u8; 4] = [0x15, 0x49, 0xA9, 0x66];
const ID_TRACKS: [u8; 4] = [0x16, 0x54, 0xAE, 0x6B];
const ID_CUES: [u8; 4] = [0x1C, 0x53, 0xBB, 0x6B];

/// Failure while writing a WebM file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WebmError {
    /// The file could not be written.
    #[error("writing WebM: {0}")]
    Io(#[from] std::io::Error),
    /// The EBML encoder refused an element.
    #[error("encoding EBML: {0}")]
    Ebml(String),
    /// The layout assumptions of the writer were violated (a bug).
    #[error("WebM layout: {0}")]
    Layout(&'static str),
}

impl From<webm_iterable::errors::TagWriterError> for WebmError {
    fn from(e: webm_iterable::errors::TagWriterError) -> Self {
        Self::Ebml(e.to_string())
    }
}

/// A track as declared in the file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebmTrack {
    pub(crate) codec: Codec,
    /// Video only: pixel size (from the first keyframe, else a default).
    pub(crate) dimensions: Option<(u16, u16)>,
    /// H.264 only: the avcC (from the first keyframe).
    pub(crate) codec_private: Option<Vec<u8>>,
}

impl WebmTrack {
    /// A track of `codec`, size and CodecPrivate not yet known.
    pub(crate) fn new(codec: Codec) -> Self {
        Self {
            codec,
            dimensions: None,
            codec_private: None,
        }
    }

    /// Whether the header must carry a CodecPrivate this writer learns from
    /// the media (H.264's avcC).
    fn needs_codec_private(&self) -> bool {
        self.codec == Codec::H264
    }
}

impl WebmTrack {
    pub(crate) fn number(&self) -> u64 {
        match self.codec.kind() {
            TrackKind::Video => VIDEO_TRACK,
            TrackKind::Audio => AUDIO_TRACK,
        }
    }
}

/// Fixed facts about the segment written into its Info element.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub(crate) segment_uid: [u8; 16],
    /// Nanoseconds since 2001-01-01T00:00:00 UTC (Matroska `DateUTC`).
    pub(crate) date_utc_ns: i64,
    pub(crate) title: String,
}

#[derive(Debug)]
struct Layout {
    segment_size_pos: u64,
    data_start: u64,
    seekhead_pos: u64,
    info_pos: u64,
    duration_pos: u64,
    tracks_pos: u64,
    /// Where the Void reserved for the video track's CodecPrivate is, and its
    /// total size: `None` when nothing is reserved (or it was filled in).
    codec_private_reserve: Option<(u64, usize)>,
}

#[derive(Debug)]
struct ClusterBuf {
    timestamp: u64,
    blocks: Vec<MatroskaSpec>,
    cue: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Cue {
    time: u64,
    track: u64,
    cluster_pos: u64,
}

/// Summary of a finished file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    pub(crate) bytes: u64,
    pub(crate) blocks: u64,
    pub(crate) cues: usize,
}

/// Writes one WebM file. Timestamps given to it are milliseconds from the
/// start of this file.
pub(crate) struct SegmentWriter<W: Write + Seek> {
    container: Container,
    out: W,
    tags: WebmWriter<Vec<u8>>,
    pos: u64,
    layout: Option<Layout>,
    tracks: Vec<WebmTrack>,
    meta: SegmentMeta,
    cluster: Option<ClusterBuf>,
    cues: Vec<Cue>,
    max_cluster_ms: u64,
    blocks: u64,
    last_cluster_ts: Option<u64>,
    /// Blocks whose timestamp had to be raised to the cluster start.
    pub(crate) clamped: u64,
}

impl<W: Write + Seek> std::fmt::Debug for SegmentWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("pos", &self.pos)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> SegmentWriter<W> {
    pub(crate) fn new(
        out: W,
        tracks: Vec<WebmTrack>,
        meta: SegmentMeta,
        max_cluster_ms: u64,
    ) -> Self {
        let container = Container::for_codecs(&tracks.iter().map(|t| t.codec).collect::<Vec<_>>());
        Self {
            container,
            out,
            tags: WebmWriter::new(Vec::new()),
            pos: 0,
            layout: None,
            tracks,
            meta,
            cluster: None,
            cues: Vec::new(),
            max_cluster_ms: max_cluster_ms.clamp(1, 30_000),
            blocks: 0,
            last_cluster_ts: None,
            clamped: 0,
        }
    }

    fn has_video(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| t.codec.kind() == TrackKind::Video)
    }

    /// Records the size of a video track once known (before the header is written).
    pub(crate) fn set_dimensions(&mut self, dimensions: (u16, u16)) {
        if self.layout.is_none() {
            for t in &mut self.tracks {
                if t.codec.kind() == TrackKind::Video && t.dimensions.is_none() {
                    t.dimensions = Some(dimensions);
                }
            }
        }
    }

    /// Records the CodecPrivate of the video track (H.264: the avcC of the
    /// first keyframe). Before the header is written it goes into the header;
    /// after, it fills the Void reserved for it (once). Later calls, and data
    /// too large for the reserve, are ignored: the keyframes carry their
    /// parameter sets in-band as well.
    pub(crate) fn set_codec_private(&mut self, data: &[u8]) -> Result<(), WebmError> {
        let Some(layout) = self.layout.as_mut() else {
            for t in &mut self.tracks {
                if t.needs_codec_private() && t.codec_private.is_none() {
                    t.codec_private = Some(data.to_vec());
                }
            }
            return Ok(());
        };
        let Some((pos, total)) = layout.codec_private_reserve else {
            return Ok(());
        };
        let Some(bytes) = codec_private_in(data, total) else {
            return Ok(());
        };
        layout.codec_private_reserve = None;
        self.out.seek(SeekFrom::Start(pos))?;
        self.out.write_all(&bytes)?;
        self.out.seek(SeekFrom::Start(self.pos))?;
        self.out.flush()?;
        for t in &mut self.tracks {
            if t.needs_codec_private() {
                t.codec_private = Some(data.to_vec());
            }
        }
        Ok(())
    }

    /// Adds one frame. `ms` is relative to the start of the file.
    pub(crate) fn write_frame(
        &mut self,
        track: u64,
        ms: u64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), WebmError> {
        let is_video = track == VIDEO_TRACK;
        let new_cluster = match &self.cluster {
            None => true,
            Some(c) => {
                (is_video && keyframe && !c.blocks.is_empty())
                    || ms.saturating_sub(c.timestamp) >= self.max_cluster_ms
            }
        };
        if new_cluster {
            self.flush_cluster()?;
            let cue = if is_video && keyframe {
                Some(VIDEO_TRACK)
            } else if !self.has_video() {
                Some(track)
            } else {
                None
            };
            let ts = self.cluster_floor().map_or(ms, |floor| ms.max(floor));
            self.cluster = Some(ClusterBuf {
                timestamp: ts,
                blocks: Vec::new(),
                cue,
            });
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(WebmError::Layout("no open cluster"));
        };
        let relative = if ms < cluster.timestamp {
            self.clamped += 1;
            0
        } else {
            ms - cluster.timestamp
        };
        let relative = i16::try_from(relative)
            .map_err(|_| WebmError::Layout("block offset exceeds cluster range"))?;
        let mut block = Vec::with_capacity(data.len() + 4);
        block.push(0x80 | (track as u8 & 0x7F)); // track number as 1-byte vint
        block.extend_from_slice(&relative.to_be_bytes());
        block.push(if keyframe { 0x80 } else { 0x00 });
        block.extend_from_slice(data);
        cluster.blocks.push(MatroskaSpec::SimpleBlock(block));
        self.blocks += 1;
        Ok(())
    }

    /// Cluster timestamps never go backwards.
    fn cluster_floor(&self) -> Option<u64> {
        self.last_cluster_ts
    }

    fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(self.tags.get_mut())
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), WebmError> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), WebmError> {
        self.tags.write(&MatroskaSpec::Ebml(Master::Full(vec![
            MatroskaSpec::EbmlVersion(1),
            MatroskaSpec::EbmlReadVersion(1),
            MatroskaSpec::EbmlMaxIdLength(4),
            MatroskaSpec::EbmlMaxSizeLength(8),
            MatroskaSpec::DocType(self.container.doc_type().into()),
            MatroskaSpec::DocTypeVersion(4),
            MatroskaSpec::DocTypeReadVersion(2),
        ])))?;
        let ebml = self.take_bytes();
        self.emit(&ebml)?;

        self.tags.write_advanced(
            &MatroskaSpec::Segment(Master::Start),
            WriteOptions::is_unknown_sized_element(),
        )?;
        self.tags.write(&void(SEEKHEAD_RESERVE)?)?;
        let seg = self.take_bytes();
        if seg.get(4..12) != Some(&UNKNOWN_SIZE[..]) || seg.len() != 12 + SEEKHEAD_RESERVE {
            return Err(WebmError::Layout("segment header"));
        }
        let segment_size_pos = self.pos + 4;
        let data_start = self.pos + 12;
        self.emit(&seg)?;

        let info_pos = self.pos;
        self.tags.write_advanced(
            &MatroskaSpec::Info(Master::Full(vec![
                void(DURATION_RESERVE)?,
                MatroskaSpec::TimestampScale(1_000_000),
                MatroskaSpec::DateUTC(self.meta.date_utc_ns),
                MatroskaSpec::SegmentUID(self.meta.segment_uid.to_vec()),
                MatroskaSpec::Title(self.meta.title.clone()),
                MatroskaSpec::MuxingApp(concat!("recordings ", env!("CARGO_PKG_VERSION")).into()),
                MatroskaSpec::WritingApp(concat!("recordings ", env!("CARGO_PKG_VERSION")).into()),
            ])),
            WriteOptions::set_size_byte_count(8),
        )?;
        let info = self.take_bytes();
        // ID (4) + size (8), then the Void is the first child.
        if info.get(12..14) != Some(&[0xEC, 0x89][..]) {
            return Err(WebmError::Layout("info header"));
        }
        let duration_pos = info_pos + 12;
        self.emit(&info)?;

        let tracks_pos = self.pos;
        let entries = self.tracks.iter().map(track_entry).collect();
        self.tags
            .write(&MatroskaSpec::Tracks(Master::Full(entries)))?;
        let tracks = self.take_bytes();
        let codec_private_reserve = if self
            .tracks
            .iter()
            .any(|t| t.needs_codec_private() && t.codec_private.is_none())
        {
            let (offset, size) =
                find_track_void(&tracks).ok_or(WebmError::Layout("codec private reserve"))?;
            Some((tracks_pos + offset as u64, size))
        } else {
            None
        };
        self.emit(&tracks)?;

        self.layout = Some(Layout {
            segment_size_pos,
            data_start,
            seekhead_pos: data_start,
            info_pos,
            duration_pos,
            tracks_pos,
            codec_private_reserve,
        });
        Ok(())
    }

    fn flush_cluster(&mut self) -> Result<(), WebmError> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        if cluster.blocks.is_empty() {
            return Ok(());
        }
        if self.layout.is_none() {
            self.write_header()?;
        }
        let data_start = self.layout.as_ref().map_or(0, |l| l.data_start);
        let cluster_pos = self.pos - data_start;
        if let Some(track) = cluster.cue {
            self.cues.push(Cue {
                time: cluster.timestamp,
                track,
                cluster_pos,
            });
        }
        self.last_cluster_ts = Some(cluster.timestamp);
        let mut children = Vec::with_capacity(cluster.blocks.len() + 1);
        children.push(MatroskaSpec::Timestamp(cluster.timestamp));
        children.extend(cluster.blocks);
        self.tags
            .write(&MatroskaSpec::Cluster(Master::Full(children)))?;
        let bytes = self.take_bytes();
        self.emit(&bytes)?;
        self.out.flush()?;
        Ok(())
    }

    /// Closes the file: last cluster, Cues, SeekHead, Duration, Segment size.
    /// Returns `None` (and writes nothing) if no frame was ever written.
    pub(crate) fn finish(mut self, duration_ms: u64) -> Result<(W, Option<Finished>), WebmError> {
        self.flush_cluster()?;
        let Some(layout) = self.layout.take() else {
            return Ok((self.out, None));
        };

        // Cues
        let cues_pos = self.pos;
        let points = self
            .cues
            .iter()
            .map(|c| {
                MatroskaSpec::CuePoint(Master::Full(vec![
                    MatroskaSpec::CueTime(c.time),
                    MatroskaSpec::CueTrackPositions(Master::Full(vec![
                        MatroskaSpec::CueTrack(c.track),
                        MatroskaSpec::CueClusterPosition(c.cluster_pos),
                    ])),
                ]))
            })
            .collect::<Vec<_>>();
        let has_cues = !points.is_empty();
        if has_cues {
            self.tags.write(&MatroskaSpec::Cues(Master::Full(points)))?;
            let bytes = self.take_bytes();
            self.emit(&bytes)?;
        }
        let end = self.pos;

        // SeekHead in the reserved Void at the start of the segment data.
        let mut seeks = vec![
            seek(&ID_INFO, layout.info_pos - layout.data_start),
            seek(&ID_TRACKS, layout.tracks_pos - layout.data_start),
        ];
        if has_cues {
            seeks.push(seek(&ID_CUES, cues_pos - layout.data_start));
        }
        self.tags
            .write(&MatroskaSpec::SeekHead(Master::Full(seeks)))?;
        let mut head = self.take_bytes();
        let rest = SEEKHEAD_RESERVE
            .checked_sub(head.len())
            .filter(|r| *r >= 2)
            .ok_or(WebmError::Layout("seek head too large"))?;
        self.tags.write(&void(rest)?)?;
        head.extend(self.take_bytes());
        if head.len() != SEEKHEAD_RESERVE {
            return Err(WebmError::Layout("seek head size"));
        }
        self.patch(layout.seekhead_pos, &head)?;

        // Duration (milliseconds, as the TimestampScale is 1 ms).
        let mut duration = vec![0x44, 0x89, 0x88];
        duration.extend_from_slice(&(duration_ms as f64).to_be_bytes());
        self.patch(layout.duration_pos, &duration)?;

        // Segment size.
        let size = end - layout.data_start;
        let mut size_field = size.to_be_bytes();
        if size_field[0] != 0 {
            return Err(WebmError::Layout("segment too large"));
        }
        size_field[0] = 0x01;
        self.patch(layout.segment_size_pos, &size_field)?;

        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        let finished = Finished {
            bytes: end,
            blocks: self.blocks,
            cues: self.cues.len(),
        };
        Ok((self.out, Some(finished)))
    }

    fn patch(&mut self, pos: u64, bytes: &[u8]) -> Result<(), WebmError> {
        self.out.seek(SeekFrom::Start(pos))?;
        self.out.write_all(bytes)?;
        Ok(())
    }
}

/// A Void element of exactly `total` bytes (2..=128).
fn void(total: usize) -> Result<MatroskaSpec, WebmError> {
    let data = total
        .checked_sub(2)
        .filter(|n| *n <= 126)
        .ok_or(WebmError::Layout("void size"))?;
    Ok(MatroskaSpec::Void(vec![0; data]))
}

/// A CodecPrivate element holding `data`, padded with a Void to exactly
/// `total` bytes; `None` if it does not fit.
fn codec_private_in(data: &[u8], total: usize) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok().filter(|l| *l < 0x3FFF)?;
    // ID 63 A2, size as a 2-byte vint (3 bytes when that evens out the rest)
    let mut out = vec![0x63, 0xA2];
    let rest = total.checked_sub(4 + data.len())?;
    if rest == 1 {
        out.extend_from_slice(&[0x20, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x40 | (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(data);
    let rest = total - out.len();
    match rest {
        0 => {}
        2 => out.extend_from_slice(&[ID_VOID, 0x80]),
        n if n >= 3 => {
            let void = u16::try_from(n - 3).ok().filter(|v| *v < 0x3FFF)?;
            out.extend_from_slice(&[ID_VOID, 0x40 | (void >> 8) as u8, void as u8]);
            out.resize(total, 0);
        }
        _ => return None,
    }
    Some(out)
}

/// Reads an EBML element header at the start of `bytes`: (ID, header
/// length, data size).
fn element_header(bytes: &[u8]) -> Option<(u32, usize, usize)> {
    let first = *bytes.first()?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return None;
    }
    let id = bytes
        .get(..id_len)?
        .iter()
        .fold(0u32, |a, b| (a << 8) | u32::from(*b));
    let s0 = *bytes.get(id_len)?;
    let size_len = s0.leading_zeros() as usize + 1;
    if size_len > 8 {
        return None;
    }
    let mut size = u64::from(s0) & (0xFF >> size_len);
    for b in bytes.get(id_len + 1..id_len + size_len)? {
        size = (size << 8) | u64::from(*b);
    }
    Some((id, id_len + size_len, usize::try_from(size).ok()?))
}

/// The offset and total size of the Void inside a TrackEntry of an encoded
/// Tracks element (the reserve for a CodecPrivate).
fn find_track_void(tracks: &[u8]) -> Option<(usize, usize)> {
    let (_, header, size) = element_header(tracks)?;
    let end = header.checked_add(size)?.min(tracks.len());
    let mut pos = header;
    while pos < end {
        let (_, eh, es) = element_header(&tracks[pos..])?;
        let entry_end = pos + eh + es;
        let mut child = pos + eh;
        while child < entry_end {
            let (id, ch, cs) = element_header(&tracks[child..])?;
            if id == u32::from(ID_VOID) {
                return Some((child, ch + cs));
            }
            child += ch + cs;
        }
        pos = entry_end;
    }
    None
}

fn seek(id: &[u8; 4], position: u64) -> MatroskaSpec {
    MatroskaSpec::Seek(Master::Full(vec![
        MatroskaSpec::SeekID(id.to_vec()),
        MatroskaSpec::SeekPosition(position),
    ]))
}

/// The Opus identification header (RFC 7845 §5.1), used as CodecPrivate.
fn opus_head() -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(2); // channels (WebRTC negotiates opus/48000/2)
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: unknown mid-stream
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family
    h
}

fn track_entry(track: &WebmTrack) -> MatroskaSpec {
    let mut children = vec![
        MatroskaSpec::TrackNumber(track.number()),
        MatroskaSpec::TrackUID(track.number()),
        MatroskaSpec::FlagLacing(0),
        MatroskaSpec::Language("und".into()),
        MatroskaSpec::CodecID(track.codec.matroska_id().into()),
    ];
    match track.codec.kind() {
        TrackKind::Video => {
            let (w, h) = track.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
            children.push(MatroskaSpec::TrackType(1));
            children.push(MatroskaSpec::Video(Master::Full(vec![
                MatroskaSpec::PixelWidth(u64::from(w)),
                MatroskaSpec::PixelHeight(u64::from(h)),
            ])));
            match &track.codec_private {
                Some(data) => children.push(MatroskaSpec::CodecPrivate(data.clone())),
                // filled in by `set_codec_private` once the first keyframe is seen
                None if track.needs_codec_private() => {
                    children.push(MatroskaSpec::Void(vec![0; CODEC_PRIVATE_RESERVE - 3]));
                }
                None => {}
            }
        }
        TrackKind::Audio => {
            children.push(MatroskaSpec::TrackType(2));
            children.push(MatroskaSpec::CodecPrivate(opus_head()));
            children.push(MatroskaSpec::CodecDelay(0));
            children.push(MatroskaSpec::SeekPreRoll(80_000_000));
            children.push(MatroskaSpec::Audio(Master::Full(vec![
                MatroskaSpec::SamplingFrequency(48_000.0),
                MatroskaSpec::Channels(2),
            ])));
        }
    }
    MatroskaSpec::TrackEntry(Master::Full(children))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use webm_iterable::matroska_spec::SimpleBlock;
    use webm_iterable::WebmIterator;

    use super::*;

    fn meta() -> SegmentMeta {
        SegmentMeta {
            segment_uid: [7; 16],
            date_utc_ns: 1_000_000_000,
            title: "test".into(),
        }
    }

    fn tags(bytes: &[u8]) -> Vec<MatroskaSpec> {
        let mut src = Cursor::new(bytes.to_vec());
        WebmIterator::new(
            &mut src,
            &[
                MatroskaSpec::Info(Master::Start),
                MatroskaSpec::SeekHead(Master::Start),
            ],
        )
        .collect::<Result<Vec<_>, _>>()
        .expect("parses")
    }

    #[test]
    fn a_finished_file_has_size_duration_seekhead_and_cues() {
        let tracks = vec![WebmTrack::new(Codec::Vp8), WebmTrack::new(Codec::Opus)];
        let mut w = SegmentWriter::new(Cursor::new(Vec::new()), tracks, meta(), 1000);
        w.set_dimensions((320, 240));
        for i in 0..150u64 {
            if i % 3 == 0 {
                w.write_frame(VIDEO_TRACK, i * 20, i % 60 == 0, &[0xAA; 50])
                    .expect("write");
            }
            w.write_frame(AUDIO_TRACK, i * 20, true, &[0xF8, 1, 2])
                .expect("write");
        }
        let (out, finished) = w.finish(3000).expect("finish");
        let finished = finished.expect("non-empty");
        let bytes = out.into_inner();
        assert_eq!(finished.bytes, bytes.len() as u64);
        assert_eq!(finished.cues, 3);

        let all = tags(&bytes);
        assert!(matches!(all.first(), Some(MatroskaSpec::Ebml(_))));
        assert!(all
            .iter()
            .any(|t| matches!(t, MatroskaSpec::DocType(d) if d == "webm")));
        let info = all.iter().find_map(|t| match t {
            MatroskaSpec::Info(Master::Full(c)) => Some(c.clone()),
            _ => None,
        });
        let info = info.expect("info");
        assert!(info
            .iter()
            .any(|t| matches!(t, MatroskaSpec::Duration(d) if (*d - 3000.0).abs() < 1e-9)));
        assert!(all
            .iter()
            .any(|t| matches!(t, MatroskaSpec::SeekHead(Master::Full(c)) if c.len() == 3)));
        assert!(all
            .iter()
            .any(|t| matches!(t, MatroskaSpec::PixelWidth(320))));
        let mut last_ts = [None::<u64>; 3];
        let mut cluster_ts = 0;
        let mut blocks = 0;
        for t in &all {
            match t {
                MatroskaSpec::Timestamp(ts) => cluster_ts = *ts,
                MatroskaSpec::SimpleBlock(_) => {
                    let b = SimpleBlock::try_from(t).expect("block");
                    let abs = cluster_ts + b.timestamp as u64;
                    let slot = &mut last_ts[b.track as usize];
                    assert!(
                        slot.is_none_or(|p| abs > p),
                        "track {} not monotonic",
                        b.track
                    );
                    *slot = Some(abs);
                    blocks += 1;
                }
                _ => {}
            }
        }
        assert_eq!(blocks, 200);
        // The segment size field was patched from "unknown" to the real size.
        let seg = bytes
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .expect("segment id");
        let size = u64::from_be_bytes(bytes[seg + 4..seg + 12].try_into().expect("8 bytes"))
            & 0x00FF_FFFF_FFFF_FFFF;
        assert_eq!(size as usize, bytes.len() - (seg + 12));
        // Cue positions point at clusters.
        let cues: Vec<u64> = all
            .iter()
            .filter_map(|t| match t {
                MatroskaSpec::CueClusterPosition(p) => Some(*p),
                _ => None,
            })
            .collect();
        for p in cues {
            let at = seg + 12 + p as usize;
            assert_eq!(&bytes[at..at + 4], &[0x1F, 0x43, 0xB6, 0x75]);
        }
    }

    #[test]
    fn an_unfinished_file_still_parses_up_to_the_last_cluster() {
        let tracks = vec![WebmTrack::new(Codec::Opus)];
        let mut w = SegmentWriter::new(Cursor::new(Vec::new()), tracks, meta(), 100);
        for i in 0..20u64 {
            w.write_frame(AUDIO_TRACK, i * 20, true, &[0xF8, 1])
                .expect("write");
        }
        // no finish: simulate a crash; the clusters flushed so far are readable
        let bytes = w.out.get_ref().clone();
        let all = tags(&bytes);
        assert!(
            all.iter()
                .filter(|t| matches!(t, MatroskaSpec::SimpleBlock(_)))
                .count()
                >= 15
        );
    }

    #[test]
    fn an_empty_writer_writes_nothing() {
        let w = SegmentWriter::new(
            Cursor::new(Vec::new()),
            vec![WebmTrack::new(Codec::Opus)],
            meta(),
            100,
        );
        let (out, finished) = w.finish(0).expect("finish");
        assert!(finished.is_none());
        assert!(out.into_inner().is_empty());
    }

    fn codec_private_of_video(bytes: &[u8]) -> Option<Vec<u8>> {
        let all = tags(bytes);
        let mut in_video = false;
        for t in all {
            match t {
                MatroskaSpec::CodecID(c) => in_video = c == "V_MPEG4/ISO/AVC",
                MatroskaSpec::CodecPrivate(d) if in_video => return Some(d),
                _ => {}
            }
        }
        None
    }

    #[test]
    fn h264_goes_into_matroska_with_its_avcc_known_at_the_header_or_filled_in_later() {
        let avcc: Vec<u8> = (0..40).collect();
        let h264 = || vec![WebmTrack::new(Codec::H264), WebmTrack::new(Codec::Opus)];
        // known before the header is written
        let mut w = SegmentWriter::new(Cursor::new(Vec::new()), h264(), meta(), 100);
        assert_eq!(w.container, Container::Matroska);
        w.set_codec_private(&avcc).expect("set");
        w.write_frame(VIDEO_TRACK, 0, true, &[0, 0, 0, 1, 0x65])
            .expect("write");
        let (out, _) = w.finish(40).expect("finish");
        let bytes = out.into_inner();
        assert!(tags(&bytes)
            .iter()
            .any(|t| matches!(t, MatroskaSpec::DocType(d) if d == "matroska")));
        assert_eq!(codec_private_of_video(&bytes), Some(avcc.clone()));

        // audio first: the header is written with a reserve, filled in at the keyframe
        let mut w = SegmentWriter::new(Cursor::new(Vec::new()), h264(), meta(), 100);
        for i in 0..10u64 {
            w.write_frame(AUDIO_TRACK, i * 20, true, &[0xF8, 1])
                .expect("write");
        }
        let before = w.out.get_ref().clone();
        assert!(!before.is_empty(), "the header and a cluster were written");
        assert_eq!(codec_private_of_video(&before), None);
        for size in [avcc.len(), 507, 505, 506] {
            let data = vec![7u8; size];
            assert!(
                codec_private_in(&data, CODEC_PRIVATE_RESERVE)
                    .is_some_and(|b| b.len() == CODEC_PRIVATE_RESERVE),
                "{size}"
            );
        }
        assert!(codec_private_in(&[7u8; 509], CODEC_PRIVATE_RESERVE).is_none());
        w.set_codec_private(&avcc).expect("patch");
        w.set_codec_private(&[9; 10])
            .expect("later ones are ignored");
        w.write_frame(VIDEO_TRACK, 200, true, &[0, 0, 0, 1, 0x65])
            .expect("write");
        let (out, finished) = w.finish(240).expect("finish");
        let bytes = out.into_inner();
        assert_eq!(codec_private_of_video(&bytes), Some(avcc));
        assert_eq!(finished.expect("finished").blocks, 11);
        // the file parses whole, size patched
        let seg = bytes
            .windows(4)
            .position(|w| w == [0x18, 0x53, 0x80, 0x67])
            .expect("segment id");
        let size = u64::from_be_bytes(bytes[seg + 4..seg + 12].try_into().expect("8 bytes"))
            & 0x00FF_FFFF_FFFF_FFFF;
        assert_eq!(size as usize, bytes.len() - (seg + 12));
    }
}
