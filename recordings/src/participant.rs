//! One participant's media pipeline: RTP packets in, finished segment files out.
//!
//! Per track: parse RTP → unwrap seq/timestamp → reorder → assemble frames →
//! map RTP time to media time. Then both tracks meet in a small interleaver
//! (frames leave in time order) and go to the open segment file, which rolls
//! over every `segment_duration` at a video keyframe.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::assemble::{FrameAssembler, OrderedPacket};
use crate::codec::{Codec, Container, TrackKind};
use crate::digest::Sha256Digest;
use crate::error::RecordError;
use crate::ids::{ParticipantId, ParticipantRole, RecordingId};
use crate::manifest::{ParticipantEntry, RecordingKeys, SegmentEntry, TrackEntry, TrackStats};
use crate::rtp::RtpPacket;
use crate::seq::{Pushed, ReorderBuffer, ReorderConfig, SeqUnwrapper, TimestampUnwrapper};
use crate::store::{FsStore, ObjectKey};
use crate::webm::{SegmentMeta, SegmentWriter, WebmTrack, AUDIO_TRACK, VIDEO_TRACK};

/// A track a participant publishes, as negotiated by signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpec {
    /// The codec (its kind says video or audio).
    pub codec: Codec,
    /// The negotiated payload type. When set, packets with another payload
    /// type (RTX, FEC, RED) are dropped and counted.
    pub payload_type: Option<u8>,
}

impl TrackSpec {
    /// A track of `codec` accepting any payload type.
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            payload_type: None,
        }
    }
}

/// Tuning of the media pipeline. The defaults suit WebRTC calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Target length of a segment file (a video segment ends at the first
    /// keyframe after this). Default 10 s.
    pub segment_duration: Duration,
    /// How long past `segment_duration` to wait for a keyframe before rolling
    /// over anyway (video then resumes at the next keyframe). Default 5 s.
    pub keyframe_wait: Duration,
    /// Longest cluster inside a file. Default 2 s.
    pub cluster_duration: Duration,
    /// Reorder buffer limits. Default 100 ms / 64 packets.
    pub reorder: ReorderConfig,
    /// How far audio may run ahead of a stalled video track (or the reverse)
    /// before frames are written anyway. Default 1 s.
    pub interleave_window: Duration,
    /// Least time between two keyframe requests for one participant. Default 1 s.
    pub keyframe_request_interval: Duration,
    /// A frame whose RTP time drifts further than this from its arrival time
    /// re-anchors the track's clock (a sender restart). Default 5 s.
    pub max_clock_deviation: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_secs(10),
            keyframe_wait: Duration::from_secs(5),
            cluster_duration: Duration::from_secs(2),
            reorder: ReorderConfig::default(),
            interleave_window: Duration::from_secs(1),
            keyframe_request_interval: Duration::from_secs(1),
            max_clock_deviation: Duration::from_secs(5),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A finalized segment file still named `.part`, waiting for the manifest.
#[derive(Debug)]
pub(crate) struct FinishedSegment {
    pub(crate) entry: SegmentEntry,
    pub(crate) part_path: PathBuf,
    pub(crate) final_path: PathBuf,
}

/// What the pipeline asks of its owner.
#[derive(Debug)]
pub(crate) enum ParticipantEvent {
    KeyframeWanted,
    SegmentFinished(Box<FinishedSegment>),
}

#[derive(Debug)]
struct Pending {
    timestamp: i64,
    marker: bool,
    payload: Vec<u8>,
    arrival_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    rtp: i64,
    ms: u64,
}

#[derive(Debug)]
struct MediaFrame {
    kind: TrackKind,
    ms: u64,
    arrival_ms: u64,
    keyframe: bool,
    dimensions: Option<(u16, u16)>,
    duration_ms: u64,
    data: Vec<u8>,
    /// H.264 keyframes: the avcC for the file header.
    config: Option<Vec<u8>>,
}

#[derive(Debug)]
struct TrackState {
    spec: TrackSpec,
    ssrc: Option<u32>,
    seq: SeqUnwrapper,
    ts: TimestampUnwrapper,
    reorder: ReorderBuffer<Pending>,
    assembler: FrameAssembler,
    clock: Option<Anchor>,
    last_ms: Option<u64>,
    last_interval_ms: u64,
    needs_keyframe: bool,
    dimensions: Option<(u16, u16)>,
    started: bool,
    stats: TrackStats,
}

