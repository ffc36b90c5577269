//! Publishing: media sources that produce frames (generated, or read from IVF/Ogg files with
//! the `rtc` crate's readers), packetized into RTP and written to the current connection's
//! local tracks.
//!
//! A publisher outlives peer connections: after a full rejoin the SDK builds a new connection
//! and points the publisher at its new local tracks ([`Outbound::set_track`]), keeping the
//! SSRC, sequence numbers and timestamps running.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use rtc::rtp::sequence::new_random_sequencer;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;

use crate::config::{AudioSource, VideoSource};
use crate::error::Error;
use crate::event::MediaKind;

/// Payload types the server negotiates (its offer and answer use these): Opus 111, VP8 96.
pub(crate) const PT_OPUS: u8 = 111;
pub(crate) const PT_VP8: u8 = 96;
/// RTP payload size limit: fits a 1,500-byte path MTU with SRTP, ICE and IP overhead.
const MTU: usize = 1200;

/// One encoded frame and how much media time it covers.
pub(crate) struct Frame {
    data: Bytes,
    /// RTP clock ticks it covers.
    samples: u32,
    /// Wall time it covers (the pace of sending).
    duration: Duration,
}

/// Something that yields encoded frames, one at a time.
trait FrameSource: Send {
    /// The next frame; `keyframe` asks for a keyframe (sources that cannot make one ignore it).
    fn next_frame(&mut self, keyframe: bool) -> Result<Frame, Error>;
}

/// Opus-sized packets every 20 ms (a valid Opus TOC byte, then filler).
struct TestTone;

impl FrameSource for TestTone {
    fn next_frame(&mut self, _: bool) -> Result<Frame, Error> {
        let mut data = vec![0x55u8; 80];
        data[0] = 0xF8; // TOC: CELT fullband, 20 ms, mono, one frame
        Ok(Frame {
            data: Bytes::from(data),
            samples: 960,
            duration: Duration::from_millis(20),
        })
    }
}

/// VP8-shaped frames: a keyframe first and when asked, interframes otherwise.
struct TestPattern {
    fps: u32,
    frame_bytes: usize,
    first: bool,
    counter: u32,
}

impl FrameSource for TestPattern {
    fn next_frame(&mut self, keyframe: bool) -> Result<Frame, Error> {
        let key = keyframe || std::mem::take(&mut self.first);
        self.counter = self.counter.wrapping_add(1);
        let size = if key { self.frame_bytes * 3 } else { self.frame_bytes }.max(16);
        let mut b = BytesMut::with_capacity(size);
        if key {
            // Frame tag (P=0 keyframe, show_frame=1), size bits, start code, 640x360.
            b.put_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        } else {
            b.put_slice(&[0x11, 0x00, 0x00]);
        }
        b.put_u32(self.counter);
        b.resize(size, 0x55);
        Ok(Frame {
            data: b.freeze(),
            samples: 90_000 / self.fps,
            duration: Duration::from_secs(1) / self.fps,
        })
    }
}

/// VP8 frames from an IVF file, looped.
struct IvfSource {
    path: PathBuf,
    reader: IVFReader<BufReader<File>>,
    frame_duration: Duration,
    samples: u32,
}

impl IvfSource {
    fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::Media(format!("{}: {e}", path.display())))?;
        let (reader, header) =
            IVFReader::new(BufReader::new(file)).map_err(|e| Error::Media(format!("{}: {e}", path.display())))?;
        if &header.four_cc != b"VP80" {
            return Err(Error::Media(format!(
                "{}: not VP8 ({:?})",
                path.display(),
                header.four_cc
            )));
        }
        let (num, den) = (header.timebase_numerator.max(1), header.timebase_denominator.max(1));
        // Frame rate: the timebase is seconds per tick; files written by encoders use 1/fps.
        let frame_duration = Duration::from_secs_f64(f64::from(num) / f64::from(den))
            .clamp(Duration::from_millis(5), Duration::from_millis(500));
        let samples = (frame_duration.as_secs_f64() * 90_000.0) as u32;
        Ok(Self {
            path: path.to_owned(),
            reader,
            frame_duration,
            samples,
        })
    }
}

