//! Test support: a temporary directory, RTP synthesis for VP8/VP9/Opus, a
//! simulated network that delays, reorders and drops packets, and a WebM
//! reader summary.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use recordings::{
    CallId, Codec, ParticipantId, ParticipantRole, Recording, RecordingConfig, RecordingEvent,
    RecordingId, Signer, TrackKind, TrackSpec,
};
use time::macros::datetime;
use time::OffsetDateTime;
use webm_iterable::matroska_spec::{Master, MatroskaSpec, SimpleBlock};
use webm_iterable::WebmIterator;

pub const T0: OffsetDateTime = datetime!(2024-05-01 09:00 UTC);

/// A directory under the system temp dir, removed when dropped.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "recordings-test-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // RECORDINGS_KEEP_TEST_FILES=1 keeps the files for inspection.
        if std::env::var_os("RECORDINGS_KEEP_TEST_FILES").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn signer() -> Signer {
    Signer::new(ed25519_dalek::SigningKey::from_bytes(&[42; 32]))
}

pub fn other_signer() -> Signer {
    Signer::new(ed25519_dalek::SigningKey::from_bytes(&[43; 32]))
}

pub fn pid(n: u128) -> ParticipantId {
    ParticipantId::from_uuid(uuid::Uuid::from_u128(0x1000 + n))
}

pub fn rid(n: u128) -> RecordingId {
    RecordingId::from_uuid(uuid::Uuid::from_u128(0xAAAA_0000 + n))
}

pub fn call_id(n: u128) -> CallId {
    CallId::from_uuid(uuid::Uuid::from_u128(0xCA11_0000 + n))
}

pub fn at_ms(ms: u64) -> OffsetDateTime {
    T0 + time::Duration::milliseconds(ms as i64)
}

/// One RTP packet.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, (u8::from(marker) << 7) | pt];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A fake VP8 frame: keyframes carry the real keyframe bit pattern (P=0,
/// start code, 14-bit sizes); the rest is filler.
pub fn vp8_frame(key: bool, n: u64, size: usize) -> Vec<u8> {
    let mut f = if key {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xF0, 0x00] // 320x240
    } else {
        vec![0x11, 0x02, 0x00]
    };
    while f.len() < size {
        f.push((n as u8).wrapping_add(f.len() as u8));
    }
    f
}

/// A fake VP9 profile-0 frame; keyframes carry a real uncompressed header.
pub fn vp9_frame(key: bool, n: u64, size: usize) -> Vec<u8> {
    let mut f = if key {
        // frame_marker 2, profile 0, show_existing 0, key, show 1, er 0,
        // sync code, color space 1, range 0, 640x360
        vec![0x82, 0x49, 0x83, 0x42, 0x20, 0x27, 0xF0, 0x16, 0x70]
    } else {
        vec![0x86, 0x00]
    };
    while f.len() < size {
        f.push((n as u8).wrapping_add(f.len() as u8));
    }
    f
}

/// Splits a frame into RTP payloads with the codec's payload descriptor.
pub fn packetize(codec: Codec, frame: &[u8], mtu: usize, picture_id: u16) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = frame.chunks(mtu).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut p = match codec {
                // X=1, S on the first, I=1 with a 15-bit picture id
                Codec::Vp8 => vec![
                    0x80 | if i == 0 { 0x10 } else { 0 },
                    0x80,
                    0x80 | (picture_id >> 8) as u8 & 0x7F,
                    picture_id as u8,
                ],
                // I=1, B on the first, E on the last, 15-bit picture id
                Codec::Vp9 => {
                    let mut b = 0x80;
                    if i == 0 {
                        b |= 0x08;
                    }
                    if i == last {
                        b |= 0x04;
                    }
                    vec![b, 0x80 | (picture_id >> 8) as u8 & 0x7F, picture_id as u8]
                }
                _ => Vec::new(),
            };
            p.extend_from_slice(c);
            p
        })
        .collect()
}

/// An Opus packet: TOC byte for 20 ms CELT fullband, then arbitrary bytes.
pub fn opus_payload(n: u64) -> Vec<u8> {
    let mut p = vec![0xF8];
    p.extend((0..40).map(|i| (n as u8).wrapping_mul(7).wrapping_add(i)));
    p
}