impl TrackState {
    fn new(spec: TrackSpec, reorder: ReorderConfig) -> Self {
        Self {
            spec,
            ssrc: None,
            seq: SeqUnwrapper::default(),
            ts: TimestampUnwrapper::default(),
            reorder: ReorderBuffer::new(reorder),
            assembler: FrameAssembler::new(spec.codec),
            clock: None,
            last_ms: None,
            last_interval_ms: 33,
            needs_keyframe: spec.codec.kind() == TrackKind::Video,
            dimensions: None,
            started: false,
            stats: TrackStats::default(),
        }
    }

    fn is_video(&self) -> bool {
        self.spec.codec.kind() == TrackKind::Video
    }

    fn entry(&self) -> TrackEntry {
        let mut stats = self.stats;
        stats.lost = self.reorder.lost;
        TrackEntry {
            kind: self.spec.codec.kind(),
            codec: self.spec.codec,
            clock_rate: self.spec.codec.clock_rate(),
            stats,
        }
    }

    /// Takes one RTP packet; complete frames go to `out`.
    fn ingest(
        &mut self,
        packet: Option<&RtpPacket<'_>>,
        now_ms: u64,
        config: &MediaConfig,
        out: &mut Vec<MediaFrame>,
        wants_keyframe: &mut bool,
    ) {
        let Some(packet) = packet else {
            self.stats.malformed += 1;
            return;
        };
        if self
            .spec
            .payload_type
            .is_some_and(|pt| pt != packet.payload_type)
        {
            self.stats.foreign_payload_type += 1;
            return;
        }
        if self.ssrc.is_some_and(|s| s != packet.ssrc) {
            // A new sender stream (reconnect): finish the old one, start over.
            self.flush(config, out, wants_keyframe);
            self.seq = SeqUnwrapper::default();
            self.ts = TimestampUnwrapper::default();
            let lost = self.reorder.lost;
            self.reorder = ReorderBuffer::new(config.reorder);
            self.reorder.lost = lost;
            self.stats.frames_dropped += u64::from(self.assembler.reset());
            self.clock = None;
            self.needs_keyframe = self.is_video();
            self.stats.stream_restarts += 1;
        }
        self.ssrc = Some(packet.ssrc);
        self.stats.packets += 1;
        self.stats.bytes += packet.payload.len() as u64;
        let seq = self.seq.unwrap(u32::from(packet.sequence));
        let timestamp = self.ts.unwrap(packet.timestamp);
        let pending = Pending {
            timestamp,
            marker: packet.marker,
            payload: packet.payload.to_vec(),
            arrival_ms: now_ms,
        };
        match self.reorder.push(seq, now_ms, pending) {
            Pushed::Accepted => {}
            Pushed::Late => self.stats.late += 1,
            Pushed::Duplicate => self.stats.duplicate += 1,
            Pushed::Resynced => {
                self.stats.stream_restarts += 1;
                self.needs_keyframe = self.is_video();
            }
        }
        self.assemble(config, out, wants_keyframe);
    }

    fn handle_timeout(
        &mut self,
        now_ms: u64,
        config: &MediaConfig,
        out: &mut Vec<MediaFrame>,
        wants_keyframe: &mut bool,
    ) {
        self.reorder.handle_timeout(now_ms);
        self.assemble(config, out, wants_keyframe);
    }

    fn flush(
        &mut self,
        config: &MediaConfig,
        out: &mut Vec<MediaFrame>,
        wants_keyframe: &mut bool,
    ) {
        self.reorder.flush();
        self.assemble(config, out, wants_keyframe);
    }

    fn assemble(
        &mut self,
        config: &MediaConfig,
        out: &mut Vec<MediaFrame>,
        wants_keyframe: &mut bool,
    ) {
        let ready: Vec<(i64, Pending)> = self.reorder.drain().collect();
        for (seq, p) in ready {
            let result = self.assembler.push(OrderedPacket {
                seq,
                timestamp: p.timestamp,
                marker: p.marker,
                payload: p.payload,
                arrival_ms: p.arrival_ms,
            });
            if result.malformed {
                self.stats.malformed += 1;
            }
            self.stats.frames_dropped += u64::from(result.dropped_frames);
            if self.is_video() && (result.gap || result.dropped_frames > 0) && !self.needs_keyframe
            {
                self.needs_keyframe = true;
                *wants_keyframe = true;
            }
            if let Some(frame) = result.frame {
                self.on_frame(frame, config, out, wants_keyframe);
            }
        }
    }