impl FrameSource for IvfSource {
    fn next_frame(&mut self, _: bool) -> Result<Frame, Error> {
        for _ in 0..2 {
            match self.reader.parse_next_frame() {
                Ok((frame, _)) => {
                    return Ok(Frame {
                        data: frame.freeze(),
                        samples: self.samples,
                        duration: self.frame_duration,
                    })
                }
                // End of file: start over (the first frame of a VP8 file is a keyframe).
                Err(_) => *self = Self::open(&self.path.clone())?,
            }
        }
        Err(Error::Media(format!("{}: no frames", self.path.display())))
    }
}

/// Opus from an Ogg file: one page per packet (as the webrtc examples do), looped.
struct OggSource {
    path: PathBuf,
    reader: OggReader<BufReader<File>>,
    last_granule: u64,
}

impl OggSource {
    fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::Media(format!("{}: {e}", path.display())))?;
        let (reader, _) =
            OggReader::new(BufReader::new(file), true).map_err(|e| Error::Media(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            last_granule: 0,
        })
    }
}

impl FrameSource for OggSource {
    fn next_frame(&mut self, _: bool) -> Result<Frame, Error> {
        for _ in 0..64 {
            match self.reader.parse_next_page() {
                Ok((page, header)) => {
                    if header.opus_header_type(&page).is_some() {
                        continue; // OpusTags
                    }
                    let samples = header.granule_position.saturating_sub(self.last_granule);
                    self.last_granule = header.granule_position;
                    if samples == 0 || page.is_empty() {
                        continue;
                    }
                    let samples = samples.min(48_000) as u32;
                    return Ok(Frame {
                        data: page.freeze(),
                        samples,
                        duration: Duration::from_micros(u64::from(samples) * 1_000_000 / 48_000),
                    });
                }
                Err(_) => *self = Self::open(&self.path.clone())?,
            }
        }
        Err(Error::Media(format!("{}: no audio pages", self.path.display())))
    }
}

/// The state one published track shares between its sending task, the keyframe-request
/// reader and the call's driver.
pub(crate) struct Outbound {
    pub(crate) kind: MediaKind,
    pub(crate) ssrc: u32,
    track: Mutex<Option<Arc<TrackLocalStaticRTP>>>,
    payload_type: AtomicU8,
    keyframe_wanted: AtomicBool,
    enabled: AtomicBool,
    sent: AtomicU64,
}

impl Outbound {
    fn new(kind: MediaKind) -> Arc<Self> {
        let ssrc = loop {
            let s: u32 = rand::random();
            if s != 0 {
                break s;
            }
        };
        let pt = if kind == MediaKind::Audio { PT_OPUS } else { PT_VP8 };
        Arc::new(Self {
            kind,
            ssrc,
            track: Mutex::new(None),
            payload_type: AtomicU8::new(pt),
            keyframe_wanted: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            sent: AtomicU64::new(0),
        })
    }

    /// Points the sender at a connection's local track (`None`: no connection).
    pub(crate) fn set_track(&self, track: Option<Arc<TrackLocalStaticRTP>>) {
        *self.track.lock().unwrap_or_else(PoisonError::into_inner) = track;
    }

    /// The payload type negotiated for this track.
    pub(crate) fn set_payload_type(&self, pt: u8) {
        self.payload_type.store(pt, Ordering::Relaxed);
    }

    /// The receiver asked for a keyframe (PLI/FIR).
    pub(crate) fn request_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Release);
    }

    /// Mute (audio) or camera off (video): packets stop; timestamps keep running.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        if enabled && !self.enabled.swap(true, Ordering::AcqRel) && self.kind == MediaKind::Video {
            self.request_keyframe();
        }
        self.enabled.store(enabled, Ordering::Release);
    }

    /// RTP packets handed to the connection.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Arc<TrackLocalStaticRTP>> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The sending tasks of one call. Dropping it stops them.