/// One media source of a simulated participant.
pub struct Source {
    pub codec: Codec,
    pub pt: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub frame: u64,
    pub next_us: u64,
    pub period_us: u64,
    pub ts_step: u32,
}

impl Source {
    pub fn video(codec: Codec, ssrc: u32, seq: u16, ts: u32) -> Self {
        Self {
            codec,
            pt: 96,
            ssrc,
            seq,
            ts,
            frame: 0,
            next_us: 0,
            period_us: 33_333,
            ts_step: 3000,
        }
    }
    pub fn opus(ssrc: u32, seq: u16, ts: u32) -> Self {
        Self {
            codec: Codec::Opus,
            pt: 111,
            ssrc,
            seq,
            ts,
            frame: 0,
            next_us: 0,
            period_us: 20_000,
            ts_step: 960,
        }
    }
}

pub struct SimParticipant {
    pub id: ParticipantId,
    pub role: ParticipantRole,
    pub video: Option<Source>,
    pub audio: Option<Source>,
    pub force_keyframe: bool,
    pub keyframe_requests: u32,
}

impl SimParticipant {
    pub fn new(
        id: ParticipantId,
        role: ParticipantRole,
        video: Option<Source>,
        audio: Option<Source>,
    ) -> Self {
        Self {
            id,
            role,
            video,
            audio,
            force_keyframe: true,
            keyframe_requests: 0,
        }
    }
    pub fn specs(&self) -> Vec<TrackSpec> {
        self.video
            .iter()
            .chain(self.audio.iter())
            .map(|s| TrackSpec {
                codec: s.codec,
                payload_type: Some(s.pt),
            })
            .collect()
    }
}

/// What the network does to one packet.
pub enum Fate {
    Deliver { extra_delay_us: u64 },
    Drop,
}

/// A packet in flight: (arrival µs, tiebreak, participant index, kind, bytes).
type InFlight = Reverse<(u64, u64, usize, TrackKind, Vec<u8>)>;

/// Packets in flight, delivered in order of arrival time.
pub struct Call {
    pub rec: Recording,
    pub participants: Vec<SimParticipant>,
    pub now_us: u64,
    heap: BinaryHeap<InFlight>,
    counter: u64,
    pub base_delay_us: u64,
    /// Decides each packet's fate: (participant index, kind, packet number of that source).
    pub network: Box<dyn FnMut(usize, TrackKind, u64, u16) -> Fate>,
    pub sent: [u64; 2],
    pub events: Vec<RecordingEvent>,
    /// Extra packets to inject: (time, participant, kind, bytes).
    pub inject: Vec<(u64, usize, TrackKind, Vec<u8>)>,
}

impl Call {
    pub fn start(
        root: &Path,
        config_edit: impl FnOnce(&mut RecordingConfig),
        participants: Vec<SimParticipant>,
    ) -> Self {
        Self::start_as(root, rid(1), config_edit, participants)
    }

    pub fn start_as(
        root: &Path,
        recording: RecordingId,
        config_edit: impl FnOnce(&mut RecordingConfig),
        participants: Vec<SimParticipant>,
    ) -> Self {
        let mut config = RecordingConfig::new(root);
        config_edit(&mut config);
        let mut rec = Recording::start(config, recording, call_id(1), T0, signer()).expect("start");
        for p in &participants {
            rec.add_participant(p.id, p.role, &p.specs(), T0)
                .expect("add participant");
        }
        Self {
            rec,
            participants,
            now_us: 0,
            heap: BinaryHeap::new(),
            counter: 0,
            base_delay_us: 5_000,
            network: Box::new(|_, _, _, _| Fate::Deliver { extra_delay_us: 0 }),
            sent: [0, 0],
            events: Vec::new(),
            inject: Vec::new(),
        }
    }