    /// Media time of RTP timestamp `ts` under the current anchor, if any.
    fn media_ms(&self, ts: i64) -> Option<i64> {
        let a = self.clock?;
        let rate = i64::from(self.spec.codec.clock_rate());
        let delta_ms = (i128::from(ts - a.rtp) * 1000).div_euclid(i128::from(rate));
        i64::try_from(i128::from(a.ms) + delta_ms).ok()
    }

    fn on_frame(
        &mut self,
        frame: crate::assemble::AssembledFrame,
        config: &MediaConfig,
        out: &mut Vec<MediaFrame>,
        wants_keyframe: &mut bool,
    ) {
        let arrival = frame.arrival_ms;
        let floor = |last: Option<u64>, t: u64| last.map_or(t, |l| t.max(l + 1));
        if self.clock.is_none() {
            self.clock = Some(Anchor {
                rtp: frame.timestamp,
                ms: floor(self.last_ms, arrival),
            });
        }
        let mut at = self.media_ms(frame.timestamp).unwrap_or(-1);
        let deviation = (at - i64::try_from(arrival).unwrap_or(i64::MAX)).unsigned_abs();
        if at < 0 || deviation > ms(config.max_clock_deviation) {
            let anchor = Anchor {
                rtp: frame.timestamp,
                ms: floor(self.last_ms, arrival),
            };
            self.clock = Some(anchor);
            self.stats.clock_rebases += 1;
            at = i64::try_from(anchor.ms).unwrap_or(i64::MAX);
        }
        let at = u64::try_from(at).unwrap_or(0);
        if self.last_ms.is_some_and(|last| at <= last) {
            self.stats.frames_dropped += 1;
            return;
        }
        if self.is_video() && self.needs_keyframe {
            if !frame.info.keyframe {
                self.stats.frames_dropped += 1;
                *wants_keyframe = true;
                return;
            }
            self.needs_keyframe = false;
        }
        if let Some(d) = frame.info.dimensions {
            self.dimensions = Some(d);
        }
        let duration_ms = match frame.info.duration_ticks {
            Some(ticks) => {
                (u64::from(ticks) * 1000 / u64::from(self.spec.codec.clock_rate())).max(1)
            }
            None => {
                if let Some(last) = self.last_ms {
                    self.last_interval_ms = (at - last).clamp(1, 1000);
                }
                self.last_interval_ms
            }
        };
        self.last_ms = Some(at);
        self.started = true;
        out.push(MediaFrame {
            kind: self.spec.codec.kind(),
            ms: at,
            arrival_ms: arrival,
            keyframe: frame.info.keyframe,
            dimensions: frame.info.dimensions,
            duration_ms,
            data: frame.data,
            config: frame.config,
        });
    }
}

#[derive(Debug)]
struct OpenSegment {
    writer: SegmentWriter<File>,
    index: u32,
    start_ms: u64,
    end_ms: u64,
    first_arrival_ms: u64,
    last_arrival_ms: u64,
    part_path: PathBuf,
    final_path: PathBuf,
    key: ObjectKey,
    codecs: Vec<Codec>,
}

/// Where segment files go and what they belong to.
#[derive(Debug, Clone)]
pub(crate) struct SegmentContext {
    pub(crate) recording_id: RecordingId,
    pub(crate) started_at: OffsetDateTime,
    pub(crate) store: FsStore,
    pub(crate) keys: RecordingKeys,
}

/// One participant: up to one video and one audio track, one file per segment.
#[derive(Debug)]
pub(crate) struct ParticipantRecorder {
    id: ParticipantId,
    role: ParticipantRole,
    joined_at: OffsetDateTime,
    ctx: SegmentContext,
    config: MediaConfig,
    video: Option<TrackState>,
    audio: Option<TrackState>,
    retired: Vec<TrackEntry>,
    queues: [VecDeque<MediaFrame>; 2],
    newest_ms: u64,
    now_ms: u64,
    segment: Option<OpenSegment>,
    next_index: u32,
    video_gate: bool,
    last_video_out_ms: Option<u64>,
    last_keyframe_request_ms: Option<u64>,
    events: VecDeque<ParticipantEvent>,
}