pub(crate) struct Publisher {
    pub(crate) audio: Option<Arc<Outbound>>,
    pub(crate) video: Option<Arc<Outbound>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Publisher {
    /// Opens the sources (so a missing file fails the join) and starts sending.
    pub(crate) fn start(audio: Option<&AudioSource>, video: Option<&VideoSource>) -> Result<Self, Error> {
        let mut tasks = Vec::new();
        let audio = match audio {
            None => None,
            Some(src) => {
                let source: Box<dyn FrameSource> = match src {
                    AudioSource::TestTone => Box::new(TestTone),
                    AudioSource::OggFile(p) => Box::new(OggSource::open(p)?),
                };
                let out = Outbound::new(MediaKind::Audio);
                let packetizer = new_packetizer(
                    Instant::now(),
                    MTU,
                    PT_OPUS,
                    out.ssrc,
                    Box::new(OpusPayloader),
                    Box::new(new_random_sequencer()),
                    48_000,
                );
                tasks.push(tokio::spawn(send_loop(Arc::clone(&out), source, Box::new(packetizer))));
                Some(out)
            }
        };
        let video = match video {
            None => None,
            Some(src) => {
                let source: Box<dyn FrameSource> = match src {
                    VideoSource::TestPattern { fps, bitrate } => {
                        let fps = (*fps).clamp(1, 120);
                        Box::new(TestPattern {
                            fps,
                            frame_bytes: (*bitrate / 8 / fps) as usize,
                            first: true,
                            counter: 0,
                        })
                    }
                    VideoSource::IvfFile(p) => Box::new(IvfSource::open(p)?),
                };
                let out = Outbound::new(MediaKind::Video);
                let packetizer = new_packetizer(
                    Instant::now(),
                    MTU,
                    PT_VP8,
                    out.ssrc,
                    Box::new(Vp8Payloader::default()),
                    Box::new(new_random_sequencer()),
                    90_000,
                );
                tasks.push(tokio::spawn(send_loop(Arc::clone(&out), source, Box::new(packetizer))));
                Some(out)
            }
        };
        Ok(Self { audio, video, tasks })
    }

    /// Both outbound tracks, present ones only.
    pub(crate) fn outbounds(&self) -> impl Iterator<Item = &Arc<Outbound>> {
        self.audio.iter().chain(self.video.iter())
    }
}

/// Paces frames in real time, packetizes them and writes them to the current local track.
/// Frames are made and packetized even while there is no connection or the track is
/// disabled, so timestamps stay true to the wall clock.
async fn send_loop(out: Arc<Outbound>, mut source: Box<dyn FrameSource>, mut packetizer: Box<dyn Packetizer>) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let key = out.keyframe_wanted.swap(false, Ordering::AcqRel);
        let frame = match source.next_frame(key) {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(%err, kind = ?out.kind, "media source failed; this track stops");
                return;
            }
        };
        next += frame.duration.max(Duration::from_millis(1));
        let now = tokio::time::Instant::now();
        if now > next + Duration::from_secs(1) {
            next = now; // fell far behind (a suspended process): do not burst
        }
        let packets = match packetizer.packetize(Instant::now(), &frame.data, frame.samples) {
            Ok(p) => p,
            Err(err) => {
                tracing::debug!(%err, "packetize failed");
                continue;
            }
        };
        if !out.enabled.load(Ordering::Acquire) {
            continue;
        }
        let Some(track) = out.current() else { continue };
        let pt = out.payload_type.load(Ordering::Relaxed);
        for mut p in packets {
            p.header.payload_type = pt;
            if track.write_rtp(p).await.is_ok() {
                out.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_pattern_starts_with_a_keyframe_and_makes_one_on_request() {
        let mut p = TestPattern {
            fps: 30,
            frame_bytes: 1250,
            first: true,
            counter: 0,
        };
        let is_key = |f: &Frame| f.data[0] & 0x01 == 0;
        assert!(is_key(&p.next_frame(false).unwrap()));
        assert!(!is_key(&p.next_frame(false).unwrap()));
        assert!(is_key(&p.next_frame(true).unwrap()));
        assert_eq!(p.next_frame(false).unwrap().samples, 3000);
    }

    #[test]
    fn packetized_test_frames_are_recognised_as_keyframes() {
        let mut p = TestPattern {
            fps: 30,
            frame_bytes: 4000,
            first: true,
            counter: 0,
        };
        let mut payloader = Vp8Payloader::default();
        use rtc::rtp::packetizer::Payloader;
        let key = payloader.payload(MTU, &p.next_frame(false).unwrap().data).unwrap();
        assert!(key.len() > 1);
        assert!(crate::event::is_vp8_keyframe(&key[0]));
        assert!(
            !crate::event::is_vp8_keyframe(&key[1]),
            "only the first packet starts the frame"
        );
        let inter = payloader.payload(MTU, &p.next_frame(false).unwrap().data).unwrap();
        assert!(!crate::event::is_vp8_keyframe(&inter[0]));
    }

    #[test]
    fn a_missing_file_is_a_media_error() {
        let err = IvfSource::open(Path::new("/nonexistent.ivf")).err().unwrap();
        assert!(matches!(err, Error::Media(_)));
        assert!(!err.is_retryable());
    }
}