    fn send_due(&mut self) {
        for (pi, p) in self.participants.iter_mut().enumerate() {
            let force = &mut p.force_keyframe;
            for (kind, src) in [
                (TrackKind::Video, p.video.as_mut()),
                (TrackKind::Audio, p.audio.as_mut()),
            ] {
                let Some(src) = src else { continue };
                while src.next_us <= self.now_us {
                    let send_us = src.next_us;
                    let payloads = match src.codec {
                        Codec::Opus => vec![opus_payload(src.frame)],
                        codec => {
                            let key = std::mem::take(force);
                            let frame = match codec {
                                Codec::Vp9 => {
                                    vp9_frame(key, src.frame, if key { 2500 } else { 700 })
                                }
                                _ => vp8_frame(key, src.frame, if key { 2500 } else { 700 }),
                            };
                            packetize(codec, &frame, 1000, src.frame as u16)
                        }
                    };
                    let last = payloads.len() - 1;
                    for (i, payload) in payloads.into_iter().enumerate() {
                        let marker = src.codec == Codec::Opus || i == last;
                        let bytes = rtp(src.pt, src.seq, src.ts, src.ssrc, marker, &payload);
                        let slot = usize::from(kind == TrackKind::Audio);
                        let n = self.sent[slot];
                        self.sent[slot] += 1;
                        match (self.network)(pi, kind, n, src.seq) {
                            Fate::Drop => {}
                            Fate::Deliver { extra_delay_us } => {
                                self.counter += 1;
                                self.heap.push(Reverse((
                                    send_us + self.base_delay_us + extra_delay_us,
                                    self.counter,
                                    pi,
                                    kind,
                                    bytes,
                                )));
                            }
                        }
                        src.seq = src.seq.wrapping_add(1);
                    }
                    src.ts = src.ts.wrapping_add(src.ts_step);
                    src.frame += 1;
                    src.next_us += src.period_us;
                }
            }
        }
    }

    /// Runs the call until `until_ms`, 1 ms at a time.
    pub fn run_until(&mut self, until_ms: u64) {
        while self.now_us < until_ms * 1000 {
            self.now_us += 1000;
            self.send_due();
            let mut injected = Vec::new();
            self.inject.retain(|(t, pi, kind, bytes)| {
                if *t * 1000 <= self.now_us {
                    injected.push((*pi, *kind, bytes.clone()));
                    false
                } else {
                    true
                }
            });
            for (pi, kind, bytes) in injected {
                let id = self.participants[pi].id;
                self.rec
                    .push_rtp(id, kind, &bytes, at_us(self.now_us))
                    .expect("push injected");
            }
            while let Some(Reverse((t, _, _, _, _))) = self.heap.peek() {
                if *t > self.now_us {
                    break;
                }
                let Some(Reverse((t, _, pi, kind, bytes))) = self.heap.pop() else {
                    break;
                };
                let id = self.participants[pi].id;
                self.rec.push_rtp(id, kind, &bytes, at_us(t)).expect("push");
                self.pump_events();
            }
            if self
                .rec
                .poll_timeout()
                .is_some_and(|d| d <= at_us(self.now_us))
            {
                self.rec
                    .handle_timeout(at_us(self.now_us))
                    .expect("timeout");
                self.pump_events();
            }
        }
    }

    fn pump_events(&mut self) {
        while let Some(ev) = self.rec.poll_event() {
            if let RecordingEvent::KeyframeWanted { participant } = &ev {
                if let Some(p) = self.participants.iter_mut().find(|p| p.id == *participant) {
                    p.force_keyframe = true;
                    p.keyframe_requests += 1;
                }
            }
            self.events.push(ev);
        }
    }
}

pub fn at_us(us: u64) -> OffsetDateTime {
    T0 + time::Duration::microseconds(us as i64)
}

/// What a WebM file holds, read back with webm-iterable.
#[derive(Debug, Default)]
pub struct WebmSummary {
    pub doc_type: Option<String>,
    pub codecs: Vec<String>,
    pub pixel_size: Option<(u64, u64)>,
    pub duration_ms: Option<f64>,
    pub timestamp_scale: Option<u64>,
    /// (track, absolute ms, keyframe, payload length)
    pub blocks: Vec<(u64, u64, bool, usize)>,
    pub cues: Vec<(u64, u64)>,
    pub cluster_positions: Vec<u64>,
    pub seek_entries: usize,
    pub segment_size_known: bool,
    pub segment_data_start: usize,
}