const fn slot(kind: TrackKind) -> usize {
    match kind {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

impl ParticipantRecorder {
    pub(crate) fn new(
        id: ParticipantId,
        role: ParticipantRole,
        joined_at: OffsetDateTime,
        ctx: SegmentContext,
        config: MediaConfig,
    ) -> Self {
        Self {
            id,
            role,
            joined_at,
            ctx,
            config,
            video: None,
            audio: None,
            retired: Vec::new(),
            queues: [VecDeque::new(), VecDeque::new()],
            newest_ms: 0,
            now_ms: 0,
            segment: None,
            next_index: 1,
            video_gate: true,
            last_video_out_ms: None,
            last_keyframe_request_ms: None,
            events: VecDeque::new(),
        }
    }

    pub(crate) fn id(&self) -> ParticipantId {
        self.id
    }

    pub(crate) fn entry(&self) -> ParticipantEntry {
        let mut tracks = self.retired.clone();
        tracks.extend(
            self.video
                .iter()
                .chain(self.audio.iter())
                .map(TrackState::entry),
        );
        ParticipantEntry {
            id: self.id,
            role: self.role,
            joined_at: self.joined_at,
            tracks,
        }
    }

    pub(crate) fn pop_event(&mut self) -> Option<ParticipantEvent> {
        self.events.pop_front()
    }

    /// Declares the tracks. Tracks whose codec is unchanged keep their state;
    /// if the set of codecs changes, the open segment is finished first.
    pub(crate) fn set_tracks(
        &mut self,
        tracks: &[TrackSpec],
        now_ms: u64,
    ) -> Result<(), RecordError> {
        let mut video = None;
        let mut audio = None;
        for t in tracks {
            let place = match t.codec.kind() {
                TrackKind::Video => &mut video,
                TrackKind::Audio => &mut audio,
            };
            if place.replace(*t).is_some() {
                return Err(RecordError::DuplicateTrack {
                    participant: self.id,
                    kind: t.codec.kind(),
                });
            }
        }
        let changed = self.video.as_ref().map(|t| t.spec.codec) != video.map(|t| t.codec)
            || self.audio.as_ref().map(|t| t.spec.codec) != audio.map(|t| t.codec);
        if changed {
            self.flush(now_ms)?;
            self.finish_segment()?;
        }
        let reorder = self.config.reorder;
        for (state, spec) in [(&mut self.video, video), (&mut self.audio, audio)] {
            match (state.as_mut(), spec) {
                (Some(s), Some(spec)) if s.spec.codec == spec.codec => s.spec = spec,
                (old, spec) => {
                    if let Some(old) = old {
                        self.retired.push(old.entry());
                    }
                    *state = spec.map(|spec| TrackState::new(spec, reorder));
                }
            }
        }
        Ok(())
    }

    /// `packet` is `None` for bytes that did not parse as RTP (counted).
    pub(crate) fn push_rtp(
        &mut self,
        kind: TrackKind,
        packet: Option<&RtpPacket<'_>>,
        now_ms: u64,
    ) -> Result<(), RecordError> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut frames = Vec::new();
        let mut wants = false;
        let track = match kind {
            TrackKind::Video => self.video.as_mut(),
            TrackKind::Audio => self.audio.as_mut(),
        };
        let Some(track) = track else {
            return Err(RecordError::UnknownTrack {
                participant: self.id,
                kind,
            });
        };
        track.ingest(packet, now_ms, &self.config, &mut frames, &mut wants);
        self.after_tracks(frames, wants, false)
    }

    pub(crate) fn handle_timeout(&mut self, now_ms: u64) -> Result<(), RecordError> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut frames = Vec::new();
        let mut wants = false;
        for t in self.video.iter_mut().chain(self.audio.iter_mut()) {
            t.handle_timeout(now_ms, &self.config, &mut frames, &mut wants);
        }
        self.after_tracks(frames, wants, false)
    }

    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        self.video
            .iter()
            .chain(self.audio.iter())
            .filter_map(|t| t.reorder.deadline_ms())
            .min()
    }

    /// Writes out everything buffered (reorder buffers and interleaver).
    pub(crate) fn flush(&mut self, now_ms: u64) -> Result<(), RecordError> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut frames = Vec::new();
        let mut wants = false;
        for t in self.video.iter_mut().chain(self.audio.iter_mut()) {
            t.flush(&self.config, &mut frames, &mut wants);
        }
        self.after_tracks(frames, false, true)
    }

    fn after_tracks(
        &mut self,
        frames: Vec<MediaFrame>,
        wants_keyframe: bool,
        drain_all: bool,
    ) -> Result<(), RecordError> {
        if wants_keyframe {
            self.request_keyframe();
        }
        for f in frames {
            self.newest_ms = self.newest_ms.max(f.ms);
            self.queues[slot(f.kind)].push_back(f);
        }
        self.drain_interleaver(drain_all)
    }

    fn request_keyframe(&mut self) {
        let interval = ms(self.config.keyframe_request_interval);
        if self
            .last_keyframe_request_ms
            .is_some_and(|t| self.now_ms < t.saturating_add(interval))
        {
            return;
        }
        self.last_keyframe_request_ms = Some(self.now_ms);
        self.events.push_back(ParticipantEvent::KeyframeWanted);
    }

    fn drain_interleaver(&mut self, all: bool) -> Result<(), RecordError> {
        let window = ms(self.config.interleave_window);
        loop {
            let head = |q: &VecDeque<MediaFrame>| q.front().map(|f| f.ms);
            let (v, a) = (head(&self.queues[0]), head(&self.queues[1]));
            let pick = match (v, a) {
                (None, None) => break,
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (Some(v), Some(a)) => usize::from(a < v),
            };
            let pick_ms = if pick == 0 { v } else { a }.unwrap_or(0);
            let other = 1 - pick;
            let other_started = match other {
                0 => self.video.as_ref().is_some_and(|t| t.started),
                _ => self.audio.as_ref().is_some_and(|t| t.started),
            };
            let ready = all
                || !self.queues[other].is_empty()
                || !other_started
                || pick_ms.saturating_add(window) <= self.newest_ms;
            if !ready {
                break;
            }
            let Some(frame) = self.queues[pick].pop_front() else {
                break;
            };
            self.write_out(frame)?;
        }
        Ok(())
    }

    fn track_stats(&mut self, kind: TrackKind) -> Option<&mut TrackStats> {
        match kind {
            TrackKind::Video => self.video.as_mut().map(|t| &mut t.stats),
            TrackKind::Audio => self.audio.as_mut().map(|t| &mut t.stats),
        }
    }

    fn write_out(&mut self, f: MediaFrame) -> Result<(), RecordError> {
        let is_video = f.kind == TrackKind::Video;
        let segment_ms = ms(self.config.segment_duration);
        let wait_ms = ms(self.config.keyframe_wait);
        if let Some(seg) = &self.segment {
            let elapsed = f.ms.saturating_sub(seg.start_ms);
            if elapsed >= segment_ms {
                let video_live = self.video.is_some()
                    && self
                        .last_video_out_ms
                        .is_some_and(|t| f.ms.saturating_sub(t) < wait_ms);
                let roll = !video_live
                    || (is_video && f.keyframe)
                    || elapsed >= segment_ms.saturating_add(wait_ms);
                if roll {
                    self.finish_segment()?;
                } else {
                    self.request_keyframe();
                }
            }
        }
        if self.segment.is_none() {
            self.video_gate = !(is_video && f.keyframe);
            self.open_segment(&f)?;
            if self.video_gate && self.video.is_some() {
                self.request_keyframe();
            }
        }
        if is_video {
            if self.video_gate {
                if !f.keyframe {
                    if let Some(s) = self.track_stats(TrackKind::Video) {
                        s.frames_dropped += 1;
                    }
                    self.request_keyframe();
                    return Ok(());
                }
                self.video_gate = false;
            }
            self.last_video_out_ms = Some(f.ms);
        }
        let Some(seg) = self.segment.as_mut() else {
            return Ok(());
        };
        if let Some(d) = f.dimensions {
            seg.writer.set_dimensions(d);
        }
        if let Some(c) = &f.config {
            seg.writer.set_codec_private(c)?;
        }
        let track = if is_video { VIDEO_TRACK } else { AUDIO_TRACK };
        seg.writer.write_frame(
            track,
            f.ms.saturating_sub(seg.start_ms),
            f.keyframe,
            &f.data,
        )?;
        seg.end_ms = seg.end_ms.max(f.ms.saturating_add(f.duration_ms));
        seg.last_arrival_ms = seg.last_arrival_ms.max(f.arrival_ms);
        if let Some(s) = self.track_stats(f.kind) {
            s.frames_written += 1;
        }
        Ok(())
    }

    fn wall(&self, media_ms: u64) -> OffsetDateTime {
        let d = time::Duration::milliseconds(i64::try_from(media_ms).unwrap_or(i64::MAX));
        self.ctx
            .started_at
            .checked_add(d)
            .unwrap_or(self.ctx.started_at)
    }

    fn open_segment(&mut self, first: &MediaFrame) -> Result<(), RecordError> {
        let index = self.next_index;
        let codecs: Vec<Codec> = self
            .video
            .iter()
            .chain(self.audio.iter())
            .map(|t| t.spec.codec)
            .collect();
        let key = self
            .ctx
            .keys
            .segment(self.id, index, Container::for_codecs(&codecs));
        let final_path = self.ctx.store.path(&key);
        let mut part_name = final_path.clone().into_os_string();
        part_name.push(".part");
        let part_path = PathBuf::from(part_name);
        if let Some(dir) = final_path.parent() {
            fs::create_dir_all(dir).map_err(|e| RecordError::io("create directory", dir, e))?;
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part_path)
            .map_err(|e| RecordError::io("create segment", &part_path, e))?;

        let tracks = self
            .video
            .iter()
            .chain(self.audio.iter())
            .map(|t| WebmTrack {
                dimensions: t.dimensions,
                ..WebmTrack::new(t.spec.codec)
            })
            .collect();
        let mut uid_src = Vec::with_capacity(36);
        uid_src.extend_from_slice(self.ctx.recording_id.as_uuid().as_bytes());
        uid_src.extend_from_slice(self.id.as_uuid().as_bytes());
        uid_src.extend_from_slice(&index.to_be_bytes());
        let digest = Sha256Digest::of(&uid_src);
        let mut segment_uid = [0u8; 16];
        segment_uid.copy_from_slice(&digest.0[..16]);
        let epoch_2001 = time::macros::datetime!(2001-01-01 0:00 UTC);
        let start_wall = self.wall(first.arrival_ms);
        let date_utc_ns = i64::try_from((start_wall - epoch_2001).whole_nanoseconds()).unwrap_or(0);
        let meta = SegmentMeta {
            segment_uid,
            date_utc_ns,
            title: format!(
                "recording {} participant {} ({:?}) segment {index}",
                self.ctx.recording_id, self.id, self.role
            )
            .to_lowercase(),
        };
        let writer = SegmentWriter::new(file, tracks, meta, ms(self.config.cluster_duration));
        self.next_index += 1;
        self.segment = Some(OpenSegment {
            writer,
            index,
            start_ms: first.ms,
            end_ms: first.ms,
            first_arrival_ms: first.arrival_ms,
            last_arrival_ms: first.arrival_ms,
            part_path,
            final_path,
            key,
            codecs,
        });
        Ok(())
    }

    /// Finalizes the open segment file (still named `.part`) and queues it for
    /// the manifest.
    pub(crate) fn finish_segment(&mut self) -> Result<(), RecordError> {
        let Some(seg) = self.segment.take() else {
            return Ok(());
        };
        let duration = seg.end_ms.saturating_sub(seg.start_ms);
        let (file, finished) = seg.writer.finish(duration)?;
        let Some(finished) = finished else {
            drop(file);
            let _ = fs::remove_file(&seg.part_path);
            if self.next_index == seg.index + 1 {
                self.next_index = seg.index; // nothing was written: reuse the number
            }
            return Ok(());
        };
        file.sync_all()
            .map_err(|e| RecordError::io("sync segment", &seg.part_path, e))?;
        drop(file);
        let sha256 = File::open(&seg.part_path)
            .and_then(Sha256Digest::of_reader)
            .map_err(|e| RecordError::io("hash segment", &seg.part_path, e))?;
        let entry = SegmentEntry {
            participant: self.id,
            index: seg.index,
            file: seg.key,
            size: finished.bytes,
            sha256,
            codecs: seg.codecs,
            media_start_ms: seg.start_ms,
            media_end_ms: seg.end_ms,
            wall_start: self.wall(seg.first_arrival_ms),
            wall_end: self.wall(seg.last_arrival_ms),
        };
        self.events
            .push_back(ParticipantEvent::SegmentFinished(Box::new(
                FinishedSegment {
                    entry,
                    part_path: seg.part_path,
                    final_path: seg.final_path,
                },
            )));
        Ok(())
    }
}