impl WebmSummary {
    pub fn blocks_of(&self, track: u64) -> Vec<(u64, bool)> {
        self.blocks
            .iter()
            .filter(|b| b.0 == track)
            .map(|b| (b.1, b.2))
            .collect()
    }
}

pub fn read_webm(bytes: &[u8]) -> WebmSummary {
    let mut s = WebmSummary::default();
    let seg = bytes
        .windows(4)
        .position(|w| w == [0x18, 0x53, 0x80, 0x67])
        .expect("segment element");
    s.segment_size_known =
        bytes[seg + 4..seg + 12] != [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    s.segment_data_start = seg + 12;
    let mut src = std::io::Cursor::new(bytes.to_vec());
    let mut it = WebmIterator::new(&mut src, &[]);
    let mut cluster_ts = 0u64;
    let mut cue_time = 0u64;
    while let Some(tag) = it.next() {
        let tag = tag.expect("WebM parses");
        match &tag {
            MatroskaSpec::DocType(d) => s.doc_type = Some(d.clone()),
            MatroskaSpec::CodecID(c) => s.codecs.push(c.clone()),
            MatroskaSpec::PixelWidth(w) => {
                s.pixel_size = Some((*w, s.pixel_size.map_or(0, |p| p.1)))
            }
            MatroskaSpec::PixelHeight(h) => {
                s.pixel_size = Some((s.pixel_size.map_or(0, |p| p.0), *h))
            }
            MatroskaSpec::Duration(d) => s.duration_ms = Some(*d),
            MatroskaSpec::TimestampScale(t) => s.timestamp_scale = Some(*t),
            MatroskaSpec::Cluster(Master::Start) => s
                .cluster_positions
                .push((it.last_emitted_tag_offset() - s.segment_data_start) as u64),
            MatroskaSpec::Timestamp(t) => cluster_ts = *t,
            MatroskaSpec::SimpleBlock(_) => {
                let b = SimpleBlock::try_from(&tag).expect("simple block");
                let len = b.raw_frame_data().len();
                s.blocks.push((
                    b.track,
                    cluster_ts.saturating_add_signed(i64::from(b.timestamp)),
                    b.keyframe,
                    len,
                ));
            }
            MatroskaSpec::CueTime(t) => cue_time = *t,
            MatroskaSpec::CueClusterPosition(p) => s.cues.push((cue_time, *p)),
            MatroskaSpec::Seek(Master::Start) => s.seek_entries += 1,
            _ => {}
        }
    }
    s
}

/// `ffprobe` on PATH, if installed.
pub fn ffprobe() -> Option<PathBuf> {
    which("ffprobe")
}

/// Every block of a WebM file: (codec id of its track, absolute ms, keyframe, data).
pub fn read_frames(bytes: &[u8]) -> Vec<(String, u64, bool, Vec<u8>)> {
    let mut src = std::io::Cursor::new(bytes.to_vec());
    let mut codecs: Vec<(u64, String)> = Vec::new();
    let mut number = 0;
    let mut cluster_ts = 0u64;
    let mut out = Vec::new();
    for tag in WebmIterator::new(&mut src, &[]) {
        let tag = tag.expect("WebM parses");
        match &tag {
            MatroskaSpec::TrackNumber(n) => number = *n,
            MatroskaSpec::CodecID(c) => codecs.push((number, c.clone())),
            MatroskaSpec::Timestamp(t) => cluster_ts = *t,
            MatroskaSpec::SimpleBlock(_) => {
                let b = SimpleBlock::try_from(&tag).expect("simple block");
                let codec = codecs
                    .iter()
                    .find(|(n, _)| *n == b.track)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                out.push((
                    codec,
                    cluster_ts.saturating_add_signed(i64::from(b.timestamp)),
                    b.keyframe,
                    b.raw_frame_data().to_vec(),
                ));
            }
            _ => {}
        }
    }
    out
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .expect("run command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("which")
        .arg(tool)
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then(|| PathBuf::from(path))
}
